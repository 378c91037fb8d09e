/* Unit tests: the Kubernetes client (lib/k8s_client) against the lab's
 * Kubernetes API stand-in (tests/fixtures/k8s_standin.py), started here on
 * 127.0.0.1 with throwaway certificates, and against the same stand-in
 * wrapped to take client certificates (tests/unit/k8s_mtls_standin.py).
 * Credentials in every form, API errors, selectors, the scale subresource,
 * annotations, and scale-and-wait with the stand-in's readiness delay. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
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
#include <jansson.h>
#include <uv.h>

#include "standin.h"
#include "testcerts.h"
#include "lib/http_client.h"
#include "lib/k8s_client.h"
#include "lib/log.h"

#define GUARD_MS    20000
#define READY_DELAY "0.4"
#define TOKEN       "k8s-test-token-0123456789abcdef"

static char dir[256];
static char ca[300], other_ca[300], srv_crt[300], srv_key[300], cli_crt[300], cli_key[300];
static char token_file[300], bad_token_file[300], fault_file[300], logfile[300];
static char server[64], mtls_server[64], slow_server[64];
static pid_t k8s_pid, mtls_pid, slow_pid;

static void path(char *out, const char *name)
{
    snprintf(out, 300, "%s/%s", dir, name);
}

static int suite_setup(void **state)
{
    (void)state;
    char st1[300], st2[300], st3[300], log1[300], log2[300], log3[300];
    if (testcerts_dir(dir, sizeof dir) < 0 || testcerts_ca(dir, "ca") < 0 ||
        testcerts_ca(dir, "other") < 0 ||
        testcerts_leaf(dir, "ca", "srv", "localhost", "localhost,IP:127.0.0.1") < 0 ||
        testcerts_leaf(dir, "ca", "client", "triad-test", NULL) < 0)
        return -1;
    path(ca, "ca-ca.pem");
    path(other_ca, "other-ca.pem");
    path(srv_crt, "srv.pem");
    path(srv_key, "srv.key");
    path(cli_crt, "client.pem");
    path(cli_key, "client.key");
    path(token_file, "token");
    path(bad_token_file, "bad-token");
    path(fault_file, "fault");
    path(logfile, "test.log");
    path(st1, "state1.json");
    path(st2, "state2.json");
    path(log1, "k8s.log");
    path(log2, "k8s-mtls.log");
    path(st3, "state3.json");
    path(log3, "k8s-slow.log");
    if (standin_write(token_file, TOKEN "\n") < 0 ||
        standin_write(bad_token_file, "not-the-token\n") < 0)
        return -1;
    int p1 = standin_free_port(), p2 = standin_free_port(), p3 = standin_free_port();
    char l1[64], l2[64], l3[64];
    snprintf(l3, sizeof l3, "127.0.0.1:%d", p3);
    snprintf(slow_server, sizeof slow_server, "https://127.0.0.1:%d", p3);
    snprintf(l1, sizeof l1, "127.0.0.1:%d", p1);
    snprintf(l2, sizeof l2, "127.0.0.1:%d", p2);
    snprintf(server, sizeof server, "https://127.0.0.1:%d", p1);
    snprintf(mtls_server, sizeof mtls_server, "https://127.0.0.1:%d", p2);
    const char *a1[] = {
        "--listen",      l1,          "--cert",       srv_crt,    "--key",  srv_key,
        "--token-file",  token_file,  "--state",      st1,        "--seed", "helm-active",
        "--ready-delay", READY_DELAY, "--fault-file", fault_file, NULL
    };
    const char *a2[] = {
        "--client-ca", ca,          "--listen",      l2,          "--cert",  srv_crt,
        "--key",       srv_key,     "--token-file",  token_file,  "--state", st2,
        "--seed",      "helm-idle", "--ready-delay", READY_DELAY, NULL
    };
    /* Pods that take a minute to get ready or go: for timeouts. */
    const char *a3[] = { "--listen",      l3,         "--cert",  srv_crt, "--key",  srv_key,
                         "--token-file",  token_file, "--state", st3,     "--seed", "helm-active",
                         "--ready-delay", "60",       NULL };
    k8s_pid = standin_start("tests/fixtures/k8s_standin.py", a1, p1, log1);
    mtls_pid = standin_start("tests/unit/k8s_mtls_standin.py", a2, p2, log2);
    slow_pid = standin_start("tests/fixtures/k8s_standin.py", a3, p3, log3);
    return k8s_pid > 0 && mtls_pid > 0 && slow_pid > 0 ? 0 : -1;
}

static int suite_teardown(void **state)
{
    (void)state;
    standin_stop(k8s_pid);
    standin_stop(mtls_pid);
    standin_stop(slow_pid);
    testcerts_rmdir(dir);
    http_global_cleanup();
    return 0;
}

/* ---- loop harness ---- */

struct ctx {
    uv_loop_t loop;
    struct http_client *http;
    struct k8s_client *k;
    uv_timer_t guard;
    int guard_fired;
    int calls;
    /* last result */
    int status;
    long http_status;
    char reason[64];
    char detail[K8S_DETAIL_MAX];
    json_t *body;
    struct k8s_object objs[16];
    size_t n;
    /* scale */
    int progress_calls;
    int progress_not_done;
    struct k8s_scale_item items[8];
    size_t n_items;
    struct k8s_scale *scale;
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
    assert_int_equal(http_client_new(&x->loop, &x->http), 0);
    uv_timer_init(&x->loop, &x->guard);
    x->guard.data = x;
    uv_timer_start(&x->guard, on_guard, GUARD_MS, 0);
    uv_unref((uv_handle_t *)&x->guard);
}

static void ctx_reset(struct ctx *x)
{
    json_decref(x->body);
    x->body = NULL;
    x->n = 0;
    x->status = 1;
    x->detail[0] = '\0';
}

static void ctx_done(struct ctx *x)
{
    ctx_reset(x);
    k8s_client_free(x->k);
    http_client_close(x->http, NULL, NULL);
    uv_close((uv_handle_t *)&x->guard, NULL);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&x->loop), 0);
}

static void new_client(struct ctx *x, const struct k8s_config *cfg)
{
    char err[512];
    int rc = k8s_client_new(&x->loop, x->http, cfg, &x->k, err, sizeof err);
    if (rc < 0)
        fail_msg("k8s_client_new: %s", err);
}

static void explicit_client(struct ctx *x, const char *tok)
{
    struct k8s_config cfg = { .server = server, .ca_file = ca, .token_file = tok };
    new_client(x, &cfg);
}

