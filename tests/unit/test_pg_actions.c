/* Unit tests of the pg.* actions without a server: the pure helpers of
 * runbooks/actions/pg_common (LSN distances, conninfo and SQL literals,
 * {site} expansion, slot names, pg_controldata output, postgresql.auto.conf
 * rewriting, .pgpass lines), the one-line descriptions, the local settings
 * of a real configuration, and the runtime's failure paths against ports
 * where nothing listens (refused connections, no `local` section,
 * cancellation), which also walk the release paths under valgrind. The
 * actions against real PostgreSQL are tests/integration/30-pg-actions.sh. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "orchestrator/config.h"
#include "runbooks/actions/actions.h"
#include "runbooks/actions/pg_common.h"
#include "runbooks/runbook.h"

/* --- pure helpers --------------------------------------------------------------------- */

static void test_lsn(void **state)
{
    (void)state;
    uint64_t a, b;
    char s[PG_ASYNC_LSN_STRLEN];
    assert_int_equal(pg_async_lsn_parse("0/3000148", &a), 0);
    assert_int_equal(pg_async_lsn_parse("0/3003148", &b), 0);
    assert_int_equal(pgc_lsn_behind(a, b), 0x3000);
    assert_int_equal(pgc_lsn_behind(b, a), 0);
    assert_int_equal(pgc_lsn_behind(a, a), 0);
    /* Across the 4 GB boundary of the high word. */
    assert_int_equal(pg_async_lsn_parse("1/00000010", &a), 0);
    assert_int_equal(pg_async_lsn_parse("0/FFFFFFF0", &b), 0);
    assert_int_equal(pgc_lsn_behind(b, a), 0x20);
    assert_string_equal(pgc_lsn_str(a, s, sizeof s), "1/10");
    assert_string_equal(pgc_lsn_str(0x16B374D848ull, s, sizeof s), "16/B374D848");
    char tiny[4];
    assert_string_equal(pgc_lsn_str(a, tiny, sizeof tiny), "");
}

static void test_bytes(void **state)
{
    (void)state;
    char s[32];
    pgc_bytes_str(0, s, sizeof s);
    assert_string_equal(s, "0 B");
    pgc_bytes_str(1023, s, sizeof s);
    assert_string_equal(s, "1023 B");
    pgc_bytes_str(12 * 1024, s, sizeof s);
    assert_string_equal(s, "12 kB");
    pgc_bytes_str(4864, s, sizeof s);
    assert_string_equal(s, "4.8 kB");
    pgc_bytes_str(16ull * 1024 * 1024, s, sizeof s);
    assert_string_equal(s, "16 MB");
    pgc_bytes_str(3ull * 1024 * 1024 * 1024 + 512ull * 1024 * 1024, s, sizeof s);
    assert_string_equal(s, "3.5 GB");
}

static void test_expand_site(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(pgc_expand_site("/srv/{site}/pgdata", "dc2", out, sizeof out), 0);
    assert_string_equal(out, "/srv/dc2/pgdata");
    assert_int_equal(pgc_expand_site("{site}-{site}", "dc1", out, sizeof out), 0);
    assert_string_equal(out, "dc1-dc1");
    assert_int_equal(pgc_expand_site("no token {sit} {SITE}", "dc1", out, sizeof out), 0);
    assert_string_equal(out, "no token {sit} {SITE}");
    assert_int_equal(pgc_expand_site("", "dc1", out, sizeof out), 0);
    assert_string_equal(out, "");
    char small[8];
    assert_int_equal(pgc_expand_site("/a/{site}", "dc1", small, sizeof small), 0);
    assert_string_equal(small, "/a/dc1");
    assert_int_equal(pgc_expand_site("/abc/{site}", "dc1", small, sizeof small), -ENOSPC);
    assert_string_equal(small, "");
    assert_int_equal(pgc_expand_site("x", "dc1", small, 0), -ENOSPC);
}

