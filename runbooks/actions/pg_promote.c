/* Action `pg.promote`: promote a site's replicas of a database group,
 * refusing (or asking) when another replica is further ahead.
 *
 * run, for every cluster of the group (an instance shared by several
 * clusters is promoted once):
 *   1. observe every member: the target must answer; the old primary, when
 *      it answers, must be read-only (fenced) or a replica, and no other
 *      member may be a primary; a replica's position is the furthest of
 *      what it received (flushed) and replayed.
 *   2. the target behind another replica: refuse (-EAGAIN with the
 *      numbers), catch up, ask an operator, or go on (if_behind). Catching
 *      up points the target's wal receiver at the replica ahead of it
 *      (primary_conninfo, no slot, reload: it streams from it as from a
 *      cascading standby) until it has what that replica has, then weighs
 *      everything again; when it cannot within catch_up_timeout, an
 *      operator is asked (and the target stays pointed at that replica,
 *      which pg.follow changes); further than
 *      max_lag behind the best known position: refuse. The RPO is measured
 *      against the old primary's last known LSN: from the old primary
 *      itself when it answers, else from the daemon's last probe of it,
 *      else only a lower bound (the best replica's position).
 *   3. a target whose triad.epochs holds a newer epoch than the run's: refuse
 *      (a newer decision exists).
 *   4. wait until the target replayed what it received (a paused replay
 *      never does: that ends in a timeout that says so; a last record left
 *      incomplete by the lost primary is accepted once replay stops moving).
 *   5. pg_promote(wait => true); verify it left recovery; CHECKPOINT (so its
 *      control file shows the new timeline, which pg_rewind reads later).
 *   6. accepts writes: a fence's default_transaction_read_only is reset.
 *   7. the epoch and run id go into triad.epochs in every database of the
 *      group on the new primary (schema and table created when missing),
 *      committed with synchronous_commit = local: no replica follows the new
 *      primary yet, so a synchronous commit would wait forever.
 * check: every target is a primary, is not read-only, and triad.epochs
 * holds an epoch >= the run's. A target that is already a primary is never
 * an error: run then only makes sure of steps 6 and 7 ("already done").
 * ready: every target answers, is a streaming replica, and (max_lag) its
 * replay is within max_lag of what the primary last reported. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/loop.h"
#include "lib/units.h"
#include "probes/probe.h"
#include "runbooks/actions/actions.h"
#include "runbooks/actions/pg_common.h"

static const struct rb_param_spec params[] = {
    { "group", RB_P_STRING, false, "database group (postgres.groups)" },
    { "cluster", RB_P_STRING, false, "or one PostgreSQL cluster (postgres.clusters)" },
    { "site", RB_P_STRING, true, "the site whose replica becomes primary" },
    { "if_behind", RB_P_STRING, false,
      "when another replica is further ahead: refuse (default), catch_up (stream the missing "
      "WAL from it first; ask when that fails), ask or ignore" },
    { "catch_up_timeout", RB_P_DURATION, false,
      "how long catch_up may take before asking (default 30s)" },
    { "max_lag", RB_P_SIZE, false, "refuse when the target is further behind than this" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    static const char *const sites[] = { "site", NULL };
    static const char *const behind[] = { "refuse", "catch_up", "ask", "ignore", NULL };
    act_need_site(v, "site");
    act_need_db_target(v, sites);
    act_need_enum(v, "if_behind", behind);
}

/* How long replay may stand still short of what was received before the
 * rest is taken for an incomplete last record. */
#define STALL_MS 1000

struct promote {
    struct pgc_ctx c; /* first */
    enum rb_op op;
    const char *site;
    const char *old; /* the old primary's site, or NULL */
    const char *if_behind;
    bool has_max_lag;
    uint64_t max_lag;
    struct pgc_node *targets[PGC_MAX_NODES];
    size_t n_targets;
    struct pgc_node *all[PGC_MAX_NODES]; /* every instance of the clusters */
    size_t n_all;
    struct pgc_node *dbs[PGC_MAX_NODES]; /* the target's databases (epochs) */
    size_t n_dbs;
    size_t i;
    bool already;  /* every target was a primary before we started */
    bool promoted; /* we promoted at least one */
    int64_t max_epoch_seen;
    pgc_fn after_epochs;
    /* catching up */
    uint64_t last_replay;
    int64_t stalled_since;
    bool short_record;
    int ro_polls;
    /* catch_up: each target behind, and the replica ahead of it */
    struct catch_src {
        struct pgc_node *t;
        const struct pgc_node *src;
        uint64_t lsn; /* what src has */
    } catch_[PGC_MAX_NODES];
    size_t n_catch, catch_i;
    int catch_stage;
    bool catch_tried;
    int64_t catch_deadline;
    uint64_t catch_timeout_ms;
    struct buf sql;   /* carries the replication password: wiped */
    struct buf notes; /* for the final detail */
};

static const char *param_str(struct rb_exec *x, const char *name)
{
    return json_string_value(json_object_get(x->params, name));
}

/* How far a replica got: the furthest of received (flushed) and replayed. */
static uint64_t position(const struct pgc_obs *o)
{
    uint64_t p = o->has_replay ? o->replay_lsn : 0;
    if (o->has_receive && o->receive_lsn > p)
        p = o->receive_lsn;
    return p;
}

static void lsn_json(json_t *obj, const char *key, uint64_t lsn)
{
    char s[PG_ASYNC_LSN_STRLEN];
    json_object_set_new(obj, key, json_string(pgc_lsn_str(lsn, s, sizeof s)));
}

