/* YAML to a positioned tree, with libyaml's event parser. */
#include "lib/yaml_doc.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "lib/buf.h"

/* A document this large (a configuration with a thousand probes: about 1 MB
 * of nodes per 10,000) is freed below allocations that live on, and glibc
 * keeps those pages resident unless asked to give them back. */
#define YDOC_TRIM_NODES 10000

struct builder {
    struct ydoc *doc;
    struct diag *d;
    yaml_parser_t parser;
    int failed;
};

static struct ynode *node_new(struct builder *b, enum ynode_type t, const yaml_mark_t *m)
{
    if (b->doc->nodes >= YDOC_MAX_NODES) {
        diag_add(b->d, b->doc->file, (int)m->line + 1, (int)m->column + 1,
                 "document has more than %d nodes", YDOC_MAX_NODES);
        b->failed = 1;
        return NULL;
    }
    struct ynode *n = calloc(1, sizeof *n);
    if (!n) {
        b->failed = 1;
        return NULL;
    }
    n->type = t;
    n->line = (int)m->line + 1;
    n->col = (int)m->column + 1;
    n->file = b->doc->file;
    b->doc->nodes++;
    return n;
}

static void node_free(struct ynode *n)
{
    if (!n)
        return;
    free(n->str);
    for (size_t i = 0; n->items && i < n->n; i++)
        node_free(n->items[i]);
    for (size_t i = 0; n->pairs && i < n->n; i++) {
        node_free(n->pairs[i].key);
        node_free(n->pairs[i].value);
    }
    free(n->items);
    free(n->pairs);
    free(n);
}

static int next_event(struct builder *b, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&b->parser, ev)) {
        const yaml_mark_t *m = &b->parser.problem_mark;
        diag_add(b->d, b->doc->file, (int)m->line + 1, (int)m->column + 1, "YAML syntax: %s%s%s",
                 b->parser.problem ? b->parser.problem : "error", b->parser.context ? " " : "",
                 b->parser.context ? b->parser.context : "");
        b->failed = 1;
        return -1;
    }
    return 0;
}

static struct ynode *build_node(struct builder *b, yaml_event_t *ev, int depth);

static int build_children(struct builder *b, struct ynode *n, int depth)
{
    for (;;) {
        yaml_event_t ev;
        if (next_event(b, &ev) < 0)
            return -1;
        if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            return 0;
        }
        struct ynode *child = build_node(b, &ev, depth + 1);
        yaml_event_delete(&ev);
        if (!child)
            return -1;
        if (n->type == YNODE_SEQ) {
            struct ynode **ni = realloc(n->items, (n->n + 1) * sizeof *ni);
            if (!ni) {
                node_free(child);
                return -1;
            }
            n->items = ni;
            n->items[n->n++] = child;
            continue;
        }
        /* Mapping: child is the key; the value follows. */
        if (child->type != YNODE_SCALAR) {
            diag_add(b->d, b->doc->file, child->line, child->col, "mapping keys must be scalars");
            node_free(child);
            b->failed = 1;
            return -1;
        }
        for (size_t i = 0; i < n->n; i++) {
            if (strcmp(n->pairs[i].key->str, child->str) == 0) {
                diag_add(b->d, b->doc->file, child->line, child->col,
                         "duplicate key '%s' (first at line %d)", child->str,
                         n->pairs[i].key->line);
                b->failed = 1;
            }
        }
        yaml_event_t vev;
        if (next_event(b, &vev) < 0) {
            node_free(child);
            return -1;
        }
        struct ynode *value = build_node(b, &vev, depth + 1);
        yaml_event_delete(&vev);
        if (!value) {
            node_free(child);
            return -1;
        }
        struct ypair *np = realloc(n->pairs, (n->n + 1) * sizeof *np);
        if (!np) {
            node_free(child);
            node_free(value);
            return -1;
        }
        n->pairs = np;
        n->pairs[n->n].key = child;
        n->pairs[n->n].value = value;
        n->n++;
    }
}

