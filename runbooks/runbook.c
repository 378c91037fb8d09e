/* Runbook loading, validation and parameter resolution. */
#include "runbooks/runbook.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/suggest.h"
#include "lib/units.h"
#include "lib/yaml_doc.h"
#include "lib/yaml_read.h"
#include "runbooks/action.h"

#define RB_REF_MAX_DEPTH 8    /* path segments in one reference */
#define RB_VALUE_MAX     4096 /* an interpolated string */

static const char *const approve_names[] = { "none", "required", "always", NULL };
static const char *const on_failure_names[] = { "stop", "continue", "ask", NULL };

const char *rb_approve_name(enum rb_approve a)
{
    return approve_names[a];
}

const char *rb_on_failure_name(enum rb_on_failure f)
{
    return on_failure_names[f];
}

static json_t *ynode_to_json(const struct ynode *n)
{
    switch (n->type) {
    case YNODE_SCALAR:
        return ynode_is_null(n) ? json_null() : json_stringn(n->str, n->len);
    case YNODE_SEQ: {
        json_t *a = json_array();
        for (size_t i = 0; i < n->n; i++)
            json_array_append_new(a, ynode_to_json(n->items[i]));
        return a;
    }
    case YNODE_MAP: {
        json_t *o = json_object();
        for (size_t i = 0; i < n->n; i++)
            json_object_set_new(o, n->pairs[i].key->str, ynode_to_json(n->pairs[i].value));
        return o;
    }
    }
    return json_null();
}

