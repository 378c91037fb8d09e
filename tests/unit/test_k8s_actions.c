/* Unit tests: the runtime of the k8s.scale and k8s.wait actions (check,
 * run, ready, describe, cancel) against the lab's Kubernetes API stand-in
 * (tests/fixtures/k8s_standin.py, wrapped by tests/unit/k8s_faults_standin.py
 * for 403 and 409), started here on 127.0.0.1, with a configuration read
 * from YAML as the daemon reads it. Bad input and faults: 401 (a bad token
 * file), 403 (a read-only token, and every request refused), 404, 409
 * (once, and always), an API server that never answers, pods that never get
 * ready, a selector matching nothing, a site without Kubernetes, and an
 * object carrying a newer epoch (a stale leader). Also one run through
 * tests/fixtures/action_runner with ${run.to} resolved from a real file. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "acttest.h"
#include "standin.h"
#include "testcerts.h"
#include "testfix.h"
#include "lib/buf.h"
#include "lib/http_client.h"
#include "lib/k8s_client.h"
#include "lib/log.h"
#include "orchestrator/config.h"
#include "runbooks/runbook.h"

#define TOKEN       "k8s-actions-token-0123456789"
#define RO_TOKEN    "k8s-actions-viewer-token"
#define READY_DELAY "0.3"
#define ANN         "triad.element.io/epoch"

static char dir[256];
static char ca[300], srv_crt[300], srv_key[300], token_file[300], ro_file[300], bad_file[300];
static char fault_file[300], kubeconfig[300], cfg_path[300], runner_cfg[300];
static char server[64], slow_server[64];
static pid_t k8s_pid, slow_pid;
static struct config cfg;
static json_t *ctx;

static void path(char *out, const char *name)
{
    snprintf(out, 300, "%s/%s", dir, name);
}

/* The configuration: dc1 with explicit credentials, dc2 through a
 * kubeconfig (both the same stand-in), dc3 without Kubernetes, dc4 with a
 * token the API refuses, dc5 with a read-only token, dc6 on a stand-in
 * whose pods take a minute to get ready or go, dc7 with a token file that
 * does not exist. The workloads are the Helm matrix-stack shape. */
static int write_config(const char *where, bool all_sites)
{
    char text[8192], rb[300];
    standin_repo_path("runbooks/dc1-loss.yaml", rb, sizeof rb);
    int n = snprintf(text, sizeof text,
                     "cluster: test\n"
                     "site: dc2\n"
                     "sites:\n"
                     "  dc1:\n"
                     "    role: primary\n"
                     "    address: 127.0.1.1:7400\n"
                     "    kubernetes: {server: '%s', ca_file: %s, token_file: %s}\n"
                     "  dc2:\n"
                     "    role: standby\n"
                     "    address: 127.0.2.1:7400\n"
                     "    kubernetes: {kubeconfig: %s}\n"
                     "  dc3:\n"
                     "    role: witness\n"
                     "    address: 127.0.3.1:7400\n"
                     "  dc4:\n"
                     "    role: witness\n"
                     "    address: 127.0.4.1:7400\n"
                     "    kubernetes: {server: '%s', ca_file: %s, token_file: %s}\n"
                     "  dc5:\n"
                     "    role: witness\n"
                     "    address: 127.0.5.1:7400\n"
                     "    kubernetes: {server: '%s', ca_file: %s, token_file: %s}\n"
                     "  dc6:\n"
                     "    role: witness\n"
                     "    address: 127.0.6.1:7400\n"
                     "    kubernetes: {server: '%s', ca_file: %s, token_file: %s}\n",
                     server, ca, token_file, kubeconfig, server, ca, bad_file, server, ca, ro_file,
                     slow_server, ca, token_file);
    if (all_sites)
        n += snprintf(text + n, sizeof text - (size_t)n,
                      "  dc7:\n"
                      "    role: witness\n"
                      "    address: 127.0.7.1:7400\n"
                      "    kubernetes: {server: '%s', ca_file: %s, token_file: %s/nothing}\n",
                      server, ca, dir);
    snprintf(text + n, sizeof text - (size_t)n,
             "tls: {ca_file: %s, cert_file: %s, key_file: %s}\n"
             "postgres:\n"
             "  clusters:\n"
             "    synapse:\n"
             "      members: {dc1: 127.0.1.5, dc2: 127.0.2.5}\n"
             "failover: {target: dc2}\n"
             "runbooks: {dc1-loss: %s}\n"
             "ess:\n"
             "  namespace: ess\n"
             "  workloads:\n"
             "    - {kind: StatefulSet, selector: app.kubernetes.io/component=matrix-server}\n"
             "    - {kind: Deployment, selector: "
             "app.kubernetes.io/component=matrix-authentication, replicas: 2}\n"
             "    - {kind: Deployment, name: ess-haproxy}\n",
             ca, srv_crt, srv_key, rb);
    return standin_write(where, text);
}

