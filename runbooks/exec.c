/* One operation of an action: start, exactly-once completion from the loop,
 * cancel, release. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "runbooks/action.h"

static void on_closed(uv_handle_t *h)
{
    struct rb_exec *x = h->data;
    json_decref(x->params);
    json_decref(x->ctx);
    json_decref(x->result);
    free(x);
}

static void deliver(uv_timer_t *t)
{
    struct rb_exec *x = t->data;
    if (x->cb)
        x->cb(x, x->status, x->detail, x->arg);
    if (x->action->release && !x->delegated)
        x->action->release(x); /* it calls rb_exec_released when done */
    else
        rb_exec_released(x);
}

void rb_exec_released(struct rb_exec *x)
{
    uv_close((uv_handle_t *)&x->timer, on_closed);
}

static void finish(struct rb_exec *x, int status, const char *detail)
{
    if (x->finished)
        return;
    x->finished = true;
    x->status = status;
    snprintf(x->detail, sizeof x->detail, "%s", detail);
    /* From a timer callback: never from inside the action's own call. */
    uv_timer_start(&x->timer, deliver, 0, 0);
}

void rb_exec_done(struct rb_exec *x, int status, const char *fmt, ...)
{
    if (x->finished)
        return;
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    finish(x, status, detail);
}

struct rb_exec *rb_exec_start(struct rb_env *env, const struct rb_step *step, json_t *params,
                              json_t *ctx, const char *run_id, int64_t epoch, enum rb_op op,
                              rb_exec_cb cb, void *arg)
{
    const struct rb_action_ops *a = step->action;
    struct rb_exec *x = calloc(1, sizeof *x);
    if (!x || !a)
        goto fail;
    x->env = env;
    x->step = step;
    x->action = a;
    x->params = json_incref(params);
    x->ctx = json_incref(ctx);
    x->run_id = run_id;
    x->epoch = epoch;
    x->result = json_object();
    x->cb = cb;
    x->arg = arg;
    uv_timer_init(env->loop, &x->timer);
    x->timer.data = x;
    /* A step that needs another site's host: the host must delegate it. */
    if (a->runs_on && env->site) {
        const char *where = json_string_value(json_object_get(params, a->runs_on));
        if (where && strcmp(where, env->site) != 0) {
            x->delegated = true;
            if (!env->delegate || !env->delegate(env, x, (int)op))
                finish(x, -EREMOTE,
                       "this step must run on the daemon of its site, which "
                       "cannot be asked from here");
            return x;
        }
    }
    switch (op) {
    case RB_OP_CHECK:
        if (a->check)
            a->check(x);
        else
            finish(x, 0, "this action has no postcondition to check");
        break;
    case RB_OP_RUN:
        if (env->dry_run)
            finish(x, -EPERM, "a dry run never runs an action");
        else if (a->run)
            a->run(x);
        else
            finish(x, -ENOSYS, "this action has no run operation");
        break;
    case RB_OP_READY:
        if (a->ready)
            a->ready(x);
        else
            finish(x, 0, "nothing to check in advance");
        break;
    }
    return x;
fail:
    free(x);
    return NULL;
}

void rb_exec_cancel(struct rb_exec *x, bool timed_out)
{
    if (x->finished)
        return;
    x->cancelled = true;
    if (x->delegated && x->env->delegate_cancel)
        x->env->delegate_cancel(x->env, x);
    if (x->action->cancel && !x->delegated)
        x->action->cancel(x);
    finish(x, timed_out ? -ETIMEDOUT : -ECANCELED, timed_out ? "timed out" : "cancelled");
}

void rb_exec_forget(struct rb_exec *x)
{
    x->cb = NULL;
    rb_exec_cancel(x, false);
}

void rb_exec_describe(struct rb_env *env, const struct rb_step *step, json_t *params, json_t *ctx,
                      struct buf *out)
{
    const struct rb_action_ops *a = step->action;
    if (!a || !a->describe) {
        buf_printf(out, "%s", a ? a->summary : "unknown action");
        return;
    }
    struct rb_exec x = { .env = env, .step = step, .action = a, .params = params, .ctx = ctx };
    a->describe(&x, out);
}
