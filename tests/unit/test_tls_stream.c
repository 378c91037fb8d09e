/* Unit tests: the TLS stream server (lib/tls_stream) in front of a real
 * lib/httpd whose handler echoes the identity, sums bodies and serves
 * large answers.
 *
 * Clients are real and separate: curl's CLI in child processes (with and
 * without client certificates, TLS 1.2 and 1.3, large bodies both ways,
 * rate-limited transfers), raw TCP clients on the loop under test (the
 * handshake timeout and the connection cap need no TLS), and forked
 * clients with blocking OpenSSL sockets for the misbehaving cases (one that
 * never reads, one that vanishes mid-request, one that checks the close
 * is a clean close_notify, one holding a connection while the server
 * closes). Every test runs one loop with a guard timer, polls its progress
 * with a 10 ms tick, asserts counts after uv_run and checks that no file
 * descriptor is left over. Certificates come from testcerts: CA "a" signs
 * the server (srv.test) and alice; CA "b" signs "mallory", also CN alice.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "lib/buf.h"
#include "lib/httpd.h"
#include "lib/tls_stream.h"
#include "testcerts.h"

#define MAX_CURLS 8
#define MAX_RAWS  4
/* What a connection may hold beyond buf_max in one direction: one TLS
 * record's plaintext, or the records' overhead (see tls_stream.h). */
#define SLACK (16 * 1024 + 256)

static char certdir[256];

struct t;

/* curl's CLI in a child; stdout (the body unless -o, then "\n" and the
 * status code) through a pipe on the loop. */
struct curl_run {
    struct t *t;
    uv_process_t proc;
    uv_pipe_t out;
    struct buf outb;
    int started, exited, out_closed, done;
    int64_t exit_status;
    int status; /* HTTP status, 0 when none */
    const char *body;
    uint64_t started_ms, done_ms;
    char argbuf[8][512];
};

/* A plain TCP client on the loop: connects, maybe writes, reads to EOF. */
struct raw {
    struct t *t;
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    const char *send;
    int started, connected, eof, done;
    uint64_t started_ms, eof_ms;
    size_t got;
};

struct t {
    uv_loop_t loop;
    uv_timer_t guard, tick;
    struct httpd *h;
    struct tls_stream_server *ts;
    int port;
    char dir[64];
    char resolve[64];
    char base[64]; /* https://srv.test:PORT */
    int refuse;    /* the accept callback refuses */
    int accepted;
    int handled;
    char identities[MAX_CURLS][TLS_STREAM_IDENTITY_MAX];
    int h_closed, ts_closed, finishing;
    int pending; /* curls and raw clients not done */
    int phase;
    uint64_t phase_ms;
    pid_t child;
    int child_status;
    int child_pipe;                /* the child writes a byte there when it got its answer */
    int (*step)(struct t *t);      /* 1: the test may finish */
    struct tls_stream_stats stats; /* at finish */
    struct httpd_stats hstats;     /* at finish */
    struct curl_run cr[MAX_CURLS];
    struct raw raw[MAX_RAWS];
};

static unsigned slow(void)
{
    const char *v = getenv("TRIAD_UNDER_VALGRIND");
    return v && *v == '1' ? 6 : 1;
}

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static const char *cert(const char *file)
{
    static char paths[32][512];
    static int k;
    char *p = paths[k++ % 32];
    return testcerts_path(p, 512, certdir, file);
}

static unsigned char pattern(size_t i)
{
    return (unsigned char)((i * 31 + (i >> 8)) & 0xff);
}

/* FNV-1a, to compare large bodies by a short string. */
static uint64_t fnv(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603u;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211u;
    }
    return h;
}

static uint64_t pattern_fnv(size_t n)
{
    char *b = malloc(n);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = (char)pattern(i);
    uint64_t h = fnv(b, n);
    free(b);
    return h;
}

/* ---- the plaintext server ---- */

static void handler(struct httpd_request *req)
{
    struct t *t = req->server->data;
    char b[256];
    t->handled++;
    if (strcmp(req->path, "/id") == 0) {
        int n = snprintf(b, sizeof b, "%s transport=%d", req->peer->identity,
                         (int)req->peer->transport);
        httpd_respond(req, 200, "text/plain", b, (size_t)n);
        return;
    }
    if (strcmp(req->path, "/sum") == 0) {
        int n = snprintf(b, sizeof b, "len=%zu sum=%016llx", req->body_len,
                         (unsigned long long)fnv(req->body, req->body_len));
        httpd_respond(req, 200, "text/plain", b, (size_t)n);
        return;
    }
    if (strcmp(req->path, "/big") == 0) {
        const char *q = httpd_query_get(req, "n");
        size_t n = q ? (size_t)strtoul(q, NULL, 10) : 0;
        char *body = malloc(n ? n : 1);
        assert_non_null(body);
        for (size_t i = 0; i < n; i++)
            body[i] = (char)pattern(i);
        httpd_respond(req, 200, "application/octet-stream", body, n);
        free(body);
        return;
    }
    httpd_respond(req, 404, "text/plain", "no\n", 3);
}

static int on_accept(struct tls_stream_server *s, int fd, const char *identity)
{
    struct t *t = tls_stream_get_data(s);
    if (t->accepted < MAX_CURLS)
        snprintf(t->identities[t->accepted], sizeof t->identities[0], "%s", identity);
    t->accepted++;
    if (t->refuse) {
        close(fd);
        return -EPERM;
    }
    return httpd_add_connection(t->h, fd, identity);
}

