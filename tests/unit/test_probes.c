/* Unit tests: the probe scheduler and drivers against a real PostgreSQL and
 * hostile fixtures (a server that accepts TCP and never speaks, HTTP that
 * never finishes its headers or sends an endless body, TLS with the wrong
 * CA, DNS that never answers). Each must end in a failed probe with a clear
 * detail within its timeout while the loop stays responsive. */
#include <errno.h>
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

#include "lib/dns_client.h"
#include "lib/http_client.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "orchestrator/config.h"
#include "pgtmp.h"
#include "probes/probe.h"
#include "testcerts.h"
#include "testfix.h"

struct env {
    struct pgtmp pg;
    bool have_pg;
    pid_t silent, http, https, dns, dns_silent;
    int silent_port, http_port, https_port, dns_port, dns_silent_port;
    char certs[256];
    char dir[64];
};

static struct env E;

/* Under valgrind everything is ~20x slower: time bounds are not checked. */
static bool timing_checked(void)
{
    return getenv("TRIAD_UNDER_VALGRIND") == NULL;
}

static int setup(void **state)
{
    (void)state;
    log_set_level(LOG_ERROR);
    char why[256] = "";
    if (pgtmp_available(why, sizeof why) && pgtmp_init(&E.pg) == 0) {
        E.have_pg = true;
        pgtmp_sql(&E.pg, "GRANT pg_monitor TO pwuser", why, sizeof why);
    } else {
        fprintf(stderr, "# no PostgreSQL for these tests: %s %s\n", why, E.pg.why);
    }
    E.silent = pgtmp_silent_listener(&E.silent_port);
    assert_int_equal(testcerts_dir(E.certs, sizeof E.certs), 0);
    assert_int_equal(testcerts_ca(E.certs, "lab"), 0);
    assert_int_equal(testcerts_ca(E.certs, "other"), 0);
    assert_int_equal(
        testcerts_leaf(E.certs, "lab", "ingress", "matrix.lab.test", "matrix.lab.test"), 0);
    char cert[300], key[300];
    testcerts_path(cert, sizeof cert, E.certs, "ingress.pem");
    testcerts_path(key, sizeof key, E.certs, "ingress.key");
    const char *plain[] = { "--bind", "127.0.0.1", NULL };
    const char *tls[] = { "--bind", "127.0.0.1", "--tls", cert, key, NULL };
    E.http = fixture_start("http_fixture", plain, &E.http_port);
    E.https = fixture_start("http_fixture", tls, &E.https_port);
    const char *dns[] = { "--bind", "127.0.0.1", "--rr", "matrix.lab.test 5 IN A 127.0.1.10",
                          NULL };
    const char *dns_silent[] = { "--bind", "127.0.0.1", "--mode", "silent", NULL };
    E.dns = fixture_start("dns_fixture", dns, &E.dns_port);
    E.dns_silent = fixture_start("dns_fixture", dns_silent, &E.dns_silent_port);
    assert_true(E.silent > 0 && E.http > 0 && E.https > 0 && E.dns > 0 && E.dns_silent > 0);
    snprintf(E.dir, sizeof E.dir, "/tmp/triad-probetest-XXXXXX");
    assert_non_null(mkdtemp(E.dir));
    char pw[128];
    snprintf(pw, sizeof pw, "%s/pw", E.dir);
    FILE *f = fopen(pw, "w");
    fprintf(f, "%s\n", PGTMP_PASSWORD);
    fclose(f);
    chmod(pw, 0600);
    http_global_init();
    dns_global_init();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (E.have_pg)
        pgtmp_destroy(&E.pg);
    pgtmp_kill(E.silent);
    fixture_stop(E.http);
    fixture_stop(E.https);
    fixture_stop(E.dns);
    fixture_stop(E.dns_silent);
    testcerts_rmdir(E.certs);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "%s/pw", E.dir);
    unlink(cmd);
    snprintf(cmd, sizeof cmd, "%s/triad.yaml", E.dir);
    unlink(cmd);
    rmdir(E.dir);
    http_global_cleanup();
    dns_global_cleanup();
    return 0;
}