static int suite_setup(void **state)
{
    (void)state;
    char st[300], st2[300], klog[300], slog[300], kc[2048];
    log_set_level(LOG_ERROR);
    if (testcerts_dir(dir, sizeof dir) < 0 || testcerts_ca(dir, "ca") < 0 ||
        testcerts_leaf(dir, "ca", "srv", "localhost", "localhost,IP:127.0.0.1") < 0)
        return -1;
    path(ca, "ca-ca.pem");
    path(srv_crt, "srv.pem");
    path(srv_key, "srv.key");
    path(token_file, "k8s.token");
    path(ro_file, "viewer.token");
    path(bad_file, "bad.token");
    path(fault_file, "k8s-fault");
    path(kubeconfig, "dc2.kubeconfig");
    path(cfg_path, "triad.yaml");
    path(runner_cfg, "runner.yaml");
    path(st, "k8s-state.json");
    path(st2, "k8s-slow-state.json");
    path(klog, "k8s.log");
    path(slog, "k8s-slow.log");
    int kp = standin_free_port(), sp = standin_free_port();
    char kl[64], sl[64];
    snprintf(kl, sizeof kl, "127.0.0.1:%d", kp);
    snprintf(sl, sizeof sl, "127.0.0.1:%d", sp);
    snprintf(server, sizeof server, "https://127.0.0.1:%d", kp);
    snprintf(slow_server, sizeof slow_server, "https://127.0.0.1:%d", sp);
    snprintf(kc, sizeof kc,
             "clusters: [{name: dc2, cluster: {server: '%s', certificate-authority: %s}}]\n"
             "users: [{name: triad, user: {tokenFile: k8s.token}}]\n"
             "contexts: [{name: dc2, context: {cluster: dc2, user: triad, namespace: ess}}]\n"
             "current-context: dc2\n",
             server, ca);
    if (standin_write(token_file, TOKEN "\n") < 0 || standin_write(ro_file, RO_TOKEN "\n") < 0 ||
        standin_write(bad_file, "not-the-token\n") < 0 || standin_write(kubeconfig, kc) < 0)
        return -1;
    const char *ka[] = { "--readonly-token-file",
                         ro_file,
                         "--listen",
                         kl,
                         "--cert",
                         srv_crt,
                         "--key",
                         srv_key,
                         "--token-file",
                         token_file,
                         "--state",
                         st,
                         "--seed",
                         "helm-idle",
                         "--ready-delay",
                         READY_DELAY,
                         "--fault-file",
                         fault_file,
                         NULL };
    const char *sa[] = { "--listen",      sl,         "--cert",  srv_crt, "--key",  srv_key,
                         "--token-file",  token_file, "--state", st2,     "--seed", "helm-active",
                         "--ready-delay", "60",       NULL };
    k8s_pid = standin_start("tests/unit/k8s_faults_standin.py", ka, kp, klog);
    slow_pid = standin_start("tests/fixtures/k8s_standin.py", sa, sp, slog);
    if (k8s_pid < 0 || slow_pid < 0)
        return -1;
    if (write_config(cfg_path, true) < 0 || write_config(runner_cfg, false) < 0)
        return -1;
    struct diag d;
    diag_init(&d);
    struct config_load_opts lo = { .no_file_checks = true, .skip_runbooks = true };
    int rc = config_load(&cfg, cfg_path, &lo, &d);
    if (rc < 0)
        diag_print(&d, stderr);
    diag_free(&d);
    if (rc < 0)
        return -1;
    json_t *cj = config_to_json(&cfg);
    ctx = rb_context(cj, "run-1", 5, "dc1", "dc2", "t");
    json_decref(cj);
    return 0;
}

static int suite_teardown(void **state)
{
    (void)state;
    standin_stop(k8s_pid);
    standin_stop(slow_pid);
    json_decref(ctx);
    config_free(&cfg);
    testcerts_rmdir(dir);
    http_global_cleanup();
    return 0;
}

/* ---- harness ---- */

struct h {
    uv_loop_t loop;
    struct http_client *http;
    struct rb_env env;
    struct acttest t;
};

static void h_init(struct h *h)
{
    memset(h, 0, sizeof *h);
    assert_int_equal(uv_loop_init(&h->loop), 0);
    assert_int_equal(http_client_new(&h->loop, &h->http), 0);
    h->env = (struct rb_env){ .loop = &h->loop, .cfg = &cfg, .site = "dc2", .http = h->http };
    h->t.env = &h->env;
    h->t.ctx = ctx;
    h->t.epoch = 5;
    unlink(fault_file);
}

static void h_done(struct h *h)
{
    unlink(fault_file);
    acttest_done(&h->t);
    assert_int_equal(http_client_active(h->http), 0);
    http_client_close(h->http, NULL, NULL);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&h->loop), 0);
}

/* Runs an operation; params is a JSON text. Returns the status. */
static int op(struct h *h, const char *action, enum rb_op o, int64_t timeout_ms, const char *params)
{
    json_error_t e;
    json_t *p = json_loads(params, 0, &e);
    if (!p)
        fail_msg("bad params %s: %s", params, e.text);
    int calls = acttest_op(&h->t, action, o, timeout_ms, p);
    json_decref(p);
    print_message("# %s %s: %d %s (%llu ms)\n", action,
                  o == RB_OP_RUN     ? "run"
                  : o == RB_OP_CHECK ? "check"
                                     : "ready",
                  h->t.status, h->t.detail, (unsigned long long)h->t.ms);
    assert_false(h->t.guard_fired);
    assert_false(h->t.release_hung);
    assert_int_equal(calls, 1);
    return h->t.status;
}

static void describe(struct h *h, const char *action, const char *params, char *out, size_t len)
{
    struct rb_step step = { .id = "s", .action = rb_action_find(action), .timeout_ms = 60000 };
    json_t *p = json_loads(params, 0, NULL);
    struct buf b;
    assert_non_null(p);
    buf_init(&b, 4096);
    rb_exec_describe(&h->env, &step, p, ctx, &b);
    snprintf(out, len, "%s", b.data ? b.data : "");
    buf_free(&b);
    json_decref(p);
    print_message("# describe: %s\n", out);
}

