/* Unit tests: the non-blocking PostgreSQL client (lib/pg_async) against a
 * throwaway PostgreSQL 15 (pgtmp), a listener that accepts and never
 * speaks, and closed ports. Every loop run has a guard timer. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "lib/log.h"
#include "lib/pg_async.h"
#include "pgtmp.h"

static struct pgtmp srv;
static int srv_state; /* 1 started, 0 could not start (fail), -1 cannot run here (skip) */
static char skip_why[256];
static pid_t silent_pid;
static int silent_port;
static int under_valgrind;

/* Timing slack: valgrind slows our side down a lot. */
static uint64_t slack_ms(void)
{
    return under_valgrind ? 2000 : 400;
}

#define REQUIRE_SERVER()                                                   \
    do {                                                                   \
        if (srv_state < 0) {                                               \
            print_message("# skipped: %s\n", skip_why);                    \
            skip();                                                        \
        }                                                                  \
        if (srv_state == 0)                                                \
            fail_msg("PostgreSQL 15 could not be started: %s", srv.why);   \
        if (srv.pid <= 0 && pgtmp_start(&srv) != 0)                        \
            fail_msg("PostgreSQL 15 could not be restarted: %s", srv.why); \
    } while (0)

static uint64_t ms_now(void)
{
    return uv_hrtime() / 1000000u;
}

/* --- loop with a guard ------------------------------------------------------ */

struct t_loop {
    uv_loop_t loop;
    uv_timer_t guard;
    int guard_fired;
};

static uv_loop_t *g_loop;
static int g_calls; /* callbacks of any rec so far */

static void guard_cb(uv_timer_t *t)
{
    struct t_loop *l = t->data;
    l->guard_fired = 1;
    uv_stop(t->loop);
}

static void loop_init(struct t_loop *l)
{
    memset(l, 0, sizeof *l);
    assert_int_equal(uv_loop_init(&l->loop), 0);
    assert_int_equal(uv_timer_init(&l->loop, &l->guard), 0);
    l->guard.data = l;
    g_loop = &l->loop;
    g_calls = 0;
}

/* Run until something calls uv_stop, nothing is left, or ms pass. */
static void loop_run(struct t_loop *l, uint64_t ms)
{
    l->guard_fired = 0;
    uv_timer_start(&l->guard, guard_cb, ms, 0);
    uv_unref((uv_handle_t *)&l->guard);
    uv_run(&l->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&l->guard);
}

/* Run until g_calls reaches target; fails on the guard. */
static void run_until(struct t_loop *l, int target, uint64_t ms)
{
    uint64_t end = ms_now() + ms;
    l->guard_fired = 0;
    while (g_calls < target && !l->guard_fired) {
        uint64_t now = ms_now();
        if (now >= end)
            break;
        loop_run(l, end - now);
    }
    assert_false(l->guard_fired);
    assert_int_equal(g_calls, target);
}

/* Everything must be closed by now: the loop closes cleanly. */
static void loop_done(struct t_loop *l)
{
    uv_close((uv_handle_t *)&l->guard, NULL);
    for (int i = 0; i < 100 && uv_run(&l->loop, UV_RUN_NOWAIT) != 0; i++)
        ;
    uv_run(&l->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&l->loop), 0);
    g_loop = NULL;
}

/* --- callback recorders ----------------------------------------------------- */

struct rec {
    int calls;
    int status;
    char sqlstate[6];
    char detail[PG_ASYNC_DETAIL_MAX];
    uint64_t elapsed_us;
    uint64_t at_ms;
    int order; /* value of a shared sequence when called */
    PGresult *res;
};

static int g_seq;

static void rec_store(struct rec *c, struct pg_async_result *r)
{
    c->calls++;
    c->status = r->status;
    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", r->sqlstate);
    snprintf(c->detail, sizeof c->detail, "%s", r->detail);
    c->elapsed_us = r->elapsed_us;
    c->at_ms = ms_now();
    c->order = ++g_seq;
    if (c->res)
        PQclear(c->res);
    c->res = r->res; /* keep it: we own it now */
    r->res = NULL;
    g_calls++;
}

static void rec_cb(pg_async_t *pg, struct pg_async_result *r, void *arg)
{
    (void)pg;
    rec_store(arg, r);
    if (g_loop)
        uv_stop(g_loop);
}

static void rec_clear(struct rec *c)
{
    if (c->res)
        PQclear(c->res);
    memset(c, 0, sizeof *c);
}

static int g_closed;
static int g_closed_order;

static void closed_cb(pg_async_t *pg, void *arg)
{
    (void)pg;
    (void)arg;
    g_closed++;
    g_closed_order = ++g_seq;
}

/* --- connection helpers ------------------------------------------------------ */

struct spec {
    const char *host; /* default 127.0.0.1 */
    const char *port; /* default the server's */
    const char *user; /* default postgres */
    const char *password_file;
    uint32_t connect_timeout_ms;
    int32_t server_check_ms;
    size_t max_result_bytes;
};

static pg_async_t *mk(struct t_loop *l, const struct spec *s)
{
    char port[16];
    snprintf(port, sizeof port, "%d", srv.port);
    struct pg_async_param p[] = {
        { "host", s->host ? s->host : "127.0.0.1" },
        { "port", s->port ? s->port : port },
        { "dbname", "postgres" },
        { "user", s->user ? s->user : "postgres" },
        { "application_name", "test_pg_async" },
    };
    struct pg_async_opts o = {
        .params = p,
        .nparams = sizeof p / sizeof p[0],
        .password_file = s->password_file,
        .connect_timeout_ms = s->connect_timeout_ms ? s->connect_timeout_ms : 5000,
        .server_check_ms = s->server_check_ms ? s->server_check_ms : 100,
        .max_result_bytes = s->max_result_bytes,
        .name = "test",
    };
    pg_async_t *pg = NULL;
    assert_int_equal(pg_async_new(&l->loop, &o, &pg), 0);
    assert_non_null(pg);
    return pg;
}

static void close_all(struct t_loop *l, pg_async_t **pgs, int n)
{
    int before = g_closed;
    for (int i = 0; i < n; i++)
        pg_async_close(pgs[i], closed_cb, NULL);
    loop_run(l, 5000);
    assert_int_equal(g_closed - before, n);
}

/* Connect pg and fail the test unless it worked. */
static void connect_ok(struct t_loop *l, pg_async_t *pg)
{
    struct rec c = { 0 };
    int target = g_calls + 1;
    assert_int_equal(pg_async_connect(pg, rec_cb, &c), 0);
    run_until(l, target, 10000);
    if (c.status != 0)
        fail_msg("connect: %d %s", c.status, c.detail);
    assert_true(pg_async_is_connected(pg));
    rec_clear(&c);
}

