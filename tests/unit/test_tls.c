/* Unit tests: mutually authenticated TLS links over libuv with framing.
 *
 * Every test runs one loop on loopback with a guard timer, counts the
 * callbacks of both sides and asserts the totals after uv_run. Certificates
 * come from testcerts (two CAs, "a" and "b"). Helper servers that must not
 * speak TLS (a silent server, a proxy that dribbles bytes) are forked
 * children with plain blocking sockets, killed and reaped by the test.
 * TLS_TEST_DEBUG=1 prints every on_close with its reason.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include <uv.h>

#include "lib/buf.h"
#include "lib/frame.h"
#include "lib/tls.h"
#include "testcerts.h"

static char certdir[256];

/* ---- fixture: one loop, one server, one client ---- */

struct side {
    struct tls_conn *conn; /* live connection (NULL once closed) */
    int opens, closes, frames;
    int status; /* of the last on_close */
    char reason[512];
    char name[TLS_NAME_MAX]; /* peer name at on_open */
    char addr[64];
    char proto[16];
    int bad_frames; /* frames whose size or content was wrong */
    uint64_t closed_at;
};

struct fx {
    uv_loop_t loop;
    uv_timer_t guard;
    int guard_fired, finished;
    struct tls_server *srv;
    int port;
    struct side cli, srv_side;
    int want_cli_closes, want_srv_closes; /* finish once both are reached */
    const size_t *plan;                   /* frame sizes each side sends/expects */
    size_t nplan;
    int cli_expect, srv_expect; /* finish once both sides got this many frames */
    int close_on_open;          /* the client closes as soon as it opens */
    void (*cli_open)(struct fx *f, struct tls_conn *c);
    void (*srv_open)(struct fx *f, struct tls_conn *c);
    void (*srv_frame)(struct fx *f, struct tls_conn *c, const char *p, size_t len);
    uint64_t started;
    int sends_ok, sends_nobufs; /* for the queue cap test */
    struct tls_conn_cbs ccbs, scbs;
};

static unsigned slow(void)
{
    const char *v = getenv("TRIAD_UNDER_VALGRIND");
    return v && *v == '1' ? 6 : 1;
}

static void fill(char *p, size_t len, size_t seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (char)((i * 31 + seed * 7 + (i >> 8)) & 0xff);
}

static int frame_ok(const struct fx *f, int k, const char *p, size_t len)
{
    if (f->plan == NULL)
        return 1;
    if ((size_t)k >= f->nplan || f->plan[k] != len)
        return 0;
    char *want = malloc(len);
    assert_non_null(want);
    fill(want, len, (size_t)k);
    int ok = memcmp(want, p, len) == 0;
    free(want);
    return ok;
}

static void on_guard_closed(uv_handle_t *h)
{
    (void)h;
}

static void finish(struct fx *f)
{
    if (f->finished)
        return;
    f->finished = 1;
    tls_conn_close(f->cli.conn);
    tls_conn_close(f->srv_side.conn);
    if (f->srv)
        tls_server_close(f->srv, NULL);
    f->srv = NULL;
    uv_close((uv_handle_t *)&f->guard, on_guard_closed);
}

static void maybe_finish(struct fx *f)
{
    if (f->cli.closes >= f->want_cli_closes && f->srv_side.closes >= f->want_srv_closes)
        finish(f);
}

static void check_done(struct fx *f)
{
    if (f->cli_expect + f->srv_expect > 0 && f->cli.frames >= f->cli_expect &&
        f->srv_side.frames >= f->srv_expect)
        finish(f);
}

static void on_guard(uv_timer_t *t)
{
    struct fx *f = t->data;
    f->guard_fired = 1;
    finish(f);
}

static void record_open(struct side *s, struct tls_conn *c)
{
    s->opens++;
    s->conn = c;
    const char *n = tls_conn_peer_name(c);
    snprintf(s->name, sizeof s->name, "%s", n ? n : "(null)");
    snprintf(s->addr, sizeof s->addr, "%s", tls_conn_peer_addr(c));
    n = tls_conn_protocol(c);
    snprintf(s->proto, sizeof s->proto, "%s", n ? n : "(null)");
}

static void record_close(struct fx *f, struct side *s, struct tls_conn *c, int status,
                         const char *reason)
{
    s->closes++;
    s->status = status;
    snprintf(s->reason, sizeof s->reason, "%s", reason);
    s->closed_at = uv_hrtime();
    if (getenv("TLS_TEST_DEBUG"))
        fprintf(stderr, "# close %s: %d %s\n", s == &f->cli ? "cli" : "srv", status, reason);
    if (s->conn == c)
        s->conn = NULL;
    /* Closed connections refuse to send; closing again is harmless. */
    assert_int_equal(tls_conn_send(c, "x", 1), -ENOTCONN);
    tls_conn_close(c);
    maybe_finish(f);
}

static void cli_on_open(struct tls_conn *c)
{
    struct fx *f = tls_conn_get_data(c);
    record_open(&f->cli, c);
    if (f->close_on_open)
        tls_conn_close(c);
    else if (f->cli_open)
        f->cli_open(f, c);
}

