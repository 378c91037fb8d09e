/* Metrics: probes, sites, quorum, epoch, leader, lease, peer links, the
 * newest run, notifications, a waiting reload. */
#include "orchestrator/metrics.h"

#include <stdio.h>
#include <string.h>

#include "lib/loop.h"
#include "orchestrator/daemon.h"
#include "orchestrator/peers.h"
#include "orchestrator/notify.h"
#include "orchestrator/readiness.h"
#include "orchestrator/reload.h"
#include "orchestrator/runs.h"

/* Label values are names from the configuration (letters, digits, - _ .),
 * so they need no escaping. */
static void help(struct buf *b, const char *name, const char *type, const char *text)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

/* The newest run this daemon knows of: its state and its steps' states. */
static void render_run(struct daemon *d, struct buf *b)
{
    static const char *const step_states[] = {
        "pending", "awaiting_approval", "running", "verifying", "done", "failed", "skipped"
    };
    json_t *run = d->runs ? runs_status(d->runs) : NULL;
    help(b, "triad_run_active", "gauge", "1 while a run is in progress (at any site)");
    buf_printf(b, "triad_run_active %d\n", d->q.run_active);
    if (json_is_object(run)) {
        const char *id = json_string_value(json_object_get(run, "id"));
        const char *rb = json_string_value(json_object_get(run, "runbook"));
        const char *st = json_string_value(json_object_get(run, "state"));
        help(b, "triad_run_info", "gauge", "the newest run: its id, runbook and state");
        buf_printf(b, "triad_run_info{run=\"%s\",runbook=\"%s\",state=\"%s\"} 1\n", id ? id : "",
                   rb ? rb : "", st ? st : "");
        int count[sizeof step_states / sizeof step_states[0]] = { 0 }, gates = 0;
        size_t i;
        json_t *step;
        json_array_foreach(json_object_get(run, "steps"), i, step)
        {
            const char *ss = json_string_value(json_object_get(step, "state"));
            for (size_t k = 0; ss && k < sizeof step_states / sizeof step_states[0]; k++)
                count[k] += !strcmp(ss, step_states[k]);
            gates += json_is_object(json_object_get(step, "gate"));
        }
        help(b, "triad_run_steps", "gauge", "the newest run's steps by state");
        for (size_t k = 0; k < sizeof step_states / sizeof step_states[0]; k++)
            buf_printf(b, "triad_run_steps{state=\"%s\"} %d\n", step_states[k], count[k]);
        help(b, "triad_run_gates_waiting", "gauge",
             "gates of the newest run waiting for operators");
        buf_printf(b, "triad_run_gates_waiting %d\n", gates);
    }
    json_decref(run);
}

static void render_up(struct buf *b, const struct probe *p)
{
    buf_printf(b, "triad_probe_up{site=\"%s\",probe=\"%s\"} %d\n", p->cfg->site, p->cfg->name,
               p->last.done && p->last.ok);
}

static void render_duration(struct buf *b, const struct probe *p)
{
    for (int k = 0; k < PROBE_BUCKETS; k++)
        buf_printf(b,
                   "triad_probe_duration_seconds_bucket{site=\"%s\",probe=\"%s\",le=\"%g\"} "
                   "%llu\n",
                   p->cfg->site, p->cfg->name, probe_bucket_ms[k] / 1000.0,
                   (unsigned long long)p->buckets[k]);
    buf_printf(b,
               "triad_probe_duration_seconds_bucket{site=\"%s\",probe=\"%s\",le=\"+Inf\"} "
               "%llu\n",
               p->cfg->site, p->cfg->name, (unsigned long long)p->duration_count);
    buf_printf(b, "triad_probe_duration_seconds_sum{site=\"%s\",probe=\"%s\"} %.6f\n", p->cfg->site,
               p->cfg->name, p->duration_sum_s);
    buf_printf(b, "triad_probe_duration_seconds_count{site=\"%s\",probe=\"%s\"} %llu\n",
               p->cfg->site, p->cfg->name, (unsigned long long)p->duration_count);
}

static void render_lag(struct buf *b, const struct probe *p)
{
    json_t *lag = json_object_get(p->last.fields, "replay_lag_bytes");
    if (p->cfg->kind == PROBE_POSTGRES && json_is_integer(lag))
        buf_printf(b, "triad_pg_replay_lag_bytes{site=\"%s\",probe=\"%s\"} %lld\n", p->cfg->site,
                   p->cfg->name, (long long)json_integer_value(lag));
}

/* The per-probe families, in order: each a header, then a part per probe. */
static const struct {
    const char *name, *type, *help;
    void (*render)(struct buf *b, const struct probe *p);
} families[] = {
    { "triad_probe_up", "gauge", "1 when the probe's last check passed", render_up },
    { "triad_probe_duration_seconds", "histogram", "time a probe check took", render_duration },
    { "triad_pg_replay_lag_bytes", "gauge",
      "bytes a replica has still to replay, as its postgres probe measures", render_lag },
};
#define N_FAMILIES (sizeof families / sizeof families[0])

