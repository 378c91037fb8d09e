/* The resolved configuration as JSON: what `check-config --dump` prints and
 * what runbook parameters such as ${sites.dc2.public_addresses} resolve
 * against. Holds file paths, never the secrets in them. */
#include <jansson.h>
#include <string.h>

#include "orchestrator/config.h"

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *str_list(char *const *list, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(list[i]));
    return a;
}

static json_t *hostport(const char *host, uint16_t port)
{
    if (!host)
        return json_null();
    return json_sprintf(strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, (unsigned)port);
}

static json_t *sites_json(const struct config *cfg)
{
    json_t *o = json_object();
    for (size_t i = 0; i < cfg->n_sites; i++) {
        const struct cfg_site *s = &cfg->sites[i];
        json_t *k8s = json_null();
        if (s->k8s.set)
            k8s = json_pack("{s:o,s:o,s:o,s:o,s:o,s:b}", "kubeconfig",
                            str_or_null(s->k8s.kubeconfig), "context", str_or_null(s->k8s.context),
                            "server", str_or_null(s->k8s.server), "ca_file",
                            str_or_null(s->k8s.ca_file), "token_file",
                            str_or_null(s->k8s.token_file), "in_cluster", s->k8s.in_cluster);
        json_object_set_new(o, s->name,
                            json_pack("{s:s,s:s,s:o,s:s,s:o,s:o,s:o,s:o,s:o}", "name", s->name,
                                      "role", config_role_name(s->role), "address",
                                      hostport(s->host, s->port), "host", s->host ? s->host : "",
                                      "listen", hostport(s->listen_host, s->listen_port),
                                      "peer_name", str_or_null(s->peer_name), "public_addresses",
                                      str_list(s->public_addresses, s->n_public_addresses), "fence",
                                      str_list(s->fence, s->n_fence), "self_fence",
                                      str_list(s->self_fence, s->n_self_fence)));
        json_object_set_new(json_object_get(o, s->name), "kubernetes", k8s);
    }
    return o;
}

static json_t *postgres_json(const struct config *cfg)
{
    const struct cfg_postgres *pg = &cfg->pg;
    json_t *clusters = json_object();
    for (size_t i = 0; i < pg->n_clusters; i++) {
        json_t *members = json_object();
        for (size_t j = 0; j < pg->clusters[i].n_members; j++) {
            const struct cfg_member *m = &pg->clusters[i].members[j];
            json_object_set_new(members, m->site, hostport(m->host, m->port));
        }
        json_object_set_new(
            clusters, pg->clusters[i].name,
            json_pack("{s:s,s:o}", "dbname", pg->clusters[i].dbname, "members", members));
    }
    json_t *groups = json_object();
    for (size_t i = 0; i < pg->n_groups; i++)
        json_object_set_new(groups, pg->groups[i].name,
                            str_list(pg->groups[i].clusters, pg->groups[i].n_clusters));
    return json_pack(
        "{s:o,s:o,s:o,s:o,s:I,s:o,s:o,s:o,s:o}", "user", str_or_null(pg->user), "password_file",
        str_or_null(pg->password_file), "sslmode", str_or_null(pg->sslmode), "sslrootcert",
        str_or_null(pg->sslrootcert), "connect_timeout_ms", (json_int_t)pg->connect_timeout_ms,
        "replication_user", str_or_null(pg->replication_user), "replication_password_file",
        str_or_null(pg->replication_password_file), "clusters", clusters, "groups", groups);
}

static json_t *probes_json(const struct config *cfg)
{
    json_t *a = json_array();
    for (size_t i = 0; i < cfg->n_probes; i++) {
        const struct cfg_probe *p = &cfg->probes[i];
        json_t *o = json_pack("{s:o,s:s,s:o,s:b,s:I,s:I,s:f}", "name", str_or_null(p->name), "kind",
                              config_probe_kind_name(p->kind), "site", str_or_null(p->site),
                              "critical", p->critical, "interval_ms", (json_int_t)p->interval_ms,
                              "timeout_ms", (json_int_t)p->timeout_ms, "jitter", p->jitter);
        switch (p->kind) {
        case PROBE_POSTGRES:
            json_object_set_new(o, "cluster", str_or_null(p->cluster));
            json_object_set_new(o, "address", hostport(p->host, p->port));
            json_object_set_new(o, "dbname", str_or_null(p->dbname));
            json_object_set_new(o, "max_replay_lag", json_integer((json_int_t)p->max_replay_lag));
            break;
        case PROBE_HTTP:
            json_object_set_new(o, "url", str_or_null(p->url));
            json_object_set_new(o, "connect_to", hostport(p->connect_to_host, p->connect_to_port));
            json_object_set_new(o, "expect_status", json_integer(p->expect_status));
            json_object_set_new(o, "expect_body", str_or_null(p->expect_body));
            json_object_set_new(o, "ca_file", str_or_null(p->ca_file));
            json_object_set_new(o, "cert_min_days", json_integer(p->cert_min_days));
            json_object_set_new(o, "keepalive_ms", json_integer((json_int_t)p->keepalive_ms));
            break;
        case PROBE_DNS:
            json_object_set_new(o, "query", str_or_null(p->qname));
            json_object_set_new(o, "type", str_or_null(p->qtype));
            json_object_set_new(o, "servers", str_list(p->servers, p->n_servers));
            json_object_set_new(o, "expect", str_or_null(p->expect));
            break;
        }
        json_array_append_new(a, o);
    }
    return a;
}

