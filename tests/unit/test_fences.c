/* Unit tests: the k8s, redfish and exec fence drivers through fence_start,
 * against the lab's Kubernetes and BMC stand-ins (the stand-ins of tests/fixtures,
 * started here on 127.0.0.1) and small shell programs. Every fence must be
 * verified: a BMC that accepts ForceOff but keeps reporting On, or a verify
 * program that fails, is a failed fence. */
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
#include <uv.h>

#include "standin.h"
#include "testcerts.h"
#include "fencing/fence.h"
#include "lib/http_client.h"
#include "lib/k8s_client.h"

#define GUARD_MS 30000
#define TOKEN    "fence-test-token-42"

static char dir[256];
static char ca[300], srv_crt[300], srv_key[300], token_file[300], k8s_fault[300];
static char bmc_creds[300], bad_creds[300], bmc_fault[300], bmc_power[300], kubeconfig[300];
static char k8s_server[64], bmc_url[64];
static pid_t k8s_pid, bmc_pid;

static struct cfg_workload workloads[3];
static struct cfg_site sites[3];
static struct config cfg;

static void path(char *out, const char *name)
{
    snprintf(out, 300, "%s/%s", dir, name);
}

static int suite_setup(void **state)
{
    (void)state;
    char st[300], klog[300], blog[300], pgdata[300];
    if (testcerts_dir(dir, sizeof dir) < 0 || testcerts_ca(dir, "ca") < 0 ||
        testcerts_leaf(dir, "ca", "srv", "localhost", "localhost,IP:127.0.0.1") < 0)
        return -1;
    path(ca, "ca-ca.pem");
    path(srv_crt, "srv.pem");
    path(srv_key, "srv.key");
    path(token_file, "k8s.token");
    path(k8s_fault, "k8s-fault");
    path(bmc_creds, "bmc-dc1");
    path(bad_creds, "bmc-bad");
    path(bmc_fault, "bmc-fault");
    path(bmc_power, "bmc-power");
    path(kubeconfig, "dc1.kubeconfig");
    path(st, "k8s-state.json");
    path(klog, "k8s.log");
    path(blog, "bmc.log");
    path(pgdata, "pgdata");
    int kp = standin_free_port(), bp = standin_free_port();
    char kl[64], bl[64], kc[2048];
    snprintf(kl, sizeof kl, "127.0.0.1:%d", kp);
    snprintf(bl, sizeof bl, "127.0.0.1:%d", bp);
    snprintf(k8s_server, sizeof k8s_server, "https://127.0.0.1:%d", kp);
    snprintf(bmc_url, sizeof bmc_url, "https://127.0.0.1:%d", bp);
    snprintf(kc, sizeof kc,
             "clusters: [{name: dc1, cluster: {server: '%s', certificate-authority: %s}}]\n"
             "users: [{name: triad, user: {tokenFile: k8s.token}}]\n"
             "contexts: [{name: dc1, context: {cluster: dc1, user: triad}}]\n"
             "current-context: dc1\n",
             k8s_server, ca);
    if (standin_write(token_file, TOKEN) < 0 || standin_write(bmc_creds, "root:calvin\n") < 0 ||
        standin_write(bad_creds, "root:wrong\n") < 0 || standin_write(kubeconfig, kc) < 0)
        return -1;
    const char *ka[] = {
        "--listen",      kl,         "--cert",       srv_crt,   "--key",  srv_key,
        "--token-file",  token_file, "--state",      st,        "--seed", "helm-active",
        "--ready-delay", "0.3",      "--fault-file", k8s_fault, NULL
    };
    const char *ba[] = { "--site",
                         "dc1",
                         "--listen",
                         bl,
                         "--cert",
                         srv_crt,
                         "--key",
                         srv_key,
                         "--credentials-file",
                         bmc_creds,
                         "--pgdata",
                         pgdata,
                         "--power-file",
                         bmc_power,
                         "--on-cmd",
                         "/bin/true",
                         "--off-cmd",
                         "/bin/true",
                         "--fault-file",
                         bmc_fault,
                         NULL };
    k8s_pid = standin_start("tests/fixtures/k8s_standin.py", ka, kp, klog);
    bmc_pid = standin_start("tests/fixtures/bmc_standin.py", ba, bp, blog);

    /* The configuration: dc1 with explicit Kubernetes credentials, dc2 with
     * a kubeconfig, dc3 without Kubernetes; the ESS workloads of the Helm
     * shape, the authentication service running two replicas. */
    workloads[0] = (struct cfg_workload){ WORKLOAD_STATEFULSET, NULL,
                                          "app.kubernetes.io/component=matrix-server", 1 };
    workloads[1] = (struct cfg_workload){ WORKLOAD_DEPLOYMENT, NULL,
                                          "app.kubernetes.io/component=matrix-authentication", 2 };
    workloads[2] = (struct cfg_workload){ WORKLOAD_DEPLOYMENT, "ess-haproxy", NULL, 1 };
    sites[0].name = "dc1";
    sites[0].k8s = (struct cfg_k8s){
        .set = true, .server = k8s_server, .ca_file = ca, .token_file = token_file
    };
    sites[1].name = "dc2";
    sites[1].k8s = (struct cfg_k8s){ .set = true, .kubeconfig = kubeconfig };
    sites[2].name = "dc3";
    cfg.sites = sites;
    cfg.n_sites = 3;
    cfg.ess.namespace_ = "ess";
    cfg.ess.workloads = workloads;
    cfg.ess.n_workloads = 3;
    return k8s_pid > 0 && bmc_pid > 0 ? 0 : -1;
}

