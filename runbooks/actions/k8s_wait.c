/* Action `k8s.wait`: wait until a status field of a Kubernetes object (or
 * of every object a label selector matches) has a value; by default, until
 * status.readyReplicas equals the object's spec.replicas.
 *
 * A status field counts only once the controller has seen the object's
 * current spec (status.observedGeneration caught up with
 * metadata.generation): a status from before a change says nothing about
 * it. The API server leaves zero counts out, so a missing field compared
 * with a number is 0. Polling rides through a slow or failing API server
 * until the step's time is up; credentials refused, a missing object or a
 * selector matching nothing fail at once. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "orchestrator/config.h"
#include "runbooks/actions/actions.h"
#include "runbooks/actions/k8s_common.h"

#define DEFAULT_FIELD "status.readyReplicas"
#define MISSING_MAX   400

static const struct rb_param_spec params[] = {
    { "site", RB_P_STRING, true, "the site whose Kubernetes cluster is used" },
    { "kind", RB_P_STRING, true, "Deployment or StatefulSet" },
    { "name", RB_P_STRING, false, "the object's name" },
    { "selector", RB_P_STRING, false, "or a label selector (every match must satisfy)" },
    { "namespace", RB_P_STRING, false, "default ess.namespace" },
    { "field", RB_P_STRING, false, "a status field (default status.readyReplicas)" },
    { "equals", RB_P_STRING, false, "the value it must have (default: spec.replicas)" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    static const char *const kinds[] = { "Deployment", "StatefulSet", NULL };
    json_t *site = act_need_site(v, "site");
    if (site && json_is_null(json_object_get(site, "kubernetes")))
        rb_param_error(v, "site", "site '%s' has no 'kubernetes' section",
                       json_string_value(json_object_get(v->params, "site")));
    act_need_enum(v, "kind", kinds);
    if (!json_object_get(v->params, "name") == !json_object_get(v->params, "selector"))
        rb_param_error(v, NULL, "needs exactly one of 'name' or 'selector'");
    const char *field = json_string_value(json_object_get(v->params, "field"));
    if (field &&
        (!*field || field[0] == '.' || field[strlen(field) - 1] == '.' || strstr(field, "..")))
        rb_param_error(v, "field", "'%s' is not a field path such as status.readyReplicas", field);
}

/* ---- runtime ---- */

struct wait_state {
    struct k8s_act base;
    const char *site, *ns, *field, *equals;
    struct k8s_scale_target t;
    uint32_t budget, poll_ms;
    int polls;
    int last_error;
    char last_detail[256];
    char missing[MISSING_MAX]; /* what did not hold at the last poll */
};

static int setup(struct rb_exec *x, struct wait_state *w, char *err, size_t len)
{
    const struct config *cfg = x->env->cfg;
    json_t *ps = x->params;
    const char *kind = json_string_value(json_object_get(ps, "kind"));
    w->site = json_string_value(json_object_get(ps, "site"));
    w->ns = json_string_value(json_object_get(ps, "namespace"));
    if (!w->ns)
        w->ns = cfg && cfg->ess.namespace_ ? cfg->ess.namespace_ : "ess";
    w->field = json_string_value(json_object_get(ps, "field"));
    if (!w->field)
        w->field = DEFAULT_FIELD;
    w->equals = json_string_value(json_object_get(ps, "equals"));
    w->t.name = json_string_value(json_object_get(ps, "name"));
    w->t.selector = json_string_value(json_object_get(ps, "selector"));
    if (!w->site) {
        snprintf(err, len, "no site");
        return -EINVAL;
    }
    if (!kind || k8s_kind_parse(kind, &w->t.kind) < 0) {
        snprintf(err, len, "'kind' must be Deployment or StatefulSet");
        return -EINVAL;
    }
    if (!w->t.name == !w->t.selector) {
        snprintf(err, len, "needs exactly one of 'name' or 'selector'");
        return -EINVAL;
    }
    return 0;
}

static void describe(struct rb_exec *x, struct buf *out)
{
    struct wait_state w;
    char err[128], what[K8S_NAME_MAX + 160];
    memset(&w, 0, sizeof w);
    if (setup(x, &w, err, sizeof err) < 0) {
        buf_printf(out, "k8s.wait: %s", err);
        return;
    }
    k8s_act_target_name(&w.t, w.ns, what, sizeof what);
    buf_printf(out, "wait until %s of %s%s in %s is %s%s", w.field, w.t.name ? "" : "every one of ",
               what, w.site, w.equals ? w.equals : "spec.replicas", w.equals ? "" : " (all ready)");
}

/* The value at a dotted path (a number indexes an array), or NULL. */
static json_t *at_path(json_t *obj, const char *path)
{
    char seg[128];
    const char *p = path;
    json_t *cur = obj;
    while (cur && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || n >= sizeof seg)
            return NULL;
        memcpy(seg, p, n);
        seg[n] = '\0';
        if (json_is_array(cur)) {
            char *end;
            long i = strtol(seg, &end, 10);
            cur = *end || i < 0 ? NULL : json_array_get(cur, (size_t)i);
        } else {
            cur = json_object_get(cur, seg);
        }
        p += n;
        if (*p == '.')
            p++;
    }
    return cur;
}

