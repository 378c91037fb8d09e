/* Unit tests: the libuv-driven HTTP client against build/fixtures/http_fixture
 * (plain, TLS, TLS with client certificates), all on 127.0.0.0/8. The TLS
 * material is a throwaway CA made with the openssl CLI in a temp directory. */
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "testfix.h"
#include "lib/http_client.h"

#define GUARD_MS 20000

/* ---- fixture processes ---- */

static int under_valgrind(void)
{
    const char *v = getenv("TRIAD_UNDER_VALGRIND");
    return v && *v == '1';
}

/* Runs argv to completion (setup only, before any loop runs). */
static int run_cmd(const char *const *argv)
{
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- suite state ---- */

static char tmpdir[64];
static char ca_crt[128], wrong_ca_crt[128], srv_crt[128], srv_key[128], cli_crt[128], cli_key[128];
static pid_t plain_pid, plain2_pid, tls_pid, mtls_pid;
static int plain_port, plain2_port, tls_port, mtls_port;

static void path_in(char *out, size_t outsz, const char *name)
{
    snprintf(out, outsz, "%s/%s", tmpdir, name);
}

static int write_file(const char *name, const char *text)
{
    char p[128];
    path_in(p, sizeof p, name);
    FILE *f = fopen(p, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static int make_ca(const char *name, const char *cn)
{
    char key[128], crt[128], subj[128];
    snprintf(key, sizeof key, "%s/%s.key", tmpdir, name);
    snprintf(crt, sizeof crt, "%s/%s.crt", tmpdir, name);
    snprintf(subj, sizeof subj, "/CN=%s", cn);
    const char *argv[] = {
        "openssl", "req",     "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes",  "-keyout", key,     "-out",    crt,  "-days",    "3650",
        "-subj",   subj,      NULL
    };
    return run_cmd(argv);
}

/* A leaf signed by ca, valid for `days`, with the extensions in extfile. */
static int make_leaf(const char *name, const char *cn, const char *extfile, const char *days)
{
    char key[128], csr[128], crt[128], subj[128], cakey[128], ext[128], serial[128];
    snprintf(key, sizeof key, "%s/%s.key", tmpdir, name);
    snprintf(csr, sizeof csr, "%s/%s.csr", tmpdir, name);
    snprintf(crt, sizeof crt, "%s/%s.crt", tmpdir, name);
    snprintf(subj, sizeof subj, "/CN=%s", cn);
    path_in(cakey, sizeof cakey, "ca.key");
    path_in(ext, sizeof ext, extfile);
    path_in(serial, sizeof serial, "ca.srl");
    const char *req[] = { "openssl", "req",      "-newkey",
                          "ec",      "-pkeyopt", "ec_paramgen_curve:prime256v1",
                          "-nodes",  "-keyout",  key,
                          "-out",    csr,        "-subj",
                          subj,      NULL };
    const char *sign[] = { "openssl", "x509",   "-req",  "-in",       csr,        "-CA",
                           ca_crt,    "-CAkey", cakey,   "-CAserial", serial,     "-CAcreateserial",
                           "-out",    crt,      "-days", days,        "-extfile", ext,
                           NULL };
    if (run_cmd(req) != 0)
        return -1;
    return run_cmd(sign);
}

static int suite_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/triad-http-test-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    path_in(ca_crt, sizeof ca_crt, "ca.crt");
    path_in(wrong_ca_crt, sizeof wrong_ca_crt, "wrong-ca.crt");
    path_in(srv_crt, sizeof srv_crt, "srv.crt");
    path_in(srv_key, sizeof srv_key, "srv.key");
    path_in(cli_crt, sizeof cli_crt, "cli.crt");
    path_in(cli_key, sizeof cli_key, "cli.key");
    if (write_file("srv.ext", "subjectAltName=DNS:ingress.test,IP:127.0.0.1\n"
                              "extendedKeyUsage=serverAuth\n") < 0 ||
        write_file("cli.ext", "extendedKeyUsage=clientAuth\n") < 0)
        return -1;
    if (make_ca("ca", "triad test CA") != 0 || make_ca("wrong-ca", "some other CA") != 0 ||
        make_leaf("srv", "ingress.test", "srv.ext", "30") != 0 ||
        make_leaf("cli", "triad-client", "cli.ext", "30") != 0) {
        fprintf(stderr, "cannot make test certificates with openssl\n");
        return -1;
    }
    plain_pid = fixture_start("http_fixture", NULL, &plain_port);
    const char *plain2_args[] = { "--bind", "127.0.0.2", NULL };
    plain2_pid = fixture_start("http_fixture", plain2_args, &plain2_port);
    const char *tls_args[] = { "--tls", srv_crt, srv_key, NULL };
    tls_pid = fixture_start("http_fixture", tls_args, &tls_port);
    const char *mtls_args[] = { "--tls", srv_crt, srv_key, "--client-ca", ca_crt, NULL };
    mtls_pid = fixture_start("http_fixture", mtls_args, &mtls_port);
    if (plain_pid <= 0 || plain2_pid <= 0 || tls_pid <= 0 || mtls_pid <= 0)
        return -1;
    return 0;
}

static int suite_teardown(void **state)
{
    (void)state;
    fixture_stop(plain_pid);
    fixture_stop(plain2_pid);
    fixture_stop(tls_pid);
    fixture_stop(mtls_pid);
    if (tmpdir[0]) {
        const char *argv[] = { "rm", "-rf", tmpdir, NULL };
        run_cmd(argv);
    }
    http_global_cleanup();
    return 0;
}

/* ---- loop harness ---- */

struct ctx {
    uv_loop_t loop;
    struct http_client *client;
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
    assert_int_equal(http_client_new(&x->loop, &x->client), 0);
    uv_timer_init(&x->loop, &x->guard);
    x->guard.data = x;
    uv_timer_start(&x->guard, on_guard, GUARD_MS, 0);
    uv_unref((uv_handle_t *)&x->guard); /* only bounds the test, never keeps it alive */
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
    http_client_close(x->client, on_client_closed, x);
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

struct outcome {
    struct ctx *x;
    int calls;
    int result;
    long status;
    char detail[HTTP_DETAIL_MAX];
    char body[4096];
    size_t body_len;
    char ctype[128];
    int has_cert;
    int days_left;
    int reused;
    int64_t total_us, connect_us, tls_us;
    uint64_t done_ms;
};

static void on_done(struct http_request *req, const struct http_response *res, void *arg)
{
    (void)req;
    struct outcome *o = arg;
    o->calls++;
    o->result = res->result;
    o->status = res->status;
    snprintf(o->detail, sizeof o->detail, "%s", res->detail);
    o->body_len = res->body_len;
    snprintf(o->body, sizeof o->body, "%s", res->body);
    snprintf(o->ctype, sizeof o->ctype, "%s", res->content_type);
    o->has_cert = res->has_cert;
    o->days_left = res->cert_days_left;
    o->total_us = res->total_us;
    o->connect_us = res->connect_us;
    o->tls_us = res->tls_us;
    o->reused = res->reused;
    o->done_ms = ctx_ms(o->x);
}

static void url(char *out, size_t outsz, int port, const char *path)
{
    snprintf(out, outsz, "http://127.0.0.1:%d%s", port, path);
}

/* One request, run to completion. */
static void fetch(struct http_request_opts *o, struct outcome *out)
{
    struct ctx x;
    ctx_init(&x);
    memset(out, 0, sizeof *out);
    out->x = &x;
    assert_int_equal(http_request_start(x.client, o, on_done, out, NULL), 0);
    ctx_run(&x);
    assert_int_equal(out->calls, 1);
    ctx_done(&x);
    out->x = NULL;
}

/* One request on an existing client (its kept connections), run to
 * completion. */
static void fetch_on(struct ctx *x, struct http_request_opts *o, struct outcome *out)
{
    memset(out, 0, sizeof *out);
    out->x = x;
    assert_int_equal(http_request_start(x->client, o, on_done, out, NULL), 0);
    ctx_run(x);
    assert_int_equal(out->calls, 1);
    out->x = NULL;
}

/* ---- tests ---- */

static void test_get_ok(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, plain_port, "/health");
    struct http_request_opts o = { .url = u, .expect_status = 200, .timeout_ms = 5000 };
    struct outcome r;
    fetch(&o, &r);
    assert_int_equal(r.result, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "OK");
    assert_int_equal(r.body_len, 2);
    assert_string_equal(r.ctype, "text/plain");
    assert_string_equal(r.detail, "HTTP 200");
    assert_true(r.connect_us > 0);
    assert_true(r.total_us >= r.connect_us);
    assert_false(r.has_cert);

    url(u, sizeof u, plain_port, "/json");
    fetch(&o, &r);
    assert_int_equal(r.result, 0);
    assert_string_equal(r.ctype, "application/json");
    json_error_t err;
    json_t *j = json_loads(r.body, 0, &err);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "ok")));
    json_decref(j);
}

