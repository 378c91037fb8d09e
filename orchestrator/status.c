/* The status document (DESIGN.md section 8), as `triad status --json`
 * prints it. */
#include <string.h>

#include "lib/loop.h"
#include "orchestrator/daemon.h"
#include "orchestrator/peers.h"
#include "orchestrator/readiness.h"
#include "orchestrator/reload.h"
#include "orchestrator/runs.h"

json_t *daemon_status(struct daemon *d)
{
    struct quorum *q = &d->q;
    int64_t now = loop_now_ms();
    json_t *sites = json_object();
    for (int i = 0; i < (int)d->cfg.n_sites; i++) {
        json_t *probes = json_array();
        for (size_t k = 0; k < d->probes.n; k++) {
            if (d->probes.probes[k].site == i)
                json_array_append_new(probes, probe_to_json(&d->probes.probes[k]));
        }
        json_t *s = json_pack("{s:s,s:s,s:s,s:o}", "role", config_role_name(d->cfg.sites[i].role),
                              "state", quorum_site_state_name(quorum_site_state(q, i, now)),
                              "health", health_state_name(q->own_view[i]), "probes", probes);
        if (i != d->self && d->peers) {
            int64_t heard = peers_last_heard(d->peers, i);
            json_object_set_new(s, "link", json_string(peers_link_state(d->peers, i)));
            json_object_set_new(s, "last_heard_ms_ago",
                                heard ? json_integer((json_int_t)(now - heard)) : json_null());
        }
        json_object_set_new(sites, d->cfg.sites[i].name, s);
    }
    json_t *leader = json_null();
    if (q->leader >= 0 && q->leader_epoch >= q->d.epoch)
        leader = json_string(quorum_site_name(q, q->leader));
    json_t *decision = json_null();
    if (q->d.decision_epoch)
        decision = json_pack("{s:I,s:s,s:s,s:s,s:s,s:s}", "epoch", (json_int_t)q->d.decision_epoch,
                             "from", quorum_site_name(q, q->d.decision_from), "to",
                             quorum_site_name(q, q->d.decision_to), "leader",
                             quorum_site_name(q, q->d.decision_leader), "run", q->d.decision_run,
                             "kind", q->d.decision_kind);
    static const char *const roles[] = { "follower", "candidate", "leader" };
    json_t *st = json_pack(
        "{s:s,s:s,s:s,s:I,s:o,s:s,s:s,s:{s:i,s:i},s:{s:b,s:b,s:b},s:o,s:o,s:o,"
        "s:o,s:I}",
        "cluster", d->cfg.cluster, "site", d->cfg.site, "version", TRIAD_VERSION, "epoch",
        (json_int_t)q->d.epoch, "leader", leader, "role", roles[q->role], "primary_site",
        quorum_site_name(q, q->d.primary), "quorum", "have", quorum_have(q, now), "need", q->need,
        "lease", "primary", q->d.primary == q->self, "held", quorum_holds_lease(q, now), "fenced",
        q->self_fenced, "decision", decision, "sites", sites, "run",
        d->runs ? runs_status(d->runs) : json_null(), "readiness", readiness_status(d->readiness),
        "uptime_s", (json_int_t)((now - d->started_ms) / 1000));
    /* Fence (or unfence) actions still running: the state above is what
     * the quorum decided, this says whether the world has caught up. */
    json_object_set_new(json_object_get(st, "lease"), "fence_actions_running",
                        json_integer(d->fences_running));
    json_object_set_new(st, "mode", json_string(config_mode_name(d->cfg.failover.mode)));
    json_object_set_new(st, "reload_pending", json_boolean(reload_pending()));
    return st;
}