static void add_note(struct promote *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_note(struct promote *p, const char *fmt, ...)
{
    va_list ap;
    if (p->notes.len)
        buf_append_str(&p->notes, "; ");
    va_start(ap, fmt);
    buf_vprintf(&p->notes, fmt, ap);
    va_end(ap);
}

static void cleanup(struct pgc_ctx *c)
{
    struct promote *p = (struct promote *)c;
    buf_free(&p->notes);
    if (p->sql.data)
        explicit_bzero(p->sql.data, p->sql.alloc);
    buf_free(&p->sql);
}

static struct promote *start(struct rb_exec *x, enum rb_op op)
{
    struct promote *p = calloc(1, sizeof *p);
    if (!p) {
        rb_exec_done(x, -ENOMEM, "out of memory");
        return NULL;
    }
    buf_init(&p->notes, 2048);
    buf_init(&p->sql, 8192);
    p->c.cleanup = cleanup;
    p->op = op;
    if (pgc_init(&p->c, x) < 0)
        return NULL;
    p->site = param_str(x, "site");
    p->if_behind = param_str(x, "if_behind") ? param_str(x, "if_behind") : "refuse";
    json_t *cu = json_object_get(x->params, "catch_up_timeout");
    p->catch_timeout_ms = json_is_integer(cu) ? (uint64_t)json_integer_value(cu) : 30000;
    json_t *ml = json_object_get(x->params, "max_lag");
    if (json_is_integer(ml)) {
        p->has_max_lag = true;
        p->max_lag = (uint64_t)json_integer_value(ml);
    }
    p->old = pgc_old_primary(&p->c, p->site);
    p->n_targets = pgc_site_nodes(&p->c, p->site, p->targets, PGC_MAX_NODES);
    if (!p->n_targets) {
        pgc_done(&p->c, -EINVAL, "no PostgreSQL member of these clusters in %s", p->site);
        return NULL;
    }
    for (size_t k = 0; k < p->c.n_clusters; k++) {
        struct pgc_node *d = pgc_node_get(&p->c, p->c.clusters[k], p->site, PGC_AS_TRIAD, true);
        bool seen = false;
        for (size_t j = 0; d && j < p->n_dbs; j++)
            seen |= p->dbs[j] == d;
        if (d && !seen)
            p->dbs[p->n_dbs++] = d;
    }
    for (size_t s = 0; s < p->c.cfg->n_sites; s++) {
        struct pgc_node *n[PGC_MAX_NODES];
        size_t k = pgc_site_nodes(&p->c, p->c.cfg->sites[s].name, n, PGC_MAX_NODES);
        for (size_t j = 0; j < k && p->n_all < PGC_MAX_NODES; j++) {
            bool seen = false;
            for (size_t i = 0; i < p->n_all; i++)
                seen |= p->all[i] == n[j];
            if (!seen)
                p->all[p->n_all++] = n[j];
        }
    }
    return p;
}

static const char *targets_label(struct promote *p, char *out, size_t len)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t k = 0; k < p->n_targets && o < len; k++) {
        int w = snprintf(out + o, len - o, "%s%s", k ? ", " : "", p->targets[k]->label);
        if (w < 0)
            break;
        o += (size_t)w;
    }
    return out;
}

/* --- epochs ------------------------------------------------------------------------------ */

/* Reading: to_regclass first, since a missing table is no error here. */
static void read_epoch_next(struct promote *p);

static void on_epoch_read(struct pgc_node *n, struct pg_async_result *r)
{
    struct promote *p = (struct promote *)n->c;
    if (r->status < 0) {
        pgc_done(&p->c, r->status, "cannot read triad.epochs on %s (%s): %s", n->label, n->dbname,
                 r->detail);
        return;
    }
    int64_t v = 0;
    if (n->stage == 0) {
        bool exists = false;
        pg_async_get_bool(r->res, 0, 0, &exists);
        if (exists) {
            n->stage = 1;
            if (pgc_query(n, "SELECT coalesce(max(epoch), 0) FROM triad.epochs", 0, NULL,
                          on_epoch_read) < 0)
                pgc_done(&p->c, -EIO, "cannot query %s", n->label);
            return;
        }
    } else {
        pg_async_get_int64(r->res, 0, 0, &v);
    }
    n->value = v;
    if (v > p->max_epoch_seen)
        p->max_epoch_seen = v;
    p->i++;
    read_epoch_next(p);
}

static void read_epoch_next(struct promote *p)
{
    if (p->i >= p->n_dbs) {
        p->after_epochs(&p->c);
        return;
    }
    struct pgc_node *n = p->dbs[p->i];
    n->stage = 0;
    int rc = pgc_query(n, "SELECT to_regclass('triad.epochs') IS NOT NULL", 0, NULL, on_epoch_read);
    if (rc < 0)
        pgc_done(&p->c, rc, "cannot query %s: %s", n->label, strerror(-rc));
}

static void read_epochs(struct promote *p, pgc_fn then)
{
    p->after_epochs = then;
    p->i = 0;
    p->max_epoch_seen = 0;
    read_epoch_next(p);
}

/* Writing, in each database of the group on the new primary. */
static const char *const epoch_sql[] = {
    "SELECT set_config('synchronous_commit', 'local', false)",
    "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'triad')",
    "CREATE SCHEMA triad",
    "CREATE TABLE IF NOT EXISTS triad.epochs ("
    " epoch bigint PRIMARY KEY, run_id text NOT NULL, site text NOT NULL,"
    " timeline integer, lsn pg_lsn, written_at timestamptz NOT NULL DEFAULT now())",
    "INSERT INTO triad.epochs (epoch, run_id, site, timeline, lsn)"
    " VALUES ($1::bigint, $2, $3, nullif($4, '0')::integer, pg_current_wal_lsn())"
    " ON CONFLICT (epoch) DO NOTHING",
    "SELECT coalesce(max(epoch), 0) FROM triad.epochs",
};

static void write_epoch_next(struct promote *p);
static void finish_run(struct promote *p);

static void epoch_step(struct pgc_node *n);

static void on_epoch_write(struct pgc_node *n, struct pg_async_result *r)
{
    struct promote *p = (struct promote *)n->c;
    if (r->status < 0) {
        const char *hint = strcmp(r->sqlstate, "42501") == 0
                               ? " (the role needs a schema `triad` it owns, or CREATE on the "
                                 "database)"
                               : "";
        pgc_done(&p->c, r->status, "cannot record epoch %lld in %s on %s: %s%s",
                 (long long)p->c.x->epoch, n->dbname, n->label, r->detail, hint);
        return;
    }
    switch (n->stage) {
    case 1: {
        bool exists = false;
        pg_async_get_bool(r->res, 0, 0, &exists);
        n->stage = exists ? 3 : 2;
        break;
    }
    case 5: {
        int64_t v = 0;
        pg_async_get_int64(r->res, 0, 0, &v);
        n->value = v;
        if (v < p->c.x->epoch) {
            pgc_done(&p->c, -EPROTO, "triad.epochs in %s on %s holds %lld after writing %lld",
                     n->dbname, n->label, (long long)v, (long long)p->c.x->epoch);
            return;
        }
        p->i++;
        write_epoch_next(p);
        return;
    }
    default:
        n->stage++;
    }
    epoch_step(n);
}

