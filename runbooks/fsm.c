/* The step state machine table and its export. */
#include "runbooks/fsm.h"

#include <string.h>

static const struct rb_transition table[] = {
    { RB_PENDING, RB_EV_CHECK_HOLDS, RB_SKIPPED, RB_FN_NEXT,
      "the postcondition already holds: skipped (already done)" },
    { RB_PENDING, RB_EV_NEEDS_APPROVAL, RB_AWAITING_APPROVAL, RB_FN_ASK,
      "the step is gated in this mode: wait for an operator" },
    { RB_PENDING, RB_EV_GO, RB_RUNNING, RB_FN_RUN, "no gate: run the action" },
    { RB_PENDING, RB_EV_ABORT, RB_FAILED, RB_FN_NEXT, "the run was aborted" },
    { RB_AWAITING_APPROVAL, RB_EV_APPROVED, RB_RUNNING, RB_FN_RUN,
      "approved (by enough different operators): run the action" },
    { RB_AWAITING_APPROVAL, RB_EV_DENIED, RB_FAILED, RB_FN_FAILED, "denied by an operator" },
    { RB_AWAITING_APPROVAL, RB_EV_GATE_TIMEOUT, RB_FAILED, RB_FN_FAILED,
      "nobody answered in time: a gate times out to deny" },
    { RB_AWAITING_APPROVAL, RB_EV_CHECK_HOLDS, RB_SKIPPED, RB_FN_NEXT,
      "re-checked after a takeover: already done" },
    { RB_AWAITING_APPROVAL, RB_EV_ABORT, RB_FAILED, RB_FN_NEXT, "the run was aborted" },
    { RB_AWAITING_APPROVAL, RB_EV_TAKEOVER, RB_PENDING, RB_FN_CHECK,
      "a new leader asks again, after checking" },
    { RB_RUNNING, RB_EV_RUN_OK, RB_VERIFYING, RB_FN_VERIFY,
      "the action reported success: verify its postcondition" },
    { RB_RUNNING, RB_EV_RUN_FAILED, RB_FAILED, RB_FN_FAILED, "the action failed" },
    { RB_RUNNING, RB_EV_TIMEOUT, RB_FAILED, RB_FN_FAILED, "the step's timeout passed" },
    { RB_RUNNING, RB_EV_ABORT, RB_FAILED, RB_FN_NEXT, "the run was aborted" },
    { RB_RUNNING, RB_EV_TAKEOVER, RB_PENDING, RB_FN_CHECK,
      "a new leader re-walks the step from its check" },
    { RB_RUNNING, RB_EV_ASKS_OPERATOR, RB_AWAITING_APPROVAL, RB_FN_ASK,
      "the action needs an operator's answer (a manual fence, a replica behind)" },
    { RB_AWAITING_APPROVAL, RB_EV_ANSWERED, RB_RUNNING, RB_FN_RESUME,
      "answered (yes, no, or the gate timed out): the action carries on" },
    { RB_VERIFYING, RB_EV_VERIFIED, RB_DONE, RB_FN_NEXT, "the postcondition holds: done" },
    { RB_VERIFYING, RB_EV_NOT_VERIFIED, RB_FAILED, RB_FN_FAILED,
      "the action returned but its postcondition does not hold" },
    { RB_VERIFYING, RB_EV_TIMEOUT, RB_FAILED, RB_FN_FAILED, "the step's timeout passed" },
    { RB_VERIFYING, RB_EV_ABORT, RB_FAILED, RB_FN_NEXT, "the run was aborted" },
    { RB_VERIFYING, RB_EV_TAKEOVER, RB_PENDING, RB_FN_CHECK,
      "a new leader re-walks the step from its check" },
    { RB_FAILED, RB_EV_RETRY, RB_PENDING, RB_FN_CHECK,
      "retries left: check and try again after retry_delay" },
    { RB_FAILED, RB_EV_RETRY_OK, RB_PENDING, RB_FN_CHECK,
      "on_failure: ask, and an operator chose to retry" },
};

#define N_ROWS (sizeof table / sizeof table[0])

static const char *const state_names[RB_N_STATES] = {
    "pending", "awaiting_approval", "running", "verifying", "done", "failed", "skipped",
};
static const char *const event_names[RB_N_EVENTS] = {
    "check_holds", "needs_approval", "go",       "approved",      "denied",       "gate_timeout",
    "run_ok",      "run_failed",     "timeout",  "verified",      "not_verified", "retry",
    "retry_ok",    "abort",          "takeover", "asks_operator", "answered",
};
static const char *const fn_names[] = {
    "check", "ask", "run", "verify", "next", "failed", "resume"
};

const struct rb_transition *rb_fsm_find(enum rb_state from, enum rb_event event)
{
    for (size_t i = 0; i < N_ROWS; i++) {
        if (table[i].from == from && table[i].event == event)
            return &table[i];
    }
    return NULL;
}

const char *rb_state_name(enum rb_state s)
{
    return state_names[s];
}

const char *rb_event_name(enum rb_event e)
{
    return event_names[e];
}

const char *rb_fsm_fn_name(enum rb_fsm_fn f)
{
    return fn_names[f];
}

int rb_state_parse(const char *s, enum rb_state *out)
{
    for (int i = 0; i < RB_N_STATES; i++) {
        if (s && strcmp(s, state_names[i]) == 0) {
            *out = (enum rb_state)i;
            return 0;
        }
    }
    return -1;
}

bool rb_state_final(enum rb_state s)
{
    return s == RB_DONE || s == RB_SKIPPED || s == RB_FAILED;
}

json_t *rb_fsm_to_json(void)
{
    json_t *states = json_array();
    for (int i = 0; i < RB_N_STATES; i++)
        json_array_append_new(states, json_string(state_names[i]));
    json_t *rows = json_array();
    for (size_t i = 0; i < N_ROWS; i++)
        json_array_append_new(
            rows, json_pack("{s:s,s:s,s:s,s:s,s:s}", "from", state_names[table[i].from], "event",
                            event_names[table[i].event], "to", state_names[table[i].to], "fn",
                            fn_names[table[i].fn], "comment", table[i].comment));
    return json_pack("{s:s,s:o,s:s,s:o}", "machine", "runbook step", "states", states, "initial",
                     "pending", "transitions", rows);
}

void rb_fsm_to_dot(struct buf *out)
{
    buf_append_str(out,
                   "// The runbook step state machine (runbooks/fsm.c).\n"
                   "digraph step {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n"
                   "  pending [style=\"rounded,bold\"];\n"
                   "  done [peripheries=2]; skipped [peripheries=2]; failed [peripheries=2];\n");
    for (size_t i = 0; i < N_ROWS; i++)
        buf_printf(out, "  %s -> %s [label=\"%s\"];\n", state_names[table[i].from],
                   state_names[table[i].to], event_names[table[i].event]);
    buf_append_str(out, "}\n");
}
