/* The quorum state machine: views, ODOWN, epochs and votes, decisions and
 * the primary's lease. No I/O: see quorum.h for the protocol and the
 * callbacks through which it acts. */
#include "orchestrator/quorum.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const qsite_names[] = { "unknown", "up", "sdown", "odown", "fenced" };

const char *quorum_site_state_name(enum quorum_site_state s)
{
    return qsite_names[s];
}

int quorum_site_index(const struct quorum *q, const char *name)
{
    for (int i = 0; name && i < q->n; i++) {
        if (strcmp(q->cfg->sites[i].name, name) == 0)
            return i;
    }
    return -1;
}

const char *quorum_site_name(const struct quorum *q, int site)
{
    return site >= 0 && site < q->n ? q->cfg->sites[site].name : NULL;
}

static uint64_t rnd(struct quorum *q)
{
    uint64_t x = q->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    q->rng = x;
    return x;
}

static void event(struct quorum *q, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void event(struct quorum *q, const char *name, const char *fmt, ...)
{
    char detail[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (q->io.event)
        q->io.event(q, name, detail);
}

static int persist(struct quorum *q)
{
    return q->io.persist ? q->io.persist(q, &q->d) : 0;
}

/* The io.send callback borrows the message: it copies what it keeps. */
static void send_to(struct quorum *q, int site, json_t *msg)
{
    if (site != q->self && q->io.send)
        q->io.send(q, site, msg);
}

/* Send a new message (its reference is consumed). */
static void send(struct quorum *q, int site, json_t *msg)
{
    send_to(q, site, msg);
    json_decref(msg);
}

static void broadcast(struct quorum *q, json_t *msg)
{
    for (int i = 0; i < q->n; i++)
        send_to(q, i, msg);
    json_decref(msg);
}

static int64_t lease_timeout(const struct quorum *q)
{
    return q->cfg->quorum.lease_timeout_ms;
}

/* How long a peer's grant to the primary lasts on the peer's own clock:
 * long enough that the primary's lease, counted on a clock that may run
 * clock_drift faster, has surely ended. */
static int64_t grant_span(const struct quorum *q)
{
    return (int64_t)((double)lease_timeout(q) * (1.0 + q->cfg->quorum.clock_drift)) +
           q->cfg->quorum.lease_margin_ms;
}

static bool fresh(const struct quorum *q, int site, int64_t now)
{
    return q->peers[site].heard &&
           now - q->peers[site].last_heard_ms <= q->cfg->quorum.peer_timeout_ms;
}

int quorum_have(const struct quorum *q, int64_t now_ms)
{
    int have = 1;
    for (int i = 0; i < q->n; i++)
        have += i != q->self && fresh(q, i, now_ms);
    return have;
}

bool quorum_has_majority(const struct quorum *q, int64_t now_ms)
{
    return quorum_have(q, now_ms) >= q->need;
}

int quorum_init(struct quorum *q, const struct config *cfg, const struct quorum_io *io,
                const struct quorum_durable *durable, int64_t now_ms, uint64_t seed)
{
    memset(q, 0, sizeof *q);
    q->cfg = cfg;
    q->io = *io;
    q->n = (int)cfg->n_sites;
    q->need = cfg->quorum.size;
    q->self = quorum_site_index(q, cfg->site);
    q->leader = -1;
    q->target_down = -1;
    q->rng = seed ? seed : 0x9e3779b97f4a7c15ULL;
    if (q->self < 0 || q->n > QUORUM_MAX_SITES || q->need < 1)
        return -1;
    if (durable) {
        q->d = *durable;
    } else {
        q->d.voted_for = -1;
        q->d.primary = quorum_site_index(q, config_primary(cfg)->name);
        q->d.decision_from = q->d.decision_to = q->d.decision_leader = -1;
    }
    for (int i = 0; i < q->n; i++)
        q->peers[i].leader = -1;
    /* We may have granted a lease just before a restart: keep the promise. */
    q->grant_until_ms = now_ms + grant_span(q);
    /* As primary, a lease is only held once a majority acknowledges it. A
     * lease we held before a restart was promised by the peers for at most
     * lease_margin beyond our own count, so we give ourselves half of that
     * to hear a majority before fencing. */
    q->lease_from_ms = now_ms - lease_timeout(q) + cfg->quorum.lease_margin_ms / 2;
    q->next_heartbeat_ms = now_ms;
    if (q->d.fenced) {
        q->self_fenced = true;
        q->hard_fenced = true;
        q->refence = true;
        snprintf(q->fence_reason, sizeof q->fence_reason, "fenced before a restart");
    }
    return 0;
}

/* ---- views and ODOWN --------------------------------------------------------- */

void quorum_set_view(struct quorum *q, int site, enum health_state s, int64_t now_ms)
{
    if (site < 0 || site >= q->n || q->own_view[site] == s)
        return;
    enum health_state old = q->own_view[site];
    q->own_view[site] = s;
    q->own_view_ms[site] = now_ms;
    /* Tell the peers now rather than at the next heartbeat: ODOWN needs
     * their views, and half a heartbeat is a quarter of detection time. */
    q->next_heartbeat_ms = now_ms;
    if (s == HEALTH_DOWN)
        event(q, "+sdown", "site=%s", quorum_site_name(q, site));
    else if (old == HEALTH_DOWN)
        event(q, "-sdown", "site=%s", quorum_site_name(q, site));
}

static int count_sdown(const struct quorum *q, int site, int64_t now)
{
    int n = q->own_view[site] == HEALTH_DOWN;
    for (int i = 0; i < q->n; i++) {
        if (i != q->self && fresh(q, i, now) && q->peers[i].view[site] == HEALTH_DOWN)
            n++;
    }
    return n;
}

static void update_odown(struct quorum *q, int64_t now)
{
    bool majority = quorum_has_majority(q, now);
    for (int s = 0; s < q->n; s++) {
        bool od = s != q->self && majority && q->own_view[s] == HEALTH_DOWN &&
                  count_sdown(q, s, now) >= q->need;
        if (od == q->odown[s])
            continue;
        q->odown[s] = od;
        if (od)
            q->odown_ms[s] = now;
        event(q, od ? "+odown" : "-odown", "site=%s reporters=%d quorum=%d", quorum_site_name(q, s),
              count_sdown(q, s, now), q->need);
    }
}

/* A peer's word that it is fenced counts while we hear it: the last
 * heartbeat before a cut may predate a lifted fence, and a site cut off
 * since is reported by what we see of it (sdown, odown). */
static bool fresh_fenced(const struct quorum *q, int site, int64_t now)
{
    return fresh(q, site, now) && q->peers[site].fenced;
}

enum quorum_site_state quorum_site_state(const struct quorum *q, int site, int64_t now_ms)
{
    if (site == q->self && q->self_fenced)
        return QSITE_FENCED;
    if (site != q->self && fresh_fenced(q, site, now_ms))
        return QSITE_FENCED;
    if (q->odown[site])
        return QSITE_ODOWN;
    switch (q->own_view[site]) {
    case HEALTH_DOWN:
        return QSITE_SDOWN;
    case HEALTH_UP:
        return QSITE_UP;
    case HEALTH_UNKNOWN:
        break;
    }
    return QSITE_UNKNOWN;
}

/* ---- fencing and the lease ------------------------------------------------------ */

static void fence_self(struct quorum *q, const char *why, bool hard)
{
    if (hard && !q->hard_fenced) {
        q->hard_fenced = true;
        q->d.fenced = true;
        persist(q);
    }
    if (q->self_fenced)
        return;
    q->self_fenced = true;
    q->fence_epoch = q->d.primary_epoch;
    snprintf(q->fence_reason, sizeof q->fence_reason, "%s", why);
    event(q, "+self-fence", "reason=\"%s\"", why);
    if (q->io.self_fence)
        q->io.self_fence(q, why);
}

static void unfence_self(struct quorum *q)
{
    /* Only a fence for a lost lease, while nothing else changed: a site made
     * primary by a decision becomes writable through the runbook's
     * promotion, never through the lease. */
    if (!q->self_fenced || q->hard_fenced || q->fence_epoch != q->d.primary_epoch)
        return;
    q->self_fenced = false;
    event(q, "-self-fence", "reason=\"lease granted again by a majority\"");
    if (q->io.unfence)
        q->io.unfence(q, "lease granted again by a majority");
}

static int64_t lease_from(const struct quorum *q)
{
    /* The (need-1)-th latest acknowledged request among the peers. */
    int64_t acked[QUORUM_MAX_SITES];
    int k = 0;
    for (int i = 0; i < q->n; i++) {
        if (i != q->self)
            acked[k++] = q->peers[i].lease_acked_send_ms;
    }
    for (int i = 0; i < k; i++) {
        for (int j = i + 1; j < k; j++) {
            if (acked[j] > acked[i]) {
                int64_t t = acked[i];
                acked[i] = acked[j];
                acked[j] = t;
            }
        }
    }
    int idx = q->need - 2; /* need-1 peers, 0-based */
    if (idx < 0)
        return INT64_MAX / 4;
    if (idx >= k)
        return 0;
    return acked[idx];
}

bool quorum_holds_lease(const struct quorum *q, int64_t now_ms)
{
    return q->d.primary == q->self && !q->hard_fenced && q->lease_valid &&
           now_ms < q->lease_from_ms + lease_timeout(q);
}

int64_t quorum_lease_until(const struct quorum *q, int64_t now_ms)
{
    return quorum_holds_lease(q, now_ms) ? q->lease_from_ms + lease_timeout(q) : 0;
}

bool quorum_restore_lease(struct quorum *q, int64_t remaining_ms, int64_t now_ms)
{
    if (q->d.primary != q->self || q->hard_fenced || q->self_fenced || remaining_ms <= 0)
        return false;
    if (remaining_ms > lease_timeout(q))
        remaining_ms = lease_timeout(q);
    int64_t from = now_ms - lease_timeout(q) + remaining_ms;
    if (from <= q->lease_from_ms)
        return false;
    q->lease_from_ms = from;
    q->lease_valid = true;
    event(q, "+lease", "site=%s restored=true remaining_ms=%lld", quorum_site_name(q, q->self),
          (long long)remaining_ms);
    return true;
}

static void update_lease(struct quorum *q, int64_t now)
{
    if (q->d.primary != q->self || q->hard_fenced)
        return;
    int64_t from = lease_from(q);
    if (from > q->lease_from_ms) {
        q->lease_from_ms = from;
        if (!q->lease_valid) {
            q->lease_valid = true;
            event(q, "+lease", "site=%s", quorum_site_name(q, q->self));
        }
    }
    if (now < q->lease_from_ms + lease_timeout(q)) {
        if (q->lease_valid)
            unfence_self(q);
        return;
    }
    if (q->lease_valid || !q->self_fenced) {
        if (q->lease_valid)
            event(q, "+lease-lost", "no majority for %lld ms", (long long)(now - q->lease_from_ms));
        else
            event(q, "+lease-lost", "no majority has granted the lease yet");
        q->lease_valid = false;
        fence_self(q, "lease lost: no majority heard within lease_timeout", false);
    }
}

bool quorum_lease_expired(const struct quorum *q, int64_t now_ms)
{
    return q->decided && now_ms >= q->lease_expiry_ms;
}

/* ---- messages ---------------------------------------------------------------------- */

static json_t *decision_json(const struct quorum *q)
{
    if (!q->d.decision_epoch)
        return json_null();
    /* The runbook travels with the decision wherever it goes (heartbeats,
     * resends, the disk): a peer that learns of a switchover late, or takes
     * it over, must not fall back to the failover runbook. */
    return json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:s}", "epoch", (json_int_t)q->d.decision_epoch,
                     "from", quorum_site_name(q, q->d.decision_from), "to",
                     quorum_site_name(q, q->d.decision_to), "leader",
                     quorum_site_name(q, q->d.decision_leader), "run", q->d.decision_run, "kind",
                     q->d.decision_kind, "runbook", q->d.decision_runbook);
}

