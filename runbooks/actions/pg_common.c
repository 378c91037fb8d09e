/* Shared runtime of the pg.* actions: nodes and their connections,
 * observations, programs on the member's own host, standby files, and the
 * pure helpers behind them (see pg_common.h). */
#include "runbooks/actions/pg_common.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/fsutil.h"
#include "lib/log.h"

/* --- pure helpers --------------------------------------------------------------------- */

uint64_t pgc_lsn_behind(uint64_t lsn, uint64_t ahead)
{
    return ahead > lsn ? ahead - lsn : 0;
}

const char *pgc_lsn_str(uint64_t lsn, char *out, size_t len)
{
    if (pg_async_lsn_format(lsn, out, len) < 0 && len)
        out[0] = '\0';
    return out;
}

void pgc_bytes_str(uint64_t bytes, char *out, size_t len)
{
    static const char *const unit[] = { "B", "kB", "MB", "GB", "TB" };
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < sizeof unit / sizeof unit[0]) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(out, len, "%llu B", (unsigned long long)bytes);
    else if (v < 10.0 && v != (double)(uint64_t)v)
        snprintf(out, len, "%.1f %s", v, unit[u]);
    else
        snprintf(out, len, "%.0f %s", v, unit[u]);
}

int pgc_expand_site(const char *in, const char *site, char *out, size_t len)
{
    static const char tok[] = "{site}";
    size_t o = 0, sl = strlen(site);
    if (!len)
        return -ENOSPC;
    while (*in) {
        const char *piece = in;
        size_t n = 1;
        if (strncmp(in, tok, sizeof tok - 1) == 0) {
            piece = site;
            n = sl;
            in += sizeof tok - 1;
        } else {
            in++;
        }
        if (o + n >= len) {
            out[0] = '\0';
            return -ENOSPC;
        }
        memcpy(out + o, piece, n);
        o += n;
    }
    out[o] = '\0';
    return 0;
}

void pgc_slot_name(const char *site, char *out, size_t len)
{
    size_t o = 0;
    if (!len)
        return;
    size_t max = len < PGC_SLOT_NAME_MAX ? len : PGC_SLOT_NAME_MAX;
    for (const char *p = site; *p && o + 1 < max; p++) {
        unsigned char ch = (unsigned char)tolower((unsigned char)*p);
        out[o++] = (char)((isdigit(ch) || (ch >= 'a' && ch <= 'z') || ch == '_') ? ch : '_');
    }
    out[o] = '\0';
}

int pgc_conninfo_add(struct buf *b, const char *key, const char *value)
{
    int rc = buf_printf(b, "%s%s='", b->len ? " " : "", key);
    for (const char *p = value; rc == 0 && *p; p++) {
        if (*p == '\\' || *p == '\'')
            rc = buf_append(b, "\\", 1);
        if (rc == 0)
            rc = buf_append(b, p, 1);
    }
    return rc ? rc : buf_append_str(b, "'");
}

int pgc_conninfo_build(struct buf *b, const struct pgc_conninfo *ci)
{
    char num[24];
    int rc = 0;
    if (ci->host)
        rc |= pgc_conninfo_add(b, "host", ci->host);
    if (ci->port) {
        snprintf(num, sizeof num, "%u", (unsigned)ci->port);
        rc |= pgc_conninfo_add(b, "port", num);
    }
    if (ci->user)
        rc |= pgc_conninfo_add(b, "user", ci->user);
    if (ci->password)
        rc |= pgc_conninfo_add(b, "password", ci->password);
    if (ci->dbname)
        rc |= pgc_conninfo_add(b, "dbname", ci->dbname);
    if (ci->application_name)
        rc |= pgc_conninfo_add(b, "application_name", ci->application_name);
    if (ci->sslmode)
        rc |= pgc_conninfo_add(b, "sslmode", ci->sslmode);
    if (ci->sslrootcert)
        rc |= pgc_conninfo_add(b, "sslrootcert", ci->sslrootcert);
    if (ci->connect_timeout_s > 0) {
        snprintf(num, sizeof num, "%lld", (long long)ci->connect_timeout_s);
        rc |= pgc_conninfo_add(b, "connect_timeout", num);
    }
    return rc ? -EMSGSIZE : 0;
}

int pgc_sql_literal(struct buf *b, const char *s)
{
    int rc = buf_append_str(b, "E'");
    for (const char *p = s; rc == 0 && *p; p++) {
        if (*p == '\'')
            rc = buf_append_str(b, "''");
        else if (*p == '\\')
            rc = buf_append_str(b, "\\\\");
        else
            rc = buf_append(b, p, 1);
    }
    return rc ? rc : buf_append_str(b, "'");
}

