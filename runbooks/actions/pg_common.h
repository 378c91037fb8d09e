/* Shared runtime of the pg.* actions (promote, follow, demote, rewind).
 *
 * - The servers a step works on: the members of the clusters of its
 *   database group, one node per PostgreSQL instance (clusters of a group
 *   may share an instance: the lab keeps synapse and mas in one), or per
 *   database where that matters (the epoch table), each with one
 *   lib/pg_async connection as postgres.user or as the replication user.
 * - Observations of a node in one round trip (role, LSNs, timeline, wal
 *   receiver, read-only, replay pause), several nodes at once.
 * - On a member's own host (postgres.clusters.X.local): programs run as
 *   the database's OS user through lib/proc (pg_ctl, pg_controldata,
 *   pg_rewind, pg_basebackup), and the files a stopped server reads when
 *   it starts as a replica.
 * - Pure helpers (tested in tests/unit/test_pg_actions.c): LSN distances,
 *   conninfo and SQL literals, {site} expansion, replication slot names,
 *   pg_controldata output, postgresql.auto.conf rewriting, .pgpass lines.
 *
 * Every action keeps a struct pgc_ctx first in its state; the operations
 * below continue with a function of the action once done, unless the
 * operation was finished (pgc_done) or cancelled meanwhile. */
#ifndef TRIAD_PG_COMMON_H
#define TRIAD_PG_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/pg_async.h"
#include "lib/proc.h"
#include "orchestrator/config.h"
#include "runbooks/action.h"

#define PGC_MAX_NODES     32
#define PGC_POLL_MS       200
#define PGC_SLOT_NAME_MAX 64            /* NAMEDATALEN */
#define PGC_FILE_MAX      (1024 * 1024) /* a configuration file we read */
#define PGC_CONF_FILES    32            /* configuration files kept across pg_rewind */

/* --- pure helpers --------------------------------------------------------------------- */

/* Bytes by which `lsn` is behind `ahead` (0 when it is not behind). */
uint64_t pgc_lsn_behind(uint64_t lsn, uint64_t ahead);
/* "0/3000148" into out (PG_ASYNC_LSN_STRLEN bytes at least). */
const char *pgc_lsn_str(uint64_t lsn, char *out, size_t len);
/* A byte count for messages: "0 B", "12 kB", "3.5 MB" (units of 1024, as
 * PostgreSQL's pg_size_pretty). */
void pgc_bytes_str(uint64_t bytes, char *out, size_t len);

/* Replaces every "{site}" in `in` by `site`. 0, or -ENOSPC when it does not
 * fit in out. */
int pgc_expand_site(const char *in, const char *site, char *out, size_t len);

/* A physical replication slot name for a site: lower case, characters
 * outside [a-z0-9_] become '_', at most PGC_SLOT_NAME_MAX - 1. */
void pgc_slot_name(const char *site, char *out, size_t len);

/* Appends `key='value'` (with a separating space when b is not empty) in
 * libpq's conninfo syntax: the value single-quoted, \ and ' escaped. */
int pgc_conninfo_add(struct buf *b, const char *key, const char *value);

/* What a replica's primary_conninfo names. NULL members are left out. */
struct pgc_conninfo {
    const char *host;
    uint16_t port;
    const char *user;
    const char *password;
    const char *application_name;
    const char *sslmode;
    const char *sslrootcert;
    const char *dbname;
    int64_t connect_timeout_s; /* 0: left out */
};
int pgc_conninfo_build(struct buf *b, const struct pgc_conninfo *ci);

/* Appends a SQL string literal for `s` (E'...', quotes doubled, backslashes
 * escaped), valid whatever standard_conforming_strings says. */
int pgc_sql_literal(struct buf *b, const char *s);

/* Appends a postgresql.conf value: '...' with ' and \ doubled, as ALTER
 * SYSTEM writes them. */
int pgc_conf_literal(struct buf *b, const char *s);

/* A .pgpass line matching every server for `password` (":" and "\"
 * escaped), newline-terminated. */
int pgc_pgpass_line(struct buf *b, const char *password);

/* postgresql.auto.conf `old` (may be NULL) with every setting named in
 * keys[] removed and `key = value` lines appended for the non-NULL values
 * (NULL-terminated arrays of the same length). Other lines are kept as
 * they are; the header ALTER SYSTEM writes is added to a new file. */
int pgc_autoconf_set(const char *old, const char *const *keys, const char *const *values,
                     struct buf *out);