static void test_slot_name(void **state)
{
    (void)state;
    char s[PGC_SLOT_NAME_MAX];
    pgc_slot_name("dc2", s, sizeof s);
    assert_string_equal(s, "dc2");
    pgc_slot_name("Paris-DC.2", s, sizeof s);
    assert_string_equal(s, "paris_dc_2");
    char longname[200];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    pgc_slot_name(longname, s, sizeof s);
    assert_int_equal(strlen(s), PGC_SLOT_NAME_MAX - 1);
    char tiny[3];
    pgc_slot_name("dc2", tiny, sizeof tiny);
    assert_string_equal(tiny, "dc");
}

static void test_conninfo(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 4096);
    struct pgc_conninfo ci = {
        .host = "127.0.2.5",
        .port = 5432,
        .user = "replicator",
        .password = "it's a \\secret",
        .application_name = "dc3",
        .sslmode = "verify-full",
        .sslrootcert = "/etc/triad/ca dir/ca.pem",
        .connect_timeout_s = 2,
    };
    assert_int_equal(pgc_conninfo_build(&b, &ci), 0);
    assert_string_equal(b.data, "host='127.0.2.5' port='5432' user='replicator' "
                                "password='it\\'s a \\\\secret' application_name='dc3' "
                                "sslmode='verify-full' sslrootcert='/etc/triad/ca dir/ca.pem' "
                                "connect_timeout='2'");
    buf_reset(&b);
    struct pgc_conninfo bare = { .host = "db", .dbname = "synapse" };
    assert_int_equal(pgc_conninfo_build(&b, &bare), 0);
    assert_string_equal(b.data, "host='db' dbname='synapse'");
    buf_free(&b);
    /* The cap is honoured. */
    buf_init(&b, 16);
    assert_int_equal(pgc_conninfo_build(&b, &ci), -EMSGSIZE);
    buf_free(&b);
}

/* The literal must survive whatever standard_conforming_strings says. */
static void test_sql_literal(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 256);
    assert_int_equal(pgc_sql_literal(&b, "host='h' password='a\\'b'"), 0);
    assert_string_equal(b.data, "E'host=''h'' password=''a\\\\''b'''");
    buf_reset(&b);
    assert_int_equal(pgc_sql_literal(&b, ""), 0);
    assert_string_equal(b.data, "E''");
    buf_free(&b);
}

static void test_conf_literal_and_pgpass(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 256);
    assert_int_equal(pgc_conf_literal(&b, "password='x\\y'"), 0);
    assert_string_equal(b.data, "'password=''x\\\\y'''");
    buf_reset(&b);
    assert_int_equal(pgc_pgpass_line(&b, "p:w\\d"), 0);
    assert_string_equal(b.data, "*:*:*:*:p\\:w\\\\d\n");
    buf_free(&b);
}

static void test_autoconf(void **state)
{
    (void)state;
    static const char *const keys[] = { "primary_conninfo", "primary_slot_name", NULL };
    const char *values[] = { "host='h' password='a''b'", "dc3", NULL };
    struct buf out;
    buf_init(&out, 4096);
    /* A new file gets ALTER SYSTEM's header. */
    assert_int_equal(pgc_autoconf_set(NULL, keys, values, &out), 0);
    assert_string_equal(out.data, "# Do not edit this file manually!\n"
                                  "# It will be overwritten by the ALTER SYSTEM command.\n"
                                  "primary_conninfo = 'host=''h'' password=''a''''b'''\n"
                                  "primary_slot_name = 'dc3'\n");
    /* Old values go (every spelling), other lines stay as they were. */
    buf_reset(&out);
    const char *old = "# Do not edit this file manually!\n"
                      "default_transaction_read_only = 'on'\n"
                      "primary_conninfo = 'host=old'\n"
                      "  PRIMARY_SLOT_NAME='old'\n"
                      "primary_conninfo_extra = 'kept'\n"
                      "# primary_conninfo = 'a comment stays'\n"
                      "primary_conninfo 'host=older'";
    const char *vals2[] = { "host=new", NULL, NULL };
    assert_int_equal(pgc_autoconf_set(old, keys, vals2, &out), 0);
    assert_string_equal(out.data, "# Do not edit this file manually!\n"
                                  "default_transaction_read_only = 'on'\n"
                                  "primary_conninfo_extra = 'kept'\n"
                                  "# primary_conninfo = 'a comment stays'\n"
                                  "primary_conninfo = 'host=new'\n");
    buf_free(&out);
    buf_init(&out, 16);
    assert_int_equal(pgc_autoconf_set(old, keys, values, &out), -EMSGSIZE);
    buf_free(&out);
}

