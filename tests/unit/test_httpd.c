/* Unit tests: the HTTP server (lib/httpd) over its Unix socket, TCP and
 * external (socketpair) listeners, with real clients: curl's CLI in child
 * processes and raw non-blocking sockets on the loop under test. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <jansson.h>
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
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <cmocka.h>

#include "lib/buf.h"
#include "lib/httpd.h"
#include "lib/log.h"

#define MAX_CLIENTS 110

struct t;

/* A raw HTTP client on the loop: writes `req`, reads until EOF. */
struct client {
    struct t *t;
    int fd;
    uv_poll_t poll;
    const char *req;
    size_t req_len, off;
    int connecting;
    int done;
    struct buf resp;
    int status; /* 0: no answer before EOF */
    const char *body;
    int64_t started_ms, done_ms;
    int order;       /* completion order, from 1 */
    uv_timer_t drip; /* trickle: one byte per tick instead of all at once */
    int dripping;
};

/* curl's CLI in a child process, stdout through a pipe on the loop. */
struct curl_run {
    struct t *t;
    uv_process_t proc;
    uv_pipe_t out;
    struct buf outb;
    int exited, out_closed, done;
    int64_t exit_status;
    int pid;
    int status;
    const char *body;
};

struct t {
    uv_loop_t loop;
    struct httpd *s;
    char dir[64];
    char sock[128];
    uv_timer_t guard;
    uv_timer_t later; /* answers or closes things later */
    uv_timer_t start2;
    int later_on, start2_on;
    int handled;
    int aborted;
    int closed;
    int finished;  /* clients done */
    int expected;  /* clients to wait for before closing the server */
    int completed; /* completion order counter */
    struct httpd_request *pending;
    int streams_freed;
    struct httpd_stats stats_at_close;
    struct client cl[MAX_CLIENTS];
    struct curl_run cr[4];
};

static int64_t now_ms(void)
{
    return (int64_t)(uv_hrtime() / 1000000u);
}

static int under_valgrind(void)
{
    return getenv("TRIAD_UNDER_VALGRIND") != NULL;
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

/* ---- the handler under test ---- */

static void finish(struct t *t);

static void on_abort(struct httpd_request *req)
{
    struct t *t = req->server->data;
    assert_ptr_equal(req, t->pending);
    t->pending = NULL;
    t->aborted++;
}

static void answer_json(struct httpd_request *req, unsigned status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    assert_non_null(s);
    assert_int_equal(httpd_respond(req, status, "application/json", s, strlen(s)), 0);
    free(s);
}

/* A made-as-sent answer: `total` bytes of a pattern, at most 1000 per
 * call (many calls), or an abort once `fail_at` bytes are out. */
struct gen {
    struct t *t;
    size_t total, sent, fail_at;
};

static ssize_t gen_read(void *arg, char *out, size_t max)
{
    struct gen *g = arg;
    if (g->fail_at && g->sent >= g->fail_at)
        return -1;
    size_t n = g->total - g->sent;
    if (n > max)
        n = max;
    if (n > 1000)
        n = 1000;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)('a' + (g->sent + i) % 26);
    g->sent += n;
    return (ssize_t)n;
}

static void gen_free(void *arg)
{
    struct gen *g = arg;
    g->t->streams_freed++;
    free(g);
}

static void handler(struct httpd_request *req)
{
    struct t *t = req->server->data;
    t->handled++;
    const struct httpd_peer *pr = req->peer;
    assert_non_null(pr);
    if (strcmp(req->path, "/v1/status") == 0 && strcmp(req->method, "GET") == 0) {
        const char *run = httpd_query_get(req, "run");
        json_t *j = json_pack(
            "{s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:s, s:s, s:s}", "path", req->path, "query",
            req->query, "run", run ? run : "", "identity", pr->identity, "transport",
            (int)pr->transport, "uid", pr->has_cred ? (int)pr->uid : -1, "pid",
            pr->has_cred ? (int)pr->pid : -1, "has_cred", pr->has_cred, "user", pr->user, "auth",
            req->authorization ? req->authorization : "", "accept", req->accept ? req->accept : "");
        answer_json(req, 200, j);
        return;
    }
    if (strcmp(req->path, "/v1/echo") == 0 && strcmp(req->method, "POST") == 0) {
        json_error_t err;
        json_t *in = json_loadb(req->body, req->body_len, 0, &err);
        json_t *j =
            json_pack("{s:I, s:s, s:o}", "len", (json_int_t)req->body_len, "ctype",
                      req->content_type ? req->content_type : "", "got", in ? in : json_null());
        answer_json(req, 201, j);
        return;
    }
    if (strncmp(req->path, "/n/", 3) == 0) {
        char b[64];
        int n = snprintf(b, sizeof b, "{\"n\":%s}", req->path + 3);
        httpd_respond(req, 200, "application/json", b, (size_t)n);
        return;
    }
    if (strcmp(req->path, "/later") == 0) {
        t->pending = req;
        httpd_defer(req, on_abort);
        /* Deferring twice, or answering twice, is harmless. */
        return;
    }
    if (strncmp(req->path, "/stream/", 8) == 0 || strcmp(req->path, "/stream-fail") == 0) {
        struct gen *g = calloc(1, sizeof *g);
        assert_non_null(g);
        g->t = t;
        g->total = req->path[7] == '/' ? strtoul(req->path + 8, NULL, 10) : 100000;
        g->fail_at = req->path[7] == '/' ? 0 : 5000;
        assert_int_equal(httpd_respond_stream(req, 200, "text/plain", gen_read, gen_free, g), 0);
        /* Answered: a second answer is refused and its stream released. */
        g = calloc(1, sizeof *g);
        assert_non_null(g);
        g->t = t;
        assert_int_equal(httpd_respond_stream(req, 200, NULL, gen_read, gen_free, g), -EALREADY);
        return;
    }
    if (strcmp(req->path, "/noanswer") == 0)
        return;
    if (strcmp(req->path, "/close") == 0) {
        httpd_respond(req, 200, "application/json", "{}", 2);
        finish(t); /* httpd_close from inside MHD's callback */
        return;
    }
    assert_int_equal(httpd_response_header(req, "X-Why", "unknown path"), 0);
    httpd_respond(req, 404, "application/json", "{\"error\":\"not found\"}", 21);
    assert_int_equal(httpd_respond(req, 200, NULL, NULL, 0), -EALREADY);
}