int pgc_conf_literal(struct buf *b, const char *s)
{
    int rc = buf_append_str(b, "'");
    for (const char *p = s; rc == 0 && *p; p++) {
        if (*p == '\'' || *p == '\\')
            rc = buf_append(b, p, 1);
        if (rc == 0)
            rc = buf_append(b, p, 1);
    }
    return rc ? rc : buf_append_str(b, "'");
}

int pgc_pgpass_line(struct buf *b, const char *password)
{
    int rc = buf_append_str(b, "*:*:*:*:");
    for (const char *p = password; rc == 0 && *p; p++) {
        if (*p == ':' || *p == '\\')
            rc = buf_append(b, "\\", 1);
        if (rc == 0)
            rc = buf_append(b, p, 1);
    }
    return rc ? rc : buf_append_str(b, "\n");
}

/* The setting a postgresql.conf line sets ("name = value", "name value"),
 * or NULL for comments, blank and include lines. */
static size_t line_key(const char *line, size_t len, const char **key)
{
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    size_t start = i;
    while (i < len && (isalnum((unsigned char)line[i]) || line[i] == '_' || line[i] == '.'))
        i++;
    *key = line + start;
    return i - start;
}

int pgc_autoconf_set(const char *old, const char *const *keys, const char *const *values,
                     struct buf *out)
{
    int rc = 0;
    if (!old || !*old)
        rc = buf_append_str(out, "# Do not edit this file manually!\n"
                                 "# It will be overwritten by the ALTER SYSTEM command.\n");
    for (const char *p = old; rc == 0 && p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        const char *key;
        size_t kl = line_key(p, len, &key);
        bool drop = false;
        for (size_t i = 0; kl && keys[i]; i++) {
            if (strlen(keys[i]) == kl && strncasecmp(key, keys[i], kl) == 0)
                drop = true;
        }
        if (!drop) {
            rc = buf_append(out, p, len);
            if (rc == 0)
                rc = buf_append_str(out, "\n");
        }
        p += len + (nl ? 1 : 0);
    }
    for (size_t i = 0; rc == 0 && keys[i]; i++) {
        if (!values[i])
            continue;
        rc = buf_printf(out, "%s = ", keys[i]);
        if (rc == 0)
            rc = pgc_conf_literal(out, values[i]);
        if (rc == 0)
            rc = buf_append_str(out, "\n");
    }
    return rc;
}

/* The value after "Key:" on its own line of pg_controldata output. */
static bool cd_value(const char *text, const char *key, char *out, size_t len)
{
    size_t kl = strlen(key);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, key, kl) == 0 && p[kl] == ':') {
            const char *v = p + kl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t n = strcspn(v, "\r\n");
            while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
                n--;
            if (n >= len)
                return false;
            memcpy(out, v, n);
            out[n] = '\0';
            return true;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return false;
}

int pgc_controldata_parse(const char *text, struct pgc_controldata *out)
{
    char v[64];
    memset(out, 0, sizeof *out);
    if (!cd_value(text, "Database cluster state", out->state, sizeof out->state))
        return -EINVAL;
    if (cd_value(text, "Latest checkpoint location", v, sizeof v) &&
        pg_async_lsn_parse(v, &out->checkpoint_lsn) == 0)
        out->have_checkpoint = true;
    if (!out->have_checkpoint)
        return -EINVAL;
    if (cd_value(text, "Latest checkpoint's REDO location", v, sizeof v))
        pg_async_lsn_parse(v, &out->redo_lsn);
    if (cd_value(text, "Latest checkpoint's TimeLineID", v, sizeof v))
        out->timeline = strtoll(v, NULL, 10);
    if (cd_value(text, "Minimum recovery ending location", v, sizeof v))
        pg_async_lsn_parse(v, &out->min_recovery_lsn);
    if (cd_value(text, "wal_log_hints setting", v, sizeof v))
        out->wal_log_hints = strcmp(v, "on") == 0;
    if (cd_value(text, "Data page checksum version", v, sizeof v))
        out->checksum_version = strtoll(v, NULL, 10);
    return 0;
}

bool pgc_controldata_clean(const struct pgc_controldata *cd)
{
    return strcmp(cd->state, "shut down") == 0 || strcmp(cd->state, "shut down in recovery") == 0;
}

/* --- runtime ------------------------------------------------------------------------------ */

