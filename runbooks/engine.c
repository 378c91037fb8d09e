/* The runbook engine: one run, its steps through the state table. */
#include "runbooks/engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "lib/buf.h"
#include "lib/log.h"

static const char *const run_state_names[] = { "running", "waiting", "done", "failed", "aborted" };

const char *rb_run_state_name(enum rb_run_state s)
{
    return run_state_names[s];
}

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

bool rb_run_finished(const struct rb_run *r)
{
    return r->state == RB_RUN_DONE || r->state == RB_RUN_FAILED || r->state == RB_RUN_ABORTED;
}

static void journal(struct rb_run *r, json_t *rec)
{
    json_object_set_new(rec, "run", json_string(r->id));
    json_object_set_new(rec, "ts_ms", json_integer(wall_ms()));
    json_object_set_new(rec, "epoch", json_integer(r->epoch));
    if (r->hooks.journal)
        r->hooks.journal(r, rec);
    json_decref(rec);
}

static void notify(struct rb_run *r, const char *what, const char *text)
{
    if (r->hooks.event)
        r->hooks.event(r, what, text);
}

static const struct rb_step *step_of(const struct rb_run *r, size_t i)
{
    return &r->rb->steps[i];
}

static void dispatch(struct rb_run *r, enum rb_fsm_fn fn);

/* The one place a step changes state: looked up in the table, journaled,
 * logged, then the row's function. */
static void transition(struct rb_run *r, enum rb_event ev, const char *detail)
{
    struct rb_step_run *s = &r->steps[r->cur];
    const struct rb_step *st = step_of(r, r->cur);
    const struct rb_transition *t = rb_fsm_find(s->state, ev);
    if (!t) {
        log_ev(LOG_ERROR, "step-bad-event", "event not allowed in this state (ignored)",
               { "run", r->id }, { "step", st->id }, { "state", rb_state_name(s->state) },
               { "event", rb_event_name(ev) });
        return;
    }
    enum rb_state from = s->state;
    s->state = t->to;
    if (detail && detail != s->detail) {
        char copy[sizeof s->detail];
        snprintf(copy, sizeof copy, "%s", detail);
        memcpy(s->detail, copy, sizeof copy);
    }
    int64_t now = wall_ms();
    if (t->to == RB_RUNNING && !s->started_ms)
        s->started_ms = now;
    if (rb_state_final(t->to))
        s->ended_ms = now;
    if (from == RB_AWAITING_APPROVAL && s->gate_since_ms) {
        s->waited_ms += now - s->gate_since_ms;
        s->gate_since_ms = 0;
    }
    json_t *rec =
        json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "t", "step", "step", st->id, "action",
                  st->action_name, "from", rb_state_name(from), "event", rb_event_name(ev), "to",
                  rb_state_name(t->to), "attempt", (json_int_t)s->attempts);
    if (detail && *detail)
        json_object_set_new(rec, "detail", json_string(detail));
    if (t->to == RB_RUNNING && s->params)
        json_object_set(rec, "params", s->params);
    if (rb_state_final(t->to) && json_object_size(s->result))
        json_object_set(rec, "result", s->result);
    if (s->waited_ms && rb_state_final(t->to))
        json_object_set_new(rec, "waited_ms", json_integer(s->waited_ms));
    journal(r, rec);
    const char *event = t->to == RB_RUNNING             ? "+step-start"
                        : t->to == RB_DONE              ? "+step-done"
                        : t->to == RB_SKIPPED           ? "+step-skipped"
                        : t->to == RB_FAILED            ? "+step-failed"
                        : t->to == RB_AWAITING_APPROVAL ? "+step-gate"
                                                        : "step";
    log_ev(t->to == RB_FAILED ? LOG_WARN : LOG_INFO, event, detail, { "run", r->id },
           { "step", st->id }, { "action", st->action_name }, { "from", rb_state_name(from) },
           { "to", rb_state_name(t->to) });
    dispatch(r, t->fn);
}

/* ---- timers ---- */

