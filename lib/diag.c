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
    if (d->n >= DIAG_MAX) {
        d->dropped++;
        return;
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
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

size_t diag_count(const struct diag *d)
{
    return d->n + d->dropped;
}

void diag_print(const struct diag *d, FILE *out)
{
    for (size_t i = 0; i < d->n; i++) {
        const struct diag_item *it = &d->items[i];
        if (it->line > 0)
            fprintf(out, "%s:%d:%d: %s\n", it->file, it->line, it->col, it->msg);
        else
            fprintf(out, "%s: %s\n", it->file, it->msg);
    }
    if (d->dropped)
        fprintf(out, "(%zu more errors not shown)\n", d->dropped);
}
