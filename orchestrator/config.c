/* Configuration reader: triad.yaml into struct config, with defaults, every
 * error reported as FILE:LINE:COLUMN, unknown keys with a suggestion, and
 * cross-references checked once every section is read. File references are
 * checked separately (config_files.c) so --no-file-checks can skip them. */
#include "orchestrator/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/suggest.h"
#include "lib/yaml_doc.h"
#include "lib/yaml_read.h"
#include "orchestrator/config_files.h"
#include "runbooks/runbook.h"

struct reader {
    struct config *cfg;
    struct diag *d;
    const struct config_load_opts *opts;
    struct ydoc doc;
};

static const char *const role_names[] = { "primary", "standby", "witness", NULL };
static const char *const mode_names[] = { "manual", "semi-automatic", "automatic", NULL };
static const char *const probe_kind_names[] = { "postgres", "http", "dns", NULL };
static const char *const fence_names[] = { "postgres", "redfish", "k8s", "exec",
                                           "manual",   "lease",   NULL };
static const char *const notify_names[] = { "webhook", "matrix", "slack", "pagerduty", NULL };
static const char *const workload_names[] = { "Deployment", "StatefulSet", NULL };
static const char *const level_names[] = { "debug", "info", "warn", "error", NULL };
static const char *const format_names[] = { "logfmt", "json", NULL };
static const char *const dns_types[] = { "A", "AAAA", "CNAME", "TXT", "NS", "SOA", NULL };
static const char *const notify_events[] = { "odown",        "gate",      "step-failed",
                                             "run-finished", "readiness", NULL };

const char *config_role_name(enum site_role r)
{
    return role_names[r];
}

const char *config_mode_name(enum failover_mode m)
{
    return mode_names[m];
}

const char *config_probe_kind_name(enum probe_kind k)
{
    return probe_kind_names[k];
}

const char *config_fence_method_name(enum fence_method m)
{
    return fence_names[m];
}

static struct cfg_pos pos_of(const struct ynode *n)
{
    struct cfg_pos p = { n ? n->file : NULL, n ? n->line : 0, n ? n->col : 0 };
    return p;
}

static void missing(struct reader *r, const struct ynode *map, const char *what, const char *key)
{
    yread_error(r->d, map, "%s: missing required key '%s'", what, key);
}

/* Reads a *_file path, resolves it against the config directory and
 * schedules its check. */
static void read_file_ref(struct reader *r, struct ynode *map, const char *key,
                          enum cfg_file_kind kind, char **out)
{
    struct ynode *n = ynode_get(map, key);
    if (yread_str(r->d, map, key, out) <= 0)
        return;
    char *abs = config_resolve_path(r->cfg->dir, *out);
    if (abs) {
        free(*out);
        *out = abs;
    }
    if (!r->opts->no_file_checks)
        config_check_file(r->d, n, *out, kind);
}

static void *grow(void *arr, size_t n, size_t elem)
{
    void *p = realloc(arr, (n + 1) * elem);
    if (p)
        memset((char *)p + n * elem, 0, elem);
    return p;
}

static bool valid_name(const char *s)
{
    if (!*s || strlen(s) > 63)
        return false;
    for (const char *p = s; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return false;
    }
    return true;
}

static void check_name(struct reader *r, const struct ynode *at, const char *what, const char *name)
{
    if (!valid_name(name))
        yread_error(r->d, at, "%s '%s': names are 1 to 63 letters, digits, '-', '_' or '.'", what,
                    name);
}

/* ---- sites ---------------------------------------------------------------- */

static void read_k8s(struct reader *r, struct ynode *n, struct cfg_k8s *k)
{
    static const char *const keys[] = { "kubeconfig",      "context",    "server",
                                        "ca_file",         "token_file", "client_cert_file",
                                        "client_key_file", "in_cluster", NULL };
    if (!yread_expect(r->d, n, YNODE_MAP, "'kubernetes'"))
        return;
    k->set = true;
    read_file_ref(r, n, "kubeconfig", CFG_FILE_SECRET, &k->kubeconfig);
    yread_str(r->d, n, "context", &k->context);
    yread_str(r->d, n, "server", &k->server);
    read_file_ref(r, n, "ca_file", CFG_FILE_CA, &k->ca_file);
    read_file_ref(r, n, "token_file", CFG_FILE_SECRET, &k->token_file);
    read_file_ref(r, n, "client_cert_file", CFG_FILE_CERT, &k->client_cert_file);
    read_file_ref(r, n, "client_key_file", CFG_FILE_SECRET, &k->client_key_file);
    yread_bool(r->d, n, "in_cluster", &k->in_cluster);
    yread_unknown_keys(r->d, n, keys);
    int ways = (k->kubeconfig != NULL) + (k->server != NULL) + (k->in_cluster ? 1 : 0);
    if (ways != 1)
        yread_error(r->d, n,
                    "'kubernetes' needs exactly one of 'kubeconfig', 'server' or "
                    "'in_cluster: true'");
    if (k->server && strncmp(k->server, "https://", 8) != 0)
        yread_error(r->d, ynode_get(n, "server"), "'server' must be an https:// URL");
    if (k->server && !k->token_file && !k->client_cert_file)
        yread_error(r->d, n,
                    "'kubernetes' with 'server' needs 'token_file' or "
                    "'client_cert_file'/'client_key_file'");
    if ((k->client_cert_file != NULL) != (k->client_key_file != NULL))
        yread_error(r->d, n, "'client_cert_file' and 'client_key_file' go together");
    if (k->context && !k->kubeconfig)
        yread_error(r->d, ynode_get(n, "context"), "'context' only applies with 'kubeconfig'");
}

static void read_site(struct reader *r, struct ynode *key, struct ynode *n)
{
    static const char *const keys[] = { "role",      "address",          "listen",
                                        "peer_name", "public_addresses", "kubernetes",
                                        "fence",     "self_fence",       NULL };
    struct config *cfg = r->cfg;
    if (cfg->n_sites >= CFG_MAX_SITES) {
        yread_error(r->d, key, "at most %d sites are supported", CFG_MAX_SITES);
        return;
    }
    struct cfg_site *ns = grow(cfg->sites, cfg->n_sites, sizeof *ns);
    if (!ns)
        return;
    cfg->sites = ns;
    struct cfg_site *s = &cfg->sites[cfg->n_sites++];
    s->name = strdup(key->str);
    s->pos = pos_of(key);
    check_name(r, key, "site", key->str);
    if (!yread_expect(r->d, n, YNODE_MAP, "a site"))
        return;
    int role = -1;
    if (yread_enum(r->d, n, "role", role_names, &role) == 0)
        missing(r, n, "site", "role");
    s->role = role < 0 ? ROLE_WITNESS : (enum site_role)role;
    if (yread_hostport(r->d, n, "address", 7400, &s->host, &s->port) == 0)
        missing(r, n, "site", "address");
    if (yread_hostport(r->d, n, "listen", 7400, &s->listen_host, &s->listen_port) <= 0 && s->host) {
        s->listen_host = strdup(s->host);
        s->listen_port = s->port;
    }
    if (yread_str(r->d, n, "peer_name", &s->peer_name) <= 0)
        s->peer_name = strdup(s->name);
    yread_str_list(r->d, n, "public_addresses", CFG_MAX_LIST, &s->public_addresses,
                   &s->n_public_addresses);
    struct ynode *k8s = ynode_get(n, "kubernetes");
    if (k8s && !ynode_is_null(k8s))
        read_k8s(r, k8s, &s->k8s);
    yread_str_list(r->d, n, "fence", CFG_MAX_LIST, &s->fence, &s->n_fence);
    yread_str_list(r->d, n, "self_fence", CFG_MAX_LIST, &s->self_fence, &s->n_self_fence);
    yread_unknown_keys(r->d, n, keys);
}

static void read_sites(struct reader *r, struct ynode *n)
{
    if (!yread_expect(r->d, n, YNODE_MAP, "'sites'"))
        return;
    for (size_t i = 0; i < n->n; i++)
        read_site(r, n->pairs[i].key, n->pairs[i].value);
}

/* ---- tls, postgres -------------------------------------------------------- */

static void read_tls(struct reader *r, struct ynode *n)
{
    static const char *const keys[] = { "ca_file", "cert_file", "key_file", NULL };
    if (!yread_expect(r->d, n, YNODE_MAP, "'tls'"))
        return;
    struct cfg_tls *t = &r->cfg->tls;
    read_file_ref(r, n, "ca_file", CFG_FILE_CA, &t->ca_file);
    read_file_ref(r, n, "cert_file", CFG_FILE_CERT, &t->cert_file);
    read_file_ref(r, n, "key_file", CFG_FILE_SECRET, &t->key_file);
    if (!t->ca_file)
        missing(r, n, "tls", "ca_file");
    if (!t->cert_file)
        missing(r, n, "tls", "cert_file");
    if (!t->key_file)
        missing(r, n, "tls", "key_file");
    if (t->cert_file && t->key_file && !r->opts->no_file_checks)
        config_check_key_pair(r->d, n, t->cert_file, t->key_file);
    yread_unknown_keys(r->d, n, keys);
}