static void on_step_timeout(uv_timer_t *t);
static void on_gate_timeout(uv_timer_t *t);
static void on_retry(uv_timer_t *t);

/* ---- operations ---- */

static void on_check(struct rb_exec *x, int status, const char *detail, void *arg);
static void on_run(struct rb_exec *x, int status, const char *detail, void *arg);
static void on_verify(struct rb_exec *x, int status, const char *detail, void *arg);

static bool gated(const struct rb_run *r, const struct rb_step *st)
{
    switch (st->approve) {
    case RB_APPROVE_ALWAYS:
        return true;
    case RB_APPROVE_REQUIRED:
        return r->mode != MODE_AUTOMATIC;
    case RB_APPROVE_NONE:
        break;
    }
    return false;
}

static void do_check(struct rb_run *r)
{
    struct rb_step_run *s = &r->steps[r->cur];
    const struct rb_step *st = step_of(r, r->cur);
    struct diag d;
    diag_init(&d);
    json_decref(s->params);
    s->params = rb_resolve_params(st, r->ctx, &d);
    if (!s->params) {
        char msg[512];
        snprintf(msg, sizeof msg, "parameters do not resolve: %s",
                 d.n ? d.items[0].msg : "unknown error");
        diag_free(&d);
        /* Straight to the failure path: pending has no failure event, so
         * record it as the run failing at this step. */
        s->state = RB_FAILED;
        snprintf(s->detail, sizeof s->detail, "%s", msg);
        s->ended_ms = wall_ms();
        journal(r, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "t", "step", "step", st->id, "from",
                             "pending", "event", "run_failed", "to", "failed", "detail", msg));
        dispatch(r, RB_FN_FAILED);
        return;
    }
    diag_free(&d);
    r->exec =
        rb_exec_start(r->env, st, s->params, r->ctx, r->id, r->epoch, RB_OP_CHECK, on_check, r);
}

static void on_check(struct rb_exec *x, int status, const char *detail, void *arg)
{
    (void)x;
    struct rb_run *r = arg;
    r->exec = NULL;
    if (r->closing)
        return;
    const struct rb_step *st = step_of(r, r->cur);
    struct rb_step_run *s = &r->steps[r->cur];
    if (status == 1) {
        char msg[600];
        snprintf(msg, sizeof msg, "skipped (already done): %s", detail);
        transition(r, RB_EV_CHECK_HOLDS, msg);
        return;
    }
    if (status < 0)
        log_ev(LOG_WARN, "step-check-unknown", detail, { "run", r->id }, { "step", st->id });
    if (s->state == RB_AWAITING_APPROVAL)
        return; /* a gate re-asked after takeover stays open */
    if (gated(r, st))
        transition(r, RB_EV_NEEDS_APPROVAL, status < 0 ? detail : NULL);
    else
        transition(r, RB_EV_GO, NULL);
}

static void do_run(struct rb_run *r)
{
    struct rb_step_run *s = &r->steps[r->cur];
    const struct rb_step *st = step_of(r, r->cur);
    s->attempts++;
    uv_timer_start(&r->timer, on_step_timeout, (uint64_t)st->timeout_ms, 0);
    r->exec = rb_exec_start(r->env, st, s->params, r->ctx, r->id, r->epoch, RB_OP_RUN, on_run, r);
}

static void on_run(struct rb_exec *x, int status, const char *detail, void *arg)
{
    struct rb_run *r = arg;
    r->exec = NULL;
    if (r->closing || status == -ECANCELED)
        return;
    struct rb_step_run *s = &r->steps[r->cur];
    json_decref(s->result);
    s->result = json_incref(x->result);
    if (status < 0) {
        uv_timer_stop(&r->timer);
        transition(r, RB_EV_RUN_FAILED, detail);
        return;
    }
    transition(r, RB_EV_RUN_OK, detail);
}

