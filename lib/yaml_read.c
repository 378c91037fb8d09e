/* Typed getters over the YAML tree. */
#include "lib/yaml_read.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/suggest.h"
#include "lib/units.h"

void yread_error(struct diag *d, const struct ynode *at, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    diag_add(d, at ? at->file : NULL, at ? at->line : 0, at ? at->col : 0, "%s", msg);
}

bool yread_expect(struct diag *d, const struct ynode *n, enum ynode_type t, const char *what)
{
    if (n->type == t)
        return true;
    yread_error(d, n, "%s must be %s, not %s", what, ynode_type_name(t), ynode_type_name(n->type));
    return false;
}

static size_t count_words(const char *const *w)
{
    size_t n = 0;
    while (w[n])
        n++;
    return n;
}

void yread_unknown_keys(struct diag *d, const struct ynode *map, const char *const *known)
{
    if (!map || map->type != YNODE_MAP)
        return;
    size_t nk = count_words(known);
    for (size_t i = 0; i < map->n; i++) {
        const struct ynode *k = map->pairs[i].key;
        int found = 0;
        for (size_t j = 0; j < nk && !found; j++)
            found = strcmp(k->str, known[j]) == 0;
        if (found)
            continue;
        const char *s = suggest_closest(k->str, known, nk);
        if (s)
            yread_error(d, k, "unknown key '%s' (did you mean '%s'?)", k->str, s);
        else
            yread_error(d, k, "unknown key '%s'", k->str);
    }
}

void yread_unused_keys(struct diag *d, const struct ynode *map, const char *const *known)
{
    if (!map || map->type != YNODE_MAP)
        return;
    size_t nk = known ? count_words(known) : 0;
    for (size_t i = 0; i < map->n; i++) {
        const struct ynode *k = map->pairs[i].key;
        if (k->used)
            continue;
        const char *s = nk ? suggest_closest(k->str, known, nk) : NULL;
        if (s)
            yread_error(d, k, "unknown key '%s' (did you mean '%s'?)", k->str, s);
        else
            yread_error(d, k, "unknown key '%s'", k->str);
    }
}

static struct ynode *get_scalar(struct diag *d, struct ynode *map, const char *key, int *rc)
{
    struct ynode *n = ynode_get(map, key);
    if (!n || ynode_is_null(n)) {
        *rc = 0;
        return NULL;
    }
    if (n->type != YNODE_SCALAR) {
        yread_error(d, n, "'%s' must be a single value, not %s", key, ynode_type_name(n->type));
        *rc = -1;
        return NULL;
    }
    *rc = 1;
    return n;
}

int yread_scalar_str(struct diag *d, const struct ynode *n, const char *what, char **out)
{
    if (n->type != YNODE_SCALAR) {
        yread_error(d, n, "%s must be a single value, not %s", what, ynode_type_name(n->type));
        return -1;
    }
    char *s = strdup(n->str);
    if (!s)
        return -1;
    free(*out);
    *out = s;
    return 1;
}

int yread_str(struct diag *d, struct ynode *map, const char *key, char **out)
{
    int rc;
    struct ynode *n = get_scalar(d, map, key, &rc);
    if (!n)
        return rc;
    return yread_scalar_str(d, n, key, out);
}

int yread_bool(struct diag *d, struct ynode *map, const char *key, bool *out)
{
    int rc;
    struct ynode *n = get_scalar(d, map, key, &rc);
    if (!n)
        return rc;
    static const char *const yes[] = { "true", "yes", "on", "True", "Yes", "On", "TRUE" };
    static const char *const no[] = { "false", "no", "off", "False", "No", "Off", "FALSE" };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcmp(n->str, yes[i]) == 0) {
            *out = true;
            return 1;
        }
        if (strcmp(n->str, no[i]) == 0) {
            *out = false;
            return 1;
        }
    }
    yread_error(d, n, "'%s' must be true or false, not '%s'", key, n->str);
    return -1;
}

int yread_int(struct diag *d, struct ynode *map, const char *key, int64_t min, int64_t max,
              int64_t *out)
{
    int rc;
    struct ynode *n = get_scalar(d, map, key, &rc);
    if (!n)
        return rc;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(n->str, &end, 10);
    if (errno || end == n->str || *end != '\0') {
        yread_error(d, n, "'%s' must be a whole number, not '%s'", key, n->str);
        return -1;
    }
    if (v < min || v > max) {
        yread_error(d, n, "'%s' must be between %lld and %lld, not %lld", key, (long long)min,
                    (long long)max, v);
        return -1;
    }
    *out = v;
    return 1;
}

int yread_duration(struct diag *d, struct ynode *map, const char *key, int64_t min_ms,
                   int64_t max_ms, int64_t *out_ms)
{
    int rc;
    struct ynode *n = get_scalar(d, map, key, &rc);
    if (!n)
        return rc;
    const char *why = NULL;
    int64_t v;
    if (units_duration_ms(n->str, &v, &why) < 0) {
        yread_error(d, n, "'%s': %s, not '%s'", key, why, n->str);
        return -1;
    }
    if (v < min_ms || v > max_ms) {
        char a[32], b[32];
        units_format_duration(min_ms, a, sizeof a);
        units_format_duration(max_ms, b, sizeof b);
        yread_error(d, n, "'%s' must be between %s and %s, not %s", key, a, b, n->str);
        return -1;
    }
    *out_ms = v;
    return 1;
}

