/* A YAML document read into a tree that keeps the line and column of every
 * node, so that configuration and runbook readers can report errors as
 * FILE:LINE:COLUMN. Input size, nesting depth and node count are capped;
 * anchors/aliases are refused (they allow exponential expansion). */
#ifndef TRIAD_YAML_DOC_H
#define TRIAD_YAML_DOC_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/diag.h"

#define YDOC_MAX_INPUT (4u << 20) /* bytes */
#define YDOC_MAX_DEPTH 32
#define YDOC_MAX_NODES 100000

enum ynode_type { YNODE_SCALAR, YNODE_SEQ, YNODE_MAP };

struct ynode;

struct ypair {
    struct ynode *key; /* always a scalar */
    struct ynode *value;
};

struct ynode {
    enum ynode_type type;
    int line, col; /* 1-based */
    const char *file;
    bool quoted; /* scalar written in quotes: never null/bool by accident */
    bool used;   /* set by readers on map keys they consumed */
    char *str;   /* scalar value (NUL-terminated; may contain no NUL) */
    size_t len;
    struct ynode **items; /* sequence */
    struct ypair *pairs;  /* mapping */
    size_t n;
};

struct ydoc {
    char *file;
    struct ynode *root; /* NULL for an empty document */
    size_t nodes;
};

/* Parses `len` bytes; errors go to `d` (with `file` as the name). Returns 0
 * or -1. On error the document is empty but still must be freed. */
int ydoc_parse(struct ydoc *doc, const char *file, const char *data, size_t len, struct diag *d);
/* Reads and parses a file (capped at YDOC_MAX_INPUT). */
int ydoc_load(struct ydoc *doc, const char *path, struct diag *d);
void ydoc_free(struct ydoc *doc);

/* Mapping lookup by key; marks the key used. NULL if absent or not a map. */
struct ynode *ynode_get(struct ynode *map, const char *key);
/* Whether a scalar is the YAML null (~, null, empty, unquoted). */
bool ynode_is_null(const struct ynode *n);
const char *ynode_type_name(enum ynode_type t);

#endif