static void send_heartbeats(struct quorum *q, int64_t now)
{
    json_t *views = json_object();
    for (int i = 0; i < q->n; i++)
        json_object_set_new(views, quorum_site_name(q, i),
                            json_string(health_state_name(q->own_view[i])));
    json_t *hb = json_pack("{s:s,s:s,s:I,s:s,s:I,s:o,s:b,s:o}", "t", "hb", "site",
                           quorum_site_name(q, q->self), "epoch", (json_int_t)q->d.epoch, "primary",
                           quorum_site_name(q, q->d.primary), "primary_epoch",
                           (json_int_t)q->d.primary_epoch, "views", views, "fenced", q->self_fenced,
                           "decision", decision_json(q));
    if (q->leader >= 0)
        json_object_set_new(hb, "leader",
                            json_pack("{s:s,s:I}", "site", quorum_site_name(q, q->leader), "epoch",
                                      (json_int_t)q->leader_epoch));
    if (q->d.primary == q->self && !q->hard_fenced) {
        q->lease_seq++;
        q->lease_sent_ms[q->lease_seq % 64] = now;
        json_object_set_new(hb, "lease_seq", json_integer((json_int_t)q->lease_seq));
    }
    broadcast(q, hb);
}

/* Adopt a higher epoch; a leader or candidate of an older epoch steps down. */
static void adopt_epoch(struct quorum *q, int64_t epoch)
{
    if (epoch <= q->d.epoch)
        return;
    q->d.epoch = epoch;
    persist(q);
    event(q, "+new-epoch", "epoch=%lld", (long long)epoch);
    if (q->role != QROLE_FOLLOWER) {
        q->role = QROLE_FOLLOWER;
        q->deciding = false;
        q->stand_at_ms = 0;
    }
}

