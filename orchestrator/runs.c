/* The daemon's runs: start, takeover, journal replication, operator
 * requests (local or forwarded to the leader), the anti-flapping block. */
#include "orchestrator/runs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "orchestrator/daemon.h"
#include "orchestrator/journal.h"
#include "orchestrator/notify.h"
#include "orchestrator/peers.h"
#include "runbooks/engine.h"

#define PENDING_MAX        32
#define FORWARD_TIMEOUT_MS 5000
#define PULL_BATCH         64
/* Probe transitions kept for the next run's journal: how many, how old. */
#define PROBE_CHANGES_MAX       64
#define PROBE_CHANGES_WINDOW_MS 120000

struct pending {
    bool used;
    uint64_t id;
    runs_reply_cb cb;
    void *arg;
    int64_t deadline;
};

/* A step operation handed to another site's daemon, waiting for its answer. */
struct delegation {
    bool used;
    uint64_t id;
    struct rb_exec *x;
};

/* A step operation we run for the leader. */
struct remote_exec {
    struct runs *r;
    int site; /* the leader that asked */
    uint64_t id;
    struct runbook *rb;
    json_t *ctx;
    struct rb_env env;
    uv_timer_t guard;
    struct rb_exec *x;
};

struct runs {
    struct daemon *d;
    struct journal journal;
    struct rb_env env;
    struct rb_run *run; /* the run we lead */
    char current[64];   /* the newest run we know of */
    bool current_ended;
    int64_t current_seq; /* last record we hold of it */
    /* anti-flapping */
    char block_run[64];
    int64_t block_until_wall; /* 0: none */
    bool acked;
    char block_path[4200];
    struct pending pending[PENDING_MAX];
    uint64_t next_req;
    struct delegation deleg[PENDING_MAX];
    struct remote_exec *remote[PENDING_MAX];
    int remote_running;
    bool closing;
    int closes; /* the run and remote steps still closing */
    void (*closed_cb)(void *);
    void *closed_arg;
    int64_t next_head_ms;
    /* The last probe transitions, run or not: a run's journal starts with
     * those that led to it (the report lists every transition). */
    struct probe_change {
        int64_t ts_ms;
        bool up;
        char site[64], probe[64], detail[160];
    } changes[PROBE_CHANGES_MAX];
    size_t n_changes, next_change;
};

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static struct quorum *Q(struct runs *r)
{
    return &r->d->q;
}

/* ---- the anti-flapping block ---- */

static void block_save(struct runs *r)
{
    json_t *j = json_pack("{s:s,s:I,s:b}", "run", r->block_run, "until_wall_ms",
                          (json_int_t)r->block_until_wall, "acked", r->acked);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (text)
        fsutil_write_atomic(r->block_path, text, strlen(text), 0600);
    free(text);
}

static void block_load(struct runs *r)
{
    struct buf b;
    buf_init(&b, 4096);
    if (fsutil_read(r->block_path, &b) == 0) {
        json_t *j = json_loadb(b.data ? b.data : "", b.len, 0, NULL);
        snprintf(r->block_run, sizeof r->block_run, "%s",
                 json_string_value(json_object_get(j, "run"))
                     ? json_string_value(json_object_get(j, "run"))
                     : "");
        r->block_until_wall = json_integer_value(json_object_get(j, "until_wall_ms"));
        r->acked = json_is_true(json_object_get(j, "acked"));
        json_decref(j);
    }
    buf_free(&b);
}

static void block_after(struct runs *r, const char *run)
{
    snprintf(r->block_run, sizeof r->block_run, "%s", run);
    r->block_until_wall = wall_ms() + r->d->cfg.failover.block_period_ms;
    r->acked = false;
    block_save(r);
}

static void update_quorum_flags(struct runs *r)
{
    struct quorum *q = Q(r);
    q->run_active = r->current[0] && !r->current_ended;
    q->blocked = !r->acked && r->block_until_wall && wall_ms() < r->block_until_wall;
}

/* ---- journal and replication ---- */

static void replicate(struct runs *r, const char *run, json_t *rec)
{
    json_t *m = json_pack("{s:s,s:s,s:O}", "t", "journal", "run", run, "rec", rec);
    for (int i = 0; i < (int)r->d->cfg.n_sites; i++) {
        if (i != r->d->self && r->d->peers)
            peers_send(r->d->peers, i, m);
    }
    json_decref(m);
}

static void note_record(struct runs *r, const char *run, json_t *rec, int64_t seq)
{
    const char *t = json_string_value(json_object_get(rec, "t"));
    if (strcmp(r->current, run) != 0 && t && !strcmp(t, "run-start")) {
        snprintf(r->current, sizeof r->current, "%s", run);
        r->current_ended = false;
    }
    if (!strcmp(r->current, run)) {
        r->current_seq = seq;
        if (t && !strcmp(t, "run-end")) {
            r->current_ended = true;
            block_after(r, run);
        }
    }
    update_quorum_flags(r);
}