static void test_status_mismatch(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, plain_port, "/status/503");
    struct http_request_opts o = { .url = u, .expect_status = 200 };
    struct outcome r;
    fetch(&o, &r);
    assert_int_equal(r.result, -EREMOTEIO);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.detail, "HTTP 503, expected 200");
    /* Without an expectation any status is an answer. */
    o.expect_status = 0;
    fetch(&o, &r);
    assert_int_equal(r.result, 0);
    assert_int_equal(r.status, 503);
}

static void test_body_cap_endless(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, plain_port, "/endless");
    struct http_request_opts o = { .url = u, .max_body = 65536, .timeout_ms = 10000 };
    struct outcome r;
    fetch(&o, &r);
    assert_int_equal(r.result, -EMSGSIZE);
    assert_string_equal(r.detail, "response body exceeds 65536 bytes");
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 65536); /* the prefix that fits, never more */
    assert_true(r.done_ms < 3000);

    /* A length that already says too much fails before any body byte. */
    url(u, sizeof u, plain_port, "/big-length");
    fetch(&o, &r);
    assert_int_equal(r.result, -EMSGSIZE);
    assert_string_equal(r.detail, "response body exceeds 65536 bytes");
    assert_int_equal(r.body_len, 0);
    assert_true(r.done_ms < 3000);
}