static void read_pg_local(struct reader *r, struct ynode *n, struct cfg_pg_local *l)
{
    static const char *const keys[] = { "data_dir", "bindir", "os_user", "start", "stop", NULL };
    if (!yread_expect(r->d, n, YNODE_MAP, "'local'"))
        return;
    l->set = true;
    if (yread_str(r->d, n, "data_dir", &l->data_dir) == 0)
        missing(r, n, "local", "data_dir");
    if (yread_str(r->d, n, "bindir", &l->bindir) <= 0)
        l->bindir = strdup("/usr/lib/postgresql/15/bin");
    if (yread_str(r->d, n, "os_user", &l->os_user) <= 0)
        l->os_user = strdup("postgres");
    if (yread_str_list(r->d, n, "start", CFG_MAX_LIST, &l->start, &l->n_start) == 0)
        missing(r, n, "local", "start");
    if (yread_str_list(r->d, n, "stop", CFG_MAX_LIST, &l->stop, &l->n_stop) == 0)
        missing(r, n, "local", "stop");
    const char *const *lists[2] = { (const char *const *)l->start, (const char *const *)l->stop };
    size_t counts[2] = { l->n_start, l->n_stop };
    const char *names[2] = { "start", "stop" };
    for (int k = 0; k < 2; k++) {
        if (counts[k] && lists[k][0][0] != '/')
            yread_error(r->d, ynode_get(n, names[k]),
                        "'%s' must begin with an absolute program path (no shell)", names[k]);
    }
    if (l->bindir && l->bindir[0] != '/')
        yread_error(r->d, ynode_get(n, "bindir"), "'bindir' must be an absolute path");
    yread_unknown_keys(r->d, n, keys);
}

static void read_pg_cluster(struct reader *r, struct ynode *key, struct ynode *n)
{
    static const char *const keys[] = { "dbname", "members", "local", NULL };
    struct cfg_postgres *pg = &r->cfg->pg;
    if (pg->n_clusters >= CFG_MAX_LIST) {
        yread_error(r->d, key, "at most %d PostgreSQL clusters", CFG_MAX_LIST);
        return;
    }
    struct cfg_pg_cluster *nc = grow(pg->clusters, pg->n_clusters, sizeof *nc);
    if (!nc)
        return;
    pg->clusters = nc;
    struct cfg_pg_cluster *c = &pg->clusters[pg->n_clusters++];
    c->name = strdup(key->str);
    c->pos = pos_of(key);
    check_name(r, key, "cluster", key->str);
    if (!yread_expect(r->d, n, YNODE_MAP, "a PostgreSQL cluster"))
        return;
    if (yread_str(r->d, n, "dbname", &c->dbname) <= 0)
        c->dbname = strdup(c->name);
    struct ynode *loc = ynode_get(n, "local");
    if (loc && !ynode_is_null(loc))
        read_pg_local(r, loc, &c->local);
    struct ynode *m = ynode_get(n, "members");
    if (!m || ynode_is_null(m)) {
        missing(r, n, "PostgreSQL cluster", "members");
    } else if (yread_expect(r->d, m, YNODE_MAP, "'members'")) {
        for (size_t i = 0; i < m->n && i < CFG_MAX_SITES; i++) {
            struct cfg_member *nm = grow(c->members, c->n_members, sizeof *nm);
            if (!nm)
                return;
            c->members = nm;
            struct cfg_member *mem = &c->members[c->n_members++];
            mem->site = strdup(m->pairs[i].key->str);
            yread_scalar_hostport(r->d, m->pairs[i].value, "a member address", 5432, &mem->host,
                                  &mem->port);
        }
    }
    yread_unknown_keys(r->d, n, keys);
}

static void read_postgres(struct reader *r, struct ynode *n)
{
    static const char *const keys[] = { "user",        "password_file",   "sslmode",
                                        "sslrootcert", "connect_timeout", "replication",
                                        "clusters",    "groups",          NULL };
    static const char *const repl_keys[] = { "user", "password_file", NULL };
    static const char *const sslmodes[] = { "disable",   "allow",       "prefer", "require",
                                            "verify-ca", "verify-full", NULL };
    if (!yread_expect(r->d, n, YNODE_MAP, "'postgres'"))
        return;
    struct cfg_postgres *pg = &r->cfg->pg;
    yread_str(r->d, n, "user", &pg->user);
    read_file_ref(r, n, "password_file", CFG_FILE_SECRET, &pg->password_file);
    int mode = -1;
    if (yread_enum(r->d, n, "sslmode", sslmodes, &mode) > 0) {
        free(pg->sslmode);
        pg->sslmode = strdup(sslmodes[mode]);
    }
    read_file_ref(r, n, "sslrootcert", CFG_FILE_CA, &pg->sslrootcert);
    yread_duration(r->d, n, "connect_timeout", 100, 60000, &pg->connect_timeout_ms);
    struct ynode *rep = ynode_get(n, "replication");
    if (rep && !ynode_is_null(rep) && yread_expect(r->d, rep, YNODE_MAP, "'replication'")) {
        yread_str(r->d, rep, "user", &pg->replication_user);
        read_file_ref(r, rep, "password_file", CFG_FILE_SECRET, &pg->replication_password_file);
        yread_unknown_keys(r->d, rep, repl_keys);
    }
    struct ynode *cl = ynode_get(n, "clusters");
    if (cl && !ynode_is_null(cl) && yread_expect(r->d, cl, YNODE_MAP, "'clusters'")) {
        for (size_t i = 0; i < cl->n; i++)
            read_pg_cluster(r, cl->pairs[i].key, cl->pairs[i].value);
    }
    struct ynode *gr = ynode_get(n, "groups");
    if (gr && !ynode_is_null(gr) && yread_expect(r->d, gr, YNODE_MAP, "'groups'")) {
        for (size_t i = 0; i < gr->n && i < CFG_MAX_LIST; i++) {
            struct cfg_pg_group *ng = grow(pg->groups, pg->n_groups, sizeof *ng);
            if (!ng)
                return;
            pg->groups = ng;
            struct cfg_pg_group *g = &pg->groups[pg->n_groups++];
            g->name = strdup(gr->pairs[i].key->str);
            check_name(r, gr->pairs[i].key, "group", g->name);
            yread_str_list(r->d, gr, g->name, CFG_MAX_LIST, &g->clusters, &g->n_clusters);
            if (!g->n_clusters)
                yread_error(r->d, gr->pairs[i].value, "group '%s' lists no clusters", g->name);
        }
    }
    yread_unknown_keys(r->d, n, keys);
}

/* ---- probes ---------------------------------------------------------------- */

struct probe_defaults {
    int64_t interval_ms, timeout_ms;
    double jitter;
};

static void read_probe_timing(struct reader *r, struct ynode *n, int64_t *interval,
                              int64_t *timeout, double *jitter)
{
    yread_duration(r->d, n, "interval", 50, 3600000, interval);
    yread_duration(r->d, n, "timeout", 10, 600000, timeout);
    yread_ratio(r->d, n, "jitter", jitter);
}