/* The engine's journal hook: durable first, then to the peers. */
static void on_journal(struct rb_run *run, json_t *rec)
{
    struct runs *r = run->hooks.data;
    json_object_set_new(rec, "leader", json_string(r->d->cfg.site));
    int64_t seq = journal_append(&r->journal, run->id, rec);
    if (seq < 0) {
        log_ev(LOG_ERROR, "journal-write-failed", strerror((int)-seq), { "run", run->id });
        return;
    }
    json_object_set_new(rec, "seq", json_integer(seq));
    note_record(r, run->id, rec, seq);
    replicate(r, run->id, rec);
}

static void on_run_event(struct rb_run *run, const char *what, const char *text)
{
    struct runs *r = run->hooks.data;
    const char *sev = !strcmp(what, "step-failed") ? "critical"
                      : !strcmp(what, "gate")      ? "warning"
                                                   : "info";
    notify_send(r->d->notifier, what, sev, text);
}

/* A follower stores what the leader sent; on a gap it asks for the rest. */
static void on_journal_msg(struct runs *r, int site, json_t *msg)
{
    const char *run = json_string_value(json_object_get(msg, "run"));
    json_t *rec = json_object_get(msg, "rec");
    if (!run || !json_is_object(rec) || (r->run && !strcmp(r->run->id, run)))
        return;
    int64_t seq = journal_append(&r->journal, run, rec);
    if (seq == -ERANGE) {
        int64_t have = journal_last_seq(&r->journal, run);
        json_t *pull =
            json_pack("{s:s,s:s,s:I}", "t", "journal-pull", "run", run, "after", (json_int_t)have);
        peers_send(r->d->peers, site, pull);
        json_decref(pull);
        return;
    }
    if (seq > 0)
        note_record(r, run, rec, seq);
}

static void on_journal_pull(struct runs *r, int site, json_t *msg)
{
    const char *run = json_string_value(json_object_get(msg, "run"));
    int64_t after = json_integer_value(json_object_get(msg, "after"));
    json_t *recs = run ? journal_read(&r->journal, run) : NULL;
    size_t i, sent = 0;
    json_t *rec;
    json_array_foreach(recs, i, rec)
    {
        if (json_integer_value(json_object_get(rec, "seq")) <= after || sent >= PULL_BATCH)
            continue;
        json_t *m = json_pack("{s:s,s:s,s:O}", "t", "journal", "run", run, "rec", rec);
        peers_send(r->d->peers, site, m);
        json_decref(m);
        sent++;
    }
    json_decref(recs);
}

/* The leader tells followers how far its journal goes (they pull gaps). */
static void announce_head(struct runs *r)
{
    if (!r->run)
        return;
    json_t *m = json_pack("{s:s,s:s,s:I}", "t", "journal-head", "run", r->run->id, "seq",
                          (json_int_t)r->current_seq);
    for (int i = 0; i < (int)r->d->cfg.n_sites; i++) {
        if (i != r->d->self)
            peers_send(r->d->peers, i, m);
    }
    json_decref(m);
}

static void on_journal_head(struct runs *r, int site, json_t *msg)
{
    const char *run = json_string_value(json_object_get(msg, "run"));
    int64_t seq = json_integer_value(json_object_get(msg, "seq"));
    if (!run)
        return;
    int64_t have = journal_last_seq(&r->journal, run);
    if (have < seq) {
        json_t *pull =
            json_pack("{s:s,s:s,s:I}", "t", "journal-pull", "run", run, "after", (json_int_t)have);
        peers_send(r->d->peers, site, pull);
        json_decref(pull);
    }
}

/* ---- the rb_env of the leader's run ---- */

static const struct probe *env_probe(struct rb_env *env, const char *site, const char *name)
{
    struct runs *r = (struct runs *)(void *)((char *)env - offsetof(struct runs, env));
    struct probe_sched *s = &r->d->probes;
    for (size_t i = 0; i < s->n; i++) {
        if (!strcmp(s->probes[i].cfg->site, site) && !strcmp(s->probes[i].cfg->name, name))
            return &s->probes[i];
    }
    return NULL;
}

static int64_t env_lease_wait(struct rb_env *env)
{
    struct runs *r = (struct runs *)(void *)((char *)env - offsetof(struct runs, env));
    struct quorum *q = Q(r);
    if (!q->decided)
        return -1;
    int64_t left = q->lease_expiry_ms - loop_now_ms();
    return left > 0 ? left : 0;
}

