/* Unit tests: the runbook engine with the step state table, gates and the
 * two-person rule, timeouts, abort, modes, failure policies, the fence
 * action's lease and manual methods, restore after a takeover, and the FSM
 * export committed in docs/. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "orchestrator/config.h"
#include "runbooks/engine.h"

struct host {
    struct config cfg;
    json_t *ctx;
    struct rb_env env;
    json_t *journal;
    int notes;
    int gates;
    int64_t lease_wait;
    uv_timer_t guard;
    uv_timer_t actor;
    void (*act)(struct host *h);
    struct rb_run *run;
    int closed;
};

static char dir[64];

/* The engine owns env->data; the host is found from its env. */
#define HOST(e) ((struct host *)(void *)((char *)(e)-offsetof(struct host, env)))

static int64_t lease_wait(struct rb_env *env)
{
    return HOST(env)->lease_wait;
}

static void note(struct rb_env *env, const char *sev, const char *text)
{
    (void)sev;
    (void)text;
    HOST(env)->notes++;
}

static void on_journal(struct rb_run *r, json_t *rec)
{
    struct host *h = r->hooks.data;
    json_array_append(h->journal, rec);
}

static void on_event(struct rb_run *r, const char *what, const char *text)
{
    struct host *h = r->hooks.data;
    (void)text;
    if (!strcmp(what, "gate"))
        h->gates++;
}

static void host_init(struct host *h, const char *mode, const char *approvals)
{
    memset(h, 0, sizeof *h);
    log_set_level(LOG_ERROR);
    char text[8192], path[128];
    struct buf b;
    buf_init(&b, 1 << 20);
    assert_int_equal(fsutil_read("tests/fixtures/config/valid.yaml", &b), 0);
    char *p = strstr(b.data, "failover: {target: dc2}");
    assert_non_null(p);
    snprintf(text, sizeof text, "%.*sfailover: {target: dc2, mode: %s}\napprovals: %s\n%s",
             (int)(p - b.data), b.data, mode, approvals, p + strlen("failover: {target: dc2}"));
    buf_free(&b);
    snprintf(path, sizeof path, "%s/triad.yaml", dir);
    /* runbook paths relative to the config: point them at the repository */
    char cwd[512], fixed[9000];
    assert_non_null(getcwd(cwd, sizeof cwd));
    char *rb = strstr(text, "../../../runbooks/");
    assert_non_null(rb);
    snprintf(fixed, sizeof fixed, "%.*s%s/runbooks/%s", (int)(rb - text), text, cwd,
             rb + strlen("../../../runbooks/"));
    FILE *f = fopen(path, "w");
    fputs(fixed, f);
    fclose(f);
    struct diag d;
    diag_init(&d);
    struct config_load_opts o = { .no_file_checks = true, .skip_runbooks = true };
    int r = config_load(&h->cfg, path, &o, &d);
    if (r)
        diag_print(&d, stderr);
    assert_int_equal(r, 0);
    diag_free(&d);
    json_t *cj = config_to_json(&h->cfg);
    h->ctx = rb_context(cj, "run-1", 5, "dc1", "dc2", "t");
    json_decref(cj);
    h->journal = json_array();
    h->lease_wait = 0;
}

static void host_free(struct host *h)
{
    json_decref(h->ctx);
    json_decref(h->journal);
    config_free(&h->cfg);
}

static struct runbook *load_rb(struct host *h, const char *yaml)
{
    char path[128];
    snprintf(path, sizeof path, "%s/rb.yaml", dir);
    FILE *f = fopen(path, "w");
    fputs(yaml, f);
    fclose(f);
    json_t *cj = config_to_json(&h->cfg);
    struct runbook *rb = NULL;
    struct diag d;
    diag_init(&d);
    int r = rb_load(path, cj, &rb, &d);
    if (r)
        diag_print(&d, stderr);
    assert_int_equal(r, 0);
    diag_free(&d);
    json_decref(cj);
    return rb;
}

