/* The Kubernetes actions' shared parts: the site's client, the budget, the
 * fetch of named objects, and the state's cancel/release. */
#include "runbooks/actions/k8s_common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/http_client.h"
#include "orchestrator/config.h"

#define DETAIL_MAX 1024

uint32_t k8s_act_budget_ms(const struct rb_exec *x)
{
    int64_t t =
        x->step && x->step->timeout_ms > 0 ? x->step->timeout_ms : x->action->default_timeout_ms;
    int64_t margin = t / 10 < 1000 ? t / 10 : 1000;
    int64_t b = t - margin;
    if (b < 1)
        return 1;
    return b > UINT32_MAX ? UINT32_MAX : (uint32_t)b;
}

void k8s_act_done(struct rb_exec *x, int status, const char *fmt, ...)
{
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    size_t max = sizeof x->detail;
    if (strlen(text) >= max) {
        size_t cut = max - 4;
        while (cut > 0 && ((unsigned char)text[cut] & 0xC0) == 0x80)
            cut--;
        memcpy(text + cut, "...", 4);
    }
    rb_exec_done(x, status, "%s", text);
}

static int connect_site(struct rb_exec *x, const char *name, struct k8s_act_site *s, char *err,
                        size_t len)
{
    const struct config *cfg = x->env->cfg;
    const struct cfg_site *site = cfg ? config_site(cfg, name) : NULL;
    if (!site) {
        snprintf(err, len, "'%s' is not a configured site", name ? name : "");
        return -EINVAL;
    }
    if (!site->k8s.set) {
        snprintf(err, len, "site '%s' has no 'kubernetes' section", name);
        return -EINVAL;
    }
    struct http_client *http = x->env->http;
    if (!http) {
        int rc = http_client_new(x->env->loop, &s->own_http);
        if (rc < 0) {
            snprintf(err, len, "cannot set up an HTTP client: %s", strerror(-rc));
            return rc;
        }
        http = s->own_http;
    }
    const struct cfg_k8s *kc = &site->k8s;
    uint32_t budget = k8s_act_budget_ms(x);
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
    char why[K8S_DETAIL_MAX];
    int rc = k8s_client_new(x->env->loop, http, &kcfg, &s->k, why, sizeof why);
    if (rc < 0)
        snprintf(err, len, "Kubernetes credentials of site %s: %s", name, why);
    return rc;
}

void *k8s_act_start(struct rb_exec *x, size_t size, const char *site)
{
    char err[K8S_DETAIL_MAX + 64];
    struct k8s_act *a = calloc(1, size);
    if (!a) {
        rb_exec_done(x, -ENOMEM, "out of memory");
        return NULL;
    }
    a->x = x;
    x->state = a;
    uv_timer_init(x->env->loop, &a->poll);
    uv_timer_init(x->env->loop, &a->deadline);
    a->poll.data = a;
    a->deadline.data = a;
    int rc = connect_site(x, site, &a->site, err, sizeof err);
    if (rc < 0) {
        k8s_act_done(x, rc, "%s", err);
        return NULL;
    }
    return a;
}

static void on_http_closed(void *arg)
{
    struct k8s_act *a = arg;
    struct rb_exec *x = a->x;
    free(a);
    x->state = NULL;
    rb_exec_released(x);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct k8s_act *a = h->data;
    if (--a->closing > 0)
        return;
    k8s_client_free(a->site.k);
    a->site.k = NULL;
    if (a->site.own_http) {
        http_client_close(a->site.own_http, on_http_closed, a);
        return;
    }
    on_http_closed(a);
}

/* Nothing is in flight any more: close the timers, then the client. */
static void teardown(struct k8s_act *a)
{
    if (a->closing)
        return;
    a->closing = 2;
    uv_close((uv_handle_t *)&a->poll, on_timer_closed);
    uv_close((uv_handle_t *)&a->deadline, on_timer_closed);
}

bool k8s_act_stopped(struct k8s_act *a)
{
    if (a->releasing) {
        if (!a->fetch && !a->scale)
            teardown(a);
        return true;
    }
    /* Cancelled, or already ended (k8s.wait's deadline): a late result
     * changes nothing. */
    return a->x->cancelled || a->x->finished;
}

void k8s_act_cancel(struct rb_exec *x)
{
    struct k8s_act *a = x->state;
    if (!a)
        return;
    uv_timer_stop(&a->poll);
    uv_timer_stop(&a->deadline);
    if (a->fetch)
        k8s_act_fetch_cancel(a->fetch);
    if (a->scale)
        k8s_scale_cancel(a->scale);
}

void k8s_act_release(struct rb_exec *x)
{
    struct k8s_act *a = x->state;
    if (!a) {
        rb_exec_released(x);
        return;
    }
    a->releasing = true;
    k8s_act_cancel(x);
    /* What is still in flight ends with -ECANCELED; its callback goes on
     * with the release (k8s_act_stopped). */
    if (!a->fetch && !a->scale)
        teardown(a);
}

/* ---- fetch ---- */

