/* Action `fence`: fence a site by trying its fencing methods in order; the
 * step succeeds only when one method's fence is verified. */
#include <string.h>

#include "runbooks/actions/actions.h"

static const struct rb_param_spec params[] = {
    { "site", RB_P_STRING, true, "the site to fence" },
    { "methods", RB_P_STRING_LIST, true, "fencing methods (names from `fencing`), in order" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    act_need_site(v, "site");
    const char *site = json_string_value(json_object_get(v->params, "site"));
    json_t *methods = json_object_get(v->params, "methods");
    json_t *fencing = json_object_get(v->ctx, "fencing");
    if (json_array_size(methods) == 0)
        rb_param_error(v, "methods", "lists no fencing method");
    for (size_t i = 0; i < json_array_size(methods); i++) {
        const char *m = json_string_value(json_array_get(methods, i));
        json_t *f = json_object_get(fencing, m);
        if (!f) {
            rb_param_error(v, "methods", "'%s' is not a configured fencing method", m);
            continue;
        }
        const char *fs = json_string_value(json_object_get(f, "site"));
        if (site && fs && strcmp(site, fs) != 0)
            rb_param_error(v, "methods", "fencing method '%s' fences site '%s', not '%s'", m, fs,
                           site);
    }
}

const struct rb_action_ops rb_action_fence = {
    .name = "fence",
    .summary = "fence a site; succeed only on a verified fence",
    .params = params,
    .default_timeout_ms = 300000,
    .validate = validate,
};