static int suite_teardown(void **state)
{
    (void)state;
    standin_stop(k8s_pid);
    standin_stop(bmc_pid);
    testcerts_rmdir(dir);
    http_global_cleanup();
    return 0;
}

/* ---- harness ---- */

struct ctx {
    uv_loop_t loop;
    struct http_client *http;
    uv_timer_t guard;
    int guard_fired;
    int calls;
    int status;
    char detail[FENCE_DETAIL_MAX];
    struct fence_op *op;
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

static void ctx_done(struct ctx *x)
{
    http_client_close(x->http, NULL, NULL);
    uv_close((uv_handle_t *)&x->guard, NULL);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&x->loop), 0);
}

static void on_fenced(struct fence_op *op, int status, const char *detail, void *arg)
{
    struct ctx *x = arg;
    assert_ptr_equal(op, x->op);
    x->calls++;
    x->status = status;
    snprintf(x->detail, sizeof x->detail, "%s", detail);
}

/* Runs a fence to its end (and the driver's release); returns ms. */
static uint64_t run_fence(struct ctx *x, const struct cfg_fence *f, bool unfence, bool shared)
{
    x->calls = 0;
    x->status = 1;
    uint64_t t0 = uv_hrtime();
    int rc = fence_start(&x->loop, &cfg, f, unfence, shared ? x->http : NULL, on_fenced, x, &x->op);
    assert_int_equal(rc, 0);
    assert_int_equal(x->calls, 0);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_false(x->guard_fired);
    assert_int_equal(x->calls, 1);
    print_message("# %s%s: %d %s\n", unfence ? "unfence " : "", f->name, x->status, x->detail);
    return (uv_hrtime() - t0) / 1000000;
}

/* ---- k8s ---- */

struct observed {
    int calls, status;
    int spec[3], ready[3], pods[3];
};

static void on_observed(struct k8s_request *req, const struct k8s_result *r, void *arg)
{
    (void)req;
    struct observed *o = arg;
    int i = o->calls++;
    o->status |= r->status;
    if (r->status == 0 && r->n_objects == 1) {
        o->spec[i] = r->objects[0].spec_replicas;
        o->ready[i] = r->objects[0].ready_replicas;
        o->pods[i] = r->objects[0].replicas;
    }
}