static void cli_on_frame(struct tls_conn *c, const char *p, size_t len)
{
    struct fx *f = tls_conn_get_data(c);
    if (!frame_ok(f, f->cli.frames, p, len))
        f->cli.bad_frames++;
    f->cli.frames++;
    check_done(f);
}

static void cli_on_close(struct tls_conn *c, int status, const char *reason)
{
    struct fx *f = tls_conn_get_data(c);
    record_close(f, &f->cli, c, status, reason);
}

static void srv_on_open(struct tls_conn *c)
{
    struct fx *f = tls_conn_get_data(c);
    record_open(&f->srv_side, c);
    if (f->srv_open)
        f->srv_open(f, c);
}

static void srv_on_frame(struct tls_conn *c, const char *p, size_t len)
{
    struct fx *f = tls_conn_get_data(c);
    if (!frame_ok(f, f->srv_side.frames, p, len))
        f->srv_side.bad_frames++;
    f->srv_side.frames++;
    if (f->srv_frame)
        f->srv_frame(f, c, p, len);
    check_done(f);
}

static void srv_on_close(struct tls_conn *c, int status, const char *reason)
{
    struct fx *f = tls_conn_get_data(c);
    record_close(f, &f->srv_side, c, status, reason);
}

static void fx_init(struct fx *f)
{
    memset(f, 0, sizeof *f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_timer_init(&f->loop, &f->guard), 0);
    f->guard.data = f;
    assert_int_equal(uv_timer_start(&f->guard, on_guard, 10000 * slow(), 0), 0);
    f->want_cli_closes = 1;
    f->want_srv_closes = 1;
    f->ccbs = (struct tls_conn_cbs){ cli_on_open, cli_on_frame, cli_on_close };
    f->scbs = (struct tls_conn_cbs){ srv_on_open, srv_on_frame, srv_on_close };
    f->started = uv_hrtime();
}

