/* The daemon: start-up, the wiring between probes, peers and the quorum,
 * durable quorum state, self-fencing, graceful stop. */
#include "orchestrator/daemon.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fencing/fence.h"
#include "lib/buf.h"
#include "lib/dns_client.h"
#include "lib/fsutil.h"
#include "lib/http_client.h"
#include "lib/log.h"
#include "lib/sdnotify.h"
#include "orchestrator/cli.h"
#include "orchestrator/control.h"
#include "orchestrator/lease_file.h"
#include "orchestrator/privdrop.h"
#include "orchestrator/notify.h"
#include "orchestrator/peers.h"
#include "orchestrator/readiness.h"
#include "orchestrator/reload.h"
#include "orchestrator/runs.h"

#define TICK_MS         100
#define STOP_TIMEOUT_MS 10000
#define STATE_FILE_MAX  (64 * 1024)

/* ---- durable quorum state ---- */

static int load_state(struct daemon *d, struct quorum_durable *out, bool *found)
{
    struct buf b;
    buf_init(&b, STATE_FILE_MAX);
    *found = false;
    int r = fsutil_read(d->state_path, &b);
    if (r == -ENOENT) {
        buf_free(&b);
        return 0;
    }
    if (r < 0) {
        log_ev(LOG_ERROR, "state-unreadable", strerror(-r), { "file", d->state_path });
        buf_free(&b);
        return r;
    }
    json_error_t jerr;
    json_t *j = json_loadb(b.data ? b.data : "", b.len, 0, &jerr);
    buf_free(&b);
    /* A damaged file is never silently reset: it holds our votes. */
    if (!j || quorum_durable_from_json(&d->cfg, j, out) < 0) {
        log_ev(LOG_ERROR, "state-corrupt",
               "the quorum state file is damaged; refusing to start (it records our votes: "
               "move it away only if you know no vote of this site matters)",
               { "file", d->state_path }, { "error", j ? "bad content" : jerr.text });
        json_decref(j);
        return -EINVAL;
    }
    json_decref(j);
    *found = true;
    return 0;
}

static int io_persist(struct quorum *q, const struct quorum_durable *dur)
{
    struct daemon *d = q->io.data;
    json_t *j = quorum_durable_to_json(q, dur);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!text)
        return -ENOMEM;
    size_t len = strlen(text);
    int r = fsutil_write_atomic(d->state_path, text, len, 0600);
    free(text);
    if (r < 0)
        log_ev(LOG_ERROR, "state-write-failed", strerror(-r), { "file", d->state_path });
    return r;
}

/* ---- quorum callbacks ---- */

static void io_send(struct quorum *q, int site, json_t *msg)
{
    struct daemon *d = q->io.data;
    if (d->peers)
        peers_send(d->peers, site, msg);
}

/* Quorum events carry "key=value key=\"quoted value\"" details: logged as
 * fields of the event line. */
static void io_event(struct quorum *q, const char *name, const char *detail)
{
    (void)q;
    enum log_level lvl = LOG_INFO;
    if (!strcmp(name, "+odown") || !strcmp(name, "+lease-lost") || !strcmp(name, "+self-fence") ||
        !strcmp(name, "+sdown"))
        lvl = LOG_WARN;
    char copy[512];
    snprintf(copy, sizeof copy, "%s", detail);
    struct log_kv kv[16];
    size_t n = 0;
    char *p = copy;
    while (*p && n < 16) {
        while (*p == ' ')
            p++;
        char *eq = strchr(p, '=');
        char *sp = strchr(p, ' ');
        if (!eq || (sp && sp < eq))
            break; /* not key=value: the rest is a message */
        *eq = '\0';
        kv[n].k = p;
        char *v = eq + 1;
        if (*v == '"') {
            v++;
            char *end = strchr(v, '"');
            if (end)
                *end++ = '\0';
            p = end ? end : v + strlen(v);
        } else {
            char *end = strchr(v, ' ');
            if (end)
                *end++ = '\0';
            p = end ? end : v + strlen(v);
        }
        kv[n++].v = v;
    }
    log_emit(lvl, name, *p ? p : NULL, kv, n);
}