static void read_probe(struct reader *r, struct ynode *n, const struct probe_defaults *def)
{
    static const char *const pg_keys[] = { "name",     "kind",    "site",   "critical",
                                           "interval", "timeout", "jitter", "cluster",
                                           "host",     "port",    "dbname", "max_replay_lag",
                                           NULL };
    static const char *const http_keys[] = { "name",          "kind",        "site",
                                             "critical",      "interval",    "timeout",
                                             "jitter",        "url",         "connect_to",
                                             "expect_status", "expect_body", "ca_file",
                                             "cert_min_days", "keepalive",   NULL };
    static const char *const dns_keys[] = { "name",     "kind",    "site",   "critical",
                                            "interval", "timeout", "jitter", "query",
                                            "type",     "servers", "expect", NULL };
    struct config *cfg = r->cfg;
    if (!yread_expect(r->d, n, YNODE_MAP, "a probe"))
        return;
    if (cfg->n_probes >= CFG_MAX_PROBES) {
        yread_error(r->d, n, "at most %d probes are supported", CFG_MAX_PROBES);
        return;
    }
    struct cfg_probe *np = grow(cfg->probes, cfg->n_probes, sizeof *np);
    if (!np)
        return;
    cfg->probes = np;
    struct cfg_probe *p = &cfg->probes[cfg->n_probes++];
    p->pos = pos_of(n);
    p->interval_ms = def->interval_ms;
    p->timeout_ms = def->timeout_ms;
    p->jitter = def->jitter;
    p->expect_status = 200;
    int kind = -1;
    if (yread_enum(r->d, n, "kind", probe_kind_names, &kind) == 0)
        missing(r, n, "probe", "kind");
    p->kind = kind < 0 ? PROBE_HTTP : (enum probe_kind)kind;
    if (kind < 0) {
        /* Without a valid kind the other keys cannot be judged; the kind
         * error is the one to fix first. */
        yread_str(r->d, n, "name", &p->name);
        yread_str(r->d, n, "site", &p->site);
        return;
    }
    /* yread_str reports a value that is not a scalar itself (-1): then
     * there is nothing to check further. */
    int rc = yread_str(r->d, n, "name", &p->name);
    if (rc == 0)
        missing(r, n, "probe", "name");
    else if (rc > 0)
        check_name(r, ynode_get(n, "name"), "probe", p->name);
    if (yread_str(r->d, n, "site", &p->site) == 0)
        missing(r, n, "probe", "site");
    p->critical = p->kind == PROBE_POSTGRES;
    yread_bool(r->d, n, "critical", &p->critical);
    read_probe_timing(r, n, &p->interval_ms, &p->timeout_ms, &p->jitter);
    if (p->timeout_ms > p->interval_ms * 4)
        yread_error(r->d, ynode_get(n, "timeout") ? ynode_get(n, "timeout") : n,
                    "probe timeout (%lld ms) must be at most 4x its interval (%lld ms)",
                    (long long)p->timeout_ms, (long long)p->interval_ms);
    int64_t v;
    switch (p->kind) {
    case PROBE_POSTGRES:
        yread_str(r->d, n, "cluster", &p->cluster);
        yread_str(r->d, n, "host", &p->host);
        p->port = 5432;
        if (yread_int(r->d, n, "port", 1, 65535, &v) > 0)
            p->port = (uint16_t)v;
        yread_str(r->d, n, "dbname", &p->dbname);
        yread_size(r->d, n, "max_replay_lag", 0, UINT64_MAX / 2, &p->max_replay_lag);
        if (!p->cluster && !p->host)
            yread_error(r->d, n,
                        "postgres probe needs 'cluster' (from postgres.clusters) or "
                        "'host'");
        yread_unknown_keys(r->d, n, pg_keys);
        break;
    case PROBE_HTTP: {
        int urc = yread_str(r->d, n, "url", &p->url);
        if (urc == 0)
            missing(r, n, "http probe", "url");
        else if (urc > 0 && strncmp(p->url, "http://", 7) != 0 &&
                 strncmp(p->url, "https://", 8) != 0)
            yread_error(r->d, ynode_get(n, "url"), "'url' must start with http:// or https://");
        yread_hostport(r->d, n, "connect_to", 0, &p->connect_to_host, &p->connect_to_port);
        if (yread_int(r->d, n, "expect_status", 100, 599, &v) > 0)
            p->expect_status = (int)v;
        yread_str(r->d, n, "expect_body", &p->expect_body);
        read_file_ref(r, n, "ca_file", CFG_FILE_CA, &p->ca_file);
        if (yread_int(r->d, n, "cert_min_days", 0, 3650, &v) > 0)
            p->cert_min_days = (int)v;
        p->keepalive_ms = CFG_DEFAULT_HTTP_KEEPALIVE_MS;
        if (yread_duration(r->d, n, "keepalive", 0, 3600000, &p->keepalive_ms) > 0 &&
            p->keepalive_ms % 1000 != 0)
            yread_error(r->d, ynode_get(n, "keepalive"),
                        "'keepalive' must be 0 or whole seconds (e.g. 30s)");
        yread_unknown_keys(r->d, n, http_keys);
        break;
    }
    case PROBE_DNS: {
        int t = 0;
        if (yread_str(r->d, n, "query", &p->qname) == 0)
            missing(r, n, "dns probe", "query");
        yread_enum(r->d, n, "type", dns_types, &t);
        p->qtype = strdup(dns_types[t]);
        struct ynode *sv = ynode_get(n, "servers");
        if (yread_str_list(r->d, n, "servers", CFG_MAX_LIST, &p->servers, &p->n_servers) > 0) {
            for (size_t i = 0; i < p->n_servers; i++) {
                char *h = NULL;
                uint16_t port;
                const char *why;
                if (hostport_parse(p->servers[i], 53, &h, &port, &why) < 0)
                    yread_error(r->d, sv->type == YNODE_SEQ ? sv->items[i] : sv,
                                "DNS server '%s': %s", p->servers[i], why);
                free(h);
            }
        }
        yread_str(r->d, n, "expect", &p->expect);
        yread_unknown_keys(r->d, n, dns_keys);
        break;
    }
    }
}

static void read_probes(struct reader *r, struct ynode *n, const struct probe_defaults *def)
{
    if (!yread_expect(r->d, n, YNODE_SEQ, "'probes'"))
        return;
    for (size_t i = 0; i < n->n; i++)
        read_probe(r, n->items[i], def);
}

/* ---- quorum, failover, health, approvals ---------------------------------------- */

static void read_health(struct reader *r, struct ynode *n)
{
    static const char *const keys[] = { "fail_after", "down_after", "recover_after", NULL };
    if (!yread_expect(r->d, n, YNODE_MAP, "'health'"))
        return;
    struct cfg_health *h = &r->cfg->health;
    int64_t v;
    if (yread_int(r->d, n, "fail_after", 1, 100, &v) > 0)
        h->fail_after = (int)v;
    yread_duration(r->d, n, "down_after", 0, 3600000, &h->down_after_ms);
    if (yread_int(r->d, n, "recover_after", 1, 100, &v) > 0)
        h->recover_after = (int)v;
    yread_unknown_keys(r->d, n, keys);
}

static void read_quorum(struct reader *r, struct ynode *n)
{
    static const char *const keys[] = {
        "size",         "heartbeat_interval", "peer_timeout",    "lease_timeout", "clock_drift",
        "lease_margin", "election_timeout",   "election_jitter", "max_frame",     NULL
    };
    if (!yread_expect(r->d, n, YNODE_MAP, "'quorum'"))
        return;
    struct cfg_quorum *q = &r->cfg->quorum;
    int64_t v;
    if (yread_int(r->d, n, "size", 1, CFG_MAX_SITES, &v) > 0)
        q->size = (int)v;
    yread_duration(r->d, n, "heartbeat_interval", 10, 60000, &q->heartbeat_interval_ms);
    yread_duration(r->d, n, "peer_timeout", 50, 600000, &q->peer_timeout_ms);
    yread_duration(r->d, n, "lease_timeout", 100, 3600000, &q->lease_timeout_ms);
    yread_ratio(r->d, n, "clock_drift", &q->clock_drift);
    yread_duration(r->d, n, "lease_margin", 0, 600000, &q->lease_margin_ms);
    yread_duration(r->d, n, "election_timeout", 50, 600000, &q->election_timeout_ms);
    yread_duration(r->d, n, "election_jitter", 0, 600000, &q->election_jitter_ms);
    yread_size(r->d, n, "max_frame", 4096, 64u << 20, &q->max_frame);
    yread_unknown_keys(r->d, n, keys);
    if (q->peer_timeout_ms <= q->heartbeat_interval_ms)
        yread_error(r->d, n, "'peer_timeout' must be longer than 'heartbeat_interval'");
    if (q->lease_timeout_ms <= q->heartbeat_interval_ms * 2)
        yread_error(r->d, n, "'lease_timeout' must be more than twice 'heartbeat_interval'");
}

static void read_failover(struct reader *r, struct ynode *n)
{
    static const char *const keys[] = {
        "mode", "target", "runbook", "block_period", "readiness_interval", NULL
    };
    if (!yread_expect(r->d, n, YNODE_MAP, "'failover'"))
        return;
    struct cfg_failover *f = &r->cfg->failover;
    int mode;
    if (yread_enum(r->d, n, "mode", mode_names, &mode) > 0)
        f->mode = (enum failover_mode)mode;
    yread_str(r->d, n, "target", &f->target);
    yread_str(r->d, n, "runbook", &f->runbook);
    yread_duration(r->d, n, "block_period", 0, 30LL * 86400000, &f->block_period_ms);
    yread_duration(r->d, n, "readiness_interval", 1000, 86400000, &f->readiness_interval_ms);
    yread_unknown_keys(r->d, n, keys);
}

static void read_runbooks(struct reader *r, struct ynode *n)
{
    if (!yread_expect(r->d, n, YNODE_MAP, "'runbooks'"))
        return;
    struct config *cfg = r->cfg;
    for (size_t i = 0; i < n->n && i < CFG_MAX_LIST; i++) {
        struct cfg_runbook_ref *nr = grow(cfg->runbooks, cfg->n_runbooks, sizeof *nr);
        if (!nr)
            return;
        cfg->runbooks = nr;
        struct cfg_runbook_ref *rb = &cfg->runbooks[cfg->n_runbooks++];
        rb->name = strdup(n->pairs[i].key->str);
        check_name(r, n->pairs[i].key, "runbook", rb->name);
        rb->pos = pos_of(n->pairs[i].value);
        char *path = NULL;
        if (yread_scalar_str(r->d, n->pairs[i].value, "a runbook path", &path) > 0) {
            rb->path = config_resolve_path(cfg->dir, path);
            free(path);
        }
    }
}