/* ---- scaffolding ---- */

static void on_guard(uv_timer_t *h)
{
    struct t *t = h->data;
    struct tls_stream_stats st;
    tls_stream_get_stats(t->ts, &st);
    fail_msg("test timed out in phase %d (pending %d, conns %u, accepted %llu, opened %llu)",
             t->phase, t->pending, st.conns, (unsigned long long)st.accepted,
             (unsigned long long)st.opened);
}

static void on_ts_closed(struct tls_stream_server *s)
{
    struct t *t = tls_stream_get_data(s);
    t->ts_closed++;
}

static void on_h_closed(struct httpd *h)
{
    struct t *t = h->data;
    t->h_closed++;
}

static void finish(struct t *t)
{
    if (t->finishing)
        return;
    t->finishing = 1;
    tls_stream_get_stats(t->ts, &t->stats);
    httpd_get_stats(t->h, &t->hstats);
    tls_stream_close(t->ts, on_ts_closed);
    httpd_close(t->h, on_h_closed);
    uv_close((uv_handle_t *)&t->guard, NULL);
    uv_close((uv_handle_t *)&t->tick, NULL);
    for (int i = 0; i < MAX_RAWS; i++) {
        struct raw *r = &t->raw[i];
        if (r->started && !uv_is_closing((uv_handle_t *)&r->tcp))
            uv_close((uv_handle_t *)&r->tcp, NULL);
    }
}

/* Every client is done and every connection closed by itself: on both the
 * TLS and the HTTP side. */
static int settled(struct t *t)
{
    struct tls_stream_stats st;
    struct httpd_stats hs;
    tls_stream_get_stats(t->ts, &st);
    httpd_get_stats(t->h, &hs);
    return t->pending == 0 && st.conns == 0 && hs.connections_open == 0;
}

static void on_tick(uv_timer_t *h)
{
    struct t *t = h->data;
    if (!t->finishing && (t->step ? t->step(t) : settled(t)))
        finish(t);
}

static void next_phase(struct t *t)
{
    t->phase++;
    t->phase_ms = now_ms();
}

struct server_opts {
    const char *host; /* NULL: 127.0.0.1 */
    int no_client_ca;
    unsigned max_conns, max_handshakes, handshake_timeout_ms, stall_timeout_ms;
    size_t buf_max;
    size_t max_body;
};

static void setup_t(struct t *t, const struct server_opts *o)
{
    char err[512];
    memset(t, 0, sizeof *t);
    t->child = -1;
    t->child_pipe = -1;
    assert_int_equal(uv_loop_init(&t->loop), 0);
    struct httpd_config hc = {
        .external = 1,
        .max_body = o->max_body,
        .handler = handler,
        .data = t,
    };
    assert_int_equal(httpd_open(&t->loop, &hc, &t->h), 0);
    struct tls_stream_opts so = {
        .host = o->host ? o->host : "127.0.0.1",
        .cert_file = cert("srv.pem"),
        .key_file = cert("srv.key"),
        .client_ca_file = o->no_client_ca ? NULL : cert("a-ca.pem"),
        .max_conns = o->max_conns,
        .max_handshakes = o->max_handshakes,
        .handshake_timeout_ms = o->handshake_timeout_ms,
        .stall_timeout_ms = o->stall_timeout_ms,
        .buf_max = o->buf_max,
    };
    int r = tls_stream_listen(&t->loop, &so, on_accept, t, &t->ts, err, sizeof err);
    if (r < 0)
        fail_msg("tls_stream_listen: %s", err);
    t->port = tls_stream_port(t->ts);
    assert_true(t->port > 0);
    snprintf(t->resolve, sizeof t->resolve, "srv.test:%d:%s%s%s", t->port, o->host ? "[" : "",
             o->host ? o->host : "127.0.0.1", o->host ? "]" : "");
    snprintf(t->base, sizeof t->base, "https://srv.test:%d", t->port);
    memcpy(t->dir, "/tmp/triad-tlss-XXXXXX", 23);
    assert_non_null(mkdtemp(t->dir));
    uv_timer_init(&t->loop, &t->guard);
    t->guard.data = t;
    uv_timer_start(&t->guard, on_guard, 30000u * slow(), 0);
    uv_timer_init(&t->loop, &t->tick);
    t->tick.data = t;
    uv_timer_start(&t->tick, on_tick, 10, 10);
    t->phase_ms = now_ms();
}

static void run_t(struct t *t)
{
    uv_run(&t->loop, UV_RUN_DEFAULT);
    assert_int_equal(t->ts_closed, 1);
    assert_int_equal(t->h_closed, 1);
}

static void rm_dir(const char *dir)
{
    char path[512];
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
    rmdir(dir);
}

static void teardown_t(struct t *t)
{
    if (t->child > 0) {
        kill(t->child, SIGKILL);
        waitpid(t->child, NULL, 0);
    }
    if (t->child_pipe >= 0)
        close(t->child_pipe);
    assert_int_equal(uv_loop_close(&t->loop), 0);
    for (int i = 0; i < MAX_CURLS; i++)
        buf_free(&t->cr[i].outb);
    rm_dir(t->dir);
}

/* ---- curl ---- */

static void curl_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)sz;
    struct curl_run *r = h->data;
    b->base = buf_reserve(&r->outb, 65536);
    assert_non_null(b->base);
    b->len = 65536;
}