static void env_notify(struct rb_env *env, const char *severity, const char *text)
{
    struct runs *r = (struct runs *)(void *)((char *)env - offsetof(struct runs, env));
    notify_send(r->d->notifier, "run", severity, text);
}

/* ---- steps that must run on another site's daemon ---- */

static bool env_delegate(struct rb_env *env, struct rb_exec *x, int op)
{
    struct runs *r = (struct runs *)(void *)((char *)env - offsetof(struct runs, env));
    const char *site = json_string_value(json_object_get(x->params, x->action->runs_on));
    int to = quorum_site_index(Q(r), site);
    if (to < 0 || !r->run)
        return false;
    int slot = -1;
    for (int i = 0; i < PENDING_MAX && slot < 0; i++) {
        if (!r->deleg[i].used)
            slot = i;
    }
    if (slot < 0)
        return false;
    struct delegation *dl = &r->deleg[slot];
    dl->used = true;
    dl->id = ++r->next_req;
    dl->x = x;
    static const char *const ops[] = { "check", "run", "ready" };
    json_t *m = json_pack("{s:s,s:I,s:s,s:I,s:s,s:s,s:s,s:s,s:s,s:O}", "t", "exec", "id",
                          (json_int_t)dl->id, "run", r->run->id, "epoch", (json_int_t)r->run->epoch,
                          "runbook", r->run->rb->name, "from", r->run->from, "to", r->run->to,
                          "step", x->step->id, "op", ops[op], "params", x->params);
    int rc = peers_send(r->d->peers, to, m);
    json_decref(m);
    if (rc < 0) {
        dl->used = false;
        return false;
    }
    log_ev(LOG_INFO, "step-delegated", NULL, { "run", r->run->id }, { "step", x->step->id },
           { "site", site }, { "op", ops[op] });
    return true;
}

static void env_delegate_cancel(struct rb_env *env, struct rb_exec *x)
{
    struct runs *r = (struct runs *)(void *)((char *)env - offsetof(struct runs, env));
    for (int i = 0; i < PENDING_MAX; i++) {
        if (r->deleg[i].used && r->deleg[i].x == x)
            r->deleg[i].used = false;
    }
}

static void on_exec_result(struct runs *r, json_t *msg)
{
    uint64_t id = (uint64_t)json_integer_value(json_object_get(msg, "id"));
    for (int i = 0; i < PENDING_MAX; i++) {
        struct delegation *dl = &r->deleg[i];
        if (!dl->used || dl->id != id)
            continue;
        dl->used = false;
        if (dl->x->finished)
            return; /* cancelled meanwhile */
        json_t *res = json_object_get(msg, "result");
        if (json_is_object(res))
            json_object_update(dl->x->result, res);
        const char *detail = json_string_value(json_object_get(msg, "detail"));
        rb_exec_done(dl->x, (int)json_integer_value(json_object_get(msg, "status")), "%s (on %s)",
                     detail ? detail : "",
                     json_string_value(json_object_get(msg, "site"))
                         ? json_string_value(json_object_get(msg, "site"))
                         : "its site");
        return;
    }
}

static void runs_free_if_done(struct runs *r);

static void remote_closed(uv_handle_t *h)
{
    struct remote_exec *re = h->data;
    struct runs *r = re->r;
    for (int i = 0; i < PENDING_MAX; i++) {
        if (r->remote[i] == re)
            r->remote[i] = NULL;
    }
    rb_free(re->rb);
    json_decref(re->ctx);
    r->remote_running--;
    free(re);
    runs_free_if_done(r);
}

static void remote_reply(struct remote_exec *re, int status, const char *detail, json_t *result)
{
    struct runs *r = re->r;
    json_t *m = json_pack("{s:s,s:I,s:i,s:s,s:s}", "t", "exec-result", "id", (json_int_t)re->id,
                          "status", status, "detail", detail, "site", r->d->cfg.site);
    if (result)
        json_object_set(m, "result", result);
    peers_send(r->d->peers, re->site, m);
    json_decref(m);
}

static void on_remote_done(struct rb_exec *x, int status, const char *detail, void *arg)
{
    struct remote_exec *re = arg;
    re->x = NULL;
    if (!re->r->closing)
        remote_reply(re, status, detail, x->result);
    uv_close((uv_handle_t *)&re->guard, remote_closed);
}

static void on_remote_guard(uv_timer_t *t)
{
    struct remote_exec *re = t->data;
    if (re->x)
        rb_exec_cancel(re->x, true);
}

/* The leader asks us to run a step of its run on our host. Only the leader
 * of the epoch we hold the decision for may: the epoch is the fencing token
 * here too. */