/* Accept a decision (ours, one sent to us, or one learned late). */
static bool fits(const char *s, size_t size)
{
    return !s || strlen(s) < size;
}

static bool accept_decision(struct quorum *q, int64_t epoch, int from, int to, int leader,
                            const char *run, const char *kind, const char *runbook, int64_t now)
{
    if (epoch <= q->d.decision_epoch || from < 0 || to < 0 || leader < 0)
        return false;
    /* Whole or not at all: a cut run id names another run (another
     * journal), and a multibyte character cut in two makes the state
     * unserialisable - the decision lost at restart, no heartbeat built. */
    if (!fits(run, sizeof q->d.decision_run) || !fits(kind, sizeof q->d.decision_kind) ||
        !fits(runbook, sizeof q->d.decision_runbook))
        return false;
    struct quorum_durable before = q->d;
    q->d.decision_epoch = epoch;
    q->d.decision_from = from;
    q->d.decision_to = to;
    q->d.decision_leader = leader;
    snprintf(q->d.decision_run, sizeof q->d.decision_run, "%s", run ? run : "");
    snprintf(q->d.decision_kind, sizeof q->d.decision_kind, "%s", kind ? kind : "failover");
    snprintf(q->d.decision_runbook, sizeof q->d.decision_runbook, "%s",
             runbook ? runbook : q->cfg->failover.runbook);
    q->d.primary = to;
    q->d.primary_epoch = epoch;
    if (epoch > q->d.epoch)
        q->d.epoch = epoch;
    if (persist(q) < 0) {
        /* Not on disk, not accepted: the caller must not find it in memory
         * either (on_decision acknowledges what it holds). */
        q->d = before;
        return false;
    }
    if (to == q->self) {
        /* Made primary (again, after a failback): a hard fence from an older
         * decision no longer applies; the lease decides from here on. */
        if (q->hard_fenced) {
            q->hard_fenced = false;
            q->d.fenced = false;
            persist(q);
        }
        /* Our PostgreSQL stays read-only until the runbook promotes it; from
         * now on a lost lease fences it again. */
        if (q->self_fenced) {
            q->self_fenced = false;
            event(q, "-self-fence",
                  "reason=\"made primary by decision epoch %lld: writable once the runbook "
                  "promotes it\"",
                  (long long)epoch);
        }
        /* A new lease, counted from now: acknowledgements of requests sent
         * before we were primary do not count. */
        q->lease_from_ms = now;
        q->lease_valid = false;
        for (int i = 0; i < q->n; i++)
            q->peers[i].lease_acked_send_ms = 0;
    }
    if (from == q->self && to != q->self)
        fence_self(q, "a newer decision made another site primary", true);
    return true;
}

