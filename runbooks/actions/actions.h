/* Every action's vtable, and validation helpers the actions share. */
#ifndef TRIAD_ACTIONS_H
#define TRIAD_ACTIONS_H

#include "runbooks/action.h"

extern const struct rb_action_ops rb_action_wait;
extern const struct rb_action_ops rb_action_exec;
extern const struct rb_action_ops rb_action_notify;
extern const struct rb_action_ops rb_action_probe_wait;
extern const struct rb_action_ops rb_action_fence;
extern const struct rb_action_ops rb_action_pg_promote;
extern const struct rb_action_ops rb_action_pg_follow;
extern const struct rb_action_ops rb_action_pg_rewind;
extern const struct rb_action_ops rb_action_pg_demote;
extern const struct rb_action_ops rb_action_dns_update;
extern const struct rb_action_ops rb_action_k8s_scale;
extern const struct rb_action_ops rb_action_k8s_wait;

/* The parameter `param` names a configured site; returns it or NULL. */
json_t *act_need_site(const struct rb_validate_ctx *v, const char *param);
/* Exactly one of `group`/`cluster` names a configured database group or
 * PostgreSQL cluster, and every cluster has a member in each site named by
 * the listed site parameters (NULL-terminated). */
void act_need_db_target(const struct rb_validate_ctx *v, const char *const *site_params);
/* The parameter, if present, is one of `allowed` (NULL-terminated). */
void act_need_enum(const struct rb_validate_ctx *v, const char *param, const char *const *allowed);

#endif
