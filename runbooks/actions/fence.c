/* Action `fence`: fence a site by trying its fencing methods in order; the
 * step succeeds only when one method's fence is verified. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fencing/fence.h"
#include "lib/buf.h"
#include "lib/redfish_client.h"
#include "orchestrator/config.h"
#include "runbooks/actions/actions.h"

static const struct rb_param_spec params[] = {
    { "site", RB_P_STRING, true, "the site to fence" },
    { "methods", RB_P_STRING_LIST, true, "fencing methods (names from `fencing`), in order" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    act_need_site(v, "site");
    const char *site = json_string_value(json_object_get(v->params, "site"));
    json_t *methods = json_object_get(v->params, "methods");
    json_t *fencing = json_object_get(v->ctx, "fencing");
    if (json_array_size(methods) == 0)
        rb_param_error(v, "methods", "lists no fencing method");
    for (size_t i = 0; i < json_array_size(methods); i++) {
        const char *m = json_string_value(json_array_get(methods, i));
        json_t *f = json_object_get(fencing, m);
        if (!f) {
            rb_param_error(v, "methods", "'%s' is not a configured fencing method", m);
            continue;
        }
        const char *fs = json_string_value(json_object_get(f, "site"));
        if (site && fs && strcmp(site, fs) != 0)
            rb_param_error(v, "methods", "fencing method '%s' fences site '%s', not '%s'", m, fs,
                           site);
    }
}

/* Readiness: every Redfish BMC of the step answers with our credentials
 * (an unreachable BMC or a rotated password is found before the disaster). */
struct fence_ready {
    int kind; /* 1 */
    size_t next;
    struct redfish_client *rc;
    struct redfish_request *req;
    struct buf problems;
    bool releasing; /* release waits for the request in flight */
};

static void ready_free(struct rb_exec *x);

/* One fence step: methods tried in order until one is verified. */
struct fence_run {
    int kind; /* 0: a fence run; 1: a readiness check (struct fence_ready) */
    size_t next;
    struct fence_op *op;
    uv_timer_t timer; /* the lease wait */
    bool timer_open;
    struct buf tried; /* what failed, for the final detail */
};

static const char *site_of(struct rb_exec *x)
{
    return json_string_value(json_object_get(x->params, "site"));
}

static void describe(struct rb_exec *x, struct buf *out)
{
    json_t *m = json_object_get(x->params, "methods");
    buf_printf(out, "fence %s with the first verified of:", site_of(x));
    for (size_t i = 0; i < json_array_size(m); i++) {
        const char *name = json_string_value(json_array_get(m, i));
        const struct cfg_fence *f = config_fence(x->env->cfg, name);
        buf_printf(out, "%s %s (%s)", i ? "," : "", name,
                   f ? config_fence_method_name(f->method) : "?");
    }
}

static void try_next(struct rb_exec *x);

/* Success, naming what was tried before (the report shows the whole path). */
static void fenced(struct rb_exec *x, const char *how)
{
    struct fence_run *fr = x->state;
    if (fr->tried.len) {
        json_object_set_new(x->result, "tried_before", json_string(fr->tried.data));
        rb_exec_done(x, 0, "%s (after: %s)", how, fr->tried.data);
    } else {
        rb_exec_done(x, 0, "%s", how);
    }
}

static void failed(struct rb_exec *x, const char *name, const char *why)
{
    struct fence_run *fr = x->state;
    buf_printf(&fr->tried, "%s%s: %s", fr->tried.len ? "; " : "", name, why);
    try_next(x);
}

static void on_fence(struct fence_op *op, int status, const char *detail, void *arg)
{
    struct rb_exec *x = arg;
    struct fence_run *fr = x->state;
    fr->op = NULL;
    if (status == 0) {
        json_object_set_new(x->result, "fenced_by", json_string(op->fence->name));
        json_object_set_new(x->result, "method",
                            json_string(config_fence_method_name(op->fence->method)));
        char how[700];
        snprintf(how, sizeof how, "fenced by %s (%s): %s", op->fence->name,
                 config_fence_method_name(op->fence->method), detail);
        fenced(x, how);
        return;
    }
    failed(x, op->fence->name, detail);
}

