/* Capped growable byte buffer. */
#include "lib/buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, size_t max)
{
    memset(b, 0, sizeof *b);
    b->max = max;
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->alloc = 0;
    b->truncated = 0;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    b->truncated = 0;
    if (b->data)
        b->data[0] = '\0';
}

char *buf_reserve(struct buf *b, size_t n)
{
    if (n > b->max - b->len) {
        b->truncated = 1;
        return NULL;
    }
    size_t need = b->len + n + 1;
    if (need > b->alloc) {
        size_t na = b->alloc ? b->alloc : 64;
        while (na < need)
            na *= 2;
        if (na > b->max + 1)
            na = b->max + 1;
        char *nd = realloc(b->data, na);
        if (!nd)
            return NULL;
        b->data = nd;
        b->alloc = na;
    }
    return b->data + b->len;
}

void buf_commit(struct buf *b, size_t n)
{
    b->len += n;
    b->data[b->len] = '\0';
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    char *dst = buf_reserve(b, n);
    if (!dst)
        return b->truncated ? -EMSGSIZE : -ENOMEM;
    if (n)
        memcpy(dst, p, n);
    buf_commit(b, n);
    return 0;
}

int buf_append_str(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -EINVAL;
    char *dst = buf_reserve(b, (size_t)n);
    if (!dst)
        return b->truncated ? -EMSGSIZE : -ENOMEM;
    vsnprintf(dst, (size_t)n + 1, fmt, ap);
    buf_commit(b, (size_t)n);
    return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return r;
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

char *buf_steal(struct buf *b)
{
    char *d = b->data;
    if (!d)
        d = calloc(1, 1);
    b->data = NULL;
    b->len = b->alloc = 0;
    b->truncated = 0;
    return d;
}