static void on_exec(struct runs *r, int site, json_t *msg)
{
    struct quorum *q = Q(r);
    int64_t epoch = json_integer_value(json_object_get(msg, "epoch"));
    const char *run = json_string_value(json_object_get(msg, "run"));
    const char *rbname = json_string_value(json_object_get(msg, "runbook"));
    const char *step = json_string_value(json_object_get(msg, "step"));
    const char *op = json_string_value(json_object_get(msg, "op"));
    struct remote_exec tmp = { .r = r,
                               .site = site,
                               .id = (uint64_t)json_integer_value(json_object_get(msg, "id")) };
    if (!run || !rbname || !step || !op) {
        remote_reply(&tmp, -EINVAL, "malformed request", NULL);
        return;
    }
    if (q->d.decision_epoch != epoch || q->d.decision_leader != site ||
        strcmp(q->d.decision_run, run) != 0) {
        remote_reply(&tmp, -EPERM,
                     "refused: the sender is not the leader of the decision this site holds", NULL);
        log_ev(LOG_WARN, "exec-refused", "a step was asked by a site that is not the leader",
               { "from", quorum_site_name(q, site) }, { "run", run });
        return;
    }
    const struct cfg_runbook_ref *ref = config_runbook(&r->d->cfg, rbname);
    json_t *cj = config_runbook_json(&r->d->cfg);
    struct runbook *rb = NULL;
    struct diag dg;
    diag_init(&dg);
    if (!ref || rb_load(ref->path, cj, &rb, &dg) < 0) {
        remote_reply(&tmp, -ENOENT, "this site cannot load that runbook", NULL);
        diag_free(&dg);
        json_decref(cj);
        return;
    }
    diag_free(&dg);
    const struct rb_step *st = NULL;
    for (size_t i = 0; i < rb->n_steps; i++) {
        if (!strcmp(rb->steps[i].id, step))
            st = &rb->steps[i];
    }
    int slot = -1;
    for (int i = 0; i < PENDING_MAX && slot < 0; i++) {
        if (!r->remote[i])
            slot = i;
    }
    struct remote_exec *re = st && slot >= 0 && !r->closing ? calloc(1, sizeof *re) : NULL;
    if (!re) {
        remote_reply(&tmp, -ENOENT, "no such step in this site's copy of the runbook", NULL);
        rb_free(rb);
        json_decref(cj);
        return;
    }
    *re = tmp;
    r->remote[slot] = re;
    re->rb = rb;
    re->ctx = rb_context(cj, run, epoch, json_string_value(json_object_get(msg, "from")),
                         json_string_value(json_object_get(msg, "to")), rbname);
    json_decref(cj);
    re->env.loop = r->d->uv;
    re->env.cfg = &r->d->cfg;
    re->env.site = r->d->cfg.site;
    re->env.http = r->d->http;
    re->env.dns = r->d->dns;
    re->env.probe = NULL;
    uv_timer_init(r->d->uv, &re->guard);
    re->guard.data = re;
    uv_timer_start(&re->guard, on_remote_guard, (uint64_t)st->timeout_ms, 0);
    r->remote_running++;
    enum rb_op o = !strcmp(op, "check")   ? RB_OP_CHECK
                   : !strcmp(op, "ready") ? RB_OP_READY
                                          : RB_OP_RUN;
    log_ev(LOG_INFO, "step-remote", "running a step for the leader", { "run", run },
           { "step", step }, { "op", op });
    re->x = rb_exec_start(&re->env, st, json_object_get(msg, "params"), re->ctx, run, epoch, o,
                          on_remote_done, re);
    if (!re->x) {
        remote_reply(re, -EIO, "cannot start the step", NULL);
        uv_close((uv_handle_t *)&re->guard, remote_closed);
    }
}

/* ---- starting and taking over ---- */

static void on_run_closed(struct rb_run *run, void *arg)
{
    (void)run;
    (void)arg;
}

static void journal_detection(struct runs *r, const struct quorum_durable *dur);
static void journal_probe(struct runs *r, const char *site, const char *probe, bool up,
                          const char *detail, int64_t ts_ms);

