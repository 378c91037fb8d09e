/* The quorum: the safety core (DESIGN.md section 5), as a state machine with
 * no I/O of its own. The daemon feeds it time, this site's view of every
 * site and the peers' messages; it answers through callbacks: send a message,
 * persist the durable state (synchronously, before anything that depends on
 * it is sent), report a named event, fence this site, start a run.
 *
 * Protocol, in short:
 *  - Heartbeats carry each daemon's view of every site. ODOWN(X) at D: D sees
 *    X sdown and at least `quorum` sites (D included) report X sdown in fresh
 *    views. A daemon that cannot hear a majority never declares ODOWN.
 *  - Epochs and votes (Redis Sentinel style): a candidate increments the
 *    epoch, persists it with its own vote, and asks for votes; a peer grants
 *    one vote per epoch, persisted before it is sent, and only if it also sees
 *    the target sdown. A majority makes the candidate leader of that epoch.
 *    The preferred target stands at once, others after a random delay; a
 *    candidate that loses backs off.
 *  - Decision: the leader records "epoch e: from -> to, run R" on a majority
 *    (each peer persists it before acknowledging) before anything changes
 *    the world.
 *  - Lease (booth style): the primary site's daemon asks for a lease with
 *    every heartbeat; a peer that grants it promises not to consider the
 *    lease expired until lease_timeout x (1 + clock_drift) + lease_margin
 *    after its grant, on its own clock. The primary holds the lease from the
 *    send time of the latest request a majority acknowledged, for
 *    lease_timeout on its clock; past that it fences itself, and lifts that
 *    fence when a majority grants the lease again. A daemon that starts as
 *    primary gets lease_margin / 2 to hear a majority. A decision's
 *    acknowledgements carry each peer's remaining promise, so the leader
 *    knows when the old primary's lease has surely expired
 *    (quorum_lease_expired) - the runbook does not promote before that
 *    unless a fence was verified.
 */
#ifndef TRIAD_QUORUM_H
#define TRIAD_QUORUM_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "orchestrator/config.h"
#include "probes/health.h"

#define QUORUM_MAX_SITES CFG_MAX_SITES

enum quorum_site_state {
    QSITE_UNKNOWN = 0,
    QSITE_UP,
    QSITE_SDOWN,
    QSITE_ODOWN,
    QSITE_FENCED,
};

enum quorum_role { QROLE_FOLLOWER, QROLE_CANDIDATE, QROLE_LEADER };

/* Why a daemon stands for election. */
enum quorum_reason {
    QREASON_ODOWN,    /* the primary site is objectively down */
    QREASON_OPERATOR, /* an operator asked for a failover or switchover */
    QREASON_TAKEOVER, /* a run's leader is gone: take the run over */
};

/* What survives a restart (state_dir/quorum.json). */
struct quorum_durable {
    int64_t epoch;       /* highest epoch seen */
    int64_t voted_epoch; /* epoch of our last vote */
    int voted_for;       /* site index, -1 for none */
    int primary;         /* site believed primary (by the latest decision) */
    int64_t primary_epoch;
    /* The latest decision accepted (0 epoch = none). */
    int64_t decision_epoch;
    int decision_from, decision_to, decision_leader;
    char decision_run[40];
    char decision_kind[16]; /* failover | switchover | failback */
    char decision_runbook[64];
    bool fenced; /* hard fence: another site was made primary */
};

struct quorum;

struct quorum_io {
    /* Queue a message to a peer; dropped silently if the link is down. */
    void (*send)(struct quorum *q, int site, json_t *msg);
    /* Write the durable state to disk (temp, fsync, rename, fsync dir).
     * Returns 0 or a negative errno; on failure the quorum does not send
     * what depended on it. */
    int (*persist)(struct quorum *q, const struct quorum_durable *d);
    /* A named event: +sdown -sdown +odown -odown +new-epoch +vote +leader
     * +lease-lost +self-fence +decision ... with key/values. */
    void (*event)(struct quorum *q, const char *name, const char *detail);
    /* This site must fence itself: it is primary and lost its lease (a soft
     * fence, lifted by `unfence` when a majority grants the lease again and
     * no other site was made primary), or it learned that another site is
     * primary now (a hard fence: it stays until an operator acts). */
    void (*self_fence)(struct quorum *q, const char *reason);
    void (*unfence)(struct quorum *q, const char *reason);
    /* A decision of ours was recorded on a majority. */
    void (*decided)(struct quorum *q, const struct quorum_durable *d);
    void *data;
};

struct quorum_peer {
    bool heard;            /* ever */
    int64_t last_heard_ms; /* any message, our clock */
    enum health_state view[QUORUM_MAX_SITES];
    int64_t epoch;
    int leader; /* who they think leads, -1 */
    int64_t leader_epoch;
    int64_t lease_acked_send_ms; /* send time of our latest lease request they acked */
    bool fenced;                 /* they say they fenced themselves */
};

struct quorum {
    const struct config *cfg;
    struct quorum_io io;
    int self;
    int n;
    int need; /* quorum size */
    struct quorum_durable d;