static json_t *fencing_json(const struct config *cfg)
{
    json_t *o = json_object();
    for (size_t i = 0; i < cfg->n_fences; i++) {
        const struct cfg_fence *f = &cfg->fences[i];
        if (!f->name)
            continue;
        json_object_set_new(o, f->name,
                            json_pack("{s:s,s:o,s:I,s:o,s:s,s:o,s:o,s:o,s:o,s:o}", "method",
                                      config_fence_method_name(f->method), "site",
                                      str_or_null(f->site), "timeout_ms", (json_int_t)f->timeout_ms,
                                      "cluster", str_or_null(f->cluster), "mode", "read-only",
                                      "url", str_or_null(f->url), "system", str_or_null(f->system),
                                      "credentials_file", str_or_null(f->credentials_file),
                                      "command", str_list(f->command, f->n_command), "verify",
                                      str_list(f->verify, f->n_verify)));
    }
    return o;
}

static json_t *ess_json(const struct config *cfg)
{
    json_t *w = json_array();
    for (size_t i = 0; i < cfg->ess.n_workloads; i++) {
        const struct cfg_workload *wl = &cfg->ess.workloads[i];
        json_array_append_new(
            w, json_pack("{s:s,s:o,s:o,s:i}", "kind",
                         wl->kind == WORKLOAD_STATEFULSET ? "StatefulSet" : "Deployment", "name",
                         str_or_null(wl->name), "selector", str_or_null(wl->selector), "replicas",
                         wl->replicas));
    }
    return json_pack("{s:o,s:o}", "namespace", str_or_null(cfg->ess.namespace_), "workloads", w);
}

/* Which probes exist: what a runbook's probe.wait is checked against. */
static json_t *probe_names_json(const struct config *cfg)
{
    json_t *a = json_array();
    for (size_t i = 0; i < cfg->n_probes; i++)
        json_array_append_new(a, json_pack("{s:o,s:o}", "site", str_or_null(cfg->probes[i].site),
                                           "name", str_or_null(cfg->probes[i].name)));
    return a;
}