static void fx_run(struct fx *f)
{
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_false(f->guard_fired);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

static struct tls_ctx *ctx_for(const char *ca, const char *leaf)
{
    char cap[512], certp[512], keyp[512], file[64], err[256] = "";
    struct tls_ctx *ctx = NULL;
    snprintf(file, sizeof file, "%s-ca.pem", ca);
    testcerts_path(cap, sizeof cap, certdir, file);
    if (leaf) {
        snprintf(file, sizeof file, "%s.pem", leaf);
        testcerts_path(certp, sizeof certp, certdir, file);
        snprintf(file, sizeof file, "%s.key", leaf);
        testcerts_path(keyp, sizeof keyp, certdir, file);
    }
    int r = tls_ctx_new(&ctx, cap, leaf ? certp : NULL, leaf ? keyp : NULL, err, sizeof err);
    if (r != 0)
        fail_msg("tls_ctx_new(%s, %s): %s", ca, leaf ? leaf : "-", err);
    return ctx;
}

/* Listens on 127.0.0.1 with the server's certificate; the context is freed
 * at once, which the server must survive. */
static void fx_listen(struct fx *f, const char *ca, const char *leaf,
                      const char *const *accept_names, const struct tls_conn_opts *o)
{
    char err[256] = "";
    struct tls_ctx *ctx = ctx_for(ca, leaf);
    struct tls_server_opts so = { .host = "127.0.0.1", .port = 0, .accept_names = accept_names };
    if (o)
        so.conn = *o;
    int r = tls_listen(&f->loop, ctx, &so, &f->scbs, f, &f->srv, err, sizeof err);
    if (r != 0)
        fail_msg("tls_listen: %s", err);
    tls_ctx_free(ctx);
    f->port = tls_server_port(f->srv);
    assert_true(f->port > 0);
}

static void fx_connect_to(struct fx *f, const char *ca, const char *leaf, const char *host,
                          int port, const char *expect, const struct tls_conn_opts *o)
{
    char err[256] = "";
    struct tls_ctx *ctx = ctx_for(ca, leaf);
    struct tls_connect_opts co = { .host = host, .port = port, .expect_name = expect };
    if (o)
        co.conn = *o;
    int r = tls_connect(&f->loop, ctx, &co, &f->ccbs, f, &f->cli.conn, err, sizeof err);
    if (r != 0)
        fail_msg("tls_connect: %s", err);
    tls_ctx_free(ctx);
    /* Not open yet: nothing can be sent. */
    assert_int_equal(tls_conn_send(f->cli.conn, "x", 1), -ENOTCONN);
}

static void fx_connect(struct fx *f, const char *ca, const char *leaf, const char *expect,
                       const struct tls_conn_opts *o)
{
    fx_connect_to(f, ca, leaf, "127.0.0.1", f->port, expect, o);
}

/* ---- forked helpers ---- */

static int listen_socket(int *port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void reap(pid_t pid)
{
    int st;
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
}

/* Accepts connections and never says a word. */
static pid_t spawn_silent_server(int *port)
{
    int fd = listen_socket(port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        for (;;) {
            if (accept(fd, NULL, NULL) < 0 && errno != EINTR)
                _exit(0);
        }
    }
    close(fd);
    return pid;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            _exit(0);
        p += w;
        n -= (size_t)w;
    }
}

/* A TCP proxy to 127.0.0.1:upstream that forwards in 1 to 7 byte writes
 * with a pause after each, so the far side reads TLS records, and the
 * frames inside them, in many small pieces. */
static pid_t spawn_dribble_proxy(int upstream, int *port)
{
    int lfd = listen_socket(port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        static const size_t steps[] = { 1, 2, 3, 5, 7 };
        struct sockaddr_in a = { .sin_family = AF_INET };
        int one = 1;
        size_t k = 0;
        char buf[4096];
        int down = accept(lfd, NULL, NULL);
        int up = socket(AF_INET, SOCK_STREAM, 0);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons((uint16_t)upstream);
        if (down < 0 || up < 0 || connect(up, (struct sockaddr *)&a, sizeof a) < 0)
            _exit(1);
        setsockopt(down, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct pollfd p[2] = { { .fd = down, .events = POLLIN }, { .fd = up, .events = POLLIN } };
        for (;;) {
            if (poll(p, 2, -1) < 0)
                continue;
            for (int i = 0; i < 2; i++) {
                if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                ssize_t n = read(p[i].fd, buf, sizeof buf);
                if (n <= 0)
                    _exit(0);
                for (ssize_t off = 0; off < n;) {
                    size_t step = steps[k++ % 5];
                    if (step > (size_t)(n - off))
                        step = (size_t)(n - off);
                    write_all(p[1 - i].fd, buf + off, step);
                    off += (ssize_t)step;
                    usleep(20);
                }
            }
        }
    }
    close(lfd);
    return pid;
}

/* ---- sending a plan of frames ---- */

static const size_t plan_sizes[] = { 1, 2, 100, 16380, 16384, 16385, 100000, 1048576, 7 };
#define PLAN_N (sizeof plan_sizes / sizeof plan_sizes[0])

static void send_plan(struct fx *f, struct tls_conn *c)
{
    for (size_t k = 0; k < f->nplan; k++) {
        char *p = malloc(f->plan[k]);
        assert_non_null(p);
        fill(p, f->plan[k], k);
        assert_int_equal(tls_conn_send(c, p, f->plan[k]), 0);
        free(p);
    }
}

static void expect_plan_both_ways(struct fx *f, const size_t *plan, size_t n)
{
    f->plan = plan;
    f->nplan = n;
    f->cli_expect = (int)n;
    f->srv_expect = (int)n;
    f->cli_open = send_plan;
    f->srv_open = send_plan;
}

static void check_plan_result(const struct fx *f)
{
    assert_int_equal(f->cli.opens, 1);
    assert_int_equal(f->srv_side.opens, 1);
    assert_int_equal(f->cli.frames, (int)f->nplan);
    assert_int_equal(f->srv_side.frames, (int)f->nplan);
    assert_int_equal(f->cli.bad_frames, 0);
    assert_int_equal(f->srv_side.bad_frames, 0);
    assert_int_equal(f->cli.closes, 1);
    assert_int_equal(f->srv_side.closes, 1);
    assert_int_equal(f->cli.status, 0);
    assert_int_equal(f->srv_side.status, 0);
}

/* ---- tests ---- */

/* Both sides verify each other; frames of all sizes up to the cap flow both
 * ways, in order and intact. */
static void test_mutual_auth_frames(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f);
    expect_plan_both_ways(&f, plan_sizes, PLAN_N);
    fx_listen(&f, "a", "dc1", NULL, NULL);
    fx_connect(&f, "a", "dc2", "dc1", NULL);
    fx_run(&f);
    check_plan_result(&f);
    assert_string_equal(f.cli.name, "dc1");
    assert_string_equal(f.srv_side.name, "dc2"); /* told to the accepting side */
    assert_string_equal(f.cli.proto, "TLSv1.3");
    assert_string_equal(f.srv_side.proto, "TLSv1.3");
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%d", f.port);
    assert_string_equal(f.cli.addr, want);
    assert_memory_equal(f.srv_side.addr, "127.0.0.1:", 10);
}

/* The same through a proxy that splits the byte stream into tiny TCP
 * writes, handshake included. */
static void test_tiny_tcp_writes(void **state)
{
    (void)state;
    static const size_t sizes[] = { 1, 5, 300, 5000, 3 };
    struct fx f;
    int pport;
    fx_init(&f);
    expect_plan_both_ways(&f, sizes, 5);
    fx_listen(&f, "a", "dc1", NULL, NULL);
    pid_t proxy = spawn_dribble_proxy(f.port, &pport);
    fx_connect_to(&f, "a", "dc2", "127.0.0.1", pport, "dc1", NULL);
    fx_run(&f);
    reap(proxy);
    check_plan_result(&f);
}

static void raw_batches(struct fx *f, struct tls_conn *c)
{
    struct buf b;
    char p[64];
    buf_init(&b, 1 << 16);
    /* Frame 0 split over four TLS records, one byte each for the header. */
    fill(p, f->plan[0], 0);
    assert_int_equal(frame_append(&b, p, f->plan[0], 0), 0);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(tls_conn_write_raw(c, b.data + i, 1), 0);
    assert_int_equal(tls_conn_write_raw(c, b.data + 4, b.len - 4), 0);
    /* Frames 1..n-1 all in one write, hence one TLS record. */
    buf_reset(&b);
    for (size_t k = 1; k < f->nplan; k++) {
        fill(p, f->plan[k], k);
        assert_int_equal(frame_append(&b, p, f->plan[k], 0), 0);
    }
    assert_true(b.len < 16384);
    assert_int_equal(tls_conn_write_raw(c, b.data, b.len), 0);
    buf_free(&b);
}

/* Record boundaries that do not match frames: one frame over several
 * records, and 200 frames in a single record. */
static void test_many_frames_one_write(void **state)
{
    (void)state;
    static size_t sizes[201];
    struct fx f;
    for (size_t k = 0; k < 201; k++)
        sizes[k] = 1 + (k * 13) % 50;
    fx_init(&f);
    f.plan = sizes;
    f.nplan = 201;
    f.srv_expect = 201;
    f.cli_open = raw_batches;
    fx_listen(&f, "a", "dc1", NULL, NULL);
    fx_connect(&f, "a", "dc2", "dc1", NULL);
    fx_run(&f);
    assert_int_equal(f.srv_side.frames, 201);
    assert_int_equal(f.srv_side.bad_frames, 0);
    assert_int_equal(f.cli.closes, 1);
    assert_int_equal(f.srv_side.closes, 1);
}

/* Runs a handshake that is expected to fail: the client closes at once if
 * it ever opens, and the test ends when both sides have closed. */
static void run_refused(struct fx *f, const char *sca, const char *sleaf, const char *const *accept,
                        const char *cca, const char *cleaf, const char *expect)
{
    fx_init(f);
    f->close_on_open = 1;
    fx_listen(f, sca, sleaf, accept, NULL);
    fx_connect(f, cca, cleaf, expect, NULL);
    fx_run(f);
    assert_int_equal(f->cli.closes, 1);
    assert_int_equal(f->srv_side.closes, 1);
}

static void assert_prefix(const char *s, const char *prefix)
{
    if (strncmp(s, prefix, strlen(prefix)) != 0)
        fail_msg("'%s' does not start with '%s'", s, prefix);
}

static void assert_contains(const char *s, const char *part)
{
    if (strstr(s, part) == NULL)
        fail_msg("'%s' does not contain '%s'", s, part);
}

static void test_server_cert_other_ca(void **state)
{
    (void)state;
    struct fx f;
    run_refused(&f, "b", "b-dc1", NULL, "a", "dc2", "dc1");
    assert_int_equal(f.cli.opens, 0);
    assert_int_equal(f.srv_side.opens, 0);
    assert_int_equal(f.cli.status, -EACCES);
    /* OpenSSL completes the server's chain from its trust store, so the
     * untrusted link is b's self-signed root. */
    assert_string_equal(f.cli.reason, "certificate verify failed: self-signed certificate in "
                                      "certificate chain (certificate 'b', depth 1)");
    /* The client's alert tells the server why. */
    assert_int_equal(f.srv_side.status, -EPROTO);
    assert_contains(f.srv_side.reason, "alert");
}

static void test_client_cert_other_ca(void **state)
{
    (void)state;
    struct fx f;
    run_refused(&f, "a", "dc1", NULL, "a", "b-dc2", "dc1");
    assert_int_equal(f.srv_side.opens, 0);
    assert_int_equal(f.srv_side.status, -EACCES);
    assert_prefix(f.srv_side.reason, "certificate verify failed: ");
    /* TLS 1.3 finishes on the client first: it must still never open. */
    assert_int_equal(f.cli.opens, 0);
    assert_int_equal(f.cli.status, -EPROTO);
    assert_contains(f.cli.reason, "alert");
}

static void test_wrong_name(void **state)
{
    (void)state;
    struct fx f;
    run_refused(&f, "a", "dc3", NULL, "a", "dc1", "dc2");
    assert_int_equal(f.cli.opens, 0);
    assert_int_equal(f.srv_side.opens, 0);
    assert_int_equal(f.cli.status, -EACCES);
    assert_string_equal(f.cli.reason, "peer name 'dc3' does not match expected 'dc2'");
}

static void test_client_without_certificate(void **state)
{
    (void)state;
    struct fx f;
    run_refused(&f, "a", "dc1", NULL, "a", NULL, "dc1");
    assert_int_equal(f.cli.opens, 0);
    assert_int_equal(f.srv_side.opens, 0);
    assert_int_equal(f.srv_side.status, -EACCES);
    assert_contains(f.srv_side.reason, "peer did not return a certificate");
    assert_true(f.cli.status < 0);
}

/* A server with a list of acceptable names refuses others and reports the
 * matched entry for the rest. */
static void test_server_accept_names(void **state)
{
    (void)state;
    static const char *const names[] = { "dc1", "dc2", NULL };
    struct fx f;
    run_refused(&f, "a", "dc3", names, "a", "dc4", "dc3");
    assert_int_equal(f.srv_side.opens, 0);
    assert_int_equal(f.cli.opens, 0);
    assert_int_equal(f.srv_side.status, -EACCES);
    assert_string_equal(f.srv_side.reason,
                        "peer name 'dc4' is not one of the accepted names (dc1, dc2)");

    run_refused(&f, "a", "dc3", names, "a", "dc2", "dc3");
    assert_int_equal(f.srv_side.opens, 1);
    assert_int_equal(f.cli.opens, 1);
    assert_string_equal(f.srv_side.name, "dc2");
    assert_int_equal(f.cli.status, 0);
    assert_int_equal(f.srv_side.status, -ECONNRESET);
    assert_string_equal(f.srv_side.reason, "connection closed by peer");
}

/* X509_check_host semantics: the CN counts only without DNS SANs. */
static void test_cn_only_and_san_precedence(void **state)
{
    (void)state;
    struct fx f;
    run_refused(&f, "a", "cn-dc2", NULL, "a", "dc1", "dc2");
    assert_int_equal(f.cli.opens, 1);
    assert_string_equal(f.cli.name, "dc2");

    run_refused(&f, "a", "san-dc2-cn-dc9", NULL, "a", "dc1", "dc9");
    assert_int_equal(f.cli.opens, 0);
    assert_string_equal(f.cli.reason, "peer name 'dc2' does not match expected 'dc9'");

    run_refused(&f, "a", "san-dc2-cn-dc9", NULL, "a", "dc1", "dc2");
    assert_int_equal(f.cli.opens, 1);
    assert_string_equal(f.srv_side.name, "dc1");
}

static void send_big(struct fx *f, struct tls_conn *c)
{
    (void)f;
    size_t n = 2000000;
    char *p = calloc(1, n);
    assert_non_null(p);
    assert_int_equal(tls_conn_send(c, p, n), 0);
    free(p);
}

/* The acceptance criterion: a peer frame larger than the cap is refused
 * and the link closed, with the reason. */
static void test_oversized_frame_closes_link(void **state)
{
    (void)state;
    struct fx f;
    struct tls_conn_opts big = { .frame_max = 4 << 20, .write_queue_max = 8 << 20 };
    fx_init(&f);
    f.cli_open = send_big;
    fx_listen(&f, "a", "dc1", NULL, NULL); /* default cap: 1 MiB */
    fx_connect(&f, "a", "dc2", "dc1", &big);
    fx_run(&f);
    assert_int_equal(f.srv_side.opens, 1);
    assert_int_equal(f.srv_side.frames, 0);
    assert_int_equal(f.srv_side.closes, 1);
    assert_int_equal(f.srv_side.status, -EMSGSIZE);
    assert_string_equal(f.srv_side.reason, "frame of 2000000 bytes exceeds the 1048576-byte cap");
    assert_int_equal(f.cli.closes, 1);
    assert_true(f.cli.status < 0);
}

static void send_huge_header(struct fx *f, struct tls_conn *c)
{
    (void)f;
    assert_int_equal(tls_conn_write_raw(c, "\xff\xff\xff\xff", 4), 0);
}

/* A header alone is enough to refuse: no payload is ever sent. */
static void test_huge_header_closes_link(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f);
    f.cli_open = send_huge_header;
    fx_listen(&f, "a", "dc1", NULL, NULL);
    fx_connect(&f, "a", "dc2", "dc1", NULL);
    fx_run(&f);
    assert_int_equal(f.srv_side.status, -EMSGSIZE);
    assert_string_equal(f.srv_side.reason,
                        "frame of 4294967295 bytes exceeds the 1048576-byte cap");
    assert_int_equal(f.cli.status, -ECONNRESET);
}

