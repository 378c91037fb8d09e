/* The configuration: typed structs for every section of triad.yaml (the
 * annotated reference is examples/triad.yaml), defaults, and the reader that
 * validates everything, including cross-references, and reports every error
 * as FILE:LINE:COLUMN. */
#ifndef TRIAD_CONFIG_H
#define TRIAD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "lib/diag.h"

#define CFG_MAX_SITES  7
#define CFG_MAX_PROBES 2000
#define CFG_MAX_LIST   64 /* any other list: names, servers, addresses */
/* http probes reuse a connection this long by default (keepalive). */
#define CFG_DEFAULT_HTTP_KEEPALIVE_MS 30000
#define CFG_DEFAULT_PATH              "/etc/triad/triad.yaml"

enum site_role { ROLE_PRIMARY, ROLE_STANDBY, ROLE_WITNESS };
enum failover_mode { MODE_MANUAL, MODE_SEMI_AUTOMATIC, MODE_AUTOMATIC };
enum probe_kind { PROBE_POSTGRES, PROBE_HTTP, PROBE_DNS };
enum fence_method {
    FENCE_POSTGRES,
    FENCE_REDFISH,
    FENCE_K8S,
    FENCE_EXEC,
    FENCE_MANUAL,
    FENCE_LEASE
};
enum notify_kind { NOTIFY_WEBHOOK, NOTIFY_MATRIX, NOTIFY_SLACK, NOTIFY_PAGERDUTY };
enum workload_kind { WORKLOAD_DEPLOYMENT, WORKLOAD_STATEFULSET };

/* Where a value came from, for messages about it after loading. */
struct cfg_pos {
    const char *file;
    int line, col;
};

struct cfg_k8s {
    bool set;
    char *kubeconfig;
    char *context;
    char *server;
    char *ca_file;
    char *token_file;
    char *client_cert_file;
    char *client_key_file;
    bool in_cluster;
};

struct cfg_site {
    char *name;
    enum site_role role;
    char *host; /* peer link address */
    uint16_t port;
    char *listen_host; /* default: host/port */
    uint16_t listen_port;
    char *peer_name; /* default: name */
    char **public_addresses;
    size_t n_public_addresses;
    struct cfg_k8s k8s;
    char **fence; /* how others fence this site, in order (names in fencing) */
    size_t n_fence;
    char **self_fence; /* what this site runs on itself when it loses its lease */
    size_t n_self_fence;
    struct cfg_pos pos;
};

struct cfg_tls {
    char *ca_file;
    char *cert_file;
    char *key_file;
};

struct cfg_member {
    char *site;
    char *host;
    uint16_t port;
};

/* How the daemon on a member's own host manages that PostgreSQL (clean
 * shutdown, pg_rewind, restart as a replica). Strings may contain {site},
 * replaced by the member's site. */
struct cfg_pg_local {
    bool set;
    char *data_dir;
    char *bindir;
    char *os_user;
    char **start; /* argv */
    size_t n_start;
    char **stop;
    size_t n_stop;
};

struct cfg_pg_cluster {
    char *name;
    char *dbname;
    struct cfg_member *members;
    size_t n_members;
    struct cfg_pg_local local;
    struct cfg_pos pos;
};

struct cfg_pg_group {
    char *name;
    char **clusters;
    size_t n_clusters;
};

struct cfg_postgres {
    char *user;
    char *password_file;
    char *sslmode;
    char *sslrootcert;
    int64_t connect_timeout_ms;
    char *replication_user;
    char *replication_password_file;
    struct cfg_pg_cluster *clusters;
    size_t n_clusters;
    struct cfg_pg_group *groups;
    size_t n_groups;
};

struct cfg_health {
    int fail_after;
    int64_t down_after_ms;
    int recover_after;
};

struct cfg_probe {
    char *name;
    enum probe_kind kind;
    char *site;
    bool critical;
    int64_t interval_ms;
    int64_t timeout_ms;
    double jitter;
    /* postgres */
    char *cluster;
    char *host; /* explicit target, or from the cluster's member at `site` */
    uint16_t port;
    char *dbname;
    uint64_t max_replay_lag; /* 0 = no limit */
    /* http */
    char *url;
    char *connect_to_host;
    uint16_t connect_to_port;
    int expect_status;
    char *expect_body;
    char *ca_file;
    int cert_min_days;
    int64_t keepalive_ms; /* reuse a connection this long; 0: a fresh one each check */
    /* dns */
    char *qname;
    char *qtype;
    char **servers;
    size_t n_servers;
    char *expect;
    struct cfg_pos pos;
};

struct cfg_quorum {
    int size;
    int64_t heartbeat_interval_ms;
    int64_t peer_timeout_ms;
    int64_t lease_timeout_ms;
    double clock_drift;
    int64_t lease_margin_ms;
    int64_t election_timeout_ms;
    int64_t election_jitter_ms;
    uint64_t max_frame;
};

struct cfg_failover {
    enum failover_mode mode;
    char *target;
    char *runbook;
    int64_t block_period_ms;
    int64_t readiness_interval_ms;
};