static void test_header_cap(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, plain_port, "/headers");
    struct http_request_opts o = { .url = u, .max_header = 4096, .timeout_ms = 10000 };
    struct outcome r;
    fetch(&o, &r);
    assert_int_equal(r.result, -EMSGSIZE);
    assert_string_equal(r.detail, "response headers exceed 4096 bytes");
    assert_true(r.done_ms < 3000);

    /* One line that never ends: bounded by curl's own line limit. */
    url(u, sizeof u, plain_port, "/long-header");
    fetch(&o, &r);
    assert_int_equal(r.result, -EMSGSIZE);
    assert_string_equal(r.detail, "response header line exceeds 102400 bytes");
    assert_true(r.done_ms < 3000);
}

static void test_headers_never_finish(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, plain_port, "/slow");
    struct http_request_opts o = { .url = u, .timeout_ms = 500 };
    struct outcome r;
    fetch(&o, &r);
    assert_int_equal(r.result, -ETIMEDOUT);
    assert_string_equal(r.detail, "timeout after 500 ms waiting for the response headers");
    assert_true(r.done_ms >= 450);
    assert_true(r.done_ms < 2500);
}

static void test_connect_refused(void **state)
{
    (void)state;
    /* A port nobody listens on: bind one, note it, close it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    char u[128];
    url(u, sizeof u, ntohs(sa.sin_port), "/ok");
    struct http_request_opts o = { .url = u, .timeout_ms = 2000 };
    struct outcome r;
    fetch(&o, &r);
    assert_int_equal(r.result, -ECONNREFUSED);
    assert_non_null(strstr(r.detail, "Connection refused"));
    assert_int_equal(r.status, 0);
}

static void test_connect_timeout(void **state)
{
    (void)state;
    /* A listener whose accept queue is full: further SYNs are dropped, so
     * the TCP handshake never completes. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(lfd, 0), 0);
    socklen_t sl = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    int fillers[4];
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fillers[i], (struct sockaddr *)&sa, sizeof sa);
    }
    char u[128];
    url(u, sizeof u, ntohs(sa.sin_port), "/ok");
    struct http_request_opts o = { .url = u, .timeout_ms = 5000, .connect_timeout_ms = 300 };
    struct outcome r;
    fetch(&o, &r);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);
    assert_int_equal(r.result, -ETIMEDOUT);
    assert_string_equal(r.detail, "connect timeout after 300 ms");
    assert_true(r.done_ms >= 250 && r.done_ms < 2000);
}

static void test_tls_handshake_timeout(void **state)
{
    (void)state;
    /* https to the plain fixture: it waits for an HTTP request that a TLS
     * ClientHello never completes. */
    char u[128];
    snprintf(u, sizeof u, "https://127.0.0.1:%d/ok", plain_port);
    struct http_request_opts o = { .url = u, .ca_file = ca_crt, .timeout_ms = 400 };
    struct outcome r;
    fetch(&o, &r);
    assert_int_equal(r.result, -ETIMEDOUT);
    assert_string_equal(r.detail, "TLS handshake timeout after 400 ms");
}