static void read_approvals(struct reader *r, struct ynode *n)
{
    static const char *const keys[] = { "required", "timeout", NULL };
    if (!yread_expect(r->d, n, YNODE_MAP, "'approvals'"))
        return;
    int64_t v;
    if (yread_int(r->d, n, "required", 1, 5, &v) > 0)
        r->cfg->approvals.required = (int)v;
    yread_duration(r->d, n, "timeout", 1000, 7LL * 86400000, &r->cfg->approvals.timeout_ms);
    yread_unknown_keys(r->d, n, keys);
}

/* ---- fencing, ess, dns, notifications, api, operators, log ------------------------ */

static void read_fence(struct reader *r, struct ynode *n)
{
    static const char *const keys[] = {
        "name",   "method",           "site",    "timeout", "cluster", "mode", "url",
        "system", "credentials_file", "ca_file", "command", "verify",  NULL
    };
    static const char *const pg_modes[] = { "read-only", "shutdown", NULL };

    struct config *cfg = r->cfg;
    if (!yread_expect(r->d, n, YNODE_MAP, "a fencing method"))
        return;
    if (cfg->n_fences >= CFG_MAX_LIST) {
        yread_error(r->d, n, "at most %d fencing methods", CFG_MAX_LIST);
        return;
    }
    struct cfg_fence *nf = grow(cfg->fences, cfg->n_fences, sizeof *nf);
    if (!nf)
        return;
    cfg->fences = nf;
    struct cfg_fence *f = &cfg->fences[cfg->n_fences++];
    f->pos = pos_of(n);
    f->timeout_ms = 30000;
    int rc = yread_str(r->d, n, "name", &f->name);
    if (rc == 0)
        missing(r, n, "fencing method", "name");
    else if (rc > 0) /* -1: not a scalar, reported */
        check_name(r, ynode_get(n, "name"), "fencing method", f->name);
    int m = -1;
    if (yread_enum(r->d, n, "method", fence_names, &m) == 0)
        missing(r, n, "fencing method", "method");
    f->method = m < 0 ? FENCE_MANUAL : (enum fence_method)m;
    if (yread_str(r->d, n, "site", &f->site) == 0)
        missing(r, n, "fencing method", "site");
    yread_duration(r->d, n, "timeout", 100, 3600000, &f->timeout_ms);
    yread_str(r->d, n, "cluster", &f->cluster);
    int mode = 0;
    struct ynode *mode_node = ynode_get(n, "mode");
    if (yread_enum(r->d, n, "mode", pg_modes, &mode) > 0 && mode == 1)
        yread_error(r->d, mode_node,
                    "mode 'shutdown' needs access to the database host: use an exec fence "
                    "running 'pg_ctl stop -m fast' there");
    yread_str(r->d, n, "url", &f->url);
    if (yread_str(r->d, n, "system", &f->system) <= 0)
        f->system = strdup("/redfish/v1/Systems/1");
    read_file_ref(r, n, "credentials_file", CFG_FILE_SECRET, &f->credentials_file);
    read_file_ref(r, n, "ca_file", CFG_FILE_CA, &f->ca_file);
    yread_str_list(r->d, n, "command", CFG_MAX_LIST, &f->command, &f->n_command);
    yread_str_list(r->d, n, "verify", CFG_MAX_LIST, &f->verify, &f->n_verify);
    yread_unknown_keys(r->d, n, keys);
    switch (f->method) {
    case FENCE_POSTGRES:
        if (!f->cluster)
            missing(r, n, "postgres fence", "cluster");
        break;
    case FENCE_REDFISH:
        if (!f->url)
            missing(r, n, "redfish fence", "url");
        else if (strncmp(f->url, "https://", 8) != 0)
            yread_error(r->d, ynode_get(n, "url"), "a Redfish 'url' must be https://");
        if (!f->credentials_file)
            missing(r, n, "redfish fence", "credentials_file");
        break;
    case FENCE_EXEC:
        if (!f->n_command)
            missing(r, n, "exec fence", "command");
        if (!f->n_verify)
            missing(r, n, "exec fence", "verify");
        break;
    case FENCE_K8S:
    case FENCE_MANUAL:
    case FENCE_LEASE:
        break;
    }
}

static void read_ess(struct reader *r, struct ynode *n)
{
    static const char *const keys[] = { "namespace", "workloads", NULL };
    static const char *const wkeys[] = { "kind", "name", "selector", "replicas", NULL };
    if (!yread_expect(r->d, n, YNODE_MAP, "'ess'"))
        return;
    struct cfg_ess *e = &r->cfg->ess;
    yread_str(r->d, n, "namespace", &e->namespace_);
    struct ynode *w = ynode_get(n, "workloads");
    if (w && !ynode_is_null(w) && yread_expect(r->d, w, YNODE_SEQ, "'workloads'")) {
        for (size_t i = 0; i < w->n && i < CFG_MAX_LIST; i++) {
            struct ynode *it = w->items[i];
            if (!yread_expect(r->d, it, YNODE_MAP, "a workload"))
                continue;
            struct cfg_workload *nw = grow(e->workloads, e->n_workloads, sizeof *nw);
            if (!nw)
                return;
            e->workloads = nw;
            struct cfg_workload *wl = &e->workloads[e->n_workloads++];
            wl->replicas = 1;
            int k = -1;
            if (yread_enum(r->d, it, "kind", workload_names, &k) == 0)
                missing(r, it, "workload", "kind");
            wl->kind = k < 0 ? WORKLOAD_DEPLOYMENT : (enum workload_kind)k;
            yread_str(r->d, it, "name", &wl->name);
            yread_str(r->d, it, "selector", &wl->selector);
            int64_t v;
            if (yread_int(r->d, it, "replicas", 0, 1000, &v) > 0)
                wl->replicas = (int)v;
            if ((wl->name != NULL) == (wl->selector != NULL))
                yread_error(r->d, it, "a workload needs exactly one of 'name' or 'selector'");
            yread_unknown_keys(r->d, it, wkeys);
        }
    }
    yread_unknown_keys(r->d, n, keys);
}

static bool name_in_zone(const char *name, const char *zone)
{
    size_t ln = strlen(name), lz = strlen(zone);
    while (lz && zone[lz - 1] == '.')
        lz--;
    while (ln && name[ln - 1] == '.')
        ln--;
    if (ln == lz)
        return strncasecmp(name, zone, ln) == 0;
    return ln > lz && name[ln - lz - 1] == '.' && strncasecmp(name + ln - lz, zone, lz) == 0;
}

static void read_dns(struct reader *r, struct ynode *n)
{
    static const char *const keys[] = { "zone", "servers",      "tsig_key_file", "names",
                                        "ttl",  "fence_record", "timeout",       NULL };
    if (!yread_expect(r->d, n, YNODE_MAP, "'dns'"))
        return;
    struct cfg_dns *d = &r->cfg->dns;
    d->set = true;
    if (yread_str(r->d, n, "zone", &d->zone) == 0)
        missing(r, n, "dns", "zone");
    struct ynode *sv = ynode_get(n, "servers");
    if (yread_str_list(r->d, n, "servers", CFG_MAX_LIST, &d->servers, &d->n_servers) == 0)
        missing(r, n, "dns", "servers");
    for (size_t i = 0; i < d->n_servers; i++) {
        char *h = NULL;
        uint16_t port;
        const char *why;
        if (hostport_parse(d->servers[i], 53, &h, &port, &why) < 0)
            yread_error(r->d, sv->type == YNODE_SEQ ? sv->items[i] : sv, "DNS server '%s': %s",
                        d->servers[i], why);
        free(h);
    }
    read_file_ref(r, n, "tsig_key_file", CFG_FILE_SECRET, &d->tsig_key_file);
    struct ynode *nm = ynode_get(n, "names");
    if (yread_str_list(r->d, n, "names", CFG_MAX_LIST, &d->names, &d->n_names) == 0)
        missing(r, n, "dns", "names");
    for (size_t i = 0; d->zone && i < d->n_names; i++) {
        if (!name_in_zone(d->names[i], d->zone))
            yread_error(r->d, nm->type == YNODE_SEQ ? nm->items[i] : nm,
                        "name '%s' is not inside zone '%s'", d->names[i], d->zone);
    }
    yread_duration(r->d, n, "ttl", 1000, 86400000, &d->ttl_ms);
    struct ynode *fr = ynode_get(n, "fence_record");
    if (yread_str(r->d, n, "fence_record", &d->fence_record) > 0 && d->zone &&
        !name_in_zone(d->fence_record, d->zone))
        yread_error(r->d, fr, "fence_record '%s' is not inside zone '%s'", d->fence_record,
                    d->zone);
    if (!d->fence_record && d->n_names) {
        char buf[300];
        snprintf(buf, sizeof buf, "_triad.%s", d->names[0]);
        d->fence_record = strdup(buf);
    }
    yread_duration(r->d, n, "timeout", 100, 60000, &d->timeout_ms);
    yread_unknown_keys(r->d, n, keys);
}