static void read_step(struct runbook *rb, struct ynode *n, struct diag *d)
{
    static const char *const keys[] = { "id",      "action",  "description", "approve",
                                        "timeout", "retries", "retry_delay", "on_failure",
                                        "params",  NULL };
    if (!yread_expect(d, n, YNODE_MAP, "a step"))
        return;
    if (rb->n_steps >= RB_MAX_STEPS) {
        yread_error(d, n, "a runbook has at most %d steps", RB_MAX_STEPS);
        return;
    }
    struct rb_step *ns = realloc(rb->steps, (rb->n_steps + 1) * sizeof *ns);
    if (!ns)
        return;
    rb->steps = ns;
    struct rb_step *s = &rb->steps[rb->n_steps++];
    memset(s, 0, sizeof *s);
    s->file = rb->path;
    s->line = n->line;
    s->col = n->col;
    s->retry_delay_ms = 2000;
    struct ynode *idn = ynode_get(n, "id");
    /* yread_str returns -1 for a value that is not a scalar, and reports
     * it: then there is no id (nor action, below) to look at. */
    int rc = yread_str(d, n, "id", &s->id);
    if (rc == 0) {
        yread_error(d, n, "step: missing required key 'id'");
    } else if (rc > 0) {
        bool ok = strlen(s->id) <= 63;
        for (const char *p = s->id; *p && ok; p++)
            ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_';
        if (!ok || !*s->id)
            yread_error(d, idn, "step id '%s': use 1 to 63 lowercase letters, digits, '-', '_'",
                        s->id);
        for (size_t i = 0; i + 1 < rb->n_steps; i++) {
            if (rb->steps[i].id && strcmp(rb->steps[i].id, s->id) == 0)
                yread_error(d, idn, "duplicate step id '%s' (first at line %d)", s->id,
                            rb->steps[i].line);
        }
    }
    struct ynode *an = ynode_get(n, "action");
    rc = yread_str(d, n, "action", &s->action_name);
    if (rc == 0) {
        yread_error(d, n, "step: missing required key 'action'");
    } else if (rc > 0) {
        s->action = rb_action_find(s->action_name);
        if (!s->action) {
            const struct rb_action_ops *const *all = rb_action_all();
            const char *names[64];
            size_t k = 0;
            for (; k < 64 && all[k]; k++)
                names[k] = all[k]->name;
            const char *sug = suggest_closest(s->action_name, names, k);
            if (sug)
                yread_error(d, an, "unknown action '%s' (did you mean '%s'?)", s->action_name, sug);
            else
                yread_error(d, an, "unknown action '%s'", s->action_name);
        }
    }
    yread_str(d, n, "description", &s->description);
    int v = 0;
    if (yread_enum(d, n, "approve", approve_names, &v) > 0)
        s->approve = (enum rb_approve)v;
    s->timeout_ms = s->action ? s->action->default_timeout_ms : 60000;
    yread_duration(d, n, "timeout", 100, 86400000, &s->timeout_ms);
    int64_t retries = 0;
    if (yread_int(d, n, "retries", 0, 100, &retries) > 0)
        s->retries = (int)retries;
    yread_duration(d, n, "retry_delay", 0, 3600000, &s->retry_delay_ms);
    if (yread_enum(d, n, "on_failure", on_failure_names, &v) > 0)
        s->on_failure = (enum rb_on_failure)v;
    struct ynode *pn = ynode_get(n, "params");
    if (pn && !ynode_is_null(pn) && yread_expect(d, pn, YNODE_MAP, "'params'")) {
        if (pn->n > RB_MAX_PARAMS) {
            yread_error(d, pn, "a step has at most %d parameters", RB_MAX_PARAMS);
        } else {
            s->params = calloc(pn->n ? pn->n : 1, sizeof *s->params);
            for (size_t i = 0; s->params && i < pn->n; i++) {
                struct rb_param *p = &s->params[s->n_params++];
                p->name = strdup(pn->pairs[i].key->str);
                p->raw = ynode_to_json(pn->pairs[i].value);
                p->line = pn->pairs[i].value->line;
                p->col = pn->pairs[i].value->col;
            }
        }
        /* Unknown parameter names, against the action's declaration. */
        if (s->action) {
            const char *names[RB_MAX_PARAMS + 1];
            size_t k = 0;
            for (; s->action->params && k < RB_MAX_PARAMS && s->action->params[k].name; k++)
                names[k] = s->action->params[k].name;
            names[k] = NULL;
            for (size_t i = 0; i < pn->n; i++) {
                const struct ynode *kn = pn->pairs[i].key;
                bool known = false;
                for (size_t j = 0; j < k && !known; j++)
                    known = strcmp(names[j], kn->str) == 0;
                if (known)
                    continue;
                const char *sug = suggest_closest(kn->str, names, k);
                if (sug)
                    yread_error(d, kn, "action '%s' has no parameter '%s' (did you mean '%s'?)",
                                s->action->name, kn->str, sug);
                else
                    yread_error(d, kn, "action '%s' has no parameter '%s'", s->action->name,
                                kn->str);
            }
        }
    }
    yread_unknown_keys(d, n, keys);
}

json_t *rb_context(json_t *config_ctx, const char *run_id, int64_t epoch, const char *from,
                   const char *to, const char *runbook)
{
    json_t *ctx = json_copy(config_ctx);
    json_t *sites = json_object_get(ctx, "sites");
    json_object_set_new(ctx, "run",
                        json_pack("{s:s,s:I,s:s?,s:s?,s:s?}", "id", run_id ? run_id : "", "epoch",
                                  (json_int_t)epoch, "from", from, "to", to, "runbook", runbook));
    json_t *others = json_array();
    const char *name;
    json_t *site;
    json_object_foreach(sites, name, site)
    {
        if ((!from || strcmp(name, from) != 0) && (!to || strcmp(name, to) != 0))
            json_array_append_new(others, json_string(name));
    }
    json_object_set_new(json_object_get(ctx, "run"), "others", others);
    json_t *f = from ? json_object_get(sites, from) : NULL;
    json_t *t = to ? json_object_get(sites, to) : NULL;
    json_object_set(ctx, "from", f ? f : json_null());
    json_object_set(ctx, "to", t ? t : json_null());
    return ctx;
}

