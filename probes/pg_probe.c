/* The postgres probe: reachability, role (pg_is_in_recovery), timeline,
 * LSNs, replay lag in bytes and seconds, the replicas a primary streams to
 * (pg_stat_replication) and whether the server accepts writes. One
 * connection per probe, reused between runs and reopened when it breaks. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/pg_async.h"
#include "lib/units.h"
#include "probes/probe.h"

/* One round trip. Functions that fail during recovery sit behind CASE,
 * which PostgreSQL evaluates lazily. pg_stat_wal_receiver.latest_end_lsn is
 * the primary's end of WAL as last reported to this replica: the lag behind
 * the primary is measured against it. Visibility of the wal receiver and
 * replication views needs pg_monitor (see examples/lab/README.md). */
static const char probe_sql[] =
    "SELECT pg_is_in_recovery() AS in_recovery,"
    " current_setting('transaction_read_only') = 'off' AS accepts_writes,"
    " current_setting('server_version_num')::int AS version,"
    " CASE WHEN pg_is_in_recovery() THEN"
    "   (SELECT received_tli FROM pg_stat_wal_receiver)"
    " ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
    " END AS timeline,"
    " CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END AS current_lsn,"
    " pg_last_wal_receive_lsn() AS receive_lsn,"
    " pg_last_wal_replay_lsn() AS replay_lsn,"
    " CASE WHEN pg_is_in_recovery() THEN"
    "   pg_wal_lsn_diff(greatest((SELECT latest_end_lsn FROM pg_stat_wal_receiver),"
    "     pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), pg_last_wal_replay_lsn())::bigint"
    " END AS replay_lag_bytes,"
    " CASE WHEN pg_is_in_recovery() THEN"
    "   CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
    "   ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END"
    " END AS replay_lag_seconds,"
    " (SELECT status FROM pg_stat_wal_receiver) AS receiver_status,"
    " (SELECT sender_host FROM pg_stat_wal_receiver) AS sender_host,"
    " current_setting('synchronous_standby_names') AS synchronous_standby_names,"
    " CASE WHEN pg_is_in_recovery() THEN NULL ELSE"
    "   (SELECT json_agg(json_build_object('name', application_name, 'state', state,"
    "     'sync_state', sync_state, 'replay_lsn', replay_lsn,"
    "     'replay_lag_bytes', pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,"
    "     'replay_lag_seconds', coalesce(extract(epoch FROM replay_lag), 0))"
    "     ORDER BY application_name)"
    "    FROM pg_stat_replication)"
    " END AS replicas";

struct pg_probe {
    pg_async_t *pg;
    uint64_t seq; /* the run a callback belongs to */
};

struct cb_ctx {
    struct probe *p;
    uint64_t seq;
};

static int col(const PGresult *r, const char *name)
{
    return PQfnumber(r, name);
}

static const char *val(const PGresult *r, const char *name)
{
    int c = col(r, name);
    if (c < 0 || PQgetisnull(r, 0, c))
        return NULL;
    return PQgetvalue(r, 0, c);
}

static bool is_true(const PGresult *r, const char *name)
{
    const char *v = val(r, name);
    return v && v[0] == 't';
}

static json_t *lsn_field(const PGresult *r, const char *name)
{
    const char *v = val(r, name);
    return v ? json_string(v) : json_null();
}