static void tls_opts(struct http_request_opts *o, char *u, size_t usz, char *pin, size_t pinsz,
                     int port, const char *host)
{
    snprintf(u, usz, "https://%s/health", host);
    snprintf(pin, pinsz, "127.0.0.1:%d", port);
    memset(o, 0, sizeof *o);
    o->url = u;
    o->connect_to = pin;
    o->ca_file = ca_crt;
    o->timeout_ms = 5000;
    o->expect_status = 200;
}

static void test_tls_verify_ok(void **state)
{
    (void)state;
    char u[128], pin[64];
    struct http_request_opts o;
    tls_opts(&o, u, sizeof u, pin, sizeof pin, tls_port, "ingress.test");
    struct outcome r;
    fetch(&o, &r);
    assert_int_equal(r.result, 0);
    assert_string_equal(r.body, "OK");
    assert_true(r.has_cert);
    assert_true(r.days_left == 29 || r.days_left == 30);
    assert_true(r.tls_us >= r.connect_us && r.tls_us > 0);
}

static void test_tls_wrong_ca(void **state)
{
    (void)state;
    char u[128], pin[64];
    struct http_request_opts o;
    tls_opts(&o, u, sizeof u, pin, sizeof pin, tls_port, "ingress.test");
    o.ca_file = wrong_ca_crt;
    struct outcome r;
    fetch(&o, &r);
    assert_int_equal(r.result, -EKEYREJECTED);
    assert_true(strncmp(r.detail, "TLS: certificate verify failed: ", 32) == 0);
    assert_non_null(strstr(r.detail, "issuer"));
    /* The expiry is known even though the certificate was rejected. */
    assert_true(r.has_cert);
    assert_true(r.days_left == 29 || r.days_left == 30);

    /* Verification off: the same server is accepted. */
    o.insecure = 1;
    fetch(&o, &r);
    assert_int_equal(r.result, 0);
    assert_true(r.has_cert);
}

static void test_tls_wrong_name(void **state)
{
    (void)state;
    char u[128], pin[64];
    struct http_request_opts o;
    /* Pinned to the right address, but the URL's name is not in the cert. */
    tls_opts(&o, u, sizeof u, pin, sizeof pin, tls_port, "other.test");
    struct outcome r;
    fetch(&o, &r);
    assert_int_equal(r.result, -EKEYREJECTED);
    assert_true(strncmp(r.detail, "TLS: certificate verify failed: ", 32) == 0);
    assert_non_null(strstr(r.detail, "other.test"));
}

static void test_tls_client_cert(void **state)
{
    (void)state;
    char u[128], pin[64];
    struct http_request_opts o;
    tls_opts(&o, u, sizeof u, pin, sizeof pin, mtls_port, "ingress.test");
    struct outcome r;
    fetch(&o, &r);
    assert_true(r.result < 0); /* the server wants a certificate */
    assert_int_equal(r.status, 0);
    o.client_cert = cli_crt;
    o.client_key = cli_key;
    fetch(&o, &r);
    assert_int_equal(r.result, 0);
    assert_string_equal(r.body, "OK");
}

static void test_echo_auth_body(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, plain_port, "/echo");
    const char *hdrs[] = { "X-Test: yes", "Content-Type: application/json" };
    const char *body = "{\"replicas\":0}";
    struct http_request_opts o = { .url = u,
                                   .method = "PATCH",
                                   .headers = hdrs,
                                   .n_headers = 2,
                                   .body = body,
                                   .body_len = strlen(body),
                                   .bearer_token = "tok123" };
    struct outcome r;
    fetch(&o, &r);
    assert_int_equal(r.result, 0);
    json_error_t err;
    json_t *j = json_loads(r.body, 0, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "method")), "PATCH");
    assert_string_equal(json_string_value(json_object_get(j, "body")), body);
    assert_string_equal(json_string_value(json_object_get(j, "authorization")), "Bearer tok123");
    assert_string_equal(json_string_value(json_object_get(j, "x_test")), "yes");
    json_decref(j);

    o.method = "POST";
    o.bearer_token = NULL;
    o.basic_auth = "user:pass";
    fetch(&o, &r);
    assert_int_equal(r.result, 0);
    j = json_loads(r.body, 0, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "method")), "POST");
    assert_string_equal(json_string_value(json_object_get(j, "authorization")),
                        "Basic dXNlcjpwYXNz");
    json_decref(j);
}

