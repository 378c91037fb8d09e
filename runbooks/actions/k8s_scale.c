/* Action `k8s.scale`: scale a site's ESS workloads (ess.workloads), or the
 * objects a step names, through the site's Kubernetes API, and wait for
 * ready replicas (for 0: until no pod is left).
 *
 * The run's epoch is written into every object (annotation
 * triad.element.io/epoch) before it is scaled; an object that carries a
 * higher epoch was scaled by a newer leader, and a stale run fails without
 * touching anything. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "orchestrator/config.h"
#include "runbooks/actions/actions.h"
#include "runbooks/actions/k8s_common.h"

static const struct rb_param_spec params[] = {
    { "site", RB_P_STRING, true, "the site whose Kubernetes cluster is used" },
    { "replicas", RB_P_STRING, true,
      "'active' (each workload's configured replicas) or a number (0 stops)" },
    { "kind", RB_P_STRING, false, "Deployment or StatefulSet (default: the ess workloads)" },
    { "name", RB_P_STRING, false, "one object by name" },
    { "selector", RB_P_STRING, false, "objects by label selector" },
    { "namespace", RB_P_STRING, false, "default ess.namespace" },
    { "wait", RB_P_BOOL, false, "wait for ready replicas (default true)" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    static const char *const kinds[] = { "Deployment", "StatefulSet", NULL };
    json_t *site = act_need_site(v, "site");
    if (site && json_is_null(json_object_get(site, "kubernetes")))
        rb_param_error(v, "site", "site '%s' has no 'kubernetes' section",
                       json_string_value(json_object_get(v->params, "site")));
    const char *rep = json_string_value(json_object_get(v->params, "replicas"));
    if (rep && strcmp(rep, "active") != 0) {
        char *end;
        long n = strtol(rep, &end, 10);
        if (*end || end == rep || n < 0 || n > 1000)
            rb_param_error(v, "replicas", "'replicas' must be 'active' or 0 to 1000, not '%s'",
                           rep);
    }
    act_need_enum(v, "kind", kinds);
    bool one = json_object_get(v->params, "name") || json_object_get(v->params, "selector");
    if (one && !json_object_get(v->params, "kind"))
        rb_param_error(v, NULL, "'name' or 'selector' needs 'kind'");
    if (json_object_get(v->params, "name") && json_object_get(v->params, "selector"))
        rb_param_error(v, "selector", "give 'name' or 'selector', not both");
    if (!one && json_array_size(rb_ctx_get(v->ctx, "ess.workloads")) == 0)
        rb_param_error(v, NULL, "no object named and no ess.workloads configured");
}

/* ---- runtime ---- */

#define PLAN_MAX CFG_MAX_LIST

/* What a step asks for, from its parameters and the configuration. */
struct plan {
    const char *site;
    const char *ns;
    bool active; /* each workload's configured replicas */
    int replicas;
    bool wait;
    struct k8s_scale_target t[PLAN_MAX];
    size_t n;
};

struct scale_state {
    struct k8s_act base;
    struct plan p;
};

static int kind_of(enum workload_kind k)
{
    return k == WORKLOAD_STATEFULSET ? K8S_STATEFULSET : K8S_DEPLOYMENT;
}

/* "active" for one named object: the replicas of the configured workload
 * that names it the same way, else 1 (the ESS operator runs one). */
static int active_replicas(const struct config *cfg, enum k8s_kind kind, const char *name,
                           const char *selector)
{
    for (size_t i = 0; cfg && i < cfg->ess.n_workloads; i++) {
        const struct cfg_workload *w = &cfg->ess.workloads[i];
        if (kind_of(w->kind) != (int)kind)
            continue;
        if ((name && w->name && !strcmp(name, w->name)) ||
            (selector && w->selector && !strcmp(selector, w->selector)))
            return w->replicas;
    }
    return 1;
}