/* ---- test scaffolding ---- */

static void on_guard(uv_timer_t *h)
{
    (void)h;
    fail_msg("test timed out");
}

static void on_closed(struct httpd *s)
{
    struct t *t = s->data;
    t->closed++;
}

static void finish(struct t *t)
{
    httpd_get_stats(t->s, &t->stats_at_close);
    httpd_close(t->s, on_closed);
    uv_close((uv_handle_t *)&t->guard, NULL);
    if (t->later_on)
        uv_close((uv_handle_t *)&t->later, NULL);
    if (t->start2_on)
        uv_close((uv_handle_t *)&t->start2, NULL);
    t->later_on = t->start2_on = 0;
}

static void one_done(struct t *t)
{
    if (++t->finished == t->expected)
        finish(t);
}

static void setup_t(struct t *t, int64_t guard_ms)
{
    memset(t, 0, sizeof *t);
    assert_int_equal(uv_loop_init(&t->loop), 0);
    memcpy(t->dir, "/tmp/triad-httpd-XXXXXX", 24);
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->sock, sizeof t->sock, "%s/ctl.sock", t->dir);
    uv_timer_init(&t->loop, &t->guard);
    uv_timer_start(&t->guard, on_guard, (uint64_t)(under_valgrind() ? guard_ms * 4 : guard_ms), 0);
}

static void teardown_t(struct t *t)
{
    assert_int_equal(uv_loop_close(&t->loop), 0);
    for (int i = 0; i < MAX_CLIENTS; i++)
        buf_free(&t->cl[i].resp);
    for (int i = 0; i < 4; i++)
        buf_free(&t->cr[i].outb);
    rmdir(t->dir);
}

static struct httpd_config base_cfg(struct t *t)
{
    struct httpd_config cfg = { .unix_path = t->sock, .handler = handler, .data = t };
    return cfg;
}

/* Splits "HTTP/1.1 200 ...\r\n...\r\n\r\nbody". */
static void parse_response(struct client *c)
{
    c->status = 0;
    c->body = NULL;
    const char *d = c->resp.data;
    if (!d || c->resp.len < 12 || strncmp(d, "HTTP/1.", 7) != 0)
        return;
    c->status = (int)strtol(d + 9, NULL, 10);
    const char *e = strstr(d, "\r\n\r\n");
    c->body = e ? e + 4 : NULL;
}

static void client_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    close(c->fd);
    c->fd = -1;
    one_done(c->t);
}

static void client_end(struct client *c)
{
    if (c->done)
        return;
    c->done = 1;
    c->done_ms = now_ms();
    c->order = ++c->t->completed;
    parse_response(c);
    if (c->dripping) {
        c->dripping = 0;
        uv_close((uv_handle_t *)&c->drip, NULL);
    }
    uv_close((uv_handle_t *)&c->poll, client_closed);
}

static void client_drain(struct client *c)
{
    char b[16384];
    ssize_t n;
    while ((n = recv(c->fd, b, sizeof b, 0)) > 0)
        assert_int_equal(buf_append(&c->resp, b, (size_t)n), 0);
}

static void client_on_poll(uv_poll_t *h, int status, int events)
{
    struct client *c = h->data;
    if (status < 0) {
        /* POLLERR: e.g. the server closed with our data unread (a reset
         * on Unix sockets); what it sent before is still readable. */
        client_drain(c);
        client_end(c);
        return;
    }
    if (c->connecting && (events & UV_WRITABLE)) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        assert_int_equal(err, 0);
        c->connecting = 0;
    }
    size_t limit = c->req_len;
    if ((events & UV_WRITABLE) && c->off < limit) {
        ssize_t n = send(c->fd, c->req + c->off, limit - c->off, MSG_NOSIGNAL);
        if (n > 0)
            c->off += (size_t)n;
        else if (n < 0 && errno != EAGAIN)
            c->off = limit; /* the server closed early: read its answer */
        if (c->off >= limit)
            uv_poll_start(&c->poll, UV_READABLE, client_on_poll);
    }
    if (events & UV_READABLE) {
        char b[16384];
        ssize_t n = recv(c->fd, b, sizeof b, 0);
        if (n > 0) {
            assert_int_equal(buf_append(&c->resp, b, (size_t)n), 0);
        } else if (n == 0 || errno != EAGAIN) {
            client_drain(c);
            client_end(c);
        }
    }
}

static void client_go(struct client *c, struct t *t, int fd, const char *req, size_t len)
{
    c->t = t;
    c->fd = fd;
    c->req = req;
    c->req_len = len;
    c->started_ms = now_ms();
    buf_init(&c->resp, 1u << 20);
    assert_int_equal(uv_poll_init(&t->loop, &c->poll, fd), 0);
    c->poll.data = c;
    int ev = len ? UV_READABLE | UV_WRITABLE : UV_READABLE;
    assert_int_equal(uv_poll_start(&c->poll, ev, client_on_poll), 0);
}