/* A self-fence operation, from its start until it let go of the HTTP
 * client (the daemon closes that client only after every job is gone). */
struct fence_job {
    struct daemon *d;
    const char *name;
    struct fence_op *op;
    bool done;
    struct fence_job *next;
};

/* A self-fence that failed (its PostgreSQL down at the time, say) is tried
 * again while the site stays fenced: a server that comes back must not
 * come back writable. Lifting a fence that failed (the Kubernetes API
 * unreachable, say) is tried again while the lease is held: ESS must not
 * stay at 0 replicas at the primary. From 2 s, doubling up to 30 s. */
#define FENCE_RETRY_MIN_MS 2000
#define FENCE_RETRY_MAX_MS 30000

static void on_self_fence_done(struct fence_op *op, int status, const char *detail, void *arg)
{
    (void)op;
    struct fence_job *job = arg;
    struct daemon *d = job->d;
    job->done = true;
    d->fences_running--;
    if (status == 0)
        d->fences_ok++;
    else
        d->fences_failed++;
    if (status != 0 && status != -ECANCELED)
        d->fence_round_failed = true;
    if (status == -ECANCELED && d->fence_pending)
        log_ev(LOG_INFO, "fence-superseded",
               d->fence_pending_unfence ? "cancelled: the fence is being lifted"
                                        : "cancelled: the site is being fenced again",
               { "fence", job->name });
    else
        log_ev(status == 0 ? LOG_INFO : LOG_ERROR,
               status == 0 ? "+fence-verified" : "-fence-failed", detail, { "fence", job->name });
    if (d->fences_running == 0) {
        if (d->fence_round_failed) {
            d->fence_retry_ms = d->fence_retry_ms ? d->fence_retry_ms * 2 : FENCE_RETRY_MIN_MS;
            if (d->fence_retry_ms > FENCE_RETRY_MAX_MS)
                d->fence_retry_ms = FENCE_RETRY_MAX_MS;
            d->next_fence_retry_ms = loop_now_ms() + d->fence_retry_ms;
        } else {
            d->fence_retry_ms = 0;
        }
    }
}

static void clients_release(struct daemon *d);
static void start_fence_round(struct daemon *d, bool unfence, const char *why);

static void on_self_fence_released(void *arg)
{
    struct fence_job *job = arg;
    struct daemon *d = job->d;
    for (struct fence_job **p = &d->fence_jobs; *p; p = &(*p)->next) {
        if (*p == job) {
            *p = job->next;
            break;
        }
    }
    free(job);
    if (d->stopping) {
        clients_release(d);
    } else if (!d->fence_jobs && d->fence_pending) {
        d->fence_pending = false;
        start_fence_round(d, d->fence_pending_unfence, d->fence_pending_why);
    }
}

/* Runs (or lifts) every fence this site applies to itself. One round at a
 * time: a fence and its lifting both act on the same things (the same
 * Deployments, the same PostgreSQL setting), and a late request of an old
 * round landing after the new one would undo it (ESS left at 0 replicas
 * while the lease is held, say) - and its verification would wait for a
 * state that is no longer wanted. So a round still running is cancelled,
 * and the new one starts once every job of the old one has let go. */
static void run_self_fences(struct daemon *d, bool unfence, const char *why)
{
    if (d->fence_jobs && !d->stopping) {
        d->fence_pending = true;
        d->fence_pending_unfence = unfence;
        snprintf(d->fence_pending_why, sizeof d->fence_pending_why, "%s", why);
        for (struct fence_job *j = d->fence_jobs; j; j = j->next) {
            if (!j->done)
                fence_cancel(j->op);
        }
        return;
    }
    start_fence_round(d, unfence, why);
}