static void do_verify(struct rb_run *r)
{
    struct rb_step_run *s = &r->steps[r->cur];
    const struct rb_step *st = step_of(r, r->cur);
    if (st->action->self_verifying) {
        uv_timer_stop(&r->timer);
        transition(r, RB_EV_VERIFIED, s->detail);
        return;
    }
    r->exec =
        rb_exec_start(r->env, st, s->params, r->ctx, r->id, r->epoch, RB_OP_CHECK, on_verify, r);
}

static void on_verify(struct rb_exec *x, int status, const char *detail, void *arg)
{
    (void)x;
    struct rb_run *r = arg;
    r->exec = NULL;
    if (r->closing || status == -ECANCELED)
        return;
    uv_timer_stop(&r->timer);
    struct rb_step_run *s = &r->steps[r->cur];
    char msg[1100];
    if (status == 1) {
        snprintf(msg, sizeof msg, "%s%s%s", s->detail,
                 *s->detail ? "; verified: " : "verified: ", detail);
        transition(r, RB_EV_VERIFIED, msg);
    } else {
        snprintf(msg, sizeof msg, "not verified: %s", detail);
        transition(r, RB_EV_NOT_VERIFIED, msg);
    }
}

static void on_step_timeout(uv_timer_t *t)
{
    struct rb_run *r = t->data;
    struct rb_step_run *s = &r->steps[r->cur];
    const struct rb_step *st = step_of(r, r->cur);
    if (r->exec) {
        struct rb_exec *x = r->exec;
        r->exec = NULL;
        rb_exec_forget(x);
    }
    char msg[128];
    snprintf(msg, sizeof msg, "no result within the step's timeout (%lld ms)",
             (long long)st->timeout_ms);
    if (s->state == RB_RUNNING || s->state == RB_VERIFYING)
        transition(r, RB_EV_TIMEOUT, msg);
}

/* ---- gates ---- */

static void describe_step(struct rb_run *r, struct buf *b)
{
    struct rb_step_run *s = &r->steps[r->cur];
    const struct rb_step *st = step_of(r, r->cur);
    rb_exec_describe(r->env, st, s->params, r->ctx, b);
}

static void do_ask(struct rb_run *r)
{
    struct rb_step_run *s = &r->steps[r->cur];
    const struct rb_step *st = step_of(r, r->cur);
    if (!s->confirm_gate) {
        struct buf b;
        buf_init(&b, sizeof s->prompt - 1);
        describe_step(r, &b);
        snprintf(s->prompt, sizeof s->prompt, "%s", b.data ? b.data : st->action_name);
        buf_free(&b);
    }
    s->gate_since_ms = wall_ms();
    s->n_approvals = 0;
    r->state = RB_RUN_WAITING;
    uv_timer_start(&r->timer, on_gate_timeout, (uint64_t)r->gate_timeout_ms, 0);
    char text[900];
    snprintf(text, sizeof text, "Run %s waits for approval of step '%s': %s (triad approve %s %s)",
             r->id, st->id, s->prompt, r->id, st->id);
    notify(r, "gate", text);
}

static void close_gate(struct rb_run *r)
{
    uv_timer_stop(&r->timer);
    r->state = RB_RUN_RUNNING;
}

static void answer_confirm(struct rb_run *r, bool approved, const char *who)
{
    struct rb_step_run *s = &r->steps[r->cur];
    s->confirm_answer = approved;
    snprintf(s->confirm_who, sizeof s->confirm_who, "%s", who);
    close_gate(r);
    char msg[200];
    snprintf(msg, sizeof msg, "%s by %s", approved ? "confirmed" : "refused", who);
    transition(r, RB_EV_ANSWERED, msg);
}

/* After an answer: the step's timeout starts again (a human's time is not
 * the action's), and the action gets the answer. */
static void do_resume(struct rb_run *r)
{
    struct rb_step_run *s = &r->steps[r->cur];
    rb_confirm_cb cb = s->confirm_cb;
    void *arg = s->confirm_arg;
    struct rb_exec *x = s->confirm_exec;
    s->confirm_gate = false;
    s->confirm_cb = NULL;
    uv_timer_start(&r->timer, on_step_timeout, (uint64_t)step_of(r, r->cur)->timeout_ms, 0);
    if (cb)
        cb(x, s->confirm_answer, s->confirm_who, arg);
}