static void epoch_step(struct pgc_node *n)
{
    struct promote *p = (struct promote *)n->c;
    struct rb_exec *x = p->c.x;
    char epoch[24], tl[24];
    snprintf(epoch, sizeof epoch, "%lld", (long long)x->epoch);
    /* The instance's timeline, from the target observed for this database. */
    int64_t timeline = 0;
    for (size_t k = 0; k < p->n_targets; k++) {
        if (p->targets[k]->member == n->member)
            timeline = p->targets[k]->obs.timeline;
    }
    snprintf(tl, sizeof tl, "%lld", (long long)timeline);
    const char *args[] = { epoch, x->run_id ? x->run_id : "", p->site, tl };
    int np = n->stage == 4 ? 4 : 0;
    int rc = pgc_query(n, epoch_sql[n->stage], np, args, on_epoch_write);
    if (rc < 0)
        pgc_done(&p->c, rc, "cannot query %s: %s", n->label, strerror(-rc));
}

static void write_epoch_next(struct promote *p)
{
    if (p->i >= p->n_dbs) {
        finish_run(p);
        return;
    }
    struct pgc_node *n = p->dbs[p->i];
    n->stage = 0;
    epoch_step(n);
}

static void finish_run(struct promote *p)
{
    struct rb_exec *x = p->c.x;
    char tl[64] = "", names[400];
    size_t o = 0;
    for (size_t k = 0; k < p->n_targets && o < sizeof tl; k++) {
        int w = snprintf(tl + o, sizeof tl - o, "%s%lld", k ? "," : "",
                         (long long)p->targets[k]->obs.timeline);
        if (w > 0)
            o += (size_t)w;
    }
    json_object_set_new(x->result, "timeline",
                        json_integer((json_int_t)p->targets[0]->obs.timeline));
    json_object_set_new(x->result, "epoch", json_integer((json_int_t)x->epoch));
    json_object_set_new(x->result, "already_done", json_boolean(p->already));
    const char *sync = p->targets[0]->obs.sync_names;
    if (sync[0] && !p->already)
        add_note(p, "commits wait for a synchronous standby (%s) until a replica follows", sync);
    targets_label(p, names, sizeof names);
    if (p->already)
        pgc_done(&p->c, 0,
                 "already done: %s is already primary (timeline %s), accepts writes; "
                 "epoch %lld recorded%s%s",
                 names, tl, (long long)x->epoch, p->notes.len ? "; " : "",
                 p->notes.len ? p->notes.data : "");
    else
        pgc_done(&p->c, 0, "promoted %s to timeline %s, accepts writes; epoch %lld recorded%s%s",
                 names, tl, (long long)x->epoch, p->notes.len ? "; " : "",
                 p->notes.len ? p->notes.data : "");
}

/* --- accepting writes --------------------------------------------------------------------- */

static void writable_observe(struct pgc_ctx *c);

static void on_reset(struct pgc_node *n, struct pg_async_result *r)
{
    struct promote *p = (struct promote *)n->c;
    if (r->status < 0) {
        pgc_done(&p->c, r->status, "cannot lift the read-only setting on %s: %s", n->label,
                 r->detail);
        return;
    }
    if (n->stage == 0) {
        n->stage = 1;
        if (pgc_query(n, "SELECT pg_reload_conf()", 0, NULL, on_reset) < 0)
            pgc_done(&p->c, -EIO, "cannot query %s", n->label);
        return;
    }
    n->flag = true;
    add_note(p, "lifted default_transaction_read_only on %s", n->label);
    /* A new session sees the reloaded setting. */
    pgc_disconnect(n);
    p->i++;
    writable_observe(&p->c);
}

static void on_writable(struct pgc_ctx *c)
{
    struct promote *p = (struct promote *)c;
    for (size_t k = 0; k < p->n_targets; k++) {
        struct pgc_node *n = p->targets[k];
        if (n->obs.err < 0) {
            pgc_done(c, n->obs.err, "%s stopped answering: %s", n->label, n->obs.detail);
            return;
        }
        if (n->obs.in_recovery) {
            pgc_done(c, -EPROTO, "%s is in recovery again", n->label);
            return;
        }
        if (!n->obs.read_only)
            continue;
        if (!n->flag) {
            n->stage = 0;
            if (pgc_query(n, "ALTER SYSTEM RESET default_transaction_read_only", 0, NULL,
                          on_reset) < 0)
                pgc_done(c, -EIO, "cannot query %s", n->label);
            return;
        }
        /* Reset and reloaded but still read-only: wait for the reload a
         * little, then say where the setting must come from. */
        if (++p->ro_polls > 25) {
            pgc_done(c, -EPERM,
                     "%s stays read-only after ALTER SYSTEM RESET default_transaction_read_only "
                     "and a reload: it is set elsewhere (postgresql.conf, the role or the "
                     "database)",
                     n->label);
            return;
        }
        pgc_disconnect(n);
        pgc_later(c, PGC_POLL_MS, writable_observe);
        return;
    }
    p->i = 0;
    write_epoch_next(p);
}

static void writable_observe(struct pgc_ctx *c)
{
    struct promote *p = (struct promote *)c;
    pgc_observe(c, p->targets, p->n_targets, on_writable);
}

/* --- promotion ---------------------------------------------------------------------------- */

static void checkpoint_next(struct promote *p);

static void on_checkpoint(struct pgc_node *n, struct pg_async_result *r)
{
    struct promote *p = (struct promote *)n->c;
    if (r->status < 0)
        add_note(p, "CHECKPOINT on %s failed (%s): pg_rewind may not see the new timeline yet",
                 n->label, r->detail);
    p->i++;
    checkpoint_next(p);
}

static void checkpoint_next(struct promote *p)
{
    while (p->i < p->n_targets && !p->targets[p->i]->flag)
        p->i++;
    if (p->i >= p->n_targets) {
        for (size_t k = 0; k < p->n_targets; k++)
            p->targets[k]->flag = false;
        p->ro_polls = 0;
        writable_observe(&p->c);
        return;
    }
    struct pgc_node *n = p->targets[p->i];
    if (pgc_query_long(n, "CHECKPOINT", on_checkpoint) < 0) {
        p->i++;
        checkpoint_next(p);
    }
}

