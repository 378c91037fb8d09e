/* Test helper: one action operation on a loop, to its end. */
#include "acttest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

struct op_run {
    struct acttest *t;
    struct rb_exec *x;
    uint64_t t0;
    uv_timer_t guard, cancel, tick;
};

#define RELEASE_GUARD_MS 5000

/* The result was delivered but the loop still runs after a while: the
 * action left something of its own behind. */
static void on_release_guard(uv_timer_t *h)
{
    struct op_run *r = h->data;
    r->t->release_hung = true;
    uv_stop(h->loop);
}

static void on_done(struct rb_exec *x, int status, const char *detail, void *arg)
{
    struct op_run *r = arg;
    struct acttest *t = r->t;
    t->calls++;
    t->status = status;
    t->ms = (uv_hrtime() - r->t0) / 1000000;
    snprintf(t->detail, sizeof t->detail, "%s", detail);
    json_decref(t->result);
    t->result = json_incref(x->result);
    r->x = NULL;
    uv_timer_stop(&r->cancel);
    uv_timer_stop(&r->tick);
    uv_timer_start(&r->guard, on_release_guard, RELEASE_GUARD_MS, 0);
}

static void on_guard(uv_timer_t *h)
{
    struct op_run *r = h->data;
    r->t->guard_fired = true;
    if (r->x)
        rb_exec_cancel(r->x, true);
}

static void on_cancel(uv_timer_t *h)
{
    struct op_run *r = h->data;
    struct rb_exec *x = r->x;
    if (!x)
        return;
    if (r->t->forget) {
        r->x = NULL;
        uv_timer_stop(&r->tick);
        uv_timer_start(&r->guard, on_release_guard, RELEASE_GUARD_MS, 0);
        rb_exec_forget(x);
    } else {
        rb_exec_cancel(x, false);
    }
}

static void on_tick(uv_timer_t *h)
{
    struct op_run *r = h->data;
    r->t->tick(r->t->tick_arg);
}

int acttest_op(struct acttest *t, const char *action, enum rb_op op, int64_t timeout_ms,
               json_t *params)
{
    uv_loop_t *loop = t->env->loop;
    struct rb_step step = {
        .id = (char *)(t->step_id ? t->step_id : "s"),
        .action_name = (char *)action,
        .action = rb_action_find(action),
        .timeout_ms = timeout_ms,
    };
    struct op_run r = { .t = t };
    t->calls = 0;
    t->status = 99;
    t->detail[0] = '\0';
    t->guard_fired = false;
    t->release_hung = false;
    json_decref(t->result);
    t->result = NULL;
    if (!step.action)
        return -1;
    uv_timer_init(loop, &r.guard);
    uv_timer_init(loop, &r.cancel);
    uv_timer_init(loop, &r.tick);
    r.guard.data = &r;
    r.cancel.data = &r;
    r.tick.data = &r;
    if (t->tick && t->tick_ms)
        uv_timer_start(&r.tick, on_tick, t->tick_ms, 0);
    /* Unreferenced: the loop ends when the action has nothing left. */
    uv_timer_start(&r.guard, on_guard, t->guard_ms ? t->guard_ms : 20000, 0);
    uv_unref((uv_handle_t *)&r.guard);
    if (t->cancel_after_ms)
        uv_timer_start(&r.cancel, on_cancel, t->cancel_after_ms, 0);
    r.t0 = uv_hrtime();
    r.x = rb_exec_start(t->env, &step, params, t->ctx, t->run_id ? t->run_id : "run-1", t->epoch,
                        op, on_done, &r);
    if (!r.x) {
        uv_close((uv_handle_t *)&r.guard, NULL);
        uv_close((uv_handle_t *)&r.cancel, NULL);
        uv_close((uv_handle_t *)&r.tick, NULL);
        uv_run(loop, UV_RUN_DEFAULT);
        return -1;
    }
    /* Both timers stop once the callback ran; the loop then ends when the
     * action has released everything of its own. */
    uv_run(loop, UV_RUN_DEFAULT);
    t->total_ms = (uv_hrtime() - r.t0) / 1000000;
    uv_close((uv_handle_t *)&r.guard, NULL);
    uv_close((uv_handle_t *)&r.cancel, NULL);
    uv_close((uv_handle_t *)&r.tick, NULL);
    /* After a hang, what the action left would keep the loop running. */
    uv_run(loop, t->release_hung ? UV_RUN_NOWAIT : UV_RUN_DEFAULT);
    return t->calls;
}

json_t *acttest_get(const struct acttest *t, const char *path)
{
    char seg[128];
    const char *p = path;
    json_t *cur = t->result;
    while (cur && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || n >= sizeof seg)
            return NULL;
        memcpy(seg, p, n);
        seg[n] = '\0';
        if (json_is_array(cur))
            cur = json_array_get(cur, strtoul(seg, NULL, 10));
        else
            cur = json_object_get(cur, seg);
        p += n + (p[n] == '.');
    }
    return cur;
}

void acttest_done(struct acttest *t)
{
    json_decref(t->result);
    t->result = NULL;
}
