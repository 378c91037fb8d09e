/* The k8s fence: the site's ESS workloads (ess.workloads, in ess.namespace)
 * scaled to 0 through the site's Kubernetes API (sites.<site>.kubernetes),
 * verified when every one reports no ready replica and no pod left, and
 * the controller has seen the change. Lifting it scales each workload back
 * to its configured `replicas` and verifies they are all ready.
 *
 * It needs the site's API to answer: a site whose cluster is gone cannot be
 * fenced this way (the runbook then tries the next method). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fencing/fence.h"
#include "lib/http_client.h"
#include "lib/k8s_client.h"

struct k8s_fence {
    struct http_client *own_http; /* when the caller gave none */
    struct k8s_client *k;
    struct k8s_scale *scale;
    bool releasing;
};

static void release_rest(struct fence_op *op);

/* The scale operation is given a little less time than the fence, so its
 * own message (what is not ready yet) is the one reported. */
static uint32_t scale_budget(const struct fence_op *op)
{
    int64_t t = op->fence->timeout_ms;
    int64_t margin = t / 10 < 1000 ? t / 10 : 1000;
    return (uint32_t)(t - margin);
}

static void on_progress(struct k8s_scale *s, int status, const char *detail,
                        const struct k8s_scale_item *items, size_t n, void *arg)
{
    (void)s;
    (void)status;
    (void)detail;
    struct fence_op *op = arg;
    for (size_t i = 0; i < n; i++) {
        if (!items[i].done) {
            char step[64];
            snprintf(step, sizeof step, "waiting for %.30s: %d/%d ready", items[i].name,
                     items[i].ready, items[i].want);
            fence_op_step(op, step);
            return;
        }
    }
}

static void on_scaled(struct k8s_scale *s, int status, const char *detail,
                      const struct k8s_scale_item *items, size_t n, void *arg)
{
    (void)s;
    (void)items;
    struct fence_op *op = arg;
    struct k8s_fence *f = op->drv;
    f->scale = NULL;
    if (f->releasing) {
        release_rest(op);
        return;
    }
    if (status < 0)
        fence_op_finish(op, status, "%s", detail);
    else if (op->unfence)
        fence_op_finish(op, 0, "%zu workload(s) back at their replicas and ready: %s", n, detail);
    else
        fence_op_finish(op, 0, "%zu workload(s) at 0 ready replicas, no pods left: %s", n, detail);
}

static void k8s_start(struct fence_op *op)
{
    const struct config *cfg = op->cfg;
    const struct cfg_site *site = config_site(cfg, op->fence->site);
    struct k8s_scale_target *targets = NULL;
    char err[K8S_DETAIL_MAX];
    struct k8s_fence *f = calloc(1, sizeof *f);
    if (!f) {
        fence_op_finish(op, -ENOMEM, "out of memory");
        return;
    }
    op->drv = f;
    if (!site || !site->k8s.set) {
        fence_op_finish(op, -EINVAL, "site '%s' has no 'kubernetes' section", op->fence->site);
        return;
    }
    if (!cfg->ess.n_workloads) {
        fence_op_finish(op, -EINVAL, "no ess.workloads to scale");
        return;
    }
    struct http_client *http = op->http;
    if (!http) {
        int rc = http_client_new(op->loop, &f->own_http);
        if (rc < 0) {
            fence_op_finish(op, rc, "cannot set up an HTTP client: %s", strerror(-rc));
            return;
        }
        http = f->own_http;
    }
    const struct cfg_k8s *kc = &site->k8s;
    uint32_t budget = scale_budget(op);
    struct k8s_config kcfg = {
        .server = kc->server,
        .ca_file = kc->ca_file,
        .token_file = kc->token_file,
        .client_cert_file = kc->client_cert_file,
        .client_key_file = kc->client_key_file,
        .kubeconfig = kc->kubeconfig,
        .context = kc->context,
        .in_cluster = kc->in_cluster,
        .timeout_ms = budget < K8S_DEFAULT_TIMEOUT_MS ? budget : K8S_DEFAULT_TIMEOUT_MS,
    };
    int rc = k8s_client_new(op->loop, http, &kcfg, &f->k, err, sizeof err);
    if (rc < 0) {
        fence_op_finish(op, rc, "Kubernetes credentials of site %s: %s", op->fence->site, err);
        return;
    }
    targets = calloc(cfg->ess.n_workloads, sizeof *targets);
    if (!targets) {
        fence_op_finish(op, -ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < cfg->ess.n_workloads; i++) {
        const struct cfg_workload *w = &cfg->ess.workloads[i];
        targets[i].kind = w->kind == WORKLOAD_STATEFULSET ? K8S_STATEFULSET : K8S_DEPLOYMENT;
        targets[i].name = w->name;
        targets[i].selector = w->selector;
        targets[i].replicas = op->unfence ? w->replicas : 0;
    }
    struct k8s_scale_opts o = {
        .namespace_ = cfg->ess.namespace_,
        .targets = targets,
        .n_targets = cfg->ess.n_workloads,
        .timeout_ms = budget,
        .poll_ms = budget / 20 < K8S_DEFAULT_POLL_MS ? budget / 20 + 1 : K8S_DEFAULT_POLL_MS,
    };
    fence_op_step(op, op->unfence ? "scaling ESS up" : "scaling ESS to 0");
    rc = k8s_scale_start(f->k, &o, on_progress, on_scaled, op, &f->scale);
    if (rc < 0)
        fence_op_finish(op, rc, "%s", k8s_client_error(f->k));
    free(targets); /* copied by k8s_scale_start */
}

static void on_http_closed(void *arg)
{
    struct fence_op *op = arg;
    free(op->drv);
    op->drv = NULL;
    fence_op_released(op);
}

static void release_rest(struct fence_op *op)
{
    struct k8s_fence *f = op->drv;
    k8s_client_free(f->k);
    f->k = NULL;
    if (f->own_http) {
        http_client_close(f->own_http, on_http_closed, op);
        return;
    }
    on_http_closed(op);
}

static void k8s_release(struct fence_op *op)
{
    struct k8s_fence *f = op->drv;
    if (!f) {
        fence_op_released(op);
        return;
    }
    f->releasing = true;
    if (f->scale) {
        /* Stopped by the fence's timeout or a cancel: wait for it to end. */
        k8s_scale_cancel(f->scale);
        return;
    }
    release_rest(op);
}

const struct fence_driver fence_driver_k8s = {
    .method = "k8s",
    .can_unfence = true,
    .start = k8s_start,
    .release = k8s_release,
};