static const char controldata_shutdown[] =
    "pg_control version number:            1300\n"
    "Catalog version number:               202209061\n"
    "Database system identifier:           7712326837506755168\n"
    "Database cluster state:               shut down\n"
    "pg_control last modified:             Thu Nov 26 04:07:04 2026\n"
    "Latest checkpoint location:           0/40219F8\n"
    "Latest checkpoint's REDO location:    0/40219F8\n"
    "Latest checkpoint's REDO WAL file:    000000010000000000000004\n"
    "Latest checkpoint's TimeLineID:       1\n"
    "Latest checkpoint's PrevTimeLineID:   1\n"
    "Minimum recovery ending location:     0/0\n"
    "wal_level setting:                    replica\n"
    "wal_log_hints setting:                on\n"
    "Data page checksum version:           0\n";

static void test_controldata(void **state)
{
    (void)state;
    struct pgc_controldata cd;
    assert_int_equal(pgc_controldata_parse(controldata_shutdown, &cd), 0);
    assert_string_equal(cd.state, "shut down");
    assert_true(pgc_controldata_clean(&cd));
    assert_true(cd.have_checkpoint);
    assert_int_equal(cd.checkpoint_lsn, 0x40219F8);
    assert_int_equal(cd.redo_lsn, 0x40219F8);
    assert_int_equal(cd.timeline, 1);
    assert_true(cd.wal_log_hints);
    assert_int_equal(cd.checksum_version, 0);

    assert_int_equal(pgc_controldata_parse("Database cluster state:   in production\n"
                                           "Latest checkpoint location:   1/2000060\n"
                                           "wal_log_hints setting:   off\n"
                                           "Data page checksum version:   1\n",
                                           &cd),
                     0);
    assert_string_equal(cd.state, "in production");
    assert_false(pgc_controldata_clean(&cd));
    assert_int_equal(cd.checkpoint_lsn, 0x102000060ull);
    assert_false(cd.wal_log_hints);
    assert_int_equal(cd.checksum_version, 1);

    assert_int_equal(pgc_controldata_parse("Database cluster state: shut down in recovery\n"
                                           "Latest checkpoint location: 0/5\n",
                                           &cd),
                     0);
    assert_true(pgc_controldata_clean(&cd));
    /* Missing pieces, or another language. */
    assert_int_equal(pgc_controldata_parse("Latest checkpoint location: 0/5\n", &cd), -EINVAL);
    assert_int_equal(pgc_controldata_parse("Database cluster state: shut down\n", &cd), -EINVAL);
    assert_int_equal(pgc_controldata_parse("Database cluster state: shut down\n"
                                           "Latest checkpoint location: junk\n",
                                           &cd),
                     -EINVAL);
    assert_int_equal(pgc_controldata_parse("Zustand des Datenbanksystems: heruntergefahren\n", &cd),
                     -EINVAL);
}

/* --- with a configuration ------------------------------------------------------------- */

#define TEST_DIR "/tmp/triad-test-pgact"

