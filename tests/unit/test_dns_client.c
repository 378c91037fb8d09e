/* Unit tests: the libuv-driven DNS client against build/fixtures/dns_fixture
 * in its normal, silent, servfail, refused and garbage modes (127.0.0.1). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <cmocka.h>
#include <uv.h>

#include "testfix.h"
#include "lib/dns_client.h"

#define GUARD_MS 20000

/* ---- fixture processes ---- */

static int under_valgrind(void)
{
    const char *v = getenv("TRIAD_UNDER_VALGRIND");
    return v && *v == '1';
}

/* ---- suite state ---- */

enum { F_NORMAL, F_SILENT, F_SERVFAIL, F_REFUSED, F_GARBAGE, F_TRUNCATE, F_COUNT };
static const char *const modes[F_COUNT] = { "normal",  "silent",  "servfail",
                                            "refused", "garbage", "truncate" };
static pid_t pids[F_COUNT];
static int ports[F_COUNT];

static int suite_setup(void **state)
{
    (void)state;
    for (int i = 0; i < F_COUNT; i++) {
        const char *args[] = { "--mode", modes[i], NULL };
        pids[i] = fixture_start("dns_fixture", args, &ports[i]);
        if (pids[i] <= 0)
            return -1;
    }
    return 0;
}

static int suite_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < F_COUNT; i++)
        fixture_stop(pids[i]);
    dns_global_cleanup();
    return 0;
}

/* ---- loop harness ---- */

struct ctx {
    uv_loop_t loop;
    struct dns_client *client;
    uv_timer_t guard;
    int guard_fired;
    int closed;
    uint64_t start_ns;
};

static void on_guard(uv_timer_t *t)
{
    struct ctx *x = t->data;
    x->guard_fired = 1;
    uv_stop(&x->loop);
}

static void ctx_init(struct ctx *x)
{
    memset(x, 0, sizeof *x);
    assert_int_equal(uv_loop_init(&x->loop), 0);
    assert_int_equal(dns_client_new(&x->loop, &x->client), 0);
    uv_timer_init(&x->loop, &x->guard);
    x->guard.data = x;
    uv_timer_start(&x->guard, on_guard, GUARD_MS, 0);
    uv_unref((uv_handle_t *)&x->guard);
    x->start_ns = uv_hrtime();
}

static void ctx_run(struct ctx *x)
{
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_false(x->guard_fired);
}

static void on_client_closed(void *arg)
{
    struct ctx *x = arg;
    x->closed++;
}

static void ctx_done(struct ctx *x)
{
    dns_client_close(x->client, on_client_closed, x);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(x->closed, 1);
    uv_close((uv_handle_t *)&x->guard, NULL);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&x->loop), 0);
}

static uint64_t ctx_ms(const struct ctx *x)
{
    return (uv_hrtime() - x->start_ns) / 1000000;
}

#define MAX_KEPT 8

struct outcome {
    struct ctx *x;
    int calls;
    int result;
    int rcode;
    int aa;
    int truncated;
    char detail[DNS_DETAIL_MAX];
    size_t n;
    struct {
        char name[128];
        uint16_t type;
        uint32_t ttl;
        char value[256];
    } rec[MAX_KEPT];
    uint64_t done_ms;
    uint64_t elapsed_ms;
};

static void on_done(struct dns_query *q, const struct dns_result *res, void *arg)
{
    (void)q;
    struct outcome *o = arg;
    o->calls++;
    o->result = res->result;
    o->rcode = res->rcode;
    o->aa = res->authoritative;
    o->truncated = res->truncated;
    snprintf(o->detail, sizeof o->detail, "%s", res->detail);
    o->n = res->n_records;
    for (size_t i = 0; i < res->n_records && i < MAX_KEPT; i++) {
        snprintf(o->rec[i].name, sizeof o->rec[i].name, "%s", res->records[i].name);
        snprintf(o->rec[i].value, sizeof o->rec[i].value, "%s", res->records[i].value);
        o->rec[i].type = res->records[i].type;
        o->rec[i].ttl = res->records[i].ttl;
    }
    o->done_ms = o->x ? ctx_ms(o->x) : 0;
    o->elapsed_ms = res->elapsed_ms;
}

static void query(int fixture, const char *name, uint16_t type, uint32_t timeout_ms,
                  struct outcome *out)
{
    struct ctx x;
    ctx_init(&x);
    memset(out, 0, sizeof *out);
    out->x = &x;
    struct dns_query_opts o = { .server = "127.0.0.1",
                                .port = (uint16_t)ports[fixture],
                                .name = name,
                                .type = type,
                                .timeout_ms = timeout_ms,
                                .no_recurse = 1 };
    assert_int_equal(dns_query_start(x.client, &o, on_done, out, NULL), 0);
    assert_int_equal(out->calls, 0);
    ctx_run(&x);
    assert_int_equal(out->calls, 1);
    ctx_done(&x);
    out->x = NULL;
}