static void curl_check_done(struct curl_run *r)
{
    if (!r->exited || !r->out_closed || r->done)
        return;
    r->done = 1;
    r->done_ms = now_ms();
    char *nl = r->outb.data ? strrchr(r->outb.data, '\n') : NULL;
    if (nl) {
        r->status = (int)strtol(nl + 1, NULL, 10);
        *nl = '\0';
        r->body = r->outb.data;
    } else {
        r->body = "";
    }
    r->t->pending--;
}

static void curl_out_closed(uv_handle_t *h)
{
    struct curl_run *r = h->data;
    r->out_closed = 1;
    curl_check_done(r);
}

static void curl_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    struct curl_run *r = s->data;
    if (n > 0)
        buf_commit(&r->outb, (size_t)n);
    else if (n < 0)
        uv_close((uv_handle_t *)s, curl_out_closed);
}

static void curl_proc_closed(uv_handle_t *h)
{
    struct curl_run *r = h->data;
    r->exited = 1;
    curl_check_done(r);
}

static void curl_exit(uv_process_t *p, int64_t status, int sig)
{
    struct curl_run *r = p->data;
    r->exit_status = sig ? 128 + sig : status;
    uv_close((uv_handle_t *)p, curl_proc_closed);
}

/* curl [opts...] URL: the server's CA is a's unless opts give --cacert. */
static void curl_go(struct t *t, int i, const char *path, const char *const *opts)
{
    struct curl_run *r = &t->cr[i];
    const char *argv[40] = { "curl",           "-sS",       "--max-time", "20", "-w",
                             "\n%{http_code}", "--resolve", t->resolve };
    int n = 8;
    int has_ca = 0;
    for (int k = 0; opts && opts[k]; k++) {
        if (strcmp(opts[k], "--cacert") == 0)
            has_ca = 1;
        argv[n++] = opts[k];
    }
    if (!has_ca) {
        argv[n++] = "--cacert";
        argv[n++] = cert("a-ca.pem");
    }
    snprintf(r->argbuf[0], sizeof r->argbuf[0], "%s%s", t->base, path);
    argv[n++] = r->argbuf[0];
    argv[n] = NULL;
    r->t = t;
    r->started = 1;
    r->started_ms = now_ms();
    buf_init(&r->outb, 1u << 20);
    uv_pipe_init(&t->loop, &r->out, 0);
    r->out.data = r;
    r->proc.data = r;
    uv_stdio_container_t stdio[3] = {
        { .flags = UV_IGNORE },
        { .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&r->out },
        { .flags = UV_INHERIT_FD, .data.fd = 2 },
    };
    uv_process_options_t o = { .file = "curl",
                               .args = (char **)(uintptr_t)argv,
                               .exit_cb = curl_exit,
                               .stdio = stdio,
                               .stdio_count = 3 };
    assert_int_equal(uv_spawn(&t->loop, &r->proc, &o), 0);
    assert_int_equal(uv_read_start((uv_stream_t *)&r->out, curl_alloc, curl_read), 0);
    t->pending++;
}

/* ---- raw TCP clients ---- */

static void raw_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)h;
    (void)sz;
    static char sink[65536];
    *b = uv_buf_init(sink, sizeof sink);
}

static void raw_closed(uv_handle_t *h)
{
    (void)h;
}

static void raw_end(struct raw *r)
{
    if (r->done)
        return;
    r->done = 1;
    r->t->pending--;
    if (!uv_is_closing((uv_handle_t *)&r->tcp))
        uv_close((uv_handle_t *)&r->tcp, raw_closed);
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    struct raw *r = s->data;
    if (n > 0) {
        r->got += (size_t)n;
    } else if (n < 0) {
        r->eof = 1;
        r->eof_ms = now_ms();
        raw_end(r);
    }
}

static void raw_written(uv_write_t *w, int status)
{
    (void)w;
    (void)status;
}

static void raw_connected(uv_connect_t *c, int status)
{
    struct raw *r = c->data;
    if (status < 0) {
        r->eof = 1;
        r->eof_ms = now_ms();
        if (status != UV_ECANCELED)
            raw_end(r);
        return;
    }
    r->connected = 1;
    if (r->send) {
        uv_buf_t b = uv_buf_init((char *)(uintptr_t)r->send, (unsigned)strlen(r->send));
        uv_write(&r->wreq, (uv_stream_t *)&r->tcp, &b, 1, raw_written);
    }
    uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
}

static void raw_go(struct t *t, int i, const char *send)
{
    struct raw *r = &t->raw[i];
    struct sockaddr_in a;
    r->t = t;
    r->send = send;
    r->started = 1;
    r->started_ms = now_ms();
    uv_ip4_addr("127.0.0.1", t->port, &a);
    uv_tcp_init(&t->loop, &r->tcp);
    r->tcp.data = r;
    r->creq.data = r;
    assert_int_equal(uv_tcp_connect(&r->creq, &r->tcp, (struct sockaddr *)&a, raw_connected), 0);
    t->pending++;
}

/* ---- forked OpenSSL clients ---- */

enum child_mode {
    CHILD_STALL,        /* asks for a large answer and never reads */
    CHILD_VANISH,       /* sends half a request and closes the socket, no close_notify */
    CHILD_CLOSE_NOTIFY, /* "Connection: close": the answer must end with close_notify */
    CHILD_HOLD,         /* a keep-alive request, then waits for the server to close */
    CHILD_SLOW_READ,    /* asks for 1 MiB and reads it 4 KiB at a time, 2 ms apart */
};