/* A configuration with the given probes (YAML list items). */
static void load_config(struct config *cfg, const char *probes, const char *health)
{
    char path[128];
    snprintf(path, sizeof path, "%s/triad.yaml", E.dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "cluster: t\nsite: dc2\n"
            "sites:\n  dc1: {role: primary, address: 127.0.1.1}\n"
            "  dc2: {role: standby, address: 127.0.2.1}\n"
            "  dc3: {role: witness, address: 127.0.3.1}\n"
            "tls: {ca_file: x, cert_file: y, key_file: z}\n"
            "postgres: {user: pwuser, password_file: %s/pw, sslmode: disable}\n"
            "failover: {target: dc2, mode: manual}\n"
            "%s\n"
            "probes:\n%s",
            E.dir, health ? health : "", probes);
    fclose(f);
    struct diag d;
    diag_init(&d);
    struct config_load_opts o = { .no_file_checks = true, .skip_runbooks = true };
    int r = config_load(cfg, path, &o, &d);
    if (r)
        diag_print(&d, stderr);
    assert_int_equal(r, 0);
    diag_free(&d);
}

struct run {
    struct probe_sched s;
    uv_timer_t tick;
    uv_timer_t guard;
    int64_t last_tick, max_gap;
    int ticks;
    bool done;
    /* continuous mode */
    int (*on_result)(struct run *r, struct probe *p, bool changed);
    int phase;
    int64_t phase_at;
};

static void on_tick(uv_timer_t *t)
{
    struct run *r = t->data;
    int64_t now = loop_now_ms();
    if (r->last_tick && now - r->last_tick > r->max_gap)
        r->max_gap = now - r->last_tick;
    r->last_tick = now;
    r->ticks++;
    probe_sched_tick(&r->s);
}

static void on_closed(struct probe_sched *s, void *arg)
{
    (void)s;
    struct run *r = arg;
    uv_close((uv_handle_t *)&r->tick, NULL);
    uv_close((uv_handle_t *)&r->guard, NULL);
}

static void finish_run(struct run *r)
{
    if (r->done)
        return;
    r->done = true;
    probe_sched_close(&r->s, on_closed, r);
}

static void on_result(struct probe_sched *s, struct probe *p, bool changed, void *arg)
{
    struct run *r = arg;
    if (r->on_result) {
        if (r->on_result(r, p, changed))
            finish_run(r);
        return;
    }
    if (s->once && s->pending == 0)
        finish_run(r);
}

static void on_guard(uv_timer_t *t)
{
    finish_run(t->data);
}

/* Runs the probes once (or until on_result says stop); returns ms taken. */
static int64_t run_probes(struct run *r, const struct config *cfg, bool once, int64_t guard_ms)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    assert_int_equal(probe_sched_init(&r->s, &loop, cfg, on_result, r), 0);
    uv_timer_init(&loop, &r->tick);
    r->tick.data = r;
    uv_timer_start(&r->tick, on_tick, 20, 20);
    uv_timer_init(&loop, &r->guard);
    r->guard.data = r;
    uv_timer_start(&r->guard, on_guard, (uint64_t)guard_ms, 0);
    int64_t start = loop_now_ms();
    probe_sched_start(&r->s, once);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    return loop_now_ms() - start;
}

/* The results are read in on_result before close frees them: keep copies. */
struct seen {
    char name[32];
    bool ok;
    int64_t latency;
    char detail[PROBE_DETAIL_MAX];
    json_t *fields;
};
static struct seen SEEN[32];
static int N_SEEN;

static int record(struct run *r, struct probe *p, bool changed)
{
    (void)changed;
    struct seen *s = &SEEN[N_SEEN++];
    snprintf(s->name, sizeof s->name, "%s", p->cfg->name);
    s->ok = p->last.ok;
    s->latency = p->last.latency_ms;
    snprintf(s->detail, sizeof s->detail, "%s", probe_detail(p));
    s->fields = p->last.fields ? json_deep_copy(p->last.fields) : NULL;
    return r->s.pending == 0;
}

static const struct seen *seen(const char *name)
{
    for (int i = 0; i < N_SEEN; i++) {
        if (strcmp(SEEN[i].name, name) == 0)
            return &SEEN[i];
    }
    fail_msg("no result for %s", name);
    return NULL;
}

static void seen_clear(void)
{
    for (int i = 0; i < N_SEEN; i++)
        json_decref(SEEN[i].fields);
    N_SEEN = 0;
}