static void on_guard(uv_timer_t *t)
{
    struct host *h = t->data;
    fail_msg("the run did not end in time (state %s)", rb_run_state_name(h->run->state));
}

static void on_closed(struct rb_run *r, void *arg)
{
    (void)r;
    struct host *h = arg;
    h->closed = 1;
    uv_close((uv_handle_t *)&h->guard, NULL);
    uv_close((uv_handle_t *)&h->actor, NULL);
}

/* The run ends: close it from the loop (not from inside the engine). */
static void watch(uv_timer_t *t);

/* Runs a runbook; `act` is called every 20 ms to play the operator.
 * Returns the run's final JSON (caller decrefs). */
static json_t *run_book(struct host *h, const char *yaml, void (*act)(struct host *h),
                        json_t *restore)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    h->env.loop = &loop;
    h->env.cfg = &h->cfg;
    h->env.lease_wait_ms = lease_wait;
    h->env.notify = note;
    struct rb_run_hooks hooks = { on_journal, on_event, h };
    struct runbook *rb = load_rb(h, yaml);
    h->run = rb_run_new(&h->env, &hooks, rb, json_incref(h->ctx), "run-1", "failover", 5, "dc1",
                        "dc2", &h->cfg);
    assert_non_null(h->run);
    h->act = act;
    uv_timer_init(&loop, &h->guard);
    h->guard.data = h;
    uv_timer_start(&h->guard, on_guard, 10000, 0);
    uv_timer_init(&loop, &h->actor);
    h->actor.data = h;
    uv_timer_start(&h->actor, watch, 20, 20);
    if (restore)
        rb_run_restore(h->run, restore);
    rb_run_go(h->run, restore != NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    return json_incref(json_array_get(h->journal, json_array_size(h->journal) - 1));
}

static json_t *last_run_json;

static void watch(uv_timer_t *t)
{
    struct host *h = t->data;
    if (h->act)
        h->act(h);
    if (h->run && rb_run_finished(h->run)) {
        json_decref(last_run_json);
        last_run_json = rb_run_to_json(h->run);
        struct rb_run *r = h->run;
        h->run = NULL;
        uv_timer_stop(&h->actor);
        rb_run_close(r, on_closed, h);
    }
}

static const char *step_state(const char *id)
{
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(last_run_json, "steps"), i, s)
    {
        if (!strcmp(json_string_value(json_object_get(s, "id")), id))
            return json_string_value(json_object_get(s, "state"));
    }
    return "?";
}

static const char *run_state(void)
{
    return json_string_value(json_object_get(last_run_json, "state"));
}

/* ---- operators ---- */

static void approve_gates(struct host *h)
{
    if (!h->run || h->run->state != RB_RUN_WAITING)
        return;
    const char *id = h->run->rb->steps[h->run->cur].id;
    assert_int_equal(rb_run_approve(h->run, id, "alice", NULL), 0);
}

static void deny_gates(struct host *h)
{
    if (h->run && h->run->state == RB_RUN_WAITING)
        assert_int_equal(rb_run_deny(h->run, h->run->rb->steps[h->run->cur].id, "bob", "no"), 0);
}

static void nobody(struct host *h)
{
    (void)h;
}

static int two_person_phase;
static void two_people(struct host *h)
{
    if (!h->run || h->run->state != RB_RUN_WAITING)
        return;
    const char *id = h->run->rb->steps[h->run->cur].id;
    if (two_person_phase == 0) {
        assert_int_equal(rb_run_approve(h->run, id, "alice", NULL), 0);
        assert_int_equal(h->run->state, RB_RUN_WAITING); /* one is not enough */
        assert_int_equal(rb_run_approve(h->run, id, "alice", NULL), -EALREADY);
        two_person_phase = 1;
    } else if (two_person_phase == 1) {
        assert_int_equal(rb_run_approve(h->run, id, "bob", NULL), 0);
        two_person_phase = 2;
    }
}