static bool has(const char *hay, const char *needle)
{
    if (strstr(hay, needle))
        return true;
    print_message("# '%s' not in '%s'\n", needle, hay);
    return false;
}

static int geti(struct h *h, const char *p)
{
    json_t *v = acttest_get(&h->t, p);
    if (!json_is_integer(v))
        fail_msg("result has no integer at %s", p);
    return (int)json_integer_value(v);
}

/* ---- the API, seen and changed independently of the actions ---- */

struct seen {
    int calls, status;
    int spec, ready, pods;
    char epoch[32];
};

static void on_seen(struct k8s_request *req, const struct k8s_result *r, void *arg)
{
    (void)req;
    struct seen *s = arg;
    s->calls++;
    s->status = r->status;
    if (r->status < 0 || r->n_objects != 1)
        return;
    const struct k8s_object *o = &r->objects[0];
    s->spec = o->spec_replicas;
    s->ready = o->ready_replicas;
    s->pods = o->replicas;
    json_t *a =
        json_object_get(json_object_get(json_object_get(o->json, "metadata"), "annotations"), ANN);
    snprintf(s->epoch, sizeof s->epoch, "%s", json_is_string(a) ? json_string_value(a) : "");
}

static struct k8s_client *api(struct h *h)
{
    char err[256];
    struct k8s_client *k;
    struct k8s_config kc = { .server = server, .ca_file = ca, .token_file = token_file };
    assert_int_equal(k8s_client_new(&h->loop, h->http, &kc, &k, err, sizeof err), 0);
    return k;
}

static struct seen see(struct h *h, enum k8s_kind kind, const char *ns, const char *name)
{
    struct seen s = { 0 };
    struct k8s_client *k = api(h);
    assert_int_equal(k8s_get(k, kind, ns, name, on_seen, &s, NULL), 0);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    k8s_client_free(k);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.status, 0);
    return s;
}

static void api_scale(struct h *h, enum k8s_kind kind, const char *ns, const char *name, int n)
{
    struct seen s = { 0 };
    struct k8s_client *k = api(h);
    assert_int_equal(k8s_set_scale(k, kind, ns, name, n, on_seen, &s, NULL), 0);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    k8s_client_free(k);
    assert_int_equal(s.status, 0);
}

static void api_epoch(struct h *h, enum k8s_kind kind, const char *ns, const char *name,
                      const char *value)
{
    struct seen s = { 0 };
    const char *keys[] = { ANN };
    const char *values[] = { value };
    struct k8s_client *k = api(h);
    assert_int_equal(k8s_annotate(k, kind, ns, name, keys, values, 1, NULL, on_seen, &s, NULL), 0);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    k8s_client_free(k);
    assert_int_equal(s.status, 0);
}

static const struct {
    enum k8s_kind kind;
    const char *ns, *name;
} objects[] = {
    { K8S_STATEFULSET, "ess", "ess-synapse-main" },
    { K8S_DEPLOYMENT, "ess", "ess-matrix-authentication-service" },
    { K8S_DEPLOYMENT, "ess", "ess-haproxy" },
    { K8S_DEPLOYMENT, "operator-onprem", "element-operator-controller-manager" },
};

/* Every object back at 0, no epoch, no pod left. */
static void reset(struct h *h)
{
    for (size_t i = 0; i < 4; i++) {
        struct seen s = see(h, objects[i].kind, objects[i].ns, objects[i].name);
        if (s.spec)
            api_scale(h, objects[i].kind, objects[i].ns, objects[i].name, 0);
        if (s.epoch[0])
            api_epoch(h, objects[i].kind, objects[i].ns, objects[i].name, NULL);
    }
    for (int tries = 0; tries < 100; tries++) {
        int pods = 0;
        for (size_t i = 0; i < 4; i++)
            pods += see(h, objects[i].kind, objects[i].ns, objects[i].name).pods;
        if (!pods)
            return;
        usleep(50 * 1000);
    }
    fail_msg("pods did not go");
}

#define ACTIVE    "{\"site\": \"dc2\", \"replicas\": \"active\"}"
#define SYNAPSE   K8S_STATEFULSET, "ess", "ess-synapse-main"
#define MAS       K8S_DEPLOYMENT, "ess", "ess-matrix-authentication-service"
#define HAPROXY   K8S_DEPLOYMENT, "ess", "ess-haproxy"
#define OPERATOR  K8S_DEPLOYMENT, "operator-onprem", "element-operator-controller-manager"
#define TIMEOUT_S 5000

/* ---- k8s.scale ---- */

/* The stock runbooks' step: ESS up in dc2 at the configured replicas,
 * waited for, the epoch recorded; a second run changes nothing. */
