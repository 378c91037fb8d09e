/* The registry of actions and helpers shared by their validators. */
#include "runbooks/action.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "runbooks/actions/actions.h"

static const struct rb_action_ops *const registry[] = {
    &rb_action_wait,
    &rb_action_exec,
    &rb_action_notify,
    &rb_action_probe_wait,
    &rb_action_fence,
    &rb_action_pg_promote,
    &rb_action_pg_follow,
    &rb_action_pg_rewind,
    &rb_action_pg_demote,
    &rb_action_dns_update,
    &rb_action_k8s_scale,
    &rb_action_k8s_wait,
    NULL,
};

const struct rb_action_ops *const *rb_action_all(void)
{
    return registry;
}

const struct rb_action_ops *rb_action_find(const char *name)
{
    for (size_t i = 0; registry[i]; i++) {
        if (strcmp(registry[i]->name, name) == 0)
            return registry[i];
    }
    return NULL;
}

void rb_param_error(const struct rb_validate_ctx *v, const char *param, const char *fmt, ...)
{
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const struct rb_step *s = v->step;
    int line = s->line, col = s->col;
    for (size_t i = 0; param && i < s->n_params; i++) {
        if (strcmp(s->params[i].name, param) == 0) {
            line = s->params[i].line;
            col = s->params[i].col;
        }
    }
    diag_add(v->d, s->file, line, col, "step '%s': %s", s->id ? s->id : "?", msg);
}

json_t *rb_ctx_get(json_t *ctx, const char *path)
{
    char seg[128];
    const char *p = path;
    json_t *cur = ctx;
    while (cur && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || n >= sizeof seg)
            return NULL;
        memcpy(seg, p, n);
        seg[n] = '\0';
        cur = json_object_get(cur, seg);
        p += n;
        if (*p == '.')
            p++;
    }
    return cur;
}