static void on_drained(uv_timer_t *t)
{
    struct fx *f = t->data;
    assert_int_equal(tls_conn_write_queued(f->cli.conn), 0);
    assert_int_equal(tls_conn_send(f->cli.conn, "after", 5), 0);
    f->sends_ok++;
    f->srv_expect = f->sends_ok;
    uv_close((uv_handle_t *)t, NULL);
}

static uv_timer_t drain_timer;

/* Local send errors leave the link up; the write queue cap says -ENOBUFS
 * within one tick and sends work again once the queue drained. */
static void send_until_full(struct fx *f, struct tls_conn *c)
{
    static char p[16384];
    assert_int_equal(tls_conn_send(c, p, 0), -EINVAL);
    assert_int_equal(tls_conn_send(c, p, (64 << 10) + 1), -EMSGSIZE);
    for (int i = 0; i < 20; i++) {
        int r = tls_conn_send(c, p, sizeof p);
        if (r == -ENOBUFS) {
            f->sends_nobufs++;
            break;
        }
        assert_int_equal(r, 0);
        f->sends_ok++;
    }
    assert_true(tls_conn_write_queued(c) > 0);
    uv_timer_init(&f->loop, &drain_timer);
    drain_timer.data = f;
    uv_timer_start(&drain_timer, on_drained, 200 * slow(), 0);
}

