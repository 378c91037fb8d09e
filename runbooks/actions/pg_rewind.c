/* Action `pg.rewind`: turn an old primary into a replica of the new one
 * with pg_rewind (failback). */
#include "runbooks/actions/actions.h"

static const struct rb_param_spec params[] = {
    { "group", RB_P_STRING, false, "database group (postgres.groups)" },
    { "cluster", RB_P_STRING, false, "or one PostgreSQL cluster" },
    { "site", RB_P_STRING, true, "the old primary's site" },
    { "primary", RB_P_STRING, true, "the site of the current primary" },
    { "allow_basebackup", RB_P_BOOL, false,
      "when rewind is impossible, ask to rebuild with pg_basebackup (default false)" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    static const char *const sites[] = { "site", "primary", NULL };
    act_need_site(v, "site");
    act_need_site(v, "primary");
    act_need_db_target(v, sites);
}

const struct rb_action_ops rb_action_pg_rewind = {
    .name = "pg.rewind",
    .summary = "rebuild an old primary as a replica with pg_rewind",
    .params = params,
    .default_timeout_ms = 1800000,
    .validate = validate,
};