static void test_redirect(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, plain_port, "/redirect");
    struct http_request_opts o = { .url = u };
    struct outcome r;
    fetch(&o, &r);
    assert_int_equal(r.result, 0);
    assert_int_equal(r.status, 302); /* not followed by default */
    o.max_redirects = 2;
    fetch(&o, &r);
    assert_int_equal(r.result, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "OK");
}

static void test_local_addr(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, plain_port, "/peer");
    struct http_request_opts o = { .url = u, .local_addr = "127.0.0.2" };
    struct outcome r;
    fetch(&o, &r);
    assert_int_equal(r.result, 0);
    assert_string_equal(r.body, "127.0.0.2");
    o.local_addr = "127.0.0.3";
    fetch(&o, &r);
    assert_string_equal(r.body, "127.0.0.3");
    /* Not an address of this host: bind fails before anything is sent. */
    o.local_addr = "192.0.2.77";
    fetch(&o, &r);
    assert_int_equal(r.result, -EADDRNOTAVAIL);
}

static void test_bad_options(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    struct outcome r = { .x = &x };
    struct http_request *req = (struct http_request *)&r;
    struct http_request_opts o = { .url = "ftp://127.0.0.1/x" };
    assert_int_equal(http_request_start(x.client, &o, on_done, &r, &req), -EINVAL);
    assert_null(req);
    o.url = "http://127.0.0.1:1/";
    o.local_addr = "eth0";
    assert_int_equal(http_request_start(x.client, &o, on_done, &r, NULL), -EINVAL);
    o.local_addr = NULL;
    o.connect_to = "127.0.0.1";
    assert_int_equal(http_request_start(x.client, &o, on_done, &r, NULL), -EINVAL);
    o.connect_to = NULL;
    o.bearer_token = "t";
    o.basic_auth = "u:p";
    assert_int_equal(http_request_start(x.client, &o, on_done, &r, NULL), -EINVAL);
    o.bearer_token = NULL;
    o.basic_auth = NULL;
    o.keepalive_s = HTTP_MAX_KEEPALIVE_S + 1;
    assert_int_equal(http_request_start(x.client, &o, on_done, &r, NULL), -EINVAL);
    ctx_run(&x);
    assert_int_equal(r.calls, 0); /* start errors are returned, never called back */
    assert_int_equal(http_client_active(x.client), 0);
    ctx_done(&x);
}

/* keepalive_s: the next request goes on the same connection, a request
 * without it neither takes nor leaves one. /conn counts the requests a
 * connection has carried. */
static void test_keepalive_reuse(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, plain_port, "/conn");
    struct ctx x;
    ctx_init(&x);
    struct http_request_opts o = { .url = u, .timeout_ms = 5000, .keepalive_s = 30 };
    struct outcome r;
    fetch_on(&x, &o, &r);
    assert_int_equal(r.result, 0);
    assert_string_equal(r.body, "1");
    assert_false(r.reused);
    assert_true(r.connect_us > 0);
    fetch_on(&x, &o, &r);
    assert_int_equal(r.result, 0);
    assert_string_equal(r.body, "2");
    assert_true(r.reused);

    struct http_request_opts fresh = o;
    fresh.keepalive_s = 0;
    fetch_on(&x, &fresh, &r);
    assert_string_equal(r.body, "1");
    assert_false(r.reused);
    fetch_on(&x, &o, &r);
    assert_string_equal(r.body, "3");

    /* The server answers, then closes the connection it kept open: the next
     * request gets a new one and succeeds. */
    char uc[128];
    url(uc, sizeof uc, plain_port, "/ok-close");
    struct http_request_opts closing = o;
    closing.url = uc;
    fetch_on(&x, &closing, &r);
    assert_int_equal(r.result, 0);
    fetch_on(&x, &o, &r);
    assert_int_equal(r.result, 0);
    assert_false(r.reused);
    assert_string_equal(r.body, "1");
    ctx_done(&x);
}

