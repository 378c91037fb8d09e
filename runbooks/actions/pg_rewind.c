/* Action `pg.rewind`: turn an old primary into a replica of the new one
 * with pg_rewind (failback).
 *
 * Runs on the daemon of the old primary's own site (runs_on: site), for
 * every instance of the group there:
 *   1. the current primary must answer and be a primary; CHECKPOINT on it,
 *      so that its control file (which pg_rewind reads) shows its timeline.
 *      An old primary that already streams from it on its timeline is
 *      left alone.
 *   2. wal_log_hints or data checksums on the old primary (from the server
 *      when it runs, else pg_controldata): without them pg_rewind cannot
 *      work.
 *   3. stop it (`local.stop`, else pg_ctl -m fast); a crashed one is left
 *      to pg_rewind, which finishes its crash recovery first (PG 13+).
 *   4. keep the top-level *.conf files of the data directory: pg_rewind and
 *      pg_basebackup copy the source's configuration files over the
 *      target's, and a configuration kept in the data directory (the lab's
 *      lab.conf with listen_addresses, the official container images) would
 *      otherwise become the primary's.
 *   5. pg_rewind --target-pgdata --source-server (the primary's member as
 *      postgres.user, the password through a temporary .pgpass readable by
 *      the OS user only), as the OS user.
 *      When it cannot rewind (no common ancestor, divergence beyond the WAL
 *      kept, a damaged target...) and allow_basebackup is true, an operator
 *      is asked whether to rebuild it with pg_basebackup instead: the data
 *      directory is then moved aside (DATA_DIR.triad-old-EPOCH, never
 *      deleted) and copied afresh as the replication user through the slot.
 *   6. the kept *.conf files back, then standby.signal and
 *      primary_conninfo/primary_slot_name in postgresql.auto.conf: the
 *      settings go where ALTER SYSTEM would put them (the file PostgreSQL
 *      reads last), replacing earlier ones, so a later pg.follow's ALTER
 *      SYSTEM replaces them cleanly; the slot named after the site is
 *      created on the primary when missing.
 *   7. start it (`local.start`, else pg_ctl start) and wait until it streams
 *      from the primary on its timeline.
 * check: it is a replica streaming from the primary on its timeline. */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/fsutil.h"
#include "runbooks/actions/actions.h"
#include "runbooks/actions/pg_common.h"