static void test_send_errors_and_queue_cap(void **state)
{
    (void)state;
    struct fx f;
    struct tls_conn_opts small = { .frame_max = 64 << 10, .write_queue_max = 64 << 10 };
    fx_init(&f);
    f.cli_open = send_until_full;
    f.srv_expect = 1000; /* set by on_drained */
    fx_listen(&f, "a", "dc1", NULL, &small);
    fx_connect(&f, "a", "dc2", "dc1", &small);
    fx_run(&f);
    assert_int_equal(f.sends_nobufs, 1);
    assert_int_equal(f.sends_ok, 4); /* three 16 KiB frames fit in 64 KiB, then one more */
    assert_int_equal(f.srv_side.frames, 4);
    assert_int_equal(f.cli.status, 0);
}

/* A handshake against a server that accepts and never speaks. */
static void test_handshake_timeout(void **state)
{
    (void)state;
    struct fx f;
    int port;
    struct tls_conn_opts quick = { .handshake_timeout_ms = 300 };
    pid_t pid = spawn_silent_server(&port);
    fx_init(&f);
    f.want_srv_closes = 0;
    fx_connect_to(&f, "a", "dc2", "127.0.0.1", port, "dc1", &quick);
    fx_run(&f);
    reap(pid);
    assert_int_equal(f.cli.opens, 0);
    assert_int_equal(f.cli.closes, 1);
    assert_int_equal(f.cli.status, -ETIMEDOUT);
    char want[128];
    snprintf(want, sizeof want, "TLS handshake with 127.0.0.1:%d timed out after 300 ms", port);
    assert_string_equal(f.cli.reason, want);
    uint64_t ms = (f.cli.closed_at - f.started) / 1000000;
    assert_true(ms >= 290);
    assert_true(ms < 3000 * slow());
}