static void read_notify(struct reader *r, struct ynode *n)
{
    static const char *const keys[] = {
        "name", "kind", "url", "url_file", "room", "token_file", "routing_key_file", "events", NULL
    };
    struct config *cfg = r->cfg;
    if (!yread_expect(r->d, n, YNODE_MAP, "a notification"))
        return;
    if (cfg->n_notify >= CFG_MAX_LIST)
        return;
    struct cfg_notify *nn = grow(cfg->notify, cfg->n_notify, sizeof *nn);
    if (!nn)
        return;
    cfg->notify = nn;
    struct cfg_notify *t = &cfg->notify[cfg->n_notify++];
    if (yread_str(r->d, n, "name", &t->name) == 0)
        missing(r, n, "notification", "name");
    int k = -1;
    if (yread_enum(r->d, n, "kind", notify_names, &k) == 0)
        missing(r, n, "notification", "kind");
    t->kind = k < 0 ? NOTIFY_WEBHOOK : (enum notify_kind)k;
    yread_str(r->d, n, "url", &t->url);
    read_file_ref(r, n, "url_file", CFG_FILE_SECRET, &t->url_file);
    yread_str(r->d, n, "room", &t->room);
    read_file_ref(r, n, "token_file", CFG_FILE_SECRET, &t->token_file);
    read_file_ref(r, n, "routing_key_file", CFG_FILE_SECRET, &t->routing_key_file);
    struct ynode *ev = ynode_get(n, "events");
    if (yread_str_list(r->d, n, "events", CFG_MAX_LIST, &t->events, &t->n_events) > 0) {
        for (size_t i = 0; i < t->n_events; i++) {
            bool ok = false;
            for (size_t j = 0; notify_events[j] && !ok; j++)
                ok = strcmp(t->events[i], notify_events[j]) == 0;
            if (!ok)
                yread_error(r->d, ev->type == YNODE_SEQ ? ev->items[i] : ev,
                            "unknown event '%s' (known: odown, gate, step-failed, "
                            "run-finished, readiness)",
                            t->events[i]);
        }
    }
    yread_unknown_keys(r->d, n, keys);
    if (t->url && strncmp(t->url, "http://", 7) != 0 && strncmp(t->url, "https://", 8) != 0)
        yread_error(r->d, ynode_get(n, "url"), "'url' must start with http:// or https://");
    switch (t->kind) {
    case NOTIFY_WEBHOOK:
        if (!t->url && !t->url_file)
            missing(r, n, "webhook notification", "url");
        break;
    case NOTIFY_SLACK:
        if (!t->url && !t->url_file)
            missing(r, n, "slack notification", "url_file");
        break;
    case NOTIFY_MATRIX:
        if (!t->url)
            missing(r, n, "matrix notification", "url");
        if (!t->room)
            missing(r, n, "matrix notification", "room");
        if (!t->token_file)
            missing(r, n, "matrix notification", "token_file");
        break;
    case NOTIFY_PAGERDUTY:
        if (!t->routing_key_file)
            missing(r, n, "pagerduty notification", "routing_key_file");
        if (!t->url)
            t->url = strdup("https://events.pagerduty.com/v2/enqueue");
        break;
    }
}

static void read_api(struct reader *r, struct ynode *n)
{
    static const char *const keys[] = { "socket", "socket_mode", "socket_group", "https", NULL };
    static const char *const hkeys[] = { "listen", "cert_file", "key_file", "client_ca_file",
                                         NULL };
    if (!yread_expect(r->d, n, YNODE_MAP, "'api'"))
        return;
    struct cfg_api *a = &r->cfg->api;
    char *path = NULL;
    if (yread_str(r->d, n, "socket", &path) > 0) {
        free(a->socket);
        a->socket = config_resolve_path(r->cfg->dir, path);
        free(path);
        if (strlen(a->socket) >= 104)
            yread_error(r->d, ynode_get(n, "socket"),
                        "socket path is %zu bytes; Unix sockets allow at most 103",
                        strlen(a->socket));
    }
    char *mode = NULL;
    struct ynode *mn = ynode_get(n, "socket_mode");
    if (yread_str(r->d, n, "socket_mode", &mode) > 0) {
        char *end;
        errno = 0;
        long m = strtol(mode, &end, 8);
        if (errno || *end || m < 0 || m > 0777)
            yread_error(r->d, mn, "'socket_mode' must be an octal mode such as \"0660\"");
        else if (m & 0007)
            yread_error(r->d, mn,
                        "'socket_mode' %s lets everyone on the host control triad; use 0660 "
                        "or 0600",
                        mode);
        else
            a->socket_mode = (unsigned)m;
        free(mode);
    }
    yread_str(r->d, n, "socket_group", &a->socket_group);
    struct ynode *h = ynode_get(n, "https");
    if (h && !ynode_is_null(h) && yread_expect(r->d, h, YNODE_MAP, "'https'")) {
        int lr = yread_hostport(r->d, h, "listen", 7443, &a->https_host, &a->https_port);
        unsigned char addr[sizeof(struct in6_addr)];
        if (lr == 0)
            missing(r, h, "https", "listen");
        /* The listener resolves nothing: a name would need DNS at start-up. */
        else if (lr > 0 && inet_pton(AF_INET, a->https_host, addr) != 1 &&
                 inet_pton(AF_INET6, a->https_host, addr) != 1)
            yread_error(r->d, ynode_get(h, "listen"),
                        "'listen' needs a numeric IPv4 or IPv6 address, not '%s'", a->https_host);
        read_file_ref(r, h, "cert_file", CFG_FILE_CERT, &a->https_cert_file);
        read_file_ref(r, h, "key_file", CFG_FILE_SECRET, &a->https_key_file);
        read_file_ref(r, h, "client_ca_file", CFG_FILE_CA, &a->https_client_ca_file);
        if (!a->https_cert_file != !a->https_key_file)
            yread_error(r->d, h,
                        "'https': cert_file and key_file go together (with neither, the "
                        "site's tls certificate and key are used)");
        else if (a->https_cert_file && !r->opts->no_file_checks)
            config_check_key_pair(r->d, h, a->https_cert_file, a->https_key_file);
        yread_unknown_keys(r->d, h, hkeys);
    }
    yread_unknown_keys(r->d, n, keys);
}

static void read_operators(struct reader *r, struct ynode *n)
{
    static const char *const keys[] = { "name", "unix_user", "cert_cn", "token_sha256", NULL };
    struct config *cfg = r->cfg;
    if (!yread_expect(r->d, n, YNODE_SEQ, "'operators'"))
        return;
    for (size_t i = 0; i < n->n && i < CFG_MAX_LIST; i++) {
        struct ynode *it = n->items[i];
        if (!yread_expect(r->d, it, YNODE_MAP, "an operator"))
            continue;
        struct cfg_operator *no = grow(cfg->operators, cfg->n_operators, sizeof *no);
        if (!no)
            return;
        cfg->operators = no;
        struct cfg_operator *o = &cfg->operators[cfg->n_operators++];
        if (yread_str(r->d, it, "name", &o->name) == 0)
            missing(r, it, "operator", "name");
        yread_str(r->d, it, "unix_user", &o->unix_user);
        yread_str(r->d, it, "cert_cn", &o->cert_cn);
        struct ynode *tk = ynode_get(it, "token_sha256");
        if (yread_str(r->d, it, "token_sha256", &o->token_sha256) > 0) {
            size_t len = strlen(o->token_sha256);
            bool hex = len == 64;
            for (size_t j = 0; j < len && hex; j++) {
                char c = o->token_sha256[j];
                if (c >= 'A' && c <= 'F')
                    o->token_sha256[j] = (char)(c - 'A' + 'a');
                else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
                    hex = false;
            }
            if (!hex)
                yread_error(r->d, tk,
                            "'token_sha256' must be the 64 hex digits of the token's SHA-256 "
                            "(never the token itself)");
        }
        if (!o->unix_user && !o->cert_cn && !o->token_sha256)
            yread_error(r->d, it,
                        "operator needs at least one of 'unix_user', 'cert_cn', 'token_sha256'");
        yread_unknown_keys(r->d, it, keys);
    }
}

static void read_drill(struct reader *r, struct ynode *n)
{
    static const char *const keys[] = { "hook", "timeout", "service_timeout", NULL };
    if (!yread_expect(r->d, n, YNODE_MAP, "'drill'"))
        return;
    struct cfg_drill *dr = &r->cfg->drill;
    if (yread_str_list(r->d, n, "hook", CFG_MAX_LIST, &dr->hook, &dr->n_hook) > 0 &&
        dr->hook[0][0] != '/')
        yread_error(r->d, ynode_get(n, "hook"), "'hook' must begin with an absolute path");
    yread_duration(r->d, n, "timeout", 1000, 86400000, &dr->timeout_ms);
    yread_duration(r->d, n, "service_timeout", 1000, 86400000, &dr->service_timeout_ms);
    yread_unknown_keys(r->d, n, keys);
}