/* What the API says now, read independently of the fence. */
static void observe(struct ctx *x, struct observed *o)
{
    char err[256];
    struct k8s_client *k;
    struct k8s_config kc = { .server = k8s_server, .ca_file = ca, .token_file = token_file };
    memset(o, 0, sizeof *o);
    assert_int_equal(k8s_client_new(&x->loop, x->http, &kc, &k, err, sizeof err), 0);
    assert_int_equal(k8s_get(k, K8S_STATEFULSET, "ess", "ess-synapse-main", on_observed, o, NULL),
                     0);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(k8s_get(k, K8S_DEPLOYMENT, "ess", "ess-matrix-authentication-service",
                             on_observed, o, NULL),
                     0);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(k8s_get(k, K8S_DEPLOYMENT, "ess", "ess-haproxy", on_observed, o, NULL), 0);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    k8s_client_free(k);
    assert_int_equal(o->calls, 3);
    assert_int_equal(o->status, 0);
}

static void test_k8s_fence_and_unfence(void **state)
{
    (void)state;
    struct ctx x;
    struct observed o;
    struct cfg_fence f = {
        .name = "dc1-ess", .method = FENCE_K8S, .site = "dc1", .timeout_ms = 10000
    };
    ctx_init(&x);
    observe(&x, &o);
    assert_int_equal(o.ready[0], 1); /* running before */

    uint64_t ms = run_fence(&x, &f, false, true);
    assert_int_equal(x.status, 0);
    assert_non_null(strstr(x.detail, "3 workload(s) at 0 ready replicas"));
    assert_true(ms >= 300); /* the pods took the stand-in's delay to go */
    observe(&x, &o);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(o.spec[i], 0);
        assert_int_equal(o.ready[i], 0);
        assert_int_equal(o.pods[i], 0);
    }

    /* Lifted: each back at its configured replicas, ready. */
    run_fence(&x, &f, true, true);
    assert_int_equal(x.status, 0);
    assert_non_null(strstr(x.detail, "back at their replicas"));
    observe(&x, &o);
    assert_int_equal(o.ready[0], 1);
    assert_int_equal(o.spec[1], 2);
    assert_int_equal(o.ready[1], 2);
    assert_int_equal(o.ready[2], 1);
    ctx_done(&x);
}

/* The same through a kubeconfig, with the fence's own HTTP client. */
static void test_k8s_fence_kubeconfig_own_http(void **state)
{
    (void)state;
    struct ctx x;
    struct observed o;
    struct cfg_fence f = {
        .name = "dc2-ess", .method = FENCE_K8S, .site = "dc2", .timeout_ms = 10000
    };
    ctx_init(&x);
    run_fence(&x, &f, false, false);
    assert_int_equal(x.status, 0);
    observe(&x, &o);
    assert_int_equal(o.ready[1], 0);
    run_fence(&x, &f, true, false);
    assert_int_equal(x.status, 0);
    observe(&x, &o);
    assert_int_equal(o.ready[1], 2);
    ctx_done(&x);
}

static void test_k8s_fence_failures(void **state)
{
    (void)state;
    struct ctx x;
    struct cfg_fence f = {
        .name = "dc1-ess", .method = FENCE_K8S, .site = "dc1", .timeout_ms = 10000
    };
    ctx_init(&x);
    /* The API answers 500: not fenced, and why. */
    assert_int_equal(standin_write(k8s_fault, "500"), 0);
    run_fence(&x, &f, false, true);
    assert_int_equal(x.status, -EREMOTEIO);
    assert_non_null(strstr(x.detail, "injected fault 500"));
    /* The API never answers: the fence's timeout, requests stopped. */
    assert_int_equal(standin_write(k8s_fault, "timeout"), 0);
    f.timeout_ms = 1000;
    uint64_t ms = run_fence(&x, &f, false, true);
    unlink(k8s_fault);
    assert_int_equal(x.status, -ETIMEDOUT);
    assert_true(ms >= 800 && ms < 3000);
    assert_int_equal(http_client_active(x.http), 0);
    /* A site without Kubernetes. */
    f.site = "dc3";
    run_fence(&x, &f, false, true);
    assert_int_equal(x.status, -EINVAL);
    assert_non_null(strstr(x.detail, "no 'kubernetes' section"));
    /* Bad credentials. */
    char bad[300];
    path(bad, "bad.token");
    assert_int_equal(standin_write(bad, "nope"), 0);
    sites[2].k8s =
        (struct cfg_k8s){ .set = true, .server = k8s_server, .ca_file = ca, .token_file = bad };
    run_fence(&x, &f, false, true);
    sites[2].k8s = (struct cfg_k8s){ 0 };
    assert_int_equal(x.status, -EACCES);
    ctx_done(&x);
}