static const char obs_sql[] =
    "SELECT pg_is_in_recovery() AS in_recovery,"
    " current_setting('default_transaction_read_only') AS read_only,"
    " CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END AS current_lsn,"
    " pg_last_wal_receive_lsn() AS receive_lsn,"
    " pg_last_wal_replay_lsn() AS replay_lsn,"
    " CASE WHEN pg_is_in_recovery() THEN w.received_tli"
    " ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
    " END AS timeline,"
    " CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END AS pause_state,"
    " w.status AS wr_status, w.sender_host, w.sender_port, w.received_tli, w.slot_name,"
    " w.latest_end_lsn,"
    " current_setting('synchronous_standby_names') AS sync_names,"
    " current_setting('wal_log_hints') AS wal_log_hints,"
    " current_setting('data_checksums') AS data_checksums"
    " FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS w ON true";

static void copy_str(char *out, size_t len, const char *s)
{
    snprintf(out, len, "%s", s ? s : "");
}

const char *pgc_old_primary(struct pgc_ctx *c, const char *site)
{
    const char *from = json_string_value(rb_ctx_get(c->x->ctx, "run.from"));
    if (from && strcmp(from, site) != 0 && config_site(c->cfg, from))
        return from;
    const struct cfg_site *p = config_primary(c->cfg);
    return p && strcmp(p->name, site) != 0 ? p->name : NULL;
}

int pgc_init(struct pgc_ctx *c, struct rb_exec *x)
{
    c->x = x;
    c->cfg = x->env->cfg;
    x->state = c;
    uv_timer_init(x->env->loop, &c->timer);
    c->timer.data = c;
    c->timer_open = true;
    int64_t budget =
        x->step && x->step->timeout_ms > 0 ? x->step->timeout_ms : x->action->default_timeout_ms;
    c->deadline_ms = (int64_t)uv_now(x->env->loop) + budget * 9 / 10;
    const char *group = json_string_value(json_object_get(x->params, "group"));
    const char *cluster = json_string_value(json_object_get(x->params, "cluster"));
    if (group) {
        const struct cfg_pg_group *g = config_pg_group(c->cfg, group);
        if (!g) {
            pgc_done(c, -EINVAL, "'%s' is not a configured database group", group);
            return -EINVAL;
        }
        for (size_t i = 0; i < g->n_clusters && c->n_clusters < CFG_MAX_LIST; i++) {
            const struct cfg_pg_cluster *cl = config_pg_cluster(c->cfg, g->clusters[i]);
            if (cl)
                c->clusters[c->n_clusters++] = cl;
        }
    } else if (cluster) {
        const struct cfg_pg_cluster *cl = config_pg_cluster(c->cfg, cluster);
        if (cl)
            c->clusters[c->n_clusters++] = cl;
    }
    if (!c->n_clusters) {
        pgc_done(c, -EINVAL, "no PostgreSQL cluster to work on (group or cluster)");
        return -EINVAL;
    }
    return 0;
}

struct pgc_node *pgc_node_get(struct pgc_ctx *c, const struct cfg_pg_cluster *cl, const char *site,
                              enum pgc_as as, bool per_db)
{
    const struct cfg_member *m = config_pg_member(cl, site);
    if (!m)
        return NULL;
    for (size_t i = 0; i < c->n_nodes; i++) {
        struct pgc_node *n = &c->nodes[i];
        if (n->as == as && n->member->port == m->port && strcmp(n->member->host, m->host) == 0 &&
            (!per_db || strcmp(n->dbname, cl->dbname) == 0))
            return n;
    }
    if (c->n_nodes >= PGC_MAX_NODES)
        return NULL;
    struct pgc_node *n = &c->nodes[c->n_nodes++];
    memset(n, 0, sizeof *n);
    n->c = c;
    n->site = m->site;
    n->cluster = cl;
    n->member = m;
    n->dbname = cl->dbname;
    n->as = as;
    snprintf(n->label, sizeof n->label, "%s:%u (%s)", m->host, (unsigned)m->port, site);
    return n;
}

size_t pgc_site_nodes(struct pgc_ctx *c, const char *site, struct pgc_node **out, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < c->n_clusters; i++) {
        struct pgc_node *n = pgc_node_get(c, c->clusters[i], site, PGC_AS_TRIAD, false);
        if (!n)
            continue;
        bool seen = false;
        for (size_t j = 0; j < k; j++)
            seen |= out[j] == n;
        if (!seen && k < max)
            out[k++] = n;
    }
    return k;
}