static void on_verified(struct pgc_ctx *c)
{
    struct promote *p = (struct promote *)c;
    for (size_t k = 0; k < p->n_targets; k++) {
        struct pgc_node *n = p->targets[k];
        if (n->obs.err < 0) {
            pgc_done(c, n->obs.err, "%s stopped answering after pg_promote: %s", n->label,
                     n->obs.detail);
            return;
        }
        if (n->obs.in_recovery) {
            pgc_done(c, -EPROTO, "%s is still in recovery after pg_promote", n->label);
            return;
        }
    }
    p->i = 0;
    checkpoint_next(p);
}

static void promote_next(struct promote *p);

static void on_promote(struct pgc_node *n, struct pg_async_result *r)
{
    struct promote *p = (struct promote *)n->c;
    n->timeout_ms = 0; /* back to the default for what follows */
    if (r->status < 0 && strcmp(r->sqlstate, "55000") == 0) {
        add_note(p, "%s was already promoted", n->label); /* meanwhile: fine */
    } else if (r->status < 0) {
        pgc_done(&p->c, r->status, "pg_promote on %s failed: %s", n->label, r->detail);
        return;
    } else {
        bool ok = false;
        pg_async_get_bool(r->res, 0, 0, &ok);
        if (!ok) {
            pgc_done(&p->c, -ETIMEDOUT, "%s did not finish promoting within %lld s", n->label,
                     (long long)n->value);
            return;
        }
        p->promoted = true;
    }
    n->flag = true; /* promoted by this run: checkpoint it */
    p->i++;
    promote_next(p);
}

static void promote_next(struct promote *p)
{
    while (p->i < p->n_targets && !p->targets[p->i]->obs.in_recovery)
        p->i++;
    if (p->i >= p->n_targets) {
        pgc_observe(&p->c, p->targets, p->n_targets, on_verified);
        return;
    }
    struct pgc_node *n = p->targets[p->i];
    int64_t left = pgc_left_ms(&p->c) / 1000;
    n->value = left < 1 ? 1 : left > 60 ? 60 : left;
    n->timeout_ms = (uint32_t)(n->value * 1000 + 5000);
    char secs[24];
    snprintf(secs, sizeof secs, "%lld", (long long)n->value);
    const char *args[] = { secs };
    int rc = pgc_query(n, "SELECT pg_promote(true, $1::integer)", 1, args, on_promote);
    if (rc < 0)
        pgc_done(&p->c, rc, "cannot query %s: %s", n->label, strerror(-rc));
}

/* --- catching up ---------------------------------------------------------------------------- */

static void catchup(struct pgc_ctx *c);
static void on_confirm(struct rb_exec *x, bool approved, const char *who, void *arg);
static void on_observed_run(struct pgc_ctx *c);

static void on_catchup(struct pgc_ctx *c)
{
    struct promote *p = (struct promote *)c;
    int64_t now = (int64_t)uv_now(c->x->env->loop);
    const struct pgc_node *lag = NULL;
    uint64_t left = 0;
    for (size_t k = 0; k < p->n_targets; k++) {
        const struct pgc_node *n = p->targets[k];
        const struct pgc_obs *o = &n->obs;
        if (o->err < 0) {
            pgc_done(c, o->err, "%s stopped answering while catching up: %s", n->label, o->detail);
            return;
        }
        if (!o->in_recovery)
            continue;
        uint64_t behind =
            o->has_receive && o->has_replay ? pgc_lsn_behind(o->replay_lsn, o->receive_lsn) : 0;
        if (behind > left) {
            left = behind;
            lag = n;
        }
    }
    if (!lag) {
        p->i = 0;
        promote_next(p);
        return;
    }
    const struct pgc_obs *o = &lag->obs;
    bool paused = o->pause_state[0] && strcmp(o->pause_state, "not paused") != 0;
    /* The lost primary may have left a last record incomplete: replay then
     * stops short of what was received, for good. */
    if (o->replay_lsn != p->last_replay || paused || strcmp(o->wr_status, "streaming") == 0) {
        p->last_replay = o->replay_lsn;
        p->stalled_since = now;
    } else if (now - p->stalled_since >= STALL_MS) {
        char sz[32], a[PG_ASYNC_LSN_STRLEN];
        pgc_bytes_str(left, sz, sizeof sz);
        add_note(p,
                 "%s replay stopped at %s, %s short of what it received (an incomplete last "
                 "record)",
                 lag->label, pgc_lsn_str(o->replay_lsn, a, sizeof a), sz);
        p->i = 0;
        promote_next(p);
        return;
    }
    if (pgc_left_ms(c) <= 0) {
        char sz[32], a[PG_ASYNC_LSN_STRLEN], b[PG_ASYNC_LSN_STRLEN];
        pgc_bytes_str(left, sz, sizeof sz);
        pgc_done(c, -ETIMEDOUT,
                 "%s did not replay what it received in time: replayed %s of %s (%s left)%s; "
                 "not promoted",
                 lag->label, pgc_lsn_str(o->replay_lsn, a, sizeof a),
                 pgc_lsn_str(o->receive_lsn, b, sizeof b), sz,
                 paused ? "; its replay is paused (pg_wal_replay_pause): resume it with "
                          "pg_wal_replay_resume()"
                        : "");
        return;
    }
    pgc_later(c, PGC_POLL_MS, catchup);
}

static void catchup(struct pgc_ctx *c)
{
    struct promote *p = (struct promote *)c;
    pgc_observe(c, p->targets, p->n_targets, on_catchup);
}

/* --- fetching what another replica has (if_behind: catch_up) -------------------------------- */

/* A target behind the replica src (which has up to lsn): remembered once
 * per target instance, with the furthest source. */
static void add_catch(struct promote *p, struct pgc_node *t, const struct pgc_node *src,
                      uint64_t lsn)
{
    for (size_t i = 0; i < p->n_catch; i++) {
        if (p->catch_[i].t == t) {
            if (lsn > p->catch_[i].lsn) {
                p->catch_[i].src = src;
                p->catch_[i].lsn = lsn;
            }
            return;
        }
    }
    if (p->n_catch < PGC_MAX_NODES)
        p->catch_[p->n_catch++] = (struct catch_src){ .t = t, .src = src, .lsn = lsn };
}