/* Members on ports where nothing listens: every connection is refused. */
static const char config_yaml[] =
    "cluster: test\n"
    "site: dc1\n"
    "state_dir: " TEST_DIR "/state\n"
    "sites:\n"
    "  dc1: {role: primary, address: 127.0.1.1:7400}\n"
    "  dc2: {role: standby, address: 127.0.2.1:7400}\n"
    "  dc3: {role: witness, address: 127.0.3.1:7400}\n"
    "tls: {ca_file: ca.pem, cert_file: c.pem, key_file: k.pem}\n"
    "postgres:\n"
    "  user: triad\n"
    "  sslmode: disable\n"
    "  connect_timeout: 1s\n"
    "  replication: {user: replicator}\n"
    "  clusters:\n"
    "    synapse:\n"
    "      members: {dc1: '127.0.0.1:9', dc2: '127.0.0.1:11', dc3: '127.0.0.1:13'}\n"
    "      local:\n"
    "        data_dir: " TEST_DIR "/{site}/pgdata\n"
    "        start: [/bin/echo, start, '{site}']\n"
    "        stop: [/bin/echo, stop, '{site}']\n"
    "    mas:\n"
    "      members: {dc1: '127.0.0.1:9', dc2: '127.0.0.1:11', dc3: '127.0.0.1:13'}\n"
    "    solo:\n"
    "      members: {dc1: '127.0.0.1:15', dc2: '127.0.0.1:17'}\n"
    "  groups:\n"
    "    ess: [synapse, mas]\n"
    "failover: {target: dc2}\n"
    "runbooks: {dc1-loss: dc1-loss.yaml}\n";

struct fixture {
    struct config cfg;
    json_t *ctx;
    uv_loop_t loop;
    struct rb_env env;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    mkdir(TEST_DIR, 0755);
    FILE *fp = fopen(TEST_DIR "/triad.yaml", "w");
    if (!f || !fp)
        return -1;
    fputs(config_yaml, fp);
    fclose(fp);
    struct diag d;
    diag_init(&d);
    struct config_load_opts lo = { .no_file_checks = true, .skip_runbooks = true };
    if (config_load(&f->cfg, TEST_DIR "/triad.yaml", &lo, &d) < 0) {
        diag_print(&d, stderr);
        diag_free(&d);
        return -1;
    }
    diag_free(&d);
    json_t *cj = config_to_json(&f->cfg);
    f->ctx = rb_context(cj, "run-1", 4, "dc1", "dc2", "t");
    json_decref(cj);
    uv_loop_init(&f->loop);
    f->env.loop = &f->loop;
    f->env.cfg = &f->cfg;
    f->env.site = "dc1";
    log_set_level(LOG_ERROR);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    json_decref(f->ctx);
    config_free(&f->cfg);
    remove(TEST_DIR "/triad.yaml");
    rmdir(TEST_DIR);
    free(f);
    return 0;
}

static void describe(struct fixture *f, const struct rb_action_ops *a, const char *params_json,
                     char *out, size_t len)
{
    struct rb_step st = { .id = "s", .action = a, .timeout_ms = 5000 };
    json_t *params = json_loads(params_json, 0, NULL);
    assert_non_null(params);
    struct buf b;
    buf_init(&b, 1024);
    rb_exec_describe(&f->env, &st, params, f->ctx, &b);
    snprintf(out, len, "%s", b.data ? b.data : "");
    buf_free(&b);
    json_decref(params);
}

static void test_describe(void **state)
{
    struct fixture *f = *state;
    char s[600];
    /* synapse and mas share one instance: named once. */
    describe(f, &rb_action_pg_promote, "{\"group\":\"ess\",\"site\":\"dc2\",\"if_behind\":\"ask\"}",
             s, sizeof s);
    assert_string_equal(s, "promote 127.0.0.1:11 (dc2), lag unknown; if behind another replica: "
                           "ask");
    describe(f, &rb_action_pg_follow,
             "{\"group\":\"ess\",\"sites\":[\"dc3\",\"dc1\"],"
             "\"primary\":\"dc2\"}",
             s, sizeof s);
    assert_string_equal(s, "repoint the replicas of dc3, dc1 at the primary in dc2 "
                           "(127.0.0.1:11)");
    describe(f, &rb_action_pg_demote, "{\"group\":\"ess\",\"site\":\"dc1\",\"target\":\"dc2\"}", s,
             sizeof s);
    assert_string_equal(s, "shut down the primary in dc1 cleanly, wait until dc2 replayed its "
                           "final checkpoint, restart it as a replica");
    describe(f, &rb_action_pg_rewind,
             "{\"cluster\":\"synapse\",\"site\":\"dc1\",\"primary\":\"dc2\","
             "\"allow_basebackup\":true}",
             s, sizeof s);
    assert_string_equal(s, "rewind the old primary in dc1 with pg_rewind and restart it as a "
                           "replica of dc2 (asks before a rebuild with pg_basebackup)");
}