static int plan_of(struct rb_exec *x, struct plan *p, char *err, size_t len)
{
    const struct config *cfg = x->env->cfg;
    json_t *ps = x->params;
    memset(p, 0, sizeof *p);
    p->site = json_string_value(json_object_get(ps, "site"));
    if (!p->site) {
        snprintf(err, len, "no site");
        return -EINVAL;
    }
    const char *ns = json_string_value(json_object_get(ps, "namespace"));
    p->ns = ns ? ns : cfg && cfg->ess.namespace_ ? cfg->ess.namespace_ : "ess";
    json_t *w = json_object_get(ps, "wait");
    p->wait = !json_is_false(w);
    json_t *rep = json_object_get(ps, "replicas");
    const char *rs = json_string_value(rep);
    if (rs && !strcmp(rs, "active")) {
        p->active = true;
    } else {
        char *end = NULL;
        long long n = rs                     ? strtoll(rs, &end, 10)
                      : json_is_integer(rep) ? json_integer_value(rep)
                                             : -1;
        if ((rs && (end == rs || *end)) || n < 0 || n > 1000) {
            snprintf(err, len, "'replicas' must be 'active' or 0 to 1000");
            return -EINVAL;
        }
        p->replicas = (int)n;
    }
    const char *name = json_string_value(json_object_get(ps, "name"));
    const char *selector = json_string_value(json_object_get(ps, "selector"));
    if (name || selector) {
        enum k8s_kind kind;
        const char *ks = json_string_value(json_object_get(ps, "kind"));
        if (!ks || k8s_kind_parse(ks, &kind) < 0) {
            snprintf(err, len, "'kind' must be Deployment or StatefulSet");
            return -EINVAL;
        }
        if (name && selector) {
            snprintf(err, len, "give 'name' or 'selector', not both");
            return -EINVAL;
        }
        p->t[0] = (struct k8s_scale_target){ kind, name, selector,
                                             p->active ? active_replicas(cfg, kind, name, selector)
                                                       : p->replicas };
        p->n = 1;
        return 0;
    }
    if (!cfg || !cfg->ess.n_workloads) {
        snprintf(err, len, "no object named and no ess.workloads configured");
        return -EINVAL;
    }
    if (cfg->ess.n_workloads > PLAN_MAX) {
        snprintf(err, len, "more than %d ess.workloads", PLAN_MAX);
        return -EINVAL;
    }
    for (size_t i = 0; i < cfg->ess.n_workloads; i++) {
        const struct cfg_workload *wl = &cfg->ess.workloads[i];
        p->t[i] = (struct k8s_scale_target){ kind_of(wl->kind), wl->name, wl->selector,
                                             p->active ? wl->replicas : p->replicas };
    }
    p->n = cfg->ess.n_workloads;
    return 0;
}

static void describe(struct rb_exec *x, struct buf *out)
{
    struct plan p;
    char err[128];
    if (plan_of(x, &p, err, sizeof err) < 0) {
        buf_printf(out, "k8s.scale: %s", err);
        return;
    }
    buf_printf(out, "scale ");
    for (size_t i = 0; i < p.n; i++) {
        const struct k8s_scale_target *t = &p.t[i];
        const char *sep = i ? ", " : "";
        if (t->name)
            buf_printf(out, "%s%s/%s (%s", sep, p.ns, t->name, k8s_kind_name(t->kind));
        else
            buf_printf(out, "%s%ss in %s matching %s", sep, k8s_kind_name(t->kind), p.ns,
                       t->selector);
        if (p.active)
            buf_printf(out, "%s%d)", t->name ? ": " : " (", t->replicas);
        else if (t->name)
            buf_printf(out, ")");
    }
    if (p.active)
        buf_printf(out, " to their active replicas in %s", p.site);
    else
        buf_printf(out, " to %d in %s", p.replicas, p.site);
    if (!p.wait)
        buf_printf(out, ", without waiting for the pods");
    else if (!p.active && p.replicas == 0)
        buf_printf(out, ", and wait until no pods are left");
    else
        buf_printf(out, ", and wait until every replica is ready");
}

/* "at their active replicas and ready", "at 0 replicas, no pod left". */
static const char *wanted(const struct plan *p, char *buf, size_t len)
{
    const char *then = !p->wait ? "" : !p->active && !p->replicas ? ", no pod left" : " and ready";
    if (p->active)
        snprintf(buf, len, "at their active replicas%s", then);
    else
        snprintf(buf, len, "at %d replica%s%s", p->replicas, p->replicas == 1 ? "" : "s", then);
    return buf;
}

/* Per-object progress for the result; `acted`: what the run changed. */
static json_t *items_json(const struct k8s_scale_item *items, size_t n, bool acted)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct k8s_scale_item *it = &items[i];
        json_t *o = json_pack("{s:s,s:s,s:i,s:i,s:i,s:i,s:b}", "kind", k8s_kind_name(it->kind),
                              "name", it->name, "want", it->want, "spec", it->spec, "ready",
                              it->ready, "pods", it->replicas, "done", it->done);
        if (o && acted) {
            json_object_set_new(o, "scaled", json_boolean(it->scaled));
            json_object_set_new(o, "annotated", json_boolean(it->annotated));
        }
        json_array_append_new(a, o);
    }
    return a;
}