static void abort_soon(struct host *h)
{
    if (h->run && h->run->state == RB_RUN_RUNNING && h->run->cur == 1)
        rb_run_abort(h->run, "carol");
}

/* ---- tests ---- */

static const char *const GATED =
    "runbook: t\nsteps:\n"
    "  - {id: one, action: wait, params: {duration: 10ms}}\n"
    "  - {id: two, action: wait, approve: required, params: {duration: 10ms}}\n"
    "  - {id: three, action: notify, params: {message: \"done ${run.id}\"}}\n";

static void test_gate_approved(void **state)
{
    (void)state;
    struct host h;
    host_init(&h, "semi-automatic", "{required: 1, timeout: 5s}");
    json_decref(run_book(&h, GATED, approve_gates, NULL));
    if (strcmp(run_state(), "done")) {
        char *t = json_dumps(last_run_json, JSON_INDENT(1));
        fprintf(stderr, "%s\n", t);
        free(t);
    }
    assert_string_equal(run_state(), "done");
    assert_string_equal(step_state("one"), "done");
    assert_string_equal(step_state("two"), "done");
    assert_string_equal(step_state("three"), "done");
    assert_int_equal(h.gates, 1);
    assert_int_equal(h.notes, 1); /* the notify step */
    /* The journal tells the story in order: start, transitions, approval, end. */
    json_t *first = json_array_get(h.journal, 0);
    assert_string_equal(json_string_value(json_object_get(first, "t")), "run-start");
    bool approval = false;
    size_t i;
    json_t *rec;
    json_array_foreach(h.journal, i, rec)
    {
        if (!strcmp(json_string_value(json_object_get(rec, "t")), "approval")) {
            approval = true;
            assert_string_equal(json_string_value(json_object_get(rec, "who")), "alice");
            assert_non_null(strstr(json_string_value(json_object_get(rec, "shown")), "wait 10ms"));
        }
    }
    assert_true(approval);
    json_t *last = json_array_get(h.journal, json_array_size(h.journal) - 1);
    assert_string_equal(json_string_value(json_object_get(last, "t")), "run-end");
    host_free(&h);
}

static void test_gate_denied(void **state)
{
    (void)state;
    struct host h;
    host_init(&h, "semi-automatic", "{required: 1, timeout: 5s}");
    json_decref(run_book(&h, GATED, deny_gates, NULL));
    assert_string_equal(run_state(), "failed");
    assert_string_equal(step_state("two"), "failed");
    assert_string_equal(step_state("three"), "pending");
    assert_non_null(strstr(json_string_value(json_object_get(last_run_json, "end_reason")),
                           "denied by bob: no"));
    host_free(&h);
}

static void test_gate_timeout_denies(void **state)
{
    (void)state;
    struct host h;
    host_init(&h, "semi-automatic", "{required: 1, timeout: 1s}");
    json_decref(run_book(&h, GATED, nobody, NULL));
    assert_string_equal(run_state(), "failed");
    assert_non_null(
        strstr(json_string_value(json_object_get(last_run_json, "end_reason")), "nobody answered"));
    host_free(&h);
}

static void test_two_person_rule(void **state)
{
    (void)state;
    struct host h;
    host_init(&h, "semi-automatic", "{required: 2, timeout: 5s}");
    two_person_phase = 0;
    json_decref(run_book(&h, GATED, two_people, NULL));
    assert_int_equal(two_person_phase, 2);
    assert_string_equal(run_state(), "done");
    host_free(&h);
}

static void test_automatic_mode(void **state)
{
    (void)state;
    struct host h;
    host_init(&h, "automatic", "{required: 1, timeout: 5s}");
    /* required gates open in automatic mode; always gates do not */
    json_decref(run_book(&h, GATED, nobody, NULL));
    assert_string_equal(run_state(), "done");
    host_free(&h);
    host_init(&h, "automatic", "{required: 1, timeout: 1s}");
    json_decref(run_book(&h,
                         "runbook: t\nsteps:\n"
                         "  - {id: one, action: wait, approve: always, params: {duration: 10ms}}\n",
                         nobody, NULL));
    assert_string_equal(run_state(), "failed");
    host_free(&h);
}

