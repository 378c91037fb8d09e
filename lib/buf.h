/* Capped growable byte buffer.
 *
 * Every buffer has a maximum size set when it is created: anything that
 * comes from the network, a file or a child process is bounded. Appending
 * past the cap fails with -EMSGSIZE and sets `truncated`; the data already
 * in the buffer stays valid and NUL-terminated.
 */
#ifndef TRIAD_BUF_H
#define TRIAD_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;   /* always NUL-terminated when non-NULL */
    size_t len;   /* bytes used, excluding the NUL */
    size_t alloc; /* bytes allocated */
    size_t max;   /* cap on len */
    int truncated;
};

void buf_init(struct buf *b, size_t max);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_append_str(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Drop the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);
/* Make sure n more bytes fit without exceeding the cap; returns a pointer to
 * the free space (commit with buf_commit) or NULL. */
char *buf_reserve(struct buf *b, size_t n);
void buf_commit(struct buf *b, size_t n);
/* Hand the data to the caller (who frees it); the buffer becomes empty. */
char *buf_steal(struct buf *b);

#endif
