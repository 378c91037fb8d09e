/* Fuzz target: the control API's handlers (orchestrator/control.c: routing,
 * operator identification, the JSON bodies of POST /v1/runs, approve, deny,
 * abort, ack; and the documents they answer with: status, metrics, runs,
 * journals), behind the real HTTP server on a Unix socket.
 *
 * There is no daemon: the harness builds what the handlers use - a struct
 * daemon with the unit tests' valid configuration (site dc2, state_dir and
 * socket in a scratch directory, plus an operator whose bearer token is
 * "fuzz-token"), a quorum that hears no peer (so no run can start and
 * nothing is forwarded), the run journal (runs_init) and no peer links, no
 * probes, no readiness report. The input is the byte stream of one client
 * connection; the harness reads the answer until the server has been quiet
 * for a few loop turns, then resets the connection.
 *
 * Invariants: what the server answers is a sequence of HTTP responses (up
 * to an error page of MHD's own, see check_responses); every answer the API
 * gives as application/json parses as JSON. */
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

#include "fuzzutil.h"
#include "lib/loop.h"
#include "orchestrator/control.h"
#include "orchestrator/daemon.h"
#include "orchestrator/runs.h"

static uv_loop_t loop;
static struct daemon d;

struct conn {
    uv_pipe_t pipe;
    uv_connect_t connect;
    uv_write_t write;
    uv_idle_t idle;
    const uint8_t *data;
    size_t len;
    char resp[1 << 16];
    size_t resp_len;
    int quiet; /* loop turns without news */
    bool closing;
    int closed;
};

static void q_send(struct quorum *q, int site, json_t *msg)
{
    (void)q;
    (void)site;
    (void)msg;
}

static int q_persist(struct quorum *q, const struct quorum_durable *dur)
{
    (void)q;
    (void)dur;
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init();
    uv_loop_init(&loop);
    fuzz_valid_config(&d.cfg, "dc2");
    char path[600];
    snprintf(path, sizeof path, "%s/state", fuzz_dir());
    free(d.cfg.state_dir);
    d.cfg.state_dir = strdup(path);
    snprintf(path, sizeof path, "%s/triad.sock", fuzz_dir());
    free(d.cfg.api.socket);
    d.cfg.api.socket = strdup(path);
    /* An operator known by a bearer token, whoever runs the harness. */
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest("fuzz-token", 10, md, &mdlen, EVP_sha256(), NULL);
    char hex[65];
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    struct cfg_operator *ops =
        realloc(d.cfg.operators, (d.cfg.n_operators + 1) * sizeof *d.cfg.operators);
    if (!ops)
        abort();
    d.cfg.operators = ops;
    memset(&ops[d.cfg.n_operators], 0, sizeof ops[0]);
    ops[d.cfg.n_operators].name = strdup("fuzzer");
    ops[d.cfg.n_operators].token_sha256 = strdup(hex);
    d.cfg.n_operators++;

    d.uv = &loop;
    d.self = 1;
    d.started_ms = loop_now_ms();
    static const struct quorum_io io = { q_send, q_persist, NULL, NULL, NULL, NULL, NULL };
    if (quorum_init(&d.q, &d.cfg, &io, NULL, loop_now_ms(), 1) < 0 || runs_init(&d.runs, &d) < 0)
        abort();
    char err[256];
    if (control_start(&d.api, &d, err, sizeof err) < 0) {
        fprintf(stderr, "fuzz: control_start: %s\n", err);
        abort();
    }
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    c->closed++;
}

static void finish(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    /* A reset rather than a FIN: the server notices at once, even in the
     * middle of a request. */
    uv_os_fd_t fd;
    struct linger lg = { 1, 0 };
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    uv_close((uv_handle_t *)&c->pipe, on_closed);
    uv_close((uv_handle_t *)&c->idle, on_closed);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = h->data;
    buf->base = c->resp + c->resp_len;
    buf->len = sizeof c->resp - c->resp_len;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    struct conn *c = s->data;
    c->quiet = 0;
    if (n < 0 || c->resp_len + (size_t)n >= sizeof c->resp) {
        finish(c);
        return;
    }
    c->resp_len += (size_t)n;
}

static void on_written(uv_write_t *w, int status)
{
    struct conn *c = w->data;
    c->quiet = 0;
    if (status < 0)
        finish(c);
}

static void on_connect(uv_connect_t *r, int status)
{
    struct conn *c = r->data;
    if (status < 0) {
        finish(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->pipe, alloc_cb, on_read);
    uv_buf_t b = uv_buf_init((char *)c->data, (unsigned)c->len);
    c->write.data = c;
    if (c->len == 0 || uv_write(&c->write, (uv_stream_t *)&c->pipe, &b, 1, on_written) < 0)
        c->quiet = 0;
}

/* The server has had its chance once the loop turned a few times with
 * nothing read or written (all of it is local and immediate). */
static void on_idle(uv_idle_t *h)
{
    struct conn *c = h->data;
    if (++c->quiet >= 8)
        finish(c);
}

/* Each HTTP response in the stream: a status line; a JSON body parses. */
static void check_responses(const char *r, size_t len)
{
    const char *end = r + len;
    while (r < end) {
        FUZZ_CHECK(end - r >= 12 && memcmp(r, "HTTP/1.", 7) == 0, "not an HTTP response: %.20s", r);
        const char *hdr_end = memmem(r, (size_t)(end - r), "\r\n\r\n", 4);
        if (!hdr_end)
            return; /* cut off by the reset */
        /* MHD's own error pages (400, 413, 431...) end the checking: MHD
         * 0.9.75 writes the header block of its 400 for a malformed
         * Content-Length twice (reproduced with MHD alone; the client
         * still reads a 400 and the connection closes). */
        if (memmem(r, (size_t)(hdr_end - r), "Connection: close", 17) &&
            !memmem(r, (size_t)(hdr_end - r), "application/json", 16))
            return;
        const char *cl = memmem(r, (size_t)(hdr_end - r), "Content-Length: ", 16);
        if (!cl)
            return; /* chunked or unknown: stop checking here */
        size_t n = (size_t)strtoul(cl + 16, NULL, 10);
        const char *body = hdr_end + 4;
        /* The answer to a HEAD: the length of a body that is not sent. */
        bool head = end - body >= 7 && memcmp(body, "HTTP/1.", 7) == 0;
        if (head)
            n = 0;
        if ((size_t)(end - body) < n)
            return;
        if (!head && memmem(r, (size_t)(hdr_end - r), "application/json", 16)) {
            json_error_t err;
            json_t *j = json_loadb(body, n, 0, &err);
            FUZZ_CHECK(j != NULL, "a JSON answer that does not parse: %s", err.text);
            json_decref(j);
        }
        r = body + n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct conn *c = calloc(1, sizeof *c);
    c->data = data;
    c->len = size;
    uv_pipe_init(&loop, &c->pipe, 0);
    c->pipe.data = c;
    uv_idle_init(&loop, &c->idle);
    c->idle.data = c;
    uv_idle_start(&c->idle, on_idle);
    c->connect.data = c;
    uv_pipe_connect(&c->connect, &c->pipe, d.cfg.api.socket, on_connect);
    while (c->closed < 2)
        uv_run(&loop, UV_RUN_ONCE);
    /* Let the server see the reset before the next input. */
    for (int i = 0; i < 4; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    if (getenv("FUZZ_DEBUG"))
        fprintf(stderr, "%.*s\n", (int)c->resp_len, c->resp);
    check_responses(c->resp, c->resp_len);
    free(c);
    return 0;
}