static int site_of(const struct quorum *q, json_t *msg, const char *key)
{
    return quorum_site_index(q, json_string_value(json_object_get(msg, key)));
}

static void on_hb(struct quorum *q, int from, json_t *msg, int64_t now)
{
    struct quorum_peer *p = &q->peers[from];
    json_t *views = json_object_get(msg, "views");
    for (int i = 0; i < q->n; i++) {
        const char *v = json_string_value(json_object_get(views, quorum_site_name(q, i)));
        p->view[i] = !v                       ? HEALTH_UNKNOWN
                     : strcmp(v, "down") == 0 ? HEALTH_DOWN
                     : strcmp(v, "up") == 0   ? HEALTH_UP
                                              : HEALTH_UNKNOWN;
    }
    p->fenced = json_is_true(json_object_get(msg, "fenced"));
    json_t *ld = json_object_get(msg, "leader");
    p->leader = ld ? site_of(q, ld, "site") : -1;
    p->leader_epoch = json_integer_value(json_object_get(ld, "epoch"));
    if (p->leader >= 0 && p->leader_epoch >= q->leader_epoch && p->leader_epoch >= q->d.epoch) {
        q->leader = p->leader;
        q->leader_epoch = p->leader_epoch;
    }
    json_t *dec = json_object_get(msg, "decision");
    if (json_is_object(dec))
        accept_decision(q, json_integer_value(json_object_get(dec, "epoch")),
                        site_of(q, dec, "from"), site_of(q, dec, "to"), site_of(q, dec, "leader"),
                        json_string_value(json_object_get(dec, "run")),
                        json_string_value(json_object_get(dec, "kind")),
                        json_string_value(json_object_get(dec, "runbook")), now);
    /* A lease request from the site we believe is primary: grant it. */
    json_t *seq = json_object_get(msg, "lease_seq");
    if (json_is_integer(seq) && from == q->d.primary && from != q->self) {
        q->grant_until_ms = now + grant_span(q);
        send(q, from,
             json_pack("{s:s,s:I,s:I}", "t", "lease-ack", "seq", json_integer_value(seq), "epoch",
                       (json_int_t)q->d.epoch));
    }
}

static void on_lease_ack(struct quorum *q, int from, json_t *msg)
{
    int64_t seq = json_integer_value(json_object_get(msg, "seq"));
    if (seq <= 0 || seq > q->lease_seq || seq <= q->lease_seq - 64)
        return;
    int64_t sent = q->lease_sent_ms[seq % 64];
    if (sent > q->peers[from].lease_acked_send_ms)
        q->peers[from].lease_acked_send_ms = sent;
}

static void deny_vote(struct quorum *q, int to, int64_t epoch, const char *why)
{
    send(q, to,
         json_pack("{s:s,s:I,s:b,s:s}", "t", "vote", "epoch", (json_int_t)epoch, "granted", 0,
                   "reason", why));
}

static bool leader_alive(const struct quorum *q, int64_t now);

