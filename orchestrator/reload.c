/* SIGHUP: the configuration read again, checked like at start (files,
 * runbooks), and applied without a restart when it can be, all or nothing.
 *
 * What applies live: log, failover (mode, target, runbook, block period,
 * readiness interval), approvals, operators, runbooks, notifications,
 * probes and health thresholds, drill. Everything else (sites, TLS,
 * PostgreSQL, fencing, DNS, ESS, quorum timings, the API, state_dir...) is
 * what the quorum, the peer links and the actions are built on: a change
 * there rejects the reload, the running configuration stays whole, and the
 * log names the settings that need a restart (a restart keeps the quorum's
 * state, which is on disk).
 *
 * A reload waits until nothing holds on to the parts it replaces: no run in
 * progress, no self-fence running, no readiness round, no notification
 * queued. It is then applied on the next tick; changed probes are applied
 * by closing the probe scheduler and opening a new one. Quorum state
 * (epoch, votes, leases, the decision) is never touched. */
#include "orchestrator/reload.h"

#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "orchestrator/daemon.h"
#include "orchestrator/notify.h"
#include "orchestrator/readiness.h"

/* Top-level settings of config_to_json() that apply without a restart. */
static const char *const live_keys[] = {
    "log",           "failover", "approvals", "operators", "runbooks",
    "notifications", "probes",   "health",    NULL,
};

static bool is_live(const char *key)
{
    for (size_t i = 0; live_keys[i]; i++) {
        if (!strcmp(live_keys[i], key))
            return true;
    }
    return false;
}

static bool key_changed(json_t *a, json_t *b, const char *key)
{
    return !json_equal(json_object_get(a, key), json_object_get(b, key));
}

int reload_classify(const struct config *cur, const struct config *fresh, struct buf *restart,
                    struct buf *live)
{
    json_t *a = config_to_json(cur), *b = config_to_json(fresh);
    int n = 0;
    const char *key;
    json_t *v;
    json_t *all = json_object();
    json_object_foreach(a, key, v)
    {
        json_object_set(all, key, json_true());
    }
    json_object_foreach(b, key, v)
    {
        json_object_set(all, key, json_true());
    }
    json_object_foreach(all, key, v)
    {
        if (!key_changed(a, b, key))
            continue;
        struct buf *to = is_live(key) ? live : restart;
        if (to)
            buf_printf(to, "%s%s", to->len ? ", " : "", key);
        n += !is_live(key);
    }
    json_decref(all);
    json_decref(a);
    json_decref(b);
    return n;
}

struct reload {
    struct daemon *d;
    struct config *fresh; /* checked, waiting to be applied */
    char live[512];       /* what changes, for the log */
    bool probes_changed;
    bool applying; /* the probe scheduler is closing */
    int64_t since_ms;
    int64_t next_wait_log_ms;
};

static struct reload R;

static void drop_pending(void)
{
    if (R.fresh) {
        config_free(R.fresh);
        free(R.fresh);
        R.fresh = NULL;
    }
}

#define SWAP(a, b)                   \
    do {                             \
        __typeof__(a) swap_tmp_ = a; \
        a = b;                       \
        b = swap_tmp_;               \
    } while (0)

/* The live parts of R.fresh into the daemon's configuration (its old ones
 * go to R.fresh, freed with it). */
static void swap_live(struct config *cfg, struct config *fresh, bool probes)
{
    SWAP(cfg->log, fresh->log);
    SWAP(cfg->failover, fresh->failover);
    SWAP(cfg->approvals, fresh->approvals);
    SWAP(cfg->operators, fresh->operators);
    SWAP(cfg->n_operators, fresh->n_operators);
    SWAP(cfg->runbooks, fresh->runbooks);
    SWAP(cfg->n_runbooks, fresh->n_runbooks);
    SWAP(cfg->notify, fresh->notify);
    SWAP(cfg->n_notify, fresh->n_notify);
    SWAP(cfg->drill, fresh->drill);
    if (probes) {
        SWAP(cfg->probes, fresh->probes);
        SWAP(cfg->n_probes, fresh->n_probes);
        SWAP(cfg->health, fresh->health);
    }
}