static void start_run(struct runs *r, const struct quorum_durable *dur)
{
    struct daemon *d = r->d;
    const struct cfg_runbook_ref *ref = config_runbook(&d->cfg, dur->decision_runbook);
    json_t *cj = config_runbook_json(&d->cfg);
    struct runbook *rb = NULL;
    struct diag dg;
    diag_init(&dg);
    if (!ref || rb_load(ref->path, cj, &rb, &dg) < 0) {
        log_ev(LOG_ERROR, "run-cannot-start",
               ref ? (dg.n ? dg.items[0].msg : "the runbook does not load") : "no such runbook",
               { "run", dur->decision_run }, { "runbook", dur->decision_runbook });
        notify_send(d->notifier, "run-finished", "critical",
                    "a failover was decided but its runbook cannot be loaded; act by hand");
        diag_free(&dg);
        json_decref(cj);
        return;
    }
    diag_free(&dg);
    const char *from = quorum_site_name(Q(r), dur->decision_from);
    const char *to = quorum_site_name(Q(r), dur->decision_to);
    json_t *ctx = rb_context(cj, dur->decision_run, dur->decision_epoch, from, to, rb->name);
    json_decref(cj);
    memset(&r->env, 0, sizeof r->env);
    r->env.loop = d->uv;
    r->env.cfg = &d->cfg;
    r->env.http = d->http;
    r->env.dns = d->dns;
    r->env.probe = env_probe;
    r->env.lease_wait_ms = env_lease_wait;
    r->env.notify = env_notify;
    r->env.delegate = env_delegate;
    r->env.delegate_cancel = env_delegate_cancel;
    r->env.site = d->cfg.site;
    struct rb_run_hooks hooks = { on_journal, on_run_event, r };
    json_t *records = journal_read(&r->journal, dur->decision_run);
    bool resume = records && json_array_size(records) > 0;
    struct rb_run *old = r->run;
    r->run = rb_run_new(&r->env, &hooks, rb, ctx, dur->decision_run, dur->decision_kind,
                        dur->decision_epoch, from, to, &d->cfg);
    if (old)
        rb_run_close(old, on_run_closed, NULL);
    if (!r->run) {
        json_decref(records);
        return;
    }
    if (resume) {
        rb_run_restore(r->run, records);
        json_t *last = json_array_get(records, json_array_size(records) - 1);
        r->current_seq = json_integer_value(json_object_get(last, "seq"));
        snprintf(r->current, sizeof r->current, "%s", dur->decision_run);
        r->current_ended = false;
        json_t *rec = json_pack("{s:s,s:s,s:I}", "t", "takeover", "run", dur->decision_run, "epoch",
                                (json_int_t)dur->decision_epoch);
        json_object_set_new(rec, "ts_ms", json_integer(wall_ms()));
        on_journal(r->run, rec);
        json_decref(rec);
        log_ev(LOG_WARN, "+takeover", "a new leader takes the run over from its journal",
               { "run", dur->decision_run }, { "leader", d->cfg.site });
    }
    json_decref(records);
    rb_run_go(r->run, resume);
    if (!resume)
        journal_detection(r, dur);
}

/* When the loss was seen, for the drill report's timeline: this site's
 * sdown and ODOWN of the old primary, in wall-clock milliseconds. */
static void journal_detection(struct runs *r, const struct quorum_durable *dur)
{
    struct quorum *q = Q(r);
    int from = dur->decision_from;
    int64_t mono = loop_now_ms(), wall = wall_ms();
    json_t *rec = json_pack("{s:s,s:s,s:s}", "t", "detection", "site", r->d->cfg.site, "about",
                            quorum_site_name(q, from));
    if (q->own_view[from] == HEALTH_DOWN && q->own_view_ms[from])
        json_object_set_new(rec, "sdown_ms", json_integer(wall - (mono - q->own_view_ms[from])));
    if (q->odown[from] && q->odown_ms[from])
        json_object_set_new(rec, "odown_ms", json_integer(wall - (mono - q->odown_ms[from])));
    json_object_set_new(rec, "decided_ms", json_integer(wall));
    json_object_set_new(rec, "ts_ms", json_integer(wall));
    json_object_set_new(rec, "epoch", json_integer(dur->decision_epoch));
    json_object_set_new(rec, "run", json_string(dur->decision_run));
    on_journal(r->run, rec);
    json_decref(rec);
    /* The transitions that led here (kept for PROBE_CHANGES_WINDOW_MS). */
    size_t n = r->n_changes;
    for (size_t i = 0; i < n; i++) {
        const struct probe_change *c =
            &r->changes[(r->next_change + PROBE_CHANGES_MAX - n + i) % PROBE_CHANGES_MAX];
        if (c->ts_ms >= wall - PROBE_CHANGES_WINDOW_MS)
            journal_probe(r, c->site, c->probe, c->up, c->detail, c->ts_ms);
    }
}

static void journal_probe(struct runs *r, const char *site, const char *probe, bool up,
                          const char *detail, int64_t ts_ms)
{
    json_t *rec =
        json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:s,s:I}", "t", "probe", "site", site, "probe", probe,
                  "state", up ? "up" : "down", "detail", detail, "ts_ms", (json_int_t)ts_ms, "run",
                  r->run->id, "epoch", (json_int_t)r->run->epoch);
    on_journal(r->run, rec);
    json_decref(rec);
}

