/* Action `pg.follow`: repoint a site's replicas at the new primary. */
#include "runbooks/actions/actions.h"

static const struct rb_param_spec params[] = {
    { "group", RB_P_STRING, false, "database group (postgres.groups)" },
    { "cluster", RB_P_STRING, false, "or one PostgreSQL cluster" },
    { "sites", RB_P_STRING_LIST, true,
      "the sites whose replicas are repointed (sites without a member are skipped)" },
    { "primary", RB_P_STRING, true, "the site of the new primary" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    static const char *const sites[] = { "primary", NULL };
    json_t *list = json_object_get(v->params, "sites");
    json_t *all = json_object_get(v->ctx, "sites");
    for (size_t i = 0; i < json_array_size(list); i++) {
        const char *s = json_string_value(json_array_get(list, i));
        if (!json_object_get(all, s))
            rb_param_error(v, "sites", "'%s' is not a configured site", s);
    }
    act_need_site(v, "primary");
    act_need_db_target(v, sites);
}

const struct rb_action_ops rb_action_pg_follow = {
    .name = "pg.follow",
    .summary = "repoint a replica at the new primary",
    .params = params,
    .default_timeout_ms = 120000,
    .validate = validate,
};