static void start_fence_round(struct daemon *d, bool unfence, const char *why)
{
    const struct cfg_site *self = &d->cfg.sites[d->self];
    if (d->stopping) {
        log_ev(LOG_WARN, unfence ? "-self-fence" : "+self-fence",
               "the daemon is stopping: no fence started", { "reason", why });
        return;
    }
    d->fence_round_failed = false;
    d->fence_round_unfence = unfence;
    if (!self->n_self_fence) {
        log_ev(LOG_ERROR, unfence ? "-self-fence" : "+self-fence",
               "no self_fence configured for this site: nothing stops writes here",
               { "reason", why });
        return;
    }
    for (size_t i = 0; i < self->n_self_fence; i++) {
        const struct cfg_fence *f = config_fence(&d->cfg, self->self_fence[i]);
        struct fence_job *job = calloc(1, sizeof *job);
        if (!f || !job) {
            free(job);
            continue;
        }
        job->d = d;
        job->name = f->name;
        int r = fence_start(d->uv, &d->cfg, f, unfence, d->http, on_self_fence_done, job, &job->op);
        if (r < 0) {
            log_ev(LOG_ERROR, "-fence-failed",
                   r == -ENOTSUP ? "this fencing method cannot act on this site by itself "
                                   "(lease, manual) or cannot be lifted"
                                 : strerror(-r),
                   { "fence", f->name }, { "method", config_fence_method_name(f->method) });
            free(job);
            continue;
        }
        fence_on_released(job->op, on_self_fence_released, job);
        job->next = d->fence_jobs;
        d->fence_jobs = job;
        d->fences_running++;
    }
}

static void io_self_fence(struct quorum *q, const char *reason)
{
    run_self_fences(q->io.data, false, reason);
}

static void io_unfence(struct quorum *q, const char *reason)
{
    run_self_fences(q->io.data, true, reason);
}

static void io_decided(struct quorum *q, const struct quorum_durable *dur)
{
    struct daemon *d = q->io.data;
    if (d->runs)
        runs_decided(d->runs, dur);
}

/* ---- wiring ---- */

static void update_views(struct daemon *d)
{
    int64_t now = loop_now_ms();
    for (int i = 0; i < (int)d->cfg.n_sites; i++)
        quorum_set_view(&d->q, i, probe_site_health(&d->probes, i), now);
}

static void on_probe(struct probe_sched *s, struct probe *p, bool changed, void *arg)
{
    (void)s;
    struct daemon *d = arg;
    /* Raw transitions (not debounced) go into a run's journal. */
    if (d->runs && p->last.done && p->last.ok != p->prev_ok)
        runs_probe_changed(d->runs, p->cfg->site, p->cfg->name, p->last.ok, probe_detail(p));
    p->prev_ok = p->last.ok;
    if (changed && !d->stopping) {
        update_views(d);
        quorum_tick(&d->q, loop_now_ms());
    }
}

static void on_peer_msg(struct peers *p, int site, json_t *msg, void *arg)
{
    (void)p;
    struct daemon *d = arg;
    if (d->stopping)
        return;
    if (d->runs && runs_peer_message(d->runs, site, msg)) {
        /* Any message is also proof of life for the quorum. */
        d->q.peers[site].heard = true;
        d->q.peers[site].last_heard_ms = loop_now_ms();
        return;
    }
    quorum_receive(&d->q, site, msg, loop_now_ms());
}

/* Every renewal of our lease (or its loss) goes to the lease file, at most
 * one tick late: a late save only makes a restart fence sooner. */
static void save_lease(struct daemon *d)
{
    int64_t now = loop_now_ms();
    int64_t until = quorum_lease_until(&d->q, now);
    if (until == d->lease_saved_until)
        return;
    int r = lease_file_save(d->lease_path, d->q.d.primary_epoch, until ? until - now : 0);
    if (r < 0 && d->lease_saved_until >= 0)
        log_ev(LOG_WARN, "lease-file", "cannot save the lease: a restart of this daemon will fence",
               { "file", d->lease_path }, { "error", strerror(-r) });
    d->lease_saved_until = r < 0 ? -1 : until;
}

