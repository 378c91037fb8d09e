/* The action vtable and the registry of actions a runbook step may name.
 *
 * Every action declares its parameters (name, type, required) so that
 * runbooks are validated before anything runs, and may add its own static
 * checks (e.g. that a fencing method or database group exists).
 *
 * At run time an action works on an rb_exec: its resolved parameters, the
 * run's context and the services of its host (rb_env). Each operation is
 * asynchronous and ends with rb_exec_done() exactly once:
 *   describe  one line for plans and approval prompts (synchronous)
 *   check     the postcondition: 1 holds (the step is skipped, or verified
 *             after run), 0 does not, < 0 cannot tell
 *   run       do it: 0 or a negative errno
 *   ready     non-destructive readiness (credentials, reachability) for
 *             the failover readiness report; NULL means nothing to check
 *   cancel    stop what is in flight (timeout, abort); no done follows
 *   release   free the action's state once the result was delivered, then
 *             call rb_exec_released (NULL: nothing to free)
 * Every action is idempotent: run after a satisfied check changes nothing.
 * An action without `run` fails with "not implemented yet". */
#ifndef TRIAD_ACTION_H
#define TRIAD_ACTION_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

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

struct rb_exec;
struct probe;
struct http_client;
struct dns_client;
struct config;
struct buf;

typedef void (*rb_confirm_cb)(struct rb_exec *x, bool approved, const char *who, void *arg);

/* What the host (the daemon, or the CLI for `triad plan`) provides. */
struct rb_env {
    uv_loop_t *loop;
    const struct config *cfg;
    /* The site of the daemon running the action (its own host). */
    const char *site;
    struct http_client *http;
    struct dns_client *dns;
    /* The last result of a probe, or NULL (no daemon: no probe data). */
    const struct probe *(*probe)(struct rb_env *env, const char *site, const char *name);
    /* Milliseconds until the old primary's lease has surely expired: 0 when
     * it has, -1 when the host cannot know (no quorum here). */
    int64_t (*lease_wait_ms)(struct rb_env *env);
    /* Send a notification to every configured target (never blocks). */
    void (*notify)(struct rb_env *env, const char *severity, const char *text);
    /* Ask an operator (a gate inside a step: a manual fence, promoting a
     * replica that is behind). cb runs once, from the loop. NULL: the host
     * has nobody to ask (then the action must treat it as a denial). */
    void (*confirm)(struct rb_env *env, struct rb_exec *x, const char *question, rb_confirm_cb cb,
                    void *arg);
    /* Hand an operation of a step that must run on another site's daemon
     * (runs_on) to that daemon; the host completes x with rb_exec_done when
     * the answer comes. false: it cannot (the step fails with -EREMOTE). */
    bool (*delegate)(struct rb_env *env, struct rb_exec *x, int op);
    /* A delegated operation was cancelled here: forget its answer. */
    void (*delegate_cancel)(struct rb_env *env, struct rb_exec *x);
    /* Whether this is a dry run (`triad plan`): run is never called, check
     * and ready must not change anything. */
    bool dry_run;
    void *data;
};

typedef void (*rb_exec_cb)(struct rb_exec *x, int status, const char *detail, void *arg);

struct rb_exec {
    struct rb_env *env;
    const struct rb_step *step;
    const struct rb_action_ops *action;
    json_t *params; /* resolved */
    json_t *ctx;    /* run.*, from, to, and the configuration */
    const char *run_id;
    int64_t epoch;  /* the run's epoch: the fencing token written into the world */
    json_t *result; /* fields the action reports (rpo_bytes, ...); owned here */
    void *state;    /* the action's own */
    bool delegated; /* running on another site's daemon: no local state */
    /* private */
    uv_timer_t timer;
    rb_exec_cb cb;
    void *arg;
    int status;
    bool finished;
    bool cancelled;
    char detail[512];
};

struct rb_action_ops {
    const char *name;
    const char *summary;
    const struct rb_param_spec *params; /* terminated by { NULL } */
    int64_t default_timeout_ms;
    /* Static checks beyond parameter types; report with rb_param_error. */
    void (*validate)(const struct rb_validate_ctx *v);
    void (*describe)(struct rb_exec *x, struct buf *out);
    void (*check)(struct rb_exec *x);
    void (*run)(struct rb_exec *x);
    void (*ready)(struct rb_exec *x);
    void (*cancel)(struct rb_exec *x);
    void (*release)(struct rb_exec *x);
    /* Its run only succeeds once the outcome is verified (a fence), or there
     * is nothing to observe afterwards (wait, notify): the engine does not
     * check again after it. */
    bool self_verifying;
    /* The parameter naming the site whose own daemon must run this action
     * (it needs that host's files: pg_ctl, pg_rewind). NULL: any daemon.
     * The leader delegates such steps; an action started elsewhere fails
     * with -EREMOTE. */
    const char *runs_on;
};

enum rb_op { RB_OP_CHECK, RB_OP_RUN, RB_OP_READY };

/* Starts one operation of a step's action. The callback runs exactly once,
 * from the loop (status as the operation defines it); x is freed after it
 * returns. Returns the exec (to cancel) or NULL when it could not start
 * (then the callback has not run and will not). */
struct rb_exec *rb_exec_start(struct rb_env *env, const struct rb_step *step, json_t *params,
                              json_t *ctx, const char *run_id, int64_t epoch, enum rb_op op,
                              rb_exec_cb cb, void *arg);
/* Stops it: the callback runs with -ECANCELED (or -ETIMEDOUT when
 * timed_out). */
void rb_exec_cancel(struct rb_exec *x, bool timed_out);
/* Stops it and never calls back (the caller has moved on or is going). */
void rb_exec_forget(struct rb_exec *x);
/* One line for a step, from its action's describe (or its summary). */
void rb_exec_describe(struct rb_env *env, const struct rb_step *step, json_t *params, json_t *ctx,
                      struct buf *out);

/* For actions: end the operation (late calls after a cancel are ignored). */
void rb_exec_done(struct rb_exec *x, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* For actions' release: everything of theirs is gone; x may be freed. */
void rb_exec_released(struct rb_exec *x);

const struct rb_action_ops *rb_action_find(const char *name);
/* All registered actions, NULL-terminated. */
const struct rb_action_ops *const *rb_action_all(void);

/* Reports an error at a parameter's position (or the step's when absent). */
void rb_param_error(const struct rb_validate_ctx *v, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Helpers for validators: the string at ctx path a.b.c, or NULL. */
json_t *rb_ctx_get(json_t *ctx, const char *path);

#endif