static void render_tail(struct daemon *d, struct buf *b);

int metrics_render_next(struct daemon *d, struct buf *b, struct metrics_cursor *c, size_t at_least)
{
    const struct probe_sched *s = &d->probes;
    if (!c->started) {
        c->started = true;
        c->generation = s->generation;
        c->probes = s->probes;
        c->n = s->n;
    } else if (c->generation != s->generation || c->probes != s->probes || c->n != s->n) {
        return -1; /* the probes were reloaded under a scrape in progress */
    }
    size_t start = b->len;
    while (c->family <= N_FAMILIES && b->len - start < at_least) {
        if (c->family == N_FAMILIES) {
            render_tail(d, b);
            c->family++;
        } else if (c->i == 0 && !c->header_done) {
            help(b, families[c->family].name, families[c->family].type, families[c->family].help);
            c->header_done = true;
        } else if (c->i < c->n) {
            families[c->family].render(b, &c->probes[c->i++]);
        } else {
            c->family++;
            c->i = 0;
            c->header_done = false;
        }
    }
    return c->family > N_FAMILIES ? 0 : 1;
}

void metrics_render(struct daemon *d, struct buf *b)
{
    struct metrics_cursor c = { 0 };
    while (metrics_render_next(d, b, &c, SIZE_MAX) > 0) {
    }
}

static void render_tail(struct daemon *d, struct buf *b)
{
    int64_t now = loop_now_ms();
    static const enum quorum_site_state states[] = { QSITE_UNKNOWN, QSITE_UP, QSITE_SDOWN,
                                                     QSITE_ODOWN, QSITE_FENCED };
    help(b, "triad_site_state", "gauge", "1 for the state this daemon sees each site in");
    for (int i = 0; i < (int)d->cfg.n_sites; i++) {
        enum quorum_site_state st = quorum_site_state(&d->q, i, loop_now_ms());
        for (size_t k = 0; k < sizeof states / sizeof states[0]; k++)
            buf_printf(b, "triad_site_state{site=\"%s\",state=\"%s\"} %d\n", d->cfg.sites[i].name,
                       quorum_site_state_name(states[k]), st == states[k]);
    }
    help(b, "triad_peer_link_up", "gauge", "1 when the link to the peer daemon is up");
    for (int i = 0; i < (int)d->cfg.n_sites; i++) {
        if (i != d->self && d->peers)
            buf_printf(b, "triad_peer_link_up{site=\"%s\"} %d\n", d->cfg.sites[i].name,
                       peers_link_up(d->peers, i));
    }
    help(b, "triad_epoch", "gauge", "the highest epoch this daemon has seen");
    buf_printf(b, "triad_epoch %lld\n", (long long)d->q.d.epoch);
    help(b, "triad_quorum_have", "gauge", "sites heard in fresh views, this one included");
    buf_printf(b, "triad_quorum_have %d\n", quorum_have(&d->q, now));
    help(b, "triad_quorum_need", "gauge", "sites a majority needs");
    buf_printf(b, "triad_quorum_need %d\n", d->q.need);
    help(b, "triad_leader", "gauge", "1 when this daemon is the leader of the current epoch");
    buf_printf(b, "triad_leader %d\n", d->q.role == QROLE_LEADER);
    help(b, "triad_lease_held", "gauge", "1 when this (primary) site holds its lease");
    buf_printf(b, "triad_lease_held %d\n", quorum_holds_lease(&d->q, now));
    help(b, "triad_failover_ready", "gauge",
         "1 when the failover runbook's readiness checks pass from this site");
    buf_printf(b, "triad_failover_ready %d\n", readiness_ready(d->readiness));
    help(b, "triad_self_fenced", "gauge", "1 when this site has fenced itself");
    buf_printf(b, "triad_self_fenced %d\n", d->q.self_fenced);
    help(b, "triad_primary", "gauge", "1 for the site the quorum's decisions make primary");
    for (int i = 0; i < (int)d->cfg.n_sites; i++)
        buf_printf(b, "triad_primary{site=\"%s\"} %d\n", d->cfg.sites[i].name, d->q.d.primary == i);
    render_run(d, b);
    help(b, "triad_notifications_sent_total", "counter", "notifications delivered");
    buf_printf(b, "triad_notifications_sent_total %lu\n", notify_sent(d->notifier));
    help(b, "triad_notifications_failed_total", "counter",
         "notifications dropped after their last try");
    buf_printf(b, "triad_notifications_failed_total %lu\n", notify_failed(d->notifier));
    help(b, "triad_reload_pending", "gauge",
         "1 when a reloaded configuration waits for the run in progress to end");
    buf_printf(b, "triad_reload_pending %d\n", reload_pending());
}