struct cfg_runbook_ref {
    char *name;
    char *path; /* absolute, resolved against the config file's directory */
    struct cfg_pos pos;
};

struct cfg_approvals {
    int required;
    int64_t timeout_ms;
};

struct cfg_fence {
    char *name;
    enum fence_method method;
    char *site;
    int64_t timeout_ms;
    /* postgres */
    char *cluster;
    /* postgres: always read-only; a shutdown needs the database host (exec) */
    /* redfish */
    char *url;
    char *system;
    char *credentials_file;
    char *ca_file;
    /* exec */
    char **command;
    size_t n_command;
    char **verify;
    size_t n_verify;
    struct cfg_pos pos;
};

struct cfg_workload {
    enum workload_kind kind;
    char *name;     /* or */
    char *selector; /* label selector k=v[,k=v] */
    int replicas;
};

struct cfg_ess {
    char *namespace_;
    struct cfg_workload *workloads;
    size_t n_workloads;
};

struct cfg_dns {
    bool set;
    char *zone;
    char **servers; /* host:port strings, normalised */
    size_t n_servers;
    char *tsig_key_file;
    char **names;
    size_t n_names;
    int64_t ttl_ms;
    char *fence_record;
    int64_t timeout_ms;
};

struct cfg_notify {
    char *name;
    enum notify_kind kind;
    char *url;
    char *url_file;
    char *room;
    char *token_file;
    char *routing_key_file;
    char **events;
    size_t n_events;
};

struct cfg_api {
    char *socket;
    unsigned socket_mode;
    char *socket_group;
    char *https_host;
    uint16_t https_port;
    char *https_cert_file;
    char *https_key_file;
    char *https_client_ca_file;
};

struct cfg_operator {
    char *name;
    char *unix_user;
    char *cert_cn;
    char *token_sha256; /* lowercase hex */
};

/* Game-day drills: the hook that injects the fault and measures writes
 * (the lab's script, an operator's script, or one that tells a human what
 * to do and waits). */
struct cfg_drill {
    char **hook; /* argv; called as HOOK... PHASE SCENARIO SITE */
    size_t n_hook;
    int64_t timeout_ms;         /* the whole drill */
    int64_t service_timeout_ms; /* after the run: writes through the public name */
};

struct cfg_log {
    int level; /* enum log_level */
    bool json;
};

struct config {
    char *path;
    char *dir; /* directory of the file, for relative paths */
    char *cluster;
    char *site; /* this daemon's site */
    char *state_dir;
    struct cfg_site *sites;
    size_t n_sites;
    struct cfg_tls tls;
    struct cfg_postgres pg;
    struct cfg_health health;
    struct cfg_probe *probes;
    size_t n_probes;
    struct cfg_quorum quorum;
    struct cfg_failover failover;
    struct cfg_runbook_ref *runbooks;
    size_t n_runbooks;
    struct cfg_approvals approvals;
    struct cfg_fence *fences;
    size_t n_fences;
    struct cfg_ess ess;
    struct cfg_dns dns;
    struct cfg_notify *notify;
    size_t n_notify;
    struct cfg_api api;
    struct cfg_operator *operators;
    size_t n_operators;
    struct cfg_drill drill;
    struct cfg_log log;
};

struct config_load_opts {
    bool no_file_checks; /* skip existence/permission/certificate checks */
    bool skip_runbooks;  /* do not load and validate the runbook files */
};

/* Reads and validates `path`. Every problem goes to `d`; returns 0 when the
 * file is valid, -1 otherwise (cfg is then partially filled and must still be
 * freed with config_free). */
int config_load(struct config *cfg, const char *path, const struct config_load_opts *opts,
                struct diag *d);
void config_free(struct config *cfg);

/* Lookups; NULL when absent. */
const struct cfg_site *config_site(const struct config *cfg, const char *name);
const struct cfg_site *config_self(const struct config *cfg);
const struct cfg_site *config_primary(const struct config *cfg);
const struct cfg_pg_cluster *config_pg_cluster(const struct config *cfg, const char *name);
const struct cfg_member *config_pg_member(const struct cfg_pg_cluster *c, const char *site);
const struct cfg_pg_group *config_pg_group(const struct config *cfg, const char *name);
const struct cfg_fence *config_fence(const struct config *cfg, const char *name);
const struct cfg_runbook_ref *config_runbook(const struct config *cfg, const char *name);

const char *config_role_name(enum site_role r);
const char *config_mode_name(enum failover_mode m);
const char *config_probe_kind_name(enum probe_kind k);
const char *config_fence_method_name(enum fence_method m);

/* The resolved configuration as a JSON document (defaults filled in; no
 * secrets, only file paths). Caller decrefs. */
json_t *config_to_json(const struct config *cfg);
/* The same with only the site and name of each probe: what runbook
 * parameters such as ${sites.dc2.public_addresses} resolve against. The
 * whole of a thousand probes would make it megabytes, built for every run
 * and every readiness round. */
json_t *config_runbook_json(const struct config *cfg);

#endif
