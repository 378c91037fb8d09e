/* Action `pg.demote`: shut the primary down cleanly and wait until the
 * target replica has replayed its final checkpoint (switchover).
 *
 * Runs on the daemon of the primary's own site (runs_on: site), for every
 * instance of the group there:
 *   1. the target must answer and stream (a replica that does not receive
 *      could never replay the end: the primary is not stopped then).
 *   2. CHECKPOINT (the shutdown checkpoint then has little to write), then a
 *      clean shutdown with the configured `local.stop` (or pg_ctl -m fast).
 *      The walsenders send everything up to the shutdown checkpoint before
 *      they exit.
 *   3. the final LSN: pg_controldata's latest checkpoint location, run as
 *      the OS user (the shutdown checkpoint is the last record, and its REDO
 *      is itself): result demote_lsn.
 *   4. wait until the target's replay LSN is past it (the end of the last
 *      replayed record: past the checkpoint means it was replayed). Then the
 *      target holds everything and, promoted, forks its timeline exactly at
 *      the old primary's end of WAL: the old primary can follow without
 *      pg_rewind.
 *   5. unless restart_as_replica is false: standby.signal and
 *      primary_conninfo/primary_slot_name pointing at the target (the slot
 *      created there as the replication user), and start it with `local.start`.
 *      A stopped old primary restarted by anyone (an operator, a BMC power
 *      on) would come back as a second primary; this way it comes back as a
 *      replica, cascading from the target until the target is promoted and
 *      then following its new timeline (recovery_target_timeline = latest).
 *      pg.follow then only has to confirm it.
 * A server found already down is accepted when pg_controldata says it was
 * shut down cleanly (then only 4 and 5), refused when it crashed: its end
 * of WAL is unknown.
 * check: the site's server is down or in recovery, and the target has
 * replayed past the site's last checkpoint (or is itself a primary while
 * the site's server is a replica: the roles have swapped). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runbooks/actions/actions.h"
#include "runbooks/actions/pg_common.h"

static const struct rb_param_spec params[] = {
    { "group", RB_P_STRING, false, "database group (postgres.groups)" },
    { "cluster", RB_P_STRING, false, "or one PostgreSQL cluster" },
    { "site", RB_P_STRING, true, "the current primary's site" },
    { "target", RB_P_STRING, true, "the replica that must replay everything first" },
    { "restart_as_replica", RB_P_BOOL, false,
      "then start the old primary as a replica of the target (default true)" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    static const char *const sites[] = { "site", "target", NULL };
    act_need_site(v, "site");
    act_need_site(v, "target");
    act_need_db_target(v, sites);
    const char *s = json_string_value(json_object_get(v->params, "site"));
    const char *t = json_string_value(json_object_get(v->params, "target"));
    if (s && t && !strcmp(s, t))
        rb_param_error(v, "target", "the target must be another site than '%s'", s);
}

/* One instance of the site and the target instances it must reach. */
struct unit {
    struct pgc_node *srv;
    struct pgc_node *tgts[PGC_MAX_NODES];
    size_t n_tgts;
    struct pgc_node *slot_maker; /* the first target, as the replication user */
    struct pgc_local local;
    bool have_local;
    uint64_t demote_lsn;
    bool was_running;
};

struct demote {
    struct pgc_ctx c; /* first */
    const char *site, *target;
    bool restart;
    struct unit units[PGC_MAX_NODES];
    size_t n_units;
    size_t u;
    struct pgc_node *watch[PGC_MAX_NODES + 1];
    size_t n_watch;
    int start_polls;
    int cd_polls;
    struct buf notes;
    json_t *lsns; /* demote_lsn per instance */
};

static void note(struct demote *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct demote *d, const char *fmt, ...)
{
    va_list ap;
    if (d->notes.len)
        buf_append_str(&d->notes, "; ");
    va_start(ap, fmt);
    buf_vprintf(&d->notes, fmt, ap);
    va_end(ap);
}

static void cleanup(struct pgc_ctx *c)
{
    struct demote *d = (struct demote *)c;
    for (size_t i = 0; i < d->n_units; i++)
        pgc_local_free(&d->units[i].local);
    buf_free(&d->notes);
}