static void client_unix_n(struct client *c, struct t *t, const char *req, size_t len)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, t->sock, strlen(t->sock) + 1);
    /* Local: connect completes at once (or the backlog is full). */
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    assert_true(rc == 0 || errno == EAGAIN);
    c->connecting = rc != 0;
    client_go(c, t, fd, req, len);
}

static void client_unix(struct client *c, struct t *t, const char *req)
{
    client_unix_n(c, t, req, strlen(req));
}

static void client_tcp(struct client *c, struct t *t, uint16_t port, const char *req)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    assert_true(rc == 0 || errno == EINPROGRESS);
    c->connecting = rc != 0;
    client_go(c, t, fd, req, strlen(req));
}

static json_t *body_json(const char *body)
{
    assert_non_null(body);
    json_error_t err;
    json_t *j = json_loads(body, 0, &err);
    if (!j)
        fail_msg("not JSON: %s (%s)", body, err.text);
    return j;
}

/* curl --unix-socket / TCP in a child; prints the body, then the status. */
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
    char *nl = r->outb.data ? strrchr(r->outb.data, '\n') : NULL;
    if (nl) {
        r->status = (int)strtol(nl + 1, NULL, 10);
        *nl = '\0';
        r->body = r->outb.data;
    }
    one_done(r->t);
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
    (void)sig;
    struct curl_run *r = p->data;
    r->exit_status = status;
    uv_close((uv_handle_t *)p, curl_proc_closed);
}

static void curl_start(struct curl_run *r, struct t *t, const char *const *args)
{
    const char *argv[32] = { "curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}", NULL };
    int n = 6;
    for (int i = 0; args[i]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    r->t = t;
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
    r->pid = r->proc.pid;
    assert_int_equal(uv_read_start((uv_stream_t *)&r->out, curl_alloc, curl_read), 0);
}

/* ---- tests ---- */

static void test_unix_get_post(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    setup_t(&t, 15000);
    /* As root, hand the socket to another group to see chown work. */
    char group[64];
    struct group *g = geteuid() == 0 ? getgrnam("daemon") : NULL;
    if (!g)
        g = getgrgid(getgid());
    assert_non_null(g);
    snprintf(group, sizeof group, "%s", g->gr_name);
    gid_t want_gid = g->gr_gid;
    struct httpd_config cfg = base_cfg(&t);
    cfg.unix_mode = 0660;
    cfg.unix_group = group;
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), 0);

    struct stat st;
    assert_int_equal(stat(t.sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0660);
    assert_int_equal(st.st_gid, want_gid);

    char url[256];
    snprintf(url, sizeof url, "http://localhost/v1/status?run=r%%201&x=1");
    const char *get[] = { "--unix-socket",
                          t.sock,
                          "-H",
                          "Authorization: Bearer tok-1",
                          "-H",
                          "Accept: application/json",
                          url,
                          NULL };
    const char *post[] = { "--unix-socket",
                           t.sock,
                           "-H",
                           "Content-Type: application/json",
                           "--data-binary",
                           "{\"run\":\"r1\",\"step\":\"fence\",\"n\":[1,2]}",
                           "http://localhost/v1/echo",
                           NULL };
    const char *nf[] = { "--unix-socket", t.sock, "http://localhost/nope", NULL };
    const char *na[] = { "--unix-socket", t.sock, "http://localhost/noanswer", NULL };
    t.expected = 5;
    curl_start(&t.cr[0], &t, get);
    curl_start(&t.cr[1], &t, post);
    curl_start(&t.cr[2], &t, nf);
    curl_start(&t.cr[3], &t, na);
    client_unix(&t.cl[0], &t, "GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    uv_run(&t.loop, UV_RUN_DEFAULT);

    assert_int_equal(t.closed, 1);
    assert_int_equal(t.handled, 5);
    for (int i = 0; i < 4; i++)
        assert_int_equal(t.cr[i].exit_status, 0);

    json_t *j = body_json(t.cr[0].body);
    assert_int_equal(t.cr[0].status, 200);
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/v1/status");
    assert_string_equal(json_string_value(json_object_get(j, "query")), "run=r%201&x=1");
    assert_string_equal(json_string_value(json_object_get(j, "run")), "r 1");
    assert_string_equal(json_string_value(json_object_get(j, "auth")), "Bearer tok-1");
    assert_string_equal(json_string_value(json_object_get(j, "accept")), "application/json");
    assert_int_equal(json_integer_value(json_object_get(j, "transport")), HTTPD_UNIX);
    assert_int_equal(json_integer_value(json_object_get(j, "has_cred")), 1);
    /* SO_PEERCRED: our uid, and the pid of the curl child that asked. */
    assert_int_equal(json_integer_value(json_object_get(j, "uid")), (json_int_t)getuid());
    assert_int_equal(json_integer_value(json_object_get(j, "pid")), t.cr[0].pid);
    struct passwd *pw = getpwuid(getuid());
    if (pw)
        assert_string_equal(json_string_value(json_object_get(j, "user")), pw->pw_name);
    json_decref(j);

    assert_int_equal(t.cr[1].status, 201);
    j = body_json(t.cr[1].body);
    assert_int_equal(json_integer_value(json_object_get(j, "len")), 37);
    assert_string_equal(json_string_value(json_object_get(j, "ctype")), "application/json");
    json_t *got = json_object_get(j, "got");
    assert_string_equal(json_string_value(json_object_get(got, "step")), "fence");
    assert_int_equal(json_array_size(json_object_get(got, "n")), 2);
    json_decref(j);

    assert_int_equal(t.cr[2].status, 404);
    j = body_json(t.cr[2].body);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "not found");
    json_decref(j);
    assert_int_equal(t.cr[3].status, 500);

    /* The raw client: same process, so SO_PEERCRED gives our own pid. */
    assert_int_equal(t.cl[0].status, 200);
    assert_non_null(strstr(t.cl[0].resp.data, "Content-Type: application/json"));
    j = body_json(t.cl[0].body);
    assert_int_equal(json_integer_value(json_object_get(j, "pid")), getpid());
    json_decref(j);

    assert_int_equal(t.stats_at_close.requests_total, 5);
    assert_int_equal(access(t.sock, F_OK), -1); /* close unlinked it */
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

/* httpd_respond_stream: the whole answer arrives (chunked, over many
 * reads), an aborted one is seen as incomplete by the client, and every
 * stream is released once. */
static void test_stream(void **state)
{
    (void)state;
    struct t t;
    setup_t(&t, 15000);
    struct httpd_config cfg = base_cfg(&t);
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), 0);
    const char *big[] = { "--unix-socket", t.sock, "http://localhost/stream/300000", NULL };
    const char *empty[] = { "--unix-socket", t.sock, "http://localhost/stream/0", NULL };
    const char *fail[] = { "--unix-socket", t.sock, "http://localhost/stream-fail", NULL };
    t.expected = 3;
    curl_start(&t.cr[0], &t, big);
    curl_start(&t.cr[1], &t, empty);
    curl_start(&t.cr[2], &t, fail);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.closed, 1);

    assert_int_equal(t.cr[0].exit_status, 0);
    assert_int_equal(t.cr[0].status, 200);
    assert_int_equal(strlen(t.cr[0].body), 300000);
    for (size_t i = 0; i < 300000; i++)
        if (t.cr[0].body[i] != (char)('a' + i % 26))
            fail_msg("byte %zu differs", i);
    assert_int_equal(t.cr[1].exit_status, 0);
    assert_int_equal(t.cr[1].status, 200);
    assert_string_equal(t.cr[1].body, "");
    /* curl: the chunked answer ended without its last chunk. */
    assert_int_not_equal(t.cr[2].exit_status, 0);
    assert_int_equal(t.streams_freed, 6);
    teardown_t(&t);
}