static void ask_behind(struct promote *p, const char *q)
{
    struct rb_exec *x = p->c.x;
    if (!x->env->confirm) {
        pgc_done(&p->c, -EAGAIN, "%s; nobody to ask here: not promoted", q);
        return;
    }
    char question[1500];
    snprintf(question, sizeof question, "%s; promote anyway, losing what it lacks?", q);
    x->env->confirm(x->env, x, question, on_confirm, p);
}

/* catch_up gave up: the operator decides (the question says why). */
static void catch_up_failed(struct promote *p, const char *why)
{
    char q[1400];
    const char *behind = json_string_value(json_object_get(p->c.x->result, "question"));
    snprintf(q, sizeof q, "could not fetch the missing WAL (%s); %s", why, behind ? behind : "");
    json_object_set_new(p->c.x->result, "catch_up", json_string(why));
    ask_behind(p, q);
}

static void catch_up_observe(struct pgc_ctx *c);

static void on_catch_up_observed(struct pgc_ctx *c)
{
    struct promote *p = (struct promote *)c;
    char a[PG_ASYNC_LSN_STRLEN], b[PG_ASYNC_LSN_STRLEN], why[700];
    const struct catch_src *late = NULL;
    for (size_t i = 0; i < p->n_catch; i++) {
        const struct catch_src *k = &p->catch_[i];
        const struct pgc_obs *o = &k->t->obs;
        if (o->err < 0) {
            pgc_done(c, o->err, "%s stopped answering while fetching WAL from %s: %s", k->t->label,
                     k->src->label, o->detail);
            return;
        }
        if (!o->in_recovery) {
            pgc_done(c, -EEXIST, "%s left recovery while fetching WAL: not promoting it",
                     k->t->label);
            return;
        }
        if (position(o) < k->lsn && !late)
            late = k;
    }
    if (!late) {
        /* Everything is weighed again (positions, RPO) from what it has now. */
        buf_reset(&p->notes);
        for (size_t i = 0; i < p->n_catch; i++) {
            const struct catch_src *k = &p->catch_[i];
            add_note(p, "%s fetched the WAL it lacked from %s (up to %s)", k->t->label,
                     k->src->label, pgc_lsn_str(k->lsn, a, sizeof a));
        }
        json_object_set_new(c->x->result, "catch_up", json_string("done"));
        json_object_del(c->x->result, "question");
        /* The old primary did not answer a moment ago (the fence step came
         * first): asking again would only wait out its connect timeout,
         * seconds of RTO. What it said (nothing) stands. */
        struct pgc_node *again[PGC_MAX_NODES];
        size_t n = 0;
        for (size_t j = 0; j < p->n_all; j++) {
            struct pgc_node *m = p->all[j];
            if (!(m->obs.err < 0 && p->old && !strcmp(m->site, p->old)))
                again[n++] = m;
        }
        pgc_observe(c, again, n, on_observed_run);
        return;
    }
    if ((int64_t)uv_now(c->x->env->loop) >= p->catch_deadline || pgc_left_ms(c) <= 0) {
        const struct pgc_obs *o = &late->t->obs;
        snprintf(why, sizeof why, "%s reached %s of %s from %s in %llu ms (wal receiver: %s%s%s)",
                 late->t->label, pgc_lsn_str(position(o), a, sizeof a),
                 pgc_lsn_str(late->lsn, b, sizeof b), late->src->label,
                 (unsigned long long)p->catch_timeout_ms, o->wr_status[0] ? o->wr_status : "none",
                 o->sender_host[0] ? " from " : "", o->sender_host);
        catch_up_failed(p, why);
        return;
    }
    pgc_later(c, PGC_POLL_MS, catch_up_observe);
}

static void catch_up_observe(struct pgc_ctx *c)
{
    struct promote *p = (struct promote *)c;
    pgc_observe(c, p->targets, p->n_targets, on_catch_up_observed);
}

static void catch_up_step(struct promote *p);

static void on_catch_up_set(struct pgc_node *n, struct pg_async_result *r)
{
    struct promote *p = (struct promote *)n->c;
    if (p->sql.data)
        explicit_bzero(p->sql.data, p->sql.alloc);
    buf_reset(&p->sql);
    if (r->status < 0) {
        char why[400];
        static const char *const what[] = { "setting primary_conninfo",
                                            "clearing primary_slot_name", "reloading" };
        snprintf(why, sizeof why, "%s on %s failed: %s", what[p->catch_stage], n->label, r->detail);
        catch_up_failed(p, why);
        return;
    }
    if (++p->catch_stage > 2) {
        p->catch_stage = 0;
        p->catch_i++;
    }
    catch_up_step(p);
}

/* Points each target's wal receiver at the replica that is ahead of it (no
 * slot: a replica's slots are not its upstream's), then waits until each
 * has received what its source has. The source is a standby on the same
 * timeline: PostgreSQL streams from it as from a cascading standby. */
static void catch_up_step(struct promote *p)
{
    if (p->catch_i >= p->n_catch) {
        p->catch_deadline = (int64_t)uv_now(p->c.x->env->loop) + (int64_t)p->catch_timeout_ms;
        catch_up_observe(&p->c);
        return;
    }
    const struct catch_src *k = &p->catch_[p->catch_i];
    char why[300];
    int rc = 0;
    buf_reset(&p->sql);
    switch (p->catch_stage) {
    case 0: {
        struct buf ci;
        buf_init(&ci, 4096);
        rc = pgc_replica_conninfo(p->c.cfg, k->src->member, k->t->site, &ci, why, sizeof why);
        if (rc == 0)
            rc = buf_append_str(&p->sql, "ALTER SYSTEM SET primary_conninfo = ");
        if (rc == 0)
            rc = pgc_sql_literal(&p->sql, ci.data);
        if (ci.data)
            explicit_bzero(ci.data, ci.alloc);
        buf_free(&ci);
        if (rc < 0 && why[0]) {
            catch_up_failed(p, why);
            return;
        }
        break;
    }
    case 1:
        rc = buf_append_str(&p->sql, "ALTER SYSTEM SET primary_slot_name = ''");
        break;
    default:
        rc = buf_append_str(&p->sql, "SELECT pg_reload_conf()");
    }
    if (rc == 0)
        rc = pgc_query(k->t, p->sql.data, 0, NULL, on_catch_up_set);
    if (rc < 0)
        pgc_done(&p->c, rc, "cannot repoint %s at %s: %s", k->t->label, k->src->label,
                 strerror(-rc));
}