static void on_lease_waited(uv_timer_t *t)
{
    struct rb_exec *x = t->data;
    json_object_set_new(x->result, "method", json_string("lease"));
    char how[200];
    snprintf(how, sizeof how, "the lease of %s has surely expired (waited for it)", site_of(x));
    fenced(x, how);
}

static void on_confirm(struct rb_exec *x, bool approved, const char *who, void *arg)
{
    const char *name = arg;
    if (approved) {
        json_object_set_new(x->result, "method", json_string("manual"));
        json_object_set_new(x->result, "confirmed_by", json_string(who));
        char how[200];
        snprintf(how, sizeof how, "an operator (%s) confirmed that %s is fenced", who, site_of(x));
        fenced(x, how);
        return;
    }
    char why[128];
    snprintf(why, sizeof why, "not confirmed (%s)", who);
    failed(x, name, why);
}

static void try_next(struct rb_exec *x)
{
    struct fence_run *fr = x->state;
    json_t *methods = json_object_get(x->params, "methods");
    if (x->cancelled)
        return;
    if (fr->next >= json_array_size(methods)) {
        rb_exec_done(x, -EIO, "no fencing method was verified: %s",
                     fr->tried.data ? fr->tried.data : "none tried");
        return;
    }
    const char *name = json_string_value(json_array_get(methods, fr->next++));
    const struct cfg_fence *f = config_fence(x->env->cfg, name);
    if (!f) {
        failed(x, name, "not configured");
        return;
    }
    switch (f->method) {
    case FENCE_LEASE: {
        int64_t wait = x->env->lease_wait_ms ? x->env->lease_wait_ms(x->env) : -1;
        if (wait < 0) {
            failed(x, name, "this host cannot tell when the lease expires (no quorum here)");
            return;
        }
        if (wait == 0) {
            json_object_set_new(x->result, "method", json_string("lease"));
            char how[200];
            snprintf(how, sizeof how, "the lease of %s has surely expired", site_of(x));
            fenced(x, how);
            return;
        }
        if (!fr->timer_open) {
            uv_timer_init(x->env->loop, &fr->timer);
            fr->timer.data = x;
            fr->timer_open = true;
        }
        uv_timer_start(&fr->timer, on_lease_waited, (uint64_t)wait, 0);
        return;
    }
    case FENCE_MANUAL: {
        if (!x->env->confirm) {
            failed(x, name, "nobody to ask here");
            return;
        }
        char q[400];
        snprintf(q, sizeof q,
                 "Confirm that %s can no longer accept writes (powered off, cut off, or its "
                 "PostgreSQL stopped)",
                 site_of(x));
        x->env->confirm(x->env, x, q, on_confirm, (void *)name);
        return;
    }
    default: {
        int r =
            fence_start(x->env->loop, x->env->cfg, f, false, x->env->http, on_fence, x, &fr->op);
        if (r < 0)
            failed(x, name,
                   r == -ENOTSUP ? "this fencing method is not implemented yet" : strerror(-r));
        return;
    }
    }
}

static void run(struct rb_exec *x)
{
    struct fence_run *fr = calloc(1, sizeof *fr);
    if (!fr) {
        rb_exec_done(x, -ENOMEM, "out of memory");
        return;
    }
    buf_init(&fr->tried, 2048);
    x->state = fr;
    try_next(x);
}

static void cancel(struct rb_exec *x)
{
    struct fence_run *fr = x->state;
    if (!fr || fr->kind == 1)
        return;
    if (fr->op) {
        fence_forget(fr->op);
        fr->op = NULL;
    }
    if (fr->timer_open)
        uv_timer_stop(&fr->timer);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct rb_exec *x = h->data;
    struct fence_run *fr = x->state;
    buf_free(&fr->tried);
    free(fr);
    x->state = NULL;
    rb_exec_released(x);
}

