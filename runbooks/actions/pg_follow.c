/* Action `pg.follow`: repoint a site's replicas at the new primary.
 *
 * run, for every listed site and every instance of the group there (sites
 * without a member are skipped, and so is the primary's own site):
 *   1. observe the primary (it must answer and not be in recovery: its
 *      timeline is the one to follow) and the replicas (each must answer
 *      and be in recovery: a primary needs pg.rewind first).
 *   2. a replica already streaming from the primary's host and port, on its
 *      timeline, through its slot, is left alone. Otherwise: the physical
 *      slot named after the replica's site is created on the primary when
 *      missing (as the replication user: creating slots needs the
 *      REPLICATION attribute, which the triad role does not have), then
 *      ALTER SYSTEM SET primary_conninfo (host and port of the primary's
 *      member, the replication user and password, application_name = the
 *      site, which synchronous_standby_names lists) and primary_slot_name,
 *      and pg_reload_conf(): PostgreSQL 13+ restarts its wal receiver with
 *      them, and recovery_target_timeline = latest (the default) follows the
 *      new timeline.
 *   3. wait until each streams from the primary on its timeline
 *      (pg_stat_wal_receiver: status, sender_host/port, received_tli).
 * The password has to be in primary_conninfo with password authentication
 * (postgresql.auto.conf is readable by the OS user only; SHOW
 * primary_conninfo is limited to superusers and pg_read_all_settings). triad
 * never logs it and wipes the SQL carrying it after use; PostgreSQL 15's
 * postmaster, though, logs the reloaded value ("parameter primary_conninfo
 * changed to ..."), and a server rejecting the statement may log it too
 * (log_min_error_statement). Without postgres.replication.password_file no
 * password is written: the OS users' ~/.pgpass applies instead.
 * An unreachable replica fails the step, after the others were repointed.
 * check: every listed replica already streams like that. */
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
    { "sites", RB_P_STRING_LIST, true,
      "the sites whose replicas are repointed (sites without a member are skipped)" },
    { "primary", RB_P_STRING, true, "the site of the new primary" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    static const char *const sites[] = { "primary", NULL };
    json_t *list = json_object_get(v->params, "sites");
    json_t *all = json_object_get(v->ctx, "sites");
    for (size_t i = 0; i < json_array_size(list); i++) {
        const char *s = json_string_value(json_array_get(list, i));
        if (!json_object_get(all, s))
            rb_param_error(v, "sites", "'%s' is not a configured site", s);
    }
    act_need_site(v, "primary");
    act_need_db_target(v, sites);
}

/* A replica and the primary instance it must follow. */
struct pair {
    struct pgc_node *rep;
    struct pgc_node *pri;
    struct pgc_node *slot_maker; /* the primary, as the replication user */
    char slot[PGC_SLOT_NAME_MAX];
    bool todo;
    bool failed;
};

struct follow {
    struct pgc_ctx c; /* first */
    const char *primary;
    struct pair pairs[PGC_MAX_NODES];
    size_t n_pairs;
    struct pgc_node *pris[PGC_MAX_NODES];
    size_t n_pris;
    struct pgc_node *watch[PGC_MAX_NODES * 2];
    size_t n_watch;
    size_t i;
    struct buf sql;      /* ALTER SYSTEM with the password: wiped after use */
    struct buf failures; /* replicas that could not be repointed */
    struct buf skipped;
};

static void cleanup(struct pgc_ctx *c)
{
    struct follow *f = (struct follow *)c;
    if (f->sql.data)
        explicit_bzero(f->sql.data, f->sql.alloc);
    buf_free(&f->sql);
    buf_free(&f->failures);
    buf_free(&f->skipped);
}