static const char *big_body(size_t n)
{
    static char *b;
    static size_t bl;
    if (bl < n) {
        free(b);
        b = malloc(n + 1);
        assert_non_null(b);
        bl = n;
    }
    memset(b, 'a', n);
    b[0] = '"';
    b[n - 1] = '"';
    b[n] = '\0';
    return b;
}

static void test_body_cap(void **state)
{
    (void)state;
    struct t t;
    setup_t(&t, 15000);
    struct httpd_config cfg = base_cfg(&t);
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), 0);

    /* curl with a 100 KiB body (default cap: 64 KiB). */
    char file[128];
    snprintf(file, sizeof file, "%s/big.json", t.dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs(big_body(100 * 1024), f);
    fclose(f);
    char at[140];
    snprintf(at, sizeof at, "@%s", file);
    const char *post[] = { "--unix-socket",
                           t.sock,
                           "-H",
                           "Content-Type: application/json",
                           "--data-binary",
                           at,
                           "http://localhost/v1/echo",
                           NULL };
    curl_start(&t.cr[0], &t, post);

    /* A client that waits for "100 Continue" is refused before it sends
     * any of the body: the answer comes although it sends none. */
    client_unix(&t.cl[0], &t,
                "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n"
                "Expect: 100-continue\r\n\r\n");
    /* So is one declaring far more than we would read to drop it. */
    client_unix(&t.cl[4], &t,
                "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n");
    /* Chunked, no length: the body is read and dropped, then refused. */
    static char chunked[80 * 1024];
    size_t off = (size_t)snprintf(chunked, sizeof chunked,
                                  "POST /v1/echo HTTP/1.1\r\nHost: x\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 9; i++) {
        off += (size_t)snprintf(chunked + off, sizeof chunked - off, "2000\r\n");
        memset(chunked + off, 'b', 0x2000);
        off += 0x2000;
        off += (size_t)snprintf(chunked + off, sizeof chunked - off, "\r\n");
    }
    off += (size_t)snprintf(chunked + off, sizeof chunked - off, "0\r\n\r\n");
    client_unix_n(&t.cl[1], &t, chunked, off);
    /* Chunked and endless: dropped without an answer past the discard
     * limit (1 MiB beyond the cap). */
    static char endless[1300 * 1024];
    size_t eoff = (size_t)snprintf(endless, sizeof endless,
                                   "POST /v1/echo HTTP/1.1\r\nHost: x\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n");
    while (eoff + 0x2000 + 16 < sizeof endless) {
        eoff += (size_t)snprintf(endless + eoff, sizeof endless - eoff, "2000\r\n");
        memset(endless + eoff, 'c', 0x2000);
        eoff += 0x2000;
        eoff += (size_t)snprintf(endless + eoff, sizeof endless - eoff, "\r\n");
    }
    client_unix_n(&t.cl[3], &t, endless, eoff);
    t.expected = 6;
    /* Exactly at the cap is fine. */
    static char exact[66 * 1024];
    int hl = snprintf(exact, sizeof exact,
                      "POST /v1/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      "Content-Length: %u\r\n\r\n",
                      HTTPD_DEFAULT_MAX_BODY);
    memcpy(exact + hl, big_body(HTTPD_DEFAULT_MAX_BODY), HTTPD_DEFAULT_MAX_BODY);
    client_unix_n(&t.cl[2], &t, exact, (size_t)hl + HTTPD_DEFAULT_MAX_BODY);
    uv_run(&t.loop, UV_RUN_DEFAULT);

    assert_int_equal(t.closed, 1);
    assert_int_equal(t.cr[0].exit_status, 0);
    assert_int_equal(t.cr[0].status, 413);
    json_t *j = body_json(t.cr[0].body);
    assert_int_equal(json_integer_value(json_object_get(j, "max_bytes")), HTTPD_DEFAULT_MAX_BODY);
    json_decref(j);
    assert_int_equal(t.cl[0].status, 413);
    assert_null(strstr(t.cl[0].resp.data, " 100 "));
    assert_int_equal(t.cl[4].status, 413);
    assert_int_equal(t.cl[1].status, 413);
    assert_int_equal(t.cl[3].status, 0);
    assert_true(t.cl[3].off < eoff); /* it could not send it all */
    assert_int_equal(t.cl[2].status, 201);
    j = body_json(t.cl[2].body);
    assert_int_equal(json_integer_value(json_object_get(j, "len")), HTTPD_DEFAULT_MAX_BODY);
    json_decref(j);
    /* Only the request within the cap reached the handler. */
    assert_int_equal(t.handled, 1);
    assert_int_equal(t.stats_at_close.too_large_total, 4);
    unlink(file);
    teardown_t(&t);
}