static void on_tick(uv_timer_t *t)
{
    struct daemon *d = t->data;
    if (d->stopping)
        return;
    /* The watchdog proves the loop turns, at half the interval asked for. */
    int64_t wd = sdnotify_watchdog_ms();
    if (wd > 0 && loop_now_ms() >= d->next_watchdog_ms) {
        sdnotify("WATCHDOG=1");
        d->next_watchdog_ms = loop_now_ms() + wd / 2;
    }
    reload_tick(d);
    if (d->fence_round_failed && !d->fence_jobs && loop_now_ms() >= d->next_fence_retry_ms) {
        if (d->q.self_fenced && !d->fence_round_unfence) {
            log_ev(LOG_WARN, "+self-fence", "trying the self-fence again: the last one failed",
                   { "reason", d->q.fence_reason });
            run_self_fences(d, false, "retrying a self-fence that failed");
        } else if (!d->q.self_fenced && d->fence_round_unfence &&
                   quorum_holds_lease(&d->q, loop_now_ms())) {
            log_ev(LOG_WARN, "-self-fence", "lifting the fence again: the last attempt failed");
            run_self_fences(d, true, "retrying to lift a fence");
        }
    }
    /* While a reload replaces the probes, the views stay as they were. */
    if (d->probes_open) {
        probe_sched_tick(&d->probes);
        update_views(d);
    }
    if (d->runs)
        runs_tick(d->runs);
    if (d->readiness)
        readiness_tick(d->readiness);
    quorum_tick(&d->q, loop_now_ms());
    save_lease(d);
}

/* ---- stop ---- */

static void component_closed(struct daemon *d)
{
    if (--d->closing == 0)
        loop_close(&d->loop);
}

void daemon_component_closed(struct daemon *d)
{
    component_closed(d);
}

static void on_probes_closed(struct probe_sched *s, void *arg)
{
    (void)s;
    component_closed(arg);
}

static void on_peers_closed(struct peers *p, void *arg)
{
    (void)p;
    component_closed(arg);
}

static void on_api_closed(void *arg)
{
    component_closed(arg);
}

static void on_http_closed(void *arg)
{
    component_closed(arg);
}

static void on_dns_closed(void *arg)
{
    component_closed(arg);
}

/* The HTTP and DNS clients and the notifier close once their last user
 * (the runs, every self-fence job) is gone. */
static void clients_release(struct daemon *d)
{
    if (--d->client_users > 0)
        return;
    if (d->notifier) {
        d->closing++;
        notify_close(d->notifier, on_http_closed, d);
        d->notifier = NULL;
    }
    if (d->http) {
        d->closing++;
        http_client_close(d->http, on_http_closed, d);
        d->http = NULL;
    }
    if (d->dns) {
        d->closing++;
        dns_client_close(d->dns, on_dns_closed, d);
        d->dns = NULL;
    }
    component_closed(d);
}

static void on_runs_closed(void *arg)
{
    clients_release(arg);
}

static void on_tick_closed(uv_handle_t *h)
{
    component_closed(h->data);
}

