/* Runbook files: an ordered list of steps, each naming an action with its
 * parameters, an approval gate, a timeout, retries and what to do on
 * failure. Loading validates everything (unknown keys and actions, duplicate
 * ids, parameter types, ${...} references) with FILE:LINE:COLUMN errors.
 *
 * Parameters may refer to the configuration and to the run:
 *   ${run.id} ${run.epoch} ${run.from} ${run.to} ${run.runbook}
 *   ${run.others}                               every site but from and to
 *   ${from.<site field>} ${to.<site field>}     the run's sites, e.g.
 *                                               ${to.public_addresses}
 *   ${<any config path>}                        e.g. ${dns.names},
 *                                               ${sites.dc2.public_addresses}
 *                                               (of the probes, only each
 *                                               one's site and name)
 * A value that is exactly one reference takes the referenced value (a list
 * stays a list); references inside a longer string are interpolated. */
#ifndef TRIAD_RUNBOOK_H
#define TRIAD_RUNBOOK_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/diag.h"

#define RB_MAX_STEPS  64
#define RB_MAX_PARAMS 32

enum rb_approve { RB_APPROVE_NONE, RB_APPROVE_REQUIRED, RB_APPROVE_ALWAYS };
enum rb_on_failure { RB_FAIL_STOP, RB_FAIL_CONTINUE, RB_FAIL_ASK };

struct rb_action_ops;

struct rb_param {
    char *name;
    json_t *raw; /* as written: strings, lists, maps; ${...} unresolved */
    int line, col;
};

struct rb_step {
    char *id;
    char *action_name;
    const struct rb_action_ops *action;
    char *description;
    enum rb_approve approve;
    int64_t timeout_ms;
    int retries;
    int64_t retry_delay_ms;
    enum rb_on_failure on_failure;
    struct rb_param *params;
    size_t n_params;
    const char *file; /* points into the runbook's path */
    int line, col;
};

struct runbook {
    char *name;
    char *path;
    char *description;
    struct rb_step *steps;
    size_t n_steps;
};

/* Loads and validates a runbook against a context (config_to_json output;
 * run.* placeholders are added for validation: from = the primary site,
 * to = failover.target). Returns 0, or -1 with every problem in `d`. */
int rb_load(const char *path, json_t *config_ctx, struct runbook **out, struct diag *d);
void rb_free(struct runbook *rb);

/* The context parameters resolve against: the config plus run.*, from, to. */
json_t *rb_context(json_t *config_ctx, const char *run_id, int64_t epoch, const char *from,
                   const char *to, const char *runbook);

/* Resolves a step's parameters into a JSON object, checking types against
 * the action's declared parameters. Errors go to `d` at the parameter's
 * position. Returns NULL on error. */
json_t *rb_resolve_params(const struct rb_step *step, json_t *ctx, struct diag *d);

const char *rb_approve_name(enum rb_approve a);
const char *rb_on_failure_name(enum rb_on_failure f);

#endif