static int node_open(struct pgc_node *n)
{
    const struct config *cfg = n->c->cfg;
    char port[8], name[200];
    snprintf(port, sizeof port, "%u", (unsigned)n->member->port);
    snprintf(name, sizeof name, "%s %s", n->c->x->action->name, n->label);
    bool repl = n->as == PGC_AS_REPLICATION;
    struct pg_async_param params[7];
    size_t k = 0;
    params[k++] = (struct pg_async_param){ "host", n->member->host };
    params[k++] = (struct pg_async_param){ "port", port };
    params[k++] = (struct pg_async_param){ "dbname", n->dbname };
    params[k++] = (struct pg_async_param){ "user", repl ? cfg->pg.replication_user : cfg->pg.user };
    params[k++] = (struct pg_async_param){ "application_name", "triad-action" };
    if (cfg->pg.sslmode)
        params[k++] = (struct pg_async_param){ "sslmode", cfg->pg.sslmode };
    if (cfg->pg.sslrootcert)
        params[k++] = (struct pg_async_param){ "sslrootcert", cfg->pg.sslrootcert };
    struct pg_async_opts o = {
        .params = params,
        .nparams = k,
        .password_file = repl ? cfg->pg.replication_password_file : cfg->pg.password_file,
        .connect_timeout_ms =
            n->connect_timeout_ms ? n->connect_timeout_ms : (uint32_t)cfg->pg.connect_timeout_ms,
        .name = name,
        .quiet = true, /* the step's detail reports failures (polling must not flood) */
    };
    return pg_async_new(n->c->x->env->loop, &o, &n->pg);
}

static void on_node_query(pg_async_t *pg, struct pg_async_result *r, void *arg)
{
    (void)pg;
    struct pgc_node *n = arg;
    if (n->c->over)
        return;
    pgc_query_cb cb = n->cb;
    n->cb = NULL;
    cb(n, r);
}

static void fail_now(struct pgc_node *n, int rc)
{
    struct pg_async_result r = { .status = rc, .sqlstate = "", .detail = strerror(-rc) };
    pgc_query_cb cb = n->cb;
    n->cb = NULL;
    cb(n, &r);
}

static void on_node_connected(pg_async_t *pg, struct pg_async_result *r, void *arg)
{
    struct pgc_node *n = arg;
    if (n->c->over)
        return;
    if (r->status < 0) {
        pgc_query_cb cb = n->cb;
        n->cb = NULL;
        cb(n, r);
        return;
    }
    int rc = pg_async_query(pg, n->sql, n->nparams, n->params, n->timeout_ms, on_node_query, n);
    if (n->restore_timeout) {
        n->timeout_ms = n->saved_timeout;
        n->restore_timeout = false;
    }
    if (rc < 0)
        fail_now(n, rc);
}

int pgc_query(struct pgc_node *n, const char *sql, int nparams, const char *const *params,
              pgc_query_cb cb)
{
    if (nparams < 0 || nparams > 4)
        return -EINVAL;
    if (n->cb)
        return -EBUSY; /* one operation per node at a time */
    if (!n->pg) {
        int rc = node_open(n);
        if (rc < 0)
            return rc;
    }
    /* Copies: the query may wait for the connection. */
    for (int i = 0; i < 4; i++) {
        free(n->param_copy[i]);
        n->param_copy[i] = NULL;
    }
    for (int i = 0; i < nparams; i++) {
        if (params[i] && !(n->param_copy[i] = strdup(params[i])))
            return -ENOMEM;
        n->params[i] = n->param_copy[i];
    }
    n->cb = cb;
    n->sql = sql;
    n->nparams = nparams;
    int rc;
    if (pg_async_is_connected(n->pg))
        rc = pg_async_query(n->pg, sql, nparams, n->params, n->timeout_ms, on_node_query, n);
    else
        rc = pg_async_connect(n->pg, on_node_connected, n);
    if (rc < 0)
        n->cb = NULL;
    return rc;
}

int pgc_query_long(struct pgc_node *n, const char *sql, pgc_query_cb cb)
{
    int64_t left = pgc_left_ms(n->c);
    uint32_t saved = n->timeout_ms;
    n->timeout_ms = (uint32_t)(left > 1000 ? left : 1000);
    int rc = pgc_query(n, sql, 0, NULL, cb);
    /* pg_async took the timeout with the query (or the connect stored it:
     * restored when that query is sent, see on_node_connected). */
    if (rc < 0 || pg_async_is_connected(n->pg)) {
        n->timeout_ms = saved;
    } else {
        n->restore_timeout = true;
        n->saved_timeout = saved;
    }
    return rc;
}

void pgc_disconnect(struct pgc_node *n)
{
    if (n->pg)
        pg_async_disconnect(n->pg);
}

static const char *col(const PGresult *r, const char *name)
{
    int k = PQfnumber(r, name);
    if (k < 0 || PQntuples(r) < 1 || PQgetisnull(r, 0, k))
        return NULL;
    return PQgetvalue(r, 0, k);
}

static bool col_bool(const PGresult *r, const char *name)
{
    bool v = false;
    int k = PQfnumber(r, name);
    return k >= 0 && pg_async_get_bool(r, 0, k, &v) == 0 && v;
}