static void test_hostile_targets(void **state)
{
    (void)state;
    char probes[4096], scaled[4400];
    snprintf(
        probes, sizeof probes,
        "  - {name: pg-hang, kind: postgres, site: dc1, host: 127.0.0.1, port: %d, timeout: "
        "500ms}\n"
        "  - {name: pg-refused, kind: postgres, site: dc1, host: 127.0.0.1, port: %d, timeout: "
        "500ms}\n"
        "  - {name: http-ok, kind: http, site: dc1, url: \"http://127.0.0.1:%d/health\", "
        "expect_body: OK, timeout: 500ms}\n"
        "  - {name: http-503, kind: http, site: dc1, url: \"http://127.0.0.1:%d/status/503\", "
        "timeout: 500ms}\n"
        "  - {name: http-slow, kind: http, site: dc1, url: \"http://127.0.0.1:%d/slow\", timeout: "
        "500ms}\n"
        "  - {name: http-endless, kind: http, site: dc1, url: \"http://127.0.0.1:%d/endless\", "
        "timeout: 500ms}\n"
        "  - {name: http-body, kind: http, site: dc1, url: \"http://127.0.0.1:%d/json\", "
        "expect_body: nothere, timeout: 500ms}\n"
        "  - {name: tls-wrong-ca, kind: http, site: dc1, url: \"https://matrix.lab.test/health\", "
        "connect_to: \"127.0.0.1:%d\", ca_file: %s/other-ca.pem, timeout: 500ms}\n"
        "  - {name: tls-ok, kind: http, site: dc1, url: \"https://matrix.lab.test/health\", "
        "connect_to: \"127.0.0.1:%d\", ca_file: %s/lab-ca.pem, timeout: 500ms}\n"
        "  - {name: tls-expiring, kind: http, site: dc1, url: \"https://matrix.lab.test/health\", "
        "connect_to: \"127.0.0.1:%d\", ca_file: %s/lab-ca.pem, cert_min_days: 30, timeout: 500ms}\n"
        "  - {name: dns-ok, kind: dns, site: dc1, query: matrix.lab.test, servers: "
        "[\"127.0.0.1:%d\"], expect: 127.0.1.10, timeout: 500ms}\n"
        "  - {name: dns-moved, kind: dns, site: dc1, query: matrix.lab.test, servers: "
        "[\"127.0.0.1:%d\"], expect: 127.0.2.10, timeout: 500ms}\n"
        "  - {name: dns-silent, kind: dns, site: dc1, query: matrix.lab.test, servers: "
        "[\"127.0.0.1:%d\", \"127.0.0.1:%d\"], timeout: 500ms}\n",
        E.silent_port, pgtmp_free_port(), E.http_port, E.http_port, E.http_port, E.http_port,
        E.http_port, E.https_port, E.certs, E.https_port, E.certs, E.https_port, E.certs,
        E.dns_port, E.dns_port, E.dns_port, E.dns_silent_port);
    /* Under valgrind, give every probe more time (failures still fail). */
    const char *from = "timeout: 500ms}",
               *to = timing_checked() ? "timeout: 500ms}" : "timeout: 4s}";
    size_t o = 0;
    for (const char *c = probes; *c && o + 20 < sizeof scaled;) {
        if (strncmp(c, from, strlen(from)) == 0) {
            o += (size_t)snprintf(scaled + o, sizeof scaled - o, "%s", to);
            c += strlen(from);
        } else {
            scaled[o++] = *c++;
        }
    }
    scaled[o] = '\0';
    struct config cfg;
    load_config(&cfg, scaled, NULL);
    struct run r = { .on_result = record };
    int64_t took = run_probes(&r, &cfg, true, timing_checked() ? 5000 : 30000);
    /* All at once: the whole round takes about one timeout, not the sum. */
    if (timing_checked()) {
        assert_true(took < 500 + 400);
        assert_true(r.max_gap < 100);
    }
    assert_int_equal(N_SEEN, 13);

    const struct seen *s = seen("pg-hang");
    assert_false(s->ok);
    assert_true(s->latency >= 450);
    assert_true(s->latency < 800 || !timing_checked());
    assert_non_null(strstr(s->detail, "time"));
    s = seen("pg-refused");
    assert_false(s->ok);
    assert_non_null(strstr(s->detail, "refused"));
    assert_true(seen("http-ok")->ok);
    s = seen("http-503");
    assert_false(s->ok);
    assert_non_null(strstr(s->detail, "503"));
    s = seen("http-slow");
    assert_false(s->ok);
    assert_true(s->latency < 800 || !timing_checked());
    assert_non_null(strstr(s->detail, "timeout"));
    s = seen("http-endless");
    assert_false(s->ok);
    assert_non_null(strstr(s->detail, "exceeds"));
    s = seen("http-body");
    assert_false(s->ok);
    assert_non_null(strstr(s->detail, "lacks"));
    s = seen("tls-wrong-ca");
    assert_false(s->ok);
    assert_non_null(strstr(s->detail, "certificate"));
    s = seen("tls-ok");
    assert_true(s->ok);
    assert_non_null(strstr(s->detail, "HTTP 200, certificate expires in "));
    assert_true(json_integer_value(json_object_get(s->fields, "cert_days_left")) <= 2);
    s = seen("tls-expiring");
    assert_false(s->ok);
    assert_non_null(strstr(s->detail, "days (minimum 30)"));
    s = seen("dns-ok");
    assert_true(s->ok);
    assert_non_null(strstr(s->detail, "127.0.1.10 ttl=5"));
    s = seen("dns-moved");
    assert_false(s->ok);
    assert_non_null(strstr(s->detail, "expected 127.0.2.10"));
    s = seen("dns-silent");
    assert_false(s->ok);
    assert_non_null(strstr(s->detail, "timeout"));
    assert_true(s->latency < 800 || !timing_checked());
    seen_clear();
    config_free(&cfg);
}