/* ---- redfish ---- */

static void test_redfish_fence(void **state)
{
    (void)state;
    struct ctx x;
    struct cfg_fence f = { .name = "dc1-bmc",
                           .method = FENCE_REDFISH,
                           .site = "dc1",
                           .timeout_ms = 10000,
                           .url = bmc_url,
                           .system = "/redfish/v1/Systems/1",
                           .credentials_file = bmc_creds,
                           .ca_file = ca };
    ctx_init(&x);
    assert_int_equal(standin_write(bmc_power, "On\n"), 0);
    run_fence(&x, &f, false, true);
    assert_int_equal(x.status, 0);
    assert_non_null(strstr(x.detail, "PowerState Off after"));
    /* Again: already off, nothing sent. */
    run_fence(&x, &f, false, false);
    assert_int_equal(x.status, 0);
    assert_non_null(strstr(x.detail, "Off already"));
    /* Not liftable. */
    assert_int_equal(fence_start(&x.loop, &cfg, &f, true, x.http, on_fenced, &x, NULL), -ENOTSUP);
    ctx_done(&x);
}

/* A BMC that accepts ForceOff (204) but keeps reporting PowerState On. */
static void test_redfish_lying_bmc(void **state)
{
    (void)state;
    struct ctx x;
    struct cfg_fence f = { .name = "dc1-bmc",
                           .method = FENCE_REDFISH,
                           .site = "dc1",
                           .timeout_ms = 2000,
                           .url = bmc_url,
                           .system = "/redfish/v1/Systems/1",
                           .credentials_file = bmc_creds,
                           .ca_file = ca };
    ctx_init(&x);
    assert_int_equal(standin_write(bmc_power, "On\n"), 0);
    assert_int_equal(standin_write(bmc_fault, "lie"), 0);
    uint64_t ms = run_fence(&x, &f, false, true);
    unlink(bmc_fault);
    assert_int_equal(x.status, -EPROTO);
    assert_non_null(strstr(x.detail, "BMC accepted ForceOff but still reports PowerState On"));
    assert_true(ms >= 1000 && ms < 2000); /* before the fence's own timeout */
    ctx_done(&x);
}

static void test_redfish_fence_failures(void **state)
{
    (void)state;
    struct ctx x;
    struct cfg_fence f = { .name = "dc1-bmc",
                           .method = FENCE_REDFISH,
                           .site = "dc1",
                           .timeout_ms = 5000,
                           .url = bmc_url,
                           .system = "/redfish/v1/Systems/1",
                           .credentials_file = bad_creds,
                           .ca_file = ca };
    ctx_init(&x);
    assert_int_equal(standin_write(bmc_power, "On\n"), 0);
    run_fence(&x, &f, false, true);
    assert_int_equal(x.status, -EACCES);
    assert_non_null(strstr(x.detail, "insufficient privileges"));
    /* The BMC is not there. */
    int port = standin_free_port();
    char url[64];
    snprintf(url, sizeof url, "https://127.0.0.1:%d", port);
    f.url = url;
    f.credentials_file = bmc_creds;
    run_fence(&x, &f, false, true);
    assert_int_equal(x.status, -ECONNREFUSED);
    /* The BMC stalls: each request has a quarter of the fence's time (at
     * least 200 ms); nothing is left running. */
    f.url = bmc_url;
    f.timeout_ms = 800;
    assert_int_equal(standin_write(bmc_fault, "timeout"), 0);
    uint64_t ms = run_fence(&x, &f, false, true);
    unlink(bmc_fault);
    assert_int_equal(x.status, -ETIMEDOUT);
    assert_non_null(strstr(x.detail, "timeout after 200 ms"));
    assert_true(ms >= 190 && ms < 3000);
    assert_int_equal(http_client_active(x.http), 0);
    ctx_done(&x);
}

