/* Diagnostics list. */
#include "lib/diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void diag_init(struct diag *d)
{
    memset(d, 0, sizeof *d);
}

void diag_free(struct diag *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->items[i].file);
        free(d->items[i].msg);
    }
    free(d->items);
    memset(d, 0, sizeof *d);
}

void diag_add(struct diag *d, const char *file, int line, int col, const char *fmt, ...)
{
    d->calls++;
    if (d->n >= DIAG_MAX) {
        d->dropped++;
        return;
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* The same problem found twice (e.g. a runbook checked for several
     * site pairs) is reported once. */
    for (size_t i = 0; i < d->n; i++) {
        const struct diag_item *it = &d->items[i];
        if (it->line == line && it->col == col && strcmp(it->msg, msg) == 0 &&
            strcmp(it->file, file ? file : "-") == 0)
            return;
    }
    struct diag_item *ni = realloc(d->items, (d->n + 1) * sizeof *ni);
    if (!ni) {
        d->dropped++;
        return;
    }
    d->items = ni;
    struct diag_item *it = &d->items[d->n];
    it->file = strdup(file ? file : "-");
    it->msg = strdup(msg);
    it->line = line;
    it->col = col;
    if (!it->file || !it->msg) {
        free(it->file);
        free(it->msg);
        d->dropped++;
        return;
    }
    d->n++;
}

size_t diag_mark(const struct diag *d)
{
    return d->calls;
}

size_t diag_count(const struct diag *d)
{
    return d->n + d->dropped;
}

/* Files in the order they were first reported, then by position. */
static int file_rank(const struct diag *d, const char *file)
{
    for (size_t i = 0; i < d->n; i++) {
        if (strcmp(d->items[i].file, file) == 0)
            return (int)i;
    }
    return (int)d->n;
}

static const struct diag *sort_ctx;

static int cmp_items(const void *a, const void *b)
{
    const struct diag_item *x = *(const struct diag_item *const *)a;
    const struct diag_item *y = *(const struct diag_item *const *)b;
    int fx = file_rank(sort_ctx, x->file), fy = file_rank(sort_ctx, y->file);
    if (fx != fy)
        return fx < fy ? -1 : 1;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x < y ? -1 : (x > y);
}

void diag_print(const struct diag *d, FILE *out)
{
    const struct diag_item **order = calloc(d->n ? d->n : 1, sizeof *order);
    if (!order)
        return;
    for (size_t i = 0; i < d->n; i++)
        order[i] = &d->items[i];
    sort_ctx = d;
    qsort(order, d->n, sizeof *order, cmp_items);
    sort_ctx = NULL;
    for (size_t i = 0; i < d->n; i++) {
        const struct diag_item *it = order[i];
        if (it->line > 0)
            fprintf(out, "%s:%d:%d: %s\n", it->file, it->line, it->col, it->msg);
        else
            fprintf(out, "%s: %s\n", it->file, it->msg);
    }
    free(order);
    if (d->dropped)
        fprintf(out, "(%zu more errors not shown)\n", d->dropped);
}