static void test_scale_active(void **state)
{
    (void)state;
    struct h h;
    char d[1024];
    h_init(&h);
    reset(&h);
    describe(&h, "k8s.scale", ACTIVE, d, sizeof d);
    assert_true(has(d,
                    "scale StatefulSets in ess matching app.kubernetes.io/component=matrix-server "
                    "(1), Deployments in ess matching "
                    "app.kubernetes.io/component=matrix-authentication (2), ess/ess-haproxy "
                    "(Deployment: 1) to their active replicas in dc2, and wait until every "
                    "replica is ready"));

    assert_int_equal(op(&h, "k8s.scale", RB_OP_READY, TIMEOUT_S, ACTIVE), 0);
    assert_true(has(h.t.detail, "3 object(s) to scale"));
    assert_int_equal(op(&h, "k8s.scale", RB_OP_CHECK, TIMEOUT_S, ACTIVE), 0);
    assert_true(has(h.t.detail, "3 of 3 object(s) in dc2 not at their active replicas and ready "
                                "yet"));
    assert_true(has(h.t.detail, "StatefulSet ess/ess-synapse-main ready 0/1 (spec.replicas 0)"));

    h.t.epoch = 5;
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, ACTIVE), 0);
    assert_true(has(h.t.detail, "3 object(s) in dc2 at their active replicas and ready (3 scaled, "
                                "0 already so)"));
    assert_true(has(h.t.detail, "Deployment ess/ess-matrix-authentication-service ready 2/2"));
    assert_true(h.t.ms >= 250); /* the pods took the stand-in's delay */
    assert_int_equal(geti(&h, "epoch"), 5);
    assert_int_equal(geti(&h, "scaled"), 3);
    assert_int_equal(json_array_size(acttest_get(&h.t, "objects")), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *o = json_array_get(acttest_get(&h.t, "objects"), i);
        assert_true(json_is_true(json_object_get(o, "done")));
        assert_int_equal(json_integer_value(json_object_get(o, "ready")),
                         json_integer_value(json_object_get(o, "want")));
    }
    struct seen s = see(&h, SYNAPSE);
    assert_int_equal(s.spec, 1);
    assert_int_equal(s.ready, 1);
    assert_string_equal(s.epoch, "5");
    s = see(&h, MAS);
    assert_int_equal(s.ready, 2);
    assert_string_equal(s.epoch, "5");
    s = see(&h, HAPROXY);
    assert_int_equal(s.ready, 1);
    assert_string_equal(s.epoch, "5");
    s = see(&h, OPERATOR);
    assert_int_equal(s.spec, 0); /* not an ESS workload of this config */

    /* Done now: the check says so, and running again changes nothing. */
    assert_int_equal(op(&h, "k8s.scale", RB_OP_CHECK, TIMEOUT_S, ACTIVE), 1);
    assert_true(has(h.t.detail, "3 object(s) in dc2 at their active replicas and ready:"));
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, ACTIVE), 0);
    assert_true(has(h.t.detail, "(0 scaled, 3 already so)"));
    h_done(&h);
}

/* Scale to 0 is verified: spec 0, no ready replica and no pod left. */
static void test_scale_to_zero(void **state)
{
    (void)state;
    struct h h;
    char d[1024];
    const char *zero = "{\"site\": \"dc1\", \"replicas\": \"0\"}";
    const char *zero_nowait = "{\"site\": \"dc1\", \"replicas\": \"0\", \"wait\": false}";
    h_init(&h);
    reset(&h);
    describe(&h, "k8s.scale", zero, d, sizeof d);
    assert_true(
        has(d, "ess/ess-haproxy (Deployment) to 0 in dc1, and wait until no pods are left"));
    describe(&h, "k8s.scale", zero_nowait, d, sizeof d);
    assert_true(has(d, "to 0 in dc1, without waiting for the pods"));

    /* Without waiting, only the replicas are set. dc6's pods take a minute
     * to go: they are still there when the run returns, and only the check
     * that waits for pods says it is not done. */
    const char *dc6 = "{\"site\": \"dc6\", \"replicas\": \"0\", \"wait\": false}";
    const char *dc6_wait = "{\"site\": \"dc6\", \"replicas\": \"0\"}";
    h.t.epoch = 6;
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, dc6), 0);
    assert_true(has(h.t.detail, "3 object(s) in dc6 set at 0 replicas (3 scaled), not waited for"));
    assert_true(has(h.t.detail, "StatefulSet ess/ess-synapse-main ready 1/0 (1 pod(s) left)"));
    assert_int_equal(op(&h, "k8s.scale", RB_OP_CHECK, TIMEOUT_S, dc6), 1);
    assert_true(has(h.t.detail, "3 object(s) in dc6 at 0 replicas: "));
    assert_int_equal(op(&h, "k8s.scale", RB_OP_CHECK, TIMEOUT_S, dc6_wait), 0);
    assert_true(has(h.t.detail, "3 of 3 object(s) in dc6 not at 0 replicas, no pod left yet"));
    assert_true(has(h.t.detail, "StatefulSet ess/ess-synapse-main ready 1/0 (1 pod(s) left)"));

    /* Waited for, until the last pod is gone. */
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, ACTIVE), 0);
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, zero), 0);
    assert_true(has(h.t.detail, "3 object(s) in dc1 at 0 replicas, no pod left (3 scaled, 0 "
                                "already so)"));
    for (size_t i = 0; i < 3; i++) {
        struct seen s = see(&h, objects[i].kind, objects[i].ns, objects[i].name);
        assert_int_equal(s.spec, 0);
        assert_int_equal(s.ready, 0);
        assert_int_equal(s.pods, 0);
        assert_string_equal(s.epoch, "6");
    }
    assert_int_equal(op(&h, "k8s.scale", RB_OP_CHECK, TIMEOUT_S, zero), 1);
    assert_int_equal(op(&h, "k8s.scale", RB_OP_CHECK, TIMEOUT_S, zero_nowait), 1);
    h_done(&h);
}

/* The classic ESS shape: the operator scaled up in its namespace (it then
 * scales the workloads itself: done here by hand), then k8s.wait for
 * Synapse. */
