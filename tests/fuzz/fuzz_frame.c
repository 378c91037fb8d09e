/* Fuzz target: lib/frame's decoder, which reads what a peer sends over its
 * TLS link (orchestrator/peers.c), and the JSON parsing each frame gets.
 *
 * Input: one control byte, then the byte stream. The control byte picks the
 * cap on a payload (small caps make -EMSGSIZE reachable), after how many
 * frames the callback stops decoding (0: never) and the chunking of the
 * third pass. The stream is decoded three times - in one piece, one byte at
 * a time, and in chunks of varying sizes - and the passes must agree on the
 * frames, the result and the bytes left pending; every frame must re-encode
 * (frame_append) to the very bytes it was decoded from. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "lib/buf.h"
#include "lib/frame.h"

#define STOP_CODE 12345

struct pass {
    struct buf frames; /* each frame as header + payload, re-encoded */
    size_t n;
    size_t stop_after;
    size_t cap;
};

static int on_frame(void *arg, const char *payload, size_t len)
{
    struct pass *p = arg;
    FUZZ_CHECK(len > 0 && len <= p->cap, "frame of %zu bytes with a cap of %zu", len, p->cap);
    int r = frame_append(&p->frames, payload, len, p->cap);
    FUZZ_CHECK(r == 0, "frame_append of a decoded frame: %d", r);
    p->n++;
    /* What the peer link does with a payload. */
    json_error_t err;
    json_t *msg = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &err);
    json_decref(msg);
    return p->stop_after && p->n == p->stop_after ? STOP_CODE : 0;
}

/* Feeds data in chunks: 0 = whole, 1 = bytewise, else sizes from a seed. */
static int decode(const uint8_t *data, size_t len, int mode, unsigned seed, struct pass *p,
                  size_t *pending)
{
    struct frame_decoder d;
    frame_decoder_init(&d, p->cap);
    int r = 0;
    size_t off = 0;
    while (off < len && r == 0) {
        size_t n = mode == 0   ? len - off
                   : mode == 1 ? 1
                               : 1 + (seed = seed * 1103515245u + 12345u) % 7;
        if (n > len - off)
            n = len - off;
        r = frame_decoder_feed(&d, data + off, n, on_frame, p);
        off += n;
    }
    if (r != 0) {
        /* Sticky: a later call returns the same error without calling back. */
        size_t before = p->n;
        int again = frame_decoder_feed(&d, data, len ? 1 : 0, on_frame, p);
        FUZZ_CHECK(again == r, "after error %d a feed returned %d", r, again);
        FUZZ_CHECK(p->n == before, "a stopped decoder called back");
        char text[128];
        frame_decoder_strerror(&d, text, sizeof text);
    }
    *pending = frame_decoder_pending(&d);
    frame_decoder_free(&d);
    return r;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t ctl = data[0];
    data++;
    size--;
    static const size_t caps[4] = { 0, 1, 16, 300 };
    size_t cap = caps[ctl & 3] ? caps[ctl & 3] : FRAME_MAX_DEFAULT;
    size_t stop_after = (ctl >> 2) & 3;
    unsigned seed = ctl >> 4;

    struct pass p[3];
    size_t pending[3];
    int r[3];
    for (int i = 0; i < 3; i++) {
        memset(&p[i], 0, sizeof p[i]);
        buf_init(&p[i].frames, size + 64);
        p[i].cap = cap;
        p[i].stop_after = stop_after;
        r[i] = decode(data, size, i, seed, &p[i], &pending[i]);
    }
    /* The one-piece pass: frames are consecutive from the start of the
     * stream, so their re-encoding is a prefix of it. */
    FUZZ_CHECK(p[0].frames.len <= size &&
                   (p[0].frames.len == 0 || memcmp(p[0].frames.data, data, p[0].frames.len) == 0),
               "re-encoded frames differ from the stream");
    if (r[0] == 0)
        FUZZ_CHECK(pending[0] == size - p[0].frames.len, "pending %zu, expected %zu", pending[0],
                   size - p[0].frames.len);
    else
        FUZZ_CHECK(r[0] == -EMSGSIZE || r[0] == -EPROTO || r[0] == STOP_CODE, "result %d", r[0]);
    for (int i = 1; i < 3; i++) {
        FUZZ_CHECK(r[i] == r[0], "pass %d returned %d, the whole stream %d", i, r[i], r[0]);
        FUZZ_CHECK(p[i].n == p[0].n && p[i].frames.len == p[0].frames.len &&
                       (p[0].frames.len == 0 ||
                        memcmp(p[i].frames.data, p[0].frames.data, p[0].frames.len) == 0),
                   "pass %d decoded other frames", i);
        if (r[0] == 0)
            FUZZ_CHECK(pending[i] == pending[0], "pass %d: %zu bytes pending, not %zu", i,
                       pending[i], pending[0]);
    }
    for (int i = 0; i < 3; i++)
        buf_free(&p[i].frames);
    return 0;
}