static bool parse_ll(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return false;
    *out = n;
    return true;
}

/* Whether the object's field has the wanted value; `got` says what it has. */
static bool field_holds(const struct wait_state *w, const struct k8s_act_obj *o, char *got,
                        size_t glen, char *want, size_t wlen)
{
    long long wn = 0;
    bool numeric;
    if (w->equals) {
        snprintf(want, wlen, "%s", w->equals);
        numeric = parse_ll(w->equals, &wn);
    } else {
        wn = o->spec;
        snprintf(want, wlen, "%lld", wn);
        numeric = true;
    }
    if (strncmp(w->field, "status.", 7) == 0 && o->generation > 0 && o->observed < o->generation) {
        snprintf(got, glen, "(not observed yet: generation %lld, observed %lld)",
                 (long long)o->generation, (long long)o->observed);
        return false;
    }
    json_t *v = at_path(o->json, w->field);
    if (!v) {
        snprintf(got, glen, "%s", numeric ? "0" : "(absent)");
        return numeric && wn == 0;
    }
    switch (json_typeof(v)) {
    case JSON_INTEGER:
        snprintf(got, glen, "%lld", (long long)json_integer_value(v));
        return numeric ? json_integer_value(v) == wn : strcmp(got, want) == 0;
    case JSON_STRING:
        snprintf(got, glen, "%s", json_string_value(v));
        return strcmp(json_string_value(v), want) == 0;
    case JSON_TRUE:
    case JSON_FALSE:
        snprintf(got, glen, "%s", json_is_true(v) ? "true" : "false");
        return strcmp(got, want) == 0;
    case JSON_REAL: {
        char *end;
        double d = strtod(want, &end);
        snprintf(got, glen, "%g", json_real_value(v));
        return end != want && !*end && d == json_real_value(v);
    }
    default: {
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
        snprintf(got, glen, "%s", text ? text : "?");
        bool same = text && strcmp(text, want) == 0;
        free(text);
        return same;
    }
    }
}

/* Evaluates every object: 1 all hold, 0 not; fills result and w->missing. */
static int evaluate(struct wait_state *w, const struct k8s_act_obj *objs, size_t n,
                    struct buf *summary)
{
    struct rb_exec *x = w->base.x;
    json_t *list = json_array();
    size_t ok = 0;
    struct buf missing;
    buf_init(&missing, sizeof w->missing - 1);
    for (size_t i = 0; i < n; i++) {
        char got[128], want[128];
        bool h = field_holds(w, &objs[i], got, sizeof got, want, sizeof want);
        ok += h;
        json_array_append_new(list, json_pack("{s:s,s:s,s:s,s:s,s:b}", "kind",
                                              k8s_kind_name(objs[i].kind), "name", objs[i].name,
                                              "value", got, "want", want, "holds", h));
        struct buf *to = h ? summary : &missing;
        buf_printf(to, "%s%s %s/%s %s=%s", to->len ? ", " : "", k8s_kind_name(objs[i].kind), w->ns,
                   objs[i].name, w->field, got);
        if (!h)
            buf_printf(to, " (want %s)", want);
    }
    json_object_set_new(x->result, "objects", list);
    snprintf(w->missing, sizeof w->missing, "%s", missing.data ? missing.data : "");
    buf_free(&missing);
    return ok == n ? 1 : 0;
}

static void set_result(struct wait_state *w)
{
    struct rb_exec *x = w->base.x;
    json_object_set_new(x->result, "site", json_string(w->site));
    json_object_set_new(x->result, "namespace", json_string(w->ns));
    json_object_set_new(x->result, "field", json_string(w->field));
}

static void poll_once(struct wait_state *w);

static void on_poll_timer(uv_timer_t *t)
{
    struct k8s_act *a = t->data;
    poll_once((struct wait_state *)a);
}

static void on_polled(struct k8s_act_fetch *f, int status, const char *detail,
                      const struct k8s_act_obj *objs, size_t n, void *arg)
{
    (void)f;
    struct wait_state *w = arg;
    struct rb_exec *x = w->base.x;
    w->base.fetch = NULL;
    if (k8s_act_stopped(&w->base) || status == -ECANCELED)
        return;
    w->polls++;
    json_object_set_new(x->result, "polls", json_integer(w->polls));
    if (status < 0 && k8s_act_permanent(status)) {
        k8s_act_done(x, status, "Kubernetes API of %s: %s", w->site, detail);
        return;
    }
    if (status < 0) {
        /* A slow or failing API server may come back before the deadline. */
        w->last_error = status;
        snprintf(w->last_detail, sizeof w->last_detail, "%s", detail);
    } else {
        struct buf summary;
        buf_init(&summary, 400);
        int h = evaluate(w, objs, n, &summary);
        if (h == 1) {
            k8s_act_done(x, 0, "%s", summary.data ? summary.data : "");
            buf_free(&summary);
            return;
        }
        buf_free(&summary);
        w->last_error = 0;
    }
    uv_timer_start(&w->base.poll, on_poll_timer, w->poll_ms, 0);
}