static void test_scale_classic_operator(void **state)
{
    (void)state;
    struct h h;
    char d[1024];
    const char *opr = "{\"site\": \"dc2\", \"replicas\": \"active\", \"kind\": \"Deployment\", "
                      "\"name\": \"element-operator-controller-manager\", "
                      "\"namespace\": \"operator-onprem\"}";
    const char *syn = "{\"site\": \"dc2\", \"kind\": \"StatefulSet\", "
                      "\"selector\": \"app.kubernetes.io/component=matrix-server\"}";
    h_init(&h);
    reset(&h);
    describe(&h, "k8s.scale", opr, d, sizeof d);
    assert_string_equal(d, "scale operator-onprem/element-operator-controller-manager (Deployment: "
                           "1) to their active replicas in dc2, and wait until every replica is "
                           "ready");
    h.t.epoch = 7;
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, opr), 0);
    assert_true(has(h.t.detail, "Deployment operator-onprem/element-operator-controller-manager "
                                "ready 1/1"));
    struct seen s = see(&h, OPERATOR);
    assert_int_equal(s.ready, 1);
    assert_string_equal(s.epoch, "7");
    assert_int_equal(see(&h, SYNAPSE).spec, 0); /* only what was named */

    describe(&h, "k8s.wait", syn, d, sizeof d);
    assert_string_equal(d, "wait until status.readyReplicas of every one of StatefulSets in ess "
                           "matching app.kubernetes.io/component=matrix-server in dc2 is "
                           "spec.replicas (all ready)");
    api_scale(&h, SYNAPSE, 1);
    assert_int_equal(op(&h, "k8s.wait", RB_OP_CHECK, TIMEOUT_S, syn), 0);
    assert_true(has(h.t.detail, "not yet: StatefulSet ess/ess-synapse-main status.readyReplicas=0 "
                                "(want 1)"));
    assert_int_equal(op(&h, "k8s.wait", RB_OP_RUN, TIMEOUT_S, syn), 0);
    assert_string_equal(h.t.detail, "StatefulSet ess/ess-synapse-main status.readyReplicas=1");
    assert_true(h.t.ms >= 150);
    assert_true(geti(&h, "polls") >= 2);
    assert_int_equal(op(&h, "k8s.wait", RB_OP_CHECK, TIMEOUT_S, syn), 1);
    assert_int_equal(op(&h, "k8s.wait", RB_OP_READY, TIMEOUT_S, syn), 0);
    assert_true(has(h.t.detail, "1 object(s)"));
    h_done(&h);
}

/* An object already scaled by a newer leader: a stale run touches nothing. */
static void test_scale_stale_epoch(void **state)
{
    (void)state;
    struct h h;
    h_init(&h);
    reset(&h);
    api_epoch(&h, HAPROXY, "9");
    h.t.epoch = 7;
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, ACTIVE), -ESTALE);
    assert_true(has(h.t.detail, "stale leader"));
    assert_true(has(h.t.detail, "(epoch 7)"));
    assert_true(has(h.t.detail,
                    "Deployment ess/ess-haproxy carries triad.element.io/epoch=9, newer "
                    "than 7: not touched"));
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(see(&h, objects[i].kind, objects[i].ns, objects[i].name).spec, 0);
    /* The same epoch (this leader resuming its own run) goes on. */
    h.t.epoch = 9;
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, ACTIVE), 0);
    assert_string_equal(see(&h, SYNAPSE).epoch, "9");
    /* A newer one records itself. */
    h.t.epoch = 12;
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, ACTIVE), 0);
    assert_true(has(h.t.detail, "(0 scaled, 3 already so)"));
    assert_string_equal(see(&h, HAPROXY).epoch, "12");
    h_done(&h);
}

/* A selector matching nothing, a missing object (404), a site without
 * Kubernetes, bad parameters. */
static void test_scale_bad_targets(void **state)
{
    (void)state;
    struct h h;
    const char *nothing = "{\"site\": \"dc2\", \"replicas\": \"1\", \"kind\": \"StatefulSet\", "
                          "\"selector\": \"app.kubernetes.io/component=nope\"}";
    const char *missing = "{\"site\": \"dc2\", \"replicas\": \"1\", \"kind\": \"Deployment\", "
                          "\"name\": \"ess-nope\"}";
    h_init(&h);
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, nothing), -ENOENT);
    assert_true(has(h.t.detail, "no StatefulSet in namespace ess matches "
                                "app.kubernetes.io/component=nope"));
    assert_int_equal(op(&h, "k8s.scale", RB_OP_CHECK, TIMEOUT_S, nothing), -ENOENT);
    assert_true(has(h.t.detail, "cannot tell"));
    assert_int_equal(op(&h, "k8s.scale", RB_OP_READY, TIMEOUT_S, nothing), -ENOENT);

    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, missing), -ENOENT);
    assert_true(has(h.t.detail, "deployments.apps \"ess-nope\" not found (HTTP 404)"));
    assert_int_equal(op(&h, "k8s.scale", RB_OP_READY, TIMEOUT_S, missing), -ENOENT);

    /* Readiness names every missing object, not only the first. */
    struct cfg_workload *saved = cfg.ess.workloads;
    size_t n_saved = cfg.ess.n_workloads;
    struct cfg_workload w[3] = {
        { WORKLOAD_DEPLOYMENT, "ess-gone", NULL, 1 },
        { WORKLOAD_DEPLOYMENT, "ess-haproxy", NULL, 1 },
        { WORKLOAD_STATEFULSET, NULL, "app=none", 1 },
    };
    cfg.ess.workloads = w;
    cfg.ess.n_workloads = 3;
    op(&h, "k8s.scale", RB_OP_READY, TIMEOUT_S, ACTIVE);
    cfg.ess.workloads = saved;
    cfg.ess.n_workloads = n_saved;
    assert_int_equal(h.t.status, -ENOENT);
    assert_true(has(h.t.detail, "\"ess-gone\" not found"));
    assert_true(has(h.t.detail, "no StatefulSet in namespace ess matches app=none"));

    assert_int_equal(
        op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, "{\"site\": \"dc3\", \"replicas\": \"active\"}"),
        -EINVAL);
    assert_true(has(h.t.detail, "site 'dc3' has no 'kubernetes' section"));
    assert_int_equal(
        op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, "{\"site\": \"dc2\", \"replicas\": \"lots\"}"),
        -EINVAL);
    assert_true(has(h.t.detail, "'replicas' must be 'active' or 0 to 1000"));
    h_done(&h);
}