/* Two sites' ingresses under one public name, pinned with connect_to: a
 * connection kept for one is never used for the other. */
static void test_keepalive_per_target(void **state)
{
    (void)state;
    char pin1[64], pin2[64];
    snprintf(pin1, sizeof pin1, "127.0.0.1:%d", plain_port);
    snprintf(pin2, sizeof pin2, "127.0.0.2:%d", plain2_port);
    struct ctx x;
    ctx_init(&x);
    struct http_request_opts a = {
        .url = "http://matrix.test/conn", .connect_to = pin1, .timeout_ms = 5000, .keepalive_s = 30
    };
    struct http_request_opts b = a;
    b.connect_to = pin2;
    struct outcome r;
    fetch_on(&x, &a, &r);
    assert_string_equal(r.body, "1");
    fetch_on(&x, &b, &r);
    assert_int_equal(r.result, 0);
    assert_string_equal(r.body, "1");
    fetch_on(&x, &a, &r);
    assert_string_equal(r.body, "2");
    fetch_on(&x, &b, &r);
    assert_string_equal(r.body, "2");
    ctx_done(&x);

    /* Three targets (c: another name on a's address), each asked twice:
     * with room, all three connections are kept; with one idle connection
     * at most, at most one is. */
    struct http_request_opts c = a;
    c.url = "http://other.test/conn";
    struct http_request_opts *targets[] = { &a, &b, &c };
    for (size_t max_idle = 1; max_idle <= 3; max_idle += 2) {
        ctx_init(&x);
        http_client_set_max_idle(x.client, max_idle);
        int kept = 0;
        for (int round = 0; round < 2; round++) {
            for (size_t i = 0; i < 3; i++) {
                fetch_on(&x, targets[i], &r);
                assert_int_equal(r.result, 0);
                kept += round == 1 && strcmp(r.body, "2") == 0;
            }
        }
        if (max_idle == 1)
            assert_true(kept <= 1);
        else
            assert_int_equal(kept, 3);
        ctx_done(&x);
    }
}

/* A kept connection is replaced once older than keepalive_s (whole
 * seconds: curl's check), so connect and handshake are checked again. */
static void test_keepalive_expires(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, plain_port, "/conn");
    struct ctx x;
    ctx_init(&x);
    struct http_request_opts o = { .url = u, .timeout_ms = 5000, .keepalive_s = 1 };
    struct outcome r;
    fetch_on(&x, &o, &r);
    assert_string_equal(r.body, "1");
    fetch_on(&x, &o, &r);
    assert_string_equal(r.body, "2");
    usleep(2100 * 1000);
    fetch_on(&x, &o, &r);
    assert_int_equal(r.result, 0);
    assert_string_equal(r.body, "1");
    assert_false(r.reused);
    ctx_done(&x);
}

/* Over TLS: the kept connection has no handshake, the certificate's expiry
 * is still reported. */
static void test_keepalive_tls(void **state)
{
    (void)state;
    char u[128], pin[64];
    struct http_request_opts o;
    tls_opts(&o, u, sizeof u, pin, sizeof pin, tls_port, "ingress.test");
    snprintf(u, sizeof u, "https://ingress.test/conn");
    o.keepalive_s = 30;
    struct ctx x;
    ctx_init(&x);
    struct outcome r;
    fetch_on(&x, &o, &r);
    assert_int_equal(r.result, 0);
    assert_string_equal(r.body, "1");
    assert_true(r.has_cert);
    fetch_on(&x, &o, &r);
    assert_int_equal(r.result, 0);
    assert_string_equal(r.body, "2");
    assert_true(r.reused);
    assert_true(r.has_cert);
    assert_true(r.days_left == 29 || r.days_left == 30);
    /* Another CA file is another TLS configuration: not the same connection. */
    o.ca_file = wrong_ca_crt;
    fetch_on(&x, &o, &r);
    assert_int_equal(r.result, -EKEYREJECTED);
    ctx_done(&x);
}

struct many {
    struct ctx *x;
    int done;
    int ok;
    uint64_t last_ms;
};

static void on_many(struct http_request *req, const struct http_response *res, void *arg)
{
    (void)req;
    struct many *m = arg;
    m->done++;
    if (res->result == 0 && res->status == 200 && strcmp(res->body, "OK") == 0)
        m->ok++;
    m->last_ms = ctx_ms(m->x);
}

