/* The action vtable and the registry of actions a runbook step may name.
 *
 * Every action declares its parameters (name, type, required) so that
 * runbooks are validated before anything runs, and may add its own static
 * checks (e.g. that a fencing method or database group exists). The run-time
 * half of the vtable (describe, check, run, cancel) is filled in by each
 * action as it is built; an action without `run` fails with a clear
 * "not implemented yet" error instead of pretending. */
#ifndef TRIAD_ACTION_H
#define TRIAD_ACTION_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/diag.h"
#include "runbooks/runbook.h"

enum rb_param_type {
    RB_P_STRING,
    RB_P_STRING_LIST, /* a single string is accepted as a one-item list */
    RB_P_INT,
    RB_P_DURATION, /* "5s" -> integer milliseconds */
    RB_P_SIZE,     /* "16MB" -> integer bytes */
    RB_P_BOOL,
    RB_P_ANY,
};

struct rb_param_spec {
    const char *name;
    enum rb_param_type type;
    bool required;
    const char *help;
};

/* What static validation sees: the step, its resolved parameters and the
 * context (configuration) they were resolved against. */
struct rb_validate_ctx {
    const struct rb_step *step;
    json_t *params;
    json_t *ctx;
    struct diag *d;
};

struct rb_action_ops {
    const char *name;
    const char *summary;
    const struct rb_param_spec *params; /* terminated by { NULL } */
    int64_t default_timeout_ms;
    /* Static checks beyond parameter types; report with rb_param_error. */
    void (*validate)(const struct rb_validate_ctx *v);
};

const struct rb_action_ops *rb_action_find(const char *name);
/* All registered actions, NULL-terminated. */
const struct rb_action_ops *const *rb_action_all(void);

/* Reports an error at a parameter's position (or the step's when absent). */
void rb_param_error(const struct rb_validate_ctx *v, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Helpers for validators: the string at ctx path a.b.c, or NULL. */
json_t *rb_ctx_get(json_t *ctx, const char *path);

#endif