/* ---- tests ---- */

static void test_a(void **state)
{
    (void)state;
    struct outcome r;
    query(F_NORMAL, "a.test", DNS_T_A, 2000, &r);
    assert_int_equal(r.result, 0);
    assert_string_equal(r.detail, "NOERROR");
    assert_int_equal(r.rcode, DNS_RCODE_NOERROR);
    assert_true(r.aa);
    assert_int_equal(r.n, 2);
    for (int i = 0; i < 2; i++) {
        assert_string_equal(r.rec[i].name, "a.test.");
        assert_int_equal(r.rec[i].type, DNS_T_A);
        assert_int_equal(r.rec[i].ttl, 300);
    }
    assert_string_equal(r.rec[0].value, "192.0.2.1");
    assert_string_equal(r.rec[1].value, "192.0.2.2");
}

static void test_txt(void **state)
{
    (void)state;
    struct outcome r;
    query(F_NORMAL, "txt.test.", DNS_T_TXT, 2000, &r);
    assert_int_equal(r.result, 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.rec[0].type, DNS_T_TXT);
    assert_int_equal(r.rec[0].ttl, 60);
    assert_string_equal(r.rec[0].value, "epoch=7");
    /* Several strings in one record are concatenated. */
    query(F_NORMAL, "multi.test", DNS_T_TXT, 2000, &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.rec[0].value, "part one part two");
}

static void test_other_types(void **state)
{
    (void)state;
    struct outcome r;
    query(F_NORMAL, "alias.test", DNS_T_A, 2000, &r);
    assert_int_equal(r.result, 0);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.rec[0].type, DNS_T_CNAME);
    assert_int_equal(r.rec[0].ttl, 120);
    assert_string_equal(r.rec[0].value, "a.test.");
    assert_int_equal(r.rec[1].type, DNS_T_A);

    query(F_NORMAL, "v6.test", DNS_T_AAAA, 2000, &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.rec[0].value, "2001:db8::1");

    query(F_NORMAL, "test", DNS_T_NS, 2000, &r);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.rec[0].ttl, 3600);
    assert_string_equal(r.rec[0].value, "ns1.test.");

    query(F_NORMAL, "test", DNS_T_SOA, 2000, &r);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.rec[0].ttl, 3600);
    assert_string_equal(r.rec[0].value, "ns1.test. admin.test. 2024010101 3600 600 86400 300");
}

static void test_tcp_fallback(void **state)
{
    (void)state;
    struct outcome r;
    /* 20 TXT records of ~115 bytes: over the EDNS size, so over TCP. */
    query(F_NORMAL, "big.test", DNS_T_TXT, 2000, &r);
    assert_int_equal(r.result, 0);
    assert_int_equal(r.n, 20);
    assert_int_equal(r.rec[0].ttl, 30);
    assert_true(strncmp(r.rec[0].value, "record 00 000", 13) == 0);
    assert_int_equal(strlen(r.rec[0].value), 110);
    /* A server that truncates every UDP answer. */
    query(F_TRUNCATE, "a.test", DNS_T_A, 2000, &r);
    assert_int_equal(r.result, 0);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.rec[1].value, "192.0.2.2");
}

static void test_record_cap(void **state)
{
    (void)state;
    struct outcome r;
    query(F_NORMAL, "many.test", DNS_T_A, 2000, &r);
    assert_int_equal(r.result, 0);
    assert_int_equal(r.n, DNS_MAX_RECORDS);
    assert_true(r.truncated);
    assert_string_equal(r.rec[0].value, "198.51.100.1");
}

static void test_nxdomain_nodata(void **state)
{
    (void)state;
    struct outcome r;
    query(F_NORMAL, "nope.test", DNS_T_A, 2000, &r);
    assert_int_equal(r.result, -ENOENT);
    assert_string_equal(r.detail, "NXDOMAIN");
    assert_int_equal(r.rcode, DNS_RCODE_NXDOMAIN);
    assert_int_equal(r.n, 0);

    query(F_NORMAL, "a.test", DNS_T_TXT, 2000, &r);
    assert_int_equal(r.result, 0);
    assert_string_equal(r.detail, "NODATA");
    assert_int_equal(r.n, 0);
}

static void test_timeout_silent(void **state)
{
    (void)state;
    struct outcome r;
    query(F_SILENT, "a.test", DNS_T_A, 600, &r);
    assert_int_equal(r.result, -ETIMEDOUT);
    assert_string_equal(r.detail, "timeout after 600 ms (2 tries)");
    assert_int_equal(r.rcode, -1);
    assert_true(r.done_ms >= 550);
    assert_true(r.done_ms < (under_valgrind() ? 2000u : 900u));
}

