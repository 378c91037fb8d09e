/* metrics_render_next: the per-probe part of /metrics made in pieces, as
 * the streamed answer asks for them, and a scrape that cannot go on once
 * the probe set it began with has been replaced (a reload). Only the probe
 * families are rendered here: the rest needs a running daemon (the lab's
 * 20-quorum checks the whole answer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "orchestrator/daemon.h"
#include "orchestrator/metrics.h"

#define N 50

static struct cfg_probe cfgs[N];
static struct probe probes[N];
static char names[N][16];

static void fake_probes(struct daemon *d)
{
    memset(d, 0, sizeof *d);
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "p%02d", i);
        cfgs[i] = (struct cfg_probe){ .name = names[i], .site = "dc2", .kind = PROBE_HTTP };
        probes[i] = (struct probe){ .cfg = &cfgs[i], .last = { .done = true, .ok = i % 2 == 0 } };
        probes[i].duration_count = (uint64_t)i;
    }
    d->probes.probes = probes;
    d->probes.n = N;
    d->probes.generation = 7;
}

static int count(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

static void test_in_pieces(void **state)
{
    (void)state;
    static struct daemon d;
    fake_probes(&d);
    struct metrics_cursor c = { 0 };
    struct buf b;
    buf_init(&b, 1u << 20);
    /* Small pieces: every call adds at least a little, none repeats. */
    int calls = 0;
    while (count(b.data ? b.data : "", "# TYPE triad_pg_replay_lag_bytes") == 0) {
        size_t before = b.len;
        assert_int_equal(metrics_render_next(&d, &b, &c, 100), 1);
        assert_true(b.len > before);
        calls++;
    }
    assert_true(calls > 10);
    assert_int_equal(count(b.data, "triad_probe_up{"), N);
    assert_int_equal(count(b.data, "triad_probe_up{site=\"dc2\",probe=\"p02\"} 1\n"), 1);
    assert_int_equal(count(b.data, "triad_probe_up{site=\"dc2\",probe=\"p03\"} 0\n"), 1);
    assert_int_equal(count(b.data, "triad_probe_duration_seconds_count{"), N);
    assert_int_equal(count(b.data, "probe=\"p49\"} 49\n"), 1);
    assert_int_equal(count(b.data, "# TYPE triad_probe_up gauge"), 1);
    buf_free(&b);
}

static void test_reload_under_a_scrape(void **state)
{
    (void)state;
    static struct daemon d;
    fake_probes(&d);
    struct metrics_cursor c = { 0 };
    struct buf b;
    buf_init(&b, 1u << 20);
    assert_int_equal(metrics_render_next(&d, &b, &c, 100), 1);
    /* A new probe set, even at the same address with as many probes. */
    d.probes.generation = 8;
    assert_int_equal(metrics_render_next(&d, &b, &c, 100), -1);
    /* Closed, not yet replaced. */
    struct metrics_cursor c2 = { 0 };
    assert_int_equal(metrics_render_next(&d, &b, &c2, 100), 1);
    d.probes.probes = NULL;
    d.probes.n = 0;
    assert_int_equal(metrics_render_next(&d, &b, &c2, 100), -1);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_pieces),
        cmocka_unit_test(test_reload_under_a_scrape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