static struct demote *start(struct rb_exec *x)
{
    struct demote *d = calloc(1, sizeof *d);
    if (!d) {
        rb_exec_done(x, -ENOMEM, "out of memory");
        return NULL;
    }
    buf_init(&d->notes, 2048);
    d->c.cleanup = cleanup;
    if (pgc_init(&d->c, x) < 0)
        return NULL;
    d->site = json_string_value(json_object_get(x->params, "site"));
    d->target = json_string_value(json_object_get(x->params, "target"));
    json_t *r = json_object_get(x->params, "restart_as_replica");
    d->restart = !json_is_false(r);
    for (size_t k = 0; k < d->c.n_clusters; k++) {
        const struct cfg_pg_cluster *cl = d->c.clusters[k];
        struct pgc_node *srv = pgc_node_get(&d->c, cl, d->site, PGC_AS_TRIAD, false);
        struct pgc_node *tgt = pgc_node_get(&d->c, cl, d->target, PGC_AS_TRIAD, false);
        if (!srv || !tgt)
            continue;
        struct unit *u = NULL;
        for (size_t i = 0; i < d->n_units; i++) {
            if (d->units[i].srv == srv)
                u = &d->units[i];
        }
        if (!u) {
            char why[300];
            u = &d->units[d->n_units++];
            u->srv = srv;
            u->slot_maker = pgc_node_get(&d->c, cl, d->target, PGC_AS_REPLICATION, false);
            if (pgc_local_get(cl, d->site, &u->local, why, sizeof why) < 0) {
                pgc_done(&d->c, -ENOTSUP, "%s", why);
                return NULL;
            }
            u->have_local = true;
        }
        bool seen = false;
        for (size_t i = 0; i < u->n_tgts; i++)
            seen |= u->tgts[i] == tgt;
        if (!seen)
            u->tgts[u->n_tgts++] = tgt;
    }
    if (!d->n_units) {
        pgc_done(&d->c, -EINVAL, "no instance of these clusters in both %s and %s", d->site,
                 d->target);
        return NULL;
    }
    return d;
}

static void set_watch(struct demote *d, struct unit *u, bool with_srv)
{
    d->n_watch = 0;
    if (with_srv)
        d->watch[d->n_watch++] = u->srv;
    for (size_t i = 0; i < u->n_tgts; i++)
        d->watch[d->n_watch++] = u->tgts[i];
}

/* How far a target got: what it replayed (static after its promotion), or
 * its own WAL position when it never was a replica. */
static uint64_t target_pos(const struct pgc_obs *o)
{
    if (o->has_replay)
        return o->replay_lsn;
    return o->has_current ? o->current_lsn : 0;
}

static void unit_next(struct demote *d);

static void unit_done(struct demote *d)
{
    d->u++;
    unit_next(d);
}

/* --- 5. back as a replica -------------------------------------------------------------------- */

static void started_observe(struct pgc_ctx *c);

static void on_started_observed(struct pgc_ctx *c)
{
    struct demote *d = (struct demote *)c;
    struct unit *u = &d->units[d->u];
    const struct pgc_obs *o = &u->srv->obs;
    if (o->err == 0 && o->in_recovery) {
        json_object_set_new(c->x->result, "restarted_as_replica", json_true());
        note(d, "restarted as a replica of %s", d->target);
        unit_done(d);
        return;
    }
    if (o->err == 0) {
        pgc_done(c, -EPROTO, "%s started as a primary although standby.signal was written",
                 u->srv->label);
        return;
    }
    if (++d->start_polls > 50 || pgc_left_ms(c) <= 0) {
        pgc_done(c, o->err, "%s does not answer after its start as a replica: %s", u->srv->label,
                 o->detail);
        return;
    }
    pgc_later(c, PGC_POLL_MS, started_observe);
}

static void started_observe(struct pgc_ctx *c)
{
    struct demote *d = (struct demote *)c;
    pgc_observe(c, &d->units[d->u].srv, 1, on_started_observed);
}

static void on_started(struct pgc_ctx *c, const struct proc_result *r)
{
    struct demote *d = (struct demote *)c;
    struct unit *u = &d->units[d->u];
    if (r->result < 0 || r->exit_status != 0) {
        char tail[300];
        pgc_proc_tail(r, tail, sizeof tail);
        pgc_done(c, r->result < 0 ? r->result : -EIO,
                 "%s was demoted (target replayed everything) but did not start as a replica: "
                 "%s",
                 u->srv->label, tail);
        return;
    }
    d->start_polls = 0;
    started_observe(c);
}