static json_t *to_json(const struct config *cfg, bool with_probes)
{
    const struct cfg_quorum *q = &cfg->quorum;
    json_t *runbooks = json_object();
    for (size_t i = 0; i < cfg->n_runbooks; i++)
        json_object_set_new(runbooks, cfg->runbooks[i].name, str_or_null(cfg->runbooks[i].path));
    json_t *operators = json_array();
    for (size_t i = 0; i < cfg->n_operators; i++) {
        const struct cfg_operator *op = &cfg->operators[i];
        json_array_append_new(
            operators, json_pack("{s:o,s:o,s:o,s:b}", "name", str_or_null(op->name), "unix_user",
                                 str_or_null(op->unix_user), "cert_cn", str_or_null(op->cert_cn),
                                 "token", op->token_sha256 != NULL));
    }
    json_t *notify = json_array();
    for (size_t i = 0; i < cfg->n_notify; i++) {
        const struct cfg_notify *t = &cfg->notify[i];
        static const char *const kinds[] = { "webhook", "matrix", "slack", "pagerduty" };
        json_array_append_new(notify, json_pack("{s:o,s:s,s:o,s:o,s:o}", "name",
                                                str_or_null(t->name), "kind", kinds[t->kind], "url",
                                                str_or_null(t->url), "room", str_or_null(t->room),
                                                "events", str_list(t->events, t->n_events)));
    }
    json_t *dns = json_null();
    if (cfg->dns.set)
        dns = json_pack("{s:o,s:o,s:o,s:o,s:I,s:o,s:I}", "zone", str_or_null(cfg->dns.zone),
                        "servers", str_list(cfg->dns.servers, cfg->dns.n_servers), "tsig_key_file",
                        str_or_null(cfg->dns.tsig_key_file), "names",
                        str_list(cfg->dns.names, cfg->dns.n_names), "ttl_ms",
                        (json_int_t)cfg->dns.ttl_ms, "fence_record",
                        str_or_null(cfg->dns.fence_record), "timeout_ms",
                        (json_int_t)cfg->dns.timeout_ms);
    static const char *const levels[] = { "debug", "info", "warn", "error" };
    json_t *o = json_object();
    json_object_set_new(o, "cluster", str_or_null(cfg->cluster));
    json_object_set_new(o, "site", str_or_null(cfg->site));
    json_object_set_new(o, "state_dir", str_or_null(cfg->state_dir));
    json_object_set_new(o, "sites", sites_json(cfg));
    json_object_set_new(o, "tls",
                        json_pack("{s:o,s:o,s:o}", "ca_file", str_or_null(cfg->tls.ca_file),
                                  "cert_file", str_or_null(cfg->tls.cert_file), "key_file",
                                  str_or_null(cfg->tls.key_file)));
    json_object_set_new(o, "postgres", postgres_json(cfg));
    json_object_set_new(o, "health",
                        json_pack("{s:i,s:I,s:i}", "fail_after", cfg->health.fail_after,
                                  "down_after_ms", (json_int_t)cfg->health.down_after_ms,
                                  "recover_after", cfg->health.recover_after));
    json_object_set_new(o, "probes", with_probes ? probes_json(cfg) : probe_names_json(cfg));
    json_object_set_new(
        o, "quorum",
        json_pack("{s:i,s:I,s:I,s:I,s:f,s:I,s:I,s:I,s:I}", "size", q->size, "heartbeat_interval_ms",
                  (json_int_t)q->heartbeat_interval_ms, "peer_timeout_ms",
                  (json_int_t)q->peer_timeout_ms, "lease_timeout_ms",
                  (json_int_t)q->lease_timeout_ms, "clock_drift", q->clock_drift, "lease_margin_ms",
                  (json_int_t)q->lease_margin_ms, "election_timeout_ms",
                  (json_int_t)q->election_timeout_ms, "election_jitter_ms",
                  (json_int_t)q->election_jitter_ms, "max_frame", (json_int_t)q->max_frame));
    json_object_set_new(
        o, "failover",
        json_pack("{s:s,s:o,s:o,s:I,s:I}", "mode", config_mode_name(cfg->failover.mode), "target",
                  str_or_null(cfg->failover.target), "runbook", str_or_null(cfg->failover.runbook),
                  "block_period_ms", (json_int_t)cfg->failover.block_period_ms,
                  "readiness_interval_ms", (json_int_t)cfg->failover.readiness_interval_ms));
    json_object_set_new(o, "runbooks", runbooks);
    json_object_set_new(o, "approvals",
                        json_pack("{s:i,s:I}", "required", cfg->approvals.required, "timeout_ms",
                                  (json_int_t)cfg->approvals.timeout_ms));
    json_object_set_new(o, "fencing", fencing_json(cfg));
    json_object_set_new(o, "ess", ess_json(cfg));
    json_object_set_new(o, "dns", dns);
    json_object_set_new(o, "notifications", notify);
    json_object_set_new(
        o, "api",
        json_pack("{s:o,s:o,s:o,s:o}", "socket", str_or_null(cfg->api.socket), "socket_mode",
                  json_sprintf("%04o", cfg->api.socket_mode), "socket_group",
                  str_or_null(cfg->api.socket_group), "https",
                  cfg->api.https_host
                      ? json_pack("{s:o,s:o,s:o,s:o}", "listen",
                                  hostport(cfg->api.https_host, cfg->api.https_port), "cert_file",
                                  str_or_null(cfg->api.https_cert_file), "key_file",
                                  str_or_null(cfg->api.https_key_file), "client_ca_file",
                                  str_or_null(cfg->api.https_client_ca_file))
                      : json_null()));
    json_object_set_new(o, "operators", operators);
    json_object_set_new(o, "log",
                        json_pack("{s:s,s:s}", "level", levels[cfg->log.level], "format",
                                  cfg->log.json ? "json" : "logfmt"));
    return o;
}

json_t *config_to_json(const struct config *cfg)
{
    return to_json(cfg, true);
}

json_t *config_runbook_json(const struct config *cfg)
{
    return to_json(cfg, false);
}