static void catch_up_start(struct promote *p)
{
    char a[PG_ASYNC_LSN_STRLEN];
    for (size_t i = 0; i < p->n_catch; i++) {
        const struct catch_src *k = &p->catch_[i];
        log_ev(LOG_INFO, "+catch-up",
               "pg.promote: fetching the WAL the target lacks from a replica ahead",
               { "target", k->t->label }, { "from", k->src->label },
               { "upto", pgc_lsn_str(k->lsn, a, sizeof a) });
    }
    p->catch_tried = true;
    p->catch_i = 0;
    p->catch_stage = 0;
    catch_up_step(p);
}

/* --- the decision --------------------------------------------------------------------------- */

static void on_confirm(struct rb_exec *x, bool approved, const char *who, void *arg)
{
    struct promote *p = arg;
    if (p->c.over || x->cancelled)
        return;
    if (!approved) {
        pgc_done(&p->c, -EAGAIN,
                 "not promoted: promoting a replica that is behind was not "
                 "confirmed (%s)",
                 who ? who : "nobody");
        return;
    }
    json_object_set_new(x->result, "behind_confirmed_by", json_string(who ? who : ""));
    add_note(p, "promoted although behind (confirmed by %s)", who ? who : "?");
    p->stalled_since = (int64_t)uv_now(x->env->loop);
    catchup(&p->c);
}

/* The old primary's LSN as this daemon's probe last saw it answer, and how
 * long ago (writes committed after that are not counted: the figure is a
 * lower bound off by at most one probe interval of writes). */
static bool probe_lsn(struct promote *p, const struct pgc_node *old, uint64_t *out, int64_t *age_ms)
{
    struct rb_env *env = p->c.x->env;
    if (!env->probe || !p->old)
        return false;
    const struct probe *pr = env->probe(env, p->old, "postgres");
    if (!pr || !pr->last_ok_fields || !pr->cfg->cluster)
        return false;
    const struct cfg_pg_cluster *cl = config_pg_cluster(p->c.cfg, pr->cfg->cluster);
    const struct cfg_member *m = cl ? config_pg_member(cl, p->old) : NULL;
    if (!m || m != old->member)
        return false;
    const char *s = json_string_value(json_object_get(pr->last_ok_fields, "current_lsn"));
    *age_ms = loop_now_ms() - pr->last_ok_at_ms;
    return s && pg_async_lsn_parse(s, out) == 0;
}

static void after_epochs_read_run(struct pgc_ctx *c)
{
    struct promote *p = (struct promote *)c;
    struct rb_exec *x = c->x;
    if (p->max_epoch_seen > x->epoch) {
        pgc_done(c, -ESTALE,
                 "not promoted: triad.epochs on %s holds epoch %lld, newer than this run's %lld "
                 "(a newer decision exists)",
                 p->targets[0]->label, (long long)p->max_epoch_seen, (long long)x->epoch);
        return;
    }
    if (p->already) {
        p->ro_polls = 0;
        writable_observe(c);
        return;
    }
    p->stalled_since = (int64_t)uv_now(x->env->loop);
    json_t *behind = json_object_get(x->result, "behind_bytes");
    if (json_integer_value(behind) > 0) {
        const char *q = json_string_value(json_object_get(x->result, "question"));
        if (!strcmp(p->if_behind, "catch_up")) {
            if (p->catch_tried)
                catch_up_failed(p, "still behind after fetching");
            else
                catch_up_start(p);
            return;
        }
        if (!strcmp(p->if_behind, "ask")) {
            ask_behind(p, q);
            return;
        }
        if (strcmp(p->if_behind, "ignore") != 0) {
            pgc_done(c, -EAGAIN, "not promoted: %s (if_behind: refuse)", q);
            return;
        }
        add_note(p, "promoted although %s (if_behind: ignore)", q);
    }
    catchup(c);
}

