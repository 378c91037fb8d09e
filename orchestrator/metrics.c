/* Metrics: probes, sites, quorum, epoch, leader, lease, peer links. */
#include "orchestrator/metrics.h"

#include <stdio.h>
#include <string.h>

#include "lib/loop.h"
#include "orchestrator/daemon.h"
#include "orchestrator/peers.h"
#include "orchestrator/readiness.h"

/* Label values are names from the configuration (letters, digits, - _ .),
 * so they need no escaping. */
static void help(struct buf *b, const char *name, const char *type, const char *text)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

void metrics_render(struct daemon *d, struct buf *b)
{
    const struct probe_sched *s = &d->probes;
    int64_t now = loop_now_ms();
    help(b, "triad_probe_up", "gauge", "1 when the probe's last check passed");
    for (size_t i = 0; i < s->n; i++) {
        const struct probe *p = &s->probes[i];
        buf_printf(b, "triad_probe_up{site=\"%s\",probe=\"%s\"} %d\n", p->cfg->site, p->cfg->name,
                   p->last.done && p->last.ok);
    }
    help(b, "triad_probe_duration_seconds", "histogram", "time a probe check took");
    for (size_t i = 0; i < s->n; i++) {
        const struct probe *p = &s->probes[i];
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
        buf_printf(b, "triad_probe_duration_seconds_sum{site=\"%s\",probe=\"%s\"} %.6f\n",
                   p->cfg->site, p->cfg->name, p->duration_sum_s);
        buf_printf(b, "triad_probe_duration_seconds_count{site=\"%s\",probe=\"%s\"} %llu\n",
                   p->cfg->site, p->cfg->name, (unsigned long long)p->duration_count);
    }
    help(b, "triad_pg_replay_lag_bytes", "gauge",
         "bytes a replica has still to replay, as its postgres probe measures");
    for (size_t i = 0; i < s->n; i++) {
        const struct probe *p = &s->probes[i];
        json_t *lag = json_object_get(p->last.fields, "replay_lag_bytes");
        if (p->cfg->kind == PROBE_POSTGRES && json_is_integer(lag))
            buf_printf(b, "triad_pg_replay_lag_bytes{site=\"%s\",probe=\"%s\"} %lld\n",
                       p->cfg->site, p->cfg->name, (long long)json_integer_value(lag));
    }
    static const enum quorum_site_state states[] = { QSITE_UNKNOWN, QSITE_UP, QSITE_SDOWN,
                                                     QSITE_ODOWN, QSITE_FENCED };
    help(b, "triad_site_state", "gauge", "1 for the state this daemon sees each site in");
    for (int i = 0; i < (int)d->cfg.n_sites; i++) {
        enum quorum_site_state st = quorum_site_state(&d->q, i);
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
}