static bool col_lsn(const PGresult *r, const char *name, uint64_t *out)
{
    int k = PQfnumber(r, name);
    return k >= 0 && pg_async_get_lsn(r, 0, k, out) == 0;
}

static int64_t col_int(const PGresult *r, const char *name)
{
    int64_t v = 0;
    int k = PQfnumber(r, name);
    if (k < 0 || pg_async_get_int64(r, 0, k, &v) < 0)
        return 0;
    return v;
}

static void obs_parse(struct pgc_obs *o, const PGresult *r)
{
    o->in_recovery = col_bool(r, "in_recovery");
    o->read_only = col_bool(r, "read_only");
    o->has_current = col_lsn(r, "current_lsn", &o->current_lsn);
    o->has_receive = col_lsn(r, "receive_lsn", &o->receive_lsn);
    o->has_replay = col_lsn(r, "replay_lsn", &o->replay_lsn);
    o->has_latest_end = col_lsn(r, "latest_end_lsn", &o->latest_end_lsn);
    o->timeline = col_int(r, "timeline");
    copy_str(o->pause_state, sizeof o->pause_state, col(r, "pause_state"));
    copy_str(o->wr_status, sizeof o->wr_status, col(r, "wr_status"));
    copy_str(o->sender_host, sizeof o->sender_host, col(r, "sender_host"));
    o->sender_port = col_int(r, "sender_port");
    o->received_tli = col_int(r, "received_tli");
    copy_str(o->slot_name, sizeof o->slot_name, col(r, "slot_name"));
    copy_str(o->sync_names, sizeof o->sync_names, col(r, "sync_names"));
    o->wal_log_hints = col_bool(r, "wal_log_hints");
    o->data_checksums = col_bool(r, "data_checksums");
}

static void observed(struct pgc_ctx *c)
{
    if (c->pending && --c->pending == 0 && !c->over)
        c->after_observe(c);
}

static void on_obs(struct pgc_node *n, struct pg_async_result *r)
{
    struct pgc_obs *o = &n->obs;
    o->done = true;
    o->err = r->status;
    if (r->status < 0) {
        copy_str(o->detail, sizeof o->detail, r->detail && *r->detail ? r->detail : "failed");
    } else if (!r->res || PQntuples(r->res) != 1) {
        o->err = -EPROTO;
        copy_str(o->detail, sizeof o->detail, "unexpected answer to the observation");
    } else {
        obs_parse(o, r->res);
    }
    observed(n->c);
}

void pgc_observe(struct pgc_ctx *c, struct pgc_node *const *nodes, size_t n, pgc_fn then)
{
    c->after_observe = then;
    c->pending = 1; /* held while starting, so `then` runs once, at the end */
    for (size_t i = 0; i < n; i++) {
        struct pgc_node *nd = nodes[i];
        memset(&nd->obs, 0, sizeof nd->obs);
        c->pending++;
        int rc = pgc_query(nd, obs_sql, 0, NULL, on_obs);
        if (rc < 0) {
            nd->obs.done = true;
            nd->obs.err = rc;
            copy_str(nd->obs.detail, sizeof nd->obs.detail, strerror(-rc));
            c->pending--;
        }
    }
    observed(c);
}

static void on_timer(uv_timer_t *t)
{
    struct pgc_ctx *c = t->data;
    if (c->over || !c->timer_fn)
        return;
    pgc_fn fn = c->timer_fn;
    c->timer_fn = NULL;
    fn(c);
}

void pgc_later(struct pgc_ctx *c, uint64_t ms, pgc_fn fn)
{
    c->timer_fn = fn;
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

int64_t pgc_left_ms(const struct pgc_ctx *c)
{
    return c->deadline_ms - (int64_t)uv_now(c->x->env->loop);
}

static void release_step(struct pgc_ctx *c);

static void on_proc(struct proc *p, const struct proc_result *r, void *arg)
{
    (void)p;
    struct pgc_ctx *c = arg;
    c->proc = NULL;
    c->proc_running = false;
    if (c->closing) {
        release_step(c);
        return;
    }
    if (c->over)
        return;
    c->proc_cb(c, r);
}

int pgc_spawn(struct pgc_ctx *c, const char *const *argv, const char *const *env, pgc_proc_cb cb)
{
    int64_t left = pgc_left_ms(c);
    struct proc_opts o = {
        .argv = argv,
        .env = env,
        .cwd = "/",
        .timeout_ms = (uint32_t)(left > 1000 ? left : 1000),
    };
    c->proc_cb = cb;
    int rc = proc_start(c->x->env->loop, &o, on_proc, c, &c->proc);
    if (rc == 0)
        c->proc_running = true;
    return rc;
}

void pgc_fmt(char *out, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, len, fmt, ap);
    va_end(ap);
}