    enum health_state own_view[QUORUM_MAX_SITES];
    int64_t own_view_ms[QUORUM_MAX_SITES]; /* when own view last changed */
    bool odown[QUORUM_MAX_SITES];
    int64_t odown_ms[QUORUM_MAX_SITES]; /* when ODOWN last began (our clock) */
    struct quorum_peer peers[QUORUM_MAX_SITES];

    /* Heartbeats and lease requests (as primary). */
    int64_t next_heartbeat_ms;
    int64_t lease_seq;
    int64_t lease_sent_ms[64]; /* ring: send time of lease request seq % 64 */
    int64_t lease_from_ms;     /* lease held until lease_from + lease_timeout */
    bool lease_valid;
    bool self_fenced;    /* a fence is in force (soft or hard) */
    bool hard_fenced;    /* ... and it stays (another site is primary) */
    bool refence;        /* re-apply a fence remembered from before a restart */
    int64_t fence_epoch; /* primary_epoch when the fence began */
    char fence_reason[128];

    /* Our promise to the primary (as a peer). */
    int64_t grant_until_ms;

    /* Runs, as the daemon tells us: one in progress (ours or a peer's),
     * and the anti-flapping block after one. */
    bool run_active;
    bool blocked;

    /* Elections. */
    enum quorum_role role;
    enum quorum_reason reason;
    int req_to; /* operator: the site asked for */
    char req_kind[16];
    char req_runbook[64];
    int64_t stand_at_ms;     /* when we will stand (0 = not planned) */
    int64_t election_end_ms; /* candidate deadline */
    bool votes[QUORUM_MAX_SITES];
    int64_t vote_grant_until[QUORUM_MAX_SITES]; /* voters' promises to the old primary */
    int target_down;                            /* the site this election fails over from */
    int leader;                                 /* known leader, -1 */
    int64_t leader_epoch;

    /* Decision being recorded (leader). */
    bool deciding;
    bool decided;
    bool acks[QUORUM_MAX_SITES];
    int64_t lease_expiry_ms; /* old primary's lease surely over (our clock) */

    uint64_t rng;
};

/* Sets up the state machine for this config. `durable` is what was read from
 * disk (or NULL for a first start). `now_ms` is monotonic. */
int quorum_init(struct quorum *q, const struct config *cfg, const struct quorum_io *io,
                const struct quorum_durable *durable, int64_t now_ms, uint64_t seed);

/* This daemon's (debounced) view of a site changed or was confirmed. */
void quorum_set_view(struct quorum *q, int site, enum health_state s, int64_t now_ms);
/* A message from a peer (a JSON object; not consumed). */
void quorum_receive(struct quorum *q, int from, json_t *msg, int64_t now_ms);
/* Called often (every ~100 ms, and after each input): heartbeats, ODOWN,
 * elections, lease. */
void quorum_tick(struct quorum *q, int64_t now_ms);

/* An operator asks for a run (kind "failover" or "switchover", to a site,
 * with a runbook): this daemon stands for election and, once leader,
 * records the decision. 0, -EBUSY (a run is in progress or an election
 * is under way), -EAGAIN (no majority heard), -EINVAL (bad site). */
int quorum_request(struct quorum *q, const char *kind, int to, const char *runbook, int64_t now_ms);

/* Site state as this daemon reports it (status, metrics). */
enum quorum_site_state quorum_site_state(const struct quorum *q, int site, int64_t now_ms);
const char *quorum_site_state_name(enum quorum_site_state s);
/* How many sites (us included) we hear from in fresh views. */
int quorum_have(const struct quorum *q, int64_t now_ms);
bool quorum_has_majority(const struct quorum *q, int64_t now_ms);
/* Whether the old primary's lease has surely expired (leader, after a
 * decision) - the precondition for promoting without a verified fence. */
bool quorum_lease_expired(const struct quorum *q, int64_t now_ms);
/* As primary: whether we hold the lease now. */
bool quorum_holds_lease(const struct quorum *q, int64_t now_ms);
/* As primary: when the lease we hold ends (our clock), 0 when we hold none.
 * The daemon saves it (orchestrator/lease_file.h) so that a restart of the
 * daemon alone does not fence a primary whose lease is still good. */
int64_t quorum_lease_until(const struct quorum *q, int64_t now_ms);
/* Right after quorum_init: a lease held before a restart, with remaining_ms
 * of it left (capped at lease_timeout). Granted by a majority that promised
 * not to count it over before its end, so holding it until then is as safe
 * as before the restart. Ignored unless we are the primary and not fenced.
 * Returns whether it was taken. */
bool quorum_restore_lease(struct quorum *q, int64_t remaining_ms, int64_t now_ms);
int quorum_site_index(const struct quorum *q, const char *name);
const char *quorum_site_name(const struct quorum *q, int site);

/* Durable state as JSON and back (state_dir/quorum.json). */
json_t *quorum_durable_to_json(const struct quorum *q, const struct quorum_durable *d);
int quorum_durable_from_json(const struct config *cfg, json_t *j, struct quorum_durable *d);

#endif