int yread_size(struct diag *d, struct ynode *map, const char *key, uint64_t min, uint64_t max,
               uint64_t *out)
{
    int rc;
    struct ynode *n = get_scalar(d, map, key, &rc);
    if (!n)
        return rc;
    const char *why = NULL;
    uint64_t v;
    if (units_size(n->str, &v, &why) < 0) {
        yread_error(d, n, "'%s': %s, not '%s'", key, why, n->str);
        return -1;
    }
    if (v < min || v > max) {
        char a[32], b[32];
        units_format_size(min, a, sizeof a);
        units_format_size(max, b, sizeof b);
        yread_error(d, n, "'%s' must be between %s and %s, not %s", key, a, b, n->str);
        return -1;
    }
    *out = v;
    return 1;
}

int yread_ratio(struct diag *d, struct ynode *map, const char *key, double *out)
{
    int rc;
    struct ynode *n = get_scalar(d, map, key, &rc);
    if (!n)
        return rc;
    const char *why = NULL;
    if (units_ratio(n->str, out, &why) < 0) {
        yread_error(d, n, "'%s': %s, not '%s'", key, why, n->str);
        return -1;
    }
    return 1;
}

int yread_enum(struct diag *d, struct ynode *map, const char *key, const char *const *names,
               int *out)
{
    int rc;
    struct ynode *n = get_scalar(d, map, key, &rc);
    if (!n)
        return rc;
    size_t nn = count_words(names);
    for (size_t i = 0; i < nn; i++) {
        if (strcmp(n->str, names[i]) == 0) {
            *out = (int)i;
            return 1;
        }
    }
    char list[512] = "";
    size_t off = 0;
    for (size_t i = 0; i < nn && off < sizeof list; i++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "", names[i]);
    const char *s = suggest_closest(n->str, names, nn);
    if (s)
        yread_error(d, n, "'%s' must be one of %s, not '%s' (did you mean '%s'?)", key, list,
                    n->str, s);
    else
        yread_error(d, n, "'%s' must be one of %s, not '%s'", key, list, n->str);
    return -1;
}

void str_list_free(char **list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        free(list[i]);
    free(list);
}

int yread_str_list(struct diag *d, struct ynode *map, const char *key, size_t max, char ***out,
                   size_t *nout)
{
    struct ynode *n = ynode_get(map, key);
    if (!n || ynode_is_null(n))
        return 0;
    struct ynode *single[1] = { n };
    struct ynode **items = single;
    size_t count = 1;
    if (n->type == YNODE_SEQ) {
        items = n->items;
        count = n->n;
    } else if (n->type != YNODE_SCALAR) {
        yread_error(d, n, "'%s' must be a list of values", key);
        return -1;
    }
    if (count > max) {
        yread_error(d, n, "'%s' has %zu entries; at most %zu are allowed", key, count, max);
        return -1;
    }
    char **list = calloc(count ? count : 1, sizeof *list);
    if (!list)
        return -1;
    int rc = 1;
    for (size_t i = 0; i < count; i++) {
        if (items[i]->type != YNODE_SCALAR) {
            yread_error(d, items[i], "'%s' entries must be single values", key);
            rc = -1;
            continue;
        }
        list[i] = strdup(items[i]->str);
        if (!list[i])
            rc = -1;
    }
    if (rc < 0) {
        str_list_free(list, count);
        return -1;
    }
    str_list_free(*out, *nout);
    *out = list;
    *nout = count;
    return 1;
}

int hostport_parse(const char *s, uint16_t default_port, char **host, uint16_t *port,
                   const char **why)
{
    const char *h = s, *colon = NULL;
    size_t hl;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close) {
            *why = "missing ']' after an IPv6 address";
            return -1;
        }
        h = s + 1;
        hl = (size_t)(close - h);
        if (close[1] == ':')
            colon = close + 1;
        else if (close[1] != '\0') {
            *why = "expected ':port' after ']'";
            return -1;
        }
    } else {
        colon = strrchr(s, ':');
        if (colon && strchr(s, ':') != colon) {
            *why = "write IPv6 addresses in brackets: [::1]:5432";
            return -1;
        }
        hl = colon ? (size_t)(colon - s) : strlen(s);
    }
    if (hl == 0 || hl > 253) {
        *why = "expected host:port";
        return -1;
    }
    long p = default_port;
    if (colon) {
        char *end;
        errno = 0;
        p = strtol(colon + 1, &end, 10);
        if (errno || end == colon + 1 || *end || p < 1 || p > 65535) {
            *why = "the port must be a number from 1 to 65535";
            return -1;
        }
    } else if (!default_port) {
        *why = "a port is required (host:port)";
        return -1;
    }
    for (size_t i = 0; i < hl; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':' || c == '_')) {
            *why = "the host has characters that are not allowed in a name or address";
            return -1;
        }
    }
    char *hs = strndup(h, hl);
    if (!hs) {
        *why = "out of memory";
        return -1;
    }
    free(*host);
    *host = hs;
    *port = (uint16_t)p;
    return 0;
}

int yread_scalar_hostport(struct diag *d, const struct ynode *n, const char *what,
                          uint16_t default_port, char **host, uint16_t *port)
{
    if (n->type != YNODE_SCALAR) {
        yread_error(d, n, "%s must be host:port, not %s", what, ynode_type_name(n->type));
        return -1;
    }
    const char *why = NULL;
    if (hostport_parse(n->str, default_port, host, port, &why) < 0) {
        yread_error(d, n, "%s: %s, not '%s'", what, why, n->str);
        return -1;
    }
    return 1;
}

int yread_hostport(struct diag *d, struct ynode *map, const char *key, uint16_t default_port,
                   char **host, uint16_t *port)
{
    int rc;
    struct ynode *n = get_scalar(d, map, key, &rc);
    if (!n)
        return rc;
    char what[128];
    snprintf(what, sizeof what, "'%s'", key);
    return yread_scalar_hostport(d, n, what, default_port, host, port);
}