static void on_slot(struct pgc_node *n, struct pg_async_result *r)
{
    struct demote *d = (struct demote *)n->c;
    struct unit *u = &d->units[d->u];
    char why[300], slot[PGC_SLOT_NAME_MAX];
    if (r->status < 0 && strcmp(r->sqlstate, "42710") != 0) {
        pgc_done(&d->c, r->status, "cannot create the slot for %s on %s: %s", d->site, n->label,
                 r->detail);
        return;
    }
    struct buf ci;
    buf_init(&ci, 4096);
    pgc_slot_name(d->site, slot, sizeof slot);
    int rc = pgc_replica_conninfo(d->c.cfg, u->tgts[0]->member, d->site, &ci, why, sizeof why);
    if (rc == 0)
        rc = pgc_write_standby(&u->local, ci.data, slot, why, sizeof why);
    if (ci.data)
        explicit_bzero(ci.data, ci.alloc);
    buf_free(&ci);
    if (rc < 0) {
        pgc_done(&d->c, rc, "%s is stopped; cannot make it a replica: %s", u->srv->label, why);
        return;
    }
    rc = pgc_start_server(&d->c, &u->local, on_started);
    if (rc < 0)
        pgc_done(&d->c, rc, "cannot start %s: %s", u->srv->label, strerror(-rc));
}

