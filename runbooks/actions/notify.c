/* Action `notify`: send a message to every configured notification target. */
#include "runbooks/actions/actions.h"

static const struct rb_param_spec params[] = {
    { "message", RB_P_STRING, true, "the text to send" },
    { "severity", RB_P_STRING, false, "info (default), warning or critical" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    static const char *const sev[] = { "info", "warning", "critical", NULL };
    act_need_enum(v, "severity", sev);
}

const struct rb_action_ops rb_action_notify = {
    .name = "notify",
    .summary = "send a message to the notification targets",
    .params = params,
    .default_timeout_ms = 30000,
    .validate = validate,
};
