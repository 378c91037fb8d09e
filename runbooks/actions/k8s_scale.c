/* Action `k8s.scale`: scale a site's ESS workloads (or one named object)
 * through the Kubernetes API and wait for ready replicas. */
#include <stdlib.h>
#include <string.h>

#include "runbooks/actions/actions.h"

static const struct rb_param_spec params[] = {
    { "site", RB_P_STRING, true, "the site whose Kubernetes cluster is used" },
    { "replicas", RB_P_STRING, true,
      "'active' (each workload's configured replicas) or a number (0 stops)" },
    { "kind", RB_P_STRING, false, "Deployment or StatefulSet (default: the ess workloads)" },
    { "name", RB_P_STRING, false, "one object by name" },
    { "selector", RB_P_STRING, false, "objects by label selector" },
    { "namespace", RB_P_STRING, false, "default ess.namespace" },
    { "wait", RB_P_BOOL, false, "wait for ready replicas (default true)" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    static const char *const kinds[] = { "Deployment", "StatefulSet", NULL };
    json_t *site = act_need_site(v, "site");
    if (site && json_is_null(json_object_get(site, "kubernetes")))
        rb_param_error(v, "site", "site '%s' has no 'kubernetes' section",
                       json_string_value(json_object_get(v->params, "site")));
    const char *rep = json_string_value(json_object_get(v->params, "replicas"));
    if (rep && strcmp(rep, "active") != 0) {
        char *end;
        long n = strtol(rep, &end, 10);
        if (*end || end == rep || n < 0 || n > 1000)
            rb_param_error(v, "replicas", "'replicas' must be 'active' or 0 to 1000, not '%s'",
                           rep);
    }
    act_need_enum(v, "kind", kinds);
    bool one = json_object_get(v->params, "name") || json_object_get(v->params, "selector");
    if (one && !json_object_get(v->params, "kind"))
        rb_param_error(v, NULL, "'name' or 'selector' needs 'kind'");
    if (json_object_get(v->params, "name") && json_object_get(v->params, "selector"))
        rb_param_error(v, "selector", "give 'name' or 'selector', not both");
    if (!one && json_array_size(rb_ctx_get(v->ctx, "ess.workloads")) == 0)
        rb_param_error(v, NULL, "no object named and no ess.workloads configured");
}

const struct rb_action_ops rb_action_k8s_scale = {
    .name = "k8s.scale",
    .summary = "scale Kubernetes workloads and wait for ready replicas",
    .params = params,
    .default_timeout_ms = 300000,
    .validate = validate,
};