/* Run one query to completion; the caller owns c. */
static void query_sync(struct t_loop *l, pg_async_t *pg, const char *sql, int n,
                       const char *const *params, uint32_t tmo, struct rec *c)
{
    int target = g_calls + 1;
    rec_clear(c);
    assert_int_equal(pg_async_query(pg, sql, n, params, tmo, rec_cb, c), 0);
    run_until(l, target, tmo + 5000);
}

#define val(c, row, col) val_at((c), (row), (col), __LINE__)
static const char *val_at(const struct rec *c, int row, int col, int line)
{
    if (!c->res)
        fail_msg("line %d: no result: status %d (%s) %s", line, c->status, c->sqlstate, c->detail);
    if (row >= PQntuples(c->res) || col >= PQnfields(c->res))
        fail_msg("line %d: no row %d col %d in %d x %d", line, row, col, PQntuples(c->res),
                 PQnfields(c->res));
    return PQgetvalue(c->res, row, col);
}

/* Wait (blocking, between loop runs) until the backend is gone or idle. */
static long backend_gone_ms(int pid, long within_ms)
{
    char sql[200], out[32];
    uint64_t start = ms_now();
    snprintf(sql, sizeof sql,
             "select count(*) from pg_stat_activity where pid = %d and state = 'active'", pid);
    for (;;) {
        if (pgtmp_sql(&srv, sql, out, sizeof out) != 0)
            fail_msg("pg_stat_activity: %s", srv.why);
        if (strcmp(out, "0") == 0)
            return (long)(ms_now() - start);
        if ((long)(ms_now() - start) > within_ms)
            return -1;
        usleep(20000);
    }
}

/* --- tests without a server ------------------------------------------------- */

