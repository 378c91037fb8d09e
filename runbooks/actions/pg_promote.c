/* Action `pg.promote`: promote a site's replicas of a database group,
 * refusing (or asking) when another replica is further ahead. */
#include "runbooks/actions/actions.h"

static const struct rb_param_spec params[] = {
    { "group", RB_P_STRING, false, "database group (postgres.groups)" },
    { "cluster", RB_P_STRING, false, "or one PostgreSQL cluster (postgres.clusters)" },
    { "site", RB_P_STRING, true, "the site whose replica becomes primary" },
    { "if_behind", RB_P_STRING, false,
      "when another replica is further ahead: refuse (default), ask or ignore" },
    { "max_lag", RB_P_SIZE, false, "refuse when the target is further behind than this" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    static const char *const sites[] = { "site", NULL };
    static const char *const behind[] = { "refuse", "ask", "ignore", NULL };
    act_need_site(v, "site");
    act_need_db_target(v, sites);
    act_need_enum(v, "if_behind", behind);
}

const struct rb_action_ops rb_action_pg_promote = {
    .name = "pg.promote",
    .summary = "promote a site's replicas of a database group",
    .params = params,
    .default_timeout_ms = 120000,
    .validate = validate,
};