/* A probe changed state: remembered for the next run, journaled while a
 * run is in progress (the report lists every probe transition). */
void runs_probe_changed(struct runs *r, const char *site, const char *probe, bool up,
                        const char *detail)
{
    int64_t now = wall_ms();
    struct probe_change *c = &r->changes[r->next_change];
    c->ts_ms = now;
    c->up = up;
    snprintf(c->site, sizeof c->site, "%s", site);
    snprintf(c->probe, sizeof c->probe, "%s", probe);
    snprintf(c->detail, sizeof c->detail, "%s", detail);
    r->next_change = (r->next_change + 1) % PROBE_CHANGES_MAX;
    if (r->n_changes < PROBE_CHANGES_MAX)
        r->n_changes++;
    if (!r->run || rb_run_finished(r->run))
        return;
    journal_probe(r, site, probe, up, detail, now);
}

void runs_decided(struct runs *r, const struct quorum_durable *dur)
{
    if (r->run && !strcmp(r->run->id, dur->decision_run) && !rb_run_finished(r->run))
        return; /* ours already */
    start_run(r, dur);
    update_quorum_flags(r);
}

/* ---- operator requests ---- */

static int apply_decide(struct runs *r, const char *run, const char *step, bool approve,
                        const char *who, const char *reason, const char *shown, char *detail,
                        size_t len)
{
    if (!r->run || strcmp(r->run->id, run) != 0) {
        snprintf(detail, len, "run %s is not in progress here", run);
        return -ENOENT;
    }
    int rc =
        approve ? rb_run_approve(r->run, step, who, shown) : rb_run_deny(r->run, step, who, reason);
    switch (rc) {
    case 0:
        snprintf(detail, len, "%s %s of run %s", approve ? "approved" : "denied", step, run);
        break;
    case -ENOENT:
        snprintf(detail, len, "run %s has no step %s", run, step);
        break;
    case -EBUSY:
        snprintf(detail, len, "step %s is not waiting for approval", step);
        break;
    case -EALREADY:
        snprintf(detail, len, "%s has already approved step %s; another operator must", who, step);
        break;
    default:
        snprintf(detail, len, "%s", strerror(-rc));
        break;
    }
    return rc;
}

static int apply_abort(struct runs *r, const char *run, const char *who, char *detail, size_t len)
{
    if (!r->run || strcmp(r->run->id, run) != 0 || rb_run_finished(r->run)) {
        snprintf(detail, len, "run %s is not in progress here", run);
        return -ENOENT;
    }
    rb_run_abort(r->run, who);
    snprintf(detail, len, "run %s aborted", run);
    return 0;
}

static void apply_ack(struct runs *r, const char *who)
{
    r->acked = true;
    block_save(r);
    update_quorum_flags(r);
    log_ev(LOG_INFO, "+ack", "automatic runs are allowed again", { "who", who });
}

static int leader_site(struct runs *r)
{
    struct quorum *q = Q(r);
    return q->leader >= 0 && q->leader_epoch >= q->d.epoch ? q->leader : -1;
}

static void forward(struct runs *r, json_t *msg, runs_reply_cb cb, void *arg)
{
    int leader = leader_site(r);
    if (leader < 0 || leader == r->d->self) {
        cb(-ENOENT, "no run is in progress (no leader)", arg);
        json_decref(msg);
        return;
    }
    int slot = -1;
    for (int i = 0; i < PENDING_MAX && slot < 0; i++) {
        if (!r->pending[i].used)
            slot = i;
    }
    if (slot < 0) {
        cb(-EBUSY, "too many requests waiting for the leader", arg);
        json_decref(msg);
        return;
    }
    struct pending *p = &r->pending[slot];
    p->used = true;
    p->id = ++r->next_req;
    p->cb = cb;
    p->arg = arg;
    p->deadline = loop_now_ms() + FORWARD_TIMEOUT_MS;
    json_object_set_new(msg, "req", json_integer((json_int_t)p->id));
    if (peers_send(r->d->peers, leader, msg) < 0) {
        p->used = false;
        cb(-ENOTCONN, "cannot reach the leader", arg);
    }
    json_decref(msg);
}

void runs_request_decide(struct runs *r, const char *run, const char *step, bool approve,
                         const char *who, const char *reason, const char *shown, runs_reply_cb cb,
                         void *arg)
{
    char detail[256];
    if (r->run && !strcmp(r->run->id, run)) {
        int rc = apply_decide(r, run, step, approve, who, reason, shown, detail, sizeof detail);
        cb(rc, detail, arg);
        return;
    }
    forward(r,
            json_pack("{s:s,s:s,s:s,s:b,s:s,s:s,s:s}", "t", "op-decide", "run", run, "step", step,
                      "approve", approve, "who", who, "reason", reason ? reason : "", "shown",
                      shown ? shown : ""),
            cb, arg);
}