void pgc_proc_tail(const struct proc_result *r, char *out, size_t len)
{
    proc_output_tail(r->output, r->output_len, out, len);
}

void pgc_done(struct pgc_ctx *c, int status, const char *fmt, ...)
{
    if (c->over)
        return;
    c->over = true;
    if (c->timer_open)
        uv_timer_stop(&c->timer);
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    /* One line: libpq puts hints on lines of their own. */
    size_t o = 0;
    for (const char *p = detail; *p; p++) {
        if (*p == '\n' || *p == '\t' || *p == '\r') {
            if (o && detail[o - 1] != ' ')
                detail[o++] = ' ';
            continue;
        }
        detail[o++] = *p;
    }
    detail[o] = '\0';
    rb_exec_done(c->x, status, "%s", detail);
}

void pgc_cancel(struct rb_exec *x)
{
    struct pgc_ctx *c = x->state;
    if (!c)
        return;
    c->over = true;
    if (c->timer_open)
        uv_timer_stop(&c->timer);
    for (size_t i = 0; i < c->n_nodes; i++) {
        if (c->nodes[i].pg)
            pg_async_cancel(c->nodes[i].pg);
    }
    if (c->proc_running)
        proc_cancel(c->proc);
}

static void release_step(struct pgc_ctx *c)
{
    if (--c->closing > 0)
        return;
    struct rb_exec *x = c->x;
    if (c->cleanup)
        c->cleanup(c);
    x->state = NULL;
    free(c);
    rb_exec_released(x);
}

static void on_pg_closed(pg_async_t *pg, void *arg)
{
    (void)pg;
    release_step(arg);
}

static void on_timer_closed(uv_handle_t *h)
{
    release_step(h->data);
}

void pgc_release(struct rb_exec *x)
{
    struct pgc_ctx *c = x->state;
    if (!c) {
        rb_exec_released(x);
        return;
    }
    c->over = true;
    c->closing = 1; /* held until everything below has started closing */
    pgc_passfile_remove(c);
    if (c->proc_running) {
        c->closing++;
        proc_cancel(c->proc);
    }
    for (size_t i = 0; i < c->n_nodes; i++) {
        for (int k = 0; k < 4; k++)
            free(c->nodes[i].param_copy[k]);
        if (c->nodes[i].pg) {
            c->closing++;
            pg_async_close(c->nodes[i].pg, on_pg_closed, c);
            c->nodes[i].pg = NULL;
        }
    }
    if (c->timer_open) {
        c->closing++;
        c->timer_open = false;
        uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    }
    release_step(c);
}

int pgc_read_password(const char *path, char *out, size_t len)
{
    struct buf b;
    buf_init(&b, PG_ASYNC_PASSWORD_MAX + 2);
    int rc = fsutil_read(path, &b);
    if (rc == -EMSGSIZE)
        rc = 0; /* only the first line counts */
    if (rc == 0) {
        size_t n = b.data ? strcspn(b.data, "\r\n") : 0;
        if (n >= len || n > PG_ASYNC_PASSWORD_MAX)
            rc = -EMSGSIZE;
        else {
            memcpy(out, b.data, n);
            out[n] = '\0';
        }
    }
    if (b.data)
        explicit_bzero(b.data, b.alloc);
    buf_free(&b);
    return rc;
}

int pgc_replica_conninfo(const struct config *cfg, const struct cfg_member *m, const char *site,
                         struct buf *b, char *why, size_t whylen)
{
    char password[PG_ASYNC_PASSWORD_MAX + 1] = "";
    if (!cfg->pg.replication_user) {
        pgc_fmt(why, whylen, "postgres.replication.user is not configured");
        return -EINVAL;
    }
    if (cfg->pg.replication_password_file) {
        int rc = pgc_read_password(cfg->pg.replication_password_file, password, sizeof password);
        if (rc < 0) {
            pgc_fmt(why, whylen, "cannot read postgres.replication.password_file: %s",
                    strerror(-rc));
            return rc;
        }
    }
    int64_t ct = cfg->pg.connect_timeout_ms / 1000;
    struct pgc_conninfo ci = {
        .host = m->host,
        .port = m->port,
        .user = cfg->pg.replication_user,
        .password = password[0] ? password : NULL,
        .application_name = site, /* what synchronous_standby_names lists */
        .sslmode = cfg->pg.sslmode,
        .sslrootcert = cfg->pg.sslrootcert,
        .connect_timeout_s = ct > 0 ? ct : 1,
    };
    int rc = pgc_conninfo_build(b, &ci);
    explicit_bzero(password, sizeof password);
    if (rc < 0)
        pgc_fmt(why, whylen, "primary_conninfo too long");
    return rc;
}

/* --- the member's own host -------------------------------------------------------------- */

