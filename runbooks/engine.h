/* The runbook engine: walks a run's steps through the step state machine
 * (runbooks/fsm.c), calling each action's check, run and verify, holding
 * gated steps for approvals, applying timeouts, retries and on_failure, and
 * reporting every transition to its host (which journals and replicates it).
 *
 * The engine knows nothing of the quorum, sockets or files: the host gives
 * it an rb_env (services for the actions) and rb_run_hooks (journal,
 * notifications). A run can be rebuilt from its journal (rb_run_restore) so
 * a new leader re-walks it: steps done or skipped stay so; a step that was
 * running or verifying is checked again (its action is idempotent); a gate
 * still waiting is asked again. */
#ifndef TRIAD_ENGINE_H
#define TRIAD_ENGINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "orchestrator/config.h"
#include "runbooks/action.h"
#include "runbooks/fsm.h"
#include "runbooks/runbook.h"

#define RB_MAX_APPROVERS 5

enum rb_run_state { RB_RUN_RUNNING, RB_RUN_WAITING, RB_RUN_DONE, RB_RUN_FAILED, RB_RUN_ABORTED };

struct rb_approval {
    char who[64];
    int64_t at_ms; /* wall clock */
};

struct rb_step_run {
    enum rb_state state;
    int attempts;
    int64_t started_ms, ended_ms; /* wall clock; 0 = not yet */
    int64_t gate_since_ms;        /* wall clock the gate opened */
    int64_t waited_ms;            /* time spent waiting for humans */
    json_t *params;               /* resolved */
    json_t *result;               /* what the action reported */
    char detail[512];
    char prompt[600]; /* what an approver is shown */
    struct rb_approval approvals[RB_MAX_APPROVERS];
    int n_approvals;
    bool asking_retry; /* the gate is "retry after failure?" (on_failure: ask) */
    bool confirm_gate; /* the gate is an action's own question (env->confirm) */
    rb_confirm_cb confirm_cb;
    void *confirm_arg;
    struct rb_exec *confirm_exec;
    bool confirm_answer;
    char confirm_who[64];
};

struct rb_run;

struct rb_run_hooks {
    /* A record for the journal (borrowed): run-start, step, approval,
     * run-end. The host writes it durably and replicates it. */
    void (*journal)(struct rb_run *r, json_t *record);
    /* A gate opened (notify the operators), or a step failed, or the run
     * ended: for notifications. */
    void (*event)(struct rb_run *r, const char *what, const char *text);
    void *data;
};

struct rb_run {
    char id[40];
    char kind[16];
    struct runbook *rb; /* owned */
    json_t *ctx;        /* owned */
    int64_t epoch;
    char from[64], to[64];
    enum failover_mode mode;
    int approvals_required;
    int64_t gate_timeout_ms;
    struct rb_env *env;
    struct rb_run_hooks hooks;
    enum rb_run_state state;
    size_t cur;
    struct rb_step_run steps[RB_MAX_STEPS];
    struct rb_exec *exec;         /* operation in flight */
    uv_timer_t timer;             /* step timeout, retry delay, gate timeout */
    int64_t started_ms, ended_ms; /* wall clock */
    char end_reason[256];
    bool closing;
    void (*closed_cb)(struct rb_run *r, void *arg);
    void *closed_arg;
};

/* Creates a run (taking ownership of rb and ctx); nothing happens until
 * rb_run_go. The engine takes env->confirm and env->data for itself (an
 * env serves one run). */
struct rb_run *rb_run_new(struct rb_env *env, const struct rb_run_hooks *hooks, struct runbook *rb,
                          json_t *ctx, const char *id, const char *kind, int64_t epoch,
                          const char *from, const char *to, const struct config *cfg);
/* Starts the run at its current step (journals run-start for a new run). */
void rb_run_go(struct rb_run *r, bool resumed);
/* Rebuilds step states from journal records (a takeover), before rb_run_go. */
int rb_run_restore(struct rb_run *r, json_t *records);

/* Operator decisions. Return 0, or -ENOENT (no such step), -EBUSY (the step
 * is not waiting), -EALREADY (that operator already approved). `shown` is
 * what the operator saw (recorded). */
int rb_run_approve(struct rb_run *r, const char *step, const char *who, const char *shown);
int rb_run_deny(struct rb_run *r, const char *step, const char *who, const char *reason);
void rb_run_abort(struct rb_run *r, const char *who);

bool rb_run_finished(const struct rb_run *r);
const char *rb_run_state_name(enum rb_run_state s);
json_t *rb_run_to_json(const struct rb_run *r);

/* Stops whatever is in flight and frees the run; cb runs after. */
void rb_run_close(struct rb_run *r, void (*cb)(struct rb_run *r, void *arg), void *arg);

#endif
