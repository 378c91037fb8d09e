/* The state machine of a runbook step, as one table of transitions
 * {from, event, to, function, comment} walked by the engine: every
 * transition is looked up here (an event with no row is a bug, logged and
 * refused), journaled, and followed by the row's function. The table is
 * exported as JSON and graphviz (`triad plan --fsm --json|--dot`); the
 * export is committed in docs/ and a test compares them. */
#ifndef TRIAD_FSM_H
#define TRIAD_FSM_H

#include <jansson.h>
#include <stdbool.h>

#include "lib/buf.h"

enum rb_state {
    RB_PENDING,
    RB_AWAITING_APPROVAL,
    RB_RUNNING,
    RB_VERIFYING,
    RB_DONE,
    RB_FAILED,
    RB_SKIPPED,
};
#define RB_N_STATES 7

enum rb_event {
    RB_EV_CHECK_HOLDS,    /* the postcondition already holds */
    RB_EV_NEEDS_APPROVAL, /* the step has a gate in this mode */
    RB_EV_GO,             /* no gate */
    RB_EV_APPROVED,
    RB_EV_DENIED,
    RB_EV_GATE_TIMEOUT,
    RB_EV_RUN_OK,
    RB_EV_RUN_FAILED,
    RB_EV_TIMEOUT,
    RB_EV_VERIFIED,
    RB_EV_NOT_VERIFIED,
    RB_EV_RETRY,    /* retries left, after retry_delay */
    RB_EV_RETRY_OK, /* on_failure: ask, and an operator said retry */
    RB_EV_ABORT,
    RB_EV_TAKEOVER,      /* a new leader re-walks the step from its check */
    RB_EV_ASKS_OPERATOR, /* the action itself needs an answer (a manual fence) */
    RB_EV_ANSWERED,      /* ... and got it: the action carries on */
};
#define RB_N_EVENTS 17

/* What the engine does after a transition. */
enum rb_fsm_fn {
    RB_FN_CHECK,  /* resolve parameters and check the postcondition */
    RB_FN_ASK,    /* publish the gate (prompt, notification, gate timeout) */
    RB_FN_RUN,    /* run the action with the step's timeout */
    RB_FN_VERIFY, /* check the postcondition again */
    RB_FN_NEXT,   /* the step is over: on to the next (or end the run) */
    RB_FN_FAILED, /* retry, continue, ask or stop, per the step */
    RB_FN_RESUME, /* hand the operator's answer to the waiting action */
};

struct rb_transition {
    enum rb_state from;
    enum rb_event event;
    enum rb_state to;
    enum rb_fsm_fn fn;
    const char *comment;
};

/* The row for (from, event), or NULL when that event is not allowed. */
const struct rb_transition *rb_fsm_find(enum rb_state from, enum rb_event event);
const char *rb_state_name(enum rb_state s);
const char *rb_event_name(enum rb_event e);
const char *rb_fsm_fn_name(enum rb_fsm_fn f);
int rb_state_parse(const char *s, enum rb_state *out);
bool rb_state_final(enum rb_state s);

json_t *rb_fsm_to_json(void);
void rb_fsm_to_dot(struct buf *out);

#endif