static int ssl_write_all(SSL *ssl, const char *p)
{
    size_t n = strlen(p), w = 0;
    return SSL_write_ex(ssl, p, n, &w) == 1 && w == n ? 0 : -1;
}

/* Exit codes: 0 as expected, 2 no handshake, 3 no close_notify, 4 no
 * answer, 5 setup. */
static int child_run(int port, enum child_mode mode, int notify_fd)
{
    int result = 5;
    char buf[16384];
    struct buf resp;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    SSL *ssl = NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    buf_init(&resp, 2u << 20);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ctx == NULL || fd < 0)
        goto out;
    if (mode == CHILD_STALL) {
        int small = 4096;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    }
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        goto out;
    if (!SSL_CTX_load_verify_file(ctx, cert("a-ca.pem")))
        goto out;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    ssl = SSL_new(ctx);
    if (ssl == NULL || !SSL_set_fd(ssl, fd) || !SSL_set1_host(ssl, "srv.test"))
        goto out;
    SSL_set_tlsext_host_name(ssl, "srv.test");
    result = 2;
    if (SSL_connect(ssl) != 1)
        goto out;
    switch (mode) {
    case CHILD_STALL:
        ssl_write_all(ssl, "GET /big?n=16777216 HTTP/1.1\r\nHost: srv.test\r\n\r\n");
        for (;;)
            pause();
    case CHILD_VANISH:
        ssl_write_all(ssl, "GET /id HTTP/1.1\r\nHost: srv.test\r\n");
        close(fd);
        fd = -1;
        result = 0;
        goto out;
    case CHILD_SLOW_READ: {
        ssl_write_all(ssl, "GET /big?n=1048576 HTTP/1.1\r\nHost: srv.test\r\n"
                           "Connection: close\r\n\r\n");
        size_t got = 0;
        result = 0;
        while (SSL_read_ex(ssl, buf, 4096, &got) == 1) {
            if (buf_append(&resp, buf, got) < 0)
                break;
            usleep(2000);
        }
        const char *body = resp.data ? strstr(resp.data, "\r\n\r\n") : NULL;
        if (body == NULL || strncmp(resp.data, "HTTP/1.1 200", 12) != 0)
            result = 4;
        else if (resp.len - (size_t)(body + 4 - resp.data) != 1048576 ||
                 fnv(body + 4, 1048576) != pattern_fnv(1048576))
            result = 6;
        break;
    }
    case CHILD_CLOSE_NOTIFY:
    case CHILD_HOLD:
        ssl_write_all(ssl, mode == CHILD_HOLD
                               ? "GET /id HTTP/1.1\r\nHost: srv.test\r\n\r\n"
                               : "GET /id HTTP/1.1\r\nHost: srv.test\r\nConnection: close\r\n\r\n");
        for (;;) {
            size_t got = 0;
            if (SSL_read_ex(ssl, buf, sizeof buf, &got) != 1) {
                int e = SSL_get_error(ssl, 0);
                if (resp.len < 12 || strncmp(resp.data, "HTTP/1.1 200", 12) != 0)
                    result = 4;
                else if (mode == CHILD_CLOSE_NOTIFY && e != SSL_ERROR_ZERO_RETURN)
                    result = 3;
                else
                    result = 0;
                break;
            }
            buf_append(&resp, buf, got);
            if (mode == CHILD_HOLD && notify_fd >= 0 && resp.data &&
                strstr(resp.data, "transport=")) {
                (void)!write(notify_fd, "r", 1);
                close(notify_fd);
                notify_fd = -1;
            }
        }
        break;
    }
out:
    if (ssl && result == 0 && mode != CHILD_VANISH)
        SSL_shutdown(ssl);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (fd >= 0)
        close(fd);
    buf_free(&resp);
    return result;
}

static void child_go(struct t *t, enum child_mode mode)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        alarm(30 * slow());
        _exit(child_run(t->port, mode, p[1]));
    }
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    t->child = pid;
    t->child_pipe = p[0];
}

/* The child's exit status once it ended, else -1. */
static int child_exited(struct t *t)
{
    int st;
    if (t->child <= 0)
        return t->child_status;
    if (waitpid(t->child, &st, WNOHANG) != t->child)
        return -1;
    t->child = -1;
    t->child_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return t->child_status;
}

static int child_got_answer(struct t *t)
{
    char c;
    return read(t->child_pipe, &c, 1) == 1;
}

/* ---- files ---- */

static void write_file(const char *path, size_t n)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        fputc(pattern(i), f);
    assert_int_equal(fclose(f), 0);
}

static uint64_t file_fnv(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *b = malloc(32u << 20);
    assert_non_null(b);
    *len = fread(b, 1, 32u << 20, f);
    fclose(f);
    uint64_t h = fnv(b, *len);
    free(b);
    return h;
}

static void assert_prefix(const char *s, const char *prefix)
{
    if (s == NULL || strncmp(s, prefix, strlen(prefix)) != 0)
        fail_msg("'%s' does not start with '%s'", s ? s : "(null)", prefix);
}

/* ---- tests ---- */

/* Client certificates: none (anonymous, identified by address), a good
 * one over TLS 1.3 and 1.2, one from another CA with the same CN (refused
 * in the handshake, both versions), and a client that refuses us. */