static void read_log(struct reader *r, struct ynode *n)
{
    static const char *const keys[] = { "level", "format", NULL };
    if (!yread_expect(r->d, n, YNODE_MAP, "'log'"))
        return;
    int v;
    if (yread_enum(r->d, n, "level", level_names, &v) > 0)
        r->cfg->log.level = v;
    if (yread_enum(r->d, n, "format", format_names, &v) > 0)
        r->cfg->log.json = v == 1;
    yread_unknown_keys(r->d, n, keys);
}

/* ---- defaults and cross-references ------------------------------------------------- */

static void set_defaults(struct config *cfg)
{
    cfg->state_dir = strdup("/var/lib/triad");
    cfg->pg.user = strdup("triad");
    cfg->pg.sslmode = strdup("prefer");
    cfg->pg.connect_timeout_ms = 2000;
    cfg->pg.replication_user = strdup("replicator");
    cfg->health.fail_after = 3;
    cfg->health.down_after_ms = 1500;
    cfg->health.recover_after = 3;
    cfg->quorum.heartbeat_interval_ms = 500;
    cfg->quorum.peer_timeout_ms = 2000;
    cfg->quorum.lease_timeout_ms = 5000;
    cfg->quorum.clock_drift = 0.05;
    cfg->quorum.lease_margin_ms = 1000;
    cfg->quorum.election_timeout_ms = 2000;
    cfg->quorum.election_jitter_ms = 1000;
    cfg->quorum.max_frame = 1u << 20;
    cfg->failover.mode = MODE_SEMI_AUTOMATIC;
    cfg->failover.runbook = strdup("dc1-loss");
    cfg->failover.block_period_ms = 3600000;
    cfg->failover.readiness_interval_ms = 300000;
    cfg->approvals.required = 1;
    cfg->approvals.timeout_ms = 15 * 60000;
    cfg->ess.namespace_ = strdup("ess");
    cfg->dns.ttl_ms = 60000;
    cfg->dns.timeout_ms = 2000;
    cfg->api.socket = strdup("/run/triad/triad.sock");
    cfg->api.socket_mode = 0660;
    cfg->log.level = LOG_INFO;
    cfg->drill.timeout_ms = 600000;
    cfg->drill.service_timeout_ms = 120000;
}

static void need_site(struct reader *r, const struct cfg_pos *at, const char *what,
                      const char *site)
{
    if (site && !config_site(r->cfg, site)) {
        const char *names[CFG_MAX_SITES];
        for (size_t i = 0; i < r->cfg->n_sites; i++)
            names[i] = r->cfg->sites[i].name;
        const char *s = suggest_closest(site, names, r->cfg->n_sites);
        diag_add(r->d, at->file, at->line, at->col, "%s names unknown site '%s'%s%s%s", what, site,
                 s ? " (did you mean '" : "", s ? s : "", s ? "'?)" : "");
    }
}

