/* Action `wait`: pause the run for a fixed time (e.g. let DNS TTLs run out). */
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

const struct rb_action_ops rb_action_wait = {
    .name = "wait",
    .summary = "pause for a fixed duration",
    .params = params,
    .default_timeout_ms = 3600000,
    .validate = validate,
};