static void test_body_cap_configured(void **state)
{
    (void)state;
    struct t t;
    setup_t(&t, 10000);
    struct httpd_config cfg = base_cfg(&t);
    cfg.max_body = 1000;
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), 0);
    static char r1[2048], r2[2048];
    int n1 = snprintf(r1, sizeof r1,
                      "POST /v1/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      "Content-Length: 1000\r\n\r\n%s",
                      big_body(1000));
    int n2 = snprintf(r2, sizeof r2,
                      "POST /v1/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      "Content-Length: 1001\r\n\r\n%s",
                      big_body(1001));
    assert_true(n1 > 1000 && n2 > 1001);
    t.expected = 2;
    client_unix(&t.cl[0], &t, r1);
    client_unix(&t.cl[1], &t, r2);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.cl[0].status, 201);
    assert_int_equal(t.cl[1].status, 413);
    assert_int_equal(t.handled, 1);
    teardown_t(&t);
}

static void start_second(uv_timer_t *h)
{
    struct t *t = h->data;
    client_unix(&t->cl[1], t, "GET /n/2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}

static void test_slow_client_dropped(void **state)
{
    (void)state;
    struct t t;
    setup_t(&t, 10000);
    struct httpd_config cfg = base_cfg(&t);
    cfg.timeout_s = 1;
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), 0);
    t.expected = 2;
    /* Half a request line, then silence. */
    client_unix(&t.cl[0], &t, "GET /v1/sta");
    uv_timer_init(&t.loop, &t.start2);
    t.start2.data = &t;
    t.start2_on = 1;
    uv_timer_start(&t.start2, start_second, 200, 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);

    /* The other request was served while the slow one hung... */
    assert_int_equal(t.cl[1].status, 200);
    assert_int_equal(t.cl[1].order, 1);
    assert_true(t.cl[1].done_ms - t.cl[1].started_ms < 500);
    /* ...and the slow one was dropped after about the timeout. */
    assert_int_equal(t.cl[0].status, 0);
    assert_int_equal(t.cl[0].order, 2);
    int64_t waited = t.cl[0].done_ms - t.cl[0].started_ms;
    print_message("# slow client dropped after %lld ms (timeout 1 s)\n", (long long)waited);
    assert_true(waited >= 900);
    assert_true(waited < (under_valgrind() ? 6000 : 2500));
    assert_int_equal(t.handled, 1);
    assert_int_equal(t.stats_at_close.connections_open, 0);
    assert_int_equal(t.stats_at_close.connections_total, 2);
    teardown_t(&t);
}

static void answer_later(uv_timer_t *h)
{
    struct t *t = h->data;
    assert_non_null(t->pending);
    struct httpd_request *req = t->pending;
    t->pending = NULL;
    assert_int_equal(httpd_response_header(req, "Retry-After", "0"), 0);
    assert_int_equal(httpd_respond(req, 202, "application/json", "{\"answered\":\"later\"}", 20),
                     0);
}

static void on_drip(uv_timer_t *h)
{
    struct client *c = h->data;
    if (c->off < c->req_len && send(c->fd, c->req + c->off, 1, MSG_NOSIGNAL) == 1)
        c->off++;
}

static void test_trickling_client_dropped(void **state)
{
    (void)state;
    struct t t;
    setup_t(&t, 10000);
    struct httpd_config cfg = base_cfg(&t);
    cfg.timeout_s = 5;             /* never reached: it is never silent that long */
    cfg.request_timeout_ms = 1000; /* but the whole request must come within 1 s */
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), 0);
    t.expected = 2;
    static const char req[] = "GET /n/1 HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa"
                              "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    /* One byte every 100 ms: never idle, never done. */
    client_unix_n(&t.cl[0], &t, "", 0);
    t.cl[0].req = req;
    t.cl[0].req_len = strlen(req);
    uv_timer_init(&t.loop, &t.cl[0].drip);
    t.cl[0].drip.data = &t.cl[0];
    t.cl[0].dripping = 1;
    uv_timer_start(&t.cl[0].drip, on_drip, 0, 100);
    uv_timer_init(&t.loop, &t.start2);
    t.start2.data = &t;
    t.start2_on = 1;
    uv_timer_start(&t.start2, start_second, 300, 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);

    assert_int_equal(t.cl[1].status, 200);
    assert_int_equal(t.cl[1].order, 1);
    assert_int_equal(t.cl[0].status, 0);
    int64_t waited = t.cl[0].done_ms - t.cl[0].started_ms;
    print_message("# trickling client dropped after %lld ms (request timeout 1 s), "
                  "%zu bytes sent\n",
                  (long long)waited, t.cl[0].off);
    assert_true(waited >= 950);
    assert_true(waited < (under_valgrind() ? 6000 : 2000));
    assert_true(t.cl[0].off < strlen(req));
    assert_int_equal(t.stats_at_close.request_timeouts_total, 1);
    assert_int_equal(t.stats_at_close.connections_open, 0);
    assert_int_equal(t.handled, 1);
    teardown_t(&t);
}