static void on_vote_req(struct quorum *q, int from, json_t *msg, int64_t now)
{
    int64_t epoch = json_integer_value(json_object_get(msg, "epoch"));
    const char *reason = json_string_value(json_object_get(msg, "reason"));
    adopt_epoch(q, epoch);
    if (epoch <= q->d.voted_epoch) {
        deny_vote(q, from, epoch, "already voted in this epoch");
        return;
    }
    if (reason && !strcmp(reason, "operator")) {
        /* An operator's request: fine unless a run is already in hand. */
        if (q->run_active && leader_alive(q, now)) {
            deny_vote(q, from, epoch, "a run is in progress under a live leader");
            return;
        }
    } else if (reason && !strcmp(reason, "takeover")) {
        /* A run whose leader we cannot hear either: one we know is in
         * progress, or the very decision we also hold. */
        const char *run = json_string_value(json_object_get(msg, "run"));
        bool known =
            q->run_active || (run && q->d.decision_epoch && strcmp(run, q->d.decision_run) == 0);
        if (!known || leader_alive(q, now)) {
            deny_vote(q, from, epoch,
                      known ? "I still hear the run's leader" : "I know of no run in progress");
            return;
        }
    } else {
        int down = site_of(q, msg, "target_down");
        if (down < 0 || down != q->d.primary) {
            deny_vote(q, from, epoch, "that site is not the primary");
            return;
        }
        if (down == q->self) {
            deny_vote(q, from, epoch, "I am that site and I am alive");
            return;
        }
        if (q->own_view[down] != HEALTH_DOWN) {
            deny_vote(q, from, epoch, "I do not see that site down");
            return;
        }
    }
    q->d.voted_epoch = epoch;
    q->d.voted_for = from;
    if (persist(q) < 0)
        return; /* never promise what is not on disk */
    event(q, "+vote", "for=%s epoch=%lld reason=%s", quorum_site_name(q, from), (long long)epoch,
          reason ? reason : "odown");
    send(q, from,
         json_pack("{s:s,s:I,s:b}", "t", "vote", "epoch", (json_int_t)epoch, "granted", 1));
}

static int count(const bool *set, int n)
{
    int c = 0;
    for (int i = 0; i < n; i++)
        c += set[i];
    return c;
}

static void start_decision(struct quorum *q, int64_t now);

static void on_vote(struct quorum *q, int from, json_t *msg, int64_t now)
{
    int64_t epoch = json_integer_value(json_object_get(msg, "epoch"));
    if (q->role != QROLE_CANDIDATE || epoch != q->d.epoch)
        return;
    if (!json_is_true(json_object_get(msg, "granted")))
        return;
    q->votes[from] = true;
    if (count(q->votes, q->n) >= q->need) {
        q->role = QROLE_LEADER;
        q->leader = q->self;
        q->leader_epoch = epoch;
        event(q, "+leader", "epoch=%lld votes=%d", (long long)epoch, count(q->votes, q->n));
        start_decision(q, now);
    }
}

static void on_decision(struct quorum *q, int from, json_t *msg, int64_t now)
{
    int64_t epoch = json_integer_value(json_object_get(msg, "epoch"));
    int leader = site_of(q, msg, "leader");
    adopt_epoch(q, epoch);
    bool ok = leader == from && epoch >= q->d.epoch &&
              !(q->d.voted_epoch == epoch && q->d.voted_for != from);
    if (ok)
        ok = accept_decision(q, epoch, site_of(q, msg, "from"), site_of(q, msg, "to"), leader,
                             json_string_value(json_object_get(msg, "run")),
                             json_string_value(json_object_get(msg, "kind")),
                             json_string_value(json_object_get(msg, "runbook")), now) ||
             q->d.decision_epoch == epoch;
    if (ok) {
        q->leader = from;
        q->leader_epoch = epoch;
    }
    /* What we promised the old primary, and (if we are it) our own lease:
     * the leader waits for both before promoting. */
    int64_t remain = q->grant_until_ms - now;
    if (q->d.decision_from == q->self) {
        int64_t own = q->lease_from_ms + lease_timeout(q) - now;
        if (own > remain)
            remain = own;
    }
    if (remain < 0)
        remain = 0;
    send(q, from,
         json_pack("{s:s,s:I,s:b,s:I}", "t", "decision-ack", "epoch", (json_int_t)epoch, "accepted",
                   ok, "grant_remaining_ms", (json_int_t)remain));
    if (ok)
        event(q, "+decision-accepted", "epoch=%lld leader=%s", (long long)epoch,
              quorum_site_name(q, from));
}

static void on_decision_ack(struct quorum *q, int from, json_t *msg, int64_t now)
{
    int64_t epoch = json_integer_value(json_object_get(msg, "epoch"));
    if (q->role != QROLE_LEADER || !q->deciding || epoch != q->d.decision_epoch)
        return;
    if (!json_is_true(json_object_get(msg, "accepted")))
        return;
    int64_t until = now + json_integer_value(json_object_get(msg, "grant_remaining_ms"));
    if (until > q->lease_expiry_ms)
        q->lease_expiry_ms = until;
    q->acks[from] = true;
    if (!q->decided && count(q->acks, q->n) >= q->need) {
        q->decided = true;
        event(q, "+decision", "epoch=%lld from=%s to=%s run=%s lease_wait_ms=%lld",
              (long long)epoch, quorum_site_name(q, q->d.decision_from),
              quorum_site_name(q, q->d.decision_to), q->d.decision_run,
              (long long)(q->lease_expiry_ms > now ? q->lease_expiry_ms - now : 0));
        if (q->io.decided)
            q->io.decided(q, &q->d);
    }
}

