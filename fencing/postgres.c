/* The postgres fence: the database stops accepting writes from clients.
 *
 *   ALTER SYSTEM SET default_transaction_read_only = on; pg_reload_conf();
 *   terminate every other client backend (they may hold a read-write
 *   transaction open);
 * then verified on a fresh connection by a write attempt that must fail
 * with SQLSTATE 25006 (read_only_sql_transaction), as it also does on a
 * server in recovery. Lifting it resets the setting and verifies that a
 * write succeeds. Needs, for the `triad` role: ALTER SYSTEM on that
 * parameter (PostgreSQL 15), EXECUTE on pg_reload_conf, pg_signal_backend. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fencing/fence.h"
#include "lib/pg_async.h"

struct pg_fence {
    pg_async_t *pg;
    int stage;
    int terminated;
};

static const char *const fence_sql[] = {
    "ALTER SYSTEM SET default_transaction_read_only = on",
    "SELECT pg_reload_conf()",
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    " AND application_name <> 'triad-probe'",
};
static const char *const unfence_sql[] = {
    "ALTER SYSTEM RESET default_transaction_read_only",
    "SELECT pg_reload_conf()",
};
/* A write that a read-only transaction refuses (temporary: no trace). */
static const char verify_sql[] = "CREATE TEMPORARY TABLE triad_fence_check (x int)";

static void next(struct fence_op *op);

static pg_async_t *connect_to(struct fence_op *op, int *err)
{
    const struct config *cfg = op->cfg;
    const struct cfg_pg_cluster *c = config_pg_cluster(cfg, op->fence->cluster);
    const struct cfg_member *m = c ? config_pg_member(c, op->fence->site) : NULL;
    if (!m) {
        *err = -EINVAL;
        return NULL;
    }
    char port[8], label[160];
    snprintf(port, sizeof port, "%u", (unsigned)m->port);
    snprintf(label, sizeof label, "fence %s", op->fence->name);
    struct pg_async_param params[7];
    size_t n = 0;
    params[n++] = (struct pg_async_param){ "host", m->host };
    params[n++] = (struct pg_async_param){ "port", port };
    params[n++] = (struct pg_async_param){ "dbname", c->dbname };
    params[n++] = (struct pg_async_param){ "user", cfg->pg.user };
    params[n++] = (struct pg_async_param){ "application_name", "triad-fence" };
    params[n++] = (struct pg_async_param){ "sslmode", cfg->pg.sslmode };
    if (cfg->pg.sslrootcert)
        params[n++] = (struct pg_async_param){ "sslrootcert", cfg->pg.sslrootcert };
    struct pg_async_opts o = {
        .params = params,
        .nparams = n,
        .password_file = cfg->pg.password_file,
        .connect_timeout_ms = (uint32_t)cfg->pg.connect_timeout_ms,
        .query_timeout_ms = (uint32_t)op->fence->timeout_ms,
        .name = label,
    };
    pg_async_t *pg = NULL;
    *err = pg_async_new(op->loop, &o, &pg);
    return pg;
}

static void on_verify(pg_async_t *pg, struct pg_async_result *r, void *arg)
{
    (void)pg;
    struct fence_op *op = arg;
    if (op->unfence) {
        if (r->status == 0)
            fence_op_finish(op, 0, "writes accepted again (verified by a write)");
        else
            fence_op_finish(op, -EPROTO, "lifting the fence did not take: %s", r->detail);
        return;
    }
    if (r->status == -EREMOTEIO && strcmp(r->sqlstate, "25006") == 0) {
        struct pg_fence *f = op->drv;
        fence_op_finish(op, 0, "read-only, %d client session(s) ended; a write was refused (25006)",
                        f->terminated);
    } else if (r->status == 0) {
        fence_op_finish(op, -EPROTO, "a write was still accepted after the fence");
    } else {
        fence_op_finish(op, r->status, "cannot verify: %s", r->detail);
    }
}

static void on_verify_connect(pg_async_t *pg, struct pg_async_result *r, void *arg)
{
    struct fence_op *op = arg;
    if (r->status < 0) {
        fence_op_finish(op, r->status, "cannot connect to verify: %s", r->detail);
        return;
    }
    fence_op_step(op, "verifying with a write attempt");
    int rc = pg_async_query(pg, verify_sql, 0, NULL, 0, on_verify, op);
    if (rc < 0)
        fence_op_finish(op, rc, "cannot verify: %s", strerror(-rc));
}

static void on_step(pg_async_t *pg, struct pg_async_result *r, void *arg)
{
    struct fence_op *op = arg;
    struct pg_fence *f = op->drv;
    (void)pg;
    if (r->status < 0) {
        fence_op_finish(op, r->status, "%s failed: %s", op->step, r->detail);
        return;
    }
    if (!op->unfence && f->stage == 3 && r->res && PQntuples(r->res) == 1) {
        int64_t n = 0;
        pg_async_get_int64(r->res, 0, 0, &n);
        f->terminated = (int)n;
    }
    next(op);
}

static void next(struct fence_op *op)
{
    struct pg_fence *f = op->drv;
    const char *const *sql = op->unfence ? unfence_sql : fence_sql;
    size_t n = op->unfence ? 2 : 3;
    if ((size_t)f->stage < n) {
        fence_op_step(op, sql[f->stage]);
        f->stage++;
        int rc = pg_async_query(f->pg, sql[f->stage - 1], 0, NULL, 0, on_step, op);
        if (rc < 0)
            fence_op_finish(op, rc, "%s: %s", sql[f->stage - 1], strerror(-rc));
        return;
    }
    /* Verify on a fresh session: this one may keep settings of its own. */
    pg_async_disconnect(f->pg);
    fence_op_step(op, "connecting to verify");
    int rc = pg_async_connect(f->pg, on_verify_connect, op);
    if (rc < 0)
        fence_op_finish(op, rc, "cannot connect to verify: %s", strerror(-rc));
}

static void on_connect(pg_async_t *pg, struct pg_async_result *r, void *arg)
{
    (void)pg;
    struct fence_op *op = arg;
    if (r->status < 0) {
        fence_op_finish(op, r->status, "cannot connect: %s", r->detail);
        return;
    }
    next(op);
}

static void pg_start(struct fence_op *op)
{
    struct pg_fence *f = calloc(1, sizeof *f);
    if (!f) {
        fence_op_finish(op, -ENOMEM, "out of memory");
        return;
    }
    op->drv = f;
    int err = 0;
    f->pg = connect_to(op, &err);
    if (!f->pg) {
        fence_op_finish(op, err, "cannot set up the connection: %s", strerror(-err));
        return;
    }
    fence_op_step(op, "connecting");
    int rc = pg_async_connect(f->pg, on_connect, op);
    if (rc < 0)
        fence_op_finish(op, rc, "cannot connect: %s", strerror(-rc));
}

static void on_released(pg_async_t *pg, void *arg)
{
    (void)pg;
    struct fence_op *op = arg;
    free(op->drv);
    op->drv = NULL;
    fence_op_released(op);
}

static void pg_release(struct fence_op *op)
{
    struct pg_fence *f = op->drv;
    if (!f || !f->pg) {
        free(f);
        op->drv = NULL;
        fence_op_released(op);
        return;
    }
    pg_async_close(f->pg, on_released, op);
}

const struct fence_driver fence_driver_postgres = {
    .method = "postgres",
    .can_unfence = true,
    .start = pg_start,
    .release = pg_release,
};