static void restart_as_replica(struct demote *d)
{
    struct unit *u = &d->units[d->u];
    char slot[PGC_SLOT_NAME_MAX];
    pgc_slot_name(d->site, slot, sizeof slot);
    const char *args[] = { slot };
    int rc = u->slot_maker
                 ? pgc_query(u->slot_maker,
                             "SELECT pg_create_physical_replication_slot($1, true) WHERE NOT "
                             "EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                             1, args, on_slot)
                 : -ENOMEM;
    if (rc < 0)
        pgc_done(&d->c, rc, "cannot create the slot for %s: %s", d->site, strerror(-rc));
}

/* --- 4. the target replays the end ------------------------------------------------------------ */

static void replay_observe(struct pgc_ctx *c);

static void on_replay(struct pgc_ctx *c)
{
    struct demote *d = (struct demote *)c;
    struct unit *u = &d->units[d->u];
    char a[PG_ASYNC_LSN_STRLEN], b[PG_ASYNC_LSN_STRLEN];
    const struct pgc_node *late = NULL;
    for (size_t i = 0; i < u->n_tgts; i++) {
        const struct pgc_obs *o = &u->tgts[i]->obs;
        if (o->err < 0 || target_pos(o) <= u->demote_lsn)
            late = u->tgts[i];
    }
    if (!late) {
        note(d, "%s replayed it (%s)", u->tgts[0]->label,
             pgc_lsn_str(target_pos(&u->tgts[0]->obs), a, sizeof a));
        if (d->restart) {
            restart_as_replica(d);
            return;
        }
        note(d, "%s stays stopped", u->srv->label);
        unit_done(d);
        return;
    }
    if (pgc_left_ms(c) <= 0) {
        const struct pgc_obs *o = &late->obs;
        if (o->err < 0)
            pgc_done(c, -ETIMEDOUT,
                     "%s is stopped (final checkpoint %s) but the target %s does not answer: %s",
                     u->srv->label, pgc_lsn_str(u->demote_lsn, a, sizeof a), late->label,
                     o->detail);
        else
            pgc_done(
                c, -ETIMEDOUT,
                "%s is stopped but the target %s did not replay its final checkpoint %s in "
                "time: replayed %s (wal receiver: %s%s); %s stays stopped (start it to "
                "undo)",
                u->srv->label, late->label, pgc_lsn_str(u->demote_lsn, a, sizeof a),
                pgc_lsn_str(target_pos(o), b, sizeof b), o->wr_status[0] ? o->wr_status : "none",
                strcmp(o->pause_state, "not paused") && o->pause_state[0] ? ", replay paused" : "",
                u->srv->label);
        return;
    }
    pgc_later(c, PGC_POLL_MS, replay_observe);
}

static void replay_observe(struct pgc_ctx *c)
{
    struct demote *d = (struct demote *)c;
    struct unit *u = &d->units[d->u];
    pgc_observe(c, u->tgts, u->n_tgts, on_replay);
}

/* --- 3. the final LSN -------------------------------------------------------------------------- */

static void on_final_controldata(struct pgc_ctx *c, int status, const struct pgc_controldata *cd,
                                 const char *why);

static void reread_controldata(struct pgc_ctx *c)
{
    struct demote *d = (struct demote *)c;
    int rc = pgc_read_controldata(c, &d->units[d->u].local, on_final_controldata);
    if (rc < 0)
        pgc_done(c, rc, "cannot run pg_controldata: %s", strerror(-rc));
}

static void on_final_controldata(struct pgc_ctx *c, int status, const struct pgc_controldata *cd,
                                 const char *why)
{
    struct demote *d = (struct demote *)c;
    struct unit *u = &d->units[d->u];
    char a[PG_ASYNC_LSN_STRLEN];
    if (status < 0) {
        pgc_done(c, status, "pg_controldata on %s failed: %s", u->local.data_dir, why);
        return;
    }
    if (!pgc_controldata_clean(cd) && u->was_running && ++d->cd_polls < 50) {
        /* A stop command that returns before the server is down. */
        pgc_later(c, PGC_POLL_MS, reread_controldata);
        return;
    }
    if (!pgc_controldata_clean(cd)) {
        pgc_done(c, -EPROTO,
                 "%s is down but was not shut down cleanly (pg_controldata: %s): its end of WAL "
                 "is unknown; start it and demote again, or fail over",
                 u->srv->label, cd->state);
        return;
    }
    u->demote_lsn = cd->checkpoint_lsn;
    pgc_lsn_str(u->demote_lsn, a, sizeof a);
    json_object_set_new(c->x->result, "demote_lsn", json_string(a));
    json_object_set_new(d->lsns, u->srv->label, json_string(a));
    note(d, "%s %s at %s", u->srv->label,
         u->was_running ? "shut down cleanly" : "was already shut down cleanly", a);
    replay_observe(c);
}

/* --- 2. checkpoint and clean shutdown ----------------------------------------------------------- */

static void on_stopped(struct pgc_ctx *c, const struct proc_result *r)
{
    struct demote *d = (struct demote *)c;
    struct unit *u = &d->units[d->u];
    if (r->result < 0 || r->exit_status != 0) {
        char tail[300];
        pgc_proc_tail(r, tail, sizeof tail);
        pgc_done(c, r->result < 0 ? r->result : -EIO, "stopping %s failed: %s", u->srv->label,
                 tail[0] ? tail : "no output");
        return;
    }
    int rc = pgc_read_controldata(c, &u->local, on_final_controldata);
    if (rc < 0)
        pgc_done(c, rc, "cannot run pg_controldata: %s", strerror(-rc));
}

static void on_checkpoint(struct pgc_node *n, struct pg_async_result *r)
{
    struct demote *d = (struct demote *)n->c;
    struct unit *u = &d->units[d->u];
    if (r->status < 0)
        note(d, "CHECKPOINT before the shutdown failed (%s)", r->detail);
    /* Close our session first: a fast shutdown would end it anyway. */
    pgc_disconnect(n);
    int rc = pgc_stop_server(&d->c, &u->local, on_stopped);
    if (rc < 0)
        pgc_done(&d->c, rc, "cannot stop %s: %s", u->srv->label, strerror(-rc));
}

/* --- 1. before anything changes ---------------------------------------------------------------- */

static void on_pre(struct pgc_ctx *c)
{
    struct demote *d = (struct demote *)c;
    struct unit *u = &d->units[d->u];
    const struct pgc_obs *so = &u->srv->obs;
    bool target_primary = false;
    for (size_t i = 0; i < u->n_tgts; i++) {
        const struct pgc_obs *o = &u->tgts[i]->obs;
        if (o->err < 0) {
            pgc_done(c, o->err, "cannot reach the target %s: %s", u->tgts[i]->label, o->detail);
            return;
        }
        target_primary |= !o->in_recovery;
    }
    if (so->err == 0 && so->in_recovery) {
        note(d, "%s is already a replica", u->srv->label);
        unit_done(d);
        return;
    }
    if (target_primary) {
        if (so->err == 0) {
            pgc_done(c, -EEXIST, "the target is already a primary while %s still is one",
                     u->srv->label);
            return;
        }
        note(d, "%s is down and the target already a primary", u->srv->label);
        unit_done(d);
        return;
    }
    if (so->err < 0) {
        /* Down already: fine if it was a clean shutdown. */
        int rc = pgc_read_controldata(c, &u->local, on_final_controldata);
        if (rc < 0)
            pgc_done(c, rc, "cannot run pg_controldata: %s", strerror(-rc));
        return;
    }
    for (size_t i = 0; i < u->n_tgts; i++) {
        const struct pgc_obs *o = &u->tgts[i]->obs;
        if (strcmp(o->wr_status, "streaming") != 0) {
            pgc_done(c, -EAGAIN,
                     "not demoted: the target %s does not stream (wal receiver: %s), so it "
                     "could not replay the end; fix replication first",
                     u->tgts[i]->label, o->wr_status[0] ? o->wr_status : "none");
            return;
        }
    }
    u->was_running = true;
    if (so->has_current) {
        char a[PG_ASYNC_LSN_STRLEN];
        json_object_set_new(c->x->result, "lsn_before_stop",
                            json_string(pgc_lsn_str(so->current_lsn, a, sizeof a)));
    }
    int rc = pgc_query_long(u->srv, "CHECKPOINT", on_checkpoint);
    if (rc < 0)
        pgc_done(c, rc, "cannot query %s: %s", u->srv->label, strerror(-rc));
}

static void finish(struct demote *d)
{
    pgc_done(&d->c, 0, "%s", d->notes.len ? d->notes.data : "demoted");
}

static void unit_next(struct demote *d)
{
    if (d->u >= d->n_units) {
        finish(d);
        return;
    }
    d->cd_polls = 0;
    set_watch(d, &d->units[d->u], true);
    pgc_observe(&d->c, d->watch, d->n_watch, on_pre);
}

static void run(struct rb_exec *x)
{
    struct demote *d = start(x);
    if (!d)
        return;
    d->lsns = json_object();
    json_object_set_new(x->result, "demote_lsns", d->lsns);
    unit_next(d);
}

/* --- check ------------------------------------------------------------------------------------- */

static void check_next(struct demote *d);

static void on_check_controldata(struct pgc_ctx *c, int status, const struct pgc_controldata *cd,
                                 const char *why)
{
    struct demote *d = (struct demote *)c;
    struct unit *u = &d->units[d->u];
    char a[PG_ASYNC_LSN_STRLEN], b[PG_ASYNC_LSN_STRLEN];
    if (status < 0) {
        pgc_done(c, status, "pg_controldata on %s failed: %s", u->local.data_dir, why);
        return;
    }
    if (u->srv->obs.err < 0 && !pgc_controldata_clean(cd)) {
        pgc_done(c, 0, "%s is down but was not shut down cleanly (%s)", u->srv->label, cd->state);
        return;
    }
    for (size_t i = 0; i < u->n_tgts; i++) {
        uint64_t pos = target_pos(&u->tgts[i]->obs);
        if (pos <= cd->checkpoint_lsn) {
            pgc_done(c, 0, "%s has not replayed past %s's last checkpoint %s (it is at %s)",
                     u->tgts[i]->label, u->srv->label, pgc_lsn_str(cd->checkpoint_lsn, a, sizeof a),
                     pgc_lsn_str(pos, b, sizeof b));
            return;
        }
    }
    d->u++;
    check_next(d);
}

static void on_check(struct pgc_ctx *c)
{
    struct demote *d = (struct demote *)c;
    struct unit *u = &d->units[d->u];
    const struct pgc_obs *so = &u->srv->obs;
    bool target_primary = false;
    for (size_t i = 0; i < u->n_tgts; i++) {
        const struct pgc_obs *o = &u->tgts[i]->obs;
        if (o->err < 0) {
            pgc_done(c, o->err, "cannot reach the target %s: %s", u->tgts[i]->label, o->detail);
            return;
        }
        target_primary |= !o->in_recovery;
    }
    if (so->err == 0 && !so->in_recovery) {
        pgc_done(c, 0, "%s is a primary", u->srv->label);
        return;
    }
    if (so->err == 0 && target_primary) {
        d->u++; /* the roles have swapped */
        check_next(d);
        return;
    }
    int rc = pgc_read_controldata(c, &u->local, on_check_controldata);
    if (rc < 0)
        pgc_done(c, rc, "cannot run pg_controldata: %s", strerror(-rc));
}

static void check_next(struct demote *d)
{
    if (d->u >= d->n_units) {
        pgc_done(&d->c, 1, "%s is down or a replica and %s replayed past its last checkpoint",
                 d->site, d->target);
        return;
    }
    set_watch(d, &d->units[d->u], true);
    pgc_observe(&d->c, d->watch, d->n_watch, on_check);
}

static void check(struct rb_exec *x)
{
    struct demote *d = start(x);
    if (!d)
        return;
    check_next(d);
}

static void describe(struct rb_exec *x, struct buf *out)
{
    const char *site = json_string_value(json_object_get(x->params, "site"));
    const char *target = json_string_value(json_object_get(x->params, "target"));
    buf_printf(out,
               "shut down the primary in %s cleanly, wait until %s replayed its final "
               "checkpoint%s",
               site ? site : "?", target ? target : "?",
               json_is_false(json_object_get(x->params, "restart_as_replica"))
                   ? ""
                   : ", restart it as a replica");
}

const struct rb_action_ops rb_action_pg_demote = {
    .name = "pg.demote",
    .summary = "demote the primary cleanly for a switchover",
    .params = params,
    .default_timeout_ms = 300000,
    .validate = validate,
    .describe = describe,
    .check = check,
    .run = run,
    .cancel = pgc_cancel,
    .release = pgc_release,
    .runs_on = "site",
};