static void poll_once(struct wait_state *w)
{
    int rc =
        k8s_act_fetch_start(w->base.site.k, w->ns, &w->t, 1, false, on_polled, w, &w->base.fetch);
    if (rc < 0)
        k8s_act_done(w->base.x, rc, "%s", k8s_client_error(w->base.site.k));
}

static void on_deadline(uv_timer_t *t)
{
    struct wait_state *w = t->data;
    struct rb_exec *x = w->base.x;
    uv_timer_stop(&w->base.poll);
    if (w->base.fetch)
        k8s_act_fetch_cancel(w->base.fetch);
    if (w->last_error)
        k8s_act_done(x, -ETIMEDOUT, "not after %u ms in %s; the last poll failed: %s", w->budget,
                     w->site, w->last_detail);
    else if (w->missing[0])
        k8s_act_done(x, -ETIMEDOUT, "not after %u ms in %s: %s", w->budget, w->site, w->missing);
    else
        k8s_act_done(x, -ETIMEDOUT, "no answer from the Kubernetes API of %s within %u ms", w->site,
                     w->budget);
}

static struct wait_state *start(struct rb_exec *x)
{
    struct wait_state tmp;
    char err[128];
    memset(&tmp, 0, sizeof tmp);
    if (setup(x, &tmp, err, sizeof err) < 0) {
        k8s_act_done(x, -EINVAL, "%s", err);
        return NULL;
    }
    struct wait_state *w = k8s_act_start(x, sizeof *w, tmp.site);
    if (!w)
        return NULL;
    setup(x, w, err, sizeof err); /* the same again, into the state */
    set_result(w);
    return w;
}

static void run(struct rb_exec *x)
{
    struct wait_state *w = start(x);
    if (!w)
        return;
    w->budget = k8s_act_budget_ms(x);
    w->poll_ms = w->budget / 20 < K8S_DEFAULT_POLL_MS ? w->budget / 20 + 1 : K8S_DEFAULT_POLL_MS;
    uv_timer_start(&w->base.deadline, on_deadline, w->budget, 0);
    poll_once(w);
}

static void on_checked(struct k8s_act_fetch *f, int status, const char *detail,
                       const struct k8s_act_obj *objs, size_t n, void *arg)
{
    (void)f;
    struct wait_state *w = arg;
    struct rb_exec *x = w->base.x;
    w->base.fetch = NULL;
    if (k8s_act_stopped(&w->base))
        return;
    if (status < 0) {
        k8s_act_done(x, status, "cannot tell: Kubernetes API of %s: %s", w->site, detail);
        return;
    }
    struct buf summary;
    buf_init(&summary, 400);
    if (evaluate(w, objs, n, &summary) == 1)
        k8s_act_done(x, 1, "%s", summary.data ? summary.data : "");
    else
        k8s_act_done(x, 0, "not yet: %s", w->missing);
    buf_free(&summary);
}

static void on_ready(struct k8s_act_fetch *f, int status, const char *detail,
                     const struct k8s_act_obj *objs, size_t n, void *arg)
{
    (void)f;
    (void)objs;
    struct wait_state *w = arg;
    struct rb_exec *x = w->base.x;
    w->base.fetch = NULL;
    if (k8s_act_stopped(&w->base))
        return;
    char what[K8S_NAME_MAX + 160];
    k8s_act_target_name(&w->t, w->ns, what, sizeof what);
    if (status < 0)
        k8s_act_done(x, status, "Kubernetes API of %s: %s", w->site, detail);
    else
        k8s_act_done(x, 0, "the Kubernetes API of %s answers; %s: %zu object(s)", w->site, what, n);
}

static void fetch(struct rb_exec *x, k8s_act_fetch_cb cb)
{
    struct wait_state *w = start(x);
    if (!w)
        return;
    int rc = k8s_act_fetch_start(w->base.site.k, w->ns, &w->t, 1, false, cb, w, &w->base.fetch);
    if (rc < 0)
        k8s_act_done(x, rc, "%s", k8s_client_error(w->base.site.k));
}

/* Holds now: one read, nothing waited for. */
static void check(struct rb_exec *x)
{
    fetch(x, on_checked);
}

/* The credentials work and the object exists (the selector matches). */
static void ready(struct rb_exec *x)
{
    fetch(x, on_ready);
}

const struct rb_action_ops rb_action_k8s_wait = {
    .name = "k8s.wait",
    .summary = "wait for a Kubernetes object's status",
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