static void test_servfail_refused(void **state)
{
    (void)state;
    struct outcome r;
    query(F_SERVFAIL, "a.test", DNS_T_A, 3000, &r);
    assert_int_equal(r.result, -EAGAIN);
    assert_string_equal(r.detail, "SERVFAIL");
    assert_int_equal(r.rcode, DNS_RCODE_SERVFAIL);
    assert_true(r.done_ms < 1000); /* an answer, not retried until the timeout */

    query(F_REFUSED, "a.test", DNS_T_A, 3000, &r);
    assert_int_equal(r.result, -EACCES);
    assert_string_equal(r.detail, "REFUSED");
    assert_int_equal(r.rcode, DNS_RCODE_REFUSED);
    assert_true(r.done_ms < 1000);
}

static void test_garbage(void **state)
{
    (void)state;
    struct outcome r;
    query(F_GARBAGE, "a.test", DNS_T_A, 500, &r);
    assert_int_equal(r.result, -ETIMEDOUT); /* junk is ignored, never parsed as an answer */
}

static void test_port_unreachable(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    struct ctx x;
    ctx_init(&x);
    struct outcome r = { .x = &x };
    struct dns_query_opts o = { .server = "127.0.0.1",
                                .port = ntohs(sa.sin_port),
                                .name = "a.test",
                                .type = DNS_T_A,
                                .timeout_ms = 1000,
                                .tries = 1 };
    assert_int_equal(dns_query_start(x.client, &o, on_done, &r, NULL), 0);
    ctx_run(&x);
    assert_int_equal(r.calls, 1);
    /* ICMP port unreachable is not rate-limited on loopback. */
    assert_int_equal(r.result, -ECONNREFUSED);
    assert_string_equal(r.detail, "connection refused");
    ctx_done(&x);
}

static void test_local_addr(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    struct outcome r = { .x = &x };
    struct dns_query_opts o = { .server = "127.0.0.1",
                                .port = (uint16_t)ports[F_NORMAL],
                                .name = "whoami.test",
                                .type = DNS_T_TXT,
                                .local_addr = "127.0.0.2" };
    assert_int_equal(dns_query_start(x.client, &o, on_done, &r, NULL), 0);
    ctx_run(&x);
    assert_int_equal(r.result, 0);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.rec[0].value, "127.0.0.2");

    /* Not an address of this host: the socket cannot be bound, and that is
     * still reported from the loop, not from dns_query_start. */
    memset(&r, 0, sizeof r);
    r.x = &x;
    o.local_addr = "192.0.2.77";
    assert_int_equal(dns_query_start(x.client, &o, on_done, &r, NULL), 0);
    assert_int_equal(r.calls, 0);
    ctx_run(&x);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.result, -EADDRNOTAVAIL);
    assert_string_equal(r.detail,
                        "cannot bind source address 192.0.2.77: Cannot assign requested address");
    assert_true(r.done_ms < 1000);
    ctx_done(&x);
}

static void test_bad_options(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    struct outcome r = { .x = &x };
    struct dns_query *q = (struct dns_query *)&r;
    struct dns_query_opts o = { .server = "localhost", .name = "a.test", .type = DNS_T_A };
    assert_int_equal(dns_query_start(x.client, &o, on_done, &r, &q), -EINVAL);
    assert_null(q);
    o.server = "127.0.0.1";
    o.name = "";
    assert_int_equal(dns_query_start(x.client, &o, on_done, &r, NULL), -EINVAL);
    o.name = "a.test";
    o.local_addr = "::1";
    assert_int_equal(dns_query_start(x.client, &o, on_done, &r, NULL), -EINVAL);
    o.local_addr = NULL;
    o.tries = DNS_MAX_TRIES + 1;
    assert_int_equal(dns_query_start(x.client, &o, on_done, &r, NULL), -EINVAL);
    ctx_run(&x);
    assert_int_equal(r.calls, 0);
    assert_int_equal(dns_client_active(x.client), 0);
    ctx_done(&x);

    assert_int_equal(dns_type_parse("txt"), DNS_T_TXT);
    assert_int_equal(dns_type_parse("AAAA"), DNS_T_AAAA);
    assert_int_equal(dns_type_parse("BOGUS"), 0);
    assert_string_equal(dns_type_name(DNS_T_SOA), "SOA");
    assert_string_equal(dns_rcode_name(DNS_RCODE_NXDOMAIN), "NXDOMAIN");
}

struct canceller {
    uv_timer_t t;
    struct dns_query *q;
    struct outcome *o;
    int calls_right_after;
};