void runs_request_abort(struct runs *r, const char *run, const char *who, runs_reply_cb cb,
                        void *arg)
{
    char detail[256];
    if (r->run && !strcmp(r->run->id, run)) {
        int rc = apply_abort(r, run, who, detail, sizeof detail);
        cb(rc, detail, arg);
        return;
    }
    forward(r, json_pack("{s:s,s:s,s:s}", "t", "op-abort", "run", run, "who", who), cb, arg);
}

void runs_request_ack(struct runs *r, const char *who, runs_reply_cb cb, void *arg)
{
    apply_ack(r, who);
    json_t *m = json_pack("{s:s,s:s}", "t", "op-ack", "who", who);
    for (int i = 0; i < (int)r->d->cfg.n_sites; i++) {
        if (i != r->d->self)
            peers_send(r->d->peers, i, m);
    }
    json_decref(m);
    cb(0, "acknowledged on every reachable site: automatic runs are allowed again", arg);
}

void runs_request_start(struct runs *r, const char *kind, const char *to, const char *runbook,
                        const char *who, runs_reply_cb cb, void *arg)
{
    struct quorum *q = Q(r);
    int site = quorum_site_index(q, to);
    if (site < 0) {
        cb(-EINVAL, "unknown site", arg);
        return;
    }
    if (site == q->d.primary) {
        cb(-EALREADY, "that site is already the primary", arg);
        return;
    }
    if (!config_runbook(&r->d->cfg, runbook)) {
        cb(-EINVAL, "no such runbook under 'runbooks'", arg);
        return;
    }
    int rc = quorum_request(q, kind, site, runbook, loop_now_ms());
    const char *detail = rc == 0 ? "standing for election; the run starts once a majority "
                                   "records the decision"
                         : rc == -EBUSY
                             ? "a run is already in progress, or an election is under way"
                         : rc == -EAGAIN ? "this site does not hear a majority"
                                         : "refused";
    if (rc == 0)
        log_ev(LOG_WARN, "+operator-run", detail, { "kind", kind }, { "to", to }, { "who", who });
    cb(rc, detail, arg);
}

/* Requests forwarded by a follower, and the leader's answers. */
static void on_op(struct runs *r, int site, json_t *msg, const char *t)
{
    char detail[256] = "";
    int rc;
    const char *run = json_string_value(json_object_get(msg, "run"));
    const char *who = json_string_value(json_object_get(msg, "who"));
    if (!run || !who)
        return;
    if (!strcmp(t, "op-decide")) {
        const char *step = json_string_value(json_object_get(msg, "step"));
        if (!step)
            return;
        rc = apply_decide(r, run, step, json_is_true(json_object_get(msg, "approve")), who,
                          json_string_value(json_object_get(msg, "reason")),
                          json_string_value(json_object_get(msg, "shown")), detail, sizeof detail);
    } else {
        rc = apply_abort(r, run, who, detail, sizeof detail);
    }
    json_t *reply = json_pack("{s:s,s:O,s:i,s:s}", "t", "op-result", "req",
                              json_object_get(msg, "req"), "status", rc, "detail", detail);
    peers_send(r->d->peers, site, reply);
    json_decref(reply);
}

static void on_op_result(struct runs *r, json_t *msg)
{
    uint64_t id = (uint64_t)json_integer_value(json_object_get(msg, "req"));
    for (int i = 0; i < PENDING_MAX; i++) {
        struct pending *p = &r->pending[i];
        if (p->used && p->id == id) {
            p->used = false;
            const char *detail = json_string_value(json_object_get(msg, "detail"));
            p->cb((int)json_integer_value(json_object_get(msg, "status")), detail ? detail : "",
                  p->arg);
            return;
        }
    }
}

bool runs_peer_message(struct runs *r, int site, json_t *msg)
{
    const char *t = json_string_value(json_object_get(msg, "t"));
    if (!t)
        return false;
    if (!strcmp(t, "journal"))
        on_journal_msg(r, site, msg);
    else if (!strcmp(t, "journal-pull"))
        on_journal_pull(r, site, msg);
    else if (!strcmp(t, "journal-head"))
        on_journal_head(r, site, msg);
    else if (!strcmp(t, "op-decide") || !strcmp(t, "op-abort"))
        on_op(r, site, msg, t);
    else if (!strcmp(t, "op-result"))
        on_op_result(r, msg);
    else if (!strcmp(t, "exec"))
        on_exec(r, site, msg);
    else if (!strcmp(t, "exec-result"))
        on_exec_result(r, msg);
    else if (!strcmp(t, "op-ack"))
        apply_ack(r, json_is_string(json_object_get(msg, "who"))
                         ? json_string_value(json_object_get(msg, "who"))
                         : "a peer");
    else
        return false;
    return true;
}