static void test_deferred_answer(void **state)
{
    (void)state;
    struct t t;
    setup_t(&t, 10000);
    struct httpd_config cfg = base_cfg(&t);
    cfg.timeout_s = 1; /* a suspended request must not time out */
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), 0);
    t.expected = 2;
    client_unix(&t.cl[0], &t, "GET /later HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    uv_timer_init(&t.loop, &t.start2);
    t.start2.data = &t;
    t.start2_on = 1;
    uv_timer_start(&t.start2, start_second, 100, 0);
    uv_timer_init(&t.loop, &t.later);
    t.later.data = &t;
    t.later_on = 1;
    uv_timer_start(&t.later, answer_later, 1500, 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);

    assert_int_equal(t.cl[1].status, 200);
    assert_int_equal(t.cl[1].order, 1);
    assert_int_equal(t.cl[0].status, 202);
    assert_int_equal(t.cl[0].order, 2);
    assert_non_null(strstr(t.cl[0].resp.data, "Retry-After: 0"));
    json_t *j = body_json(t.cl[0].body);
    assert_string_equal(json_string_value(json_object_get(j, "answered")), "later");
    json_decref(j);
    assert_true(t.cl[0].done_ms - t.cl[0].started_ms >= 1400);
    assert_int_equal(t.handled, 2);
    assert_int_equal(t.aborted, 0);
    assert_int_equal(t.stats_at_close.deferred_open, 0);
    teardown_t(&t);
}

static void close_now(uv_timer_t *h)
{
    struct t *t = h->data;
    assert_non_null(t->pending);
    httpd_get_stats(t->s, &t->stats_at_close);
    assert_int_equal(t->stats_at_close.deferred_open, 1);
    finish(t);
}

static void test_deferred_aborted_on_close(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    setup_t(&t, 10000);
    struct httpd_config cfg = base_cfg(&t);
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), 0);
    t.expected = 100; /* the close comes from the timer */
    client_unix(&t.cl[0], &t, "GET /later HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    uv_timer_init(&t.loop, &t.later);
    t.later.data = &t;
    t.later_on = 1;
    uv_timer_start(&t.later, close_now, 300, 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.closed, 1);
    assert_int_equal(t.aborted, 1);
    assert_null(t.pending);
    assert_int_equal(t.cl[0].done, 1);
    print_message("# deferred request at close: client got status %d\n", t.cl[0].status);
    assert_true(t.cl[0].status == 0 || t.cl[0].status == 503);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

static void test_external_socketpair(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    setup_t(&t, 10000);
    struct httpd_config cfg = {
        .external = 1, .max_connections = 2, .handler = handler, .data = &t
    };
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), 0);
    int a[2], b[2], c[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c), 0);
    assert_int_equal(httpd_add_connection(t.s, a[0], "cn=alice"), 0);
    assert_int_equal(httpd_add_connection(t.s, b[0], "cn=bob"), 0);
    /* Over the connection limit: refused, and the fd is closed. */
    assert_int_equal(httpd_add_connection(t.s, c[0], "cn=carol"), -EMFILE);
    assert_int_equal(fcntl(c[0], F_GETFD), -1);
    close(c[1]);
    fcntl(a[1], F_SETFL, O_NONBLOCK);
    fcntl(b[1], F_SETFL, O_NONBLOCK);
    t.expected = 2;
    /* Two requests on one keep-alive connection, then close. */
    static const char two[] =
        "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /v1/status?run=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    client_go(&t.cl[0], &t, a[1], two, strlen(two));
    static const char one[] = "GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    client_go(&t.cl[1], &t, b[1], one, strlen(one));
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.handled, 3);
    assert_int_equal(t.cl[0].status, 200);
    /* Both answers on alice's connection carry her identity. */
    const char *first = strstr(t.cl[0].resp.data, "\"identity\":\"cn=alice\"");
    assert_non_null(first);
    assert_non_null(strstr(first + 1, "\"identity\":\"cn=alice\""));
    assert_non_null(strstr(t.cl[0].resp.data, "\"run\":\"2\""));
    json_t *j = body_json(t.cl[1].body);
    assert_string_equal(json_string_value(json_object_get(j, "identity")), "cn=bob");
    assert_int_equal(json_integer_value(json_object_get(j, "transport")), HTTPD_EXTERNAL);
    assert_int_equal(json_integer_value(json_object_get(j, "has_cred")), 0);
    json_decref(j);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);

    /* Without cfg.external the fd is refused, and closed all the same. */
    setup_t(&t, 5000);
    cfg = base_cfg(&t);
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
    assert_int_equal(httpd_add_connection(t.s, a[0], "cn=eve"), -ENOTSUP);
    assert_int_equal(fcntl(a[0], F_GETFD), -1);
    close(a[1]);
    finish(&t);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.closed, 1);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

