/* Action `probe.wait`: wait until a probe has been in a state for a while
 * (e.g. Synapse healthy through the public name for 10 s). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/loop.h"
#include "lib/units.h"
#include "probes/probe.h"
#include "runbooks/actions/actions.h"

#define POLL_MS 100

static const struct rb_param_spec params[] = {
    { "site", RB_P_STRING, true, "the probe's site" },
    { "probe", RB_P_STRING, true, "the probe's name" },
    { "state", RB_P_STRING, false, "up (default) or down" },
    { "for", RB_P_DURATION, false, "how long the state must hold (default 0)" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    static const char *const states[] = { "up", "down", NULL };
    act_need_enum(v, "state", states);
    act_need_site(v, "site");
    const char *site = json_string_value(json_object_get(v->params, "site"));
    const char *name = json_string_value(json_object_get(v->params, "probe"));
    json_t *probes = json_object_get(v->ctx, "probes");
    for (size_t i = 0; i < json_array_size(probes); i++) {
        json_t *p = json_array_get(probes, i);
        const char *ps = json_string_value(json_object_get(p, "site"));
        const char *pn = json_string_value(json_object_get(p, "name"));
        if (ps && pn && site && name && !strcmp(ps, site) && !strcmp(pn, name))
            return;
    }
    rb_param_error(v, "probe", "no probe '%s' is configured for site '%s'", name ? name : "?",
                   site ? site : "?");
}

struct pw_state {
    uv_timer_t timer;
    int64_t since;   /* monotonic ms the wanted state was first seen, 0 = not */
    int64_t started; /* only results after this count */
};

static bool want_up(struct rb_exec *x)
{
    const char *s = json_string_value(json_object_get(x->params, "state"));
    return !s || strcmp(s, "down") != 0;
}

static const struct probe *find(struct rb_exec *x)
{
    if (!x->env->probe)
        return NULL;
    return x->env->probe(x->env, json_string_value(json_object_get(x->params, "site")),
                         json_string_value(json_object_get(x->params, "probe")));
}

static void describe(struct rb_exec *x, struct buf *out)
{
    char d[32];
    units_format_duration(json_integer_value(json_object_get(x->params, "for")), d, sizeof d);
    const struct probe *p = find(x);
    buf_printf(out, "wait until probe %s of %s is %s for %s",
               json_string_value(json_object_get(x->params, "probe")),
               json_string_value(json_object_get(x->params, "site")), want_up(x) ? "up" : "down",
               d);
    if (p && p->last.done)
        buf_printf(out, " (now %s: %s)", p->last.ok ? "up" : "down", probe_detail(p));
}

/* A result counts only if it is recent: two intervals plus the timeout. */
static bool fresh(const struct probe *p, int64_t now)
{
    return p->last.done && now - p->last.at_ms <= 2 * p->cfg->interval_ms + p->cfg->timeout_ms;
}

static void check(struct rb_exec *x)
{
    const struct probe *p = find(x);
    if (!p) {
        rb_exec_done(x, -ENODATA, "no probe results here (no daemon)");
        return;
    }
    int64_t now = loop_now_ms();
    if (!fresh(p, now)) {
        rb_exec_done(x, 0, "no recent result");
        return;
    }
    /* Already so, and for long enough (as far as results show). */
    int64_t held = now - p->state_since_ms;
    int64_t want = json_integer_value(json_object_get(x->params, "for"));
    bool ok = p->last.ok == want_up(x) && held >= want;
    rb_exec_done(x, ok ? 1 : 0, "%s for %lld ms: %s", p->last.ok ? "up" : "down", (long long)held,
                 probe_detail(p));
}

static void on_poll(uv_timer_t *t)
{
    struct rb_exec *x = t->data;
    struct pw_state *st = x->state;
    const struct probe *p = find(x);
    int64_t now = loop_now_ms();
    if (!p) {
        rb_exec_done(x, -ENODATA, "no probe results here (no daemon)");
        return;
    }
    if (!fresh(p, now) || p->last.at_ms < st->started)
        return;
    if (p->last.ok != want_up(x)) {
        st->since = 0;
        return;
    }
    if (!st->since)
        st->since = p->last.at_ms;
    if (now - st->since >= json_integer_value(json_object_get(x->params, "for")))
        rb_exec_done(x, 0, "%s for %lld ms: %s", p->last.ok ? "up" : "down",
                     (long long)(now - st->since), probe_detail(p));
}

static void run(struct rb_exec *x)
{
    struct pw_state *st = calloc(1, sizeof *st);
    if (!st) {
        rb_exec_done(x, -ENOMEM, "out of memory");
        return;
    }
    x->state = st;
    st->started = loop_now_ms();
    uv_timer_init(x->env->loop, &st->timer);
    st->timer.data = x;
    uv_timer_start(&st->timer, on_poll, 0, POLL_MS);
}

static void on_closed(uv_handle_t *h)
{
    struct rb_exec *x = h->data;
    free(x->state);
    x->state = NULL;
    rb_exec_released(x);
}

static void release(struct rb_exec *x)
{
    struct pw_state *st = x->state;
    if (!st) {
        rb_exec_released(x);
        return;
    }
    uv_close((uv_handle_t *)&st->timer, on_closed);
}

const struct rb_action_ops rb_action_probe_wait = {
    .name = "probe.wait",
    .summary = "wait until a probe is in a state for a duration",
    .params = params,
    .default_timeout_ms = 120000,
    .validate = validate,
    .describe = describe,
    .check = check,
    .run = run,
    .release = release,
};