static void set_result(struct rb_exec *x, const struct plan *p)
{
    json_object_set_new(x->result, "site", json_string(p->site));
    json_object_set_new(x->result, "namespace", json_string(p->ns));
}

/* ---- run ---- */

static void on_progress(struct k8s_scale *sc, int status, const char *detail,
                        const struct k8s_scale_item *items, size_t n, void *arg)
{
    (void)sc;
    (void)status;
    (void)detail;
    struct scale_state *s = arg;
    struct rb_exec *x = s->base.x;
    json_t *before = json_object_get(x->result, "objects");
    for (size_t i = 0; i < n; i++) {
        json_t *was = json_object_get(json_array_get(before, i), "done");
        if (items[i].done && !json_is_true(was)) {
            char what[K8S_NAME_MAX + 32], ready[32];
            snprintf(what, sizeof what, "%s/%s", s->p.ns, items[i].name);
            snprintf(ready, sizeof ready, "%d/%d", items[i].ready, items[i].want);
            log_ev(LOG_INFO, "k8s-scaled", "object at its wanted replicas", { "site", s->p.site },
                   { "kind", k8s_kind_name(items[i].kind) }, { "object", what }, { "ready", ready },
                   { "run", x->run_id });
        }
    }
    json_object_set_new(x->result, "objects", items_json(items, n, true));
}

static void on_scaled(struct k8s_scale *sc, int status, const char *detail,
                      const struct k8s_scale_item *items, size_t n, void *arg)
{
    (void)sc;
    struct scale_state *s = arg;
    struct rb_exec *x = s->base.x;
    s->base.scale = NULL;
    if (k8s_act_stopped(&s->base))
        return;
    char w[64];
    size_t scaled = 0;
    for (size_t i = 0; i < n; i++)
        scaled += items[i].scaled;
    json_object_set_new(x->result, "objects", items_json(items, n, true));
    json_object_set_new(x->result, "scaled", json_integer((json_int_t)scaled));
    switch (status) {
    case 0:
        if (s->p.wait)
            k8s_act_done(x, 0, "%zu object(s) in %s %s (%zu scaled, %zu already so): %s", n,
                         s->p.site, wanted(&s->p, w, sizeof w), scaled, n - scaled, detail);
        else
            k8s_act_done(x, 0, "%zu object(s) in %s set %s (%zu scaled), not waited for: %s", n,
                         s->p.site, wanted(&s->p, w, sizeof w), scaled,
                         strncmp(detail, "replicas set (not waited for): ", 31) == 0 ? detail + 31
                                                                                     : detail);
        return;
    case -ESTALE:
        k8s_act_done(x, -ESTALE,
                     "stale leader: a newer run has scaled these objects in %s, this run (epoch "
                     "%lld) changes nothing: %s",
                     s->p.site, (long long)x->epoch, detail);
        return;
    case -ETIMEDOUT:
        k8s_act_done(x, -ETIMEDOUT, "in %s: %s", s->p.site, detail);
        return;
    default:
        k8s_act_done(x, status, "Kubernetes API of %s: %s", s->p.site, detail);
        return;
    }
}

static void run(struct rb_exec *x)
{
    struct plan p;
    char err[128], epoch[32];
    if (plan_of(x, &p, err, sizeof err) < 0) {
        k8s_act_done(x, -EINVAL, "%s", err);
        return;
    }
    struct scale_state *s = k8s_act_start(x, sizeof *s, p.site);
    if (!s)
        return;
    s->p = p;
    set_result(x, &s->p);
    uint32_t budget = k8s_act_budget_ms(x);
    snprintf(epoch, sizeof epoch, "%lld", (long long)x->epoch);
    struct k8s_scale_opts o = {
        .namespace_ = s->p.ns,
        .targets = s->p.t,
        .n_targets = s->p.n,
        .timeout_ms = budget,
        .poll_ms = budget / 20 < K8S_DEFAULT_POLL_MS ? budget / 20 + 1 : K8S_DEFAULT_POLL_MS,
        .no_wait = !s->p.wait,
    };
    /* The epoch as a fencing token in the objects themselves: a stale
     * leader's run never undoes what a newer one did. */
    if (x->epoch > 0) {
        o.annotation = K8S_ACT_EPOCH_ANNOTATION;
        o.annotation_value = epoch;
        o.annotation_monotonic = true;
        json_object_set_new(x->result, "epoch", json_integer((json_int_t)x->epoch));
    }
    int rc = k8s_scale_start(s->base.site.k, &o, on_progress, on_scaled, s, &s->base.scale);
    if (rc < 0)
        k8s_act_done(x, rc, "%s", k8s_client_error(s->base.site.k));
}