/* What pg_controldata prints that the actions use (LC_ALL=C output). */
struct pgc_controldata {
    char state[40]; /* "shut down", "shut down in recovery", "in production", ... */
    bool have_checkpoint;
    uint64_t checkpoint_lsn; /* Latest checkpoint location */
    uint64_t redo_lsn;       /* Latest checkpoint's REDO location */
    int64_t timeline;        /* Latest checkpoint's TimeLineID */
    uint64_t min_recovery_lsn;
    bool wal_log_hints;
    int64_t checksum_version;
};
/* 0, or -EINVAL when the state or the checkpoint location is missing. */
int pgc_controldata_parse(const char *text, struct pgc_controldata *out);
/* Cleanly stopped: "shut down" or "shut down in recovery". */
bool pgc_controldata_clean(const struct pgc_controldata *cd);

/* --- runtime ------------------------------------------------------------------------------ */

struct pgc_ctx;
struct pgc_node;

typedef void (*pgc_fn)(struct pgc_ctx *c);
typedef void (*pgc_query_cb)(struct pgc_node *n, struct pg_async_result *r);
typedef void (*pgc_proc_cb)(struct pgc_ctx *c, const struct proc_result *r);
typedef void (*pgc_controldata_cb)(struct pgc_ctx *c, int status, const struct pgc_controldata *cd,
                                   const char *why);

enum pgc_as { PGC_AS_TRIAD, PGC_AS_REPLICATION };

/* One observation of a node (pgc_observe). */
struct pgc_obs {
    bool done;
    int err;          /* 0: it answered; else why not (negative errno) */
    char detail[200]; /* when err */
    bool in_recovery;
    bool read_only; /* default_transaction_read_only */
    bool has_current, has_receive, has_replay, has_latest_end;
    uint64_t current_lsn, receive_lsn, replay_lsn, latest_end_lsn;
    int64_t timeline; /* a primary's; a replica's received timeline (0: unknown) */
    char pause_state[24];
    char wr_status[24]; /* pg_stat_wal_receiver.status; "" when no wal receiver */
    char sender_host[128];
    int64_t sender_port;
    int64_t received_tli;
    char slot_name[PGC_SLOT_NAME_MAX];
    char sync_names[200];
    bool wal_log_hints, data_checksums;
};

struct pgc_node {
    struct pgc_ctx *c;
    const char *site;
    const struct cfg_pg_cluster *cluster; /* the first served: dbname, local */
    const struct cfg_member *member;
    const char *dbname;
    enum pgc_as as;
    char label[160]; /* "127.0.2.5:5432 (dc2)" */
    pg_async_t *pg;
    struct pgc_obs obs;
    /* the query waiting for its connection */
    const char *sql;
    int nparams;
    const char *params[4];
    char *param_copy[4];
    uint32_t timeout_ms;         /* per query; 0: PG_ASYNC_QUERY_TIMEOUT_MS */
    uint32_t connect_timeout_ms; /* set before its first query; 0: pg.connect_timeout */
    uint32_t saved_timeout;
    bool restore_timeout;
    pgc_query_cb cb;
    /* for the actions */
    int stage;
    int64_t value;
    bool flag;
};

struct pgc_ctx {
    struct rb_exec *x;
    const struct config *cfg;
    const struct cfg_pg_cluster *clusters[CFG_MAX_LIST];
    size_t n_clusters;
    struct pgc_node nodes[PGC_MAX_NODES];
    size_t n_nodes;
    uv_timer_t timer;
    bool timer_open;
    pgc_fn timer_fn;
    size_t pending; /* observations in flight */
    pgc_fn after_observe;
    struct proc *proc;
    bool proc_running;
    pgc_proc_cb proc_cb;
    pgc_controldata_cb cd_cb;
    char passfile[64];                  /* a temporary .pgpass to remove, or "" */
    int64_t deadline_ms;                /* loop time */
    bool over;                          /* finished or cancelled: nothing more starts */
    int closing;                        /* handles still closing while released */
    void (*cleanup)(struct pgc_ctx *c); /* the action's own, at release */
};

/* Sets up c for x (clusters from `group`/`cluster`, the timer, the time
 * budget: 90% of the step's timeout, so the action times out with its own
 * detail before the engine does). 0, or a negative errno after pgc_done. */
int pgc_init(struct pgc_ctx *c, struct rb_exec *x);

/* The node for a cluster's member at a site (existing one for the same
 * instance and user, and also database when per_db), or NULL when the
 * cluster has no member there (or too many nodes). */
struct pgc_node *pgc_node_get(struct pgc_ctx *c, const struct cfg_pg_cluster *cl, const char *site,
                              enum pgc_as as, bool per_db);
/* The distinct instances of the step's clusters at a site (as triad). */
size_t pgc_site_nodes(struct pgc_ctx *c, const char *site, struct pgc_node **out, size_t max);

