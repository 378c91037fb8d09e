/* Action `notify`: send a message to every configured notification target. */
#include "lib/buf.h"
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

static const char *severity(struct rb_exec *x)
{
    const char *s = json_string_value(json_object_get(x->params, "severity"));
    return s ? s : "info";
}

static void describe(struct rb_exec *x, struct buf *out)
{
    buf_printf(out, "notify (%s): %s", severity(x),
               json_string_value(json_object_get(x->params, "message")));
}

/* Sending is queued and retried by the host, never waited for. */
static void run(struct rb_exec *x)
{
    if (!x->env->notify) {
        rb_exec_done(x, 0, "no notification targets here");
        return;
    }
    x->env->notify(x->env, severity(x), json_string_value(json_object_get(x->params, "message")));
    rb_exec_done(x, 0, "queued for every notification target");
}

/* A notification is always sent again when its step is walked again. */
static void check(struct rb_exec *x)
{
    rb_exec_done(x, 0, "not sent yet");
}

const struct rb_action_ops rb_action_notify = {
    .name = "notify",
    .summary = "send a message to the notification targets",
    .params = params,
    .default_timeout_ms = 30000,
    .validate = validate,
    .describe = describe,
    .check = check,
    .run = run,
    .self_verifying = true,
};