/* The server side of the same: a client that connects and never speaks. */
static void test_server_handshake_timeout(void **state)
{
    (void)state;
    struct fx f;
    struct tls_conn_opts quick = { .handshake_timeout_ms = 300 };
    struct sockaddr_in a = { .sin_family = AF_INET };
    fx_init(&f);
    f.want_cli_closes = 0;
    fx_listen(&f, "a", "dc1", NULL, &quick);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)f.port);
    /* Completes in the kernel's backlog: no loop needed. */
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    fx_run(&f);
    close(fd);
    assert_int_equal(f.srv_side.opens, 0);
    assert_int_equal(f.srv_side.closes, 1);
    assert_int_equal(f.srv_side.status, -ETIMEDOUT);
    assert_contains(f.srv_side.reason, "timed out after 300 ms");
}

static void close_server(uv_timer_t *t)
{
    struct fx *f = t->data;
    tls_server_close(f->srv, NULL);
    f->srv = NULL;
    uv_close((uv_handle_t *)t, NULL);
}

/* Handshakes in progress are capped, and closing the server cancels the
 * ones still running. */
static void test_handshake_cap_and_server_close(void **state)
{
    (void)state;
    struct fx f;
    struct tls_server_opts so = { .host = "127.0.0.1", .max_handshakes = 1 };
    struct sockaddr_in a = { .sin_family = AF_INET };
    char err[256];
    uv_timer_t t;
    int fds[2];
    fx_init(&f);
    f.want_cli_closes = 0;
    f.want_srv_closes = 2;
    struct tls_ctx *ctx = ctx_for("a", "dc1");
    assert_int_equal(tls_listen(&f.loop, ctx, &so, &f.scbs, &f, &f.srv, err, sizeof err), 0);
    tls_ctx_free(ctx);
    assert_ptr_equal(tls_server_get_data(f.srv), &f);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)tls_server_port(f.srv));
    for (int i = 0; i < 2; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        assert_int_equal(connect(fds[i], (struct sockaddr *)&a, sizeof a), 0);
    }
    uv_timer_init(&f.loop, &t);
    t.data = &f;
    uv_timer_start(&t, close_server, 300 * slow(), 0);
    fx_run(&f);
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(f.srv_side.opens, 0);
    assert_int_equal(f.srv_side.closes, 2);
    /* The last close is the cancelled handshake; the refused one came first. */
    assert_int_equal(f.srv_side.status, -ECANCELED);
    assert_contains(f.srv_side.reason, "closed during the handshake");
}

static void test_connection_refused(void **state)
{
    (void)state;
    struct fx f;
    int port;
    close(listen_socket(&port)); /* a port nobody listens on */
    fx_init(&f);
    f.want_srv_closes = 0;
    fx_connect_to(&f, "a", "dc2", "127.0.0.1", port, "dc1", NULL);
    fx_run(&f);
    assert_int_equal(f.cli.opens, 0);
    assert_int_equal(f.cli.closes, 1);
    assert_int_equal(f.cli.status, -ECONNREFUSED);
    char want[128];
    snprintf(want, sizeof want, "connect to 127.0.0.1:%d failed: connection refused", port);
    assert_string_equal(f.cli.reason, want);
}

/* The client's source address is the one partitions match on. */
static void test_bind_source_address(void **state)
{
    (void)state;
    struct fx f;
    char err[256];
    fx_init(&f);
    f.close_on_open = 1;
    fx_listen(&f, "a", "dc1", NULL, NULL);
    struct tls_ctx *ctx = ctx_for("a", "dc2");
    struct tls_connect_opts co = {
        .host = "127.0.0.1", .port = f.port, .bind_host = "127.0.0.2", .expect_name = "dc1"
    };
    assert_int_equal(tls_connect(&f.loop, ctx, &co, &f.ccbs, &f, &f.cli.conn, err, sizeof err), 0);
    tls_ctx_free(ctx);
    fx_run(&f);
    assert_int_equal(f.srv_side.opens, 1);
    assert_memory_equal(f.srv_side.addr, "127.0.0.2:", 10);
}