static void on_observed_run(struct pgc_ctx *c)
{
    struct promote *p = (struct promote *)c;
    struct rb_exec *x = c->x;
    char a[PG_ASYNC_LSN_STRLEN], b[PG_ASYNC_LSN_STRLEN], sz[32];
    size_t primaries = 0;
    for (size_t k = 0; k < p->n_targets; k++) {
        struct pgc_node *n = p->targets[k];
        if (n->obs.err < 0) {
            pgc_done(c, n->obs.err, "cannot reach the target %s: %s", n->label, n->obs.detail);
            return;
        }
        primaries += !n->obs.in_recovery;
    }
    p->already = primaries == p->n_targets;
    if (p->already) {
        /* Lifting a read-only target while another member takes writes
         * would split the cluster (a newer decision may have fenced it). */
        for (size_t k = 0; k < p->n_targets; k++) {
            if (!p->targets[k]->obs.read_only)
                continue;
            for (size_t j = 0; j < p->n_all; j++) {
                const struct pgc_node *n = p->all[j];
                if (n != p->targets[k] && n->obs.err == 0 && !n->obs.in_recovery &&
                    !n->obs.read_only) {
                    pgc_done(c, -EEXIST,
                             "%s is a read-only primary while %s accepts writes: not lifting it",
                             p->targets[k]->label, n->label);
                    return;
                }
            }
        }
    }
    json_t *cands = json_object();
    json_object_set_new(x->result, "candidates", cands);
    p->n_catch = 0;
    uint64_t worst_behind = 0, worst_lag = 0, target_lsn = 0;
    bool rpo_known = true, rpo_any = false;
    uint64_t rpo = 0;
    const char *basis = NULL;
    char question[512] = "", basis_buf[128];
    for (size_t k = 0; k < p->c.n_clusters && !p->already; k++) {
        const struct cfg_pg_cluster *cl = p->c.clusters[k];
        struct pgc_node *t = pgc_node_get(c, cl, p->site, PGC_AS_TRIAD, false);
        if (!t || !t->obs.in_recovery)
            continue;
        uint64_t tpos = position(&t->obs), best = 0, old_lsn = 0;
        const struct pgc_node *best_n = NULL, *old_n = NULL;
        bool old_known = false;
        lsn_json(cands, t->label, tpos);
        if (!target_lsn)
            target_lsn = tpos;
        for (size_t s = 0; s < c->cfg->n_sites; s++) {
            const char *site = c->cfg->sites[s].name;
            struct pgc_node *n = pgc_node_get(c, cl, site, PGC_AS_TRIAD, false);
            if (!n || n == t)
                continue;
            bool is_old = p->old && strcmp(site, p->old) == 0;
            if (is_old)
                old_n = n;
            if (n->obs.err < 0) {
                if (!json_object_get(cands, n->label))
                    json_object_set_new(cands, n->label, json_null());
                continue;
            }
            if (!n->obs.in_recovery) {
                if (!is_old) {
                    pgc_done(c, -EEXIST,
                             "not promoted: %s is already a primary (timeline %lld); a second "
                             "one would split the cluster",
                             n->label, (long long)n->obs.timeline);
                    return;
                }
                if (!n->obs.read_only) {
                    pgc_done(c, -EBUSY,
                             "not promoted: the old primary %s answers and accepts writes: "
                             "fence it first",
                             n->label);
                    return;
                }
                old_known = n->obs.has_current;
                old_lsn = n->obs.current_lsn;
                basis = "the old primary (read-only, reachable)";
                lsn_json(x->result, "old_primary_lsn", old_lsn);
                continue;
            }
            uint64_t pos = position(&n->obs);
            lsn_json(cands, n->label, pos);
            if (is_old) {
                /* Demoted (a switchover): its WAL is all it ever wrote. */
                old_known = true;
                old_lsn = pos;
                basis = "the old primary (now a replica)";
                lsn_json(x->result, "old_primary_lsn", old_lsn);
            }
            if (pos > best) {
                best = pos;
                best_n = n;
            }
        }
        int64_t age_ms = 0;
        if (!old_known && old_n && probe_lsn(p, old_n, &old_lsn, &age_ms)) {
            old_known = true;
            snprintf(basis_buf, sizeof basis_buf,
                     "the daemon's last successful probe of the old primary, %.1f s before "
                     "promotion",
                     (double)age_ms / 1000.0);
            basis = basis_buf;
            lsn_json(x->result, "old_primary_lsn", old_lsn);
        }
        uint64_t behind = best_n ? pgc_lsn_behind(tpos, best) : 0;
        if (behind > 0)
            add_catch(p, t, best_n, best);
        if (behind > worst_behind) {
            worst_behind = behind;
            pgc_bytes_str(behind, sz, sizeof sz);
            snprintf(question, sizeof question, "%s is %s behind %s (%s < %s)", t->label, sz,
                     best_n->label, pgc_lsn_str(tpos, a, sizeof a), pgc_lsn_str(best, b, sizeof b));
        }
        uint64_t ref = old_known && old_lsn > best ? old_lsn : best;
        if (pgc_lsn_behind(tpos, ref) > worst_lag)
            worst_lag = pgc_lsn_behind(tpos, ref);
        if (old_known) {
            rpo_any = true;
            if (pgc_lsn_behind(tpos, old_lsn) > rpo)
                rpo = pgc_lsn_behind(tpos, old_lsn);
        } else {
            rpo_known = false;
        }
    }
    if (!p->already) {
        lsn_json(x->result, "target_lsn", target_lsn);
        json_object_set_new(x->result, "behind_bytes", json_integer((json_int_t)worst_behind));
        if (question[0])
            json_object_set_new(x->result, "question", json_string(question));
        if (rpo_any && rpo_known) {
            json_object_set_new(x->result, "rpo_bytes", json_integer((json_int_t)rpo));
            json_object_set_new(x->result, "rpo_basis", json_string(basis));
            pgc_bytes_str(rpo, sz, sizeof sz);
            add_note(p, "RPO %s (against %s)", sz, basis);
        } else {
            /* Only a lower bound: what another replica has and the target lacks. */
            json_object_set_new(x->result, "rpo_bytes", json_null());
            json_object_set_new(x->result, "rpo_min_bytes", json_integer((json_int_t)worst_behind));
            json_object_set_new(x->result, "rpo_basis",
                                json_string("unknown: the old primary's last LSN is not known "
                                            "(lower bound: the best replica)"));
            pgc_bytes_str(worst_behind, sz, sizeof sz);
            add_note(p, "RPO unknown (old primary's last LSN not known; at least %s)", sz);
        }
        if (p->has_max_lag && worst_lag > p->max_lag) {
            char m[32];
            pgc_bytes_str(worst_lag, sz, sizeof sz);
            pgc_bytes_str(p->max_lag, m, sizeof m);
            pgc_done(c, -EAGAIN,
                     "not promoted: the target is %s behind the best known position, "
                     "over max_lag %s",
                     sz, m);
            return;
        }
    }
    read_epochs(p, after_epochs_read_run);
}

/* The old primary is asked once before promoting (is it writable? where
 * did its WAL end?). When this daemon's own probe finds it down, an
 * unreachable host would hold the promotion for pg.connect_timeout (2 s in
 * the lab: half the promote step); it gets the probe's timeout instead,
 * the configured measure of "does not answer". */
static void old_primary_timeout(struct promote *p)
{
    struct rb_env *env = p->c.x->env;
    const struct probe *pr = p->old && env->probe ? env->probe(env, p->old, "postgres") : NULL;
    if (!pr || pr->health.state != HEALTH_DOWN || pr->cfg->timeout_ms <= 0 ||
        pr->cfg->timeout_ms >= p->c.cfg->pg.connect_timeout_ms)
        return;
    for (size_t j = 0; j < p->n_all; j++) {
        if (!strcmp(p->all[j]->site, p->old))
            p->all[j]->connect_timeout_ms = (uint32_t)pr->cfg->timeout_ms;
    }
    json_object_set_new(p->c.x->result, "old_primary_connect_timeout_ms",
                        json_integer(pr->cfg->timeout_ms));
}

static void run(struct rb_exec *x)
{
    struct promote *p = start(x, RB_OP_RUN);
    if (!p)
        return;
    old_primary_timeout(p);
    pgc_observe(&p->c, p->all, p->n_all, on_observed_run);
}