/* ---- exec ---- */

static char *sh_argv[3][4];

static struct cfg_fence exec_fence(const char *name, int64_t timeout_ms, const char *command,
                                   const char *verify)
{
    static int n;
    int i = n++ % 3;
    sh_argv[i][0] = "/bin/sh";
    sh_argv[i][1] = "-c";
    sh_argv[i][2] = (char *)command;
    static char *vargv[3][3];
    vargv[i][0] = "/bin/sh";
    vargv[i][1] = "-c";
    vargv[i][2] = (char *)verify;
    return (struct cfg_fence){ .name = (char *)name,
                               .method = FENCE_EXEC,
                               .site = "dc1",
                               .timeout_ms = timeout_ms,
                               .command = sh_argv[i],
                               .n_command = 3,
                               .verify = vargv[i],
                               .n_verify = 3 };
}

static int exists(const char *p)
{
    return access(p, F_OK) == 0;
}

static void test_exec_fence_pass(void **state)
{
    (void)state;
    struct ctx x;
    char marker[300], cmd[600], ver[600];
    path(marker, "fenced");
    snprintf(cmd, sizeof cmd,
             "echo \"fencing $TRIAD_FENCE_SITE by $TRIAD_FENCE_NAME ($TRIAD_FENCE_ACTION)\"; "
             "touch %s",
             marker);
    snprintf(ver, sizeof ver, "test -e %s && echo confirmed down", marker);
    struct cfg_fence f = exec_fence("dc1-script", 5000, cmd, ver);
    ctx_init(&x);
    run_fence(&x, &f, false, true);
    assert_int_equal(x.status, 0);
    assert_true(exists(marker));
    assert_non_null(strstr(x.detail, "command exited 0 (fencing dc1 by dc1-script (fence))"));
    assert_non_null(strstr(x.detail, "verify exited 0: confirmed down"));
    unlink(marker);
    assert_int_equal(fence_start(&x.loop, &cfg, &f, true, x.http, on_fenced, &x, NULL), -ENOTSUP);
    ctx_done(&x);
}

static void test_exec_fence_verify_fails(void **state)
{
    (void)state;
    struct ctx x;
    struct cfg_fence f =
        exec_fence("dc1-script", 5000, "echo done", "echo the database still answers; exit 1");
    ctx_init(&x);
    run_fence(&x, &f, false, true);
    assert_int_equal(x.status, -EPROTO);
    assert_non_null(strstr(x.detail, "verify /bin/sh exited 1; output: the database still "
                                     "answers"));
    ctx_done(&x);
}

static void test_exec_command_fails(void **state)
{
    (void)state;
    struct ctx x;
    char marker[300], ver[400];
    path(marker, "verify-ran");
    snprintf(ver, sizeof ver, "touch %s", marker);
    struct cfg_fence f = exec_fence("dc1-script", 5000, "echo no route to host >&2; exit 3", ver);
    ctx_init(&x);
    run_fence(&x, &f, false, true);
    assert_int_equal(x.status, -EIO);
    assert_non_null(strstr(x.detail, "command /bin/sh exited 3; output: no route to host"));
    assert_false(exists(marker)); /* no verification after a failed command */
    ctx_done(&x);
}

