/* Unit tests: length-prefixed framing (decoder and encoder). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "lib/buf.h"
#include "lib/frame.h"

#define MAX_SEEN 64

struct seen {
    size_t n;
    size_t len[MAX_SEEN];
    char *data[MAX_SEEN];
    int stop_after; /* return 1 after this many frames (0: never) */
};

static int collect(void *arg, const char *payload, size_t len)
{
    struct seen *s = arg;
    assert_true(s->n < MAX_SEEN);
    s->data[s->n] = malloc(len);
    assert_non_null(s->data[s->n]);
    memcpy(s->data[s->n], payload, len);
    s->len[s->n] = len;
    s->n++;
    if (s->stop_after && s->n == (size_t)s->stop_after)
        return 1;
    return 0;
}

static void seen_free(struct seen *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->data[i]);
    memset(s, 0, sizeof *s);
}

/* Three frames of different sizes, one after the other. */
static void make_stream(struct buf *b, size_t big)
{
    char *p = malloc(big);
    assert_non_null(p);
    for (size_t i = 0; i < big; i++)
        p[i] = (char)('a' + i % 26);
    buf_init(b, 1 << 20);
    assert_int_equal(frame_append(b, "{\"a\":1}", 7, 0), 0);
    assert_int_equal(frame_append(b, p, big, 0), 0);
    assert_int_equal(frame_append(b, "x", 1, 0), 0);
    free(p);
}

static void check_stream(const struct seen *s, size_t big)
{
    assert_int_equal(s->n, 3);
    assert_int_equal(s->len[0], 7);
    assert_memory_equal(s->data[0], "{\"a\":1}", 7);
    assert_int_equal(s->len[1], big);
    for (size_t i = 0; i < big; i++)
        assert_int_equal(s->data[1][i], 'a' + i % 26);
    assert_int_equal(s->len[2], 1);
    assert_int_equal(s->data[2][0], 'x');
}

static void test_one_chunk(void **state)
{
    (void)state;
    struct buf b;
    struct seen s = { 0 };
    struct frame_decoder d;
    make_stream(&b, 1000);
    assert_int_equal(b.len, 3 * FRAME_HDR_LEN + 7 + 1000 + 1);
    assert_memory_equal(b.data, "\0\0\0\7", 4);
    frame_decoder_init(&d, 4096);
    assert_int_equal(frame_decoder_feed(&d, b.data, b.len, collect, &s), 0);
    check_stream(&s, 1000);
    assert_int_equal(frame_decoder_pending(&d), 0);
    frame_decoder_free(&d);
    seen_free(&s);
    buf_free(&b);
}

static void test_byte_at_a_time(void **state)
{
    (void)state;
    struct buf b;
    struct seen s = { 0 };
    struct frame_decoder d;
    make_stream(&b, 5000);
    frame_decoder_init(&d, 8192);
    for (size_t i = 0; i < b.len; i++) {
        assert_int_equal(frame_decoder_feed(&d, b.data + i, 1, collect, &s), 0);
        /* A frame appears exactly when its last byte arrives. */
        if (i == FRAME_HDR_LEN + 7 - 1)
            assert_int_equal(s.n, 1);
        if (i == b.len - 2)
            assert_int_equal(s.n, 2);
    }
    check_stream(&s, 5000);
    assert_int_equal(frame_decoder_pending(&d), 0);
    frame_decoder_free(&d);
    seen_free(&s);
    buf_free(&b);
}

/* Every split point of the stream into two chunks, and odd chunk sizes. */
static void test_all_splits(void **state)
{
    (void)state;
    struct buf b;
    struct frame_decoder d;
    make_stream(&b, 40);
    for (size_t cut = 0; cut <= b.len; cut++) {
        struct seen s = { 0 };
        frame_decoder_init(&d, 0);
        assert_int_equal(frame_decoder_feed(&d, b.data, cut, collect, &s), 0);
        assert_int_equal(frame_decoder_feed(&d, b.data + cut, b.len - cut, collect, &s), 0);
        check_stream(&s, 40);
        frame_decoder_free(&d);
        seen_free(&s);
    }
    for (size_t step = 2; step < 12; step++) {
        struct seen s = { 0 };
        frame_decoder_init(&d, 0);
        for (size_t off = 0; off < b.len; off += step) {
            size_t n = b.len - off < step ? b.len - off : step;
            assert_int_equal(frame_decoder_feed(&d, b.data + off, n, collect, &s), 0);
        }
        check_stream(&s, 40);
        frame_decoder_free(&d);
        seen_free(&s);
    }
    buf_free(&b);
}

/* A header announcing more than the cap fails as soon as its 4th byte
 * arrives, with no payload sent, and the error sticks. */