/* ---- check and ready ---- */

/* The postcondition of one object (k8s_client's "done" of a scale). */
static bool holds(const struct plan *p, const struct k8s_act_obj *o, int want)
{
    if (o->spec != want)
        return false;
    if (!p->wait)
        return true;
    if (o->ready != want || (want == 0 && o->pods != 0))
        return false;
    return o->generation <= 0 || o->observed >= o->generation;
}

static void on_checked(struct k8s_act_fetch *f, int status, const char *detail,
                       const struct k8s_act_obj *objs, size_t n, void *arg)
{
    (void)f;
    struct scale_state *s = arg;
    struct rb_exec *x = s->base.x;
    s->base.fetch = NULL;
    if (k8s_act_stopped(&s->base))
        return;
    if (status < 0) {
        k8s_act_done(x, status, "cannot tell: Kubernetes API of %s: %s", s->p.site, detail);
        return;
    }
    struct k8s_scale_item *items = calloc(n, sizeof *items);
    if (!items) {
        k8s_act_done(x, -ENOMEM, "out of memory");
        return;
    }
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) {
        struct k8s_scale_item *it = &items[i];
        it->kind = objs[i].kind;
        snprintf(it->name, sizeof it->name, "%s", objs[i].name);
        it->want = s->p.t[objs[i].target].replicas;
        it->spec = objs[i].spec;
        it->ready = objs[i].ready;
        it->replicas = objs[i].pods;
        it->done = holds(&s->p, &objs[i], it->want);
        ok += it->done;
    }
    char what[400], w[64];
    k8s_scale_describe(items, n, s->p.ns, what, sizeof what);
    json_object_set_new(x->result, "objects", items_json(items, n, false));
    free(items);
    if (ok == n)
        k8s_act_done(x, 1, "%zu object(s) in %s %s: %s", n, s->p.site, wanted(&s->p, w, sizeof w),
                     what);
    else
        k8s_act_done(x, 0, "%zu of %zu object(s) in %s not %s yet: %s", n - ok, n, s->p.site,
                     wanted(&s->p, w, sizeof w), what);
}

static void on_ready(struct k8s_act_fetch *f, int status, const char *detail,
                     const struct k8s_act_obj *objs, size_t n, void *arg)
{
    (void)f;
    struct scale_state *s = arg;
    struct rb_exec *x = s->base.x;
    s->base.fetch = NULL;
    if (k8s_act_stopped(&s->base))
        return;
    if (status < 0) {
        k8s_act_done(x, status, "Kubernetes API of %s: %s", s->p.site, detail);
        return;
    }
    struct buf names;
    buf_init(&names, 400);
    for (size_t i = 0; i < n; i++)
        buf_printf(&names, "%s%s/%s", i ? ", " : "", s->p.ns, objs[i].name);
    k8s_act_done(x, 0, "the Kubernetes API of %s answers; %zu object(s) to scale: %s", s->p.site, n,
                 names.data ? names.data : "");
    buf_free(&names);
}

static void fetch(struct rb_exec *x, bool keep_going, k8s_act_fetch_cb cb)
{
    struct plan p;
    char err[128];
    if (plan_of(x, &p, err, sizeof err) < 0) {
        k8s_act_done(x, -EINVAL, "%s", err);
        return;
    }
    struct scale_state *s = k8s_act_start(x, sizeof *s, p.site);
    if (!s)
        return;
    s->p = p;
    set_result(x, &s->p);
    int rc = k8s_act_fetch_start(s->base.site.k, s->p.ns, s->p.t, s->p.n, keep_going, cb, s,
                                 &s->base.fetch);
    if (rc < 0)
        k8s_act_done(x, rc, "%s", k8s_client_error(s->base.site.k));
}

/* Already done when every object has the wanted replicas, ready (and for
 * 0, no pod left); with wait: false, when spec.replicas is set. */
static void check(struct rb_exec *x)
{
    fetch(x, false, on_checked);
}

/* The credentials work and every object to scale exists. */
static void ready(struct rb_exec *x)
{
    fetch(x, true, on_ready);
}

const struct rb_action_ops rb_action_k8s_scale = {
    .name = "k8s.scale",
    .summary = "scale Kubernetes workloads and wait for ready replicas",
    .params = params,
    .default_timeout_ms = 300000,
    .validate = validate,
    .describe = describe,
    .check = check,
    .run = run,
    .ready = ready,
    .cancel = k8s_act_cancel,
    .release = k8s_act_release,
};