/* Looks up a dotted path ("sites.dc2.public_addresses", "dns.servers.0"). */
static json_t *lookup(json_t *ctx, const char *path, const char **why)
{
    char seg[128];
    const char *p = path;
    json_t *cur = ctx;
    int depth = 0;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || n >= sizeof seg || ++depth > RB_REF_MAX_DEPTH) {
            *why = "malformed reference";
            return NULL;
        }
        memcpy(seg, p, n);
        seg[n] = '\0';
        if (json_is_object(cur)) {
            cur = json_object_get(cur, seg);
        } else if (json_is_array(cur)) {
            char *end;
            errno = 0;
            long idx = strtol(seg, &end, 10);
            cur = (errno || *end || idx < 0) ? NULL : json_array_get(cur, (size_t)idx);
        } else {
            cur = NULL;
        }
        if (!cur || json_is_null(cur)) {
            *why = "refers to nothing in the configuration or the run";
            return NULL;
        }
        p += n;
        if (*p == '.')
            p++;
    }
    return cur;
}

static void param_error(struct diag *d, const struct rb_step *s, const struct rb_param *p,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void param_error(struct diag *d, const struct rb_step *s, const struct rb_param *p,
                        const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    diag_add(d, s->file, p ? p->line : s->line, p ? p->col : s->col, "step '%s': %s",
             s->id ? s->id : "?", msg);
}

/* Resolves ${...} in one JSON value (recursively for lists and maps). */
static json_t *resolve_value(json_t *v, json_t *ctx, const struct rb_step *s,
                             const struct rb_param *p, struct diag *d)
{
    if (json_is_array(v)) {
        json_t *a = json_array();
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *r = resolve_value(json_array_get(v, i), ctx, s, p, d);
            if (!r) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, r);
        }
        return a;
    }
    if (json_is_object(v)) {
        json_t *o = json_object();
        const char *k;
        json_t *iv;
        json_object_foreach(v, k, iv)
        {
            json_t *r = resolve_value(iv, ctx, s, p, d);
            if (!r) {
                json_decref(o);
                return NULL;
            }
            json_object_set_new(o, k, r);
        }
        return o;
    }
    if (!json_is_string(v))
        return json_incref(v);
    const char *str = json_string_value(v);
    size_t len = strlen(str);
    /* Exactly one reference: take the value as it is. */
    if (len > 3 && strncmp(str, "${", 2) == 0 && str[len - 1] == '}' && !strchr(str + 2, '$') &&
        memchr(str + 2, '}', len - 3) == NULL) {
        char path[256];
        if (len - 3 >= sizeof path) {
            param_error(d, s, p, "reference too long: %s", str);
            return NULL;
        }
        memcpy(path, str + 2, len - 3);
        path[len - 3] = '\0';
        const char *why = NULL;
        json_t *r = lookup(ctx, path, &why);
        if (!r) {
            param_error(d, s, p, "${%s} %s", path, why);
            return NULL;
        }
        return json_incref(r);
    }
    struct buf out;
    buf_init(&out, RB_VALUE_MAX);
    const char *q = str;
    while (*q) {
        const char *start = strstr(q, "${");
        if (!start) {
            buf_append_str(&out, q);
            break;
        }
        buf_append(&out, q, (size_t)(start - q));
        const char *end = strchr(start, '}');
        if (!end) {
            param_error(d, s, p, "unterminated reference in '%s'", str);
            buf_free(&out);
            return NULL;
        }
        char path[256];
        size_t n = (size_t)(end - start - 2);
        if (n == 0 || n >= sizeof path) {
            param_error(d, s, p, "malformed reference in '%s'", str);
            buf_free(&out);
            return NULL;
        }
        memcpy(path, start + 2, n);
        path[n] = '\0';
        const char *why = NULL;
        json_t *r = lookup(ctx, path, &why);
        if (!r) {
            param_error(d, s, p, "${%s} %s", path, why);
            buf_free(&out);
            return NULL;
        }
        if (json_is_string(r))
            buf_append_str(&out, json_string_value(r));
        else if (json_is_integer(r))
            buf_printf(&out, "%lld", (long long)json_integer_value(r));
        else if (json_is_boolean(r))
            buf_append_str(&out, json_is_true(r) ? "true" : "false");
        else {
            param_error(d, s, p, "${%s} is a list or map and cannot be part of a string", path);
            buf_free(&out);
            return NULL;
        }
        q = end + 1;
    }
    if (out.truncated) {
        param_error(d, s, p, "value longer than %d bytes after references are filled in",
                    RB_VALUE_MAX);
        buf_free(&out);
        return NULL;
    }
    json_t *res = json_string(out.data ? out.data : "");
    buf_free(&out);
    return res;
}