static void test_lsn(void **state)
{
    (void)state;
    uint64_t v = 0, w = 0;
    char buf[PG_ASYNC_LSN_STRLEN];

    assert_int_equal(pg_async_lsn_parse("16/B374D848", &v), 0);
    assert_true(v == 0x16B374D848ull);
    assert_int_equal(pg_async_lsn_format(v, buf, sizeof buf), 0);
    assert_string_equal(buf, "16/B374D848");
    assert_int_equal(pg_async_lsn_parse("0/0", &v), 0);
    assert_true(v == 0);
    assert_int_equal(pg_async_lsn_format(0, buf, sizeof buf), 0);
    assert_string_equal(buf, "0/0");
    assert_int_equal(pg_async_lsn_parse("FFFFFFFF/FFFFFFFF", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(pg_async_lsn_format(v, buf, sizeof buf), 0);
    assert_string_equal(buf, "FFFFFFFF/FFFFFFFF");
    assert_int_equal(pg_async_lsn_parse("abc/00def", &v), 0);
    assert_true(v == 0xABC00000DEFull);
    assert_int_equal(pg_async_lsn_format(v, buf, sizeof buf), 0);
    assert_string_equal(buf, "ABC/DEF");

    /* Round trips over a spread of values. */
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 2000; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t lsn = i % 4 == 0 ? x >> (i % 64) : x;
        assert_int_equal(pg_async_lsn_format(lsn, buf, sizeof buf), 0);
        assert_int_equal(pg_async_lsn_parse(buf, &w), 0);
        assert_true(w == lsn);
    }

    /* Distances are subtraction. */
    assert_int_equal(pg_async_lsn_parse("0/3000148", &v), 0);
    assert_int_equal(pg_async_lsn_parse("1/0", &w), 0);
    assert_true(w - v == 0x100000000ull - 0x3000148ull);

    static const char *const bad[] = { "",      "16",    "16/",         "/1",
                                       "G/1",   "1/G",   "1/2/3",       "1//2",
                                       " 1/2",  "1/2 ",  "-1/2",        "+1/2",
                                       "0x1/2", "1/0x2", "123456789/0", "0/123456789" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 77;
        assert_int_equal(pg_async_lsn_parse(bad[i], &v), -EINVAL);
        assert_true(v == 77);
    }
    assert_int_equal(pg_async_lsn_parse(NULL, &v), -EINVAL);

    /* The buffer must hold the longest form. */
    assert_int_equal(pg_async_lsn_format(UINT64_MAX, buf, PG_ASYNC_LSN_STRLEN - 1), -ENOSPC);
    assert_int_equal(pg_async_lsn_format(0x16B374D848ull, buf, 5), -ENOSPC);
    assert_string_equal(buf, "");
}

static void test_values(void **state)
{
    (void)state;
    PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    assert_non_null(r);
    PGresAttDesc at[4] = {
        { .name = "i", .format = 0, .typid = 20, .typlen = 8, .atttypmod = -1 },
        { .name = "b", .format = 0, .typid = 16, .typlen = 1, .atttypmod = -1 },
        { .name = "d", .format = 0, .typid = 701, .typlen = 8, .atttypmod = -1 },
        { .name = "l", .format = 0, .typid = 3220, .typlen = 8, .atttypmod = -1 },
    };
    assert_true(PQsetResultAttrs(r, 4, at));
    const char *rows[][4] = {
        { "9223372036854775807", "t", "1.5", "0/3000148" },
        { "-42", "f", "NaN", "16/B374D848" },
        { "9223372036854775808", "on", "1e400", "x/1" },
        { "12a", "maybe", "1.5s", "" },
    };
    for (int i = 0; i < 4; i++) {
        for (int f = 0; f < 4; f++)
            assert_true(PQsetvalue(r, i, f, (char *)rows[i][f], (int)strlen(rows[i][f])));
    }
    for (int f = 0; f < 4; f++)
        assert_true(PQsetvalue(r, 4, f, NULL, -1));

    int64_t i64 = 0;
    bool b = false;
    double d = 0;
    uint64_t l = 0;
    assert_int_equal(pg_async_get_int64(r, 0, 0, &i64), 0);
    assert_true(i64 == INT64_MAX);
    assert_int_equal(pg_async_get_int64(r, 1, 0, &i64), 0);
    assert_true(i64 == -42);
    assert_int_equal(pg_async_get_int64(r, 2, 0, &i64), -ERANGE);
    assert_int_equal(pg_async_get_int64(r, 3, 0, &i64), -EINVAL);
    assert_int_equal(pg_async_get_int64(r, 4, 0, &i64), -ENODATA);
    assert_int_equal(pg_async_get_int64(r, 5, 0, &i64), -EINVAL);
    assert_int_equal(pg_async_get_int64(r, 0, 4, &i64), -EINVAL);
    assert_int_equal(pg_async_get_int64(r, -1, 0, &i64), -EINVAL);
    assert_int_equal(pg_async_get_int64(NULL, 0, 0, &i64), -EINVAL);

    assert_int_equal(pg_async_get_bool(r, 0, 1, &b), 0);
    assert_true(b);
    assert_int_equal(pg_async_get_bool(r, 1, 1, &b), 0);
    assert_false(b);
    assert_int_equal(pg_async_get_bool(r, 2, 1, &b), 0);
    assert_true(b);
    assert_int_equal(pg_async_get_bool(r, 3, 1, &b), -EINVAL);
    assert_int_equal(pg_async_get_bool(r, 4, 1, &b), -ENODATA);

    assert_int_equal(pg_async_get_double(r, 0, 2, &d), 0);
    assert_true(d == 1.5);
    assert_int_equal(pg_async_get_double(r, 1, 2, &d), -ERANGE);
    assert_int_equal(pg_async_get_double(r, 2, 2, &d), -ERANGE);
    assert_int_equal(pg_async_get_double(r, 3, 2, &d), -EINVAL);

    assert_int_equal(pg_async_get_lsn(r, 0, 3, &l), 0);
    assert_true(l == 0x3000148ull);
    assert_int_equal(pg_async_get_lsn(r, 1, 3, &l), 0);
    assert_true(l == 0x16B374D848ull);
    assert_int_equal(pg_async_get_lsn(r, 2, 3, &l), -EINVAL);
    assert_int_equal(pg_async_get_lsn(r, 3, 3, &l), -EINVAL);
    assert_int_equal(pg_async_get_lsn(r, 4, 3, &l), -ENODATA);
    PQclear(r);
}

/* A listener that accepts TCP and never says a word: the connect must end
 * in -ETIMEDOUT at our deadline while the loop keeps running. */
struct ticker {
    uv_timer_t t;
    int ticks;
    uint64_t last_ms;
    uint64_t max_gap_ms; /* a blocked loop shows up here */
};

static void tick_cb(uv_timer_t *t)
{
    struct ticker *k = t->data;
    uint64_t now = ms_now();
    k->ticks++;
    if (now - k->last_ms > k->max_gap_ms)
        k->max_gap_ms = now - k->last_ms;
    k->last_ms = now;
}

/* Longest acceptable gap between ticks: far below any timeout we wait on,
 * so a loop blocked in a connect or query would fail it. */
static uint64_t max_gap_ok(void)
{
    return under_valgrind ? 400 : 150;
}

static void ticker_start(struct t_loop *l, struct ticker *k, uint64_t every_ms)
{
    k->ticks = 0;
    k->max_gap_ms = 0;
    k->last_ms = ms_now();
    assert_int_equal(uv_timer_init(&l->loop, &k->t), 0);
    k->t.data = k;
    assert_int_equal(uv_timer_start(&k->t, tick_cb, every_ms, every_ms), 0);
}

static void test_connect_timeout_silent(void **state)
{
    (void)state;
    struct t_loop l;
    struct rec c = { 0 };
    struct ticker k;
    char port[16];
    assert_true(silent_pid > 0);
    snprintf(port, sizeof port, "%d", silent_port);
    loop_init(&l);
    pg_async_t *pg = mk(&l, &(struct spec){ .port = port, .connect_timeout_ms = 500 });
    ticker_start(&l, &k, 20);
    uint64_t t0 = ms_now();
    assert_int_equal(pg_async_connect(pg, rec_cb, &c), 0);
    assert_int_equal(c.calls, 0); /* never from inside the call */
    run_until(&l, 1, 5000);
    uint64_t took = ms_now() - t0;
    uv_close((uv_handle_t *)&k.t, NULL);

    assert_int_equal(c.status, -ETIMEDOUT);
    assert_non_null(strstr(c.detail, "timed out after 500 ms"));
    assert_non_null(strstr(c.detail, "127.0.0.1"));
    assert_true(took >= 490 && took <= 500 + slack_ms());
    assert_true(c.elapsed_us >= 490000);
    /* 25 periods of 20 ms passed; the loop was never stuck. */
    print_message("# silent server: -ETIMEDOUT after %" PRIu64
                  " ms, %d ticks of 20 ms, longest gap %" PRIu64 " ms\n",
                  took, k.ticks, k.max_gap_ms);
    assert_true(k.ticks >= (under_valgrind ? 5 : 10));
    assert_true(k.max_gap_ms <= max_gap_ok());
    assert_false(pg_async_is_connected(pg));
    assert_null(pg_async_pgconn(pg));
    close_all(&l, &pg, 1);
    loop_done(&l);
}

static void test_connect_refused(void **state)
{
    (void)state;
    struct t_loop l;
    struct rec c = { 0 };
    char port[16];
    int p = pgtmp_free_port();
    assert_true(p > 0);
    snprintf(port, sizeof port, "%d", p);
    loop_init(&l);
    pg_async_t *pg[2];
    pg[0] = mk(&l, &(struct spec){ .port = port });
    assert_int_equal(pg_async_connect(pg[0], rec_cb, &c), 0);
    run_until(&l, 1, 5000);
    assert_int_equal(c.status, -ECONNREFUSED);
    assert_string_equal(c.sqlstate, "");
    assert_non_null(strstr(c.detail, port));
    assert_true(c.elapsed_us < 1000000);

    /* A unix socket directory without a server. */
    rec_clear(&c);
    pg[1] = mk(&l, &(struct spec){ .host = "/nonexistent-triad-dir", .port = port });
    assert_int_equal(pg_async_connect(pg[1], rec_cb, &c), 0);
    run_until(&l, 2, 5000);
    assert_int_equal(c.status, -ENOENT);
    assert_non_null(strstr(c.detail, "/nonexistent-triad-dir"));
    close_all(&l, pg, 2);
    loop_done(&l);
}

/* --- tests with the server ------------------------------------------------- */

static void test_connect_and_query(void **state)
{
    (void)state;
    REQUIRE_SERVER();
    struct t_loop l;
    struct rec c = { 0 }, q = { 0 };
    loop_init(&l);
    pg_async_t *pg = mk(&l, &(struct spec){ 0 });

    assert_false(pg_async_is_connected(pg));
    assert_int_equal(pg_async_query(pg, "select 1", 0, NULL, 0, rec_cb, &q), -ENOTCONN);
    assert_int_equal(pg_async_connect(pg, NULL, NULL), -EINVAL);
    assert_int_equal(pg_async_connect(pg, rec_cb, &c), 0);
    assert_int_equal(pg_async_connect(pg, rec_cb, &c), -EBUSY);
    run_until(&l, 1, 5000);
    assert_int_equal(c.status, 0);
    assert_null(c.res);
    assert_true(pg_async_is_connected(pg));
    assert_non_null(pg_async_pgconn(pg));
    assert_int_equal(PQserverVersion(pg_async_pgconn(pg)) / 10000, 15);
    assert_int_equal(pg_async_connect(pg, rec_cb, &c), -EISCONN);
    assert_string_equal(pg_async_name(pg), "test");

    /* The check interval asked of the server is in force. */
    query_sync(&l, pg, "show client_connection_check_interval", 0, NULL, 2000, &q);
    assert_int_equal(q.status, 0);
    assert_string_equal(val(&q, 0, 0), "100ms");

    query_sync(&l, pg, "select pg_is_in_recovery()", 0, NULL, 2000, &q);
    assert_int_equal(q.status, 0);
    assert_int_equal(PQresultStatus(q.res), PGRES_TUPLES_OK);
    bool rec = true;
    assert_int_equal(pg_async_get_bool(q.res, 0, 0, &rec), 0);
    assert_false(rec);
    assert_true(q.elapsed_us > 0);

    /* One query at a time. */
    rec_clear(&q);
    struct rec q2 = { 0 };
    int target = g_calls + 1;
    assert_int_equal(pg_async_query(pg, "select 1", 0, NULL, 2000, rec_cb, &q), 0);
    assert_int_equal(pg_async_query(pg, "select 2", 0, NULL, 2000, rec_cb, &q2), -EBUSY);
    run_until(&l, target, 2000);
    assert_int_equal(q.status, 0);
    assert_string_equal(val(&q, 0, 0), "1");
    assert_int_equal(q2.calls, 0);
    assert_int_equal(pg_async_cancel(pg), -ENOENT);

    /* Parameters are text, NULL is SQL NULL, quotes are not our problem. */
    const char *params[] = { "40", "2", NULL, "it's \"quoted\"; drop table x" };
    query_sync(&l, pg, "select $1::int + $2::int, $3::text is null, $4::text", 4, params, 2000, &q);
    assert_int_equal(q.status, 0);
    int64_t sum = 0;
    assert_int_equal(pg_async_get_int64(q.res, 0, 0, &sum), 0);
    assert_true(sum == 42);
    assert_string_equal(val(&q, 0, 1), "t");
    assert_string_equal(val(&q, 0, 2), params[3]);

    /* Many rows (they arrive one by one and are put back together). */
    query_sync(&l, pg,
               "select g, repeat('x', g % 7), nullif(g % 3, 0) from generate_series(1, 1000) g", 0,
               NULL, 5000, &q);
    assert_int_equal(q.status, 0);
    assert_int_equal(PQresultStatus(q.res), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(q.res), 1000);
    assert_int_equal(PQnfields(q.res), 3);
    assert_string_equal(PQfname(q.res, 0), "g");
    for (int i = 0; i < 1000; i++) {
        int64_t g = 0;
        assert_int_equal(pg_async_get_int64(q.res, i, 0, &g), 0);
        assert_true(g == i + 1);
        assert_int_equal(PQgetlength(q.res, i, 1), (i + 1) % 7);
        assert_int_equal(PQgetisnull(q.res, i, 2), (i + 1) % 3 == 0);
    }

    /* No rows; commands. */
    query_sync(&l, pg, "select 1 where false", 0, NULL, 2000, &q);
    assert_int_equal(q.status, 0);
    assert_int_equal(PQresultStatus(q.res), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(q.res), 0);
    query_sync(&l, pg, "create temp table t (x int)", 0, NULL, 2000, &q);
    assert_int_equal(q.status, 0);
    assert_int_equal(PQresultStatus(q.res), PGRES_COMMAND_OK);
    query_sync(&l, pg, "insert into t select generate_series(1, 3)", 0, NULL, 2000, &q);
    assert_int_equal(q.status, 0);
    assert_string_equal(PQcmdTuples(q.res), "3");

    /* What probes read. */
    query_sync(&l, pg, "select pg_current_wal_lsn(), pg_current_wal_lsn() - '0/0'", 0, NULL, 2000,
               &q);
    assert_int_equal(q.status, 0);
    uint64_t lsn = 0;
    int64_t bytes = 0;
    assert_int_equal(pg_async_get_lsn(q.res, 0, 0, &lsn), 0);
    assert_int_equal(pg_async_get_int64(q.res, 0, 1, &bytes), 0);
    assert_true(lsn > 0);
    assert_true(lsn == (uint64_t)bytes);

    /* The result can be kept past the callback (rec_cb takes it). */
    PGresult *kept = q.res;
    q.res = NULL;
    rec_clear(&q);
    assert_true(PQntuples(kept) == 1);
    PQclear(kept);

    rec_clear(&q);
    rec_clear(&q2);
    close_all(&l, &pg, 1);
    loop_done(&l);
}

static void test_sql_error(void **state)
{
    (void)state;
    REQUIRE_SERVER();
    struct t_loop l;
    struct rec q = { 0 };
    loop_init(&l);
    pg_async_t *pg = mk(&l, &(struct spec){ 0 });
    connect_ok(&l, pg);

    query_sync(&l, pg, "selec 1", 0, NULL, 2000, &q);
    assert_int_equal(q.status, -EREMOTEIO);
    assert_string_equal(q.sqlstate, "42601");
    assert_non_null(strstr(q.detail, "syntax error"));
    assert_null(q.res);
    assert_true(pg_async_is_connected(pg));

    /* An error after some rows were streamed: no partial result. */
    query_sync(&l, pg, "select 1 / (g - 3) from generate_series(1, 5) g", 0, NULL, 2000, &q);
    assert_int_equal(q.status, -EREMOTEIO);
    assert_string_equal(q.sqlstate, "22012");
    assert_null(q.res);

    /* The connection is still good. */
    query_sync(&l, pg, "select 'still here'", 0, NULL, 2000, &q);
    assert_int_equal(q.status, 0);
    assert_string_equal(val(&q, 0, 0), "still here");
    rec_clear(&q);
    close_all(&l, &pg, 1);
    loop_done(&l);
}

static int backend_pid(struct t_loop *l, pg_async_t *pg)
{
    struct rec q = { 0 };
    query_sync(l, pg, "select pg_backend_pid()", 0, NULL, 2000, &q);
    assert_int_equal(q.status, 0);
    int64_t pid = 0;
    assert_int_equal(pg_async_get_int64(q.res, 0, 0, &pid), 0);
    assert_int_equal(pid, PQbackendPID(pg_async_pgconn(pg)));
    rec_clear(&q);
    return (int)pid;
}

static void test_query_timeout(void **state)
{
    (void)state;
    REQUIRE_SERVER();
    struct t_loop l;
    struct rec q = { 0 };
    loop_init(&l);
    pg_async_t *pg = mk(&l, &(struct spec){ .server_check_ms = 100 });
    connect_ok(&l, pg);
    int pid = backend_pid(&l, pg);

    uint64_t t0 = ms_now();
    query_sync(&l, pg, "select pg_sleep(30)", 0, NULL, 300, &q);
    uint64_t took = ms_now() - t0;
    print_message("# pg_sleep(30) with a 300 ms timeout: -ETIMEDOUT after %" PRIu64 " ms\n", took);
    assert_int_equal(q.status, -ETIMEDOUT);
    assert_non_null(strstr(q.detail, "timed out after 300 ms"));
    assert_true(took >= 295 && took <= 300 + slack_ms());
    assert_false(pg_async_is_connected(pg));
    assert_int_equal(pg_async_query(pg, "select 1", 0, NULL, 0, rec_cb, &q), -ENOTCONN);

    /* The server stopped working on it (it noticed the closed socket). */
    long gone = backend_gone_ms(pid, 3000);
    print_message("# backend %d no longer active %ld ms after the timeout\n", pid, gone);
    assert_true(gone >= 0);

    /* The object reconnects. */
    connect_ok(&l, pg);
    assert_true(backend_pid(&l, pg) != pid);
    rec_clear(&q);
    close_all(&l, &pg, 1);
    loop_done(&l);
}

struct cancel_ctx {
    uv_timer_t t;
    pg_async_t *pg;
    int rc1, rc2;
};

static void cancel_timer_cb(uv_timer_t *t)
{
    struct cancel_ctx *x = t->data;
    x->rc1 = pg_async_cancel(x->pg);
    x->rc2 = pg_async_cancel(x->pg);
}

static void test_cancel(void **state)
{
    (void)state;
    REQUIRE_SERVER();
    struct t_loop l;
    struct rec q = { 0 };
    struct cancel_ctx x = { .rc1 = 1, .rc2 = 1 };
    loop_init(&l);
    pg_async_t *pg = mk(&l, &(struct spec){ .server_check_ms = 100 });
    connect_ok(&l, pg);
    int pid = backend_pid(&l, pg);

    x.pg = pg;
    assert_int_equal(uv_timer_init(&l.loop, &x.t), 0);
    x.t.data = &x;
    assert_int_equal(uv_timer_start(&x.t, cancel_timer_cb, 100, 0), 0);
    query_sync(&l, pg, "select pg_sleep(30)", 0, NULL, 10000, &q);
    assert_int_equal(x.rc1, 0);
    assert_int_equal(x.rc2, -EALREADY);
    assert_int_equal(q.status, -ECANCELED);
    assert_true(q.elapsed_us >= 90000 && q.elapsed_us <= (100 + slack_ms()) * 1000);
    assert_false(pg_async_is_connected(pg));
    assert_int_equal(pg_async_cancel(pg), -ENOENT);
    assert_true(backend_gone_ms(pid, 3000) >= 0);

    /* Cancel a connect in progress the same way. */
    char port[16];
    snprintf(port, sizeof port, "%d", silent_port);
    pg_async_t *pg2 = mk(&l, &(struct spec){ .port = port, .connect_timeout_ms = 5000 });
    struct rec c = { 0 };
    assert_int_equal(pg_async_connect(pg2, rec_cb, &c), 0);
    assert_int_equal(pg_async_cancel(pg2), 0);
    run_until(&l, g_calls + 1, 2000);
    assert_int_equal(c.status, -ECANCELED);

    uv_close((uv_handle_t *)&x.t, NULL);
    rec_clear(&q);
    pg_async_t *all[] = { pg, pg2 };
    close_all(&l, all, 2);
    loop_done(&l);
}

static char pwdir[64];

static void write_file(const char *path, const char *content, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static int file_contains(const char *path, const char *needle)
{
    char buf[65536];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* Connect as pwuser with a password file; returns the connect rec. */
static void pw_connect(struct t_loop *l, const char *file, struct rec *c, pg_async_t **out)
{
    pg_async_t *pg = mk(l, &(struct spec){ .user = "pwuser", .password_file = file });
    int target = g_calls + 1;
    rec_clear(c);
    assert_int_equal(pg_async_connect(pg, rec_cb, c), 0);
    run_until(l, target, 5000);
    *out = pg;
}

static void test_password_file(void **state)
{
    (void)state;
    REQUIRE_SERVER();
    struct t_loop l;
    struct rec c = { 0 }, q = { 0 };
    char good[128], crlf[128], wrong[128], open644[128], longf[128], empty[128], logpath[128];
    const char *wrong_pw = "Wr0ng-pa55word-d0-not-leak";
    pg_async_t *pg[8];
    int n = 0;

    snprintf(pwdir, sizeof pwdir, "/tmp/triad-pgpw.XXXXXX");
    assert_non_null(mkdtemp(pwdir));
    snprintf(good, sizeof good, "%s/good", pwdir);
    snprintf(crlf, sizeof crlf, "%s/crlf", pwdir);
    snprintf(wrong, sizeof wrong, "%s/wrong", pwdir);
    snprintf(open644, sizeof open644, "%s/open", pwdir);
    snprintf(longf, sizeof longf, "%s/long", pwdir);
    snprintf(empty, sizeof empty, "%s/empty", pwdir);
    snprintf(logpath, sizeof logpath, "%s/log", pwdir);
    write_file(good, PGTMP_PASSWORD "\nsecond line\n", strlen(PGTMP_PASSWORD) + 13, 0600);
    write_file(crlf, PGTMP_PASSWORD "\r\n", strlen(PGTMP_PASSWORD) + 2, 0640);
    write_file(wrong, wrong_pw, strlen(wrong_pw), 0600);
    write_file(open644, PGTMP_PASSWORD, strlen(PGTMP_PASSWORD), 0644);
    char big[PG_ASYNC_PASSWORD_MAX + 10];
    memset(big, 'a', sizeof big);
    write_file(longf, big, sizeof big, 0600);
    write_file(empty, "\n", 1, 0600);

    /* Capture every log line, to prove the password never shows up. */
    int logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(logfd >= 0);
    log_set_fd(logfd);
    log_set_level(LOG_DEBUG);

    loop_init(&l);
    pw_connect(&l, good, &c, &pg[n++]);
    assert_int_equal(c.status, 0);
    query_sync(&l, pg[n - 1], "select current_user", 0, NULL, 2000, &q);
    assert_string_equal(val(&q, 0, 0), "pwuser");
    pw_connect(&l, crlf, &c, &pg[n++]);
    assert_int_equal(c.status, 0);

    pw_connect(&l, wrong, &c, &pg[n++]);
    assert_int_equal(c.status, -EACCES);
    assert_string_equal(c.sqlstate, "28P01");
    assert_non_null(strstr(c.detail, "password authentication failed"));
    assert_null(strstr(c.detail, "LOCATION"));
    assert_null(strstr(c.detail, wrong_pw));
    assert_null(strstr(c.detail, "Wr0ng"));
    print_message("# wrong password: %s\n", c.detail);

    /* No password where one is needed. */
    pw_connect(&l, NULL, &c, &pg[n++]);
    assert_int_equal(c.status, -EACCES);

    pw_connect(&l, open644, &c, &pg[n++]);
    assert_int_equal(c.status, -EPERM);
    assert_non_null(strstr(c.detail, "readable by everyone"));
    pw_connect(&l, longf, &c, &pg[n++]);
    assert_int_equal(c.status, -EMSGSIZE);
    pw_connect(&l, empty, &c, &pg[n++]);
    assert_int_equal(c.status, -EINVAL);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/missing", pwdir);
    pw_connect(&l, missing, &c, &pg[n++]);
    assert_int_equal(c.status, -ENOENT);
    assert_non_null(strstr(c.detail, missing));

    close_all(&l, pg, n);
    loop_done(&l);
    log_set_fd(2);
    log_set_level(LOG_INFO);
    close(logfd);
    assert_true(file_contains(logpath, "pg-connect-failed"));
    assert_false(file_contains(logpath, wrong_pw));
    assert_false(file_contains(logpath, PGTMP_PASSWORD));

    /* A literal password is refused outright. */
    uv_loop_t lp;
    assert_int_equal(uv_loop_init(&lp), 0);
    struct pg_async_param p[] = { { "host", "127.0.0.1" }, { "password", "x" } };
    struct pg_async_opts o = { .params = p, .nparams = 2 };
    pg_async_t *bad = NULL;
    assert_int_equal(pg_async_new(&lp, &o, &bad), -EINVAL);
    assert_null(bad);
    assert_int_equal(uv_loop_close(&lp), 0);

    rec_clear(&c);
    rec_clear(&q);
    const char *files[] = { good, crlf, wrong, open644, longf, empty, logpath };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        unlink(files[i]);
    rmdir(pwdir);
}

struct kill_ctx {
    uv_timer_t t;
    int rc;
};

static void kill_timer_cb(uv_timer_t *t)
{
    struct kill_ctx *x = t->data;
    x->rc = pgtmp_signal(&srv, SIGQUIT); /* immediate shutdown, like pg_ctl -m immediate */
}

static void test_server_killed(void **state)
{
    (void)state;
    REQUIRE_SERVER();
    struct t_loop l;
    struct rec q = { 0 };
    struct kill_ctx x = { .rc = 1 };
    loop_init(&l);
    pg_async_t *pg = mk(&l, &(struct spec){ 0 });
    connect_ok(&l, pg);

    assert_int_equal(uv_timer_init(&l.loop, &x.t), 0);
    x.t.data = &x;
    assert_int_equal(uv_timer_start(&x.t, kill_timer_cb, 200, 0), 0);
    query_sync(&l, pg, "select pg_sleep(30)", 0, NULL, 10000, &q);
    assert_int_equal(x.rc, 0);
    print_message("# server killed mid-query: status %d after %" PRIu64 " ms: %s\n", q.status,
                  q.elapsed_us / 1000, q.detail);
    assert_int_equal(q.status, -ECONNRESET);
    assert_true(q.elapsed_us < 5000000);
    assert_false(pg_async_is_connected(pg));
    assert_int_equal(pgtmp_wait(&srv), 0);

    /* While it is down: refused. */
    struct rec c = { 0 };
    assert_int_equal(pg_async_connect(pg, rec_cb, &c), 0);
    run_until(&l, g_calls + 1, 5000);
    assert_int_equal(c.status, -ECONNREFUSED);

    /* Back up: the same object reconnects. */
    if (pgtmp_start(&srv) != 0)
        fail_msg("restart: %s", srv.why);
    connect_ok(&l, pg);
    query_sync(&l, pg, "select 1", 0, NULL, 5000, &q);
    assert_int_equal(q.status, 0);

    uv_close((uv_handle_t *)&x.t, NULL);
    rec_clear(&q);
    rec_clear(&c);
    close_all(&l, &pg, 1);
    loop_done(&l);
}

static void test_backend_terminated(void **state)
{
    (void)state;
    REQUIRE_SERVER();
    struct t_loop l;
    struct rec qa = { 0 }, qb = { 0 };
    loop_init(&l);
    pg_async_t *pg[2] = { mk(&l, &(struct spec){ 0 }), mk(&l, &(struct spec){ 0 }) };
    connect_ok(&l, pg[0]);
    connect_ok(&l, pg[1]);
    int pid = backend_pid(&l, pg[0]);

    /* A sleeps; B, on the same loop, terminates A's backend. */
    char pidtxt[16];
    snprintf(pidtxt, sizeof pidtxt, "%d", pid);
    const char *params[] = { pidtxt };
    int base = g_calls;
    assert_int_equal(pg_async_query(pg[0], "select pg_sleep(30)", 0, NULL, 10000, rec_cb, &qa), 0);
    assert_int_equal(pg_async_query(pg[1], "select pg_sleep(0.1), pg_terminate_backend($1)", 1,
                                    params, 5000, rec_cb, &qb),
                     0);
    run_until(&l, base + 2, 10000);
    assert_int_equal(qb.status, 0);
    assert_string_equal(val(&qb, 0, 1), "t");
    assert_int_equal(qa.status, -ECONNRESET);
    assert_string_equal(qa.sqlstate, "57P01");
    assert_non_null(strstr(qa.detail, "terminating connection"));
    assert_false(pg_async_is_connected(pg[0]));

    /* Reconnect and go on. */
    connect_ok(&l, pg[0]);
    query_sync(&l, pg[0], "select 2", 0, NULL, 2000, &qa);
    assert_int_equal(qa.status, 0);

    /* An idle connection that the server closes is noticed and dropped. */
    pid = backend_pid(&l, pg[0]);
    char sql[100], out[16];
    snprintf(sql, sizeof sql, "select pg_terminate_backend(%d)", pid);
    assert_int_equal(pgtmp_sql(&srv, sql, out, sizeof out), 0);
    assert_string_equal(out, "t");
    uint64_t end = ms_now() + 3000;
    while (pg_async_is_connected(pg[0]) && ms_now() < end)
        loop_run(&l, 20);
    assert_false(pg_async_is_connected(pg[0]));
    assert_int_equal(pg_async_query(pg[0], "select 1", 0, NULL, 0, rec_cb, &qa), -ENOTCONN);
    connect_ok(&l, pg[0]);

    rec_clear(&qa);
    rec_clear(&qb);
    close_all(&l, pg, 2);
    loop_done(&l);
}

/* Three connections on one loop: one to a server that never answers, one
 * stuck in a long query, one fast. The fast one is not held up. */
struct fast_ctx {
    int done;
    int failed;
    uint64_t done_ms;
};

static void fast_cb(pg_async_t *pg, struct pg_async_result *r, void *arg)
{
    struct fast_ctx *f = arg;
    if (r->status != 0) {
        f->failed++;
        g_calls++;
        uv_stop(g_loop);
        return;
    }
    if (++f->done < 5) {
        /* The next query from inside the callback. */
        if (pg_async_query(pg, "select count(*) from pg_class", 0, NULL, 2000, fast_cb, f) != 0)
            f->failed++;
        return;
    }
    f->done_ms = ms_now();
    g_calls++;
    uv_stop(g_loop);
}

static void test_parallel_hung_and_fast(void **state)
{
    (void)state;
    REQUIRE_SERVER();
    struct t_loop l;
    struct rec ch = { 0 }, qs = { 0 };
    struct fast_ctx f = { 0 };
    struct ticker k;
    char port[16];
    snprintf(port, sizeof port, "%d", silent_port);
    loop_init(&l);
    pg_async_t *hung = mk(&l, &(struct spec){ .port = port, .connect_timeout_ms = 2000 });
    pg_async_t *slow = mk(&l, &(struct spec){ 0 });
    pg_async_t *fast = mk(&l, &(struct spec){ 0 });
    connect_ok(&l, slow);

    ticker_start(&l, &k, 10);
    int base = g_calls;
    uint64_t t0 = ms_now();
    assert_int_equal(pg_async_connect(hung, rec_cb, &ch), 0);
    assert_int_equal(pg_async_query(slow, "select pg_sleep(30)", 0, NULL, 1500, rec_cb, &qs), 0);
    /* The fast one connects now, while the others hang, then runs 5 queries. */
    struct rec cf = { 0 };
    assert_int_equal(pg_async_connect(fast, rec_cb, &cf), 0);
    run_until(&l, base + 1, 3000);
    assert_int_equal(cf.status, 0);
    assert_int_equal(pg_async_query(fast, "select 1", 0, NULL, 2000, fast_cb, &f), 0);
    run_until(&l, base + 2, 3000);
    assert_int_equal(f.failed, 0);
    assert_int_equal(f.done, 5);
    uint64_t fast_ms = f.done_ms - t0;
    assert_int_equal(ch.calls + qs.calls, 0); /* the others are still waiting */
    run_until(&l, base + 4, 5000);
    uint64_t total = ms_now() - t0;
    uv_close((uv_handle_t *)&k.t, NULL);

    print_message("# fast connection: connect + 5 queries in %" PRIu64
                  " ms; slow query -ETIMEDOUT at %" PRIu64
                  " ms; hung connect -ETIMEDOUT at %" PRIu64 " ms; %d ticks of 10 ms in %" PRIu64
                  " ms, longest gap %" PRIu64 " ms\n",
                  fast_ms, qs.at_ms - t0, ch.at_ms - t0, k.ticks, total, k.max_gap_ms);
    assert_true(fast_ms < 300 + slack_ms());
    assert_int_equal(qs.status, -ETIMEDOUT);
    assert_int_equal(ch.status, -ETIMEDOUT);
    assert_true(qs.at_ms - t0 >= 1495 && qs.at_ms - t0 <= 1500 + slack_ms());
    assert_true(ch.at_ms - t0 >= 1995 && ch.at_ms - t0 <= 2000 + slack_ms());
    assert_true(k.ticks >= (int)(total / 10) / (under_valgrind ? 8 : 4));
    assert_true(k.max_gap_ms <= max_gap_ok());

    rec_clear(&ch);
    rec_clear(&qs);
    rec_clear(&cf);
    pg_async_t *all[] = { hung, slow, fast };
    close_all(&l, all, 3);
    loop_done(&l);
}

/* Callbacks and close in every order. */
static void close_in_cb(pg_async_t *pg, struct pg_async_result *r, void *arg)
{
    rec_store(arg, r);
    pg_async_close(pg, closed_cb, NULL);
    pg_async_close(pg, closed_cb, NULL); /* twice is harmless */
    assert_int_equal(pg_async_query(pg, "select 1", 0, NULL, 0, rec_cb, arg), -EINVAL);
}

struct retry_ctx {
    int attempts;
    int last;
};

static void retry_cb(pg_async_t *pg, struct pg_async_result *r, void *arg)
{
    struct retry_ctx *x = arg;
    x->attempts++;
    x->last = r->status;
    if (x->attempts < 3 && pg_async_connect(pg, retry_cb, x) == 0)
        return;
    g_calls++;
}

static void test_close_semantics(void **state)
{
    (void)state;
    REQUIRE_SERVER();
    struct t_loop l;
    struct rec c = { 0 }, q = { 0 };
    char sport[16], rport[16];
    snprintf(sport, sizeof sport, "%d", silent_port);
    snprintf(rport, sizeof rport, "%d", pgtmp_free_port());
    loop_init(&l);

    /* Never connected. */
    pg_async_t *pg = mk(&l, &(struct spec){ 0 });
    close_all(&l, &pg, 1);

    /* Closed while connecting: the connect cb runs (-ECANCELED), then close_cb. */
    pg = mk(&l, &(struct spec){ .port = sport });
    g_seq = 0;
    assert_int_equal(pg_async_connect(pg, rec_cb, &c), 0);
    loop_run(&l, 50);
    assert_int_equal(c.calls, 0);
    close_all(&l, &pg, 1);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.status, -ECANCELED);
    assert_true(c.order < g_closed_order);

    /* Closed with a query in flight. */
    pg = mk(&l, &(struct spec){ 0 });
    connect_ok(&l, pg);
    rec_clear(&q);
    assert_int_equal(pg_async_query(pg, "select pg_sleep(30)", 0, NULL, 10000, rec_cb, &q), 0);
    loop_run(&l, 50);
    close_all(&l, &pg, 1);
    assert_int_equal(q.calls, 1);
    assert_int_equal(q.status, -ECANCELED);
    assert_true(q.order < g_closed_order);

    /* Closed from inside the query callback. */
    pg = mk(&l, &(struct spec){ 0 });
    connect_ok(&l, pg);
    rec_clear(&q);
    int closed_before = g_closed;
    assert_int_equal(pg_async_query(pg, "select 1", 0, NULL, 2000, close_in_cb, &q), 0);
    loop_run(&l, 3000);
    assert_int_equal(q.calls, 1);
    assert_int_equal(q.status, 0);
    assert_int_equal(g_closed - closed_before, 1);

    /* Reconnect from inside a failed connect callback. */
    pg = mk(&l, &(struct spec){ .port = rport });
    struct retry_ctx x = { 0 };
    int base = g_calls;
    assert_int_equal(pg_async_connect(pg, retry_cb, &x), 0);
    run_until(&l, base + 1, 5000);
    assert_int_equal(x.attempts, 3);
    assert_int_equal(x.last, -ECONNREFUSED);

    /* Disconnect, then connect again. */
    pg_async_t *pg2 = mk(&l, &(struct spec){ 0 });
    connect_ok(&l, pg2);
    pg_async_disconnect(pg2);
    assert_false(pg_async_is_connected(pg2));
    connect_ok(&l, pg2);

    rec_clear(&c);
    rec_clear(&q);
    pg_async_t *all[] = { pg, pg2 };
    close_all(&l, all, 2);
    loop_done(&l);
}

/* libpq switches sockets while connecting: a refused first host, names
 * that we resolve, a unix socket. */
static void test_hosts(void **state)
{
    (void)state;
    REQUIRE_SERVER();
    struct t_loop l;
    struct rec q = { 0 };
    char ports[64], port[16];
    int refused = pgtmp_free_port();
    snprintf(ports, sizeof ports, "%d,%d", refused, srv.port);
    snprintf(port, sizeof port, "%d", srv.port);
    loop_init(&l);
    pg_async_t *pg[4];

    pg[0] = mk(&l, &(struct spec){ .host = "127.0.0.1,127.0.0.1", .port = ports });
    connect_ok(&l, pg[0]);
    query_sync(&l, pg[0], "select inet_server_port()", 0, NULL, 2000, &q);
    assert_string_equal(val(&q, 0, 0), port);

    pg[1] = mk(&l, &(struct spec){ .host = "localhost" });
    connect_ok(&l, pg[1]);
    assert_string_equal(PQhost(pg_async_pgconn(pg[1])), "localhost");
    query_sync(&l, pg[1], "select host(inet_server_addr())", 0, NULL, 2000, &q);
    assert_string_equal(val(&q, 0, 0), "127.0.0.1");

    pg[2] = mk(&l, &(struct spec){ .host = "localhost,127.0.0.1", .port = ports });
    connect_ok(&l, pg[2]);

    pg[3] = mk(&l, &(struct spec){ .host = srv.dir });
    connect_ok(&l, pg[3]);
    query_sync(&l, pg[3], "select inet_server_port() is null", 0, NULL, 2000, &q);
    assert_string_equal(val(&q, 0, 0), "t");

    rec_clear(&q);
    close_all(&l, pg, 4);
    loop_done(&l);
}

static void test_result_cap(void **state)
{
    (void)state;
    REQUIRE_SERVER();
    struct t_loop l;
    struct rec q = { 0 };
    loop_init(&l);
    pg_async_t *pg = mk(&l, &(struct spec){ .max_result_bytes = 10000 });
    connect_ok(&l, pg);
    query_sync(&l, pg, "select repeat('x', 100) from generate_series(1, 50)", 0, NULL, 2000, &q);
    assert_int_equal(q.status, 0);
    assert_int_equal(PQntuples(q.res), 50);
    query_sync(&l, pg, "select repeat('x', 100) from generate_series(1, 100000)", 0, NULL, 5000,
               &q);
    assert_int_equal(q.status, -EMSGSIZE);
    assert_null(q.res);
    assert_false(pg_async_is_connected(pg));
    rec_clear(&q);
    close_all(&l, &pg, 1);
    loop_done(&l);
}

static int group_setup(void **state)
{
    (void)state;
    under_valgrind = getenv("TRIAD_UNDER_VALGRIND") != NULL;
    signal(SIGPIPE, SIG_IGN);
    /* libpq takes defaults from the environment and ~/.pgpass: none of
     * that may change what the tests see. */
    static const char *const pgenv[] = { "PGHOST",     "PGHOSTADDR",       "PGPORT",
                                         "PGDATABASE", "PGUSER",           "PGPASSWORD",
                                         "PGSERVICE",  "PGSERVICEFILE",    "PGOPTIONS",
                                         "PGSSLMODE",  "PGGSSENCMODE",     "PGTARGETSESSIONATTRS",
                                         "PGAPPNAME",  "PGCONNECT_TIMEOUT" };
    for (size_t i = 0; i < sizeof pgenv / sizeof pgenv[0]; i++)
        unsetenv(pgenv[i]);
    setenv("PGPASSFILE", "/nonexistent/triad-test-pgpass", 1);
    /* Before any connection exists, so it inherits none. */
    silent_pid = pgtmp_silent_listener(&silent_port);
    if (geteuid() != 0) {
        srv_state = -1;
        snprintf(skip_why, sizeof skip_why,
                 "not root: initdb/postgres must run as the postgres user");
        return 0;
    }
    uint64_t t0 = ms_now();
    srv_state = pgtmp_init(&srv) == 0 ? 1 : 0;
    if (srv_state)
        print_message("# PostgreSQL 15 up on 127.0.0.1:%d in %" PRIu64 " ms (%s)\n", srv.port,
                      ms_now() - t0, srv.dir);
    else
        print_message("# PostgreSQL 15 could not be started: %s\n", srv.why);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pgtmp_destroy(&srv);
    pgtmp_kill(silent_pid);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lsn),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_connect_timeout_silent),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_connect_and_query),
        cmocka_unit_test(test_sql_error),
        cmocka_unit_test(test_query_timeout),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_password_file),
        cmocka_unit_test(test_server_killed),
        cmocka_unit_test(test_backend_terminated),
        cmocka_unit_test(test_parallel_hung_and_fast),
        cmocka_unit_test(test_close_semantics),
        cmocka_unit_test(test_hosts),
        cmocka_unit_test(test_result_cap),
    };
    /* PG_ASYNC_TEST=pattern runs only the matching tests. */
    if (getenv("PG_ASYNC_TEST"))
        cmocka_set_test_filter(getenv("PG_ASYNC_TEST"));
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
