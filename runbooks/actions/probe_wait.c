/* Action `probe.wait`: wait until a probe has been in a state for a while
 * (e.g. Synapse healthy through the public name for 10 s). */
#include <string.h>

#include "runbooks/actions/actions.h"

static const struct rb_param_spec params[] = {
    { "site", RB_P_STRING, true, "the probe's site" },
    { "probe", RB_P_STRING, true, "the probe's name" },
    { "state", RB_P_STRING, false, "up (default) or down" },
    { "for", RB_P_DURATION, false, "how long the state must hold (default 0)" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    static const char *const states[] = { "up", "down", NULL };
    act_need_enum(v, "state", states);
    act_need_site(v, "site");
    const char *site = json_string_value(json_object_get(v->params, "site"));
    const char *name = json_string_value(json_object_get(v->params, "probe"));
    json_t *probes = json_object_get(v->ctx, "probes");
    for (size_t i = 0; i < json_array_size(probes); i++) {
        json_t *p = json_array_get(probes, i);
        const char *ps = json_string_value(json_object_get(p, "site"));
        const char *pn = json_string_value(json_object_get(p, "name"));
        if (ps && pn && site && name && !strcmp(ps, site) && !strcmp(pn, name))
            return;
    }
    rb_param_error(v, "probe", "no probe '%s' is configured for site '%s'", name ? name : "?",
                   site ? site : "?");
}

const struct rb_action_ops rb_action_probe_wait = {
    .name = "probe.wait",
    .summary = "wait until a probe is in a state for a duration",
    .params = params,
    .default_timeout_ms = 120000,
    .validate = validate,
};