static void concurrent(int n)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)n + 256) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < (rlim_t)n + 256) {
        print_message("RLIMIT_NOFILE %lu too small for %d connections\n",
                      (unsigned long)rl.rlim_cur, n);
        skip();
    }
    char u[128];
    url(u, sizeof u, plain_port, "/ok");
    struct ctx x;
    ctx_init(&x);
    struct many m = { .x = &x };
    struct http_request_opts o = { .url = u, .timeout_ms = 15000, .expect_status = 200 };
    for (int i = 0; i < n; i++)
        assert_int_equal(http_request_start(x.client, &o, on_many, &m, NULL), 0);
    assert_int_equal(http_client_active(x.client), (size_t)n);
    ctx_run(&x);
    assert_int_equal(m.done, n);
    assert_int_equal(m.ok, n);
    assert_int_equal(http_client_active(x.client), 0);
    print_message("# %d concurrent requests completed in %llu ms\n", n,
                  (unsigned long long)m.last_ms);
    ctx_done(&x);
}

static void test_concurrent_200(void **state)
{
    (void)state;
    concurrent(200);
}

static void test_concurrent_1000(void **state)
{
    (void)state;
    concurrent(1000);
}

static void test_hung_does_not_delay_fast(void **state)
{
    (void)state;
    char hang[128], fast[128];
    url(hang, sizeof hang, plain_port, "/hang");
    url(fast, sizeof fast, plain_port, "/delay/20");
    struct ctx x;
    ctx_init(&x);
    struct outcome rh = { .x = &x }, rf = { .x = &x };
    struct http_request_opts oh = { .url = hang, .timeout_ms = 2000 };
    struct http_request_opts of = { .url = fast, .timeout_ms = 2000 };
    assert_int_equal(http_request_start(x.client, &oh, on_done, &rh, NULL), 0);
    assert_int_equal(http_request_start(x.client, &of, on_done, &rf, NULL), 0);
    ctx_run(&x);
    assert_int_equal(rh.calls, 1);
    assert_int_equal(rf.calls, 1);
    assert_int_equal(rf.result, 0);
    assert_int_equal(rh.result, -ETIMEDOUT);
    assert_true(rf.done_ms < (under_valgrind() ? 1000 : 400));
    assert_true(rh.done_ms >= 1900);
    ctx_done(&x);
}

struct canceller {
    uv_timer_t t;
    struct http_request *req;
    struct outcome *o;
    int calls_right_after;
};

static void on_cancel_timer(uv_timer_t *t)
{
    struct canceller *c = t->data;
    http_request_cancel(c->req);
    c->calls_right_after = c->o->calls;
    http_request_cancel(c->req); /* twice is harmless */
    uv_close((uv_handle_t *)t, NULL);
}

static void test_cancel(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, plain_port, "/hang");
    struct ctx x;
    ctx_init(&x);
    struct outcome r = { .x = &x };
    struct http_request_opts o = { .url = u, .timeout_ms = 10000 };
    struct canceller c = { .o = &r };
    assert_int_equal(http_request_start(x.client, &o, on_done, &r, &c.req), 0);
    assert_non_null(c.req);
    uv_timer_init(&x.loop, &c.t);
    c.t.data = &c;
    uv_timer_start(&c.t, on_cancel_timer, 100, 0);
    ctx_run(&x);
    assert_int_equal(c.calls_right_after, 0); /* never called back re-entrantly */
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.result, -ECANCELED);
    assert_string_equal(r.detail, "cancelled");
    assert_true(r.done_ms < 2000);
    ctx_done(&x);
}

static int close_order;

struct closing {
    struct outcome o[5];
    int cancelled_before_close;
};

static void on_closing_done(struct http_request *req, const struct http_response *res, void *arg)
{
    on_done(req, res, arg);
    if (res->result == -ECANCELED)
        close_order++;
}

static void on_closed_count(void *arg)
{
    struct closing *c = arg;
    c->cancelled_before_close = close_order;
}