void quorum_receive(struct quorum *q, int from, json_t *msg, int64_t now_ms)
{
    if (from < 0 || from >= q->n || from == q->self || !json_is_object(msg))
        return;
    const char *t = json_string_value(json_object_get(msg, "t"));
    if (!t)
        return;
    struct quorum_peer *p = &q->peers[from];
    p->heard = true;
    p->last_heard_ms = now_ms;
    json_t *e = json_object_get(msg, "epoch");
    if (json_is_integer(e)) {
        p->epoch = json_integer_value(e);
        if (strcmp(t, "hb") == 0)
            adopt_epoch(q, p->epoch);
    }
    if (strcmp(t, "hb") == 0)
        on_hb(q, from, msg, now_ms);
    else if (strcmp(t, "lease-ack") == 0)
        on_lease_ack(q, from, msg);
    else if (strcmp(t, "vote-req") == 0)
        on_vote_req(q, from, msg, now_ms);
    else if (strcmp(t, "vote") == 0)
        on_vote(q, from, msg, now_ms);
    else if (strcmp(t, "decision") == 0)
        on_decision(q, from, msg, now_ms);
    else if (strcmp(t, "decision-ack") == 0)
        on_decision_ack(q, from, msg, now_ms);
    quorum_tick(q, now_ms);
}

/* ---- elections and decisions ---------------------------------------------------------- */

/* The site to fail over to when `down` is lost: the configured target, else
 * another non-witness site we see up. */
/* A site that fenced itself holds an old primary's data: it can only come
 * back through a failback (pg_rewind first), never by a failover. */
static bool eligible(const struct quorum *q, int site, int down)
{
    if (site < 0 || site == down || q->own_view[site] != HEALTH_UP)
        return false;
    if (site == q->self)
        return !q->self_fenced;
    return !q->peers[site].fenced;
}

static int choose_target(const struct quorum *q, int down)
{
    int t = quorum_site_index(q, q->cfg->failover.target);
    if (eligible(q, t, down))
        return t;
    for (int i = 0; i < q->n; i++) {
        if (q->cfg->sites[i].role != ROLE_WITNESS && eligible(q, i, down))
            return i;
    }
    return -1;
}

static bool leader_alive(const struct quorum *q, int64_t now)
{
    if (q->leader < 0 || q->leader_epoch < q->d.epoch)
        return false;
    return q->leader == q->self || fresh(q, q->leader, now);
}

static void start_decision(struct quorum *q, int64_t now)
{
    int from = q->d.primary, to;
    const char *kind = "failover", *runbook = q->cfg->failover.runbook;
    char run[40];
    switch (q->reason) {
    case QREASON_TAKEOVER:
        /* The same decision, recorded again under our epoch. */
        from = q->d.decision_from;
        to = q->d.decision_to;
        kind = q->d.decision_kind;
        runbook = q->d.decision_runbook;
        snprintf(run, sizeof run, "%s", q->d.decision_run);
        break;
    case QREASON_OPERATOR:
        to = q->req_to;
        kind = q->req_kind;
        runbook = q->req_runbook;
        break;
    case QREASON_ODOWN:
    default:
        from = q->target_down;
        to = choose_target(q, q->target_down);
        break;
    }
    if (to < 0) {
        event(q, "-failover", "no site to fail over to");
        return;
    }
    if (q->reason != QREASON_TAKEOVER)
        /* At most 12 characters of the site name, so that the id always
         * fits: a cut id would be the same for the next epoch's run. */
        snprintf(run, sizeof run, "%.12s-e%lld-%04x", quorum_site_name(q, q->self),
                 (long long)q->d.epoch, (unsigned)(rnd(q) & 0xffff));
    char kind_copy[16], runbook_copy[64];
    snprintf(kind_copy, sizeof kind_copy, "%s", kind);
    snprintf(runbook_copy, sizeof runbook_copy, "%s", runbook);
    if (!accept_decision(q, q->d.epoch, from, to, q->self, run, kind_copy, runbook_copy, now))
        return;
    q->deciding = true;
    q->decided = false;
    memset(q->acks, 0, sizeof q->acks);
    q->acks[q->self] = true;
    q->lease_expiry_ms = q->grant_until_ms > now ? q->grant_until_ms : now;
    broadcast(q, json_pack("{s:s,s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "t", "decision", "epoch",
                           (json_int_t)q->d.epoch, "leader", quorum_site_name(q, q->self), "from",
                           quorum_site_name(q, from), "to", quorum_site_name(q, to), "run", run,
                           "kind", kind_copy, "runbook", runbook_copy, "reason",
                           q->reason == QREASON_TAKEOVER   ? "takeover"
                           : q->reason == QREASON_OPERATOR ? "operator"
                                                           : "odown"));
}

static const char *reason_name(enum quorum_reason r)
{
    return r == QREASON_TAKEOVER ? "takeover" : r == QREASON_OPERATOR ? "operator" : "odown";
}

