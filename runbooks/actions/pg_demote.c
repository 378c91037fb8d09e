/* Action `pg.demote`: shut the primary down cleanly and wait until the
 * target replica has replayed its final checkpoint (switchover). */
#include "runbooks/actions/actions.h"

static const struct rb_param_spec params[] = {
    { "group", RB_P_STRING, false, "database group (postgres.groups)" },
    { "cluster", RB_P_STRING, false, "or one PostgreSQL cluster" },
    { "site", RB_P_STRING, true, "the current primary's site" },
    { "target", RB_P_STRING, true, "the replica that must replay everything first" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    static const char *const sites[] = { "site", "target", NULL };
    act_need_site(v, "site");
    act_need_site(v, "target");
    act_need_db_target(v, sites);
}

const struct rb_action_ops rb_action_pg_demote = {
    .name = "pg.demote",
    .summary = "demote the primary cleanly for a switchover",
    .params = params,
    .default_timeout_ms = 300000,
    .validate = validate,
};