static void stop(struct daemon *d)
{
    if (d->stopping)
        return;
    d->stopping = true;
    sdnotify("STOPPING=1");
    d->closing = 1; /* held until every close has started */
    if (d->probes_open) {
        d->closing++;
        probe_sched_close(&d->probes, on_probes_closed, d);
    } else if (reload_applying()) {
        d->closing++; /* a reload is closing the scheduler: its callback counts */
    }
    if (d->peers) {
        d->closing++;
        peers_close(d->peers, on_peers_closed, d);
        d->peers = NULL;
    }
    if (d->api) {
        d->closing++;
        control_close(d->api, on_api_closed, d);
        d->api = NULL;
    }
    if (d->readiness) {
        readiness_close(d->readiness);
        d->readiness = NULL;
    }
    /* One count for the runs and one per self-fence job: the clients
     * close after the last of them (clients_release). */
    d->closing++;
    d->client_users = 1;
    for (struct fence_job *j = d->fence_jobs; j; j = j->next) {
        d->client_users++;
        if (!j->done)
            fence_cancel(j->op);
    }
    if (d->runs) {
        struct runs *r = d->runs;
        d->runs = NULL;
        runs_close(r, on_runs_closed, d);
    } else {
        on_runs_closed(d);
    }
    d->closing++;
    uv_close((uv_handle_t *)&d->tick, on_tick_closed);
    component_closed(d);
}

static void on_stop_signal(struct loop *l, int signum)
{
    (void)signum;
    stop(l->data);
}

static void stop(struct daemon *d);

/* A new probe scheduler over the (reloaded) configuration's probes. A
 * daemon that cannot probe stops (its service manager restarts it) rather
 * than stay in the quorum blind. */
int daemon_probes_open(struct daemon *d)
{
    int r = probe_sched_init(&d->probes, d->uv, &d->cfg, on_probe, d);
    d->probes_open = true; /* closed by stop() even after a failure */
    if (r == 0) {
        probe_sched_start(&d->probes, false);
        return 0;
    }
    log_ev(LOG_ERROR, "probes-failed", strerror(-r));
    d->exit_code = EXIT_FATAL;
    stop(d);
    return r;
}

/* SIGHUP: see reload.c. */
static void on_reload(struct loop *l, int signum)
{
    (void)signum;
    reload_request(l->data);
}

/* ---- start ---- */

static int start(struct daemon *d)
{
    char err[512];
    int r = peers_start(&d->peers, d->uv, &d->cfg, on_peer_msg, d, err, sizeof err);
    if (r < 0) {
        log_ev(LOG_ERROR, "peers-failed", err);
        return EXIT_PEER;
    }
    r = probe_sched_init(&d->probes, d->uv, &d->cfg, on_probe, d);
    d->probes_open = true;
    if (r < 0) {
        log_ev(LOG_ERROR, "probes-failed", strerror(-r));
        return EXIT_FATAL;
    }
    r = control_start(&d->api, d, err, sizeof err);
    if (r < 0) {
        log_ev(LOG_ERROR, "api-failed", err, { "socket", d->cfg.api.socket });
        /* Unusable certificate files are the configuration's fault. */
        return r == -EINVAL ? EXIT_CONFIG : EXIT_FATAL;
    }
    if (d->drop_user) {
        if (privdrop_apply(&d->drop, d->cfg.state_dir, d->cfg.api.socket, err, sizeof err) < 0) {
            log_ev(LOG_ERROR, "privileges", err, { "user", d->drop.user });
            return EXIT_FATAL;
        }
        char ids[48];
        snprintf(ids, sizeof ids, "%u:%u", (unsigned)d->drop.uid, (unsigned)d->drop.gid);
        log_ev(LOG_INFO, "privileges-dropped", "running without root from now on",
               { "user", d->drop.user }, { "uid_gid", ids });
    } else if (geteuid() == 0) {
        log_ev(LOG_WARN, "privileges", "running as root: give --user (or systemd's User=)");
    }
    probe_sched_start(&d->probes, false);
    uv_timer_start(&d->tick, on_tick, TICK_MS, TICK_MS);
    sdnotify("READY=1\nSTATUS=probing; quorum forming");
    return EXIT_OK;
}