/* 401: a token the API refuses, and a token file that is not there. */
static void test_scale_unauthorized(void **state)
{
    (void)state;
    struct h h;
    const char *dc4 = "{\"site\": \"dc4\", \"replicas\": \"active\"}";
    h_init(&h);
    reset(&h);
    assert_int_equal(op(&h, "k8s.scale", RB_OP_READY, TIMEOUT_S, dc4), -EACCES);
    assert_true(has(h.t.detail, "Kubernetes API of dc4: LIST statefulsets in ess"));
    assert_true(has(h.t.detail, "Unauthorized (HTTP 401)"));
    assert_int_equal(op(&h, "k8s.scale", RB_OP_CHECK, TIMEOUT_S, dc4), -EACCES);
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, dc4), -EACCES);
    assert_int_equal(see(&h, SYNAPSE).spec, 0);
    /* The stand-in's 401 fault: every token refused. */
    assert_int_equal(standin_write(fault_file, "401"), 0);
    assert_int_equal(op(&h, "k8s.scale", RB_OP_READY, TIMEOUT_S, ACTIVE), -EACCES);
    unlink(fault_file);
    assert_int_equal(op(&h, "k8s.scale", RB_OP_READY, TIMEOUT_S,
                        "{\"site\": \"dc7\", \"replicas\": \"active\"}"),
                     -ENOENT);
    assert_true(has(h.t.detail, "Kubernetes credentials of site dc7: cannot read token file"));
    h_done(&h);
}

/* 403: a token that may read but not scale (readiness cannot tell, the run
 * fails clearly), and every request forbidden. */
static void test_scale_forbidden(void **state)
{
    (void)state;
    struct h h;
    const char *dc5 = "{\"site\": \"dc5\", \"replicas\": \"active\"}";
    h_init(&h);
    reset(&h);
    assert_int_equal(op(&h, "k8s.scale", RB_OP_READY, TIMEOUT_S, dc5), 0);
    h.t.epoch = 50;
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, dc5), -EPERM);
    assert_true(has(h.t.detail, "Kubernetes API of dc5: PATCH"));
    assert_true(has(h.t.detail, "is forbidden: User \"system:serviceaccount:triad:viewer\" cannot "
                                "patch resource"));
    assert_true(has(h.t.detail, "(HTTP 403)"));
    assert_int_equal(see(&h, SYNAPSE).spec, 0);
    assert_int_equal(standin_write(fault_file, "403"), 0);
    assert_int_equal(op(&h, "k8s.scale", RB_OP_READY, TIMEOUT_S, ACTIVE), -EPERM);
    assert_true(has(h.t.detail, "cannot list resource \"statefulsets\""));
    assert_int_equal(op(&h, "k8s.scale", RB_OP_CHECK, TIMEOUT_S, ACTIVE), -EPERM);
    h_done(&h);
}

/* 409: a concurrent change once (read again, decided again, done), and an
 * object that keeps changing (a clear failure, not a loop). */
static void test_scale_conflict(void **state)
{
    (void)state;
    struct h h;
    h_init(&h);
    reset(&h);
    h.t.epoch = 21;
    assert_int_equal(standin_write(fault_file, "409-once"), 0);
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, ACTIVE), 0);
    assert_int_equal(access(fault_file, F_OK), -1); /* the conflict happened */
    assert_string_equal(see(&h, HAPROXY).epoch, "21");

    h.t.epoch = 22;
    assert_int_equal(standin_write(fault_file, "409"), 0);
    assert_int_equal(
        op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, "{\"site\": \"dc2\", \"replicas\": \"0\"}"),
        -EAGAIN);
    assert_true(has(h.t.detail, "Operation cannot be fulfilled"));
    assert_true(has(h.t.detail, "(HTTP 409)"));
    unlink(fault_file);
    assert_int_equal(see(&h, SYNAPSE).spec, 1); /* nothing scaled */
    h_done(&h);
}

/* An API server that never answers, and pods that never get ready: each
 * within the step's time, with what is missing; nothing left running. */