static void on_gate_timeout(uv_timer_t *t)
{
    struct rb_run *r = t->data;
    struct rb_step_run *s = &r->steps[r->cur];
    if (s->state != RB_AWAITING_APPROVAL)
        return;
    journal(r, json_pack("{s:s,s:s,s:s,s:s}", "t", "approval", "step", step_of(r, r->cur)->id,
                         "decision", "timeout", "who", "(nobody)"));
    if (s->confirm_gate) {
        answer_confirm(r, false, "(nobody: the gate timed out)");
        return;
    }
    close_gate(r);
    transition(r, RB_EV_GATE_TIMEOUT, "nobody answered the gate in time: denied");
}

static int find_step(const struct rb_run *r, const char *id)
{
    for (size_t i = 0; i < r->rb->n_steps; i++) {
        if (strcmp(r->rb->steps[i].id, id) == 0)
            return (int)i;
    }
    return -1;
}

int rb_run_approve(struct rb_run *r, const char *step, const char *who, const char *shown)
{
    int i = find_step(r, step);
    if (i < 0)
        return -ENOENT;
    struct rb_step_run *s = &r->steps[i];
    if ((size_t)i != r->cur || s->state != RB_AWAITING_APPROVAL)
        return -EBUSY;
    for (int k = 0; k < s->n_approvals; k++) {
        if (strcmp(s->approvals[k].who, who) == 0)
            return -EALREADY;
    }
    if (s->n_approvals < RB_MAX_APPROVERS) {
        snprintf(s->approvals[s->n_approvals].who, sizeof s->approvals[0].who, "%s", who);
        s->approvals[s->n_approvals].at_ms = wall_ms();
        s->n_approvals++;
    }
    journal(r, json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:i}", "t", "approval", "step", step, "decision",
                         "approve", "who", who, "shown", shown ? shown : s->prompt, "count",
                         s->n_approvals, "required", r->approvals_required));
    log_ev(LOG_INFO, "+approved", s->prompt, { "run", r->id }, { "step", step }, { "who", who });
    if (s->n_approvals < r->approvals_required)
        return 0; /* the two-person rule: wait for another operator */
    if (s->confirm_gate) {
        answer_confirm(r, true, who);
        return 0;
    }
    close_gate(r);
    if (s->asking_retry) {
        s->asking_retry = false;
        s->attempts = 0;
        transition(r, RB_EV_RETRY_OK, "an operator chose to retry");
    } else {
        char msg[160];
        snprintf(msg, sizeof msg, "approved by %s", who);
        for (int k = 0; k + 1 < s->n_approvals; k++) {
            size_t l = strlen(msg);
            snprintf(msg + l, sizeof msg - l, " and %s", s->approvals[k].who);
        }
        transition(r, RB_EV_APPROVED, msg);
    }
    return 0;
}

int rb_run_deny(struct rb_run *r, const char *step, const char *who, const char *reason)
{
    int i = find_step(r, step);
    if (i < 0)
        return -ENOENT;
    struct rb_step_run *s = &r->steps[i];
    if ((size_t)i != r->cur || s->state != RB_AWAITING_APPROVAL)
        return -EBUSY;
    journal(r, json_pack("{s:s,s:s,s:s,s:s,s:s}", "t", "approval", "step", step, "decision", "deny",
                         "who", who, "reason", reason ? reason : ""));
    log_ev(LOG_WARN, "+denied", reason, { "run", r->id }, { "step", step }, { "who", who });
    if (s->confirm_gate) {
        answer_confirm(r, false, who);
        return 0;
    }
    close_gate(r);
    char msg[400];
    snprintf(msg, sizeof msg, "denied by %s%s%s", who, reason && *reason ? ": " : "",
             reason ? reason : "");
    if (s->asking_retry) {
        s->asking_retry = false;
        s->state = RB_FAILED;
        snprintf(s->detail, sizeof s->detail, "%s", msg);
        r->state = RB_RUN_FAILED;
        dispatch(r, RB_FN_NEXT);
        return 0;
    }
    transition(r, RB_EV_DENIED, msg);
    return 0;
}