static void test_ipv6_loopback(void **state)
{
    (void)state;
    struct fx f;
    char err[256];
    fx_init(&f);
    f.close_on_open = 1;
    struct tls_ctx *ctx = ctx_for("a", "dc1");
    struct tls_server_opts so = { .host = "::1" };
    int r = tls_listen(&f.loop, ctx, &so, &f.scbs, &f, &f.srv, err, sizeof err);
    tls_ctx_free(ctx);
    if (r != 0) {
        /* No IPv6 on this host: let the loop free the listener, then skip. */
        uv_close((uv_handle_t *)&f.guard, NULL);
        uv_run(&f.loop, UV_RUN_DEFAULT);
        assert_int_equal(uv_loop_close(&f.loop), 0);
        skip();
    }
    f.port = tls_server_port(f.srv);
    fx_connect_to(&f, "a", "dc2", "::1", f.port, "dc1", NULL);
    fx_run(&f);
    assert_int_equal(f.cli.opens, 1);
    assert_int_equal(f.srv_side.opens, 1);
    assert_memory_equal(f.srv_side.addr, "[::1]:", 6);
}

static void close_in_open(struct fx *f, struct tls_conn *c)
{
    (void)f;
    tls_conn_close(c);
    assert_int_equal(tls_conn_send(c, "late", 4), -ENOTCONN);
    tls_conn_close(c);
}

static void ten_frames(struct fx *f, struct tls_conn *c)
{
    struct buf b;
    buf_init(&b, 4096);
    for (size_t k = 0; k < 10; k++) {
        char p[8];
        fill(p, f->plan[k], k);
        assert_int_equal(frame_append(&b, p, f->plan[k], 0), 0);
    }
    assert_int_equal(tls_conn_write_raw(c, b.data, b.len), 0);
    buf_free(&b);
}

static void close_in_frame(struct fx *f, struct tls_conn *c, const char *p, size_t len)
{
    (void)f;
    (void)p;
    (void)len;
    tls_conn_close(c);
}

/* Closing from inside callbacks: in on_open, and in on_frame with more
 * frames of the same record still to deliver (they must not be). */
static void test_close_from_callbacks(void **state)
{
    (void)state;
    static const size_t sizes[10] = { 1, 2, 3, 4, 5, 6, 7, 8, 1, 2 };
    struct fx f;
    fx_init(&f);
    f.srv_open = close_in_open;
    fx_listen(&f, "a", "dc1", NULL, NULL);
    fx_connect(&f, "a", "dc2", "dc1", NULL);
    fx_run(&f);
    assert_int_equal(f.srv_side.opens, 1);
    assert_int_equal(f.srv_side.closes, 1);
    assert_int_equal(f.srv_side.status, 0);
    assert_string_equal(f.srv_side.reason, "closed locally");
    assert_int_equal(f.cli.closes, 1);
    assert_int_equal(f.cli.status, -ECONNRESET);

    fx_init(&f);
    f.plan = sizes;
    f.nplan = 10;
    f.cli_open = ten_frames;
    f.srv_frame = close_in_frame;
    fx_listen(&f, "a", "dc1", NULL, NULL);
    fx_connect(&f, "a", "dc2", "dc1", NULL);
    fx_run(&f);
    assert_int_equal(f.srv_side.frames, 1);
    assert_int_equal(f.srv_side.closes, 1);
    assert_int_equal(f.srv_side.status, 0);
    assert_int_equal(f.cli.closes, 1);
}

static void send_lots(struct fx *f, struct tls_conn *c)
{
    (void)f;
    size_t n = 1 << 20;
    char *p = calloc(1, n);
    assert_non_null(p);
    for (int i = 0; i < 6; i++)
        assert_int_equal(tls_conn_send(c, p, n), 0);
    free(p);
    assert_true(tls_conn_write_queued(c) > 0);
}

static void srv_vanish(struct fx *f, struct tls_conn *c, const char *p, size_t len)
{
    (void)f;
    (void)p;
    (void)len;
    tls_conn_close(c);
}