static void finish(struct daemon *d)
{
    swap_live(&d->cfg, R.fresh, R.probes_changed);
    log_set_level((enum log_level)d->cfg.log.level);
    log_set_json(d->cfg.log.json);
    /* The readiness checks follow the (maybe new) failover runbook. */
    readiness_close(d->readiness);
    d->readiness = NULL;
    readiness_init(&d->readiness, d);
    drop_pending();
    log_ev(LOG_INFO, "+reload", "configuration applied without a restart",
           { "file", d->config_path }, { "changed", R.live[0] ? R.live : "nothing" });
}

static void on_probes_closed(struct probe_sched *s, void *arg)
{
    (void)s;
    struct daemon *d = arg;
    R.applying = false;
    if (d->stopping) {
        drop_pending();
        daemon_component_closed(d);
        return;
    }
    finish(d);
    daemon_probes_open(d); /* on failure the daemon stops, saying why */
}

/* Something still refers to what a reload replaces. */
static const char *busy(const struct daemon *d)
{
    if (d->q.run_active)
        return "a run is in progress";
    if (d->fences_running)
        return "a self-fence is running";
    if (readiness_busy(d->readiness))
        return "a readiness round is running";
    if (notify_busy(d->notifier))
        return "notifications are queued";
    return NULL;
}

void reload_tick(struct daemon *d)
{
    if (!R.fresh || R.applying || d->stopping)
        return;
    const char *why = busy(d);
    int64_t now = loop_now_ms();
    if (why) {
        if (now >= R.next_wait_log_ms) {
            log_ev(LOG_INFO, "reload-waiting", "the new configuration applies once this is over",
                   { "reason", why });
            R.next_wait_log_ms = now + 60000;
        }
        return;
    }
    if (!R.probes_changed || !d->probes_open) {
        finish(d);
        return;
    }
    /* The scheduler refers to the probes it was opened with. */
    R.applying = true;
    d->probes_open = false;
    probe_sched_close(&d->probes, on_probes_closed, d);
}

void reload_request(struct daemon *d)
{
    struct config *fresh = calloc(1, sizeof *fresh);
    struct diag dg;
    struct buf msg, restart, live;
    diag_init(&dg);
    buf_init(&msg, 4096);
    buf_init(&restart, 1024);
    buf_init(&live, 512);
    if (!fresh) {
        log_ev(LOG_ERROR, "reload-rejected", "out of memory");
        goto out;
    }
    if (config_load(fresh, d->config_path, NULL, &dg) < 0) {
        for (size_t i = 0; i < dg.n; i++)
            buf_printf(&msg, "%s%s:%d:%d: %s", i ? "; " : "", dg.items[i].file, dg.items[i].line,
                       dg.items[i].col, dg.items[i].msg);
        log_ev(LOG_ERROR, "reload-rejected",
               msg.data ? msg.data : "invalid configuration; the running one is kept",
               { "file", d->config_path });
        goto out;
    }
    if (reload_classify(&d->cfg, fresh, &restart, &live) > 0) {
        log_ev(LOG_ERROR, "reload-rejected",
               "these settings only change with a restart; nothing was applied",
               { "file", d->config_path }, { "restart_needed", restart.data },
               { "live", live.data ? live.data : "" });
        goto out;
    }
    if (R.applying) {
        log_ev(LOG_WARN, "reload-rejected", "a reload is being applied; send SIGHUP again after it",
               { "file", d->config_path });
        goto out;
    }
    drop_pending(); /* a newer SIGHUP replaces one still waiting */
    json_t *a = config_to_json(&d->cfg), *b = config_to_json(fresh);
    R.probes_changed = key_changed(a, b, "probes") || key_changed(a, b, "health");
    json_decref(a);
    json_decref(b);
    R.d = d;
    R.fresh = fresh;
    fresh = NULL;
    snprintf(R.live, sizeof R.live, "%s", live.data ? live.data : "");
    R.since_ms = loop_now_ms();
    R.next_wait_log_ms = 0;
    log_ev(LOG_INFO, "reload", "configuration checked; applying", { "file", d->config_path },
           { "changed", R.live[0] ? R.live : "nothing" });
    reload_tick(d);
out:
    if (fresh) {
        config_free(fresh);
        free(fresh);
    }
    buf_free(&msg);
    buf_free(&restart);
    buf_free(&live);
    diag_free(&dg);
}

bool reload_pending(void)
{
    return R.fresh != NULL;
}

bool reload_applying(void)
{
    return R.applying;
}

void reload_forget(void)
{
    if (!R.applying)
        drop_pending();
}