static void stand(struct quorum *q, int64_t now, enum quorum_reason reason)
{
    int down = q->d.primary;
    struct quorum_durable before = q->d;
    q->reason = reason;
    q->d.epoch++;
    q->d.voted_epoch = q->d.epoch;
    q->d.voted_for = q->self;
    if (persist(q) < 0) {
        /* All of it back, the vote too: a vote for an epoch above ours
         * would make the next state written unreadable at restart
         * (quorum_durable_from_json refuses voted_epoch > epoch). */
        q->d = before;
        return;
    }
    q->role = QROLE_CANDIDATE;
    q->target_down = down;
    memset(q->votes, 0, sizeof q->votes);
    q->votes[q->self] = true;
    q->election_end_ms = now + q->cfg->quorum.election_timeout_ms;
    event(q, "+new-epoch", "epoch=%lld candidate=%s reason=%s", (long long)q->d.epoch,
          quorum_site_name(q, q->self), reason_name(reason));
    event(q, "+vote", "for=%s epoch=%lld", quorum_site_name(q, q->self), (long long)q->d.epoch);
    broadcast(q, json_pack("{s:s,s:I,s:s,s:s,s:s,s:s}", "t", "vote-req", "epoch",
                           (json_int_t)q->d.epoch, "candidate", quorum_site_name(q, q->self),
                           "target_down", quorum_site_name(q, down), "reason", reason_name(reason),
                           "run", q->d.decision_run));
    if (count(q->votes, q->n) >= q->need) {
        q->role = QROLE_LEADER;
        q->leader = q->self;
        q->leader_epoch = q->d.epoch;
        event(q, "+leader", "epoch=%lld votes=1", (long long)q->d.epoch);
        start_decision(q, now);
    }
}

static bool want_failover(const struct quorum *q, int64_t now)
{
    int p = q->d.primary;
    return p != q->self && q->odown[p] && q->cfg->failover.mode != MODE_MANUAL && !q->blocked &&
           !q->run_active && quorum_has_majority(q, now) && choose_target(q, p) >= 0 &&
           !leader_alive(q, now);
}

/* A run in progress whose leader nobody hears: a new leader takes it over. */
static bool want_takeover(const struct quorum *q, int64_t now)
{
    return q->run_active && q->d.decision_epoch > 0 && !leader_alive(q, now) &&
           quorum_has_majority(q, now);
}

int quorum_request(struct quorum *q, const char *kind, int to, const char *runbook, int64_t now_ms)
{
    if (to < 0 || to >= q->n)
        return -EINVAL;
    /* A leader whose run is over may stand again, for a new epoch. */
    bool deciding = q->role == QROLE_CANDIDATE || (q->role == QROLE_LEADER && !q->decided);
    if (deciding || (q->run_active && leader_alive(q, now_ms)))
        return -EBUSY;
    if (!quorum_has_majority(q, now_ms))
        return -EAGAIN;
    q->req_to = to;
    snprintf(q->req_kind, sizeof q->req_kind, "%s", kind);
    snprintf(q->req_runbook, sizeof q->req_runbook, "%s", runbook);
    stand(q, now_ms, QREASON_OPERATOR);
    return 0;
}

static void update_election(struct quorum *q, int64_t now)
{
    if (q->role == QROLE_CANDIDATE && now < q->election_end_ms)
        return;
    if (q->role == QROLE_CANDIDATE) {
        event(q, "-leader", "election of epoch %lld lost (%d of %d votes)", (long long)q->d.epoch,
              count(q->votes, q->n), q->need);
        q->role = QROLE_FOLLOWER;
        /* Back off before trying again, with jitter so two losers part. */
        q->stand_at_ms = now + q->cfg->quorum.election_timeout_ms +
                         (int64_t)(rnd(q) % (uint64_t)(q->cfg->quorum.election_jitter_ms * 2 + 1));
        return;
    }
    if (q->role == QROLE_LEADER) {
        if (!quorum_has_majority(q, now) && !q->decided) {
            event(q, "-leader", "lost the majority before the decision was recorded");
            q->role = QROLE_FOLLOWER;
            q->deciding = false;
        } else if (q->deciding && !q->decided && now >= q->next_heartbeat_ms) {
            /* Resend the decision to those who have not acknowledged it. */
            json_t *m =
                json_pack("{s:s,s:I,s:s,s:s,s:s,s:s,s:s,s:s}", "t", "decision", "epoch",
                          (json_int_t)q->d.decision_epoch, "leader", quorum_site_name(q, q->self),
                          "from", quorum_site_name(q, q->d.decision_from), "to",
                          quorum_site_name(q, q->d.decision_to), "run", q->d.decision_run, "kind",
                          q->d.decision_kind, "runbook", q->d.decision_runbook);
            for (int i = 0; i < q->n; i++) {
                if (!q->acks[i])
                    send_to(q, i, m);
            }
            json_decref(m);
        }
        return;
    }
    bool takeover = want_takeover(q, now);
    if (!takeover && !want_failover(q, now)) {
        q->stand_at_ms = 0;
        return;
    }
    if (q->stand_at_ms == 0) {
        int target = takeover ? q->d.decision_to : choose_target(q, q->d.primary);
        int64_t delay = 0;
        if (target != q->self)
            delay = q->cfg->quorum.election_timeout_ms / 2 +
                    (int64_t)(rnd(q) % (uint64_t)(q->cfg->quorum.election_jitter_ms + 1));
        q->stand_at_ms = now + delay;
    }
    if (now >= q->stand_at_ms) {
        q->stand_at_ms = 0;
        stand(q, now, takeover ? QREASON_TAKEOVER : QREASON_ODOWN);
    }
}

