/* Action `k8s.wait`: wait until a Kubernetes object's status field has a
 * value (by default: all replicas ready). */
#include "runbooks/actions/actions.h"

static const struct rb_param_spec params[] = {
    { "site", RB_P_STRING, true, "the site whose Kubernetes cluster is used" },
    { "kind", RB_P_STRING, true, "Deployment or StatefulSet" },
    { "name", RB_P_STRING, false, "the object's name" },
    { "selector", RB_P_STRING, false, "or a label selector (every match must satisfy)" },
    { "namespace", RB_P_STRING, false, "default ess.namespace" },
    { "field", RB_P_STRING, false, "a status field (default status.readyReplicas)" },
    { "equals", RB_P_STRING, false, "the value it must have (default: spec.replicas)" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    static const char *const kinds[] = { "Deployment", "StatefulSet", NULL };
    json_t *site = act_need_site(v, "site");
    if (site && json_is_null(json_object_get(site, "kubernetes")))
        rb_param_error(v, "site", "site '%s' has no 'kubernetes' section",
                       json_string_value(json_object_get(v->params, "site")));
    act_need_enum(v, "kind", kinds);
    if (!json_object_get(v->params, "name") == !json_object_get(v->params, "selector"))
        rb_param_error(v, NULL, "needs exactly one of 'name' or 'selector'");
}

const struct rb_action_ops rb_action_k8s_wait = {
    .name = "k8s.wait",
    .summary = "wait for a Kubernetes object's status",
    .params = params,
    .default_timeout_ms = 300000,
    .validate = validate,
};