static void test_close_with_pending(void **state)
{
    (void)state;
    char u[128];
    url(u, sizeof u, plain_port, "/hang");
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct http_client *client;
    assert_int_equal(http_client_new(&loop, &client), 0);
    struct closing c;
    memset(&c, 0, sizeof c);
    struct ctx fake = { .start_ns = uv_hrtime() };
    struct http_request_opts o = { .url = u, .timeout_ms = 10000 };
    for (int i = 0; i < 5; i++) {
        c.o[i].x = &fake;
        assert_int_equal(http_request_start(client, &o, on_closing_done, &c.o[i], NULL), 0);
    }
    /* Let the connections open. */
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_run(&loop, UV_RUN_NOWAIT);
    close_order = 0;
    http_client_close(client, on_closed_count, &c);
    assert_int_equal(http_request_start(client, &o, on_closing_done, &c.o[0], NULL), -ESHUTDOWN);
    for (int i = 0; i < 5; i++)
        assert_int_equal(c.o[i].calls, 0); /* not re-entrant */
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(c.o[i].calls, 1);
        assert_int_equal(c.o[i].result, -ECANCELED);
    }
    assert_int_equal(c.cancelled_before_close, 5);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Closing the client from inside a request callback. */
static void on_done_then_close(struct http_request *req, const struct http_response *res, void *arg)
{
    struct outcome *o = arg;
    on_done(req, res, arg);
    http_client_close(o->x->client, on_client_closed, o->x);
}

/* Starting the next request from inside a callback. */
struct chain {
    struct ctx *x;
    char url[128];
    int left;
    int ok;
};

static void on_chain(struct http_request *req, const struct http_response *res, void *arg)
{
    (void)req;
    struct chain *ch = arg;
    if (res->result == 0 && strcmp(res->body, "OK") == 0)
        ch->ok++;
    if (--ch->left > 0) {
        struct http_request_opts o = { .url = ch->url };
        assert_int_equal(http_request_start(ch->x->client, &o, on_chain, ch, NULL), 0);
    }
}

static void test_start_from_callback(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    struct chain ch = { .x = &x, .left = 5 };
    url(ch.url, sizeof ch.url, plain_port, "/ok");
    struct http_request_opts o = { .url = ch.url };
    assert_int_equal(http_request_start(x.client, &o, on_chain, &ch, NULL), 0);
    ctx_run(&x);
    assert_int_equal(ch.left, 0);
    assert_int_equal(ch.ok, 5);
    ctx_done(&x);
}

static void test_close_from_callback(void **state)
{
    (void)state;
    char u1[128], u2[128];
    url(u1, sizeof u1, plain_port, "/ok");
    url(u2, sizeof u2, plain_port, "/hang");
    struct ctx x;
    ctx_init(&x);
    struct outcome r1 = { .x = &x }, r2 = { .x = &x };
    struct http_request_opts o1 = { .url = u1 }, o2 = { .url = u2 };
    assert_int_equal(http_request_start(x.client, &o1, on_done_then_close, &r1, NULL), 0);
    assert_int_equal(http_request_start(x.client, &o2, on_done, &r2, NULL), 0);
    ctx_run(&x);
    assert_int_equal(r1.calls, 1);
    assert_int_equal(r1.result, 0);
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r2.result, -ECANCELED);
    assert_int_equal(x.closed, 1);
    uv_close((uv_handle_t *)&x.guard, NULL);
    uv_run(&x.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&x.loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_ok),
        cmocka_unit_test(test_status_mismatch),
        cmocka_unit_test(test_body_cap_endless),
        cmocka_unit_test(test_header_cap),
        cmocka_unit_test(test_headers_never_finish),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_tls_handshake_timeout),
        cmocka_unit_test(test_tls_verify_ok),
        cmocka_unit_test(test_tls_wrong_ca),
        cmocka_unit_test(test_tls_wrong_name),
        cmocka_unit_test(test_tls_client_cert),
        cmocka_unit_test(test_echo_auth_body),
        cmocka_unit_test(test_redirect),
        cmocka_unit_test(test_local_addr),
        cmocka_unit_test(test_keepalive_reuse),
        cmocka_unit_test(test_keepalive_per_target),
        cmocka_unit_test(test_keepalive_expires),
        cmocka_unit_test(test_keepalive_tls),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_concurrent_200),
        cmocka_unit_test(test_concurrent_1000),
        cmocka_unit_test(test_hung_does_not_delay_fast),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_close_with_pending),
        cmocka_unit_test(test_start_from_callback),
        cmocka_unit_test(test_close_from_callback),
    };
    return cmocka_run_group_tests(tests, suite_setup, suite_teardown);
}