static void on_cancel_timer(uv_timer_t *t)
{
    struct canceller *c = t->data;
    dns_query_cancel(c->q);
    c->calls_right_after = c->o->calls;
    dns_query_cancel(c->q);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_cancel(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    struct outcome r = { .x = &x };
    struct canceller c = { .o = &r };
    struct dns_query_opts o = { .server = "127.0.0.1",
                                .port = (uint16_t)ports[F_SILENT],
                                .name = "a.test",
                                .type = DNS_T_A,
                                .timeout_ms = 5000 };
    assert_int_equal(dns_query_start(x.client, &o, on_done, &r, &c.q), 0);
    uv_timer_init(&x.loop, &c.t);
    c.t.data = &c;
    uv_timer_start(&c.t, on_cancel_timer, 50, 0);
    ctx_run(&x);
    assert_int_equal(c.calls_right_after, 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.result, -ECANCELED);
    assert_string_equal(r.detail, "cancelled");
    assert_true(r.done_ms < 1000);
    ctx_done(&x);
}

static void test_close_with_pending(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dns_client *client;
    assert_int_equal(dns_client_new(&loop, &client), 0);
    struct outcome r[3];
    memset(r, 0, sizeof r);
    struct dns_query_opts o = { .server = "127.0.0.1",
                                .port = (uint16_t)ports[F_SILENT],
                                .name = "a.test",
                                .type = DNS_T_A,
                                .timeout_ms = 5000 };
    for (int i = 0; i < 3; i++)
        assert_int_equal(dns_query_start(client, &o, on_done, &r[i], NULL), 0);
    assert_int_equal(dns_client_active(client), 3);
    uv_run(&loop, UV_RUN_NOWAIT);
    int closed = 0;
    struct ctx fake = { .closed = 0 };
    dns_client_close(client, on_client_closed, &fake);
    assert_int_equal(dns_query_start(client, &o, on_done, &r[0], NULL), -ESHUTDOWN);
    for (int i = 0; i < 3; i++)
        assert_int_equal(r[i].calls, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    closed = fake.closed;
    assert_int_equal(closed, 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].result, -ECANCELED);
    }
    assert_int_equal(uv_loop_close(&loop), 0);
}

struct many {
    int done;
    int ok;
};

static void on_many(struct dns_query *q, const struct dns_result *res, void *arg)
{
    (void)q;
    struct many *m = arg;
    m->done++;
    if (res->result == 0 && res->n_records == 2)
        m->ok++;
}

static void test_concurrent(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    struct many m = { 0 };
    struct dns_query_opts o = { .server = "127.0.0.1",
                                .port = (uint16_t)ports[F_NORMAL],
                                .name = "a.test",
                                .type = DNS_T_A,
                                .timeout_ms = 5000,
                                .tries = 3 };
    const int n = 200;
    for (int i = 0; i < n; i++)
        assert_int_equal(dns_query_start(x.client, &o, on_many, &m, NULL), 0);
    ctx_run(&x);
    assert_int_equal(m.done, n);
    assert_int_equal(m.ok, n);
    print_message("# %d concurrent queries in %llu ms\n", n, (unsigned long long)ctx_ms(&x));
    ctx_done(&x);
}

static void test_silent_does_not_delay_fast(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    struct outcome slow = { .x = &x }, fast = { .x = &x };
    struct dns_query_opts os = { .server = "127.0.0.1",
                                 .port = (uint16_t)ports[F_SILENT],
                                 .name = "a.test",
                                 .type = DNS_T_A,
                                 .timeout_ms = 1500 };
    struct dns_query_opts of = os;
    of.port = (uint16_t)ports[F_NORMAL];
    assert_int_equal(dns_query_start(x.client, &os, on_done, &slow, NULL), 0);
    assert_int_equal(dns_query_start(x.client, &of, on_done, &fast, NULL), 0);
    ctx_run(&x);
    assert_int_equal(fast.result, 0);
    assert_int_equal(slow.result, -ETIMEDOUT);
    assert_true(fast.done_ms < (under_valgrind() ? 500u : 150u));
    assert_true(slow.done_ms >= 1400);
    ctx_done(&x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a),
        cmocka_unit_test(test_txt),
        cmocka_unit_test(test_other_types),
        cmocka_unit_test(test_tcp_fallback),
        cmocka_unit_test(test_record_cap),
        cmocka_unit_test(test_nxdomain_nodata),
        cmocka_unit_test(test_timeout_silent),
        cmocka_unit_test(test_servfail_refused),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_port_unreachable),
        cmocka_unit_test(test_local_addr),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_close_with_pending),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_silent_does_not_delay_fast),
    };
    return cmocka_run_group_tests(tests, suite_setup, suite_teardown);
}