static void test_tcp_ephemeral(void **state)
{
    (void)state;
    struct t t;
    setup_t(&t, 15000);
    struct httpd_config cfg = { .tcp_host = "127.0.0.1", .handler = handler, .data = &t };
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), 0);
    uint16_t port = httpd_tcp_port(t.s);
    assert_true(port != 0);
    /* The port is taken now. */
    struct httpd *s2;
    cfg.tcp_port = port;
    assert_int_equal(httpd_open(&t.loop, &cfg, &s2), -EADDRINUSE);
    /* Names would need DNS. */
    cfg.tcp_host = "localhost";
    assert_int_equal(httpd_open(&t.loop, &cfg, &s2), -EINVAL);

    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/v1/status", port);
    const char *get[] = { url, NULL };
    t.expected = 2;
    curl_start(&t.cr[0], &t, get);
    client_tcp(&t.cl[0], &t, port,
               "GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.handled, 2);
    assert_int_equal(t.cr[0].status, 200);
    json_t *j = body_json(t.cr[0].body);
    assert_int_equal(json_integer_value(json_object_get(j, "transport")), HTTPD_TCP);
    assert_int_equal(strncmp(json_string_value(json_object_get(j, "identity")), "127.0.0.1:", 10),
                     0);
    json_decref(j);
    /* The raw client's identity is its own local address and port. */
    assert_int_equal(t.cl[0].status, 200);
    j = body_json(t.cl[0].body);
    const char *id = json_string_value(json_object_get(j, "identity"));
    assert_non_null(id);
    assert_int_equal(strncmp(id, "127.0.0.1:", 10), 0);
    assert_true(strtol(id + 10, NULL, 10) > 0);
    json_decref(j);
    teardown_t(&t);
}

static void test_hundred_concurrent(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    setup_t(&t, 20000);
    struct httpd_config cfg = base_cfg(&t);
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), 0);
    static char reqs[100][96];
    t.expected = 100;
    int64_t start = now_ms();
    for (int i = 0; i < 100; i++) {
        snprintf(reqs[i], sizeof reqs[i],
                 "GET /n/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", i);
        client_unix(&t.cl[i], &t, reqs[i]);
    }
    uv_run(&t.loop, UV_RUN_DEFAULT);
    print_message("# 100 concurrent requests answered in %lld ms\n", (long long)(now_ms() - start));
    assert_int_equal(t.handled, 100);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(t.cl[i].status, 200);
        json_t *j = body_json(t.cl[i].body);
        assert_int_equal(json_integer_value(json_object_get(j, "n")), i);
        json_decref(j);
    }
    assert_int_equal(t.stats_at_close.connections_total, 100);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

static void test_socket_file_lifecycle(void **state)
{
    (void)state;
    struct t t;
    setup_t(&t, 10000);
    struct httpd_config cfg = base_cfg(&t);

    /* A regular file at the path is never removed. */
    FILE *f = fopen(t.sock, "w");
    assert_non_null(f);
    fputs("keep me", f);
    fclose(f);
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), -EEXIST);
    struct stat st;
    assert_int_equal(stat(t.sock, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    unlink(t.sock);

    /* A stale socket file (its server is gone) is replaced. */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, t.sock, strlen(t.sock) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd);
    assert_int_equal(stat(t.sock, &st), 0);
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), 0);

    /* A live one is not. */
    struct httpd *s2;
    assert_int_equal(httpd_open(&t.loop, &cfg, &s2), -EADDRINUSE);
    assert_int_equal(stat(t.sock, &st), 0);

    /* Too long a path. */
    char longp[200];
    memset(longp, 'x', sizeof longp - 1);
    longp[0] = '/';
    longp[sizeof longp - 1] = '\0';
    cfg.unix_path = longp;
    assert_int_equal(httpd_open(&t.loop, &cfg, &s2), -ENAMETOOLONG);

    /* The first server still answers; closing it removes the file. */
    t.expected = 1;
    client_unix(&t.cl[0], &t, "GET /n/7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.cl[0].status, 200);
    assert_int_equal(t.closed, 1);
    assert_int_equal(lstat(t.sock, &st), -1);
    assert_int_equal(errno, ENOENT);
    teardown_t(&t);
}

static void start_third(uv_timer_t *h)
{
    struct t *t = h->data;
    client_unix(&t->cl[2], t, "GET /n/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}

static void test_connection_limit(void **state)
{
    (void)state;
    struct t t;
    setup_t(&t, 10000);
    struct httpd_config cfg = base_cfg(&t);
    cfg.max_connections = 2;
    cfg.timeout_s = 1;
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), 0);
    /* Two idle connections use up the limit. MHD then stops accepting: the
     * third waits in the listen backlog until the idle ones time out. */
    t.expected = 3;
    client_unix(&t.cl[0], &t, "");
    client_unix(&t.cl[1], &t, "");
    uv_timer_init(&t.loop, &t.start2);
    t.start2.data = &t;
    t.start2_on = 1;
    uv_timer_start(&t.start2, start_third, 200, 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.cl[0].status, 0);
    assert_int_equal(t.cl[1].status, 0);
    assert_int_equal(t.cl[2].status, 200);
    assert_int_equal(t.cl[2].order, 3);
    int64_t waited = t.cl[2].done_ms - t.cl[2].started_ms;
    print_message("# third connection over a limit of 2 served after %lld ms\n", (long long)waited);
    assert_true(waited >= 600);
    assert_int_equal(t.handled, 1);
    assert_int_equal(t.stats_at_close.connections_total, 3);
    teardown_t(&t);
}

