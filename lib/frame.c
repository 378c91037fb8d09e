/* Framing: the incremental decoder and the encoder for length-prefixed
 * frames (see frame.h for the format and the rules). */
#include "lib/frame.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t effective_max(size_t max)
{
    if (max == 0)
        return FRAME_MAX_DEFAULT;
    return max > FRAME_MAX_LIMIT ? FRAME_MAX_LIMIT : max;
}

void frame_decoder_init(struct frame_decoder *d, size_t max)
{
    memset(d, 0, sizeof *d);
    d->max = effective_max(max);
}

void frame_decoder_free(struct frame_decoder *d)
{
    free(d->payload);
    d->payload = NULL;
    d->have = 0;
    d->want = 0;
    d->hdr_len = 0;
}

static int stop(struct frame_decoder *d, int err)
{
    free(d->payload);
    d->payload = NULL;
    d->have = 0;
    d->error = err;
    return err;
}

/* A whole header has arrived: check it before anything else is read. */
static int header_done(struct frame_decoder *d)
{
    uint32_t n = (uint32_t)d->hdr[0] << 24 | (uint32_t)d->hdr[1] << 16 | (uint32_t)d->hdr[2] << 8 |
                 (uint32_t)d->hdr[3];
    d->announced = n;
    if (n == 0)
        return -EPROTO;
    if (n > d->max)
        return -EMSGSIZE;
    d->want = n;
    d->have = 0;
    return 0;
}

int frame_decoder_feed(struct frame_decoder *d, const void *data, size_t len, frame_cb cb,
                       void *arg)
{
    const char *p = data;
    int r;

    if (d->error)
        return d->error;
    while (len > 0) {
        if (d->hdr_len < FRAME_HDR_LEN) {
            size_t n = FRAME_HDR_LEN - d->hdr_len;
            if (n > len)
                n = len;
            memcpy(d->hdr + d->hdr_len, p, n);
            d->hdr_len += n;
            p += n;
            len -= n;
            if (d->hdr_len < FRAME_HDR_LEN)
                break;
            r = header_done(d);
            if (r < 0)
                return stop(d, r);
            continue;
        }
        if (d->payload == NULL && len >= d->want) {
            /* The whole payload is in this chunk: no copy. */
            const char *frame = p;
            size_t n = d->want;
            p += n;
            len -= n;
            d->hdr_len = 0;
            r = cb(arg, frame, n);
            if (r != 0)
                return stop(d, r);
            continue;
        }
        if (d->payload == NULL) {
            d->payload = malloc(d->want);
            if (d->payload == NULL)
                return stop(d, -ENOMEM);
        }
        size_t n = d->want - d->have;
        if (n > len)
            n = len;
        memcpy(d->payload + d->have, p, n);
        d->have += n;
        p += n;
        len -= n;
        if (d->have < d->want)
            break;
        char *frame = d->payload;
        d->payload = NULL;
        d->hdr_len = 0;
        d->have = 0;
        r = cb(arg, frame, d->want);
        free(frame);
        if (r != 0)
            return stop(d, r);
    }
    return 0;
}

size_t frame_decoder_pending(const struct frame_decoder *d)
{
    if (d->error)
        return 0;
    return d->hdr_len + d->have;
}

const char *frame_decoder_strerror(const struct frame_decoder *d, char *buf, size_t len)
{
    switch (d->error) {
    case 0:
        snprintf(buf, len, "no error");
        break;
    case -EMSGSIZE:
        snprintf(buf, len, "frame of %lu bytes exceeds the %zu-byte cap",
                 (unsigned long)d->announced, d->max);
        break;
    case -EPROTO:
        snprintf(buf, len, "zero-length frame");
        break;
    case -ENOMEM:
        snprintf(buf, len, "out of memory for a %lu-byte frame", (unsigned long)d->announced);
        break;
    default:
        snprintf(buf, len, "decoding stopped (%s)", strerror(-d->error));
        break;
    }
    return buf;
}

int frame_header(unsigned char hdr[FRAME_HDR_LEN], size_t len, size_t max)
{
    if (len == 0)
        return -EINVAL;
    if (len > effective_max(max))
        return -EMSGSIZE;
    hdr[0] = (unsigned char)(len >> 24);
    hdr[1] = (unsigned char)(len >> 16);
    hdr[2] = (unsigned char)(len >> 8);
    hdr[3] = (unsigned char)len;
    return 0;
}

int frame_append(struct buf *b, const void *payload, size_t len, size_t max)
{
    unsigned char hdr[FRAME_HDR_LEN];
    int r = frame_header(hdr, len, max);
    if (r < 0)
        return r;
    if (b->len > b->max || len + FRAME_HDR_LEN > b->max - b->len)
        return -ENOBUFS;
    char *dst = buf_reserve(b, len + FRAME_HDR_LEN);
    if (dst == NULL)
        return -ENOMEM;
    memcpy(dst, hdr, FRAME_HDR_LEN);
    memcpy(dst + FRAME_HDR_LEN, payload, len);
    buf_commit(b, len + FRAME_HDR_LEN);
    return 0;
}
