/* Validation helpers shared by the actions. */
#include <string.h>

#include "runbooks/actions/actions.h"

json_t *act_need_site(const struct rb_validate_ctx *v, const char *param)
{
    const char *site = json_string_value(json_object_get(v->params, param));
    if (!site)
        return NULL;
    json_t *s = json_object_get(json_object_get(v->ctx, "sites"), site);
    if (!s)
        rb_param_error(v, param, "'%s' is not a configured site", site);
    return s;
}

static void need_member(const struct rb_validate_ctx *v, const char *cluster,
                        const char *const *site_params)
{
    json_t *c = json_object_get(rb_ctx_get(v->ctx, "postgres.clusters"), cluster);
    if (!c) {
        rb_param_error(v, "cluster", "'%s' is not a configured PostgreSQL cluster", cluster);
        return;
    }
    for (size_t i = 0; site_params && site_params[i]; i++) {
        const char *site = json_string_value(json_object_get(v->params, site_params[i]));
        if (site && !json_object_get(json_object_get(c, "members"), site))
            rb_param_error(v, site_params[i], "PostgreSQL cluster '%s' has no member in '%s'",
                           cluster, site);
    }
}

void act_need_db_target(const struct rb_validate_ctx *v, const char *const *site_params)
{
    const char *group = json_string_value(json_object_get(v->params, "group"));
    const char *cluster = json_string_value(json_object_get(v->params, "cluster"));
    if ((group != NULL) == (cluster != NULL)) {
        rb_param_error(v, NULL, "needs exactly one of 'group' or 'cluster'");
        return;
    }
    if (cluster) {
        need_member(v, cluster, site_params);
        return;
    }
    json_t *g = json_object_get(rb_ctx_get(v->ctx, "postgres.groups"), group);
    if (!g) {
        rb_param_error(v, "group", "'%s' is not a configured database group", group);
        return;
    }
    for (size_t i = 0; i < json_array_size(g); i++)
        need_member(v, json_string_value(json_array_get(g, i)), site_params);
}

void act_need_enum(const struct rb_validate_ctx *v, const char *param, const char *const *allowed)
{
    const char *val = json_string_value(json_object_get(v->params, param));
    if (!val)
        return;
    for (size_t i = 0; allowed[i]; i++) {
        if (strcmp(val, allowed[i]) == 0)
            return;
    }
    char list[256] = "";
    size_t off = 0;
    for (size_t i = 0; allowed[i] && off < sizeof list; i++) {
        int w = snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "", allowed[i]);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    rb_param_error(v, param, "'%s' must be one of %s, not '%s'", param, list, val);
}
