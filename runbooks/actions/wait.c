/* Action `wait`: pause the run for a fixed time (e.g. let DNS TTLs run out). */
#include <stdlib.h>

#include "lib/buf.h"
#include "lib/units.h"
#include "runbooks/actions/actions.h"

static const struct rb_param_spec params[] = {
    { "duration", RB_P_DURATION, true, "how long to wait, e.g. 30s" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    json_int_t ms = json_integer_value(json_object_get(v->params, "duration"));
    if (ms > v->step->timeout_ms)
        rb_param_error(v, "duration", "waits longer than the step's timeout");
}

static void describe(struct rb_exec *x, struct buf *out)
{
    char d[32];
    units_format_duration(json_integer_value(json_object_get(x->params, "duration")), d, sizeof d);
    buf_printf(out, "wait %s", d);
}

static void on_timer(uv_timer_t *t)
{
    struct rb_exec *x = t->data;
    rb_exec_done(x, 0, "waited");
}

static void on_closed(uv_handle_t *h)
{
    struct rb_exec *x = h->data;
    free(h);
    rb_exec_released(x);
}

static void run(struct rb_exec *x)
{
    uv_timer_t *t = malloc(sizeof *t);
    if (!t) {
        rb_exec_done(x, -12, "out of memory");
        return;
    }
    uv_timer_init(x->env->loop, t);
    t->data = x;
    x->state = t;
    uv_timer_start(t, on_timer,
                   (uint64_t)json_integer_value(json_object_get(x->params, "duration")), 0);
}

static void release(struct rb_exec *x)
{
    if (!x->state) {
        rb_exec_released(x);
        return;
    }
    uv_close((uv_handle_t *)x->state, on_closed);
}

const struct rb_action_ops rb_action_wait = {
    .name = "wait",
    .summary = "pause for a fixed duration",
    .params = params,
    .default_timeout_ms = 3600000,
    .validate = validate,
    .describe = describe,
    .run = run,
    .self_verifying = true,
    .release = release,
};