/* Observes the nodes (all at once), then calls `then`. */
void pgc_observe(struct pgc_ctx *c, struct pgc_node *const *nodes, size_t n, pgc_fn then);
/* A query on a node, connecting first when needed. The SQL is borrowed
 * until cb runs; parameters are copied. 0 or a negative errno (cb will not
 * run). */
int pgc_query(struct pgc_node *n, const char *sql, int nparams, const char *const *params,
              pgc_query_cb cb);
/* A query that may take long (CHECKPOINT): bounded by the time left
 * instead of the default query timeout. */
int pgc_query_long(struct pgc_node *n, const char *sql, pgc_query_cb cb);
/* Drops a node's connection (the next query opens a fresh session). */
void pgc_disconnect(struct pgc_node *n);

/* Calls fn after ms. */
void pgc_later(struct pgc_ctx *c, uint64_t ms, pgc_fn fn);
int64_t pgc_left_ms(const struct pgc_ctx *c);

/* Runs a program (lib/proc), bounded by the time left. 0 or a negative
 * errno (cb will not run). */
int pgc_spawn(struct pgc_ctx *c, const char *const *argv, const char *const *env, pgc_proc_cb cb);

/* Ends the operation (once); later callbacks do nothing. */
void pgc_done(struct pgc_ctx *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* cancel and release for every pg.* action (state starts with pgc_ctx). */
void pgc_cancel(struct rb_exec *x);
void pgc_release(struct rb_exec *x);

/* The old primary's site for a step that promotes `site`: the run's `from`
 * when it is another site, else the configured primary site; NULL when
 * that is `site` itself. */
const char *pgc_old_primary(struct pgc_ctx *c, const char *site);

/* Reads the first line of a password file (capped). 0 or a negative errno. */
int pgc_read_password(const char *path, char *out, size_t len);

/* primary_conninfo for a replica at `site` streaming from member m. The
 * replication password is in it (wipe b after use). */
int pgc_replica_conninfo(const struct config *cfg, const struct cfg_member *m, const char *site,
                         struct buf *b, char *why, size_t whylen);

/* --- the member's own host -------------------------------------------------------------- */

/* A cluster's `local` settings for one site, {site} expanded. */
struct pgc_local {
    char data_dir[1024];
    char bindir[1024];
    char os_user[64];
    char **start; /* NULL-terminated argv, or NULL: pg_ctl start */
    char **stop;  /* or NULL: pg_ctl stop -m fast */
};
int pgc_local_get(const struct cfg_pg_cluster *cl, const char *site, struct pgc_local *out,
                  char *why, size_t whylen);
void pgc_local_free(struct pgc_local *l);

/* Runs bindir/prog with args as the OS user (through runuser when the
 * daemon is root), LC_ALL=C, plus env additions. */
int pgc_spawn_pg(struct pgc_ctx *c, const struct pgc_local *l, const char *prog,
                 const char *const *args, const char *const *env, pgc_proc_cb cb);
/* The configured stop/start, else pg_ctl (-m fast / -w). */
int pgc_stop_server(struct pgc_ctx *c, const struct pgc_local *l, pgc_proc_cb cb);
int pgc_start_server(struct pgc_ctx *c, const struct pgc_local *l, pgc_proc_cb cb);

/* Runs pg_controldata on the data directory and parses it. cb gets 0 and
 * the values, or a negative errno and why. */
int pgc_read_controldata(struct pgc_ctx *c, const struct pgc_local *l, pgc_controldata_cb cb);

/* Makes a stopped server start as a replica: primary_conninfo and
 * primary_slot_name in postgresql.auto.conf (the file ALTER SYSTEM owns
 * and PostgreSQL reads last, so later ALTER SYSTEM calls replace them
 * cleanly), then standby.signal. Files get the data directory's owner.
 * Synchronous (small local files). 0 or a negative errno with why. */
int pgc_write_standby(const struct pgc_local *l, const char *conninfo, const char *slot, char *why,
                      size_t whylen);

/* A temporary .pgpass readable only by the data directory's owner, for a
 * program run as the OS user (PGPASSFILE); removed at release or by
 * pgc_passfile_remove. 0 or a negative errno. */
int pgc_passfile_create(struct pgc_ctx *c, const struct pgc_local *l, const char *password_file);
void pgc_passfile_remove(struct pgc_ctx *c);

/* snprintf for messages that may be cut (paths, server messages). */
void pgc_fmt(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A proc's output tail for messages. */
void pgc_proc_tail(const struct proc_result *r, char *out, size_t len);

#endif