static void test_huge_header(void **state)
{
    (void)state;
    struct seen s = { 0 };
    struct frame_decoder d;
    const unsigned char hdr[4] = { 0xff, 0xff, 0xff, 0xff };
    char why[128];
    frame_decoder_init(&d, FRAME_MAX_DEFAULT);
    assert_int_equal(frame_decoder_feed(&d, hdr, 3, collect, &s), 0);
    assert_int_equal(frame_decoder_pending(&d), 3);
    assert_int_equal(frame_decoder_feed(&d, hdr + 3, 1, collect, &s), -EMSGSIZE);
    assert_int_equal(d.announced, 0xffffffffu);
    assert_null(d.payload);
    assert_string_equal(frame_decoder_strerror(&d, why, sizeof why),
                        "frame of 4294967295 bytes exceeds the 1048576-byte cap");
    assert_int_equal(frame_decoder_feed(&d, "abc", 3, collect, &s), -EMSGSIZE);
    assert_int_equal(s.n, 0);
    frame_decoder_free(&d);
}

/* The cap is inclusive: max bytes pass, max + 1 do not. */
static void test_cap_boundary(void **state)
{
    (void)state;
    struct seen s = { 0 };
    struct frame_decoder d;
    struct buf b;
    char payload[101];
    char why[128];
    memset(payload, 'z', sizeof payload);
    buf_init(&b, 1024);
    assert_int_equal(frame_append(&b, payload, 100, 100), 0);
    assert_int_equal(frame_append(&b, payload, 101, 100), -EMSGSIZE);
    assert_int_equal(b.len, 104);
    frame_decoder_init(&d, 100);
    assert_int_equal(frame_decoder_feed(&d, b.data, b.len, collect, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.len[0], 100);
    frame_decoder_free(&d);

    buf_reset(&b);
    assert_int_equal(frame_append(&b, payload, 101, 0), 0);
    frame_decoder_init(&d, 100);
    assert_int_equal(frame_decoder_feed(&d, b.data, b.len, collect, &s), -EMSGSIZE);
    assert_int_equal(s.n, 1);
    assert_string_equal(frame_decoder_strerror(&d, why, sizeof why),
                        "frame of 101 bytes exceeds the 100-byte cap");
    frame_decoder_free(&d);
    seen_free(&s);
    buf_free(&b);
}

static void test_zero_length_refused(void **state)
{
    (void)state;
    struct seen s = { 0 };
    struct frame_decoder d;
    unsigned char hdr[4];
    char why[64];
    struct buf b;
    assert_int_equal(frame_header(hdr, 0, 0), -EINVAL);
    buf_init(&b, 64);
    assert_int_equal(frame_append(&b, "", 0, 0), -EINVAL);
    assert_int_equal(b.len, 0);
    buf_free(&b);
    frame_decoder_init(&d, 0);
    assert_int_equal(frame_decoder_feed(&d, "\0\0\0\0", 4, collect, &s), -EPROTO);
    assert_string_equal(frame_decoder_strerror(&d, why, sizeof why), "zero-length frame");
    assert_int_equal(s.n, 0);
    frame_decoder_free(&d);
}

/* A callback that says stop: the rest of the chunk is not delivered. */
static void test_callback_stops(void **state)
{
    (void)state;
    struct seen s = { .stop_after = 1 };
    struct frame_decoder d;
    struct buf b;
    make_stream(&b, 10);
    frame_decoder_init(&d, 0);
    assert_int_equal(frame_decoder_feed(&d, b.data, b.len, collect, &s), 1);
    assert_int_equal(s.n, 1);
    assert_int_equal(frame_decoder_feed(&d, b.data, b.len, collect, &s), 1);
    assert_int_equal(s.n, 1);
    frame_decoder_free(&d);
    seen_free(&s);
    buf_free(&b);
}

static void test_encoder(void **state)
{
    (void)state;
    unsigned char hdr[4];
    struct buf b;
    assert_int_equal(frame_header(hdr, 0x01020304, FRAME_MAX_LIMIT), 0);
    assert_memory_equal(hdr, "\1\2\3\4", 4);
    assert_int_equal(frame_header(hdr, FRAME_MAX_DEFAULT + 1, 0), -EMSGSIZE);
    assert_int_equal(frame_header(hdr, FRAME_MAX_DEFAULT, 0), 0);
    /* The buffer's own cap: both parts or nothing. */
    buf_init(&b, 10);
    assert_int_equal(frame_append(&b, "abcdef", 6, 0), 0);
    assert_int_equal(frame_append(&b, "g", 1, 0), -ENOBUFS);
    assert_int_equal(b.len, 10);
    assert_memory_equal(b.data, "\0\0\0\6abcdef", 10);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_chunk),      cmocka_unit_test(test_byte_at_a_time),
        cmocka_unit_test(test_all_splits),     cmocka_unit_test(test_huge_header),
        cmocka_unit_test(test_cap_boundary),   cmocka_unit_test(test_zero_length_refused),
        cmocka_unit_test(test_callback_stops), cmocka_unit_test(test_encoder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
