/* Typed reading of a positioned YAML tree, reporting every problem to a
 * diag list as FILE:LINE:COLUMN. Readers call the getters for the keys they
 * know, then yread_unknown_keys() to report the rest with a suggestion.
 *
 * Getters return 1 if the key was present and valid (out set), 0 if absent
 * (out untouched, so callers preset defaults), -1 on error (reported). */
#ifndef TRIAD_YAML_READ_H
#define TRIAD_YAML_READ_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/diag.h"
#include "lib/yaml_doc.h"

void yread_error(struct diag *d, const struct ynode *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Checks a node's type; reports "KEY must be a mapping" etc. */
bool yread_expect(struct diag *d, const struct ynode *n, enum ynode_type t, const char *what);

/* Reports every key of `map` not in `known` (NULL-terminated), suggesting
 * the closest known key. */
void yread_unknown_keys(struct diag *d, const struct ynode *map, const char *const *known);

/* Reports keys present in `map` that were never looked up (ynode_get). */
void yread_unused_keys(struct diag *d, const struct ynode *map, const char *const *known);

int yread_str(struct diag *d, struct ynode *map, const char *key, char **out);
int yread_bool(struct diag *d, struct ynode *map, const char *key, bool *out);
int yread_int(struct diag *d, struct ynode *map, const char *key, int64_t min, int64_t max,
              int64_t *out);
int yread_duration(struct diag *d, struct ynode *map, const char *key, int64_t min_ms,
                   int64_t max_ms, int64_t *out_ms);
int yread_size(struct diag *d, struct ynode *map, const char *key, uint64_t min, uint64_t max,
               uint64_t *out);
int yread_ratio(struct diag *d, struct ynode *map, const char *key, double *out);
/* One of `names` (NULL-terminated); out is the index. */
int yread_enum(struct diag *d, struct ynode *map, const char *key, const char *const *names,
               int *out);
/* A list of scalars (a single scalar is accepted as a one-item list). */
int yread_str_list(struct diag *d, struct ynode *map, const char *key, size_t max, char ***out,
                   size_t *n);
/* "host:port" or "[v6]:port"; default_port used when the port is omitted
 * (0 = the port is required). */
int yread_hostport(struct diag *d, struct ynode *map, const char *key, uint16_t default_port,
                   char **host, uint16_t *port);

/* The same parsers applied to a scalar node directly. */
int yread_scalar_str(struct diag *d, const struct ynode *n, const char *what, char **out);
int yread_scalar_hostport(struct diag *d, const struct ynode *n, const char *what,
                          uint16_t default_port, char **host, uint16_t *port);

/* Parse "host:port"; returns 0 or -1 and a reason. */
int hostport_parse(const char *s, uint16_t default_port, char **host, uint16_t *port,
                   const char **why);

void str_list_free(char **list, size_t n);

#endif