/* The peer disappears while megabytes are still queued for it. */
static void test_peer_vanishes_mid_write(void **state)
{
    (void)state;
    struct fx f;
    struct tls_conn_opts o = { .write_queue_max = 16 << 20 };
    fx_init(&f);
    f.cli_open = send_lots;
    f.srv_frame = srv_vanish;
    fx_listen(&f, "a", "dc1", NULL, NULL);
    fx_connect(&f, "a", "dc2", "dc1", &o);
    fx_run(&f);
    assert_int_equal(f.srv_side.status, 0);
    assert_int_equal(f.cli.opens, 1);
    assert_int_equal(f.cli.closes, 1);
    assert_true(f.cli.status == -ECONNRESET || f.cli.status == -EPIPE);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    char cap[512], dc1[512], dc2key[512], missing[512], err[256];
    struct tls_ctx *ctx = NULL;
    uv_loop_t loop;
    struct tls_conn *c = (struct tls_conn *)&loop;
    struct tls_server *s = (struct tls_server *)&loop;
    struct tls_conn_cbs cbs = { NULL, NULL, NULL };

    testcerts_path(cap, sizeof cap, certdir, "a-ca.pem");
    testcerts_path(dc1, sizeof dc1, certdir, "dc1.pem");
    testcerts_path(dc2key, sizeof dc2key, certdir, "dc2.key");
    testcerts_path(missing, sizeof missing, certdir, "nope.pem");

    assert_int_equal(tls_ctx_new(&ctx, missing, NULL, NULL, err, sizeof err), -ENOENT);
    assert_null(ctx);
    assert_contains(err, "nope.pem");
    assert_int_equal(tls_ctx_new(&ctx, cap, dc1, NULL, err, sizeof err), -EINVAL);
    assert_int_equal(tls_ctx_new(&ctx, cap, dc1, dc2key, err, sizeof err), -EINVAL);
    assert_contains(err, "does not belong");
    assert_int_equal(tls_ctx_new(&ctx, cap, missing, dc2key, err, sizeof err), -EINVAL);
    assert_contains(err, "cannot load certificate file");

    assert_int_equal(uv_loop_init(&loop), 0);
    /* A server needs a certificate. */
    ctx = ctx_for("a", NULL);
    struct tls_server_opts so = { .host = "127.0.0.1" };
    assert_int_equal(tls_listen(&loop, ctx, &so, &cbs, NULL, &s, err, sizeof err), -EINVAL);
    assert_null(s);
    tls_ctx_free(ctx);

    ctx = ctx_for("a", "dc2");
    /* Names, not addresses, would need DNS: refused. */
    struct tls_connect_opts co = { .host = "localhost", .port = 7400, .expect_name = "dc1" };
    assert_int_equal(tls_connect(&loop, ctx, &co, &cbs, NULL, &c, err, sizeof err), -EINVAL);
    assert_null(c);
    co.host = "127.0.0.1";
    co.bind_host = "dc2.example";
    assert_int_equal(tls_connect(&loop, ctx, &co, &cbs, NULL, &c, err, sizeof err), -EINVAL);
    co.bind_host = NULL;
    co.expect_name = NULL;
    assert_int_equal(tls_connect(&loop, ctx, &co, &cbs, NULL, &c, err, sizeof err), -EINVAL);
    co.expect_name = "dc1";
    co.port = 0;
    assert_int_equal(tls_connect(&loop, ctx, &co, &cbs, NULL, &c, err, sizeof err), -EINVAL);

    /* A port in use is reported with the address. */
    int port;
    int fd = listen_socket(&port);
    so.port = port;
    struct tls_ctx *sctx = ctx_for("a", "dc1");
    assert_int_equal(tls_listen(&loop, sctx, &so, &cbs, NULL, &s, err, sizeof err), -EADDRINUSE);
    assert_contains(err, "cannot listen on 127.0.0.1:");
    tls_ctx_free(sctx);
    tls_ctx_free(ctx);
    close(fd);
    uv_run(&loop, UV_RUN_DEFAULT); /* frees the listener that failed */
    assert_int_equal(uv_loop_close(&loop), 0);
}

static int setup(void **state)
{
    (void)state;
    if (testcerts_dir(certdir, sizeof certdir) < 0)
        return -1;
    if (testcerts_ca(certdir, "a") < 0 || testcerts_ca(certdir, "b") < 0)
        return -1;
    static const char *const leaves[][4] = {
        { "a", "dc1", "dc1", "dc1" },   { "a", "dc2", "dc2", "dc2" },
        { "a", "dc3", "dc3", "dc3" },   { "a", "dc4", "dc4", "dc4" },
        { "b", "b-dc1", "dc1", "dc1" }, { "b", "b-dc2", "dc2", "dc2" },
        { "a", "cn-dc2", "dc2", NULL }, { "a", "san-dc2-cn-dc9", "dc9", "dc2" },
    };
    for (size_t i = 0; i < sizeof leaves / sizeof leaves[0]; i++)
        if (testcerts_leaf(certdir, leaves[i][0], leaves[i][1], leaves[i][2], leaves[i][3]) < 0)
            return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    testcerts_rmdir(certdir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mutual_auth_frames),
        cmocka_unit_test(test_tiny_tcp_writes),
        cmocka_unit_test(test_many_frames_one_write),
        cmocka_unit_test(test_server_cert_other_ca),
        cmocka_unit_test(test_client_cert_other_ca),
        cmocka_unit_test(test_wrong_name),
        cmocka_unit_test(test_client_without_certificate),
        cmocka_unit_test(test_server_accept_names),
        cmocka_unit_test(test_cn_only_and_san_precedence),
        cmocka_unit_test(test_oversized_frame_closes_link),
        cmocka_unit_test(test_huge_header_closes_link),
        cmocka_unit_test(test_send_errors_and_queue_cap),
        cmocka_unit_test(test_handshake_timeout),
        cmocka_unit_test(test_server_handshake_timeout),
        cmocka_unit_test(test_handshake_cap_and_server_close),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_bind_source_address),
        cmocka_unit_test(test_ipv6_loopback),
        cmocka_unit_test(test_close_from_callbacks),
        cmocka_unit_test(test_peer_vanishes_mid_write),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