static void evaluate(struct probe *p, const PGresult *r)
{
    bool recovery = is_true(r, "in_recovery");
    bool writes = is_true(r, "accepts_writes");
    int64_t timeline = 0, lag_bytes = -1, version = 0;
    double lag_s = -1;
    pg_async_get_int64(r, 0, col(r, "timeline"), &timeline);
    pg_async_get_int64(r, 0, col(r, "version"), &version);
    if (recovery) {
        pg_async_get_int64(r, 0, col(r, "replay_lag_bytes"), &lag_bytes);
        pg_async_get_double(r, 0, col(r, "replay_lag_seconds"), &lag_s);
    }
    json_t *fields =
        json_pack("{s:b,s:b,s:I,s:I,s:o,s:o,s:o}", "in_recovery", recovery, "accepts_writes",
                  writes, "timeline", (json_int_t)timeline, "server_version", (json_int_t)version,
                  "current_lsn", lsn_field(r, "current_lsn"), "receive_lsn",
                  lsn_field(r, "receive_lsn"), "replay_lsn", lsn_field(r, "replay_lsn"));
    char size[32];
    struct buf detail;
    buf_init(&detail, PROBE_DETAIL_MAX - 1);
    bool ok = true;
    if (recovery) {
        const char *status = val(r, "receiver_status");
        json_object_set_new(fields, "replay_lag_bytes",
                            lag_bytes >= 0 ? json_integer(lag_bytes) : json_null());
        json_object_set_new(fields, "replay_lag_seconds",
                            lag_s >= 0 ? json_real(lag_s) : json_null());
        json_object_set_new(fields, "receiver_status", status ? json_string(status) : json_null());
        json_object_set_new(fields, "sender_host",
                            val(r, "sender_host") ? json_string(val(r, "sender_host"))
                                                  : json_null());
        units_format_size(lag_bytes > 0 ? (uint64_t)lag_bytes : 0, size, sizeof size);
        buf_printf(&detail, "replica timeline=%lld replay=%s lag=%s", (long long)timeline,
                   val(r, "replay_lsn") ? val(r, "replay_lsn") : "-", size);
        if (lag_s >= 0)
            buf_printf(&detail, " %.1fs", lag_s);
        buf_printf(&detail, " %s", status ? status : "not-streaming");
        if (p->cfg->max_replay_lag && lag_bytes >= 0 &&
            (uint64_t)lag_bytes > p->cfg->max_replay_lag) {
            char max[32];
            units_format_size(p->cfg->max_replay_lag, max, sizeof max);
            buf_printf(&detail, " (over max_replay_lag %s)", max);
            ok = false;
        }
    } else {
        const char *reps = val(r, "replicas");
        json_t *replicas = reps ? json_loads(reps, 0, NULL) : NULL;
        if (!json_is_array(replicas)) {
            json_decref(replicas);
            replicas = json_array();
        }
        buf_printf(&detail, "primary timeline=%lld lsn=%s %s replicas=%zu", (long long)timeline,
                   val(r, "current_lsn") ? val(r, "current_lsn") : "-",
                   writes ? "writable" : "read-only", json_array_size(replicas));
        size_t i;
        json_t *rep;
        json_array_foreach(replicas, i, rep)
        {
            json_int_t lb = json_integer_value(json_object_get(rep, "replay_lag_bytes"));
            units_format_size(lb > 0 ? (uint64_t)lb : 0, size, sizeof size);
            buf_printf(&detail, "%s%s %s %s lag=%s", i ? ", " : " (",
                       json_string_value(json_object_get(rep, "name")),
                       json_string_value(json_object_get(rep, "state")),
                       json_string_value(json_object_get(rep, "sync_state")), size);
        }
        if (json_array_size(replicas))
            buf_append_str(&detail, ")");
        json_object_set_new(fields, "replicas", replicas);
        const char *ssn = val(r, "synchronous_standby_names");
        json_object_set_new(fields, "synchronous_standby_names", json_string(ssn ? ssn : ""));
    }
    probe_finish(p, ok, fields, "%s", detail.data ? detail.data : "");
    buf_free(&detail);
}

static void on_query(pg_async_t *pg, struct pg_async_result *r, void *arg)
{
    (void)pg;
    struct cb_ctx *ctx = arg;
    struct probe *p = ctx->p;
    struct pg_probe *pp = p->drv;
    bool current = ctx->seq == pp->seq;
    free(ctx);
    if (!current)
        return;
    if (r->status < 0) {
        probe_finish(p, false, NULL, "query failed: %s", r->detail);
        return;
    }
    evaluate(p, r->res);
}

