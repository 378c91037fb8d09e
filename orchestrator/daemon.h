/* The daemon of one site: probes, peer links, the quorum, self-fencing and
 * the control API, on one loop. */
#ifndef TRIAD_DAEMON_H
#define TRIAD_DAEMON_H

#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

#include "lib/loop.h"
#include "orchestrator/config.h"
#include "orchestrator/privdrop.h"
#include "orchestrator/quorum.h"
#include "probes/probe.h"

struct peers;
struct control;
struct http_client;
struct dns_client;
struct notifier;
struct runs;
struct readiness;

struct fence_job;

struct daemon {
    const char *config_path;
    struct config cfg;
    uv_loop_t *uv;
    struct loop loop;
    struct probe_sched probes;
    bool probes_open;
    struct peers *peers;
    struct control *api;
    struct http_client *http; /* fences, actions and notifications */
    struct dns_client *dns;   /* actions */
    struct notifier *notifier;
    struct runs *runs;
    struct readiness *readiness;
    struct quorum q;
    uv_timer_t tick;
    char state_path[4096];
    struct privdrop drop; /* with drop_user: whom to become once bound */
    bool drop_user;
    char lease_path[4096];     /* the lease across a restart (lease_file.h) */
    int64_t lease_saved_until; /* quorum_lease_until last saved */
    int self;
    int64_t started_ms;
    int64_t next_watchdog_ms;
    bool stopping;
    int closing; /* components still closing */
    int exit_code;
    /* Self-fencing in progress: fences started and verified. */
    int fences_running, fences_ok, fences_failed;
    struct fence_job *fence_jobs; /* until each let go of the HTTP client */
    bool fence_round_failed;      /* the last self-fence round had a failure */
    bool fence_round_unfence;     /* ... and it was lifting the fence */
    /* A round asked for while another still runs: that one is cancelled and
     * this one starts once its jobs have let go (rounds never overlap). */
    bool fence_pending, fence_pending_unfence;
    char fence_pending_why[128];
    int64_t fence_retry_ms, next_fence_retry_ms;
    int client_users; /* while stopping: runs + fence jobs left */
};

/* Runs the daemon until SIGTERM/SIGINT. Returns an exit code (cli.h). */
/* user: USER[:GROUP] to switch to once bound (privdrop.h), or NULL. */
int daemon_run(const char *config_path, const char *user);

/* For reload.c: a new probe scheduler over d->cfg's probes (0 or a
 * negative errno), and the end of a component's close while stopping. */
int daemon_probes_open(struct daemon *d);
void daemon_component_closed(struct daemon *d);

/* The status document of DESIGN.md section 8. */
json_t *daemon_status(struct daemon *d);

#endif