int daemon_run(const char *config_path, const char *user)
{
    struct daemon *d = calloc(1, sizeof *d);
    if (!d)
        return EXIT_FATAL;
    d->config_path = config_path;
    if (user) {
        char err[256];
        if (privdrop_resolve(user, &d->drop, err, sizeof err) < 0) {
            fprintf(stderr, "triad daemon: %s\n", err);
            free(d);
            return EXIT_USAGE;
        }
        d->drop_user = true;
    }
    struct diag dg;
    diag_init(&dg);
    if (config_load(&d->cfg, config_path, NULL, &dg) < 0) {
        diag_print(&dg, stderr);
        diag_free(&dg);
        config_free(&d->cfg);
        free(d);
        return EXIT_CONFIG;
    }
    diag_free(&dg);
    log_set_level((enum log_level)d->cfg.log.level);
    log_set_json(d->cfg.log.json);
    http_global_init();
    dns_global_init();
    int result = EXIT_OK;
    d->self = -1;
    for (size_t i = 0; i < d->cfg.n_sites; i++) {
        if (strcmp(d->cfg.sites[i].name, d->cfg.site) == 0)
            d->self = (int)i;
    }
    int r = fsutil_mkdirs(d->cfg.state_dir, 0700);
    if (r < 0) {
        log_ev(LOG_ERROR, "state-dir", strerror(-r), { "dir", d->cfg.state_dir });
        result = EXIT_CONFIG;
        goto out_cfg;
    }
    snprintf(d->state_path, sizeof d->state_path, "%s/quorum.json", d->cfg.state_dir);
    snprintf(d->lease_path, sizeof d->lease_path, "%s/lease", d->cfg.state_dir);
    struct quorum_durable dur;
    bool found = false;
    if (load_state(d, &dur, &found) < 0) {
        result = EXIT_FATAL;
        goto out_cfg;
    }
    uv_loop_t uv;
    uv_loop_init(&uv);
    d->uv = &uv;
    loop_init(&d->loop, &uv, on_stop_signal, on_reload, STOP_TIMEOUT_MS);
    d->loop.data = d;
    uv_timer_init(&uv, &d->tick);
    d->tick.data = d;
    d->started_ms = loop_now_ms();
    http_client_new(&uv, &d->http);
    dns_client_new(&uv, &d->dns);
    d->notifier = notify_new(&uv, &d->cfg, d->http);
    struct quorum_io io = {
        io_send, io_persist, io_event, io_self_fence, io_unfence, io_decided, d
    };
    quorum_init(&d->q, &d->cfg, &io, found ? &dur : NULL, loop_now_ms(),
                (uint64_t)uv_hrtime() ^ (uint64_t)getpid());
    if (!found)
        io_persist(&d->q, &d->q.d);
    quorum_restore_lease(&d->q, lease_file_load(d->lease_path, d->q.d.primary_epoch),
                         loop_now_ms());
    char epoch[24];
    snprintf(epoch, sizeof epoch, "%lld", (long long)d->q.d.epoch);
    log_ev(LOG_INFO, "start", "triad daemon starting", { "version", TRIAD_VERSION },
           { "cluster", d->cfg.cluster }, { "site", d->cfg.site }, { "epoch", epoch },
           { "primary", quorum_site_name(&d->q, d->q.d.primary) });
    readiness_init(&d->readiness, d);
    if (runs_init(&d->runs, d) < 0) {
        log_ev(LOG_ERROR, "journal", "cannot open the run journal", { "dir", d->cfg.state_dir });
        result = EXIT_FATAL;
    } else {
        result = start(d);
    }
    if (result != EXIT_OK)
        stop(d);
    uv_run(&uv, UV_RUN_DEFAULT);
    loop_close_all(&uv);
    if (result == EXIT_OK && d->exit_code != 0)
        result = d->exit_code; /* stopped by a failure while running */
    log_ev(LOG_INFO, "stop", "triad daemon stopped", { "site", d->cfg.site });
out_cfg:
    reload_forget();
    config_free(&d->cfg);
    free(d);
    http_global_cleanup();
    dns_global_cleanup();
    return result;
}