static int gone(int pid)
{
    char p[64], stat[512];
    snprintf(p, sizeof p, "/proc/%d/stat", pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return 1;
    size_t n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = '\0';
    const char *rp = strrchr(stat, ')');
    return rp && (rp[2] == 'Z' || rp[2] == 'X');
}

static int read_pid(const char *file)
{
    FILE *f = fopen(file, "r");
    int pid = 0;
    if (f) {
        if (fscanf(f, "%d", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return pid;
}

static void test_exec_fence_timeout(void **state)
{
    (void)state;
    struct ctx x;
    char pidfile[300], cmd[600];
    path(pidfile, "hang.pid");
    snprintf(cmd, sizeof cmd, "echo $$ > %s; echo hanging; exec /bin/sleep 30", pidfile);
    struct cfg_fence f = exec_fence("dc1-script", 800, cmd, "true");
    ctx_init(&x);
    uint64_t ms = run_fence(&x, &f, false, true);
    assert_int_equal(x.status, -ETIMEDOUT);
    assert_non_null(strstr(x.detail, "timed out after"));
    assert_non_null(strstr(x.detail, "killed; output: hanging"));
    assert_true(ms >= 650 && ms < 3000);
    int pid = read_pid(pidfile);
    assert_true(pid > 0);
    assert_true(gone(pid));
    unlink(pidfile);
    ctx_done(&x);
}

static void on_cancel_timer(uv_timer_t *t)
{
    struct ctx *x = t->data;
    fence_cancel(x->op);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_exec_fence_cancel(void **state)
{
    (void)state;
    struct ctx x;
    char pidfile[300], cmd[600];
    path(pidfile, "cancel.pid");
    snprintf(cmd, sizeof cmd, "echo $$ > %s; exec /bin/sleep 30", pidfile);
    struct cfg_fence f = exec_fence("dc1-script", 10000, cmd, "true");
    ctx_init(&x);
    uv_timer_t t;
    uv_timer_init(&x.loop, &t);
    t.data = &x;
    uv_timer_start(&t, on_cancel_timer, 300, 0);
    uint64_t ms = run_fence(&x, &f, false, true);
    assert_int_equal(x.status, -ECANCELED);
    assert_true(ms < 3000);
    int pid = read_pid(pidfile);
    assert_true(pid > 0);
    assert_true(gone(pid)); /* killed and reaped before the loop ended */
    unlink(pidfile);
    ctx_done(&x);
}

static void test_exec_fence_bad_config(void **state)
{
    (void)state;
    struct ctx x;
    char *rel[] = { "fence.sh" };
    struct cfg_fence f = exec_fence("dc1-script", 5000, "true", "true");
    f.command = rel;
    f.n_command = 1;
    ctx_init(&x);
    run_fence(&x, &f, false, true);
    assert_int_equal(x.status, -EINVAL);
    assert_non_null(strstr(x.detail, "absolute program path"));
    char *missing[] = { "/nonexistent/fence.sh" };
    f.command = missing;
    run_fence(&x, &f, false, true);
    assert_int_equal(x.status, -ENOENT);
    ctx_done(&x);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_k8s_fence_and_unfence),
        cmocka_unit_test(test_k8s_fence_kubeconfig_own_http),
        cmocka_unit_test(test_k8s_fence_failures),
        cmocka_unit_test(test_redfish_fence),
        cmocka_unit_test(test_redfish_lying_bmc),
        cmocka_unit_test(test_redfish_fence_failures),
        cmocka_unit_test(test_exec_fence_pass),
        cmocka_unit_test(test_exec_fence_verify_fails),
        cmocka_unit_test(test_exec_command_fails),
        cmocka_unit_test(test_exec_fence_timeout),
        cmocka_unit_test(test_exec_fence_cancel),
        cmocka_unit_test(test_exec_fence_bad_config),
    };
    return cmocka_run_group_tests(tests, suite_setup, suite_teardown);
}