static void test_scale_timeouts(void **state)
{
    (void)state;
    struct h h;
    h_init(&h);
    assert_int_equal(standin_write(fault_file, "timeout"), 0);
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, 1500, ACTIVE), -ETIMEDOUT);
    assert_true(h.t.ms >= 1300 && h.t.ms < 1500); /* before the engine's own timeout */
    assert_true(has(h.t.detail, "in dc2: "));
    assert_int_equal(op(&h, "k8s.scale", RB_OP_CHECK, 1500, ACTIVE), -ETIMEDOUT);
    assert_true(has(h.t.detail, "cannot tell"));
    assert_int_equal(op(&h, "k8s.scale", RB_OP_READY, 1000, ACTIVE), -ETIMEDOUT);
    assert_true(h.t.ms < 1000);
    unlink(fault_file);

    /* dc6 runs one pod of each, and new pods take a minute to get ready. */
    const char *dc6 = "{\"site\": \"dc6\", \"replicas\": \"3\"}";
    h.t.epoch = 60;
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, 1500, dc6), -ETIMEDOUT);
    assert_true(has(h.t.detail, "in dc6: not ready after 1350 ms: "));
    assert_true(has(h.t.detail, "StatefulSet ess/ess-synapse-main ready 1/3"));
    assert_true(h.t.ms >= 1300 && h.t.ms < 1500);
    json_t *o = json_array_get(acttest_get(&h.t, "objects"), 0);
    assert_false(json_is_true(json_object_get(o, "done")));
    assert_int_equal(json_integer_value(json_object_get(o, "spec")),
                     json_integer_value(json_object_get(o, "want")));
    /* Scaled to 0, but the pods take as long to go: not done, and why. */
    assert_int_equal(
        op(&h, "k8s.scale", RB_OP_RUN, 1500, "{\"site\": \"dc6\", \"replicas\": \"0\"}"),
        -ETIMEDOUT);
    assert_true(has(h.t.detail, "StatefulSet ess/ess-synapse-main ready 1/0 (1 pod(s) left)"));
    h_done(&h);
}

/* Aborted while waiting for pods: -ECANCELED, or nothing at all when the
 * engine forgets it; either way everything is released. */
static void test_scale_cancel(void **state)
{
    (void)state;
    struct h h;
    const char *dc6 = "{\"site\": \"dc6\", \"replicas\": \"3\"}";
    h_init(&h);
    h.t.epoch = 61;
    h.t.cancel_after_ms = 300;
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, dc6), -ECANCELED);
    assert_true(h.t.ms >= 280 && h.t.ms < 1000);
    h.t.forget = true;
    json_t *p = json_loads(dc6, 0, NULL);
    assert_int_equal(acttest_op(&h.t, "k8s.scale", RB_OP_RUN, TIMEOUT_S, p), 0);
    json_decref(p);
    assert_false(h.t.release_hung);
    assert_true(h.t.total_ms < 2000);
    h_done(&h);
}

/* A host without an HTTP client of its own: the action makes one, and
 * closes it. */
static void test_scale_own_http(void **state)
{
    (void)state;
    struct h h;
    h_init(&h);
    reset(&h);
    h.env.http = NULL;
    h.t.epoch = 30;
    assert_int_equal(op(&h, "k8s.scale", RB_OP_RUN, TIMEOUT_S, ACTIVE), 0);
    assert_int_equal(op(&h, "k8s.scale", RB_OP_CHECK, TIMEOUT_S, ACTIVE), 1);
    h.env.http = h.http;
    assert_int_equal(see(&h, MAS).ready, 2);
    h_done(&h);
}

/* ---- k8s.wait ---- */

static void drop_fault(void *arg)
{
    (void)arg;
    unlink(fault_file);
}

static void test_wait_fields(void **state)
{
    (void)state;
    struct h h;
    char d[1024];
    h_init(&h);
    reset(&h);
    /* At 0, status.readyReplicas is left out by the API server: it is 0. */
    const char *syn = "{\"site\": \"dc2\", \"kind\": \"StatefulSet\", \"name\": "
                      "\"ess-synapse-main\"}";
    assert_int_equal(op(&h, "k8s.wait", RB_OP_CHECK, TIMEOUT_S, syn), 1);
    assert_string_equal(h.t.detail, "StatefulSet ess/ess-synapse-main status.readyReplicas=0");
    /* A field in a list, and a string value. */
    const char *avail = "{\"site\": \"dc2\", \"kind\": \"Deployment\", \"name\": \"ess-haproxy\", "
                        "\"field\": \"status.conditions.0.type\", \"equals\": \"Available\"}";
    describe(&h, "k8s.wait", avail, d, sizeof d);
    assert_string_equal(d, "wait until status.conditions.0.type of Deployment ess/ess-haproxy in "
                           "dc2 is Available");
    assert_int_equal(op(&h, "k8s.wait", RB_OP_CHECK, TIMEOUT_S, avail), 1);
    assert_string_equal(acttest_get(&h.t, "objects.0.value")
                            ? json_string_value(acttest_get(&h.t, "objects.0.value"))
                            : "",
                        "Available");
    /* A spec field and a number. */
    api_scale(&h, MAS, 2);
    const char *spec = "{\"site\": \"dc2\", \"kind\": \"Deployment\", \"selector\": "
                       "\"app.kubernetes.io/component=matrix-authentication\", "
                       "\"field\": \"spec.replicas\", \"equals\": \"2\"}";
    assert_int_equal(op(&h, "k8s.wait", RB_OP_CHECK, TIMEOUT_S, spec), 1);
    /* A value that never comes: the step's time, and what was seen. */
    const char *never = "{\"site\": \"dc2\", \"kind\": \"Deployment\", \"name\": "
                        "\"ess-matrix-authentication-service\", \"equals\": \"5\"}";
    assert_int_equal(op(&h, "k8s.wait", RB_OP_RUN, 1000, never), -ETIMEDOUT);
    assert_true(has(h.t.detail, "not after 900 ms in dc2: Deployment "
                                "ess/ess-matrix-authentication-service status.readyReplicas=2 "
                                "(want 5)"));
    assert_true(h.t.ms >= 880 && h.t.ms < 1000);
    h_done(&h);
}

