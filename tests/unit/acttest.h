/* Test helper: run one operation (check, run, ready) of a runbook action
 * to its end, as the engine would start it, on a loop of the test's, and
 * keep what it reported. A guard cancels it (as a timeout) so that a test
 * cannot hang; an optional timer cancels it as an abort would. */
#ifndef TRIAD_ACTTEST_H
#define TRIAD_ACTTEST_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "runbooks/action.h"

struct acttest {
    /* set by the test */
    struct rb_env *env;
    json_t *ctx;         /* the run's context (rb_context) */
    const char *run_id;  /* default "run-1" */
    const char *step_id; /* default "s" */
    int64_t epoch;
    uint64_t guard_ms;        /* default 20000 */
    uint64_t cancel_after_ms; /* 0: never; else rb_exec_cancel (abort) then */
    bool forget;              /* with cancel_after_ms: rb_exec_forget instead */
    /* A change of the world while the operation runs: tick(tick_arg) is
     * called once, tick_ms after the start (0: never). */
    void (*tick)(void *arg);
    void *tick_arg;
    uint64_t tick_ms;
    /* the outcome of the last operation */
    int calls;
    int status;
    char detail[600];
    json_t *result;    /* a reference, replaced by each operation */
    uint64_t ms;       /* start to callback */
    uint64_t total_ms; /* start to the end of the loop (released) */
    bool guard_fired;
    bool release_hung; /* the loop still ran 5 s after the callback */
};

/* Runs the operation of `action` with params (a reference is taken) and a
 * step of timeout_ms, until the loop has nothing left (the action's state
 * released). Returns the number of callbacks (must be 1, or 0 when
 * forgotten). The action's timers and requests keep the loop running;
 * when it goes on for 5 s after the callback, release_hung is set. */
int acttest_op(struct acttest *t, const char *action, enum rb_op op, int64_t timeout_ms,
               json_t *params);

/* The result field at a dotted path ("objects.0.ready"), or NULL. */
json_t *acttest_get(const struct acttest *t, const char *path);

void acttest_done(struct acttest *t);

#endif