static void start_query(struct probe *p)
{
    struct pg_probe *pp = p->drv;
    struct cb_ctx *ctx = malloc(sizeof *ctx);
    if (!ctx) {
        probe_finish(p, false, NULL, "out of memory");
        return;
    }
    ctx->p = p;
    ctx->seq = pp->seq;
    int64_t left = p->cfg->timeout_ms - (probe_now_ms(p) - p->started_ms);
    if (left < 50)
        left = 50;
    int rc = pg_async_query(pp->pg, probe_sql, 0, NULL, (uint32_t)left, on_query, ctx);
    if (rc < 0) {
        free(ctx);
        probe_finish(p, false, NULL, "cannot start the query: %s", strerror(-rc));
    }
}

static void on_connect(pg_async_t *pg, struct pg_async_result *r, void *arg)
{
    (void)pg;
    struct cb_ctx *ctx = arg;
    struct probe *p = ctx->p;
    struct pg_probe *pp = p->drv;
    bool current = ctx->seq == pp->seq;
    free(ctx);
    if (!current)
        return;
    if (r->status < 0) {
        probe_finish(p, false, NULL, "connect failed: %s", r->detail);
        return;
    }
    start_query(p);
}

static int pg_open(struct probe *p)
{
    const struct config *cfg = p->sched->cfg;
    struct pg_probe *pp = calloc(1, sizeof *pp);
    if (!pp)
        return -ENOMEM;
    p->drv = pp;
    char port[8], label[160];
    snprintf(port, sizeof port, "%u", (unsigned)p->cfg->port);
    snprintf(label, sizeof label, "%s/%s", p->cfg->site, p->cfg->name);
    struct pg_async_param params[8];
    size_t n = 0;
    params[n++] = (struct pg_async_param){ "host", p->cfg->host };
    params[n++] = (struct pg_async_param){ "port", port };
    params[n++] = (struct pg_async_param){ "dbname", p->cfg->dbname };
    params[n++] = (struct pg_async_param){ "user", cfg->pg.user };
    params[n++] = (struct pg_async_param){ "application_name", "triad-probe" };
    params[n++] = (struct pg_async_param){ "sslmode", cfg->pg.sslmode };
    if (cfg->pg.sslrootcert)
        params[n++] = (struct pg_async_param){ "sslrootcert", cfg->pg.sslrootcert };
    struct pg_async_opts o = {
        .params = params,
        .nparams = n,
        .password_file = cfg->pg.password_file,
        .connect_timeout_ms = (uint32_t)p->cfg->timeout_ms,
        .query_timeout_ms = (uint32_t)p->cfg->timeout_ms,
        .max_result_bytes = 256 * 1024,
        .name = label,
        .quiet = true,
    };
    return pg_async_new(p->sched->loop, &o, &pp->pg);
}

static void pg_run(struct probe *p)
{
    struct pg_probe *pp = p->drv;
    pp->seq++;
    if (pg_async_is_connected(pp->pg)) {
        start_query(p);
        return;
    }
    struct cb_ctx *ctx = malloc(sizeof *ctx);
    if (!ctx) {
        probe_finish(p, false, NULL, "out of memory");
        return;
    }
    ctx->p = p;
    ctx->seq = pp->seq;
    int rc = pg_async_connect(pp->pg, on_connect, ctx);
    if (rc < 0) {
        free(ctx);
        probe_finish(p, false, NULL, "cannot connect: %s", strerror(-rc));
    }
}

static void pg_abort(struct probe *p)
{
    struct pg_probe *pp = p->drv;
    pp->seq++; /* whatever comes back now belongs to no run */
    if (pp->pg)
        pg_async_cancel(pp->pg);
}

static void on_pg_closed(pg_async_t *pg, void *arg)
{
    (void)pg;
    struct probe *p = arg;
    free(p->drv);
    p->drv = NULL;
    probe_driver_closed(p);
}

static void pg_close(struct probe *p)
{
    struct pg_probe *pp = p->drv;
    if (!pp || !pp->pg) {
        free(pp);
        p->drv = NULL;
        probe_driver_closed(p);
        return;
    }
    pp->seq++;
    pg_async_close(pp->pg, on_pg_closed, p);
}

const struct probe_driver probe_driver_postgres = {
    .kind = "postgres",
    .open = pg_open,
    .run = pg_run,
    .abort = pg_abort,
    .close = pg_close,
};