static char **expand_argv(char **argv, size_t n, const char *site)
{
    if (!n)
        return NULL;
    char **out = calloc(n + 1, sizeof *out);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char tmp[2048];
        if (pgc_expand_site(argv[i], site, tmp, sizeof tmp) < 0 || !(out[i] = strdup(tmp))) {
            for (size_t j = 0; j < i; j++)
                free(out[j]);
            free(out);
            return NULL;
        }
    }
    return out;
}

int pgc_local_get(const struct cfg_pg_cluster *cl, const char *site, struct pgc_local *out,
                  char *why, size_t whylen)
{
    const struct cfg_pg_local *l = &cl->local;
    memset(out, 0, sizeof *out);
    if (!l->set || !l->data_dir) {
        pgc_fmt(why, whylen,
                "postgres.clusters.%s.local is not configured: this step needs the data "
                "directory and how to stop and start the server on its host",
                cl->name);
        return -ENOTSUP;
    }
    if (pgc_expand_site(l->data_dir, site, out->data_dir, sizeof out->data_dir) < 0 ||
        pgc_expand_site(l->bindir ? l->bindir : "/usr/lib/postgresql/15/bin", site, out->bindir,
                        sizeof out->bindir) < 0 ||
        pgc_expand_site(l->os_user ? l->os_user : "postgres", site, out->os_user,
                        sizeof out->os_user) < 0) {
        pgc_fmt(why, whylen, "postgres.clusters.%s.local: a path is too long", cl->name);
        return -ENAMETOOLONG;
    }
    out->start = expand_argv(l->start, l->n_start, site);
    out->stop = expand_argv(l->stop, l->n_stop, site);
    if ((l->n_start && !out->start) || (l->n_stop && !out->stop)) {
        pgc_local_free(out);
        pgc_fmt(why, whylen, "postgres.clusters.%s.local: start/stop too long", cl->name);
        return -ENAMETOOLONG;
    }
    return 0;
}

static void free_argv(char **a)
{
    for (size_t i = 0; a && a[i]; i++)
        free(a[i]);
    free(a);
}

void pgc_local_free(struct pgc_local *l)
{
    free_argv(l->start);
    free_argv(l->stop);
    l->start = l->stop = NULL;
}

static const char *runuser_path(void)
{
    static const char *const paths[] = { "/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser" };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        if (access(paths[i], X_OK) == 0)
            return paths[i];
    }
    return NULL;
}

int pgc_spawn_pg(struct pgc_ctx *c, const struct pgc_local *l, const char *prog,
                 const char *const *args, const char *const *env, pgc_proc_cb cb)
{
    const char *argv[24];
    const char *envv[8];
    char path[1100];
    size_t k = 0, e = 0;
    snprintf(path, sizeof path, "%s/%s", l->bindir, prog);
    /* pg_ctl and pg_rewind refuse to run as root. */
    if (geteuid() == 0 && l->os_user[0] && strcmp(l->os_user, "root") != 0) {
        const char *ru = runuser_path();
        if (!ru)
            return -ENOENT;
        argv[k++] = ru;
        argv[k++] = "-u";
        argv[k++] = l->os_user;
        argv[k++] = "--";
    }
    argv[k++] = path;
    for (size_t i = 0; args && args[i] && k + 1 < sizeof argv / sizeof argv[0]; i++)
        argv[k++] = args[i];
    argv[k] = NULL;
    envv[e++] = "LC_ALL=C"; /* pg_controldata and error messages in English */
    for (size_t i = 0; env && env[i] && e + 1 < sizeof envv / sizeof envv[0]; i++)
        envv[e++] = env[i];
    envv[e] = NULL;
    return pgc_spawn(c, argv, envv, cb);
}

int pgc_stop_server(struct pgc_ctx *c, const struct pgc_local *l, pgc_proc_cb cb)
{
    if (l->stop)
        return pgc_spawn(c, (const char *const *)l->stop, NULL, cb);
    const char *args[] = { "-D", l->data_dir, "-m", "fast", "-w", "-t", "60", "stop", NULL };
    return pgc_spawn_pg(c, l, "pg_ctl", args, NULL, cb);
}

int pgc_start_server(struct pgc_ctx *c, const struct pgc_local *l, pgc_proc_cb cb)
{
    if (l->start)
        return pgc_spawn(c, (const char *const *)l->start, NULL, cb);
    char log[1100];
    snprintf(log, sizeof log, "%s/triad-start.log", l->data_dir);
    const char *args[] = { "-D", l->data_dir, "-l", log, "-w", "-t", "60", "start", NULL };
    return pgc_spawn_pg(c, l, "pg_ctl", args, NULL, cb);
}