static void release(struct rb_exec *x)
{
    struct fence_run *fr = x->state;
    if (!fr) {
        rb_exec_released(x);
        return;
    }
    if (fr->kind == 1) {
        struct fence_ready *rdy = x->state;
        if (rdy->req) {
            rdy->releasing = true;
            redfish_request_cancel(rdy->req); /* on_bmc frees */
            return;
        }
        ready_free(x);
        return;
    }
    cancel(x);
    if (fr->timer_open) {
        uv_close((uv_handle_t *)&fr->timer, on_timer_closed);
        return;
    }
    buf_free(&fr->tried);
    free(fr);
    x->state = NULL;
    rb_exec_released(x);
}

static void ready_next(struct rb_exec *x);

static void ready_free(struct rb_exec *x)
{
    struct fence_ready *fr = x->state;
    if (fr->rc)
        redfish_client_free(fr->rc);
    buf_free(&fr->problems);
    free(fr);
    x->state = NULL;
    rb_exec_released(x);
}

static void on_bmc(struct redfish_request *req, const struct redfish_result *r, void *arg)
{
    (void)req;
    struct rb_exec *x = arg;
    struct fence_ready *fr = x->state;
    fr->req = NULL;
    if (fr->releasing) {
        ready_free(x);
        return;
    }
    if (r->status < 0)
        buf_printf(
            &fr->problems, "%sBMC %s: %s", fr->problems.len ? "; " : "",
            json_string_value(json_array_get(json_object_get(x->params, "methods"), fr->next - 1)),
            r->detail);
    redfish_client_free(fr->rc);
    fr->rc = NULL;
    ready_next(x);
}

static void ready_next(struct rb_exec *x)
{
    struct fence_ready *fr = x->state;
    json_t *methods = json_object_get(x->params, "methods");
    while (fr->next < json_array_size(methods)) {
        const struct cfg_fence *f =
            config_fence(x->env->cfg, json_string_value(json_array_get(methods, fr->next++)));
        if (!f || f->method != FENCE_REDFISH || !x->env->http)
            continue;
        struct redfish_config rc = { .url = f->url,
                                     .credentials_file = f->credentials_file,
                                     .ca_file = f->ca_file,
                                     .timeout_ms = 5000 };
        char err[256];
        if (redfish_client_new(x->env->http, &rc, &fr->rc, err, sizeof err) < 0) {
            buf_printf(&fr->problems, "%s%s: %s", fr->problems.len ? "; " : "", f->name, err);
            continue;
        }
        if (redfish_get_system(fr->rc, f->system, on_bmc, x, &fr->req) == 0)
            return;
        redfish_client_free(fr->rc);
        fr->rc = NULL;
    }
    if (fr->problems.len)
        rb_exec_done(x, -EHOSTUNREACH, "%s", fr->problems.data);
    else
        rb_exec_done(x, 0, "every BMC answers");
}

static void ready(struct rb_exec *x)
{
    struct fence_ready *fr = calloc(1, sizeof *fr);
    if (!fr) {
        rb_exec_done(x, -ENOMEM, "out of memory");
        return;
    }
    fr->kind = 1;
    buf_init(&fr->problems, 2048);
    x->state = fr;
    ready_next(x);
}

/* Whether the site is already fenced needs the same independent
 * observation a fence ends with; the step runs its methods again (each is
 * idempotent) rather than trust a guess. */
static void check(struct rb_exec *x)
{
    rb_exec_done(x, 0, "a fence is verified each time it is walked");
}

const struct rb_action_ops rb_action_fence = {
    .name = "fence",
    .summary = "fence a site; succeed only on a verified fence",
    .params = params,
    .default_timeout_ms = 300000,
    .validate = validate,
    .describe = describe,
    .check = check,
    .run = run,
    .ready = ready,
    .self_verifying = true,
    .cancel = cancel,
    .release = release,
};