static const struct rb_param_spec params[] = {
    { "group", RB_P_STRING, false, "database group (postgres.groups)" },
    { "cluster", RB_P_STRING, false, "or one PostgreSQL cluster" },
    { "site", RB_P_STRING, true, "the old primary's site" },
    { "primary", RB_P_STRING, true, "the site of the current primary" },
    { "allow_basebackup", RB_P_BOOL, false,
      "when rewind is impossible, ask to rebuild with pg_basebackup (default false)" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    static const char *const sites[] = { "site", "primary", NULL };
    act_need_site(v, "site");
    act_need_site(v, "primary");
    act_need_db_target(v, sites);
    const char *s = json_string_value(json_object_get(v->params, "site"));
    const char *p = json_string_value(json_object_get(v->params, "primary"));
    if (s && p && !strcmp(s, p))
        rb_param_error(v, "primary", "the primary must be another site than '%s'", s);
}

struct conf_file {
    char name[256];
    struct buf data;
};

struct unit {
    struct pgc_node *srv;
    struct pgc_node *pri;
    struct pgc_node *slot_maker; /* the primary, as the replication user */
    struct pgc_local local;
    char slot[PGC_SLOT_NAME_MAX];
};

struct rewind {
    struct pgc_ctx c; /* first */
    const char *site, *primary;
    bool allow_basebackup;
    struct unit units[PGC_MAX_NODES];
    size_t n_units;
    size_t u;
    struct pgc_node *watch[2];
    struct conf_file confs[PGC_CONF_FILES];
    size_t n_confs;
    bool was_running;
    bool stopped;      /* by us */
    bool bb_confirmed; /* an operator agreed to a rebuild */
    int cd_polls;
    bool rebuilt;
    char why_not[400]; /* why pg_rewind could not */
    struct buf notes;
};

static void note(struct rewind *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct rewind *w, const char *fmt, ...)
{
    va_list ap;
    if (w->notes.len)
        buf_append_str(&w->notes, "; ");
    va_start(ap, fmt);
    buf_vprintf(&w->notes, fmt, ap);
    va_end(ap);
}

static void confs_free(struct rewind *w)
{
    for (size_t i = 0; i < w->n_confs; i++) {
        if (w->confs[i].data.data)
            explicit_bzero(w->confs[i].data.data, w->confs[i].data.alloc);
        buf_free(&w->confs[i].data);
    }
    w->n_confs = 0;
}

static void cleanup(struct pgc_ctx *c)
{
    struct rewind *w = (struct rewind *)c;
    for (size_t i = 0; i < w->n_units; i++)
        pgc_local_free(&w->units[i].local);
    confs_free(w);
    buf_free(&w->notes);
}

static struct rewind *start(struct rb_exec *x)
{
    struct rewind *w = calloc(1, sizeof *w);
    if (!w) {
        rb_exec_done(x, -ENOMEM, "out of memory");
        return NULL;
    }
    buf_init(&w->notes, 2048);
    w->c.cleanup = cleanup;
    if (pgc_init(&w->c, x) < 0)
        return NULL;
    w->site = json_string_value(json_object_get(x->params, "site"));
    w->primary = json_string_value(json_object_get(x->params, "primary"));
    w->allow_basebackup = json_is_true(json_object_get(x->params, "allow_basebackup"));
    for (size_t k = 0; k < w->c.n_clusters; k++) {
        const struct cfg_pg_cluster *cl = w->c.clusters[k];
        struct pgc_node *srv = pgc_node_get(&w->c, cl, w->site, PGC_AS_TRIAD, false);
        struct pgc_node *pri = pgc_node_get(&w->c, cl, w->primary, PGC_AS_TRIAD, false);
        if (!srv || !pri)
            continue;
        bool seen = false;
        for (size_t i = 0; i < w->n_units; i++)
            seen |= w->units[i].srv == srv;
        if (seen)
            continue;
        struct unit *u = &w->units[w->n_units++];
        char why[300];
        u->srv = srv;
        u->pri = pri;
        u->slot_maker = pgc_node_get(&w->c, cl, w->primary, PGC_AS_REPLICATION, false);
        pgc_slot_name(w->site, u->slot, sizeof u->slot);
        if (pgc_local_get(cl, w->site, &u->local, why, sizeof why) < 0) {
            pgc_done(&w->c, -ENOTSUP, "%s", why);
            return NULL;
        }
        if (!u->slot_maker) {
            pgc_done(&w->c, -ENOMEM, "too many connections");
            return NULL;
        }
    }
    if (!w->n_units) {
        pgc_done(&w->c, -EINVAL, "no instance of these clusters in both %s and %s", w->site,
                 w->primary);
        return NULL;
    }
    return w;
}

static bool streams_from(const struct unit *u)
{
    const struct pgc_obs *o = &u->srv->obs;
    return o->err == 0 && o->in_recovery && !strcmp(o->wr_status, "streaming") &&
           !strcmp(o->sender_host, u->pri->member->host) &&
           o->sender_port == u->pri->member->port && o->received_tli == u->pri->obs.timeline;
}

static void unit_next(struct rewind *w);

/* --- 7. started, streaming ----------------------------------------------------------------- */

static void stream_observe(struct pgc_ctx *c);

static void on_stream(struct pgc_ctx *c)
{
    struct rewind *w = (struct rewind *)c;
    struct unit *u = &w->units[w->u];
    if (u->pri->obs.err < 0) {
        pgc_done(c, u->pri->obs.err, "the primary %s stopped answering: %s", u->pri->label,
                 u->pri->obs.detail);
        return;
    }
    if (streams_from(u)) {
        note(w, "%s %s and streams from %s on timeline %lld", u->srv->label,
             w->rebuilt ? "was rebuilt with pg_basebackup" : "was rewound", u->pri->label,
             (long long)u->pri->obs.timeline);
        w->u++;
        unit_next(w);
        return;
    }
    if (pgc_left_ms(c) <= 0) {
        const struct pgc_obs *o = &u->srv->obs;
        if (o->err < 0)
            pgc_done(c, -ETIMEDOUT, "%s does not answer after its start as a replica: %s",
                     u->srv->label, o->detail);
        else
            pgc_done(c, -ETIMEDOUT,
                     "%s does not stream from %s in time (in recovery: %s, wal receiver: %s from "
                     "%s, timeline %lld); see its server log",
                     u->srv->label, u->pri->label, o->in_recovery ? "yes" : "no",
                     o->wr_status[0] ? o->wr_status : "none",
                     o->sender_host[0] ? o->sender_host : "-", (long long)o->received_tli);
        return;
    }
    pgc_later(c, PGC_POLL_MS, stream_observe);
}

static void stream_observe(struct pgc_ctx *c)
{
    struct rewind *w = (struct rewind *)c;
    struct unit *u = &w->units[w->u];
    w->watch[0] = u->pri;
    w->watch[1] = u->srv;
    pgc_observe(c, w->watch, 2, on_stream);
}

static void on_started(struct pgc_ctx *c, const struct proc_result *r)
{
    struct rewind *w = (struct rewind *)c;
    struct unit *u = &w->units[w->u];
    if (r->result < 0 || r->exit_status != 0) {
        char tail[300];
        pgc_proc_tail(r, tail, sizeof tail);
        pgc_done(c, r->result < 0 ? r->result : -EIO, "%s did not start as a replica: %s",
                 u->srv->label, tail[0] ? tail : "no output");
        return;
    }
    stream_observe(c);
}

/* --- 6. configuration back, standby settings, slot ------------------------------------------- */

static int restore_confs(struct rewind *w, const struct unit *u, char *why, size_t len)
{
    struct stat st;
    if (stat(u->local.data_dir, &st) < 0) {
        pgc_fmt(why, len, "%s: %s", u->local.data_dir, strerror(errno));
        return -errno;
    }
    for (size_t i = 0; i < w->n_confs; i++) {
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", u->local.data_dir, w->confs[i].name);
        const struct buf *b = &w->confs[i].data;
        int rc = fsutil_write_atomic(path, b->data ? b->data : "", b->len, 0600);
        if (rc == 0 && geteuid() == 0 && chown(path, st.st_uid, st.st_gid) < 0)
            rc = -errno;
        if (rc < 0) {
            pgc_fmt(why, len, "cannot restore %s: %s", path, strerror(-rc));
            return rc;
        }
    }
    return 0;
}

static void on_slot(struct pgc_node *n, struct pg_async_result *r)
{
    struct rewind *w = (struct rewind *)n->c;
    struct unit *u = &w->units[w->u];
    if (r->status < 0 && strcmp(r->sqlstate, "42710") != 0) {
        pgc_done(&w->c, r->status, "cannot create slot %s on %s: %s", u->slot, n->label, r->detail);
        return;
    }
    if (r->status == 0 && r->res && PQntuples(r->res) > 0)
        note(w, "created slot %s on %s", u->slot, u->pri->label);
    int rc = pgc_start_server(&w->c, &u->local, on_started);
    if (rc < 0)
        pgc_done(&w->c, rc, "cannot start %s: %s", u->srv->label, strerror(-rc));
}

static void ensure_slot(struct rewind *w, pgc_query_cb cb)
{
    struct unit *u = &w->units[w->u];
    const char *args[] = { u->slot };
    int rc = pgc_query(u->slot_maker,
                       "SELECT pg_create_physical_replication_slot($1, true) WHERE NOT EXISTS "
                       "(SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                       1, args, cb);
    if (rc < 0)
        pgc_done(&w->c, rc, "cannot create slot %s: %s", u->slot, strerror(-rc));
}

static void configure(struct rewind *w)
{
    struct unit *u = &w->units[w->u];
    char why[400];
    struct buf ci;
    buf_init(&ci, 4096);
    int rc = restore_confs(w, u, why, sizeof why);
    confs_free(w);
    if (rc == 0)
        rc = pgc_replica_conninfo(w->c.cfg, u->pri->member, w->site, &ci, why, sizeof why);
    if (rc == 0)
        rc = pgc_write_standby(&u->local, ci.data, u->slot, why, sizeof why);
    if (ci.data)
        explicit_bzero(ci.data, ci.alloc);
    buf_free(&ci);
    if (rc < 0) {
        pgc_done(&w->c, rc, "%s was %s but cannot be made a replica: %s", u->srv->label,
                 w->rebuilt ? "rebuilt" : "rewound", why);
        return;
    }
    ensure_slot(w, on_slot);
}

/* --- 5b. pg_basebackup ------------------------------------------------------------------------ */

static void on_basebackup(struct pgc_ctx *c, const struct proc_result *r)
{
    struct rewind *w = (struct rewind *)c;
    struct unit *u = &w->units[w->u];
    pgc_passfile_remove(c);
    if (r->result < 0 || r->exit_status != 0) {
        char tail[300];
        pgc_proc_tail(r, tail, sizeof tail);
        pgc_done(c, r->result < 0 ? r->result : -EIO,
                 "pg_basebackup of %s from %s failed: %s (the old data directory was kept "
                 "aside)",
                 u->srv->label, u->pri->label, tail[0] ? tail : "no output");
        return;
    }
    w->rebuilt = true;
    json_object_set_new(c->x->result, "rebuilt_with_basebackup", json_true());
    configure(w);
}

/* Moves the data directory aside (never deleted) and makes an empty one. */
static int move_aside(struct rewind *w, const struct unit *u, char *why, size_t len)
{
    struct stat st;
    char old[1200];
    if (stat(u->local.data_dir, &st) < 0) {
        pgc_fmt(why, len, "%s: %s", u->local.data_dir, strerror(errno));
        return -errno;
    }
    for (int n = 0; n < 100; n++) {
        if (n)
            snprintf(old, sizeof old, "%s.triad-old-%lld-%d", u->local.data_dir,
                     (long long)w->c.x->epoch, n);
        else
            snprintf(old, sizeof old, "%s.triad-old-%lld", u->local.data_dir,
                     (long long)w->c.x->epoch);
        if (access(old, F_OK) < 0)
            break;
    }
    if (rename(u->local.data_dir, old) < 0) {
        pgc_fmt(why, len, "cannot move %s aside: %s", u->local.data_dir, strerror(errno));
        return -errno;
    }
    if (mkdir(u->local.data_dir, 0700) < 0 ||
        (geteuid() == 0 && chown(u->local.data_dir, st.st_uid, st.st_gid) < 0)) {
        pgc_fmt(why, len, "cannot make a new %s: %s", u->local.data_dir, strerror(errno));
        return -errno;
    }
    json_object_set_new(w->c.x->result, "old_data_dir", json_string(old));
    return 0;
}

static void on_bb_slot(struct pgc_node *n, struct pg_async_result *r)
{
    struct rewind *w = (struct rewind *)n->c;
    struct unit *u = &w->units[w->u];
    const struct config *cfg = w->c.cfg;
    char why[400], env[128];
    if (r->status < 0 && strcmp(r->sqlstate, "42710") != 0) {
        pgc_done(&w->c, r->status, "cannot create slot %s on %s: %s", u->slot, n->label, r->detail);
        return;
    }
    int rc = move_aside(w, u, why, sizeof why);
    if (rc < 0) {
        pgc_done(&w->c, rc, "%s", why);
        return;
    }
    if (cfg->pg.replication_password_file) {
        rc = pgc_passfile_create(&w->c, &u->local, cfg->pg.replication_password_file);
        if (rc < 0) {
            pgc_done(&w->c, rc, "cannot pass the replication password to pg_basebackup: %s",
                     strerror(-rc));
            return;
        }
    }
    struct buf ci;
    buf_init(&ci, 4096);
    struct pgc_conninfo info = {
        .host = u->pri->member->host,
        .port = u->pri->member->port,
        .user = cfg->pg.replication_user,
        .application_name = w->site,
        .sslmode = cfg->pg.sslmode,
        .sslrootcert = cfg->pg.sslrootcert,
        .connect_timeout_s =
            cfg->pg.connect_timeout_ms / 1000 > 0 ? cfg->pg.connect_timeout_ms / 1000 : 1,
    };
    pgc_conninfo_build(&ci, &info);
    /* Without a password file configured, libpq's own ~/.pgpass of the OS
     * user applies. */
    snprintf(env, sizeof env, "PGPASSFILE=%s", w->c.passfile);
    const char *args[] = { "-D",
                           u->local.data_dir,
                           "-d",
                           ci.data ? ci.data : "",
                           "-X",
                           "stream",
                           "-S",
                           u->slot,
                           "--checkpoint=fast",
                           "--no-password",
                           NULL };
    const char *envv[] = { w->c.passfile[0] ? env : NULL, NULL };
    rc = pgc_spawn_pg(&w->c, &u->local, "pg_basebackup", args, envv, on_basebackup);
    buf_free(&ci);
    if (rc < 0)
        pgc_done(&w->c, rc, "cannot run pg_basebackup: %s", strerror(-rc));
}

static void primary_checkpoint(struct rewind *w);

static void on_confirm(struct rb_exec *x, bool approved, const char *who, void *arg)
{
    struct rewind *w = arg;
    if (w->c.over || x->cancelled)
        return;
    struct unit *u = &w->units[w->u];
    if (!approved) {
        pgc_done(&w->c, -EPROTO,
                 "%s cannot be rewound (%s) and the rebuild was not confirmed (%s); %s",
                 u->srv->label, w->why_not, who ? who : "nobody",
                 w->stopped ? "it stays stopped" : "nothing was changed");
        return;
    }
    w->bb_confirmed = true;
    json_object_set_new(x->result, "basebackup_confirmed_by", json_string(who ? who : ""));
    if (w->was_running && !w->stopped) {
        primary_checkpoint(w); /* then stop, then the rebuild */
        return;
    }
    ensure_slot(w, on_bb_slot);
}

/* pg_rewind cannot: ask for a rebuild when allowed. */
static void cannot_rewind(struct rewind *w)
{
    struct rb_exec *x = w->c.x;
    struct unit *u = &w->units[w->u];
    if (w->bb_confirmed) {
        ensure_slot(w, on_bb_slot);
        return;
    }
    if (!w->allow_basebackup) {
        pgc_done(&w->c, -EPROTO,
                 "%s cannot be rewound: %s (allow_basebackup: true would offer a rebuild with "
                 "pg_basebackup)",
                 u->srv->label, w->why_not);
        return;
    }
    if (!x->env->confirm) {
        pgc_done(&w->c, -EPROTO,
                 "%s cannot be rewound: %s; nobody to ask here about a rebuild with "
                 "pg_basebackup",
                 u->srv->label, w->why_not);
        return;
    }
    char q[700];
    pgc_fmt(q, sizeof q,
            "%s cannot be rewound (%s). Rebuild it from %s with pg_basebackup? Its data "
            "directory is moved aside, not deleted",
            u->srv->label, w->why_not, u->pri->label);
    x->env->confirm(x->env, x, q, on_confirm, w);
}

/* --- 5. pg_rewind ---------------------------------------------------------------------------- */

static void on_rewind(struct pgc_ctx *c, const struct proc_result *r)
{
    struct rewind *w = (struct rewind *)c;
    struct unit *u = &w->units[w->u];
    char tail[300];
    pgc_passfile_remove(c);
    pgc_proc_tail(r, tail, sizeof tail);
    if (r->result == 0 && r->exit_status == 0) {
        if (strstr(r->output, "no rewind required"))
            note(w, "pg_rewind: no rewind required");
        configure(w);
        return;
    }
    if (r->result < 0) {
        pgc_done(c, r->result, "pg_rewind of %s %s: %s", u->srv->label,
                 r->result == -ETIMEDOUT ? "timed out" : "was stopped", tail);
        return;
    }
    if (strstr(r->output, "could not connect") || strstr(r->output, "connection to server")) {
        pgc_done(c, -ECONNREFUSED, "pg_rewind could not connect to the primary %s: %s",
                 u->pri->label, tail);
        return;
    }
    pgc_fmt(w->why_not, sizeof w->why_not, "pg_rewind: %s", tail);
    cannot_rewind(w);
}

static void run_rewind(struct rewind *w)
{
    struct unit *u = &w->units[w->u];
    const struct config *cfg = w->c.cfg;
    char env[128], source_arg[4200];
    int rc;
    if (cfg->pg.password_file) {
        rc = pgc_passfile_create(&w->c, &u->local, cfg->pg.password_file);
        if (rc < 0) {
            pgc_done(&w->c, rc, "cannot pass the password to pg_rewind: %s", strerror(-rc));
            return;
        }
    }
    struct buf ci;
    buf_init(&ci, 4096);
    struct pgc_conninfo info = {
        .host = u->pri->member->host,
        .port = u->pri->member->port,
        .user = cfg->pg.user,
        .dbname = u->pri->dbname,
        .application_name = "triad-pg_rewind",
        .sslmode = cfg->pg.sslmode,
        .sslrootcert = cfg->pg.sslrootcert,
        .connect_timeout_s =
            cfg->pg.connect_timeout_ms / 1000 > 0 ? cfg->pg.connect_timeout_ms / 1000 : 1,
    };
    pgc_conninfo_build(&ci, &info);
    snprintf(source_arg, sizeof source_arg, "--source-server=%s", ci.data ? ci.data : "");
    buf_free(&ci);
    char target_arg[1100];
    snprintf(target_arg, sizeof target_arg, "--target-pgdata=%s", u->local.data_dir);
    /* Without a password file configured, libpq's own ~/.pgpass of the OS
     * user applies. */
    snprintf(env, sizeof env, "PGPASSFILE=%s", w->c.passfile);
    const char *args[] = { target_arg, source_arg, NULL };
    const char *envv[] = { w->c.passfile[0] ? env : NULL, NULL };
    rc = pgc_spawn_pg(&w->c, &u->local, "pg_rewind", args, envv, on_rewind);
    if (rc < 0)
        pgc_done(&w->c, rc, "cannot run pg_rewind: %s", strerror(-rc));
}

/* 4. The top-level configuration files, kept in memory (small, capped). */
static int save_confs(struct rewind *w, const struct unit *u, char *why, size_t len)
{
    confs_free(w);
    DIR *dir = opendir(u->local.data_dir);
    if (!dir) {
        pgc_fmt(why, len, "%s: %s", u->local.data_dir, strerror(errno));
        return -errno;
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 6 || n >= sizeof w->confs[0].name || strcmp(e->d_name + n - 5, ".conf") != 0)
            continue;
        char path[1400];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", u->local.data_dir, e->d_name);
        if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (w->n_confs >= PGC_CONF_FILES) {
            pgc_fmt(why, len, "more than %d configuration files in %s", PGC_CONF_FILES,
                    u->local.data_dir);
            rc = -E2BIG;
            break;
        }
        struct conf_file *f = &w->confs[w->n_confs];
        memcpy(f->name, e->d_name, n + 1);
        buf_init(&f->data, PGC_FILE_MAX);
        rc = fsutil_read(path, &f->data);
        w->n_confs++;
        if (rc < 0) {
            pgc_fmt(why, len, "cannot read %s: %s", path, strerror(-rc));
            break;
        }
    }
    closedir(dir);
    return rc;
}

static void after_stop(struct rewind *w)
{
    struct unit *u = &w->units[w->u];
    char why[400];
    int rc = save_confs(w, u, why, sizeof why);
    if (rc < 0) {
        pgc_done(&w->c, rc, "%s", why);
        return;
    }
    run_rewind(w);
}

static void on_controldata(struct pgc_ctx *c, int status, const struct pgc_controldata *cd,
                           const char *why);

static void reread_controldata(struct pgc_ctx *c)
{
    struct rewind *w = (struct rewind *)c;
    int rc = pgc_read_controldata(c, &w->units[w->u].local, on_controldata);
    if (rc < 0)
        pgc_done(c, rc, "cannot run pg_controldata: %s", strerror(-rc));
}

static void on_controldata(struct pgc_ctx *c, int status, const struct pgc_controldata *cd,
                           const char *why)
{
    struct rewind *w = (struct rewind *)c;
    struct unit *u = &w->units[w->u];
    if (status < 0) {
        pgc_done(c, status, "pg_controldata on %s failed: %s", u->local.data_dir, why);
        return;
    }
    if (!pgc_controldata_clean(cd) && w->stopped && ++w->cd_polls < 50) {
        /* A stop command that returns before the server is down. */
        pgc_later(c, PGC_POLL_MS, reread_controldata);
        return;
    }
    json_object_set_new(c->x->result, "old_state", json_string(cd->state));
    if (!cd->wal_log_hints && cd->checksum_version == 0) {
        char why2[400];
        pgc_fmt(w->why_not, sizeof w->why_not,
                "wal_log_hints is off and data checksums are disabled");
        if (save_confs(w, u, why2, sizeof why2) < 0) {
            pgc_done(c, -EIO, "%s", why2);
            return;
        }
        cannot_rewind(w);
        return;
    }
    after_stop(w);
}

static void on_stopped(struct pgc_ctx *c, const struct proc_result *r)
{
    struct rewind *w = (struct rewind *)c;
    struct unit *u = &w->units[w->u];
    if (r->result < 0 || r->exit_status != 0) {
        char tail[300];
        pgc_proc_tail(r, tail, sizeof tail);
        pgc_done(c, r->result < 0 ? r->result : -EIO, "stopping %s failed: %s", u->srv->label,
                 tail[0] ? tail : "no output");
        return;
    }
    w->stopped = true;
    int rc = pgc_read_controldata(c, &u->local, on_controldata);
    if (rc < 0)
        pgc_done(c, rc, "cannot run pg_controldata: %s", strerror(-rc));
}

/* --- 1-3. before anything changes -------------------------------------------------------------- */

static void on_primary_checkpoint(struct pgc_node *n, struct pg_async_result *r)
{
    struct rewind *w = (struct rewind *)n->c;
    struct unit *u = &w->units[w->u];
    int rc;
    if (r->status < 0)
        note(w, "CHECKPOINT on %s failed (%s): pg_rewind may read an old timeline", n->label,
             r->detail);
    if (w->was_running) {
        pgc_disconnect(u->srv);
        rc = pgc_stop_server(&w->c, &u->local, on_stopped);
        if (rc < 0)
            pgc_done(&w->c, rc, "cannot stop %s: %s", u->srv->label, strerror(-rc));
        return;
    }
    rc = pgc_read_controldata(&w->c, &u->local, on_controldata);
    if (rc < 0)
        pgc_done(&w->c, rc, "cannot run pg_controldata: %s", strerror(-rc));
}

static void on_pre(struct pgc_ctx *c)
{
    struct rewind *w = (struct rewind *)c;
    struct unit *u = &w->units[w->u];
    const struct pgc_obs *po = &u->pri->obs, *so = &u->srv->obs;
    char a[PG_ASYNC_LSN_STRLEN];
    if (po->err < 0) {
        pgc_done(c, po->err, "cannot reach the primary %s: %s", u->pri->label, po->detail);
        return;
    }
    if (po->in_recovery) {
        pgc_done(c, -EPROTO, "%s is not a primary (in recovery)", u->pri->label);
        return;
    }
    if (streams_from(u)) {
        note(w, "%s already streams from %s on timeline %lld", u->srv->label, u->pri->label,
             (long long)po->timeline);
        w->u++;
        unit_next(w);
        return;
    }
    w->was_running = so->err == 0;
    w->rebuilt = false;
    w->stopped = false;
    w->bb_confirmed = false;
    w->cd_polls = 0;
    if (w->was_running && !so->in_recovery && so->has_current) {
        json_object_set_new(c->x->result, "old_timeline", json_integer((json_int_t)so->timeline));
        json_object_set_new(c->x->result, "old_lsn",
                            json_string(pgc_lsn_str(so->current_lsn, a, sizeof a)));
    }
    /* A replica's own setting does not matter (it writes no WAL): its
     * control file, read after the stop, carries the primary's. A primary
     * without them is never stopped for nothing: refused, or asked first. */
    if (w->was_running && !so->in_recovery && !so->wal_log_hints && !so->data_checksums) {
        if (!w->allow_basebackup) {
            pgc_done(c, -ENOTSUP,
                     "%s has wal_log_hints off and no data checksums: pg_rewind cannot work "
                     "(allow_basebackup: true would offer a rebuild with pg_basebackup); "
                     "nothing was changed",
                     u->srv->label);
            return;
        }
        pgc_fmt(w->why_not, sizeof w->why_not,
                "wal_log_hints is off and data checksums are disabled");
        cannot_rewind(w);
        return;
    }
    primary_checkpoint(w);
}

static void primary_checkpoint(struct rewind *w)
{
    struct unit *u = &w->units[w->u];
    int rc = pgc_query_long(u->pri, "CHECKPOINT", on_primary_checkpoint);
    if (rc < 0)
        pgc_done(&w->c, rc, "cannot query %s: %s", u->pri->label, strerror(-rc));
}

static void unit_next(struct rewind *w)
{
    if (w->u >= w->n_units) {
        pgc_done(&w->c, 0, "%s", w->notes.len ? w->notes.data : "rewound");
        return;
    }
    struct unit *u = &w->units[w->u];
    w->watch[0] = u->pri;
    w->watch[1] = u->srv;
    pgc_observe(&w->c, w->watch, 2, on_pre);
}

static void run(struct rb_exec *x)
{
    struct rewind *w = start(x);
    if (w)
        unit_next(w);
}

/* --- check ------------------------------------------------------------------------------------- */

static void check_next(struct rewind *w);

static void on_check(struct pgc_ctx *c)
{
    struct rewind *w = (struct rewind *)c;
    struct unit *u = &w->units[w->u];
    if (u->pri->obs.err < 0) {
        pgc_done(c, u->pri->obs.err, "cannot reach the primary %s: %s", u->pri->label,
                 u->pri->obs.detail);
        return;
    }
    if (!streams_from(u)) {
        const struct pgc_obs *o = &u->srv->obs;
        if (o->err < 0)
            pgc_done(c, 0, "%s is down (%s)", u->srv->label, o->detail);
        else if (!o->in_recovery)
            pgc_done(c, 0, "%s is a primary", u->srv->label);
        else
            pgc_done(c, 0, "%s does not stream from %s on timeline %lld", u->srv->label,
                     u->pri->label, (long long)u->pri->obs.timeline);
        return;
    }
    w->u++;
    check_next(w);
}

static void check_next(struct rewind *w)
{
    if (w->u >= w->n_units) {
        pgc_done(&w->c, 1, "%s streams from %s on timeline %lld", w->units[0].srv->label,
                 w->units[0].pri->label, (long long)w->units[0].pri->obs.timeline);
        return;
    }
    struct unit *u = &w->units[w->u];
    w->watch[0] = u->pri;
    w->watch[1] = u->srv;
    pgc_observe(&w->c, w->watch, 2, on_check);
}

static void check(struct rb_exec *x)
{
    struct rewind *w = start(x);
    if (w)
        check_next(w);
}

static void describe(struct rb_exec *x, struct buf *out)
{
    const char *site = json_string_value(json_object_get(x->params, "site"));
    const char *primary = json_string_value(json_object_get(x->params, "primary"));
    buf_printf(out, "rewind the old primary in %s with pg_rewind and restart it as a replica of %s",
               site ? site : "?", primary ? primary : "?");
    if (json_is_true(json_object_get(x->params, "allow_basebackup")))
        buf_append_str(out, " (asks before a rebuild with pg_basebackup)");
}

const struct rb_action_ops rb_action_pg_rewind = {
    .name = "pg.rewind",
    .summary = "rebuild an old primary as a replica with pg_rewind",
    .params = params,
    .default_timeout_ms = 1800000,
    .validate = validate,
    .describe = describe,
    .check = check,
    .run = run,
    .cancel = pgc_cancel,
    .release = pgc_release,
    .runs_on = "site",
};
