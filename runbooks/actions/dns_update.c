/* Action `dns.update`: point the public names at a site (RFC 2136 + TSIG,
 * compare-and-swap on the epoch TXT record), then verify every server. */
#include "runbooks/actions/actions.h"

static const struct rb_param_spec params[] = {
    { "site", RB_P_STRING, true, "the site whose public_addresses the names get" },
    { "names", RB_P_STRING_LIST, false, "public names (default dns.names)" },
    { NULL, RB_P_ANY, false, NULL },
};

static void validate(const struct rb_validate_ctx *v)
{
    json_t *dns = json_object_get(v->ctx, "dns");
    if (!json_is_object(dns)) {
        rb_param_error(v, NULL, "dns.update needs a 'dns' section in the configuration");
        return;
    }
    if (!json_is_string(json_object_get(dns, "tsig_key_file")))
        rb_param_error(v, NULL, "dns.update needs dns.tsig_key_file in the configuration");
    json_t *site = act_need_site(v, "site");
    if (site && json_array_size(json_object_get(site, "public_addresses")) == 0)
        rb_param_error(v, "site", "site '%s' has no public_addresses to publish",
                       json_string_value(json_object_get(v->params, "site")));
}

const struct rb_action_ops rb_action_dns_update = {
    .name = "dns.update",
    .summary = "point the public names at a site and verify every server",
    .params = params,
    .default_timeout_ms = 60000,
    .validate = validate,
};