struct k8s_act_fetch {
    struct k8s_client *k;
    char ns[64];
    const struct k8s_scale_target *targets;
    size_t n_targets, next;
    bool keep_going;
    struct k8s_request *req;
    struct k8s_act_obj *objs;
    size_t n_objs;
    int status;
    struct buf detail;
    k8s_act_fetch_cb cb;
    void *arg;
};

void k8s_act_target_name(const struct k8s_scale_target *t, const char *ns, char *out, size_t len)
{
    if (t->name)
        snprintf(out, len, "%s %s/%s", k8s_kind_name(t->kind), ns, t->name);
    else
        snprintf(out, len, "%ss in %s matching %s", k8s_kind_name(t->kind), ns, t->selector);
}

bool k8s_act_permanent(int status)
{
    switch (status) {
    case -EACCES:
    case -EPERM:
    case -ENOENT:
    case -EINVAL:
    case -EKEYREJECTED:
    case -ECANCELED:
        return true;
    default:
        return false;
    }
}

static void fetch_free(struct k8s_act_fetch *f)
{
    for (size_t i = 0; i < f->n_objs; i++)
        json_decref(f->objs[i].json);
    free(f->objs);
    buf_free(&f->detail);
    free(f);
}

static void fetch_end(struct k8s_act_fetch *f)
{
    f->cb(f, f->status, f->detail.data ? f->detail.data : "", f->objs, f->n_objs, f->arg);
    fetch_free(f);
}

static void fetch_fail(struct k8s_act_fetch *f, int status, const char *why)
{
    if (!f->status)
        f->status = status;
    buf_printf(&f->detail, "%s%s", f->detail.len ? "; " : "", why);
}

static int fetch_next(struct k8s_act_fetch *f);

static int add_obj(struct k8s_act_fetch *f, const struct k8s_object *o)
{
    struct k8s_act_obj *n = realloc(f->objs, (f->n_objs + 1) * sizeof *n);
    if (!n)
        return -ENOMEM;
    f->objs = n;
    struct k8s_act_obj *ob = &f->objs[f->n_objs++];
    memset(ob, 0, sizeof *ob);
    ob->kind = o->kind;
    ob->target = f->next - 1;
    snprintf(ob->name, sizeof ob->name, "%s", o->name ? o->name : "");
    ob->spec = o->spec_replicas;
    ob->ready = o->ready_replicas;
    ob->pods = o->replicas;
    ob->generation = o->generation;
    ob->observed = o->observed_generation;
    ob->json = json_incref(o->json);
    return 0;
}

static void on_fetched(struct k8s_request *req, const struct k8s_result *r, void *arg)
{
    (void)req;
    struct k8s_act_fetch *f = arg;
    const struct k8s_scale_target *t = &f->targets[f->next - 1];
    f->req = NULL;
    if (r->status == -ECANCELED) {
        f->status = -ECANCELED;
        buf_reset(&f->detail);
        buf_printf(&f->detail, "cancelled");
        fetch_end(f);
        return;
    }
    if (r->status < 0) {
        fetch_fail(f, r->status, r->detail);
        if (r->status != -ENOENT || !f->keep_going) {
            fetch_end(f);
            return;
        }
    } else if (t->selector && r->n_objects == 0) {
        char what[K8S_NAME_MAX + 128];
        snprintf(what, sizeof what, "no %s in namespace %s matches %s", k8s_kind_name(t->kind),
                 f->ns, t->selector);
        fetch_fail(f, -ENOENT, what);
        if (!f->keep_going) {
            fetch_end(f);
            return;
        }
    } else {
        for (size_t i = 0; i < r->n_objects; i++) {
            if (add_obj(f, &r->objects[i]) < 0) {
                fetch_fail(f, -ENOMEM, "out of memory");
                fetch_end(f);
                return;
            }
        }
    }
    if (f->next >= f->n_targets) {
        fetch_end(f);
        return;
    }
    int rc = fetch_next(f);
    if (rc < 0) {
        fetch_fail(f, rc, k8s_client_error(f->k));
        fetch_end(f);
    }
}

static int fetch_next(struct k8s_act_fetch *f)
{
    const struct k8s_scale_target *t = &f->targets[f->next++];
    if (t->name)
        return k8s_get(f->k, t->kind, f->ns, t->name, on_fetched, f, &f->req);
    return k8s_list(f->k, t->kind, f->ns, t->selector, on_fetched, f, &f->req);
}

int k8s_act_fetch_start(struct k8s_client *k, const char *ns, const struct k8s_scale_target *t,
                        size_t n, bool keep_going, k8s_act_fetch_cb cb, void *arg,
                        struct k8s_act_fetch **out)
{
    *out = NULL;
    if (!n)
        return -EINVAL;
    struct k8s_act_fetch *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->k = k;
    snprintf(f->ns, sizeof f->ns, "%s", ns ? ns : k8s_client_namespace(k));
    f->targets = t;
    f->n_targets = n;
    f->keep_going = keep_going;
    f->cb = cb;
    f->arg = arg;
    buf_init(&f->detail, DETAIL_MAX);
    int rc = fetch_next(f);
    if (rc < 0) {
        fetch_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

void k8s_act_fetch_cancel(struct k8s_act_fetch *f)
{
    if (f && f->req)
        k8s_request_cancel(f->req);
}