static void test_local(void **state)
{
    struct fixture *f = *state;
    struct pgc_local l;
    char why[300];
    const struct cfg_pg_cluster *syn = config_pg_cluster(&f->cfg, "synapse");
    assert_int_equal(pgc_local_get(syn, "dc2", &l, why, sizeof why), 0);
    assert_string_equal(l.data_dir, TEST_DIR "/dc2/pgdata");
    assert_string_equal(l.bindir, "/usr/lib/postgresql/15/bin");
    assert_string_equal(l.os_user, "postgres");
    assert_non_null(l.start);
    assert_string_equal(l.start[0], "/bin/echo");
    assert_string_equal(l.start[2], "dc2");
    assert_null(l.start[3]);
    assert_string_equal(l.stop[1], "stop");
    assert_string_equal(l.stop[2], "dc2");
    pgc_local_free(&l);
    assert_int_equal(pgc_local_get(config_pg_cluster(&f->cfg, "solo"), "dc1", &l, why, sizeof why),
                     -ENOTSUP);
    assert_non_null(strstr(why, "postgres.clusters.solo.local is not configured"));
}

/* --- runtime failure paths ------------------------------------------------------------ */

struct outcome {
    int calls;
    int status;
    char detail[600];
};

static void on_done(struct rb_exec *x, int status, const char *detail, void *arg)
{
    (void)x;
    struct outcome *o = arg;
    o->calls++;
    o->status = status;
    snprintf(o->detail, sizeof o->detail, "%s", detail);
}

static void on_guard(uv_timer_t *t)
{
    (void)t;
    fail_msg("an action did not finish in time");
}

static struct outcome run_op(struct fixture *f, const struct rb_action_ops *a, enum rb_op op,
                             const char *params_json, bool cancel_at_once)
{
    struct rb_step st = { .id = "s", .action = a, .timeout_ms = 5000 };
    json_t *params = json_loads(params_json, 0, NULL);
    assert_non_null(params);
    struct outcome o = { 0 };
    uv_timer_t guard;
    uv_timer_init(&f->loop, &guard);
    uv_timer_start(&guard, on_guard, 10000, 0);
    struct rb_exec *x = rb_exec_start(&f->env, &st, params, f->ctx, "run-1", 4, op, on_done, &o);
    assert_non_null(x);
    if (cancel_at_once)
        rb_exec_cancel(x, false);
    while (o.calls == 0 && uv_run(&f->loop, UV_RUN_ONCE))
        ;
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* the release */
    json_decref(params);
    assert_int_equal(o.calls, 1);
    return o;
}