static void add_to(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_to(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    if (b->len)
        buf_append_str(b, "; ");
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

static void add_watch(struct follow *f, struct pgc_node *n)
{
    for (size_t k = 0; k < f->n_watch; k++) {
        if (f->watch[k] == n)
            return;
    }
    f->watch[f->n_watch++] = n;
}

static struct follow *start(struct rb_exec *x)
{
    struct follow *f = calloc(1, sizeof *f);
    if (!f) {
        rb_exec_done(x, -ENOMEM, "out of memory");
        return NULL;
    }
    buf_init(&f->sql, 8192);
    buf_init(&f->failures, 2048);
    buf_init(&f->skipped, 1024);
    f->c.cleanup = cleanup;
    if (pgc_init(&f->c, x) < 0)
        return NULL;
    f->primary = json_string_value(json_object_get(x->params, "primary"));
    json_t *sites = json_object_get(x->params, "sites");
    for (size_t s = 0; s < json_array_size(sites); s++) {
        const char *site = json_string_value(json_array_get(sites, s));
        if (!site || !strcmp(site, f->primary))
            continue;
        for (size_t k = 0; k < f->c.n_clusters; k++) {
            const struct cfg_pg_cluster *cl = f->c.clusters[k];
            struct pgc_node *rep = pgc_node_get(&f->c, cl, site, PGC_AS_TRIAD, false);
            struct pgc_node *pri = pgc_node_get(&f->c, cl, f->primary, PGC_AS_TRIAD, false);
            if (!rep) {
                add_to(&f->skipped, "%s has no member of %s", site, cl->name);
                continue;
            }
            if (!pri || pri == rep)
                continue;
            bool seen = false;
            for (size_t j = 0; j < f->n_pairs; j++)
                seen |= f->pairs[j].rep == rep;
            if (seen || f->n_pairs >= PGC_MAX_NODES)
                continue;
            struct pair *pr = &f->pairs[f->n_pairs++];
            pr->rep = rep;
            pr->pri = pri;
            pr->slot_maker = pgc_node_get(&f->c, cl, f->primary, PGC_AS_REPLICATION, false);
            if (!pr->slot_maker) {
                f->n_pairs--;
                continue;
            }
            pgc_slot_name(site, pr->slot, sizeof pr->slot);
            add_watch(f, pri);
            add_watch(f, rep);
        }
    }
    for (size_t j = 0; j < f->n_pairs; j++) {
        bool seen = false;
        for (size_t k = 0; k < f->n_pris; k++)
            seen |= f->pris[k] == f->pairs[j].pri;
        if (!seen)
            f->pris[f->n_pris++] = f->pairs[j].pri;
    }
    return f;
}

/* Streams from its primary, on its timeline, through its slot. */
static bool streams(const struct pair *p)
{
    const struct pgc_obs *o = &p->rep->obs;
    return o->err == 0 && o->in_recovery && !strcmp(o->wr_status, "streaming") &&
           !strcmp(o->sender_host, p->pri->member->host) &&
           o->sender_port == p->pri->member->port && o->received_tli == p->pri->obs.timeline &&
           !strcmp(o->slot_name, p->slot);
}

static void why_not(const struct pair *p, char *out, size_t len)
{
    const struct pgc_obs *o = &p->rep->obs;
    if (o->err < 0)
        snprintf(out, len, "%s is unreachable: %s", p->rep->label, o->detail);
    else if (!o->in_recovery)
        snprintf(out, len,
                 "%s is a primary, not a replica: it needs pg.rewind (or pg.demote) first",
                 p->rep->label);
    else if (!o->wr_status[0])
        snprintf(out, len, "%s has no wal receiver running (see its server log)", p->rep->label);
    else
        snprintf(out, len,
                 "%s: wal receiver %s from %s:%lld on timeline %lld, slot '%s' (want %s, "
                 "timeline %lld, slot '%s')",
                 p->rep->label, o->wr_status, o->sender_host[0] ? o->sender_host : "?",
                 (long long)o->sender_port, (long long)o->received_tli, o->slot_name, p->pri->label,
                 (long long)p->pri->obs.timeline, p->slot);
}

/* Primaries answered and are primaries. */
static bool primaries_ok(struct follow *f)
{
    for (size_t k = 0; k < f->n_pris; k++) {
        struct pgc_node *n = f->pris[k];
        if (n->obs.err < 0) {
            pgc_done(&f->c, n->obs.err, "cannot reach the primary %s: %s", n->label, n->obs.detail);
            return false;
        }
        if (n->obs.in_recovery) {
            pgc_done(&f->c, -EPROTO, "%s is not a primary (in recovery): promote it first",
                     n->label);
            return false;
        }
    }
    return true;
}

static void finish(struct follow *f)
{
    char done[600] = "";
    size_t o = 0;
    for (size_t j = 0; j < f->n_pairs && o < sizeof done; j++) {
        const struct pair *p = &f->pairs[j];
        if (p->failed)
            continue;
        int w = snprintf(done + o, sizeof done - o, "%s%s", o ? ", " : "", p->rep->label);
        if (w > 0)
            o += (size_t)w;
    }
    const struct pgc_node *pri = f->n_pris ? f->pris[0] : NULL;
    if (pri)
        json_object_set_new(f->c.x->result, "timeline",
                            json_integer((json_int_t)pri->obs.timeline));
    if (f->failures.len) {
        pgc_done(&f->c, -EHOSTUNREACH, "%s%s%s", f->failures.data, done[0] ? "; streaming: " : "",
                 done);
        return;
    }
    if (!f->n_pairs) {
        pgc_done(&f->c, 0, "nothing to repoint%s%s", f->skipped.len ? ": " : "",
                 f->skipped.len ? f->skipped.data : "");
        return;
    }
    pgc_done(&f->c, 0, "%s stream%s from %s on timeline %lld%s%s", done, f->n_pairs > 1 ? "" : "s",
             pri ? pri->label : "?", (long long)(pri ? pri->obs.timeline : 0),
             f->skipped.len ? "; skipped: " : "", f->skipped.len ? f->skipped.data : "");
}

/* --- waiting ----------------------------------------------------------------------------------- */

static void wait_observe(struct pgc_ctx *c);

static void on_wait(struct pgc_ctx *c)
{
    struct follow *f = (struct follow *)c;
    if (!primaries_ok(f))
        return;
    bool all = true;
    for (size_t j = 0; j < f->n_pairs; j++) {
        struct pair *p = &f->pairs[j];
        if (!p->failed && !streams(p))
            all = false;
    }
    if (all) {
        finish(f);
        return;
    }
    if (pgc_left_ms(c) <= 0) {
        struct buf b;
        buf_init(&b, 1500);
        for (size_t j = 0; j < f->n_pairs; j++) {
            char w[800];
            if (f->pairs[j].failed || streams(&f->pairs[j]))
                continue;
            why_not(&f->pairs[j], w, sizeof w);
            add_to(&b, "%s", w);
        }
        pgc_done(c, -ETIMEDOUT,
                 "not streaming from the new primary in time: %s (a replica that replayed past "
                 "the new timeline's fork point needs pg.rewind)",
                 b.data ? b.data : "?");
        buf_free(&b);
        return;
    }
    pgc_later(c, PGC_POLL_MS, wait_observe);
}

static void wait_observe(struct pgc_ctx *c)
{
    struct follow *f = (struct follow *)c;
    pgc_observe(c, f->watch, f->n_watch, on_wait);
}

/* --- repointing -------------------------------------------------------------------------------- */

static void repoint_next(struct follow *f);
static void repoint_step(struct follow *f);

static void on_repoint(struct pgc_node *n, struct pg_async_result *r)
{
    struct follow *f = (struct follow *)n->c;
    struct pair *p = &f->pairs[f->i];
    if (f->sql.data)
        explicit_bzero(f->sql.data, f->sql.alloc);
    buf_reset(&f->sql);
    if (r->status < 0 && !(p->rep->stage == 0 && !strcmp(r->sqlstate, "42710"))) {
        static const char *const what[] = { "creating slot", "setting primary_conninfo",
                                            "setting primary_slot_name", "reloading" };
        pgc_done(&f->c, r->status, "%s for %s on %s failed: %s", what[p->rep->stage], p->rep->label,
                 p->rep->stage == 0 ? p->pri->label : p->rep->label, r->detail);
        return;
    }
    if (p->rep->stage == 0 && r->res && PQntuples(r->res) > 0) {
        char what[300];
        snprintf(what, sizeof what, "%s on %s", p->slot, p->pri->label);
        json_array_append_new(json_object_get(f->c.x->result, "slots_created"), json_string(what));
    }
    p->rep->stage++;
    if (p->rep->stage > 3) {
        f->i++;
        repoint_next(f);
        return;
    }
    repoint_step(f);
}

static void repoint_step(struct follow *f)
{
    struct pair *p = &f->pairs[f->i];
    struct pgc_node *n = p->rep;
    char why[300];
    int rc = 0;
    const char *args[] = { p->slot };
    switch (n->stage) {
    case 0:
        rc = pgc_query(p->slot_maker,
                       "SELECT pg_create_physical_replication_slot($1, true) WHERE NOT EXISTS "
                       "(SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                       1, args, on_repoint);
        break;
    case 1: {
        struct buf ci;
        buf_init(&ci, 4096);
        rc = pgc_replica_conninfo(f->c.cfg, p->pri->member, n->site, &ci, why, sizeof why);
        if (rc == 0) {
            buf_reset(&f->sql);
            rc = buf_append_str(&f->sql, "ALTER SYSTEM SET primary_conninfo = ");
            if (rc == 0)
                rc = pgc_sql_literal(&f->sql, ci.data);
        } else {
            if (ci.data)
                explicit_bzero(ci.data, ci.alloc);
            buf_free(&ci);
            pgc_done(&f->c, rc, "cannot build primary_conninfo for %s: %s", n->label, why);
            return;
        }
        if (ci.data)
            explicit_bzero(ci.data, ci.alloc);
        buf_free(&ci);
        if (rc == 0)
            rc = pgc_query(n, f->sql.data, 0, NULL, on_repoint);
        break;
    }
    case 2:
        buf_reset(&f->sql);
        rc = buf_append_str(&f->sql, "ALTER SYSTEM SET primary_slot_name = ");
        if (rc == 0)
            rc = pgc_sql_literal(&f->sql, p->slot);
        if (rc == 0)
            rc = pgc_query(n, f->sql.data, 0, NULL, on_repoint);
        break;
    default:
        rc = pgc_query(n, "SELECT pg_reload_conf()", 0, NULL, on_repoint);
    }
    if (rc < 0)
        pgc_done(&f->c, rc, "cannot repoint %s: %s", n->label, strerror(-rc));
}

static void repoint_next(struct follow *f)
{
    while (f->i < f->n_pairs && !f->pairs[f->i].todo)
        f->i++;
    if (f->i >= f->n_pairs) {
        wait_observe(&f->c);
        return;
    }
    f->pairs[f->i].rep->stage = 0;
    repoint_step(f);
}

static void on_observed_run(struct pgc_ctx *c)
{
    struct follow *f = (struct follow *)c;
    if (!primaries_ok(f))
        return;
    for (size_t j = 0; j < f->n_pairs; j++) {
        struct pair *p = &f->pairs[j];
        if (p->rep->obs.err < 0 || !p->rep->obs.in_recovery) {
            char w[800];
            why_not(p, w, sizeof w);
            add_to(&f->failures, "%s", w);
            p->failed = true;
            continue;
        }
        p->todo = !streams(p);
    }
    json_object_set_new(c->x->result, "slots_created", json_array());
    f->i = 0;
    repoint_next(f);
}

static void run(struct rb_exec *x)
{
    struct follow *f = start(x);
    if (!f)
        return;
    pgc_observe(&f->c, f->watch, f->n_watch, on_observed_run);
}

/* --- check ----------------------------------------------------------------------------------- */

static void on_observed_check(struct pgc_ctx *c)
{
    struct follow *f = (struct follow *)c;
    if (!primaries_ok(f))
        return;
    for (size_t j = 0; j < f->n_pairs; j++) {
        struct pair *p = &f->pairs[j];
        if (streams(p))
            continue;
        char w[800];
        why_not(p, w, sizeof w);
        pgc_done(c, p->rep->obs.err < 0 ? p->rep->obs.err : 0, "%s", w);
        return;
    }
    if (!f->n_pairs) {
        pgc_done(c, 1, "no replica to repoint");
        return;
    }
    pgc_done(c, 1, "every replica streams from %s on timeline %lld", f->pris[0]->label,
             (long long)f->pris[0]->obs.timeline);
}

static void check(struct rb_exec *x)
{
    struct follow *f = start(x);
    if (!f)
        return;
    pgc_observe(&f->c, f->watch, f->n_watch, on_observed_check);
}

static void describe(struct rb_exec *x, struct buf *out)
{
    json_t *sites = json_object_get(x->params, "sites");
    const char *primary = json_string_value(json_object_get(x->params, "primary"));
    buf_append_str(out, "repoint the replicas of ");
    for (size_t i = 0; i < json_array_size(sites); i++)
        buf_printf(out, "%s%s", i ? ", " : "", json_string_value(json_array_get(sites, i)));
    if (!json_array_size(sites))
        buf_append_str(out, "(no site)");
    buf_printf(out, " at the primary in %s", primary ? primary : "?");
    const char *group = json_string_value(json_object_get(x->params, "group"));
    const char *cluster = json_string_value(json_object_get(x->params, "cluster"));
    const struct cfg_pg_group *g = group ? config_pg_group(x->env->cfg, group) : NULL;
    const struct cfg_pg_cluster *cl =
        config_pg_cluster(x->env->cfg, g && g->n_clusters ? g->clusters[0] : cluster);
    const struct cfg_member *m = cl && primary ? config_pg_member(cl, primary) : NULL;
    if (m)
        buf_printf(out, " (%s:%u)", m->host, (unsigned)m->port);
}

const struct rb_action_ops rb_action_pg_follow = {
    .name = "pg.follow",
    .summary = "repoint a replica at the new primary",
    .params = params,
    .default_timeout_ms = 120000,
    .validate = validate,
    .describe = describe,
    .check = check,
    .run = run,
    .cancel = pgc_cancel,
    .release = pgc_release,
};