/* Actions ask the operator through the host: the step shows as awaiting
 * approval until answered (or the gate times out, which denies). */
static void confirm_via_gate(struct rb_env *env, struct rb_exec *x, const char *question,
                             rb_confirm_cb cb, void *arg)
{
    struct rb_run *r = env->data;
    struct rb_step_run *s = &r->steps[r->cur];
    s->confirm_gate = true;
    s->confirm_cb = cb;
    s->confirm_arg = arg;
    s->confirm_exec = x;
    snprintf(s->prompt, sizeof s->prompt, "%s", question);
    /* The step's timeout stops while a human decides, as for any gate. */
    uv_timer_stop(&r->timer);
    transition(r, RB_EV_ASKS_OPERATOR, question);
}

/* ---- failure handling and moving on ---- */

static void on_retry(uv_timer_t *t)
{
    struct rb_run *r = t->data;
    transition(r, RB_EV_RETRY, "retrying");
}

static void end_run(struct rb_run *r, enum rb_run_state st, const char *why)
{
    r->state = st;
    r->ended_ms = wall_ms();
    snprintf(r->end_reason, sizeof r->end_reason, "%s", why);
    json_t *rec =
        json_pack("{s:s,s:s,s:s,s:I}", "t", "run-end", "state", run_state_names[st], "reason", why,
                  "duration_ms", (json_int_t)(r->ended_ms - r->started_ms));
    journal(r, rec);
    log_ev(st == RB_RUN_DONE ? LOG_INFO : LOG_WARN, "+run-end", why, { "run", r->id },
           { "state", run_state_names[st] });
    char text[400];
    snprintf(text, sizeof text, "Run %s (%s, %s -> %s) %s: %s", r->id, r->rb->name, r->from, r->to,
             run_state_names[st], why);
    notify(r, "run-finished", text);
}

static void do_next(struct rb_run *r)
{
    if (r->state == RB_RUN_ABORTED) {
        return;
    }
    struct rb_step_run *s = &r->steps[r->cur];
    if (s->state == RB_FAILED && step_of(r, r->cur)->on_failure != RB_FAIL_CONTINUE) {
        char why[700];
        snprintf(why, sizeof why, "step '%s' failed: %s", step_of(r, r->cur)->id, s->detail);
        end_run(r, RB_RUN_FAILED, why);
        return;
    }
    r->state = RB_RUN_RUNNING;
    if (r->cur + 1 >= r->rb->n_steps) {
        end_run(r, RB_RUN_DONE, "every step is done or was already done");
        return;
    }
    r->cur++;
    dispatch(r, RB_FN_CHECK);
}

static void do_failed(struct rb_run *r)
{
    struct rb_step_run *s = &r->steps[r->cur];
    const struct rb_step *st = step_of(r, r->cur);
    char text[700];
    snprintf(text, sizeof text, "Run %s: step '%s' failed: %s", r->id, st->id, s->detail);
    notify(r, "step-failed", text);
    if (s->attempts > 0 && s->attempts <= st->retries) {
        uv_timer_start(&r->timer, on_retry, (uint64_t)st->retry_delay_ms, 0);
        return;
    }
    if (st->on_failure == RB_FAIL_ASK) {
        s->asking_retry = true;
        char prompt[sizeof s->prompt];
        snprintf(prompt, sizeof prompt, "Step '%s' failed (%s). Retry it?", st->id, s->detail);
        memcpy(s->prompt, prompt, sizeof prompt);
        s->state = RB_AWAITING_APPROVAL;
        do_ask(r);
        return;
    }
    do_next(r);
}