static void test_abort(void **state)
{
    (void)state;
    struct host h;
    host_init(&h, "automatic", "{required: 1, timeout: 5s}");
    json_decref(run_book(&h,
                         "runbook: t\nsteps:\n"
                         "  - {id: one, action: wait, params: {duration: 10ms}}\n"
                         "  - {id: two, action: wait, params: {duration: 5s}}\n",
                         abort_soon, NULL));
    assert_string_equal(run_state(), "aborted");
    assert_string_equal(step_state("two"), "failed");
    assert_non_null(strstr(json_string_value(json_object_get(last_run_json, "end_reason")),
                           "aborted by carol"));
    host_free(&h);
}

static void test_step_timeout_and_retries(void **state)
{
    (void)state;
    struct host h;
    host_init(&h, "automatic", "{required: 1, timeout: 5s}");
    json_decref(
        run_book(&h,
                 "runbook: t\nsteps:\n"
                 "  - {id: slow, action: wait, timeout: 100ms, retries: 2, retry_delay: 10ms,"
                 " params: {duration: 100ms}}\n",
                 nobody, NULL));
    assert_string_equal(run_state(), "failed");
    json_t *s = json_array_get(json_object_get(last_run_json, "steps"), 0);
    assert_int_equal(json_integer_value(json_object_get(s, "attempts")), 3);
    assert_non_null(strstr(json_string_value(json_object_get(s, "detail")), "timeout"));
    host_free(&h);
}

static void test_on_failure_continue(void **state)
{
    (void)state;
    struct host h;
    host_init(&h, "automatic", "{required: 1, timeout: 5s}");
    /* dc1-pg is a postgres fence on 127.0.1.5, where nothing listens here. */
    json_decref(run_book(&h,
                         "runbook: t\nsteps:\n"
                         "  - {id: f, action: fence, on_failure: continue,"
                         " params: {site: dc1, methods: [dc1-pg]}}\n"
                         "  - {id: after, action: wait, params: {duration: 10ms}}\n",
                         nobody, NULL));
    assert_string_equal(run_state(), "done");
    assert_string_equal(step_state("f"), "failed");
    assert_string_equal(step_state("after"), "done");
    host_free(&h);
}

static void test_fence_lease_then_manual(void **state)
{
    (void)state;
    struct host h;
    host_init(&h, "automatic", "{required: 1, timeout: 5s}");
    /* The lease cannot be known here (-1): the manual method asks. */
    h.lease_wait = -1;
    json_decref(
        run_book(&h,
                 "runbook: t\nsteps:\n"
                 "  - {id: f, action: fence, params: {site: dc1, methods: [dc1-pg, dc1-ok]}}\n",
                 approve_gates, NULL));
    assert_string_equal(run_state(), "done");
    json_t *s = json_array_get(json_object_get(last_run_json, "steps"), 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(s, "result"), "confirmed_by")), "alice");
    host_free(&h);
    /* A lease that expires in 150 ms is waited for. */
    host_init(&h, "automatic", "{required: 1, timeout: 5s}");
    h.lease_wait = 150;
    json_decref(run_book(&h,
                         "runbook: t\nsteps:\n"
                         "  - {id: f, action: fence, params: {site: dc1, methods: [dc1-lease]}}\n",
                         nobody, NULL));
    host_free(&h);
}