static void on_controldata(struct pgc_ctx *c, const struct proc_result *r)
{
    char tail[300];
    struct pgc_controldata cd;
    if (r->result < 0 || r->exit_status != 0) {
        pgc_proc_tail(r, tail, sizeof tail);
        c->cd_cb(c, r->result < 0 ? r->result : -EIO, NULL, tail[0] ? tail : "failed");
        return;
    }
    if (pgc_controldata_parse(r->output, &cd) < 0) {
        c->cd_cb(c, -EPROTO, NULL, "unexpected pg_controldata output");
        return;
    }
    c->cd_cb(c, 0, &cd, "");
}

int pgc_read_controldata(struct pgc_ctx *c, const struct pgc_local *l, pgc_controldata_cb cb)
{
    const char *args[] = { "-D", l->data_dir, NULL };
    c->cd_cb = cb;
    return pgc_spawn_pg(c, l, "pg_controldata", args, NULL, on_controldata);
}

/* Writes a file in the data directory, owned like the directory. */
static int write_owned(const char *path, const void *data, size_t len, const struct stat *owner)
{
    int rc = fsutil_write_atomic(path, data, len, 0600);
    if (rc == 0 && geteuid() == 0 && chown(path, owner->st_uid, owner->st_gid) < 0)
        rc = -errno;
    return rc;
}

int pgc_write_standby(const struct pgc_local *l, const char *conninfo, const char *slot, char *why,
                      size_t whylen)
{
    struct stat st;
    char path[1100];
    struct buf old, out;
    int rc;
    buf_init(&old, PGC_FILE_MAX);
    buf_init(&out, PGC_FILE_MAX + 4096);
    if (stat(l->data_dir, &st) < 0) {
        rc = -errno;
        pgc_fmt(why, whylen, "%s: %s", l->data_dir, strerror(-rc));
        goto out;
    }
    snprintf(path, sizeof path, "%s/postgresql.auto.conf", l->data_dir);
    rc = fsutil_read(path, &old);
    if (rc < 0 && rc != -ENOENT) {
        pgc_fmt(why, whylen, "cannot read %s: %s", path, strerror(-rc));
        goto out;
    }
    static const char *const keys[] = { "primary_conninfo", "primary_slot_name", NULL };
    const char *values[] = { conninfo, slot, NULL };
    rc = pgc_autoconf_set(old.data, keys, values, &out);
    if (rc == 0)
        rc = write_owned(path, out.data, out.len, &st);
    if (rc < 0) {
        pgc_fmt(why, whylen, "cannot write %s: %s", path, strerror(-rc));
        goto out;
    }
    snprintf(path, sizeof path, "%s/standby.signal", l->data_dir);
    rc = write_owned(path, "", 0, &st);
    if (rc < 0)
        pgc_fmt(why, whylen, "cannot write %s: %s", path, strerror(-rc));
out:
    if (old.data)
        explicit_bzero(old.data, old.alloc);
    if (out.data)
        explicit_bzero(out.data, out.alloc);
    buf_free(&old);
    buf_free(&out);
    return rc;
}

int pgc_passfile_create(struct pgc_ctx *c, const struct pgc_local *l, const char *password_file)
{
    char password[PG_ASYNC_PASSWORD_MAX + 1];
    struct buf line;
    struct stat st;
    int fd = -1, rc;
    pgc_passfile_remove(c);
    buf_init(&line, PG_ASYNC_PASSWORD_MAX * 2 + 16);
    if (stat(l->data_dir, &st) < 0) {
        rc = -errno;
        goto out;
    }
    rc = pgc_read_password(password_file, password, sizeof password);
    if (rc < 0)
        goto out;
    rc = pgc_pgpass_line(&line, password);
    explicit_bzero(password, sizeof password);
    if (rc < 0)
        goto out;
    snprintf(c->passfile, sizeof c->passfile, "/tmp/triad-pgpass-XXXXXX");
    fd = mkstemp(c->passfile);
    if (fd < 0) {
        rc = -errno;
        c->passfile[0] = '\0';
        goto out;
    }
    errno = 0;
    if (fchmod(fd, 0600) < 0 || (geteuid() == 0 && fchown(fd, st.st_uid, st.st_gid) < 0) ||
        write(fd, line.data, line.len) != (ssize_t)line.len)
        rc = errno ? -errno : -EIO;
out:
    if (fd >= 0)
        close(fd);
    if (rc < 0)
        pgc_passfile_remove(c);
    if (line.data)
        explicit_bzero(line.data, line.alloc);
    buf_free(&line);
    return rc;
}

void pgc_passfile_remove(struct pgc_ctx *c)
{
    if (c->passfile[0]) {
        unlink(c->passfile);
        c->passfile[0] = '\0';
    }
}
