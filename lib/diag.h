/* Diagnostics: a list of errors found while reading a file, each with a
 * position, printed as FILE:LINE:COLUMN: message. Readers report every error
 * they find rather than stopping at the first. */
#ifndef TRIAD_DIAG_H
#define TRIAD_DIAG_H

#include <stddef.h>
#include <stdio.h>

#define DIAG_MAX 200 /* more than this are counted but not kept */

struct diag_item {
    char *file;
    int line; /* 1-based; 0 when unknown */
    int col;  /* 1-based; 0 when unknown */
    char *msg;
};

struct diag {
    struct diag_item *items;
    size_t n;
    size_t dropped;
    size_t calls; /* every diag_add, including repeats of a known error */
};

void diag_init(struct diag *d);
void diag_free(struct diag *d);
void diag_add(struct diag *d, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
size_t diag_count(const struct diag *d);
/* A mark that changes whenever an error is reported, even a repeated one:
 * compare marks to learn whether a step of reading found anything. */
size_t diag_mark(const struct diag *d);
/* Print in the order found: FILE:LINE:COLUMN: message */
void diag_print(const struct diag *d, FILE *out);

#endif
