/* Action `exec`: run a program (argv, no shell) with a timeout and capture
 * its output (capped). */
#include "runbooks/actions/actions.h"

static const struct rb_param_spec params[] = {
    { "command", RB_P_STRING_LIST, true, "program and arguments, no shell" },
    { "expect_exit", RB_P_INT, false, "exit status that means success (default 0)" },
    { "check", RB_P_STRING_LIST, false,
      "optional program whose exit 0 means the step's outcome already holds" },
    { NULL, RB_P_ANY, false, NULL },
};

static void need_absolute(const struct rb_validate_ctx *v, const char *param)
{
    json_t *cmd = json_object_get(v->params, param);
    if (!cmd)
        return;
    const char *prog = json_string_value(json_array_get(cmd, 0));
    if (!prog || prog[0] != '/')
        rb_param_error(v, param,
                       "'%s' must start with an absolute program path (no shell, no "
                       "PATH lookup)",
                       param);
}

static void validate(const struct rb_validate_ctx *v)
{
    need_absolute(v, "command");
    need_absolute(v, "check");
}

const struct rb_action_ops rb_action_exec = {
    .name = "exec",
    .summary = "run a program (argv, no shell) with a timeout",
    .params = params,
    .default_timeout_ms = 60000,
    .validate = validate,
};