static void test_header_too_large(void **state)
{
    (void)state;
    struct t t;
    setup_t(&t, 10000);
    struct httpd_config cfg = base_cfg(&t);
    cfg.conn_memory = 4096;
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), 0);
    static char big[8192];
    int n = snprintf(big, sizeof big, "GET /n/1 HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n",
                     big_body(6000));
    assert_true(n > 6000);
    t.expected = 2;
    client_unix(&t.cl[0], &t, big);
    client_unix(&t.cl[1], &t, "GET /n/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    uv_run(&t.loop, UV_RUN_DEFAULT);
    print_message("# 6000-byte header with a 4 KiB connection pool: status %d\n", t.cl[0].status);
    assert_int_equal(t.cl[0].status, 431);
    assert_int_equal(t.cl[1].status, 200);
    assert_int_equal(t.handled, 1);
    teardown_t(&t);
}

static void test_close_from_handler(void **state)
{
    (void)state;
    int fds = count_fds();
    struct t t;
    setup_t(&t, 10000);
    struct httpd_config cfg = base_cfg(&t);
    assert_int_equal(httpd_open(&t.loop, &cfg, &t.s), 0);
    t.expected = -1; /* the handler closes the server, not the client's end */
    client_unix(&t.cl[0], &t, "GET /close HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    client_unix(&t.cl[1], &t, "GET /n/1 HTTP/1.1\r\nHost: x\r\n");
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.handled, 1);
    assert_int_equal(t.closed, 1);
    /* Both connections were dropped; the answer may or may not have made it. */
    assert_true(t.cl[0].done && t.cl[1].done);
    assert_true(t.cl[0].status == 200 || t.cl[0].status == 0);
    assert_int_equal(t.cl[1].status, 0);
    assert_int_equal(access(t.sock, F_OK), -1);
    teardown_t(&t);
    assert_int_equal(count_fds(), fds);
}

static void test_fuzz_entry(void **state)
{
    (void)state;
    int fds = count_fds();
    int64_t start = now_ms();
    struct httpd_fuzz_seen s;
    const char *get = "GET /a/b?x=1&y=%41 HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_int_equal(httpd_fuzz_feed(get, strlen(get), &s), 0);
    assert_int_equal(s.requests, 1);
    assert_int_equal(s.status, 200);
    assert_string_equal(s.method, "GET");
    assert_string_equal(s.path, "/a/b");
    assert_string_equal(s.query, "x=1&y=%41");
    assert_true(s.response_len > 20);

    const char *post = "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    assert_int_equal(httpd_fuzz_feed(post, strlen(post), &s), 0);
    assert_int_equal(s.requests, 1);
    assert_int_equal(s.body_len, 5);

    const char *two = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_int_equal(httpd_fuzz_feed(two, strlen(two), &s), 0);
    assert_int_equal(s.requests, 2);
    assert_string_equal(s.path, "/1");

    const char *junk = "\x01\x02 garbage \xff\r\n\r\n";
    assert_int_equal(httpd_fuzz_feed(junk, strlen(junk), &s), 0);
    assert_int_equal(s.requests, 0);
    assert_true(s.status == 0 || s.status == 400);

    const char *half = "GET /incompl";
    assert_int_equal(httpd_fuzz_feed(half, strlen(half), &s), 0);
    assert_int_equal(s.requests, 0);

    assert_int_equal(httpd_fuzz_feed("", 0, &s), 0);
    assert_int_equal(s.requests, 0);
    assert_int_equal(s.status, 0);

    /* More than a socket buffer, over the body cap. */
    static char big[400 * 1024];
    int hl =
        snprintf(big, sizeof big, "POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: %zu\r\n\r\n",
                 sizeof big - 100);
    memset(big + hl, 'z', sizeof big - (size_t)hl);
    assert_int_equal(httpd_fuzz_feed(big, sizeof big, &s), 0);
    assert_int_equal(s.requests, 0);
    assert_int_equal(s.status, 413);

    const char *chunked = "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    assert_int_equal(httpd_fuzz_feed(chunked, strlen(chunked), &s), 0);
    assert_int_equal(s.requests, 1);
    assert_int_equal(s.body_len, 5);

    /* Each input is done with as soon as the server is: no idle timeouts. */
    print_message("# fuzz entry: %lld ms for all inputs\n", (long long)(now_ms() - start));
    assert_true(now_ms() - start < (under_valgrind() ? 8000 : 1000));
    assert_int_equal(count_fds(), fds);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    log_set_level(LOG_WARN);
    if (getenv("HTTPD_TEST"))
        cmocka_set_test_filter(getenv("HTTPD_TEST"));
    /* libuv opens its process-wide signal pipe with the first loop; open
     * it now so that the per-test fd counts only see our own fds. */
    uv_loop_t warm;
    assert_int_equal(uv_loop_init(&warm), 0);
    assert_int_equal(uv_loop_close(&warm), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unix_get_post),
        cmocka_unit_test(test_body_cap),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_body_cap_configured),
        cmocka_unit_test(test_slow_client_dropped),
        cmocka_unit_test(test_trickling_client_dropped),
        cmocka_unit_test(test_deferred_answer),
        cmocka_unit_test(test_deferred_aborted_on_close),
        cmocka_unit_test(test_external_socketpair),
        cmocka_unit_test(test_tcp_ephemeral),
        cmocka_unit_test(test_hundred_concurrent),
        cmocka_unit_test(test_socket_file_lifecycle),
        cmocka_unit_test(test_connection_limit),
        cmocka_unit_test(test_header_too_large),
        cmocka_unit_test(test_close_from_handler),
        cmocka_unit_test(test_fuzz_entry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