static void dispatch(struct rb_run *r, enum rb_fsm_fn fn)
{
    if (r->closing)
        return;
    switch (fn) {
    case RB_FN_CHECK:
        do_check(r);
        break;
    case RB_FN_ASK:
        do_ask(r);
        break;
    case RB_FN_RUN:
        do_run(r);
        break;
    case RB_FN_VERIFY:
        do_verify(r);
        break;
    case RB_FN_NEXT:
        do_next(r);
        break;
    case RB_FN_FAILED:
        do_failed(r);
        break;
    case RB_FN_RESUME:
        do_resume(r);
        break;
    }
}

/* ---- life cycle ---- */

struct rb_run *rb_run_new(struct rb_env *env, const struct rb_run_hooks *hooks, struct runbook *rb,
                          json_t *ctx, const char *id, const char *kind, int64_t epoch,
                          const char *from, const char *to, const struct config *cfg)
{
    struct rb_run *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->env = env;
    if (hooks)
        r->hooks = *hooks;
    r->rb = rb;
    r->ctx = ctx;
    snprintf(r->id, sizeof r->id, "%s", id);
    snprintf(r->kind, sizeof r->kind, "%s", kind);
    snprintf(r->from, sizeof r->from, "%s", from);
    snprintf(r->to, sizeof r->to, "%s", to);
    r->epoch = epoch;
    r->mode = cfg->failover.mode;
    r->approvals_required = cfg->approvals.required;
    r->gate_timeout_ms = cfg->approvals.timeout_ms;
    uv_timer_init(env->loop, &r->timer);
    r->timer.data = r;
    env->confirm = confirm_via_gate;
    env->data = r;
    return r;
}

void rb_run_go(struct rb_run *r, bool resumed)
{
    if (!resumed) {
        r->started_ms = wall_ms();
        journal(r, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:i}", "t", "run-start", "runbook",
                             r->rb->name, "kind", r->kind, "from", r->from, "to", r->to, "mode",
                             config_mode_name(r->mode), "steps", (int)r->rb->n_steps));
        log_ev(LOG_WARN, "+run-start", r->rb->description, { "run", r->id },
               { "runbook", r->rb->name }, { "from", r->from }, { "to", r->to });
    }
    r->state = RB_RUN_RUNNING;
    /* Steps already final stay so; start at the first that is not. */
    while (r->cur < r->rb->n_steps && rb_state_final(r->steps[r->cur].state) &&
           !(r->steps[r->cur].state == RB_FAILED))
        r->cur++;
    if (r->cur >= r->rb->n_steps) {
        end_run(r, RB_RUN_DONE, "every step is done or was already done");
        return;
    }
    struct rb_step_run *s = &r->steps[r->cur];
    if (resumed && s->state != RB_PENDING) {
        transition(r, s->state == RB_FAILED ? RB_EV_RETRY : RB_EV_TAKEOVER,
                   "resumed by a new leader");
        return;
    }
    dispatch(r, RB_FN_CHECK);
}

int rb_run_restore(struct rb_run *r, json_t *records)
{
    size_t i;
    json_t *rec;
    json_array_foreach(records, i, rec)
    {
        const char *t = json_string_value(json_object_get(rec, "t"));
        if (!t)
            continue;
        if (!strcmp(t, "run-start")) {
            r->started_ms = json_integer_value(json_object_get(rec, "ts_ms"));
            continue;
        }
        if (strcmp(t, "step") != 0)
            continue;
        int k = find_step(r, json_string_value(json_object_get(rec, "step")));
        enum rb_state st;
        if (k < 0 || rb_state_parse(json_string_value(json_object_get(rec, "to")), &st) < 0)
            continue;
        r->steps[k].state = st;
        const char *detail = json_string_value(json_object_get(rec, "detail"));
        if (detail)
            snprintf(r->steps[k].detail, sizeof r->steps[k].detail, "%s", detail);
        r->steps[k].attempts = (int)json_integer_value(json_object_get(rec, "attempt"));
        if ((size_t)k > r->cur || !rb_state_final(st))
            r->cur = (size_t)k;
    }
    return 0;
}