static void test_postgres_fields(void **state)
{
    (void)state;
    if (!E.have_pg)
        skip();
    char probes[512];
    snprintf(probes, sizeof probes,
             "  - {name: pg, kind: postgres, site: dc1, host: 127.0.0.1, port: %d, timeout: 2s}\n",
             E.pg.port);
    struct config cfg;
    load_config(&cfg, probes, NULL);
    struct run r = { .on_result = record };
    run_probes(&r, &cfg, true, 5000);
    const struct seen *s = seen("pg");
    if (!s->ok)
        fprintf(stderr, "%s\n", s->detail);
    assert_true(s->ok);
    assert_non_null(strstr(s->detail, "primary timeline=1 lsn="));
    assert_non_null(strstr(s->detail, "writable replicas=0"));
    assert_false(json_is_true(json_object_get(s->fields, "in_recovery")));
    assert_true(json_is_true(json_object_get(s->fields, "accepts_writes")));
    assert_int_equal(json_integer_value(json_object_get(s->fields, "timeline")), 1);
    assert_true(json_integer_value(json_object_get(s->fields, "server_version")) >= 150000);
    seen_clear();

    /* Read-only: still up (the server answers), but reported as such. */
    char out[64];
    assert_int_equal(
        pgtmp_sql(&E.pg, "ALTER SYSTEM SET default_transaction_read_only = on", out, sizeof out),
        0);
    assert_int_equal(pgtmp_sql(&E.pg, "SELECT pg_reload_conf()", out, sizeof out), 0);
    struct run r2 = { .on_result = record };
    run_probes(&r2, &cfg, true, 5000);
    s = seen("pg");
    assert_true(s->ok);
    assert_non_null(strstr(s->detail, "read-only"));
    assert_false(json_is_true(json_object_get(s->fields, "accepts_writes")));
    pgtmp_sql(&E.pg, "ALTER SYSTEM RESET default_transaction_read_only", out, sizeof out);
    pgtmp_sql(&E.pg, "SELECT pg_reload_conf()", out, sizeof out);
    seen_clear();
    config_free(&cfg);
}

/* Continuous: the database dies, the probe's health goes DOWN after
 * fail_after failures spanning down_after, and UP again after recover_after
 * passes once it is back. */
static int health_steps(struct run *r, struct probe *p, bool changed)
{
    int64_t now = loop_now_ms();
    if (p->health.state == HEALTH_UP && r->phase == 0) {
        r->phase = 1;
        r->phase_at = now;
        pgtmp_signal(&E.pg, SIGQUIT); /* the database dies */
        pgtmp_wait(&E.pg);
    } else if (changed && p->health.state == HEALTH_DOWN && r->phase == 1) {
        /* 3 failures 100 ms apart, and at least down_after (400 ms). */
        int64_t took = now - r->phase_at;
        assert_true(took >= 400 && (took < 1500 || !timing_checked()));
        r->phase = 2;
        assert_int_equal(probe_site_health(&r->s, 0), HEALTH_DOWN);
        assert_int_equal(pgtmp_start(&E.pg), 0); /* blocks the loop; fine in a test */
        r->phase_at = loop_now_ms();
    } else if (changed && p->health.state == HEALTH_UP && r->phase == 2) {
        assert_true(p->health.passes >= 3);
        r->phase = 3;
        return 1;
    }
    return 0;
}

static void test_health_transitions(void **state)
{
    (void)state;
    if (!E.have_pg)
        skip();
    if (!timing_checked())
        skip(); /* 100 ms probes are not meaningful under valgrind */
    char probes[512];
    snprintf(probes, sizeof probes,
             "  - {name: pg, kind: postgres, site: dc1, host: 127.0.0.1, port: %d, interval: "
             "100ms, timeout: 300ms, jitter: 0%%}\n",
             E.pg.port);
    struct config cfg;
    load_config(&cfg, probes, "health: {fail_after: 3, down_after: 400ms, recover_after: 3}");
    struct run r = { .on_result = health_steps };
    run_probes(&r, &cfg, false, 20000);
    assert_int_equal(r.phase, 3);
    config_free(&cfg);
}