static void test_restore_after_takeover(void **state)
{
    (void)state;
    struct host h;
    host_init(&h, "automatic", "{required: 1, timeout: 5s}");
    /* A journal where step one was done and step two was running when the
     * leader died: the new leader keeps one, re-walks two. */
    json_t *records = json_pack(
        "[{s:s,s:I},{s:s,s:s,s:s,s:s},{s:s,s:s,s:s,s:s},{s:s,s:s,s:s,s:s},{s:s,s:s,s:s,s:s}]", "t",
        "run-start", "ts_ms", (json_int_t)1, "t", "step", "step", "one", "from", "pending", "to",
        "running", "t", "step", "step", "one", "from", "verifying", "to", "done", "t", "step",
        "step", "two", "from", "pending", "to", "running", "t", "step", "step", "two", "from",
        "running", "to", "running");
    json_decref(run_book(&h, GATED, nobody, records));
    json_decref(records);
    assert_string_equal(run_state(), "done");
    /* Step one was not walked again: no transition of it in this journal. */
    size_t i;
    json_t *rec;
    json_array_foreach(h.journal, i, rec)
    {
        const char *st = json_string_value(json_object_get(rec, "step"));
        assert_true(!st || strcmp(st, "one") != 0);
    }
    host_free(&h);
}

static void test_fsm_export_committed(void **state)
{
    (void)state;
    json_t *j = rb_fsm_to_json();
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    struct buf file;
    buf_init(&file, 1 << 20);
    assert_int_equal(fsutil_read("docs/step-fsm.json", &file), 0);
    if (strncmp(file.data, text, strlen(text)) != 0)
        fail_msg(
            "docs/step-fsm.json is out of date: run triad plan --fsm --json > docs/step-fsm.json");
    free(text);
    struct buf dot;
    buf_init(&dot, 1 << 20);
    rb_fsm_to_dot(&dot);
    buf_reset(&file);
    assert_int_equal(fsutil_read("docs/step-fsm.dot", &file), 0);
    assert_string_equal(file.data, dot.data);
    buf_free(&dot);
    buf_free(&file);
    /* Every row is reachable from pending, and every event name parses. */
    assert_non_null(rb_fsm_find(RB_PENDING, RB_EV_GO));
    assert_null(rb_fsm_find(RB_DONE, RB_EV_GO));
}

/* A run's context adds run, from and to over the configuration and shares
 * the rest: a configuration of a thousand probes is megabytes of JSON, and
 * every readiness round and runbook check built copies of it. The
 * configuration itself is left as it was. */
static void test_context_shares_config(void **state)
{
    (void)state;
    json_t *cfg =
        json_pack("{s:{s:{s:s},s:{s:s}},s:[{s:s,s:s}]}", "sites", "dc1", "role", "primary", "dc2",
                  "role", "standby", "probes", "name", "p", "site", "dc1");
    json_t *ctx = rb_context(cfg, "run-1", 7, "dc1", "dc2", "t");
    assert_ptr_equal(json_object_get(ctx, "probes"), json_object_get(cfg, "probes"));
    assert_ptr_equal(json_object_get(ctx, "sites"), json_object_get(cfg, "sites"));
    assert_ptr_equal(json_object_get(ctx, "to"),
                     json_object_get(json_object_get(cfg, "sites"), "dc2"));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(ctx, "run"), "epoch")), 7);
    assert_int_equal(json_object_size(cfg), 2);
    assert_null(json_object_get(cfg, "run"));
    json_decref(cfg);
    /* The context keeps what it shares alive. */
    assert_string_equal(json_string_value(json_object_get(json_object_get(ctx, "from"), "role")),
                        "primary");
    json_decref(ctx);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/triad-engine-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char p[128];
    snprintf(p, sizeof p, "%s/triad.yaml", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/rb.yaml", dir);
    unlink(p);
    rmdir(dir);
    json_decref(last_run_json);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gate_approved),
        cmocka_unit_test(test_gate_denied),
        cmocka_unit_test(test_gate_timeout_denies),
        cmocka_unit_test(test_two_person_rule),
        cmocka_unit_test(test_automatic_mode),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_step_timeout_and_retries),
        cmocka_unit_test(test_on_failure_continue),
        cmocka_unit_test(test_fence_lease_then_manual),
        cmocka_unit_test(test_restore_after_takeover),
        cmocka_unit_test(test_fsm_export_committed),
        cmocka_unit_test(test_context_shares_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