/* Converts a resolved value to the declared type. */
static json_t *coerce(json_t *v, enum rb_param_type t, const struct rb_step *s,
                      const struct rb_param *p, struct diag *d)
{
    const char *why = NULL;
    const char *str = json_is_string(v) ? json_string_value(v) : NULL;
    switch (t) {
    case RB_P_ANY:
        return json_incref(v);
    case RB_P_STRING:
        if (str)
            return json_incref(v);
        if (json_is_integer(v))
            return json_sprintf("%lld", (long long)json_integer_value(v));
        param_error(d, s, p, "parameter '%s' must be a single value", p->name);
        return NULL;
    case RB_P_STRING_LIST: {
        if (str)
            return json_pack("[O]", v);
        if (!json_is_array(v)) {
            param_error(d, s, p, "parameter '%s' must be a list of values", p->name);
            return NULL;
        }
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (!json_is_string(json_array_get(v, i))) {
                param_error(d, s, p, "parameter '%s' must be a list of single values", p->name);
                return NULL;
            }
        }
        return json_incref(v);
    }
    case RB_P_INT: {
        if (json_is_integer(v))
            return json_incref(v);
        char *end = NULL;
        errno = 0;
        long long x = str ? strtoll(str, &end, 10) : 0;
        if (!str || errno || end == str || *end) {
            param_error(d, s, p, "parameter '%s' must be a whole number", p->name);
            return NULL;
        }
        return json_integer(x);
    }
    case RB_P_DURATION: {
        int64_t ms;
        if (json_is_integer(v))
            return json_incref(v);
        if (!str || units_duration_ms(str, &ms, &why) < 0) {
            param_error(d, s, p, "parameter '%s': %s", p->name,
                        why ? why : "expected a duration such as 5s");
            return NULL;
        }
        return json_integer(ms);
    }
    case RB_P_SIZE: {
        uint64_t b;
        if (json_is_integer(v))
            return json_incref(v);
        if (!str || units_size(str, &b, &why) < 0) {
            param_error(d, s, p, "parameter '%s': %s", p->name,
                        why ? why : "expected a size such as 16MB");
            return NULL;
        }
        return json_integer((json_int_t)b);
    }
    case RB_P_BOOL:
        if (json_is_boolean(v))
            return json_incref(v);
        if (str && (!strcmp(str, "true") || !strcmp(str, "yes")))
            return json_true();
        if (str && (!strcmp(str, "false") || !strcmp(str, "no")))
            return json_false();
        param_error(d, s, p, "parameter '%s' must be true or false", p->name);
        return NULL;
    }
    return NULL;
}

json_t *rb_resolve_params(const struct rb_step *step, json_t *ctx, struct diag *d)
{
    json_t *out = json_object();
    size_t errors = diag_mark(d);
    const struct rb_param_spec *specs = step->action ? step->action->params : NULL;
    for (size_t i = 0; i < step->n_params; i++) {
        const struct rb_param *p = &step->params[i];
        const struct rb_param_spec *spec = NULL;
        for (size_t j = 0; specs && specs[j].name && !spec; j++) {
            if (strcmp(specs[j].name, p->name) == 0)
                spec = &specs[j];
        }
        if (!spec)
            continue; /* already reported at load */
        json_t *v = resolve_value(p->raw, ctx, step, p, d);
        if (!v)
            continue;
        json_t *c = coerce(v, spec->type, step, p, d);
        json_decref(v);
        if (c)
            json_object_set_new(out, p->name, c);
    }
    for (size_t j = 0; specs && specs[j].name; j++) {
        if (specs[j].required && !json_object_get(out, specs[j].name)) {
            bool given = false;
            for (size_t i = 0; i < step->n_params && !given; i++)
                given = strcmp(step->params[i].name, specs[j].name) == 0;
            if (!given)
                diag_add(d, step->file, step->line, step->col,
                         "step '%s': action '%s' needs parameter '%s' (%s)",
                         step->id ? step->id : "?", step->action->name, specs[j].name,
                         specs[j].help);
        }
    }
    if (diag_mark(d) != errors) {
        json_decref(out);
        return NULL;
    }
    return out;
}