/* Many probes due at about the same time start in one loop wakeup: their
 * due times are rounded to a grid (2% of the interval, at most 20 ms). 200
 * probes a second for 2.3 s: about 460 starts; one wakeup each would give
 * nearly as many distinct start instants (ms), batched there are at most
 * about two per grid point. */
static int64_t STARTS[4096];
static int N_STARTS;

static int record_start(struct run *r, struct probe *p, bool changed)
{
    (void)r;
    (void)changed;
    if (N_STARTS < (int)(sizeof STARTS / sizeof STARTS[0]))
        STARTS[N_STARTS++] = p->started_ms;
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void test_starts_batched(void **state)
{
    (void)state;
    if (!timing_checked())
        skip(); /* 200 requests a second are not meaningful under valgrind */
    assert_int_equal(probe_grid_ms(1000), 20);
    assert_int_equal(probe_grid_ms(500), 10);
    assert_int_equal(probe_grid_ms(100), 2);
    assert_int_equal(probe_grid_ms(50), 1);
    static char probes[200 * 128];
    size_t o = 0;
    for (int i = 0; i < 200; i++)
        o += (size_t)snprintf(probes + o, sizeof probes - o,
                              "  - {name: h%d, kind: http, site: dc1, url: "
                              "\"http://127.0.0.1:%d/health\", interval: 1s, jitter: 10%%}\n",
                              i, E.http_port);
    struct config cfg;
    load_config(&cfg, probes, NULL);
    N_STARTS = 0;
    struct run r = { .on_result = record_start };
    run_probes(&r, &cfg, false, 2300);
    assert_true(N_STARTS >= 350);
    qsort(STARTS, (size_t)N_STARTS, sizeof STARTS[0], cmp_i64);
    int distinct = 0;
    for (int i = 0; i < N_STARTS; i++)
        distinct += i == 0 || STARTS[i] != STARTS[i - 1];
    fprintf(stderr, "# %d starts at %d distinct instants\n", N_STARTS, distinct);
    /* 2.3 s / 20 ms = 115 grid points, each start within a ms or two of its
     * point; unbatched, about 400 distinct instants. */
    assert_true(distinct * 2 < N_STARTS);
    assert_true(distinct <= 2 * (2300 / 20 + 1));
    config_free(&cfg);
}

/* A site's health takes every critical probe into account, not only its
 * first 64. */
static void test_site_health_many_critical(void **state)
{
    (void)state;
    static struct cfg_probe crit = { .critical = true };
    static struct cfg_probe other = { .critical = false };
    struct probe probes[100];
    memset(probes, 0, sizeof probes);
    struct probe_sched s = { .probes = probes, .n = 100 };
    for (int i = 0; i < 100; i++) {
        probes[i].cfg = i < 95 ? &crit : &other;
        probes[i].site = i < 80 ? 0 : 1; /* site 1: probes 80-94 critical */
        probes[i].health.state = HEALTH_UP;
    }
    assert_int_equal(probe_site_health(&s, 0), HEALTH_UP);
    assert_int_equal(probe_site_health(&s, 1), HEALTH_UP);
    assert_int_equal(probe_site_health(&s, 2), HEALTH_UNKNOWN); /* no critical probe */
    probes[90].health.state = HEALTH_DOWN;
    assert_int_equal(probe_site_health(&s, 1), HEALTH_DOWN);
    assert_int_equal(probe_site_health(&s, 0), HEALTH_UP);
    probes[90].health.state = HEALTH_UNKNOWN;
    assert_int_equal(probe_site_health(&s, 1), HEALTH_UNKNOWN);
    probes[90].health.state = HEALTH_UP;
    probes[97].health.state = HEALTH_DOWN; /* not critical */
    assert_int_equal(probe_site_health(&s, 1), HEALTH_UP);
    probes[70].health.state = HEALTH_DOWN; /* site 0's 71st critical probe */
    assert_int_equal(probe_site_health(&s, 0), HEALTH_DOWN);
    probes[70].health.state = HEALTH_UNKNOWN;
    assert_int_equal(probe_site_health(&s, 0), HEALTH_UNKNOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_targets),           cmocka_unit_test(test_postgres_fields),
        cmocka_unit_test(test_health_transitions),        cmocka_unit_test(test_starts_batched),
        cmocka_unit_test(test_site_health_many_critical),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