static void cross_check(struct reader *r, struct ynode *root)
{
    struct config *cfg = r->cfg;
    struct cfg_pos rootpos = pos_of(root);
    struct cfg_pos sitepos = pos_of(ynode_get(root, "site"));
    if (cfg->site)
        need_site(r, &sitepos, "'site'", cfg->site);

    int primaries = 0, standbys = 0;
    for (size_t i = 0; i < cfg->n_sites; i++) {
        const struct cfg_site *s = &cfg->sites[i];
        primaries += s->role == ROLE_PRIMARY;
        standbys += s->role == ROLE_STANDBY;
        for (size_t j = 0; j < s->n_fence; j++) {
            const struct cfg_fence *f = config_fence(cfg, s->fence[j]);
            if (!f)
                diag_add(r->d, s->pos.file, s->pos.line, s->pos.col,
                         "site '%s': fence names unknown fencing method '%s'", s->name,
                         s->fence[j]);
            else if (f->site && strcmp(f->site, s->name) != 0)
                diag_add(r->d, s->pos.file, s->pos.line, s->pos.col,
                         "site '%s': fence '%s' fences site '%s', not this site", s->name, f->name,
                         f->site);
        }
        for (size_t j = 0; j < s->n_self_fence; j++) {
            const struct cfg_fence *f = config_fence(cfg, s->self_fence[j]);
            if (!f)
                diag_add(r->d, s->pos.file, s->pos.line, s->pos.col,
                         "site '%s': self_fence names unknown fencing method '%s'", s->name,
                         s->self_fence[j]);
            /* A fence without a site was reported where it is defined. */
            else if (f->site && strcmp(f->site, s->name) != 0)
                diag_add(r->d, s->pos.file, s->pos.line, s->pos.col,
                         "site '%s': self_fence '%s' fences site '%s', not this site", s->name,
                         f->name, f->site);
            else if (f->method == FENCE_MANUAL || f->method == FENCE_LEASE ||
                     f->method == FENCE_REDFISH)
                diag_add(r->d, s->pos.file, s->pos.line, s->pos.col,
                         "site '%s': self_fence '%s' uses method '%s', which a site cannot "
                         "run on itself (use postgres, k8s or exec)",
                         s->name, f->name, fence_names[f->method]);
        }
        for (size_t j = 0; j < i; j++) {
            if (cfg->sites[j].host && s->host && strcmp(cfg->sites[j].host, s->host) == 0 &&
                cfg->sites[j].port == s->port)
                diag_add(r->d, s->pos.file, s->pos.line, s->pos.col,
                         "sites '%s' and '%s' have the same address", cfg->sites[j].name, s->name);
        }
    }
    if (cfg->n_sites < 3)
        diag_add(r->d, rootpos.file, rootpos.line, rootpos.col,
                 "'sites' lists %zu site(s); a quorum needs at least 3 (DC1, DC2 and a "
                 "witness)",
                 cfg->n_sites);
    if (cfg->n_sites && primaries != 1)
        diag_add(r->d, rootpos.file, rootpos.line, rootpos.col,
                 "exactly one site must have role 'primary' (found %d)", primaries);
    if (cfg->n_sites && standbys < 1)
        diag_add(r->d, rootpos.file, rootpos.line, rootpos.col,
                 "at least one site must have role 'standby' (a failover target)");

    int majority = (int)cfg->n_sites / 2 + 1;
    struct cfg_pos qpos = pos_of(ynode_get(ynode_get(root, "quorum"), "size"));
    if (!cfg->quorum.size)
        cfg->quorum.size = majority;
    else if (cfg->n_sites && (cfg->quorum.size < majority || cfg->quorum.size > (int)cfg->n_sites))
        diag_add(r->d, qpos.file, qpos.line, qpos.col,
                 "quorum size %d must be a majority of the %zu sites (%d to %zu): anything "
                 "less allows two leaders",
                 cfg->quorum.size, cfg->n_sites, majority, cfg->n_sites);

    struct ynode *fo = ynode_get(root, "failover");
    struct cfg_pos fpos = pos_of(fo ? fo : root);
    if (!cfg->failover.target) {
        diag_add(r->d, fpos.file, fpos.line, fpos.col, "failover: missing required key 'target'");
    } else {
        struct cfg_pos tpos = pos_of(ynode_get(fo, "target"));
        const struct cfg_site *t = config_site(cfg, cfg->failover.target);
        need_site(r, &tpos, "failover.target", cfg->failover.target);
        if (t && t->role != ROLE_STANDBY)
            diag_add(r->d, tpos.file, tpos.line, tpos.col,
                     "failover.target '%s' has role '%s'; it must be a standby", t->name,
                     role_names[t->role]);
    }
    if (!config_runbook(cfg, cfg->failover.runbook)) {
        struct ynode *rn = ynode_get(fo, "runbook");
        struct cfg_pos rpos = pos_of(rn ? rn : (fo ? fo : root));
        if (cfg->failover.mode != MODE_MANUAL || rn)
            diag_add(r->d, rpos.file, rpos.line, rpos.col,
                     "failover.runbook '%s' is not defined under 'runbooks'",
                     cfg->failover.runbook);
    }

    for (size_t i = 0; i < cfg->pg.n_clusters; i++) {
        const struct cfg_pg_cluster *c = &cfg->pg.clusters[i];
        for (size_t j = 0; j < c->n_members; j++)
            need_site(r, &c->pos, "PostgreSQL cluster member", c->members[j].site);
    }
    for (size_t i = 0; i < cfg->pg.n_groups; i++) {
        const struct cfg_pg_group *g = &cfg->pg.groups[i];
        for (size_t j = 0; j < g->n_clusters; j++) {
            if (!config_pg_cluster(cfg, g->clusters[j])) {
                struct cfg_pos gp =
                    pos_of(ynode_get(ynode_get(ynode_get(root, "postgres"), "groups"), g->name));
                diag_add(r->d, gp.file, gp.line, gp.col,
                         "group '%s' names unknown PostgreSQL cluster '%s'", g->name,
                         g->clusters[j]);
            }
        }
    }

    for (size_t i = 0; i < cfg->n_probes; i++) {
        struct cfg_probe *p = &cfg->probes[i];
        need_site(r, &p->pos, "probe", p->site);
        for (size_t j = 0; j < i; j++) {
            if (p->name && cfg->probes[j].name && p->site && cfg->probes[j].site &&
                strcmp(p->name, cfg->probes[j].name) == 0 &&
                strcmp(p->site, cfg->probes[j].site) == 0)
                diag_add(r->d, p->pos.file, p->pos.line, p->pos.col,
                         "probe '%s' for site '%s' is defined twice (first at line %d)", p->name,
                         p->site, cfg->probes[j].pos.line);
        }
        if (p->kind == PROBE_POSTGRES && p->cluster) {
            const struct cfg_pg_cluster *c = config_pg_cluster(cfg, p->cluster);
            if (!c) {
                diag_add(r->d, p->pos.file, p->pos.line, p->pos.col,
                         "probe names unknown PostgreSQL cluster '%s'", p->cluster);
            } else if (!p->host) {
                const struct cfg_member *m = p->site ? config_pg_member(c, p->site) : NULL;
                if (!m && p->site)
                    diag_add(r->d, p->pos.file, p->pos.line, p->pos.col,
                             "PostgreSQL cluster '%s' has no member in site '%s'", c->name,
                             p->site);
                /* A member address or a cluster that did not parse was
                 * reported where it is written: nothing to copy then. */
                else if (m && m->host) {
                    p->host = strdup(m->host);
                    p->port = m->port;
                }
                if (!p->dbname && c->dbname)
                    p->dbname = strdup(c->dbname);
            }
        }
        if (p->kind == PROBE_POSTGRES && !p->dbname)
            p->dbname = strdup("postgres");
        if (p->kind == PROBE_DNS && !p->n_servers) {
            if (!cfg->dns.n_servers)
                diag_add(r->d, p->pos.file, p->pos.line, p->pos.col,
                         "dns probe needs 'servers' (or a top-level dns.servers)");
            for (size_t j = 0; j < cfg->dns.n_servers; j++) {
                char **ns = realloc(p->servers, (p->n_servers + 1) * sizeof *ns);
                if (!ns)
                    break;
                p->servers = ns;
                p->servers[p->n_servers++] = strdup(cfg->dns.servers[j]);
            }
        }
    }

    for (size_t i = 0; i < cfg->n_fences; i++) {
        const struct cfg_fence *f = &cfg->fences[i];
        need_site(r, &f->pos, "fencing method", f->site);
        for (size_t j = 0; j < i; j++) {
            if (f->name && cfg->fences[j].name && strcmp(f->name, cfg->fences[j].name) == 0)
                diag_add(r->d, f->pos.file, f->pos.line, f->pos.col,
                         "fencing method '%s' is defined twice", f->name);
        }
        if (f->method == FENCE_POSTGRES && f->cluster) {
            const struct cfg_pg_cluster *c = config_pg_cluster(cfg, f->cluster);
            if (!c)
                diag_add(r->d, f->pos.file, f->pos.line, f->pos.col,
                         "fencing method names unknown PostgreSQL cluster '%s'", f->cluster);
            else if (f->site && !config_pg_member(c, f->site))
                diag_add(r->d, f->pos.file, f->pos.line, f->pos.col,
                         "PostgreSQL cluster '%s' has no member in site '%s'", c->name, f->site);
        }
        if (f->method == FENCE_K8S && f->site) {
            const struct cfg_site *s = config_site(cfg, f->site);
            if (s && !s->k8s.set)
                diag_add(r->d, f->pos.file, f->pos.line, f->pos.col,
                         "k8s fence: site '%s' has no 'kubernetes' section", f->site);
            if (!cfg->ess.n_workloads)
                diag_add(r->d, f->pos.file, f->pos.line, f->pos.col,
                         "k8s fence needs the workloads to scale (ess.workloads)");
        }
    }

    for (size_t i = 0; i < cfg->n_operators; i++) {
        for (size_t j = 0; j < i; j++) {
            if (cfg->operators[i].name && cfg->operators[j].name &&
                strcmp(cfg->operators[i].name, cfg->operators[j].name) == 0)
                diag_add(r->d, rootpos.file, rootpos.line, rootpos.col,
                         "operator '%s' is defined twice", cfg->operators[i].name);
        }
    }
    if (cfg->approvals.required > 1 && (size_t)cfg->approvals.required > cfg->n_operators) {
        struct cfg_pos ap = pos_of(ynode_get(ynode_get(root, "approvals"), "required"));
        diag_add(r->d, ap.file, ap.line, ap.col,
                 "approvals.required is %d but only %zu operator(s) are defined",
                 cfg->approvals.required, cfg->n_operators);
    }
    /* Without a client CA the HTTPS listener asks for no certificate, so
     * an operator known only by one could never be recognised. */
    if (cfg->api.https_host && !cfg->api.https_client_ca_file) {
        struct cfg_pos hp = pos_of(ynode_get(ynode_get(root, "api"), "https"));
        for (size_t i = 0; i < cfg->n_operators; i++) {
            if (cfg->operators[i].cert_cn)
                diag_add(r->d, hp.file, hp.line, hp.col,
                         "operator '%s' is known by cert_cn, but api.https has no "
                         "client_ca_file: no client certificate is asked for",
                         cfg->operators[i].name ? cfg->operators[i].name : "?");
        }
    }
    /* HTTPS uses the peer certificate unless it has a pair of its own (half
     * a pair is an error, reported where api.https is read). */
    if (cfg->api.https_host && !cfg->api.https_cert_file && !cfg->api.https_key_file) {
        cfg->api.https_cert_file = cfg->tls.cert_file ? strdup(cfg->tls.cert_file) : NULL;
        cfg->api.https_key_file = cfg->tls.key_file ? strdup(cfg->tls.key_file) : NULL;
    }
}

/* ---- entry points ------------------------------------------------------------------ */

int config_load(struct config *cfg, const char *path, const struct config_load_opts *opts,
                struct diag *d)
{
    static const char *const keys[] = { "cluster",       "site",     "state_dir", "sites",
                                        "tls",           "postgres", "health",    "probe_defaults",
                                        "probes",        "quorum",   "failover",  "runbooks",
                                        "approvals",     "fencing",  "ess",       "dns",
                                        "notifications", "api",      "operators", "log",
                                        "drill",         NULL };
    static const char *const pd_keys[] = { "interval", "timeout", "jitter", NULL };
    static const struct config_load_opts no_opts = { 0 };
    memset(cfg, 0, sizeof *cfg);
    struct reader r = { .cfg = cfg, .d = d, .opts = opts ? opts : &no_opts };
    size_t errors_before = diag_mark(d);
    cfg->path = strdup(path);
    cfg->dir = config_dirname(path);
    set_defaults(cfg);
    if (ydoc_load(&r.doc, path, d) < 0)
        goto out;
    struct ynode *root = r.doc.root;
    if (!root) {
        diag_add(d, path, 0, 0, "the file is empty");
        goto out;
    }
    if (!yread_expect(d, root, YNODE_MAP, "the configuration"))
        goto out;