static void on_result(struct k8s_request *req, const struct k8s_result *r, void *arg)
{
    (void)req;
    struct ctx *x = arg;
    x->calls++;
    x->status = r->status;
    x->http_status = r->http_status;
    snprintf(x->reason, sizeof x->reason, "%s", r->reason);
    snprintf(x->detail, sizeof x->detail, "%s", r->detail);
    x->body = json_incref(r->body);
    x->n = r->n_objects;
    for (size_t i = 0; i < r->n_objects && i < 16; i++)
        x->objs[i] = r->objects[i]; /* pointers into body, kept alive above */
}

/* Runs one request started with rc. */
static void wait_result(struct ctx *x, int rc)
{
    if (rc < 0)
        fail_msg("request not started: %s", k8s_client_error(x->k));
    int before = x->calls;
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_false(x->guard_fired);
    assert_int_equal(x->calls, before + 1);
}

static void get(struct ctx *x, enum k8s_kind kind, const char *ns, const char *name)
{
    ctx_reset(x);
    wait_result(x, k8s_get(x->k, kind, ns, name, on_result, x, NULL));
}

static const char *annotation(const struct k8s_object *o, const char *key)
{
    json_t *a = json_object_get(json_object_get(o->json, "metadata"), "annotations");
    return json_string_value(json_object_get(a, key));
}

static char *b64(const char *file)
{
    FILE *f = fopen(file, "rb");
    assert_non_null(f);
    unsigned char raw[8192];
    size_t n = fread(raw, 1, sizeof raw, f);
    fclose(f);
    char *out = malloc(n * 2 + 8);
    assert_non_null(out);
    EVP_EncodeBlock((unsigned char *)out, raw, (int)n);
    return out;
}

/* ---- credentials ---- */

static void test_explicit_token_get(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    explicit_client(&x, token_file);
    assert_string_equal(k8s_client_namespace(x.k), "default");
    assert_string_equal(k8s_client_server(x.k), server);
    get(&x, K8S_STATEFULSET, "ess", "ess-synapse-main");
    assert_int_equal(x.status, 0);
    assert_int_equal(x.http_status, 200);
    assert_int_equal(x.n, 1);
    assert_int_equal(x.objs[0].kind, K8S_STATEFULSET);
    assert_string_equal(x.objs[0].name, "ess-synapse-main");
    assert_string_equal(x.objs[0].namespace_, "ess");
    assert_int_equal(x.objs[0].spec_replicas, 1);
    assert_int_equal(x.objs[0].ready_replicas, 1);
    assert_true(x.objs[0].resource_version[0] != '\0');
    assert_true(x.objs[0].observed_generation >= x.objs[0].generation);
    ctx_done(&x);
}

static void test_missing_object_404(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    explicit_client(&x, token_file);
    get(&x, K8S_DEPLOYMENT, "ess", "nope");
    assert_int_equal(x.status, -ENOENT);
    assert_int_equal(x.http_status, 404);
    assert_string_equal(x.reason, "NotFound");
    assert_non_null(strstr(x.detail, "deployments.apps \"nope\" not found"));
    assert_non_null(strstr(x.detail, "404"));
    ctx_done(&x);
}

static void test_bad_token_401(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    explicit_client(&x, bad_token_file);
    get(&x, K8S_DEPLOYMENT, "ess", "ess-haproxy");
    assert_int_equal(x.status, -EACCES);
    assert_int_equal(x.http_status, 401);
    assert_non_null(strstr(x.detail, "Unauthorized"));
    ctx_done(&x);
}

/* The token file is read at every request: a rotated token is used at
 * once, without a new client. */
static void test_token_file_reread(void **state)
{
    (void)state;
    struct ctx x;
    char rot[300];
    path(rot, "rotating-token");
    assert_int_equal(standin_write(rot, "old-token-no-longer-valid\n"), 0);
    ctx_init(&x);
    explicit_client(&x, rot);
    get(&x, K8S_DEPLOYMENT, "ess", "ess-haproxy");
    assert_int_equal(x.status, -EACCES);
    assert_int_equal(standin_write(rot, TOKEN), 0);
    get(&x, K8S_DEPLOYMENT, "ess", "ess-haproxy");
    assert_int_equal(x.status, 0);
    /* An unreadable token is a synchronous error with the reason. */
    unlink(rot);
    ctx_reset(&x);
    assert_int_equal(k8s_get(x.k, K8S_DEPLOYMENT, "ess", "ess-haproxy", on_result, &x, NULL),
                     -ENOENT);
    assert_non_null(strstr(k8s_client_error(x.k), "rotating-token"));
    ctx_done(&x);
}

