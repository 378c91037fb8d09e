/* Length-prefixed message framing, independent of the transport.
 *
 * A frame is a 4-byte big-endian payload length followed by the payload.
 * Every decoder has a cap on the payload length: a header announcing more
 * is an error (-EMSGSIZE) found from the header alone, so an oversized
 * frame is never buffered. Zero-length frames are refused on both sides
 * (-EPROTO when decoding, -EINVAL when encoding): payloads are JSON
 * documents, never empty, and an empty frame is more likely a bug or a
 * probe than a message.
 */
#ifndef TRIAD_FRAME_H
#define TRIAD_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

#define FRAME_HDR_LEN     4
#define FRAME_MAX_DEFAULT ((size_t)1024 * 1024)
#define FRAME_MAX_LIMIT   ((size_t)UINT32_MAX)

/* Called once per whole frame. The payload is not NUL-terminated and is
 * valid only during the call. A non-zero return stops decoding: feed
 * returns that value and the decoder stays stopped. */
typedef int (*frame_cb)(void *arg, const char *payload, size_t len);

struct frame_decoder {
    size_t max;                       /* cap on a payload, 1..FRAME_MAX_LIMIT */
    unsigned char hdr[FRAME_HDR_LEN]; /* header bytes of the current frame */
    size_t hdr_len;                   /* how many of them have arrived */
    size_t want;                      /* payload length of the current frame */
    char *payload;                    /* partial payload (want bytes), or NULL */
    size_t have;                      /* payload bytes buffered */
    int error;                        /* sticky: 0 or the error that stopped decoding */
    uint32_t announced;               /* the length of the last header seen */
};

/* max 0 means FRAME_MAX_DEFAULT; larger than FRAME_MAX_LIMIT is clamped. */
void frame_decoder_init(struct frame_decoder *d, size_t max);
void frame_decoder_free(struct frame_decoder *d);

/* Feeds a chunk of any size (one byte at a time works) and calls cb for
 * each whole frame in order. Returns 0, -EMSGSIZE (a header announced more
 * than the cap; `announced` has the length), -EPROTO (a zero-length frame),
 * -ENOMEM, or the callback's non-zero value. After an error every later
 * call returns the same error. */
int frame_decoder_feed(struct frame_decoder *d, const void *data, size_t len, frame_cb cb,
                       void *arg);

/* Bytes of an unfinished frame held by the decoder (header included):
 * non-zero at end of stream means the peer stopped mid-frame. */
size_t frame_decoder_pending(const struct frame_decoder *d);

/* The decoder's error as a sentence, e.g. "frame of 2000000 bytes exceeds
 * the 1048576-byte cap". Returns buf. */
const char *frame_decoder_strerror(const struct frame_decoder *d, char *buf, size_t len);

/* Writes the header for a payload of len bytes. -EINVAL for len 0,
 * -EMSGSIZE above max (0 means FRAME_MAX_DEFAULT). */
int frame_header(unsigned char hdr[FRAME_HDR_LEN], size_t len, size_t max);

/* Appends header and payload to b, both or nothing: the frame errors of
 * frame_header, or -ENOBUFS when b's own cap has no room for the frame. */
int frame_append(struct buf *b, const void *payload, size_t len, size_t max);

#endif