static void test_identities(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    struct server_opts so = { 0 };
    setup_t(&t, &so);
    const char *alice[] = { "--cert", cert("alice.pem"), "--key", cert("alice.key"), NULL };
    const char *alice12[] = {
        "--cert", cert("alice.pem"), "--key", cert("alice.key"), "--tls-max", "1.2", NULL
    };
    const char *mallory[] = { "--cert", cert("mallory.pem"), "--key", cert("mallory.key"), NULL };
    const char *mallory12[] = {
        "--cert", cert("mallory.pem"), "--key", cert("mallory.key"), "--tls-max", "1.2", NULL
    };
    const char *distrust[] = { "--cacert", cert("b-ca.pem"), NULL };
    curl_go(&t, 0, "/id", NULL);
    curl_go(&t, 1, "/id", alice);
    curl_go(&t, 2, "/id", alice12);
    curl_go(&t, 3, "/id", mallory);
    curl_go(&t, 4, "/id", mallory12);
    curl_go(&t, 5, "/id", distrust);
    run_t(&t);

    assert_int_equal(t.cr[0].status, 200);
    assert_prefix(t.cr[0].body, "tls:127.0.0.1:");
    assert_non_null(strstr(t.cr[0].body, " transport=3"));
    assert_int_equal(t.cr[1].status, 200);
    assert_string_equal(t.cr[1].body, "cn=alice transport=3");
    assert_int_equal(t.cr[2].status, 200);
    assert_string_equal(t.cr[2].body, "cn=alice transport=3");
    for (int i = 3; i <= 5; i++) {
        if (t.cr[i].exit_status == 0 || t.cr[i].status != 0)
            fail_msg("curl %d: exit %lld, status %d, body '%s'", i, (long long)t.cr[i].exit_status,
                     t.cr[i].status, t.cr[i].body);
    }
    assert_int_equal(t.cr[5].exit_status, 60); /* curl: server certificate not trusted */
    assert_int_equal(t.handled, 3);
    assert_int_equal(t.accepted, 3);
    assert_int_equal(t.stats.accepted, 6);
    assert_int_equal(t.stats.opened, 3);
    assert_int_equal(t.stats.with_cert, 2);
    assert_int_equal(t.stats.refused_cert, 2);
    assert_int_equal(t.stats.handshake_failed, 1);
    assert_int_equal(t.stats.handshake_timeouts, 0);
    assert_int_equal(t.stats.conns, 0);
    assert_int_equal(t.stats.handshaking, 0);
    assert_int_equal(t.hstats.connections_total, 3);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

/* Without a client CA no certificate is asked for: a client that has one
 * does not send it and is anonymous. */
static void test_no_client_ca(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    struct server_opts so = { .no_client_ca = 1 };
    setup_t(&t, &so);
    const char *alice[] = { "--cert", cert("alice.pem"), "--key", cert("alice.key"), NULL };
    const char *mallory[] = { "--cert", cert("mallory.pem"), "--key", cert("mallory.key"), NULL };
    curl_go(&t, 0, "/id", alice);
    curl_go(&t, 1, "/id", mallory);
    run_t(&t);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(t.cr[i].status, 200);
        assert_prefix(t.cr[i].body, "tls:127.0.0.1:");
    }
    assert_int_equal(t.stats.with_cert, 0);
    assert_int_equal(t.stats.refused_cert, 0);
    assert_int_equal(t.stats.opened, 2);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

/* IPv6: an anonymous client is known as "tls:[ADDR]:PORT". */
static void test_ipv6(void **state)
{
    (void)state;
    int fds = count_fds();
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    int v6 = probe >= 0 && bind(probe, (struct sockaddr *)&a6, sizeof a6) == 0;
    if (probe >= 0)
        close(probe);
    if (!v6)
        skip();
    struct t t;
    struct server_opts so = { .host = "::1" };
    setup_t(&t, &so);
    const char *alice[] = { "--cert", cert("alice.pem"), "--key", cert("alice.key"), NULL };
    curl_go(&t, 0, "/id", NULL);
    curl_go(&t, 1, "/id", alice);
    run_t(&t);
    assert_int_equal(t.cr[0].status, 200);
    assert_prefix(t.cr[0].body, "tls:[::1]:");
    assert_int_equal(t.cr[1].status, 200);
    assert_string_equal(t.cr[1].body, "cn=alice transport=3");
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

/* 4 MiB up and 8 MiB down through 32 KiB of buffering per direction: the
 * bytes arrive intact and the module never held much more than its cap. */
static void test_large_bodies(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    struct server_opts so = { .buf_max = 32 * 1024, .max_body = 8u << 20 };
    setup_t(&t, &so);
    char up[128], down[128], data[140], out[140];
    snprintf(up, sizeof up, "%s/up.bin", t.dir);
    snprintf(down, sizeof down, "%s/down.bin", t.dir);
    write_file(up, 4u << 20);
    snprintf(data, sizeof data, "@%s", up);
    const char *post[] = { "--data-binary",
                           data,
                           "-H",
                           "Content-Type: application/octet-stream",
                           "--cert",
                           cert("alice.pem"),
                           "--key",
                           cert("alice.key"),
                           NULL };
    const char *get[] = { "-o", down, NULL };
    (void)out;
    curl_go(&t, 0, "/sum", post);
    curl_go(&t, 1, "/big?n=8388608", get);
    run_t(&t);

    char want[80];
    snprintf(want, sizeof want, "len=%u sum=%016llx", 4u << 20,
             (unsigned long long)pattern_fnv(4u << 20));
    assert_int_equal(t.cr[0].status, 200);
    assert_string_equal(t.cr[0].body, want);
    assert_int_equal(t.cr[1].status, 200);
    size_t len = 0;
    uint64_t h = file_fnv(down, &len);
    assert_int_equal(len, 8u << 20);
    assert_true(h == pattern_fnv(8u << 20));
    assert_true(t.stats.bytes_in >= 4u << 20);
    assert_true(t.stats.bytes_out >= 8u << 20);
    print_message("# 4 MiB up in %llu ms, 8 MiB down in %llu ms; buffered peak %zu bytes "
                  "(cap 32 KiB)\n",
                  (unsigned long long)(t.cr[0].done_ms - t.cr[0].started_ms),
                  (unsigned long long)(t.cr[1].done_ms - t.cr[1].started_ms),
                  t.stats.buffered_peak);
    assert_true(t.stats.buffered_peak <= 32 * 1024 + SLACK);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

/* Slow clients: one reading 1 MiB 4 KiB at a time (a forked client), one
 * uploading at 256 KiB/s (curl --limit-rate): slow but whole, and the
 * module's buffers stay at their cap meanwhile. */
static int slow_step(struct t *t)
{
    char data[140];
    switch (t->phase) {
    case 0:
        snprintf(data, sizeof data, "@%s/up.bin", t->dir);
        const char *post[] = { "--limit-rate", "256k", "--data-binary", data, NULL };
        curl_go(t, 0, "/sum", post);
        child_go(t, CHILD_SLOW_READ);
        next_phase(t);
        return 0;
    case 1:
        if (child_exited(t) < 0)
            return 0;
        t->raw[0].eof_ms = now_ms() - t->phase_ms; /* the reader's time */
        next_phase(t);
        return 0;
    default:
        return settled(t);
    }
}

static void test_slow_clients(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    struct server_opts so = { .buf_max = 16 * 1024, .max_body = 4u << 20 };
    setup_t(&t, &so);
    char up[128];
    snprintf(up, sizeof up, "%s/up.bin", t.dir);
    write_file(up, 512u << 10);
    t.step = slow_step;
    run_t(&t);

    assert_int_equal(t.child_status, 0);
    char want[80];
    snprintf(want, sizeof want, "len=%u sum=%016llx", 512u << 10,
             (unsigned long long)pattern_fnv(512u << 10));
    assert_int_equal(t.cr[0].status, 200);
    assert_string_equal(t.cr[0].body, want);
    uint64_t took0 = t.raw[0].eof_ms;
    uint64_t took1 = t.cr[0].done_ms - t.cr[0].started_ms;
    print_message("# slow reader %llu ms, slow upload %llu ms, buffered peak %zu\n",
                  (unsigned long long)took0, (unsigned long long)took1, t.stats.buffered_peak);
    assert_true(took0 >= 500); /* 256 reads, 2 ms apart */
    assert_true(took1 >= 1000);
    assert_true(t.stats.buffered_peak <= 16 * 1024 + SLACK);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

/* A client that connects and says nothing, and one that stops inside its
 * first TLS record: both are dropped when the handshake time is up. */
static void test_handshake_timeout(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    struct server_opts so = { .handshake_timeout_ms = 300 };
    setup_t(&t, &so);
    raw_go(&t, 0, NULL);
    raw_go(&t, 1, "\x16\x03\x01\x02");
    run_t(&t);
    for (int i = 0; i < 2; i++) {
        uint64_t took = t.raw[i].eof_ms - t.raw[i].started_ms;
        print_message("# silent client %d dropped after %llu ms\n", i, (unsigned long long)took);
        assert_int_equal(t.raw[i].eof, 1);
        assert_int_equal(t.raw[i].got, 0);
        assert_true(took >= 250);
        assert_true(took < 3000u * slow());
    }
    assert_int_equal(t.stats.accepted, 2);
    assert_int_equal(t.stats.handshake_timeouts, 2);
    assert_int_equal(t.stats.handshake_failed, 2);
    assert_int_equal(t.stats.opened, 0);
    assert_int_equal(t.accepted, 0);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

/* max_conns 2: two idle clients fill it, a third is closed at once, and
 * once they leave a real client gets through. */
static int cap_step(struct t *t)
{
    struct tls_stream_stats st;
    tls_stream_get_stats(t->ts, &st);
    switch (t->phase) {
    case 0:
        raw_go(t, 0, NULL);
        raw_go(t, 1, NULL);
        next_phase(t);
        return 0;
    case 1:
        if (st.accepted < 2)
            return 0;
        raw_go(t, 2, NULL);
        next_phase(t);
        return 0;
    case 2:
        if (!t->raw[2].done)
            return 0;
        assert_false(t->raw[0].done);
        assert_false(t->raw[1].done);
        assert_int_equal(st.refused_busy, 1);
        assert_int_equal(st.conns, 2);
        raw_end(&t->raw[0]);
        raw_end(&t->raw[1]);
        next_phase(t);
        return 0;
    case 3:
        if (st.conns != 0)
            return 0;
        curl_go(t, 0, "/id", NULL);
        next_phase(t);
        return 0;
    default:
        return settled(t);
    }
}

static void test_connection_cap(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    struct server_opts so = { .max_conns = 2, .handshake_timeout_ms = 20000 };
    setup_t(&t, &so);
    t.step = cap_step;
    run_t(&t);
    uint64_t took = t.raw[2].eof_ms - t.raw[2].started_ms;
    print_message("# the client over the cap was closed after %llu ms\n", (unsigned long long)took);
    assert_true(took < 1000u * slow());
    assert_int_equal(t.raw[2].got, 0);
    assert_int_equal(t.cr[0].status, 200);
    assert_int_equal(t.stats.accepted, 4);
    assert_int_equal(t.stats.refused_busy, 1);
    assert_int_equal(t.stats.opened, 1);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

/* max_handshakes 1: a second client arriving while one handshakes is
 * closed at once; connections already open do not count. */
static int hs_cap_step(struct t *t)
{
    struct tls_stream_stats st;
    tls_stream_get_stats(t->ts, &st);
    switch (t->phase) {
    case 0:
        raw_go(t, 0, NULL);
        next_phase(t);
        return 0;
    case 1:
        if (st.accepted < 1)
            return 0;
        raw_go(t, 1, NULL);
        next_phase(t);
        return 0;
    case 2:
        if (!t->raw[1].done)
            return 0;
        assert_int_equal(st.refused_busy, 1);
        raw_end(&t->raw[0]);
        next_phase(t);
        return 0;
    case 3:
        if (st.conns != 0)
            return 0;
        child_go(t, CHILD_HOLD); /* an open connection ... */
        next_phase(t);
        return 0;
    case 4:
        if (!child_got_answer(t))
            return 0;
        curl_go(t, 0, "/id", NULL); /* ... does not stop a handshake */
        next_phase(t);
        return 0;
    case 5:
        if (t->pending)
            return 0;
        return 1; /* the server's close ends the held connection */
    default:
        return 1;
    }
}

static void test_handshake_cap(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    struct server_opts so = { .max_handshakes = 1, .handshake_timeout_ms = 20000 };
    setup_t(&t, &so);
    t.step = hs_cap_step;
    run_t(&t);
    assert_int_equal(t.cr[0].status, 200);
    assert_int_equal(t.stats.refused_busy, 1);
    assert_int_equal(t.stats.opened, 2);
    while (child_exited(&t) < 0)
        usleep(10000);
    assert_int_equal(t.child_status, 0);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

/* A client that asks for 16 MiB and reads nothing is dropped after
 * stall_timeout_ms, and the HTTP side is released too. */
static int stall_step(struct t *t)
{
    struct tls_stream_stats st;
    tls_stream_get_stats(t->ts, &st);
    switch (t->phase) {
    case 0:
        child_go(t, CHILD_STALL);
        next_phase(t);
        return 0;
    case 1:
        if (st.stalled < 1)
            return 0;
        next_phase(t);
        return 0;
    default:
        return settled(t);
    }
}

static void test_stalled_client(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    struct server_opts so = { .stall_timeout_ms = 300, .buf_max = 64 * 1024, .max_body = 1u << 20 };
    setup_t(&t, &so);
    t.step = stall_step;
    run_t(&t);
    assert_int_equal(t.stats.stalled, 1);
    assert_int_equal(t.stats.opened, 1);
    assert_int_equal(t.handled, 1);
    assert_int_equal(t.hstats.connections_open, 0);
    print_message("# stalled: %llu of 16 MiB sent, buffered peak %zu\n",
                  (unsigned long long)t.stats.bytes_out, t.stats.buffered_peak);
    assert_true(t.stats.bytes_out < 16u << 20);
    assert_true(t.stats.buffered_peak <= 64 * 1024 + SLACK);
    assert_int_equal(child_exited(&t), -1); /* it is still waiting, as told */
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

/* A client that sends half a request and vanishes without close_notify:
 * both sides are released and the handler never runs. */
static int vanish_step(struct t *t)
{
    switch (t->phase) {
    case 0:
        child_go(t, CHILD_VANISH);
        next_phase(t);
        return 0;
    case 1:
        if (child_exited(t) < 0)
            return 0;
        next_phase(t);
        return 0;
    default:
        return settled(t);
    }
}

static void test_client_vanishes(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    struct server_opts so = { 0 };
    setup_t(&t, &so);
    t.step = vanish_step;
    run_t(&t);
    assert_int_equal(t.child_status, 0);
    assert_int_equal(t.stats.opened, 1);
    assert_int_equal(t.handled, 0);
    assert_int_equal(t.hstats.connections_total, 1);
    assert_int_equal(t.hstats.connections_open, 0);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

/* "Connection: close": the HTTP side closes after its answer, and the
 * client reads the whole answer then a clean close_notify. */
static int close_notify_step(struct t *t)
{
    switch (t->phase) {
    case 0:
        child_go(t, CHILD_CLOSE_NOTIFY);
        next_phase(t);
        return 0;
    case 1:
        if (child_exited(t) < 0)
            return 0;
        next_phase(t);
        return 0;
    default:
        return settled(t);
    }
}

static void test_close_notify(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    struct server_opts so = { 0 };
    setup_t(&t, &so);
    t.step = close_notify_step;
    run_t(&t);
    assert_int_equal(t.child_status, 0);
    assert_int_equal(t.handled, 1);
    assert_int_equal(t.hstats.connections_open, 0);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

/* The server closes while a client holds a keep-alive connection: the
 * client sees its connection end, the close callback runs, nothing leaks. */
static int hold_step(struct t *t)
{
    switch (t->phase) {
    case 0:
        child_go(t, CHILD_HOLD);
        next_phase(t);
        return 0;
    case 1:
        return child_got_answer(t);
    default:
        return 0;
    }
}

static void test_server_close_with_open_connection(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    struct server_opts so = { 0 };
    setup_t(&t, &so);
    t.step = hold_step;
    run_t(&t);
    assert_int_equal(t.stats.conns, 1); /* still open when the server closed */
    while (child_exited(&t) < 0)
        usleep(10000);
    assert_int_equal(t.child_status, 0);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

/* The accept callback refusing a client closes its TLS connection. */
static void test_accept_refused(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    struct server_opts so = { 0 };
    setup_t(&t, &so);
    t.refuse = 1;
    curl_go(&t, 0, "/id", NULL);
    run_t(&t);
    assert_int_not_equal(t.cr[0].exit_status, 0);
    assert_int_equal(t.cr[0].status, 0);
    assert_int_equal(t.accepted, 1);
    assert_int_equal(t.handled, 0);
    assert_int_equal(t.stats.opened, 1);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

/* The HTTP side answers 413 and closes while the client is still sending
 * its body: the client gets the 413 all the same. */
static void test_answer_before_body(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    struct server_opts so = { .max_body = 1024, .buf_max = 16 * 1024 };
    setup_t(&t, &so);
    char up[128], data[140];
    snprintf(up, sizeof up, "%s/up.bin", t.dir);
    write_file(up, 512u << 10);
    snprintf(data, sizeof data, "@%s", up);
    const char *post[] = { "--data-binary", data, NULL };
    curl_go(&t, 0, "/sum", post);
    run_t(&t);
    assert_int_equal(t.cr[0].status, 413);
    assert_int_equal(t.handled, 0);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

/* Bad arguments and files, a taken port. */
static void test_bad_arguments(void **state)
{
    (void)state;
    uv_loop_t loop;
    char err[512];
    struct tls_stream_server *s = (struct tls_stream_server *)&loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct tls_stream_opts o = { .host = "127.0.0.1",
                                 .cert_file = cert("srv.pem"),
                                 .key_file = cert("srv.key") };
    assert_int_equal(tls_stream_listen(&loop, &o, NULL, NULL, &s, err, sizeof err), -EINVAL);
    assert_null(s);
    o.host = "localhost";
    assert_int_equal(tls_stream_listen(&loop, &o, on_accept, NULL, &s, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "not a numeric address"));
    o.host = "127.0.0.1";
    o.key_file = cert("alice.key");
    assert_int_equal(tls_stream_listen(&loop, &o, on_accept, NULL, &s, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "does not belong to certificate"));
    o.key_file = cert("srv.key");
    o.cert_file = cert("missing.pem");
    assert_int_equal(tls_stream_listen(&loop, &o, on_accept, NULL, &s, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "missing.pem"));
    o.cert_file = cert("srv.pem");
    o.client_ca_file = cert("missing-ca.pem");
    assert_int_equal(tls_stream_listen(&loop, &o, on_accept, NULL, &s, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "client CA file"));
    o.client_ca_file = NULL;

    /* A port in use is reported with the address. */
    struct tls_stream_server *first;
    assert_int_equal(tls_stream_listen(&loop, &o, on_accept, NULL, &first, err, sizeof err), 0);
    o.port = tls_stream_port(first);
    assert_int_equal(tls_stream_listen(&loop, &o, on_accept, NULL, &s, err, sizeof err),
                     -EADDRINUSE);
    assert_non_null(strstr(err, "cannot listen on 127.0.0.1:"));
    assert_non_null(strstr(err, tls_stream_addr(first)));
    tls_stream_close(first, NULL);
    tls_stream_close(first, NULL); /* twice: a no-op */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void warmup_exit(uv_process_t *p, int64_t status, int sig)
{
    (void)status;
    (void)sig;
    uv_close((uv_handle_t *)p, NULL);
}

static int setup(void **state)
{
    (void)state;
    /* libuv opens its child-signal pipe at the first spawn, once per
     * process: open it now so that the tests' fd counts see only theirs. */
    uv_loop_t loop;
    uv_process_t proc;
    char *argv[] = { "true", NULL };
    uv_process_options_t po = { .file = "true", .args = argv, .exit_cb = warmup_exit };
    if (uv_loop_init(&loop) < 0 || uv_spawn(&loop, &proc, &po) < 0)
        return -1;
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (testcerts_dir(certdir, sizeof certdir) < 0)
        return -1;
    if (testcerts_ca(certdir, "a") < 0 || testcerts_ca(certdir, "b") < 0)
        return -1;
    if (testcerts_leaf(certdir, "a", "srv", "srv.test", "srv.test") < 0 ||
        testcerts_leaf(certdir, "a", "alice", "alice", NULL) < 0 ||
        testcerts_leaf(certdir, "b", "mallory", "alice", NULL) < 0)
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
        cmocka_unit_test(test_identities),
        cmocka_unit_test(test_no_client_ca),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_large_bodies),
        cmocka_unit_test(test_slow_clients),
        cmocka_unit_test(test_handshake_timeout),
        cmocka_unit_test(test_connection_cap),
        cmocka_unit_test(test_handshake_cap),
        cmocka_unit_test(test_stalled_client),
        cmocka_unit_test(test_client_vanishes),
        cmocka_unit_test(test_close_notify),
        cmocka_unit_test(test_server_close_with_open_connection),
        cmocka_unit_test(test_accept_refused),
        cmocka_unit_test(test_answer_before_body),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