void quorum_tick(struct quorum *q, int64_t now_ms)
{
    if (q->refence) {
        q->refence = false;
        event(q, "+self-fence", "reason=\"%s\"", q->fence_reason);
        if (q->io.self_fence)
            q->io.self_fence(q, q->fence_reason);
    }
    update_odown(q, now_ms);
    update_lease(q, now_ms);
    update_election(q, now_ms);
    if (now_ms >= q->next_heartbeat_ms) {
        send_heartbeats(q, now_ms);
        q->next_heartbeat_ms = now_ms + q->cfg->quorum.heartbeat_interval_ms;
    }
}

/* ---- durable state ------------------------------------------------------------------------- */

json_t *quorum_durable_to_json(const struct quorum *q, const struct quorum_durable *d)
{
    json_t *j =
        json_pack("{s:I,s:I,s:o,s:s,s:I,s:b}", "epoch", (json_int_t)d->epoch, "voted_epoch",
                  (json_int_t)d->voted_epoch, "voted_for",
                  d->voted_for >= 0 ? json_string(quorum_site_name(q, d->voted_for)) : json_null(),
                  "primary", quorum_site_name(q, d->primary), "primary_epoch",
                  (json_int_t)d->primary_epoch, "fenced", d->fenced);
    if (d->decision_epoch)
        json_object_set_new(
            j, "decision",
            json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:s}", "epoch", (json_int_t)d->decision_epoch,
                      "from", quorum_site_name(q, d->decision_from), "to",
                      quorum_site_name(q, d->decision_to), "leader",
                      quorum_site_name(q, d->decision_leader), "run", d->decision_run, "kind",
                      d->decision_kind, "runbook", d->decision_runbook));
    return j;
}

static int cfg_site(const struct config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_sites; i++) {
        if (strcmp(cfg->sites[i].name, name) == 0)
            return (int)i;
    }
    return -1;
}

int quorum_durable_from_json(const struct config *cfg, json_t *j, struct quorum_durable *d)
{
    memset(d, 0, sizeof *d);
    d->voted_for = -1;
    d->decision_from = d->decision_to = d->decision_leader = -1;
    if (!json_is_object(j))
        return -1;
    /* A vote or a decision naming a site the configuration does not have
     * (one renamed since?), or ids that do not fit, are refused like any
     * damage: read as "no vote" the daemon could vote twice in an epoch,
     * and a decision without its sites makes every heartbeat unbuildable. */
    bool bad = false;
    d->epoch = json_integer_value(json_object_get(j, "epoch"));
    d->voted_epoch = json_integer_value(json_object_get(j, "voted_epoch"));
    json_t *vf = json_object_get(j, "voted_for");
    d->voted_for = cfg_site(cfg, json_string_value(vf));
    bad = json_is_string(vf) && d->voted_for < 0;
    d->primary = cfg_site(cfg, json_string_value(json_object_get(j, "primary")));
    d->primary_epoch = json_integer_value(json_object_get(j, "primary_epoch"));
    d->fenced = json_is_true(json_object_get(j, "fenced"));
    json_t *dec = json_object_get(j, "decision");
    if (json_is_object(dec)) {
        d->decision_epoch = json_integer_value(json_object_get(dec, "epoch"));
        d->decision_from = cfg_site(cfg, json_string_value(json_object_get(dec, "from")));
        d->decision_to = cfg_site(cfg, json_string_value(json_object_get(dec, "to")));
        d->decision_leader = cfg_site(cfg, json_string_value(json_object_get(dec, "leader")));
        const char *run = json_string_value(json_object_get(dec, "run"));
        const char *kind = json_string_value(json_object_get(dec, "kind"));
        const char *rbk = json_string_value(json_object_get(dec, "runbook"));
        if (d->decision_epoch &&
            (d->decision_from < 0 || d->decision_to < 0 || d->decision_leader < 0 ||
             !fits(run, sizeof d->decision_run) || !fits(kind, sizeof d->decision_kind) ||
             !fits(rbk, sizeof d->decision_runbook)))
            bad = true;
        snprintf(d->decision_run, sizeof d->decision_run, "%s",
                 json_is_string(json_object_get(dec, "run"))
                     ? json_string_value(json_object_get(dec, "run"))
                     : "");
        snprintf(d->decision_kind, sizeof d->decision_kind, "%s",
                 json_is_string(json_object_get(dec, "kind"))
                     ? json_string_value(json_object_get(dec, "kind"))
                     : "failover");
        snprintf(d->decision_runbook, sizeof d->decision_runbook, "%s",
                 json_is_string(json_object_get(dec, "runbook"))
                     ? json_string_value(json_object_get(dec, "runbook"))
                     : cfg->failover.runbook);
    }
    if (bad || d->primary < 0 || d->epoch < 0 || d->voted_epoch > d->epoch ||
        d->decision_epoch > d->epoch)
        return -1;
    return 0;
}