static void test_refused(void **state)
{
    struct fixture *f = *state;
    struct outcome o;
    o = run_op(f, &rb_action_pg_promote, RB_OP_CHECK, "{\"group\":\"ess\",\"site\":\"dc2\"}",
               false);
    assert_int_equal(o.status, -ECONNREFUSED);
    assert_non_null(strstr(o.detail, "cannot reach 127.0.0.1:11 (dc2)"));
    o = run_op(f, &rb_action_pg_promote, RB_OP_RUN, "{\"group\":\"ess\",\"site\":\"dc2\"}", false);
    assert_int_equal(o.status, -ECONNREFUSED);
    assert_non_null(strstr(o.detail, "cannot reach the target 127.0.0.1:11 (dc2)"));
    assert_null(strchr(o.detail, '\n')); /* one line, whatever libpq said */
    o = run_op(f, &rb_action_pg_promote, RB_OP_READY, "{\"cluster\":\"solo\",\"site\":\"dc2\"}",
               false);
    assert_int_equal(o.status, -ECONNREFUSED);
    o = run_op(f, &rb_action_pg_follow, RB_OP_RUN,
               "{\"group\":\"ess\",\"sites\":[\"dc3\"],\"primary\":\"dc2\"}", false);
    assert_int_equal(o.status, -ECONNREFUSED);
    assert_non_null(strstr(o.detail, "cannot reach the primary 127.0.0.1:11 (dc2)"));
    o = run_op(f, &rb_action_pg_rewind, RB_OP_CHECK,
               "{\"group\":\"ess\",\"site\":\"dc1\",\"primary\":\"dc2\"}", false);
    assert_int_equal(o.status, -ECONNREFUSED);
    o = run_op(f, &rb_action_pg_demote, RB_OP_RUN,
               "{\"group\":\"ess\",\"site\":\"dc1\",\"target\":\"dc2\"}", false);
    assert_int_equal(o.status, -ECONNREFUSED);
    assert_non_null(strstr(o.detail, "cannot reach the target 127.0.0.1:11 (dc2)"));
}

static void test_no_local(void **state)
{
    struct fixture *f = *state;
    struct outcome o = run_op(f, &rb_action_pg_demote, RB_OP_RUN,
                              "{\"cluster\":\"solo\",\"site\":\"dc1\",\"target\":\"dc2\"}", false);
    assert_int_equal(o.status, -ENOTSUP);
    assert_non_null(strstr(o.detail, "postgres.clusters.solo.local is not configured"));
    o = run_op(f, &rb_action_pg_rewind, RB_OP_RUN,
               "{\"cluster\":\"solo\",\"site\":\"dc1\",\"primary\":\"dc2\"}", false);
    assert_int_equal(o.status, -ENOTSUP);
}

/* Another site's daemon may not run a step that needs the site's host. */
static void test_runs_on(void **state)
{
    struct fixture *f = *state;
    assert_string_equal(rb_action_pg_demote.runs_on, "site");
    assert_string_equal(rb_action_pg_rewind.runs_on, "site");
    assert_null(rb_action_pg_promote.runs_on);
    assert_null(rb_action_pg_follow.runs_on);
    struct outcome o = run_op(f, &rb_action_pg_rewind, RB_OP_RUN,
                              "{\"group\":\"ess\",\"site\":\"dc2\",\"primary\":\"dc1\"}", false);
    assert_int_equal(o.status, -EREMOTE);
}

static void test_cancel(void **state)
{
    struct fixture *f = *state;
    struct outcome o =
        run_op(f, &rb_action_pg_promote, RB_OP_RUN, "{\"group\":\"ess\",\"site\":\"dc2\"}", true);
    assert_int_equal(o.status, -ECANCELED);
    o = run_op(f, &rb_action_pg_follow, RB_OP_CHECK,
               "{\"group\":\"ess\",\"sites\":[\"dc3\"],\"primary\":\"dc2\"}", true);
    assert_int_equal(o.status, -ECANCELED);
    o = run_op(f, &rb_action_pg_demote, RB_OP_CHECK,
               "{\"group\":\"ess\",\"site\":\"dc1\",\"target\":\"dc2\"}", true);
    assert_int_equal(o.status, -ECANCELED);
}

int main(void)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_lsn),
        cmocka_unit_test(test_bytes),
        cmocka_unit_test(test_expand_site),
        cmocka_unit_test(test_slot_name),
        cmocka_unit_test(test_conninfo),
        cmocka_unit_test(test_sql_literal),
        cmocka_unit_test(test_conf_literal_and_pgpass),
        cmocka_unit_test(test_autoconf),
        cmocka_unit_test(test_controldata),
    };
    const struct CMUnitTest with_config[] = {
        cmocka_unit_test_setup_teardown(test_describe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_local, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runs_on, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
    };
    int failed = cmocka_run_group_tests(pure, NULL, NULL);
    failed += cmocka_run_group_tests(with_config, NULL, NULL);
    return failed;
}