void runs_tick(struct runs *r)
{
    int64_t now = loop_now_ms();
    for (int i = 0; i < PENDING_MAX; i++) {
        struct pending *p = &r->pending[i];
        if (p->used && now >= p->deadline) {
            p->used = false;
            p->cb(-ETIMEDOUT, "the leader did not answer in time", p->arg);
        }
    }
    if (now >= r->next_head_ms) {
        r->next_head_ms = now + 1000;
        announce_head(r);
    }
    update_quorum_flags(r);
}

/* ---- reading ---- */

json_t *runs_get(struct runs *r, const char *id)
{
    if (r->run && !strcmp(r->run->id, id))
        return rb_run_to_json(r->run);
    json_t *recs = journal_read(&r->journal, id);
    if (!recs)
        return NULL;
    json_t *sum = journal_summary(recs);
    json_decref(recs);
    return sum;
}

json_t *runs_status(struct runs *r)
{
    json_t *o = NULL;
    if (r->run && !strcmp(r->run->id, r->current))
        o = rb_run_to_json(r->run);
    else if (r->current[0])
        o = runs_get(r, r->current);
    if (!o)
        return json_null();
    update_quorum_flags(r);
    json_object_set_new(o, "blocked_until_ms",
                        Q(r)->blocked ? json_integer(r->block_until_wall) : json_null());
    return o;
}

json_t *runs_list(struct runs *r)
{
    json_t *ids = journal_runs(&r->journal, 50);
    json_t *out = json_array();
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id)
    {
        json_t *recs = journal_read(&r->journal, json_string_value(id));
        json_t *sum = journal_summary(recs);
        json_object_del(sum, "steps");
        json_object_del(sum, "approvals");
        json_object_del(sum, "takeovers");
        json_object_set(sum, "id", id);
        json_array_append_new(out, sum);
        json_decref(recs);
    }
    json_decref(ids);
    return out;
}

json_t *runs_journal(struct runs *r, const char *id)
{
    return journal_read(&r->journal, id);
}

/* ---- life cycle ---- */

int runs_init(struct runs **out, struct daemon *d)
{
    struct runs *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->d = d;
    int rc = journal_init(&r->journal, d->cfg.state_dir);
    if (rc < 0) {
        free(r);
        return rc;
    }
    snprintf(r->block_path, sizeof r->block_path, "%s/block.json", d->cfg.state_dir);
    block_load(r);
    /* The newest run we hold: in progress unless it ended. */
    json_t *ids = journal_runs(&r->journal, 1);
    if (json_array_size(ids)) {
        const char *id = json_string_value(json_array_get(ids, 0));
        json_t *recs = journal_read(&r->journal, id);
        json_t *sum = journal_summary(recs);
        snprintf(r->current, sizeof r->current, "%s", id);
        r->current_ended = json_object_get(sum, "ended_ms") != NULL;
        r->current_seq = json_integer_value(
            json_object_get(json_array_get(recs, json_array_size(recs) - 1), "seq"));
        json_decref(sum);
        json_decref(recs);
    }
    json_decref(ids);
    update_quorum_flags(r);
    *out = r;
    return 0;
}

static void runs_free_if_done(struct runs *r)
{
    if (!r->closing || r->closes > 0 || r->remote_running > 0)
        return;
    void (*cb)(void *) = r->closed_cb;
    void *arg = r->closed_arg;
    free(r);
    if (cb)
        cb(arg);
}

static void on_closed(struct rb_run *run, void *arg)
{
    (void)run;
    struct runs *r = arg;
    r->closes--;
    runs_free_if_done(r);
}

void runs_close(struct runs *r, void (*cb)(void *arg), void *arg)
{
    r->closing = true;
    r->closed_cb = cb;
    r->closed_arg = arg;
    for (int i = 0; i < PENDING_MAX; i++) {
        if (r->pending[i].used) {
            r->pending[i].used = false;
            r->pending[i].cb(-ESHUTDOWN, "the daemon is stopping", r->pending[i].arg);
        }
        struct remote_exec *re = r->remote[i];
        if (re) {
            if (re->x) {
                struct rb_exec *x = re->x;
                re->x = NULL;
                rb_exec_forget(x);
                uv_close((uv_handle_t *)&re->guard, remote_closed);
            }
        }
    }
    struct rb_run *run = r->run;
    r->run = NULL;
    if (run) {
        r->closes++;
        rb_run_close(run, on_closed, r); /* the run used r->env until it is closed */
    }
    runs_free_if_done(r);
}