static void test_wait_faults(void **state)
{
    (void)state;
    struct h h;
    h_init(&h);
    reset(&h);
    const char *syn = "{\"site\": \"dc2\", \"kind\": \"StatefulSet\", \"name\": "
                      "\"ess-synapse-main\"}";
    /* Errors waiting cannot cure fail at once. */
    assert_int_equal(op(&h, "k8s.wait", RB_OP_RUN, TIMEOUT_S,
                        "{\"site\": \"dc2\", \"kind\": \"StatefulSet\", \"selector\": \"app=no\"}"),
                     -ENOENT);
    assert_true(has(h.t.detail, "no StatefulSet in namespace ess matches app=no"));
    assert_true(h.t.ms < 500);
    assert_int_equal(op(&h, "k8s.wait", RB_OP_RUN, TIMEOUT_S,
                        "{\"site\": \"dc2\", \"kind\": \"StatefulSet\", \"name\": \"nope\"}"),
                     -ENOENT);
    assert_true(has(h.t.detail, "statefulsets.apps \"nope\" not found"));
    assert_int_equal(op(&h, "k8s.wait", RB_OP_RUN, TIMEOUT_S,
                        "{\"site\": \"dc4\", \"kind\": \"StatefulSet\", \"name\": "
                        "\"ess-synapse-main\"}"),
                     -EACCES);
    assert_true(h.t.ms < 500);
    assert_int_equal(op(&h, "k8s.wait", RB_OP_READY, TIMEOUT_S,
                        "{\"site\": \"dc4\", \"kind\": \"StatefulSet\", \"name\": "
                        "\"ess-synapse-main\"}"),
                     -EACCES);
    assert_int_equal(standin_write(fault_file, "403"), 0);
    assert_int_equal(op(&h, "k8s.wait", RB_OP_RUN, TIMEOUT_S, syn), -EPERM);
    /* A failing API server is waited out... */
    unlink(fault_file);
    api_scale(&h, SYNAPSE, 1);
    assert_int_equal(standin_write(fault_file, "503"), 0);
    h.t.tick = drop_fault;
    h.t.tick_ms = 400;
    assert_int_equal(op(&h, "k8s.wait", RB_OP_RUN, TIMEOUT_S, syn), 0);
    assert_true(h.t.ms >= 400);
    assert_true(geti(&h, "polls") >= 2);
    h.t.tick = NULL;
    /* ...until the step's time is up: the last error is reported. */
    assert_int_equal(standin_write(fault_file, "500"), 0);
    assert_int_equal(op(&h, "k8s.wait", RB_OP_RUN, 1000, syn), -ETIMEDOUT);
    assert_true(has(h.t.detail, "not after 900 ms in dc2; the last poll failed: "));
    assert_true(has(h.t.detail, "injected fault 500"));
    assert_int_equal(standin_write(fault_file, "timeout"), 0);
    assert_int_equal(op(&h, "k8s.wait", RB_OP_RUN, 1000, syn), -ETIMEDOUT);
    assert_true(h.t.ms < 1000);
    unlink(fault_file);
    h_done(&h);
}

/* ---- through action_runner, with a configuration file ---- */

static int run_runner(const char *const *args, char *out, size_t len)
{
    char prog[300];
    const char *argv[16];
    size_t n = 0;
    fixture_path("action_runner", prog, sizeof prog);
    argv[n++] = prog;
    for (size_t i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(prog, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < len && (r = read(fds[0], out + got, len - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_action_runner(void **state)
{
    (void)state;
    struct h h;
    char out[16384];
    h_init(&h);
    reset(&h);
    const char *args[] = { "-c",
                           runner_cfg,
                           "--to",
                           "dc2",
                           "--epoch",
                           "40",
                           "k8s.scale",
                           "{\"site\": \"${run.to}\", "
                           "\"replicas\": \"active\"}",
                           NULL };
    assert_int_equal(run_runner(args, out, sizeof out), 0);
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 0);
    assert_true(has(json_string_value(json_object_get(j, "detail")),
                    "3 object(s) in dc2 at their active replicas and ready"));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "result"), "epoch")),
                     40);
    json_decref(j);
    assert_string_equal(see(&h, SYNAPSE).epoch, "40");
    h_done(&h);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scale_active),
        cmocka_unit_test(test_scale_to_zero),
        cmocka_unit_test(test_scale_classic_operator),
        cmocka_unit_test(test_scale_stale_epoch),
        cmocka_unit_test(test_scale_bad_targets),
        cmocka_unit_test(test_scale_unauthorized),
        cmocka_unit_test(test_scale_forbidden),
        cmocka_unit_test(test_scale_conflict),
        cmocka_unit_test(test_scale_timeouts),
        cmocka_unit_test(test_scale_cancel),
        cmocka_unit_test(test_scale_own_http),
        cmocka_unit_test(test_wait_fields),
        cmocka_unit_test(test_wait_faults),
        cmocka_unit_test(test_action_runner),
    };
    return cmocka_run_group_tests(tests, suite_setup, suite_teardown);
}
