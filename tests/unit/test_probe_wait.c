/* Unit tests: the probe.wait action against a probe whose results the test
 * writes: check holds only once the state has lasted `for` (a step whose
 * condition has just become true is not skipped), run waits that long and
 * starts counting again when the state flips, stale results and a missing
 * probe. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "acttest.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "orchestrator/config.h"
#include "probes/probe.h"
#include "runbooks/runbook.h"

static json_t *ctx;

static int suite_setup(void **state)
{
    (void)state;
    log_set_level(LOG_ERROR);
    json_t *cfg = json_pack("{s:{s:{},s:{},s:{}}}", "sites", "dc1", "dc2", "dc3");
    ctx = rb_context(cfg, "run-1", 3, "dc1", "dc2", "dc1-loss");
    json_decref(cfg);
    return ctx ? 0 : -1;
}

static int suite_teardown(void **state)
{
    (void)state;
    json_decref(ctx);
    return 0;
}

struct h {
    uv_loop_t loop;
    struct rb_env env;
    struct acttest t;
    struct cfg_probe cfg;
    struct probe probe;
    bool have_probe;
    bool next_ok; /* the result the tick produces */
};

static struct h *H;

static const struct probe *find_probe(struct rb_env *env, const char *site, const char *name)
{
    (void)env;
    if (!H->have_probe || strcmp(site, "dc2") != 0 || strcmp(name, "ingress") != 0)
        return NULL;
    return &H->probe;
}

/* One probe result, as the scheduler's finish() records it. */
static void result(struct h *h, bool ok, int64_t at)
{
    if (!h->probe.last.done || h->probe.last.ok != ok)
        h->probe.state_since_ms = at;
    h->probe.last.done = true;
    h->probe.last.ok = ok;
    h->probe.last.at_ms = at;
    static char up[] = "HTTP 200", down[] = "HTTP 503"; /* not the scheduler's: never freed */
    h->probe.last.detail = ok ? up : down;
}

static void h_init(struct h *h)
{
    memset(h, 0, sizeof *h);
    H = h;
    assert_int_equal(uv_loop_init(&h->loop), 0);
    h->env = (struct rb_env){ .loop = &h->loop, .site = "dc2", .probe = find_probe };
    h->t.env = &h->env;
    h->t.ctx = ctx;
    h->t.epoch = 3;
    /* Results stay fresh for 2 intervals + the timeout: long enough for a
     * test, so one result (from a tick) is all a run needs. */
    h->cfg.interval_ms = 5000;
    h->cfg.timeout_ms = 1000;
    h->probe.cfg = &h->cfg;
    h->have_probe = true;
}

/* The tick: a new result, as the next probe run would give. */
static void new_result(void *arg)
{
    struct h *h = arg;
    result(h, h->next_ok, loop_now_ms());
}

static void tick_result(struct h *h, bool ok, uint64_t after_ms)
{
    h->next_ok = ok;
    h->t.tick = new_result;
    h->t.tick_arg = h;
    h->t.tick_ms = after_ms;
}

static void h_done(struct h *h)
{
    acttest_done(&h->t);
    assert_int_equal(uv_loop_close(&h->loop), 0);
    H = NULL;
}

static json_t *params(const char *state, const char *for_)
{
    /* Durations as the runbook loader leaves them: milliseconds. */
    int64_t ms = strtoll(for_, NULL, 10);
    return json_pack("{s:s,s:s,s:s,s:I}", "site", "dc2", "probe", "ingress", "state", state, "for",
                     (json_int_t)ms);
}

/* One operation; the params' reference is dropped after it. */
static int op(struct h *h, enum rb_op o, int64_t timeout_ms, json_t *p)
{
    int calls = acttest_op(&h->t, "probe.wait", o, timeout_ms, p);
    json_decref(p);
    return calls;
}

static void test_check_needs_the_duration(void **state)
{
    (void)state;
    struct h h;
    h_init(&h);
    int64_t now = loop_now_ms();
    result(&h, true, now - 5000); /* up since 5 s */
    result(&h, true, now);
    op(&h, RB_OP_CHECK, 1000, params("up", "3000"));
    assert_int_equal(h.t.status, 1);
    assert_non_null(strstr(h.t.detail, "up for"));
    /* Up for 1 s only: a 3 s hold is not there yet. */
    memset(&h.probe.last, 0, sizeof h.probe.last);
    result(&h, true, now - 1000);
    result(&h, true, now);
    op(&h, RB_OP_CHECK, 1000, params("up", "3000"));
    assert_int_equal(h.t.status, 0);
    /* ... while a check without a duration holds. */
    op(&h, RB_OP_CHECK, 1000, params("up", "0"));
    assert_int_equal(h.t.status, 1);
    /* Down, waiting for up: does not hold; waiting for down: holds. */
    result(&h, false, now - 4000);
    result(&h, false, now);
    op(&h, RB_OP_CHECK, 1000, params("up", "0"));
    assert_int_equal(h.t.status, 0);
    op(&h, RB_OP_CHECK, 1000, params("down", "3000"));
    assert_int_equal(h.t.status, 1);
    /* A stale result proves nothing. */
    h.probe.last.at_ms = now - 20000;
    op(&h, RB_OP_CHECK, 1000, params("down", "0"));
    assert_int_equal(h.t.status, 0);
    assert_non_null(strstr(h.t.detail, "no recent result"));
    /* No such probe here. */
    h.have_probe = false;
    op(&h, RB_OP_CHECK, 1000, params("up", "0"));
    assert_int_equal(h.t.status, -ENODATA);
    h_done(&h);
}

static void test_run_waits_for_the_hold(void **state)
{
    (void)state;
    struct h h;
    h_init(&h);
    /* Up before the run started: only results from the run on count. */
    result(&h, true, loop_now_ms() - 10000);
    result(&h, true, loop_now_ms());
    tick_result(&h, true, 20);
    assert_int_equal(op(&h, RB_OP_RUN, 5000, params("up", "400")), 1);
    assert_int_equal(h.t.status, 0);
    assert_true(h.t.ms >= 400);
    assert_true(h.t.ms < 2000);
    assert_false(h.t.release_hung);
    /* Down, then up after 300 ms: the 400 ms hold counts from then. */
    result(&h, false, loop_now_ms());
    tick_result(&h, true, 300);
    assert_int_equal(op(&h, RB_OP_RUN, 5000, params("up", "400")), 1);
    assert_int_equal(h.t.status, 0);
    assert_true(h.t.ms >= 700);
    h_done(&h);
}

static void test_run_waits_while_it_never_holds(void **state)
{
    (void)state;
    struct h h;
    h_init(&h);
    result(&h, false, loop_now_ms());
    tick_result(&h, false, 20);
    h.t.guard_ms = 600; /* the step's timeout, as the engine would enforce it */
    assert_int_equal(op(&h, RB_OP_RUN, 600, params("up", "0")), 1);
    assert_true(h.t.guard_fired);
    assert_int_not_equal(h.t.status, 0);
    h_done(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_needs_the_duration),
        cmocka_unit_test(test_run_waits_for_the_hold),
        cmocka_unit_test(test_run_waits_while_it_never_holds),
    };
    return cmocka_run_group_tests(tests, suite_setup, suite_teardown);
}