void rb_run_abort(struct rb_run *r, const char *who)
{
    if (rb_run_finished(r))
        return;
    struct rb_step_run *s = &r->steps[r->cur];
    uv_timer_stop(&r->timer);
    if (r->exec) {
        struct rb_exec *x = r->exec;
        r->exec = NULL;
        rb_exec_forget(x);
    }
    char msg[128];
    snprintf(msg, sizeof msg, "aborted by %s", who);
    journal(r, json_pack("{s:s,s:s}", "t", "abort", "who", who));
    if (!rb_state_final(s->state)) {
        r->state = RB_RUN_ABORTED;
        transition(r, RB_EV_ABORT, msg);
    }
    end_run(r, RB_RUN_ABORTED, msg);
}

static const char *gate_kind(const struct rb_step_run *s)
{
    return s->asking_retry ? "retry" : s->confirm_gate ? "confirm" : "approve";
}

json_t *rb_run_to_json(const struct rb_run *r)
{
    json_t *steps = json_array();
    for (size_t i = 0; i < r->rb->n_steps; i++) {
        const struct rb_step_run *s = &r->steps[i];
        const struct rb_step *st = step_of(r, i);
        json_t *o =
            json_pack("{s:s,s:s,s:s,s:s,s:i,s:s}", "id", st->id, "action", st->action_name,
                      "approve", rb_approve_name(st->approve), "state", rb_state_name(s->state),
                      "attempts", s->attempts, "detail", s->detail);
        if (s->started_ms)
            json_object_set_new(o, "started_ms", json_integer(s->started_ms));
        if (s->ended_ms)
            json_object_set_new(o, "ended_ms", json_integer(s->ended_ms));
        if (s->waited_ms)
            json_object_set_new(o, "waited_ms", json_integer(s->waited_ms));
        if (s->state == RB_AWAITING_APPROVAL) {
            json_t *who = json_array();
            for (int k = 0; k < s->n_approvals; k++)
                json_array_append_new(who, json_string(s->approvals[k].who));
            json_object_set_new(o, "gate",
                                json_pack("{s:s,s:s,s:o,s:i,s:I}", "kind", gate_kind(s), "prompt",
                                          s->prompt, "approved_by", who, "required",
                                          r->approvals_required, "since_ms",
                                          (json_int_t)s->gate_since_ms));
        }
        if (json_object_size(s->result))
            json_object_set(o, "result", s->result);
        json_array_append_new(steps, o);
    }
    json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:o}", "id", r->id, "runbook",
                          r->rb->name, "kind", r->kind, "epoch", (json_int_t)r->epoch, "from",
                          r->from, "to", r->to, "state", run_state_names[r->state], "mode",
                          config_mode_name(r->mode), "steps", steps);
    if (r->cur < r->rb->n_steps && !rb_run_finished(r))
        json_object_set_new(o, "current", json_string(step_of(r, r->cur)->id));
    json_object_set_new(o, "started_ms", json_integer(r->started_ms));
    if (r->ended_ms) {
        json_object_set_new(o, "ended_ms", json_integer(r->ended_ms));
        json_object_set_new(o, "end_reason", json_string(r->end_reason));
    }
    return o;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct rb_run *r = h->data;
    for (size_t i = 0; i < RB_MAX_STEPS; i++) {
        json_decref(r->steps[i].params);
        json_decref(r->steps[i].result);
    }
    rb_free(r->rb);
    json_decref(r->ctx);
    void (*cb)(struct rb_run *, void *) = r->closed_cb;
    void *arg = r->closed_arg;
    free(r);
    if (cb)
        cb(NULL, arg);
}

void rb_run_close(struct rb_run *r, void (*cb)(struct rb_run *r, void *arg), void *arg)
{
    r->closing = true;
    r->closed_cb = cb;
    r->closed_arg = arg;
    uv_timer_stop(&r->timer);
    if (r->exec) {
        struct rb_exec *x = r->exec;
        r->exec = NULL;
        rb_exec_forget(x);
    }
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
}