int rb_load(const char *path, json_t *config_ctx, struct runbook **out, struct diag *d)
{
    static const char *const keys[] = { "runbook", "description", "steps", NULL };
    size_t errors = diag_mark(d);
    struct ydoc doc;
    struct runbook *rb = calloc(1, sizeof *rb);
    *out = NULL;
    if (!rb)
        return -1;
    rb->path = strdup(path);
    if (ydoc_load(&doc, path, d) < 0)
        goto out;
    struct ynode *root = doc.root;
    if (!root) {
        diag_add(d, path, 0, 0, "the runbook is empty");
        goto out;
    }
    if (!yread_expect(d, root, YNODE_MAP, "a runbook"))
        goto out;
    if (yread_str(d, root, "runbook", &rb->name) == 0)
        yread_error(d, root, "runbook: missing required key 'runbook' (its name)");
    yread_str(d, root, "description", &rb->description);
    struct ynode *steps = ynode_get(root, "steps");
    if (!steps || ynode_is_null(steps))
        yread_error(d, root, "runbook: missing required key 'steps'");
    else if (yread_expect(d, steps, YNODE_SEQ, "'steps'")) {
        if (steps->n == 0)
            yread_error(d, steps, "a runbook needs at least one step");
        for (size_t i = 0; i < steps->n; i++)
            read_step(rb, steps->items[i], d);
    }
    yread_unknown_keys(d, root, keys);

    /* Resolve every step's parameters against the configuration for every
     * way the runbook can be run (each ordered pair of primary/standby
     * sites as from -> to), and let each action check what it can. */
    if (config_ctx && diag_mark(d) == errors) {
        json_t *sites = json_object_get(config_ctx, "sites");
        const char *from, *to;
        json_t *fs, *ts;
        json_object_foreach(sites, from, fs)
        {
            const char *frole = json_string_value(json_object_get(fs, "role"));
            if (!frole || strcmp(frole, "witness") == 0)
                continue;
            json_object_foreach(sites, to, ts)
            {
                const char *trole = json_string_value(json_object_get(ts, "role"));
                if (!trole || strcmp(trole, "witness") == 0 || strcmp(from, to) == 0)
                    continue;
                json_t *ctx = rb_context(config_ctx, "check", 1, from, to, rb->name);
                for (size_t i = 0; i < rb->n_steps; i++) {
                    const struct rb_step *s = &rb->steps[i];
                    if (!s->action)
                        continue;
                    json_t *params = rb_resolve_params(s, ctx, d);
                    if (params && s->action->validate) {
                        struct rb_validate_ctx v = { s, params, ctx, d };
                        s->action->validate(&v);
                    }
                    json_decref(params);
                }
                json_decref(ctx);
            }
        }
    }
out:
    ydoc_free(&doc);
    if (diag_mark(d) != errors) {
        rb_free(rb);
        return -1;
    }
    *out = rb;
    return 0;
}

void rb_free(struct runbook *rb)
{
    if (!rb)
        return;
    for (size_t i = 0; i < rb->n_steps; i++) {
        struct rb_step *s = &rb->steps[i];
        free(s->id);
        free(s->action_name);
        free(s->description);
        for (size_t j = 0; j < s->n_params; j++) {
            free(s->params[j].name);
            json_decref(s->params[j].raw);
        }
        free(s->params);
    }
    free(rb->steps);
    free(rb->name);
    free(rb->path);
    free(rb->description);
    free(rb);
}