    if (yread_str(d, root, "cluster", &cfg->cluster) == 0)
        missing(&r, root, "configuration", "cluster");
    if (yread_str(d, root, "site", &cfg->site) == 0)
        missing(&r, root, "configuration", "site");
    char *sd = NULL;
    if (yread_str(d, root, "state_dir", &sd) > 0) {
        free(cfg->state_dir);
        cfg->state_dir = config_resolve_path(cfg->dir, sd);
        free(sd);
    }
    struct ynode *n;
    if ((n = ynode_get(root, "sites")) && !ynode_is_null(n))
        read_sites(&r, n);
    else
        missing(&r, root, "configuration", "sites");
    if ((n = ynode_get(root, "tls")) && !ynode_is_null(n))
        read_tls(&r, n);
    else
        missing(&r, root, "configuration", "tls");
    if ((n = ynode_get(root, "postgres")) && !ynode_is_null(n))
        read_postgres(&r, n);
    if ((n = ynode_get(root, "health")) && !ynode_is_null(n))
        read_health(&r, n);
    struct probe_defaults def = { 1000, 1000, 0.1 };
    if ((n = ynode_get(root, "probe_defaults")) && !ynode_is_null(n) &&
        yread_expect(d, n, YNODE_MAP, "'probe_defaults'")) {
        read_probe_timing(&r, n, &def.interval_ms, &def.timeout_ms, &def.jitter);
        yread_unknown_keys(d, n, pd_keys);
    }
    if ((n = ynode_get(root, "probes")) && !ynode_is_null(n))
        read_probes(&r, n, &def);
    if ((n = ynode_get(root, "quorum")) && !ynode_is_null(n))
        read_quorum(&r, n);
    if ((n = ynode_get(root, "failover")) && !ynode_is_null(n))
        read_failover(&r, n);
    if ((n = ynode_get(root, "runbooks")) && !ynode_is_null(n))
        read_runbooks(&r, n);
    if ((n = ynode_get(root, "approvals")) && !ynode_is_null(n))
        read_approvals(&r, n);
    if ((n = ynode_get(root, "fencing")) && !ynode_is_null(n) &&
        yread_expect(d, n, YNODE_SEQ, "'fencing'")) {
        for (size_t i = 0; i < n->n; i++)
            read_fence(&r, n->items[i]);
    }
    if ((n = ynode_get(root, "ess")) && !ynode_is_null(n))
        read_ess(&r, n);
    if ((n = ynode_get(root, "dns")) && !ynode_is_null(n))
        read_dns(&r, n);
    if ((n = ynode_get(root, "notifications")) && !ynode_is_null(n) &&
        yread_expect(d, n, YNODE_SEQ, "'notifications'")) {
        for (size_t i = 0; i < n->n; i++)
            read_notify(&r, n->items[i]);
    }
    if ((n = ynode_get(root, "api")) && !ynode_is_null(n))
        read_api(&r, n);
    if ((n = ynode_get(root, "operators")) && !ynode_is_null(n))
        read_operators(&r, n);
    if ((n = ynode_get(root, "log")) && !ynode_is_null(n))
        read_log(&r, n);
    if ((n = ynode_get(root, "drill")) && !ynode_is_null(n))
        read_drill(&r, n);
    yread_unknown_keys(d, root, keys);
    cross_check(&r, root);

    if (!r.opts->skip_runbooks) {
        json_t *ctx = config_runbook_json(cfg);
        for (size_t i = 0; i < cfg->n_runbooks; i++) {
            if (!cfg->runbooks[i].path)
                continue;
            /* Existence is a file check: with --no-file-checks a runbook
             * that is not on this machine is skipped, one that is gets
             * validated. */
            if (r.opts->no_file_checks && access(cfg->runbooks[i].path, F_OK) != 0)
                continue;
            struct runbook *rb = NULL;
            if (rb_load(cfg->runbooks[i].path, ctx, &rb, d) == 0)
                rb_free(rb);
        }
        json_decref(ctx);
    }
out:
    ydoc_free(&r.doc);
    return diag_mark(d) == errors_before ? 0 : -1;
}

static void free_k8s(struct cfg_k8s *k)
{
    free(k->kubeconfig);
    free(k->context);
    free(k->server);
    free(k->ca_file);
    free(k->token_file);
    free(k->client_cert_file);
    free(k->client_key_file);
}

void config_free(struct config *cfg)
{
    free(cfg->path);
    free(cfg->dir);
    free(cfg->cluster);
    free(cfg->site);
    free(cfg->state_dir);
    for (size_t i = 0; i < cfg->n_sites; i++) {
        struct cfg_site *s = &cfg->sites[i];
        free(s->name);
        free(s->host);
        free(s->listen_host);
        free(s->peer_name);
        str_list_free(s->public_addresses, s->n_public_addresses);
        free_k8s(&s->k8s);
        str_list_free(s->fence, s->n_fence);
        str_list_free(s->self_fence, s->n_self_fence);
    }
    free(cfg->sites);
    free(cfg->tls.ca_file);
    free(cfg->tls.cert_file);
    free(cfg->tls.key_file);
    struct cfg_postgres *pg = &cfg->pg;
    free(pg->user);
    free(pg->password_file);
    free(pg->sslmode);
    free(pg->sslrootcert);
    free(pg->replication_user);
    free(pg->replication_password_file);
    for (size_t i = 0; i < pg->n_clusters; i++) {
        free(pg->clusters[i].name);
        free(pg->clusters[i].dbname);
        for (size_t j = 0; j < pg->clusters[i].n_members; j++) {
            free(pg->clusters[i].members[j].site);
            free(pg->clusters[i].members[j].host);
        }
        free(pg->clusters[i].members);
        struct cfg_pg_local *l = &pg->clusters[i].local;
        free(l->data_dir);
        free(l->bindir);
        free(l->os_user);
        str_list_free(l->start, l->n_start);
        str_list_free(l->stop, l->n_stop);
    }
    free(pg->clusters);
    for (size_t i = 0; i < pg->n_groups; i++) {
        free(pg->groups[i].name);
        str_list_free(pg->groups[i].clusters, pg->groups[i].n_clusters);
    }
    free(pg->groups);
    for (size_t i = 0; i < cfg->n_probes; i++) {
        struct cfg_probe *p = &cfg->probes[i];
        free(p->name);
        free(p->site);
        free(p->cluster);
        free(p->host);
        free(p->dbname);
        free(p->url);
        free(p->connect_to_host);
        free(p->expect_body);
        free(p->ca_file);
        free(p->qname);
        free(p->qtype);
        str_list_free(p->servers, p->n_servers);
        free(p->expect);
    }
    free(cfg->probes);
    free(cfg->failover.target);
    free(cfg->failover.runbook);
    for (size_t i = 0; i < cfg->n_runbooks; i++) {
        free(cfg->runbooks[i].name);
        free(cfg->runbooks[i].path);
    }
    free(cfg->runbooks);
    for (size_t i = 0; i < cfg->n_fences; i++) {
        struct cfg_fence *f = &cfg->fences[i];
        free(f->name);
        free(f->site);
        free(f->cluster);
        free(f->url);
        free(f->system);
        free(f->credentials_file);
        free(f->ca_file);
        str_list_free(f->command, f->n_command);
        str_list_free(f->verify, f->n_verify);
    }
    free(cfg->fences);
    free(cfg->ess.namespace_);
    for (size_t i = 0; i < cfg->ess.n_workloads; i++) {
        free(cfg->ess.workloads[i].name);
        free(cfg->ess.workloads[i].selector);
    }
    free(cfg->ess.workloads);
    free(cfg->dns.zone);
    str_list_free(cfg->dns.servers, cfg->dns.n_servers);
    free(cfg->dns.tsig_key_file);
    str_list_free(cfg->dns.names, cfg->dns.n_names);
    free(cfg->dns.fence_record);
    for (size_t i = 0; i < cfg->n_notify; i++) {
        struct cfg_notify *t = &cfg->notify[i];
        free(t->name);
        free(t->url);
        free(t->url_file);
        free(t->room);
        free(t->token_file);
        free(t->routing_key_file);
        str_list_free(t->events, t->n_events);
    }
    free(cfg->notify);
    free(cfg->api.socket);
    free(cfg->api.socket_group);
    free(cfg->api.https_host);
    free(cfg->api.https_cert_file);
    free(cfg->api.https_key_file);
    free(cfg->api.https_client_ca_file);
    for (size_t i = 0; i < cfg->n_operators; i++) {
        free(cfg->operators[i].name);
        free(cfg->operators[i].unix_user);
        free(cfg->operators[i].cert_cn);
        free(cfg->operators[i].token_sha256);
    }
    free(cfg->operators);
    str_list_free(cfg->drill.hook, cfg->drill.n_hook);
    memset(cfg, 0, sizeof *cfg);
}

const struct cfg_site *config_site(const struct config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_sites; i++) {
        if (cfg->sites[i].name && strcmp(cfg->sites[i].name, name) == 0)
            return &cfg->sites[i];
    }
    return NULL;
}

const struct cfg_site *config_self(const struct config *cfg)
{
    return config_site(cfg, cfg->site);
}

const struct cfg_site *config_primary(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_sites; i++) {
        if (cfg->sites[i].role == ROLE_PRIMARY)
            return &cfg->sites[i];
    }
    return NULL;
}

const struct cfg_pg_cluster *config_pg_cluster(const struct config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->pg.n_clusters; i++) {
        if (strcmp(cfg->pg.clusters[i].name, name) == 0)
            return &cfg->pg.clusters[i];
    }
    return NULL;
}

const struct cfg_member *config_pg_member(const struct cfg_pg_cluster *c, const char *site)
{
    for (size_t i = 0; site && i < c->n_members; i++) {
        if (strcmp(c->members[i].site, site) == 0)
            return &c->members[i];
    }
    return NULL;
}

const struct cfg_pg_group *config_pg_group(const struct config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->pg.n_groups; i++) {
        if (strcmp(cfg->pg.groups[i].name, name) == 0)
            return &cfg->pg.groups[i];
    }
    return NULL;
}

const struct cfg_fence *config_fence(const struct config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_fences; i++) {
        if (cfg->fences[i].name && strcmp(cfg->fences[i].name, name) == 0)
            return &cfg->fences[i];
    }
    return NULL;
}

const struct cfg_runbook_ref *config_runbook(const struct config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_runbooks; i++) {
        if (strcmp(cfg->runbooks[i].name, name) == 0)
            return &cfg->runbooks[i];
    }
    return NULL;
}