static struct ynode *build_node(struct builder *b, yaml_event_t *ev, int depth)
{
    const yaml_mark_t *m = &ev->start_mark;
    if (depth > YDOC_MAX_DEPTH) {
        diag_add(b->d, b->doc->file, (int)m->line + 1, (int)m->column + 1,
                 "nesting deeper than %d levels", YDOC_MAX_DEPTH);
        b->failed = 1;
        return NULL;
    }
    struct ynode *n = NULL;
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        diag_add(b->d, b->doc->file, (int)m->line + 1, (int)m->column + 1,
                 "YAML aliases (*name) are not supported; write the value out");
        b->failed = 1;
        return NULL;
    case YAML_SCALAR_EVENT:
        if (ev->data.scalar.anchor) {
            diag_add(b->d, b->doc->file, (int)m->line + 1, (int)m->column + 1,
                     "YAML anchors (&name) are not supported");
            b->failed = 1;
            return NULL;
        }
        n = node_new(b, YNODE_SCALAR, m);
        if (!n)
            return NULL;
        n->len = ev->data.scalar.length;
        n->str = malloc(n->len + 1);
        if (!n->str) {
            node_free(n);
            b->failed = 1;
            return NULL;
        }
        memcpy(n->str, ev->data.scalar.value, n->len);
        n->str[n->len] = '\0';
        if (strlen(n->str) != n->len) {
            diag_add(b->d, b->doc->file, n->line, n->col, "value contains a NUL character");
            b->failed = 1;
        }
        n->quoted = ev->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                    ev->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE ||
                    ev->data.scalar.style == YAML_LITERAL_SCALAR_STYLE ||
                    ev->data.scalar.style == YAML_FOLDED_SCALAR_STYLE;
        return n;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        int is_seq = ev->type == YAML_SEQUENCE_START_EVENT;
        const yaml_char_t *anchor =
            is_seq ? ev->data.sequence_start.anchor : ev->data.mapping_start.anchor;
        if (anchor) {
            diag_add(b->d, b->doc->file, (int)m->line + 1, (int)m->column + 1,
                     "YAML anchors (&name) are not supported");
            b->failed = 1;
            return NULL;
        }
        n = node_new(b, is_seq ? YNODE_SEQ : YNODE_MAP, m);
        if (!n)
            return NULL;
        if (build_children(b, n, depth) < 0) {
            node_free(n);
            b->failed = 1;
            return NULL;
        }
        return n;
    }
    default:
        diag_add(b->d, b->doc->file, (int)m->line + 1, (int)m->column + 1, "unexpected YAML event");
        b->failed = 1;
        return NULL;
    }
}

int ydoc_parse(struct ydoc *doc, const char *file, const char *data, size_t len, struct diag *d)
{
    memset(doc, 0, sizeof *doc);
    doc->file = strdup(file);
    if (!doc->file)
        return -1;
    if (len > YDOC_MAX_INPUT) {
        diag_add(d, file, 0, 0, "file larger than %u bytes", YDOC_MAX_INPUT);
        return -1;
    }
    struct builder b = { .doc = doc, .d = d };
    if (!yaml_parser_initialize(&b.parser))
        return -1;
    yaml_parser_set_input_string(&b.parser, (const unsigned char *)data, len);
    int result = -1;
    int done = 0;
    while (!done && !b.failed) {
        yaml_event_t ev;
        if (next_event(&b, &ev) < 0)
            break;
        switch (ev.type) {
        case YAML_STREAM_START_EVENT:
        case YAML_DOCUMENT_END_EVENT:
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (doc->root) {
                diag_add(d, file, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                         "only one YAML document per file is allowed");
                b.failed = 1;
            }
            break;
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        default:
            doc->root = build_node(&b, &ev, 0);
            if (!doc->root)
                b.failed = 1;
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&b.parser);
    if (!b.failed)
        result = 0;
    else {
        node_free(doc->root);
        doc->root = NULL;
    }
    return result;
}

int ydoc_load(struct ydoc *doc, const char *path, struct diag *d)
{
    memset(doc, 0, sizeof *doc);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        diag_add(d, path, 0, 0, "cannot open: %s", strerror(errno));
        doc->file = strdup(path);
        return -1;
    }
    struct buf b;
    buf_init(&b, YDOC_MAX_INPUT);
    int result = -1;
    for (;;) {
        char *dst = buf_reserve(&b, 65536);
        if (!dst) {
            /* Near the cap: read what is left, and one byte more to see. */
            dst = buf_reserve(&b, b.max - b.len);
            if (!dst || b.max == b.len) {
                diag_add(d, path, 0, 0, "file larger than %u bytes", YDOC_MAX_INPUT);
                goto out;
            }
        }
        size_t room = b.alloc - b.len - 1;
        ssize_t r = read(fd, dst, room);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            diag_add(d, path, 0, 0, "cannot read: %s", strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        buf_commit(&b, (size_t)r);
    }
    close(fd);
    fd = -1;
    result = ydoc_parse(doc, path, b.data ? b.data : "", b.len, d);
out:
    if (fd >= 0)
        close(fd);
    if (!doc->file)
        doc->file = strdup(path);
    buf_free(&b);
    return result;
}

void ydoc_free(struct ydoc *doc)
{
    bool large = doc->nodes >= YDOC_TRIM_NODES;
    node_free(doc->root);
    free(doc->file);
    memset(doc, 0, sizeof *doc);
    if (large)
        malloc_trim(0);
}

struct ynode *ynode_get(struct ynode *map, const char *key)
{
    if (!map || map->type != YNODE_MAP)
        return NULL;
    for (size_t i = 0; i < map->n; i++) {
        if (strcmp(map->pairs[i].key->str, key) == 0) {
            map->pairs[i].key->used = true;
            return map->pairs[i].value;
        }
    }
    return NULL;
}

bool ynode_is_null(const struct ynode *n)
{
    if (!n)
        return true;
    if (n->type != YNODE_SCALAR || n->quoted)
        return false;
    return n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
           strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0;
}

const char *ynode_type_name(enum ynode_type t)
{
    switch (t) {
    case YNODE_SCALAR:
        return "a scalar";
    case YNODE_SEQ:
        return "a list";
    case YNODE_MAP:
        return "a mapping";
    }
    return "?";
}