static void write_kubeconfig(const char *file, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void write_kubeconfig(const char *file, const char *fmt, ...)
{
    char text[32768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    assert_int_equal(standin_write(file, text), 0);
}

/* A token, a relative CA path, the context's namespace as the default. */
static void test_kubeconfig_token(void **state)
{
    (void)state;
    struct ctx x;
    char kc[300];
    path(kc, "token.kubeconfig");
    write_kubeconfig(kc,
                     "apiVersion: v1\n"
                     "kind: Config\n"
                     "clusters:\n"
                     "- name: lab\n"
                     "  cluster:\n"
                     "    server: %s/\n"
                     "    certificate-authority: ca-ca.pem\n"
                     "users:\n"
                     "- name: triad\n"
                     "  user:\n"
                     "    token: %s\n"
                     "contexts:\n"
                     "- name: lab\n"
                     "  context: {cluster: lab, user: triad, namespace: ess}\n"
                     "current-context: lab\n",
                     server, TOKEN);
    ctx_init(&x);
    struct k8s_config cfg = { .kubeconfig = kc };
    new_client(&x, &cfg);
    assert_string_equal(k8s_client_namespace(x.k), "ess");
    assert_string_equal(k8s_client_server(x.k), server); /* trailing slash gone */
    get(&x, K8S_DEPLOYMENT, NULL, "ess-matrix-authentication-service");
    assert_int_equal(x.status, 0);
    assert_string_equal(x.objs[0].namespace_, "ess");
    ctx_done(&x);
}

/* tls-server-name: connect to the server's address, verify another name. */
static void test_kubeconfig_tls_server_name(void **state)
{
    (void)state;
    struct ctx x;
    char kc[300], port[16];
    const char *names[] = { "localhost", "wrong.example" };
    int want[] = { 0, -EKEYREJECTED };
    snprintf(port, sizeof port, "%s", strrchr(server, ':') + 1);
    path(kc, "sni.kubeconfig");
    ctx_init(&x);
    for (int i = 0; i < 2; i++) {
        write_kubeconfig(kc,
                         "clusters: [{name: c, cluster: {server: %s, certificate-authority: %s, "
                         "tls-server-name: %s}}]\n"
                         "users: [{name: u, user: {token: %s}}]\n"
                         "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
                         "current-context: x\n",
                         server, ca, names[i], TOKEN);
        struct k8s_config cfg = { .kubeconfig = kc };
        k8s_client_free(x.k);
        new_client(&x, &cfg);
        char expect[96];
        snprintf(expect, sizeof expect, "https://%s:%s", names[i], port);
        assert_string_equal(k8s_client_server(x.k), expect);
        get(&x, K8S_DEPLOYMENT, "ess", "ess-haproxy");
        assert_int_equal(x.status, want[i]);
    }
    ctx_done(&x);
}

/* tokenFile (read per request, relative to the kubeconfig) and the CA as
 * certificate-authority-data. */
static void test_kubeconfig_token_file_and_ca_data(void **state)
{
    (void)state;
    struct ctx x;
    char kc[300];
    char *ca_data = b64(ca);
    path(kc, "tokenfile.kubeconfig");
    write_kubeconfig(kc,
                     "clusters:\n"
                     "- name: lab\n"
                     "  cluster:\n"
                     "    server: %s\n"
                     "    certificate-authority-data: %s\n"
                     "users:\n"
                     "- name: triad\n"
                     "  user:\n"
                     "    tokenFile: token\n"
                     "contexts:\n"
                     "- name: lab\n"
                     "  context: {cluster: lab, user: triad}\n"
                     "current-context: lab\n",
                     server, ca_data);
    free(ca_data);
    ctx_init(&x);
    struct k8s_config cfg = { .kubeconfig = kc };
    new_client(&x, &cfg);
    get(&x, K8S_STATEFULSET, "ess", "ess-synapse-main");
    assert_int_equal(x.status, 0);
    ctx_done(&x);
}

/* Client certificate files against the stand-in that takes them; without
 * one (and no token) the same server says 401. */
static void test_kubeconfig_client_cert_files(void **state)
{
    (void)state;
    struct ctx x;
    char kc[300];
    path(kc, "cert.kubeconfig");
    write_kubeconfig(kc,
                     "clusters:\n"
                     "- name: lab\n"
                     "  cluster: {server: %s, certificate-authority: %s}\n"
                     "users:\n"
                     "- name: cert\n"
                     "  user: {client-certificate: client.pem, client-key: %s}\n"
                     "- name: nobody\n"
                     "  user: {}\n"
                     "contexts:\n"
                     "- name: cert\n"
                     "  context: {cluster: lab, user: cert}\n"
                     "- name: nobody\n"
                     "  context: {cluster: lab, user: nobody}\n"
                     "current-context: cert\n",
                     mtls_server, ca, cli_key);
    ctx_init(&x);
    struct k8s_config cfg = { .kubeconfig = kc };
    new_client(&x, &cfg);
    get(&x, K8S_STATEFULSET, "ess", "ess-synapse-main");
    assert_int_equal(x.status, 0);
    assert_int_equal(x.objs[0].spec_replicas, 0); /* the idle seed */
    assert_int_equal(x.objs[0].ready_replicas, 0);
    k8s_client_free(x.k);
    cfg.context = "nobody";
    new_client(&x, &cfg);
    get(&x, K8S_STATEFULSET, "ess", "ess-synapse-main");
    assert_int_equal(x.status, -EACCES);
    ctx_done(&x);
}

/* Everything inline: CA, client certificate and key as *-data. */
static void test_kubeconfig_client_cert_data(void **state)
{
    (void)state;
    struct ctx x;
    char kc[300];
    char *ca_data = b64(ca), *crt_data = b64(cli_crt), *key_data = b64(cli_key);
    path(kc, "certdata.kubeconfig");
    write_kubeconfig(kc,
                     "clusters:\n"
                     "- name: lab\n"
                     "  cluster:\n"
                     "    server: %s\n"
                     "    certificate-authority-data: %s\n"
                     "users:\n"
                     "- name: cert\n"
                     "  user:\n"
                     "    client-certificate-data: %s\n"
                     "    client-key-data: %s\n"
                     "contexts:\n"
                     "- name: cert\n"
                     "  context: {cluster: lab, user: cert, namespace: ess}\n"
                     "current-context: cert\n",
                     mtls_server, ca_data, crt_data, key_data);
    free(ca_data);
    free(crt_data);
    free(key_data);
    ctx_init(&x);
    struct k8s_config cfg = { .kubeconfig = kc };
    new_client(&x, &cfg);
    get(&x, K8S_DEPLOYMENT, NULL, "ess-haproxy");
    assert_int_equal(x.status, 0);
    ctx_done(&x);
}

/* current-context names a user with a bad token; a named context works. */
static void test_kubeconfig_named_context(void **state)
{
    (void)state;
    struct ctx x;
    char kc[300], err[512];
    path(kc, "multi.kubeconfig");
    write_kubeconfig(kc,
                     "clusters:\n"
                     "- name: dc1\n"
                     "  cluster: {server: %s, certificate-authority: %s}\n"
                     "users:\n"
                     "- name: stale\n"
                     "  user: {token: expired}\n"
                     "- name: good\n"
                     "  user: {token: %s}\n"
                     "contexts:\n"
                     "- name: old\n"
                     "  context: {cluster: dc1, user: stale}\n"
                     "- name: ess-dc1\n"
                     "  context: {cluster: dc1, user: good, namespace: operator-onprem}\n"
                     "current-context: old\n",
                     server, ca, TOKEN);
    ctx_init(&x);
    struct k8s_config cfg = { .kubeconfig = kc };
    new_client(&x, &cfg);
    get(&x, K8S_DEPLOYMENT, "ess", "ess-haproxy");
    assert_int_equal(x.status, -EACCES);
    k8s_client_free(x.k);
    cfg.context = "ess-dc1";
    new_client(&x, &cfg);
    get(&x, K8S_DEPLOYMENT, NULL, "element-operator-controller-manager");
    assert_int_equal(x.status, 0);
    k8s_client_free(x.k);
    x.k = NULL;
    cfg.context = "missing";
    assert_int_equal(k8s_client_new(&x.loop, x.http, &cfg, &x.k, err, sizeof err), -ENOENT);
    assert_null(x.k);
    assert_non_null(strstr(err, "no context named 'missing'"));
    ctx_done(&x);
}

static void test_kubeconfig_refusals(void **state)
{
    (void)state;
    struct ctx x;
    char kc[300], err[512];
    struct k8s_config cfg = { .kubeconfig = kc };
    path(kc, "bad.kubeconfig");
    ctx_init(&x);

    /* insecure-skip-tls-verify: refused unless allowed, then it works. */
    write_kubeconfig(
        kc,
        "clusters: [{name: c, cluster: {server: %s, insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: %s}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n",
        server, TOKEN);
    assert_int_equal(k8s_client_new(&x.loop, x.http, &cfg, &x.k, err, sizeof err), -EPERM);
    assert_non_null(strstr(err, "insecure-skip-tls-verify"));
    cfg.allow_insecure = true;
    new_client(&x, &cfg);
    get(&x, K8S_DEPLOYMENT, "ess", "ess-haproxy");
    assert_int_equal(x.status, 0);
    k8s_client_free(x.k);
    x.k = NULL;
    cfg.allow_insecure = false;

    write_kubeconfig(kc,
                     "clusters: [{name: c, cluster: {server: %s}}]\n"
                     "users: [{name: u, user: {exec: {command: aws}}}]\n"
                     "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
                     "current-context: x\n",
                     server);
    assert_int_equal(k8s_client_new(&x.loop, x.http, &cfg, &x.k, err, sizeof err), -ENOTSUP);
    assert_non_null(strstr(err, "'exec' is not supported"));

    write_kubeconfig(kc,
                     "clusters: [{name: c, cluster: {server: %s, "
                     "certificate-authority-data: '!!not base64!!'}}]\n"
                     "contexts: [{name: x, context: {cluster: c}}]\n"
                     "current-context: x\n",
                     server);
    assert_int_equal(k8s_client_new(&x.loop, x.http, &cfg, &x.k, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "base64"));

    write_kubeconfig(kc, "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
                         "contexts: [{name: x, context: {cluster: c}}]\n"
                         "current-context: x\n");
    assert_int_equal(k8s_client_new(&x.loop, x.http, &cfg, &x.k, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "https://"));

    write_kubeconfig(kc, "contexts: [{name: x, context: {cluster: c}}]\n");
    assert_int_equal(k8s_client_new(&x.loop, x.http, &cfg, &x.k, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "current-context"));

    write_kubeconfig(kc, "clusters: [\n");
    assert_int_equal(k8s_client_new(&x.loop, x.http, &cfg, &x.k, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "bad.kubeconfig:"));

    cfg.kubeconfig = "/nonexistent/kubeconfig";
    assert_true(k8s_client_new(&x.loop, x.http, &cfg, &x.k, err, sizeof err) < 0);
    assert_null(x.k);
    ctx_done(&x);
}

/* The service account's files under an overridden directory, the service
 * address given instead of the environment; its namespace is the default. */
static void test_in_cluster(void **state)
{
    (void)state;
    struct ctx x;
    char sa[300], f[400], port[16], err[512];
    path(sa, "serviceaccount");
    assert_int_equal(mkdir(sa, 0700), 0);
    snprintf(f, sizeof f, "%s/token", sa);
    assert_int_equal(standin_write(f, TOKEN), 0);
    snprintf(f, sizeof f, "%s/namespace", sa);
    assert_int_equal(standin_write(f, "ess"), 0);
    snprintf(f, sizeof f, "%s/ca.crt", sa);
    assert_int_equal(link(ca, f), 0);
    snprintf(port, sizeof port, "%s", strrchr(server, ':') + 1);

    ctx_init(&x);
    struct k8s_config cfg = {
        .in_cluster = true, .sa_dir = sa, .service_host = "127.0.0.1", .service_port = port
    };
    new_client(&x, &cfg);
    assert_string_equal(k8s_client_namespace(x.k), "ess");
    get(&x, K8S_STATEFULSET, NULL, "ess-synapse-main");
    assert_int_equal(x.status, 0);
    k8s_client_free(x.k);
    x.k = NULL;

    /* Outside a pod: no service address. */
    unsetenv("KUBERNETES_SERVICE_HOST");
    struct k8s_config nocluster = { .in_cluster = true, .sa_dir = sa };
    assert_int_equal(k8s_client_new(&x.loop, x.http, &nocluster, &x.k, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "KUBERNETES_SERVICE_HOST"));
    /* From the environment, as in a pod. */
    setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", port, 1);
    new_client(&x, &nocluster);
    get(&x, K8S_DEPLOYMENT, NULL, "ess-haproxy");
    assert_int_equal(x.status, 0);
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
    ctx_done(&x);
    static const char *const files[] = { "token", "namespace", "ca.crt" };
    for (size_t i = 0; i < 3; i++) {
        snprintf(f, sizeof f, "%s/%s", sa, files[i]);
        unlink(f);
    }
    rmdir(sa);
}

static void test_tls_wrong_ca(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    struct k8s_config cfg = { .server = server, .ca_file = other_ca, .token_file = token_file };
    new_client(&x, &cfg);
    get(&x, K8S_DEPLOYMENT, "ess", "ess-haproxy");
    assert_int_equal(x.status, -EKEYREJECTED);
    assert_int_equal(x.http_status, 0);
    ctx_done(&x);
}

static void test_explicit_config_errors(void **state)
{
    (void)state;
    struct ctx x;
    char err[512];
    ctx_init(&x);
    struct k8s_config none = { 0 };
    assert_int_equal(k8s_client_new(&x.loop, x.http, &none, &x.k, err, sizeof err), -EINVAL);
    struct k8s_config http = { .server = "http://127.0.0.1:1", .token_file = token_file };
    assert_int_equal(k8s_client_new(&x.loop, x.http, &http, &x.k, err, sizeof err), -EINVAL);
    struct k8s_config notok = { .server = server, .token_file = "/nonexistent/token" };
    assert_int_equal(k8s_client_new(&x.loop, x.http, &notok, &x.k, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "/nonexistent/token"));
    /* Names that would change the path are refused before any request. */
    explicit_client(&x, token_file);
    assert_int_equal(k8s_get(x.k, K8S_DEPLOYMENT, "ess", "../../api", on_result, &x, NULL),
                     -EINVAL);
    assert_int_equal(k8s_get(x.k, K8S_DEPLOYMENT, "ESS", "x", on_result, &x, NULL), -EINVAL);
    assert_int_equal(x.calls, 0);
    ctx_done(&x);
}

/* ---- operations ---- */

static void list(struct ctx *x, enum k8s_kind kind, const char *ns, const char *sel)
{
    ctx_reset(x);
    wait_result(x, k8s_list(x->k, kind, ns, sel, on_result, x, NULL));
}

static void test_list_by_selector(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    explicit_client(&x, token_file);
    list(&x, K8S_STATEFULSET, "ess", "app.kubernetes.io/component=matrix-server");
    assert_int_equal(x.status, 0);
    assert_int_equal(x.n, 1);
    assert_string_equal(x.objs[0].name, "ess-synapse-main");
    assert_int_equal(x.objs[0].kind, K8S_STATEFULSET); /* items carry no kind */
    list(&x, K8S_DEPLOYMENT, "ess",
         "app.kubernetes.io/component in (matrix-authentication,matrix-stack-ingress)");
    assert_int_equal(x.status, 0);
    assert_int_equal(x.n, 2);
    list(&x, K8S_DEPLOYMENT, "ess", "app.kubernetes.io/component=matrix-server");
    assert_int_equal(x.status, 0);
    assert_int_equal(x.n, 0);
    list(&x, K8S_DEPLOYMENT, "ess", NULL);
    assert_int_equal(x.n, 2);
    list(&x, K8S_DEPLOYMENT, "ess", "a in (");
    assert_int_equal(x.status, -EINVAL);
    assert_int_equal(x.http_status, 400);
    ctx_done(&x);
}

static void test_scale_subresource(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    explicit_client(&x, token_file);
    ctx_reset(&x);
    wait_result(&x, k8s_get_scale(x.k, K8S_DEPLOYMENT, "operator-onprem",
                                  "element-operator-controller-manager", on_result, &x, NULL));
    assert_int_equal(x.status, 0);
    assert_int_equal(x.objs[0].spec_replicas, 1);
    assert_string_equal(json_string_value(json_object_get(x.body, "kind")), "Scale");
    ctx_reset(&x);
    wait_result(&x, k8s_set_scale(x.k, K8S_DEPLOYMENT, "operator-onprem",
                                  "element-operator-controller-manager", 0, on_result, &x, NULL));
    assert_int_equal(x.status, 0);
    assert_int_equal(x.objs[0].spec_replicas, 0); /* "spec": {} at 0 */
    ctx_reset(&x);
    wait_result(&x, k8s_set_scale(x.k, K8S_DEPLOYMENT, "operator-onprem",
                                  "element-operator-controller-manager", 1, on_result, &x, NULL));
    assert_int_equal(x.status, 0);
    assert_int_equal(x.objs[0].spec_replicas, 1);
    ctx_reset(&x);
    wait_result(&x, k8s_set_scale(x.k, K8S_STATEFULSET, "ess", "missing", 1, on_result, &x, NULL));
    assert_int_equal(x.status, -ENOENT);
    ctx_done(&x);
}

static void test_annotations(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    explicit_client(&x, token_file);
    get(&x, K8S_DEPLOYMENT, "ess", "ess-haproxy");
    char rv[64];
    snprintf(rv, sizeof rv, "%s", x.objs[0].resource_version);
    const char *keys[] = { "triad.element.io/epoch", "triad.element.io/by" };
    const char *values[] = { "3", "dc2" };
    ctx_reset(&x);
    wait_result(&x, k8s_annotate(x.k, K8S_DEPLOYMENT, "ess", "ess-haproxy", keys, values, 2, rv,
                                 on_result, &x, NULL));
    assert_int_equal(x.status, 0);
    assert_string_equal(annotation(&x.objs[0], "triad.element.io/epoch"), "3");
    /* The Helm annotations are kept (merge patch). */
    assert_string_equal(annotation(&x.objs[0], "meta.helm.sh/release-name"), "ess");
    /* The same precondition again is stale now: 409. */
    ctx_reset(&x);
    wait_result(&x, k8s_annotate(x.k, K8S_DEPLOYMENT, "ess", "ess-haproxy", keys, values, 1, rv,
                                 on_result, &x, NULL));
    assert_int_equal(x.status, -EAGAIN);
    assert_int_equal(x.http_status, 409);
    assert_string_equal(x.reason, "Conflict");
    /* NULL removes. */
    const char *none[] = { NULL, NULL };
    ctx_reset(&x);
    wait_result(&x, k8s_annotate(x.k, K8S_DEPLOYMENT, "ess", "ess-haproxy", keys, none, 2, NULL,
                                 on_result, &x, NULL));
    assert_int_equal(x.status, 0);
    assert_null(annotation(&x.objs[0], "triad.element.io/epoch"));
    get(&x, K8S_DEPLOYMENT, "ess", "ess-haproxy");
    assert_null(annotation(&x.objs[0], "triad.element.io/by"));
    ctx_done(&x);
}

static void test_server_errors(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    explicit_client(&x, token_file);
    assert_int_equal(standin_write(fault_file, "500"), 0);
    get(&x, K8S_DEPLOYMENT, "ess", "ess-haproxy");
    assert_int_equal(x.status, -EREMOTEIO);
    assert_int_equal(x.http_status, 500);
    assert_non_null(strstr(x.detail, "injected fault 500"));
    assert_int_equal(standin_write(fault_file, "503"), 0);
    get(&x, K8S_DEPLOYMENT, "ess", "ess-haproxy");
    assert_int_equal(x.status, -EREMOTEIO);
    assert_int_equal(standin_write(fault_file, "401"), 0);
    get(&x, K8S_DEPLOYMENT, "ess", "ess-haproxy");
    assert_int_equal(x.status, -EACCES);
    unlink(fault_file);
    get(&x, K8S_DEPLOYMENT, "ess", "ess-haproxy");
    assert_int_equal(x.status, 0);
    ctx_done(&x);
}

static void test_timeout_and_body_cap(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    struct k8s_config cfg = { .server = server,
                              .ca_file = ca,
                              .token_file = token_file,
                              .timeout_ms = 300,
                              .max_body = 256 };
    new_client(&x, &cfg);
    list(&x, K8S_DEPLOYMENT, "ess", NULL);
    assert_int_equal(x.status, -EMSGSIZE);
    assert_int_equal(standin_write(fault_file, "timeout"), 0);
    uint64_t t0 = uv_hrtime();
    get(&x, K8S_DEPLOYMENT, "ess", "ess-haproxy");
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    unlink(fault_file);
    assert_int_equal(x.status, -ETIMEDOUT);
    assert_true(ms >= 290 && ms < 3000);
    ctx_done(&x);
}

static void test_raw_and_cancel(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    explicit_client(&x, token_file);
    ctx_reset(&x);
    wait_result(&x, k8s_raw(x.k, "GET", "/api/v1/namespaces/ess", NULL, NULL, on_result, &x, NULL));
    assert_int_equal(x.status, 0);
    assert_string_equal(json_string_value(json_object_get(x.body, "kind")), "Namespace");
    struct k8s_request *req = NULL;
    ctx_reset(&x);
    assert_int_equal(k8s_get(x.k, K8S_DEPLOYMENT, "ess", "ess-haproxy", on_result, &x, &req), 0);
    k8s_request_cancel(req);
    assert_int_equal(x.calls, 1); /* not from inside cancel */
    wait_result(&x, 0);
    assert_int_equal(x.status, -ECANCELED);
    ctx_done(&x);
}

/* ---- scale and wait ---- */

static void on_progress(struct k8s_scale *s, int status, const char *detail,
                        const struct k8s_scale_item *items, size_t n, void *arg)
{
    (void)s;
    (void)status;
    (void)detail;
    struct ctx *x = arg;
    x->progress_calls++;
    for (size_t i = 0; i < n; i++)
        x->progress_not_done += !items[i].done;
}

static void on_scaled(struct k8s_scale *s, int status, const char *detail,
                      const struct k8s_scale_item *items, size_t n, void *arg)
{
    struct ctx *x = arg;
    assert_ptr_equal(s, x->scale);
    x->calls++;
    x->status = status;
    snprintf(x->detail, sizeof x->detail, "%s", detail);
    x->n_items = n < 8 ? n : 8;
    if (x->n_items) /* items may be NULL when none was resolved */
        memcpy(x->items, items, x->n_items * sizeof *items);
}

static uint64_t scale(struct ctx *x, const struct k8s_scale_opts *o)
{
    x->progress_calls = x->progress_not_done = 0;
    x->status = 1;
    uint64_t t0 = uv_hrtime();
    int before = x->calls;
    int rc = k8s_scale_start(x->k, o, on_progress, on_scaled, x, &x->scale);
    if (rc < 0)
        fail_msg("k8s_scale_start: %s", k8s_client_error(x->k));
    assert_int_equal(x->calls, before);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_false(x->guard_fired);
    assert_int_equal(x->calls, before + 1);
    if (x->status)
        print_message("# scale: %d %s\n", x->status, x->detail);
    return (uv_hrtime() - t0) / 1000000;
}

static const struct k8s_scale_item *item(struct ctx *x, const char *name)
{
    for (size_t i = 0; i < x->n_items; i++) {
        if (strcmp(x->items[i].name, name) == 0)
            return &x->items[i];
    }
    fail_msg("no item %s", name);
    return NULL;
}

/* The ESS workloads (a selector and a name, both kinds) down to 0 and up
 * again, through the stand-in's readiness delay; a repeat changes nothing. */
static void test_scale_and_wait(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    explicit_client(&x, token_file);
    struct k8s_scale_target t[] = {
        { K8S_STATEFULSET, NULL, "app.kubernetes.io/component=matrix-server", 0 },
        { K8S_DEPLOYMENT, NULL, "app.kubernetes.io/component=matrix-authentication", 0 },
        { K8S_DEPLOYMENT, "ess-haproxy", NULL, 0 },
    };
    struct k8s_scale_opts o = {
        .namespace_ = "ess", .targets = t, .n_targets = 3, .timeout_ms = 10000, .poll_ms = 100
    };
    uint64_t ms = scale(&x, &o);
    assert_int_equal(x.status, 0);
    assert_int_equal(x.n_items, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_true(x.items[i].done);
        assert_true(x.items[i].scaled);
        assert_int_equal(x.items[i].ready, 0);
        assert_int_equal(x.items[i].replicas, 0);
    }
    assert_true(ms >= 400); /* the readiness delay was waited for */
    assert_true(x.progress_calls >= 2);
    assert_true(x.progress_not_done >= 1);
    assert_non_null(strstr(x.detail, "StatefulSet ess/ess-synapse-main ready 0/0"));

    /* Up again, recording an epoch. */
    for (size_t i = 0; i < 3; i++)
        t[i].replicas = 1;
    o.annotation = "triad.element.io/epoch";
    o.annotation_value = "4";
    o.annotation_monotonic = true;
    ms = scale(&x, &o);
    assert_int_equal(x.status, 0);
    assert_true(ms >= 400);
    assert_true(item(&x, "ess-synapse-main")->annotated);
    assert_int_equal(item(&x, "ess-matrix-authentication-service")->ready, 1);
    get(&x, K8S_STATEFULSET, "ess", "ess-synapse-main");
    assert_string_equal(annotation(&x.objs[0], "triad.element.io/epoch"), "4");

    /* Again: already so, nothing written, done at the first poll. */
    ms = scale(&x, &o);
    assert_int_equal(x.status, 0);
    for (size_t i = 0; i < 3; i++) {
        assert_false(x.items[i].scaled);
        assert_false(x.items[i].annotated);
        assert_true(x.items[i].done);
    }
    assert_true(ms < 400);
    ctx_done(&x);
}

/* The classic ESS shape: the operator in its own namespace. */
static void test_scale_operator_namespace(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    explicit_client(&x, token_file);
    struct k8s_scale_target t[] = {
        { K8S_DEPLOYMENT, "element-operator-controller-manager", NULL, 0 },
    };
    struct k8s_scale_opts o = { .namespace_ = "operator-onprem",
                                .targets = t,
                                .n_targets = 1,
                                .timeout_ms = 10000,
                                .poll_ms = 100 };
    scale(&x, &o);
    assert_int_equal(x.status, 0);
    /* Verify only (no_scale): it is at 0. */
    o.no_scale = true;
    scale(&x, &o);
    assert_int_equal(x.status, 0);
    assert_false(x.items[0].scaled);
    /* Verify only, wanting 1: not so, and nothing changes it. */
    t[0].replicas = 1;
    o.timeout_ms = 400;
    scale(&x, &o);
    assert_int_equal(x.status, -ETIMEDOUT);
    assert_non_null(strstr(x.detail, "spec.replicas 0"));
    /* Set without waiting. */
    o.no_scale = false;
    o.no_wait = true;
    scale(&x, &o);
    assert_int_equal(x.status, 0);
    assert_true(x.items[0].scaled);
    assert_int_equal(x.items[0].spec, 1);
    ctx_done(&x);
}

/* Scaled, but the pods do not go in time: the detail says which. */
static void test_scale_timeout(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    struct k8s_config cfg = { .server = slow_server, .ca_file = ca, .token_file = token_file };
    new_client(&x, &cfg);
    struct k8s_scale_target t[] = { { K8S_DEPLOYMENT, "ess-haproxy", NULL, 0 } };
    struct k8s_scale_opts o = {
        .namespace_ = "ess", .targets = t, .n_targets = 1, .timeout_ms = 1500, .poll_ms = 100
    };
    uint64_t ms = scale(&x, &o);
    assert_int_equal(x.status, -ETIMEDOUT);
    assert_true(ms >= 1490 && ms < 5000);
    assert_true(x.items[0].scaled);
    assert_non_null(strstr(x.detail, "not ready after 1500 ms"));
    assert_non_null(strstr(x.detail, "Deployment ess/ess-haproxy ready 1/0 (1 pod(s) left)"));
    ctx_done(&x);
}

static void test_scale_errors(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    explicit_client(&x, token_file);
    struct k8s_scale_target none[] = {
        { K8S_STATEFULSET, NULL, "app.kubernetes.io/component=nothing", 0 },
    };
    struct k8s_scale_opts o = {
        .namespace_ = "ess", .targets = none, .n_targets = 1, .timeout_ms = 5000, .poll_ms = 50
    };
    scale(&x, &o);
    assert_int_equal(x.status, -ENOENT);
    assert_non_null(strstr(x.detail, "no StatefulSet in namespace ess matches"));

    struct k8s_scale_target missing[] = { { K8S_DEPLOYMENT, "gone", NULL, 0 } };
    o.targets = missing;
    scale(&x, &o);
    assert_int_equal(x.status, -ENOENT);
    assert_non_null(strstr(x.detail, "\"gone\" not found"));

    /* The same object asked for two counts. */
    struct k8s_scale_target twice[] = {
        { K8S_DEPLOYMENT, "ess-haproxy", NULL, 0 },
        { K8S_DEPLOYMENT, NULL, "app.kubernetes.io/component=matrix-stack-ingress", 1 },
    };
    o.targets = twice;
    o.n_targets = 2;
    scale(&x, &o);
    assert_int_equal(x.status, -EINVAL);

    /* Bad options are returned, not called back. */
    struct k8s_scale_target both[] = { { K8S_DEPLOYMENT, "a", "b=c", 0 } };
    o.targets = both;
    o.n_targets = 1;
    assert_int_equal(k8s_scale_start(x.k, &o, NULL, on_scaled, &x, NULL), -EINVAL);
    o.n_targets = 0;
    assert_int_equal(k8s_scale_start(x.k, &o, NULL, on_scaled, &x, NULL), -EINVAL);

    /* Bad credentials: the first request's error. */
    k8s_client_free(x.k);
    explicit_client(&x, bad_token_file);
    o.targets = missing;
    o.n_targets = 1;
    scale(&x, &o);
    assert_int_equal(x.status, -EACCES);
    ctx_done(&x);
}

/* An object already carrying a newer epoch is not touched: a stale leader
 * cannot scale what a newer one decided. */
static void test_scale_stale_epoch(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    explicit_client(&x, token_file);
    const char *keys[] = { "triad.element.io/epoch" };
    const char *nine[] = { "9" };
    ctx_reset(&x);
    wait_result(&x, k8s_annotate(x.k, K8S_DEPLOYMENT, "ess", "ess-matrix-authentication-service",
                                 keys, nine, 1, NULL, on_result, &x, NULL));
    assert_int_equal(x.status, 0);
    struct k8s_scale_target t[] = {
        { K8S_DEPLOYMENT, "ess-matrix-authentication-service", NULL, 0 },
    };
    struct k8s_scale_opts o = { .namespace_ = "ess",
                                .targets = t,
                                .n_targets = 1,
                                .timeout_ms = 5000,
                                .poll_ms = 50,
                                .annotation = "triad.element.io/epoch",
                                .annotation_value = "5",
                                .annotation_monotonic = true };
    scale(&x, &o);
    assert_int_equal(x.status, -ESTALE);
    assert_non_null(strstr(x.detail, "triad.element.io/epoch=9, newer than 5"));
    get(&x, K8S_DEPLOYMENT, "ess", "ess-matrix-authentication-service");
    assert_int_equal(x.objs[0].spec_replicas, 1); /* untouched */
    assert_string_equal(annotation(&x.objs[0], "triad.element.io/epoch"), "9");
    /* A newer epoch goes through. */
    o.annotation_value = "10";
    t[0].replicas = 1;
    scale(&x, &o);
    assert_int_equal(x.status, 0);
    assert_true(x.items[0].annotated);
    ctx_done(&x);
}

static void test_scale_cancel(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    explicit_client(&x, token_file);
    struct k8s_scale_target t[] = { { K8S_DEPLOYMENT, "ess-haproxy", NULL, 1 } };
    struct k8s_scale_opts o = { .namespace_ = "ess", .targets = t, .n_targets = 1 };
    assert_int_equal(k8s_scale_start(x.k, &o, NULL, on_scaled, &x, &x.scale), 0);
    k8s_scale_cancel(x.scale);
    k8s_scale_cancel(x.scale);
    /* The client may go while the operation still runs. */
    k8s_client_free(x.k);
    x.k = NULL;
    assert_int_equal(x.calls, 0);
    uv_run(&x.loop, UV_RUN_DEFAULT);
    assert_int_equal(x.calls, 1);
    assert_int_equal(x.status, -ECANCELED);
    ctx_done(&x);
}

/* No token, key or credential file content ever reaches the log. */
static void test_secrets_not_logged(void **state)
{
    (void)state;
    struct ctx x;
    char kc[300], err[512];
    char *key_data = b64(cli_key);
    path(kc, "secret.kubeconfig");
    int fd = open(logfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    log_set_fd(fd);
    log_set_level(LOG_DEBUG);
    ctx_init(&x);
    explicit_client(&x, token_file);
    get(&x, K8S_DEPLOYMENT, "ess", "ess-haproxy");
    get(&x, K8S_DEPLOYMENT, "ess", "missing");
    k8s_client_free(x.k);
    x.k = NULL;
    write_kubeconfig(kc,
                     "clusters: [{name: c, cluster: {server: %s, certificate-authority: %s, "
                     "insecure-skip-tls-verify: true}}]\n"
                     "users: [{name: u, user: {token: %s, client-certificate: %s, "
                     "client-key-data: %s}}]\n"
                     "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
                     "current-context: x\n",
                     server, ca, TOKEN, cli_crt, key_data);
    struct k8s_config cfg = { .kubeconfig = kc };
    assert_true(k8s_client_new(&x.loop, x.http, &cfg, &x.k, err, sizeof err) < 0);
    assert_null(strstr(err, TOKEN));
    cfg.allow_insecure = true;
    new_client(&x, &cfg);
    get(&x, K8S_DEPLOYMENT, "ess", "ess-haproxy");
    ctx_done(&x);
    log_set_fd(2);
    log_set_level(LOG_INFO);
    close(fd);
    FILE *f = fopen(logfile, "r");
    assert_non_null(f);
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    assert_true(n > 0); /* something was logged (the insecure warning at least) */
    assert_null(strstr(text, TOKEN));
    assert_null(strstr(text, "PRIVATE KEY"));
    assert_null(strstr(text, key_data));
    free(key_data);
}

/* k8s_response_parse: what every call does with a response, without a
 * server (the fuzz harness tests/fuzz/fuzz_k8s.c drives it too). */
static void test_response_parse(void **state)
{
    (void)state;
    struct k8s_response p;
    const char *obj = "{\"kind\":\"StatefulSet\",\"metadata\":{\"name\":\"synapse\","
                      "\"namespace\":\"ess\",\"resourceVersion\":\"7\",\"generation\":3},"
                      "\"spec\":{\"replicas\":2},\"status\":{\"observedGeneration\":3,"
                      "\"replicas\":2,\"readyReplicas\":1,\"availableReplicas\":9999999}}";
    k8s_response_parse(&p, K8S_SHAPE_OBJECT, K8S_DEPLOYMENT, "GET x", 200, obj, strlen(obj));
    assert_int_equal(p.result.status, 0);
    assert_int_equal(p.result.http_status, 200);
    assert_int_equal(p.result.n_objects, 1);
    const struct k8s_object *o = &p.result.objects[0];
    assert_int_equal(o->kind, K8S_STATEFULSET);
    assert_string_equal(o->name, "synapse");
    assert_string_equal(o->namespace_, "ess");
    assert_string_equal(o->resource_version, "7");
    assert_int_equal(o->spec_replicas, 2);
    assert_int_equal(o->ready_replicas, 1);
    assert_int_equal(o->available_replicas, 1000000); /* clamped */
    assert_string_equal(p.result.detail, "GET x: HTTP 200");
    k8s_response_free(&p);

    /* A Scale: a missing spec.replicas is 0 there (1 in an object). */
    const char *scale = "{\"metadata\":{\"name\":\"s\"},\"status\":{}}";
    k8s_response_parse(&p, K8S_SHAPE_SCALE, K8S_DEPLOYMENT, "GET s", 200, scale, strlen(scale));
    assert_int_equal(p.result.objects[0].spec_replicas, 0);
    k8s_response_free(&p);
    k8s_response_parse(&p, K8S_SHAPE_OBJECT, K8S_DEPLOYMENT, "GET s", 200, scale, strlen(scale));
    assert_int_equal(p.result.objects[0].spec_replicas, 1);
    k8s_response_free(&p);

    const char *list = "{\"items\":[{\"metadata\":{\"name\":\"a\"}},{\"metadata\":{}}]}";
    k8s_response_parse(&p, K8S_SHAPE_LIST, K8S_DEPLOYMENT, "LIST", 200, list, strlen(list));
    assert_int_equal(p.result.status, -EBADMSG);
    assert_int_equal(p.result.n_objects, 0);
    assert_string_equal(p.result.detail, "LIST: item 1 has no metadata.name");
    k8s_response_free(&p);
    k8s_response_parse(&p, K8S_SHAPE_LIST, K8S_DEPLOYMENT, "LIST", 200, "{}", 2);
    assert_int_equal(p.result.status, 0);
    assert_int_equal(p.result.n_objects, 0);
    k8s_response_free(&p);

    const char *st = "{\"kind\":\"Status\",\"reason\":\"AlreadyExists\",\"message\":\"x exists\"}";
    k8s_response_parse(&p, K8S_SHAPE_OBJECT, K8S_DEPLOYMENT, "POST", 409, st, strlen(st));
    assert_int_equal(p.result.status, -EEXIST);
    assert_string_equal(p.result.reason, "AlreadyExists");
    assert_string_equal(p.result.detail, "POST: x exists (HTTP 409)");
    k8s_response_free(&p);
    k8s_response_parse(&p, K8S_SHAPE_OBJECT, K8S_DEPLOYMENT, "GET", 502, "bad\r\ngateway\x01", 13);
    assert_int_equal(p.result.status, -EREMOTEIO);
    assert_string_equal(p.result.detail, "GET: bad  gateway (HTTP 502)");
    k8s_response_free(&p);
    k8s_response_parse(&p, K8S_SHAPE_OBJECT, K8S_DEPLOYMENT, "GET", 200, "[1]", 3);
    assert_int_equal(p.result.status, -EBADMSG);
    k8s_response_free(&p);
    k8s_response_parse(&p, K8S_SHAPE_RAW, K8S_DEPLOYMENT, "GET", 204, "", 0);
    assert_int_equal(p.result.status, 0);
    assert_null(p.result.body);
    k8s_response_free(&p);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_explicit_token_get),
        cmocka_unit_test(test_missing_object_404),
        cmocka_unit_test(test_bad_token_401),
        cmocka_unit_test(test_token_file_reread),
        cmocka_unit_test(test_kubeconfig_token),
        cmocka_unit_test(test_kubeconfig_tls_server_name),
        cmocka_unit_test(test_kubeconfig_token_file_and_ca_data),
        cmocka_unit_test(test_kubeconfig_client_cert_files),
        cmocka_unit_test(test_kubeconfig_client_cert_data),
        cmocka_unit_test(test_kubeconfig_named_context),
        cmocka_unit_test(test_kubeconfig_refusals),
        cmocka_unit_test(test_in_cluster),
        cmocka_unit_test(test_tls_wrong_ca),
        cmocka_unit_test(test_explicit_config_errors),
        cmocka_unit_test(test_list_by_selector),
        cmocka_unit_test(test_scale_subresource),
        cmocka_unit_test(test_annotations),
        cmocka_unit_test(test_server_errors),
        cmocka_unit_test(test_timeout_and_body_cap),
        cmocka_unit_test(test_raw_and_cancel),
        cmocka_unit_test(test_scale_and_wait),
        cmocka_unit_test(test_scale_operator_namespace),
        cmocka_unit_test(test_scale_timeout),
        cmocka_unit_test(test_scale_errors),
        cmocka_unit_test(test_scale_stale_epoch),
        cmocka_unit_test(test_scale_cancel),
        cmocka_unit_test(test_secrets_not_logged),
        cmocka_unit_test(test_response_parse),
    };
    return cmocka_run_group_tests(tests, suite_setup, suite_teardown);
}