/* --- check ---------------------------------------------------------------------------------- */

static void after_epochs_read_check(struct pgc_ctx *c)
{
    struct promote *p = (struct promote *)c;
    char names[400];
    for (size_t k = 0; k < p->n_dbs; k++) {
        if (p->dbs[k]->value < c->x->epoch) {
            pgc_done(c, 0, "%s is primary but triad.epochs in %s holds %lld, not epoch %lld",
                     p->dbs[k]->label, p->dbs[k]->dbname, (long long)p->dbs[k]->value,
                     (long long)c->x->epoch);
            return;
        }
    }
    pgc_done(c, 1, "%s is primary (timeline %lld), accepts writes, epoch %lld recorded",
             targets_label(p, names, sizeof names), (long long)p->targets[0]->obs.timeline,
             (long long)p->max_epoch_seen);
}

static void on_observed_check(struct pgc_ctx *c)
{
    struct promote *p = (struct promote *)c;
    for (size_t k = 0; k < p->n_targets; k++) {
        struct pgc_node *n = p->targets[k];
        if (n->obs.err < 0) {
            pgc_done(c, n->obs.err, "cannot reach %s: %s", n->label, n->obs.detail);
            return;
        }
        if (n->obs.in_recovery) {
            pgc_done(c, 0, "%s is a replica (in recovery)", n->label);
            return;
        }
        if (n->obs.read_only) {
            pgc_done(c, 0, "%s is primary but read-only (default_transaction_read_only)", n->label);
            return;
        }
    }
    read_epochs(p, after_epochs_read_check);
}

static void check(struct rb_exec *x)
{
    struct promote *p = start(x, RB_OP_CHECK);
    if (!p)
        return;
    pgc_observe(&p->c, p->targets, p->n_targets, on_observed_check);
}

/* --- ready ---------------------------------------------------------------------------------- */

static void on_observed_ready(struct pgc_ctx *c)
{
    struct promote *p = (struct promote *)c;
    char sz[32], m[32];
    uint64_t worst = 0;
    for (size_t k = 0; k < p->n_targets; k++) {
        struct pgc_node *n = p->targets[k];
        const struct pgc_obs *o = &n->obs;
        if (o->err < 0) {
            pgc_done(c, o->err, "cannot reach %s: %s", n->label, o->detail);
            return;
        }
        if (!o->in_recovery) {
            pgc_done(c, -EEXIST, "%s is already a primary", n->label);
            return;
        }
        if (strcmp(o->wr_status, "streaming") != 0) {
            pgc_done(c, -ENOTCONN, "%s does not stream (wal receiver: %s)", n->label,
                     o->wr_status[0] ? o->wr_status : "none");
            return;
        }
        uint64_t end = o->has_latest_end ? o->latest_end_lsn : 0;
        if (o->has_receive && o->receive_lsn > end)
            end = o->receive_lsn;
        uint64_t lag = o->has_replay ? pgc_lsn_behind(o->replay_lsn, end) : 0;
        if (lag > worst)
            worst = lag;
        if (p->has_max_lag && lag > p->max_lag) {
            pgc_bytes_str(lag, sz, sizeof sz);
            pgc_bytes_str(p->max_lag, m, sizeof m);
            pgc_done(c, -EAGAIN, "%s is %s behind its primary, over max_lag %s", n->label, sz, m);
            return;
        }
    }
    char names[400];
    pgc_bytes_str(worst, sz, sizeof sz);
    json_object_set_new(c->x->result, "lag_bytes", json_integer((json_int_t)worst));
    pgc_done(c, 0, "ready: %s streams, lag %s", targets_label(p, names, sizeof names), sz);
}

static void ready(struct rb_exec *x)
{
    struct promote *p = start(x, RB_OP_READY);
    if (!p)
        return;
    pgc_observe(&p->c, p->targets, p->n_targets, on_observed_ready);
}

/* --- describe ------------------------------------------------------------------------------- */

static void describe(struct rb_exec *x, struct buf *out)
{
    const struct config *cfg = x->env->cfg;
    const char *site = param_str(x, "site");
    const char *group = param_str(x, "group");
    const char *cluster = param_str(x, "cluster");
    const struct cfg_pg_group *g = group ? config_pg_group(cfg, group) : NULL;
    const struct cfg_member *seen[CFG_MAX_LIST];
    size_t n_seen = 0;
    buf_append_str(out, "promote ");
    for (size_t i = 0; i < (g ? g->n_clusters : 1); i++) {
        const struct cfg_pg_cluster *cl = config_pg_cluster(cfg, g ? g->clusters[i] : cluster);
        const struct cfg_member *m = cl ? config_pg_member(cl, site) : NULL;
        bool dup = false;
        for (size_t j = 0; m && j < n_seen; j++)
            dup |= seen[j]->port == m->port && strcmp(seen[j]->host, m->host) == 0;
        if (!m || dup || n_seen >= CFG_MAX_LIST)
            continue;
        buf_printf(out, "%s%s:%u", n_seen ? ", " : "", m->host, (unsigned)m->port);
        seen[n_seen++] = m;
    }
    buf_printf(out, " (%s)", site ? site : "?");
    const struct probe *pr = x->env->probe ? x->env->probe(x->env, site, "postgres") : NULL;
    json_t *f = pr && pr->last.done ? pr->last.fields : NULL;
    json_t *lag = json_object_get(f, "replay_lag_bytes");
    if (json_is_integer(lag)) {
        char sz[32];
        pgc_bytes_str((uint64_t)json_integer_value(lag), sz, sizeof sz);
        buf_printf(out, ", lag %s", sz);
    } else if (f && json_is_false(json_object_get(f, "in_recovery"))) {
        buf_append_str(out, ", already primary");
    } else {
        buf_append_str(out, ", lag unknown");
    }
    const char *ib = param_str(x, "if_behind");
    buf_printf(out, "; if behind another replica: %s", ib ? ib : "refuse");
}

const struct rb_action_ops rb_action_pg_promote = {
    .name = "pg.promote",
    .summary = "promote a site's replicas of a database group",
    .params = params,
    .default_timeout_ms = 120000,
    .validate = validate,
    .describe = describe,
    .check = check,
    .run = run,
    .ready = ready,
    .cancel = pgc_cancel,
    .release = pgc_release,
};
