/* Unit tests: the quorum state machine in a deterministic simulation.
 *
 * Three quorum instances exchange messages through a simulated network with
 * delays, partitions and dead sites; each has its own drifting clock; each
 * site's PostgreSQL is modelled as writable or not. Probes are modelled by
 * feeding each daemon's health of each site from reachability every probe
 * interval. After every 10 ms of simulated time the safety invariants are
 * checked: never two writable primaries, at most one leader per epoch, no
 * decision without a majority having accepted it. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "orchestrator/config.h"
#include "orchestrator/quorum.h"
#include "probes/health.h"

#define N        3
#define MAXMSG   4096
#define STEP_MS  10
#define PROBE_MS 500
#define FENCE_MS 200 /* how long a self-fence takes to act */

struct msg {
    int from, to;
    int64_t at; /* delivery time (real) */
    json_t *body;
};

struct node {
    struct quorum q;
    struct config cfg;
    bool alive;
    double rate; /* clock rate error */
    int64_t offset;
    struct quorum_durable disk;
    bool has_disk;
    struct probe_health health[N];
    int64_t fence_at; /* real time a self-fence takes effect, 0 = none */
    bool decided;
    int64_t decided_epoch;
    int leader_events;
    int64_t lease_file; /* the lease file: until, on this node's clock (0: none) */
};

struct sim {
    struct node nodes[N];
    struct msg msgs[MAXMSG];
    size_t n_msgs;
    bool cut[N][N];
    int64_t t; /* real time, ms */
    uint64_t rng;
    bool pg_primary[N]; /* PostgreSQL runs as a primary (promoted or original) */
    bool pg_fenced[N];  /* read-only by a self-fence */
    bool pg_alive[N];
    int64_t promote_pending_epoch; /* leader waiting for the lease */
    int promote_to, promote_by;
    /* observations */
    int leaders_per_epoch[256];
    int64_t first_odown[N]; /* real time each node first saw ODOWN(dc1) */
    int64_t fenced_at;      /* real time DC1's fence took effect */
    int64_t revived_at[N];  /* real time a site came back from a power cut */
    int violations;
    int decisions;
    int takeovers;     /* decisions re-recorded by a new leader */
    int takeover_seen; /* the last leader that decided, -1 */
    char last_violation[256];
};

static struct sim *S;

static uint64_t rnd(void)
{
    uint64_t x = S->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    S->rng = x;
    return x;
}

static int node_index(struct quorum *q)
{
    for (int i = 0; i < N; i++) {
        if (&S->nodes[i].q == q)
            return i;
    }
    return -1;
}

static int64_t clock_of(int i)
{
    const struct node *n = &S->nodes[i];
    return (int64_t)((double)S->t * (1.0 + n->rate)) + n->offset;
}

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(S->last_violation, sizeof S->last_violation, fmt, ap);
    va_end(ap);
    S->violations++;
}

/* ---- quorum callbacks ---- */

static void io_send(struct quorum *q, int site, json_t *body)
{
    int from = node_index(q);
    if (S->n_msgs >= MAXMSG || S->cut[from][site])
        return;
    struct msg *m = &S->msgs[S->n_msgs++];
    m->from = from;
    m->to = site;
    m->at = S->t + 1 + (int64_t)(rnd() % 20);
    /* Serialise and parse back: what crosses the wire is text. */
    char *text = json_dumps(body, JSON_COMPACT);
    m->body = json_loads(text, 0, NULL);
    free(text);
}

static int io_persist(struct quorum *q, const struct quorum_durable *d)
{
    struct node *n = &S->nodes[node_index(q)];
    n->disk = *d;
    n->has_disk = true;
    return 0;
}

static void io_event(struct quorum *q, const char *name, const char *detail)
{
    int i = node_index(q);
    if (getenv("SIM_TRACE"))
        fprintf(stderr, "t=%lld %s %s %s\n", (long long)S->t, q->cfg->site, name, detail);
    if (strcmp(name, "+leader") == 0) {
        int64_t e = q->d.epoch;
        if (e < 256 && ++S->leaders_per_epoch[e] > 1)
            violation("two leaders in epoch %lld", (long long)e);
        S->nodes[i].leader_events++;
    }
    if (strcmp(name, "+odown") == 0 && strstr(detail, "site=dc1") && !S->first_odown[i])
        S->first_odown[i] = S->t;
}

static void io_self_fence(struct quorum *q, const char *why)
{
    (void)why;
    struct node *n = &S->nodes[node_index(q)];
    if (!n->fence_at)
        n->fence_at = S->t + FENCE_MS;
}

static void io_unfence(struct quorum *q, const char *why)
{
    (void)why;
    int i = node_index(q);
    S->nodes[i].fence_at = 0;
    S->pg_fenced[i] = false;
}

static void io_decided(struct quorum *q, const struct quorum_durable *d)
{
    int i = node_index(q);
    /* No decision without a majority that persisted it. */
    int accepted = 0;
    for (int k = 0; k < N; k++)
        accepted += S->nodes[k].has_disk && S->nodes[k].disk.decision_epoch == d->decision_epoch;
    if (accepted < q->need)
        violation("decision %lld with only %d acceptances", (long long)d->decision_epoch, accepted);
    S->nodes[i].decided = true;
    S->nodes[i].decided_epoch = d->decision_epoch;
    S->decisions++;
    /* The runbook: promote once the old primary's lease surely expired. A
     * run is in progress on every site that hears of it (the journal). */
    S->promote_pending_epoch = d->decision_epoch;
    S->promote_to = d->decision_to;
    S->promote_by = i;
    for (int k = 0; k < N; k++) {
        if (S->nodes[k].alive && (k == i || (!S->cut[i][k] && !S->cut[k][i])))
            S->nodes[k].q.run_active = true;
    }
    if (S->takeover_seen >= 0 && i != S->takeover_seen)
        S->takeovers++;
    S->takeover_seen = i;
}

static const struct quorum_io IO = { io_send,    io_persist, io_event, io_self_fence,
                                     io_unfence, io_decided, NULL };

/* ---- world ---- */

static bool reachable(int a, int b)
{
    return a == b || (!S->cut[a][b] && !S->cut[b][a]);
}

/* restart: from the node's disk; same_boot: the daemon alone restarted, so
 * the lease file is good (after a power cut it is not). */
static void start_node(int i, bool restart, bool same_boot)
{
    struct node *n = &S->nodes[i];
    n->alive = true;
    memset(n->health, 0, sizeof n->health);
    n->fence_at = 0;
    assert_int_equal(quorum_init(&n->q, &n->cfg, &IO, restart && n->has_disk ? &n->disk : NULL,
                                 clock_of(i), 1000 + (uint64_t)i * 7919 + S->rng),
                     0);
    if (restart && same_boot && n->lease_file)
        quorum_restore_lease(&n->q, n->lease_file - clock_of(i), clock_of(i));
}

static void sim_init(uint64_t seed, bool drift)
{
    S = calloc(1, sizeof *S);
    S->rng = seed * 2654435761u + 1;
    static const char *const names[N] = { "dc1", "dc2", "dc3" };
    for (int i = 0; i < N; i++) {
        struct node *n = &S->nodes[i];
        struct diag d;
        diag_init(&d);
        struct config_load_opts o = { .no_file_checks = true, .skip_runbooks = true };
        assert_int_equal(config_load(&n->cfg, "tests/fixtures/config/valid.yaml", &o, &d), 0);
        diag_free(&d);
        free(n->cfg.site);
        n->cfg.site = strdup(names[i]);
        n->cfg.quorum.lease_timeout_ms = 4000;
        if (drift) {
            n->rate = ((double)(rnd() % 4001) - 2000.0) / 100000.0; /* +-2% */
            n->offset = (int64_t)(rnd() % 100000);
        }
        S->pg_alive[i] = true;
    }
    S->pg_primary[0] = true;
    S->takeover_seen = -1;
    for (int i = 0; i < N; i++)
        start_node(i, false, false);
}

static void sim_free(void)
{
    for (size_t k = 0; k < S->n_msgs; k++)
        json_decref(S->msgs[k].body);
    for (int i = 0; i < N; i++)
        config_free(&S->nodes[i].cfg);
    free(S);
    S = NULL;
}

static void deliver(void)
{
    size_t keep = 0;
    for (size_t k = 0; k < S->n_msgs; k++) {
        struct msg *m = &S->msgs[k];
        if (m->at > S->t) {
            S->msgs[keep++] = *m;
            continue;
        }
        struct node *dst = &S->nodes[m->to];
        if (dst->alive && S->nodes[m->from].alive && reachable(m->from, m->to))
            quorum_receive(&dst->q, m->from, m->body, clock_of(m->to));
        json_decref(m->body);
    }
    S->n_msgs = keep;
}

static void probe_round(void)
{
    for (int i = 0; i < N; i++) {
        struct node *n = &S->nodes[i];
        if (!n->alive)
            continue;
        struct health_params hp = { n->cfg.health.fail_after, n->cfg.health.down_after_ms,
                                    n->cfg.health.recover_after };
        for (int s = 0; s < N; s++) {
            bool ok = S->pg_alive[s] && reachable(i, s);
            health_feed(&n->health[s], &hp, ok, clock_of(i));
            quorum_set_view(&n->q, s, n->health[s].state, clock_of(i));
        }
    }
}

static bool writable(int i)
{
    return S->pg_alive[i] && S->pg_primary[i] && !S->pg_fenced[i];
}

/* A site back from a power cut comes back as it was on disk: an old
 * primary is writable until its daemon, started with it, fences it. That
 * must happen within lease_margin / 2 plus the fence action; within that
 * window the site is not counted (no daemon runs before it starts). */
static bool in_revival(int i)
{
    return S->revived_at[i] &&
           S->t - S->revived_at[i] <=
               S->nodes[i].cfg.quorum.lease_margin_ms / 2 + FENCE_MS + 2 * STEP_MS;
}

static void check_invariants(void)
{
    int w_count = 0;
    for (int i = 0; i < N; i++)
        w_count += writable(i) && !in_revival(i);
    if (w_count > 1)
        violation("%d writable primaries at t=%lld", w_count, (long long)S->t);
    static bool last[N];
    if (getenv("SIM_TRACE")) {
        for (int i = 0; i < N; i++) {
            bool w = writable(i);
            if (w != last[i])
                fprintf(stderr, "t=%lld SIM dc%d writable=%d\n", (long long)S->t, i + 1, w);
            last[i] = w;
        }
    }
}

static void step(void)
{
    S->t += STEP_MS;
    deliver();
    if (S->t % PROBE_MS == 0)
        probe_round();
    for (int i = 0; i < N; i++) {
        struct node *n = &S->nodes[i];
        if (!n->alive)
            continue;
        quorum_tick(&n->q, clock_of(i));
        n->lease_file = quorum_lease_until(&n->q, clock_of(i));
        if (n->fence_at && S->t >= n->fence_at) {
            if (writable(i) && i == 0 && !S->fenced_at)
                S->fenced_at = S->t;
            S->pg_fenced[i] = true;
            n->fence_at = 0;
        }
    }
    if (S->promote_pending_epoch) {
        struct node *l = &S->nodes[S->promote_by];
        if (l->alive && l->q.role == QROLE_LEADER &&
            quorum_lease_expired(&l->q, clock_of(S->promote_by))) {
            /* The runbook's promotion also lifts a fence's read-only setting;
             * the old primary was fenced (or demoted) before. */
            S->pg_primary[S->promote_to] = true;
            S->pg_fenced[S->promote_to] = false;
            S->promote_pending_epoch = 0;
            S->takeover_seen = -1;
            for (int k = 0; k < N; k++)
                S->nodes[k].q.run_active = false; /* the run ended */
        }
    }
    check_invariants();
}

static void run_for(int64_t ms)
{
    int64_t end = S->t + ms;
    while (S->t < end)
        step();
}

static void kill_site(int i)
{
    S->nodes[i].alive = false;
    S->pg_alive[i] = false;
}

static void isolate(int i, bool on)
{
    for (int j = 0; j < N; j++) {
        if (j != i) {
            S->cut[i][j] = on;
            S->cut[j][i] = on;
        }
    }
}

static void partition(int a, int b, bool on)
{
    S->cut[a][b] = on;
    S->cut[b][a] = on;
}

static int leaders(void)
{
    int n = 0;
    for (int i = 0; i < N; i++)
        n += S->nodes[i].alive && S->nodes[i].q.role == QROLE_LEADER;
    return n;
}

/* ---- scenarios ---- */

static void test_steady_state(void **state)
{
    (void)state;
    sim_init(1, true);
    run_for(30000);
    assert_int_equal(S->violations, 0);
    assert_int_equal(S->decisions, 0);
    assert_true(quorum_holds_lease(&S->nodes[0].q, clock_of(0)));
    assert_false(S->nodes[0].q.self_fenced);
    for (int i = 0; i < N; i++)
        assert_int_equal(S->nodes[i].q.d.epoch, 0);
    sim_free();
}

static void test_dc1_killed(void **state)
{
    (void)state;
    sim_init(2, true);
    run_for(5000);
    int64_t kill_t = S->t;
    kill_site(0);
    run_for(20000);
    assert_int_equal(S->violations, 0);
    /* Both survivors reached ODOWN, quickly. */
    assert_true(S->first_odown[1] > 0 && S->first_odown[2] > 0);
    assert_true(S->first_odown[1] - kill_t < 4000);
    /* Exactly one leader; the decision is on both survivors. */
    assert_int_equal(S->decisions, 1);
    assert_int_equal(leaders(), 1);
    assert_int_equal(S->nodes[1].q.d.decision_epoch, S->nodes[2].q.d.decision_epoch);
    assert_int_equal(S->nodes[1].q.d.primary, 1);
    assert_int_equal(S->nodes[2].q.d.primary, 1);
    assert_true(writable(1));
    sim_free();
}

static void test_dc1_isolated(void **state)
{
    (void)state;
    sim_init(3, true);
    run_for(5000);
    int64_t cut_t = S->t;
    isolate(0, true);
    run_for(20000);
    assert_int_equal(S->violations, 0);
    /* DC1 fenced itself within the lease timeout (plus the fence action). */
    assert_true(S->nodes[0].q.self_fenced);
    assert_true(S->fenced_at > 0);
    assert_true(S->fenced_at - cut_t <= 4000 + 600 + FENCE_MS);
    assert_int_equal(S->decisions, 1);
    assert_true(writable(1));
    assert_false(writable(0));
    /* After healing DC1 learns the decision and stays fenced. */
    isolate(0, false);
    run_for(5000);
    assert_int_equal(S->nodes[0].q.d.primary, 1);
    assert_true(S->nodes[0].q.self_fenced);
    assert_false(writable(0));
    assert_int_equal(S->violations, 0);
    sim_free();
}

/* DC1 isolated, the failover done, DC1 back (fenced): an operator asks the
 * leader, its run over, for a failback. DC1 becomes primary again and, cut
 * off once more, fences itself again. */
static void test_failback_then_isolated_again(void **state)
{
    (void)state;
    sim_init(11, true);
    run_for(5000);
    isolate(0, true);
    run_for(20000);
    isolate(0, false);
    run_for(5000);
    assert_int_equal(S->decisions, 1);
    int leader = S->nodes[1].q.role == QROLE_LEADER ? 1 : 2;
    assert_int_equal(S->nodes[leader].q.role, QROLE_LEADER);
    assert_true(S->nodes[0].q.self_fenced);
    assert_int_equal(
        quorum_request(&S->nodes[leader].q, "failback", 0, "failback", clock_of(leader)), 0);
    run_for(15000);
    assert_int_equal(S->violations, 0);
    assert_int_equal(S->decisions, 2);
    for (int i = 0; i < N; i++)
        assert_int_equal(S->nodes[i].q.d.primary, 0);
    assert_true(writable(0));
    assert_false(writable(1));
    assert_false(S->nodes[0].q.self_fenced);
    /* A run in hand under a live leader refuses another request. */
    S->nodes[leader].q.run_active = true;
    int l2 = -1;
    for (int i = 0; i < N; i++)
        l2 = S->nodes[i].q.role == QROLE_LEADER ? i : l2;
    assert_true(l2 >= 0);
    S->nodes[l2].q.run_active = true;
    assert_int_equal(quorum_request(&S->nodes[l2].q, "switchover", 1, "switchover", clock_of(l2)),
                     -EBUSY);
    S->nodes[l2].q.run_active = false;
    S->nodes[leader].q.run_active = false;
    /* Cut off again: the lease lost, DC1 fences itself again. */
    S->fenced_at = 0;
    int64_t cut_t = S->t;
    isolate(0, true);
    run_for(10000);
    assert_true(S->nodes[0].q.self_fenced);
    assert_true(S->fenced_at > 0 && S->fenced_at - cut_t <= 4000 + 600 + FENCE_MS);
    assert_false(writable(0));
    assert_int_equal(S->violations, 0);
    sim_free();
}

static void test_one_link_cut(void **state)
{
    (void)state;
    sim_init(4, true);
    run_for(5000);
    partition(0, 1, true);
    run_for(30000); /* many times the detection time */
    assert_int_equal(S->violations, 0);
    assert_int_equal(S->first_odown[1], 0);
    assert_int_equal(S->first_odown[2], 0);
    assert_int_equal(S->decisions, 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(S->nodes[i].leader_events, 0);
    /* DC1 keeps its lease through DC3. */
    assert_false(S->nodes[0].q.self_fenced);
    assert_true(writable(0));
    sim_free();
}

static void test_witness_lost(void **state)
{
    (void)state;
    sim_init(5, true);
    run_for(5000);
    kill_site(2);
    run_for(20000);
    assert_int_equal(S->violations, 0);
    assert_int_equal(S->decisions, 0);
    assert_false(S->nodes[0].q.self_fenced);
    assert_true(quorum_holds_lease(&S->nodes[0].q, clock_of(0)));
    /* DC3 is ODOWN for both, but it is not the primary: no failover. */
    assert_int_equal(quorum_site_state(&S->nodes[0].q, 2, clock_of(0)), QSITE_ODOWN);
    sim_free();
}

static void test_standby_lost(void **state)
{
    (void)state;
    sim_init(6, true);
    run_for(5000);
    kill_site(1);
    run_for(20000);
    assert_int_equal(S->violations, 0);
    assert_int_equal(S->decisions, 0);
    assert_true(writable(0));
    assert_int_equal(quorum_site_state(&S->nodes[2].q, 1, clock_of(2)), QSITE_ODOWN);
    sim_free();
}

static void test_flapping(void **state)
{
    (void)state;
    sim_init(7, true);
    run_for(5000);
    /* DC1 unreachable for 700 ms of every 1400: faster than detection. */
    for (int k = 0; k < 30; k++) {
        isolate(0, true);
        run_for(700);
        isolate(0, false);
        run_for(700);
    }
    assert_int_equal(S->violations, 0);
    assert_int_equal(S->first_odown[1], 0);
    assert_int_equal(S->first_odown[2], 0);
    assert_int_equal(S->decisions, 0);
    sim_free();
}

static void test_restart_keeps_vote(void **state)
{
    (void)state;
    sim_init(8, true);
    run_for(5000);
    kill_site(0);
    /* Run until DC3 has voted, then restart it: its vote must survive. */
    while (S->nodes[2].disk.voted_epoch == 0 && S->t < 30000)
        step();
    int64_t voted = S->nodes[2].disk.voted_epoch;
    int voted_for = S->nodes[2].disk.voted_for;
    assert_true(voted > 0);
    S->nodes[2].alive = false;
    run_for(50);
    start_node(2, true, true);
    assert_int_equal(S->nodes[2].q.d.voted_epoch, voted);
    assert_int_equal(S->nodes[2].q.d.voted_for, voted_for);
    run_for(20000);
    assert_int_equal(S->violations, 0);
    assert_int_equal(S->decisions, 1);
    sim_free();
}

/* The primary's daemon restarted (PostgreSQL with it, as bound) and slow to
 * reach its peers again (1 s): within its lease it keeps the lease from the
 * lease file and never fences; after a power cut (no usable lease file) it
 * fences until a majority answers. */
static void test_primary_daemon_restart(void **state)
{
    (void)state;
    for (int same_boot = 1; same_boot >= 0; same_boot--) {
        sim_init(11, true);
        run_for(5000);
        kill_site(0);
        run_for(300);
        S->pg_alive[0] = true;
        S->revived_at[0] = S->t;
        start_node(0, true, same_boot);
        isolate(0, true);
        bool fenced = false;
        for (int k = 0; k < 5000 / STEP_MS; k++) {
            if (k == 1000 / STEP_MS)
                isolate(0, false);
            step();
            fenced |= S->nodes[0].q.self_fenced;
        }
        assert_int_equal(S->violations, 0);
        assert_int_equal(S->decisions, 0);
        assert_true(writable(0));
        assert_true(quorum_holds_lease(&S->nodes[0].q, clock_of(0)));
        if (same_boot)
            assert_false(fenced);
        else
            assert_true(fenced);
        sim_free();
    }
}

static void test_random_schedules(void **state)
{
    (void)state;
    int runs = getenv("TRIAD_UNDER_VALGRIND") ? 10
               : getenv("SIM_RUNS")           ? (int)strtol(getenv("SIM_RUNS"), NULL, 10)
                                              : 150;
    int failures = 0, with_failover = 0, promoted = 0, takeovers = 0;
    int first = 100;
    if (getenv("SIM_SEED")) {
        first = (int)strtol(getenv("SIM_SEED"), NULL, 10);
        runs = 1;
    }
    for (int seed = first; seed < first + runs; seed++) {
        sim_init((uint64_t)seed, true);
        run_for(3000);
        for (int ev = 0; ev < 12; ev++) {
            int a = (int)(rnd() % N), b = (int)((rnd() % (N - 1) + (uint64_t)a + 1) % N);
            int what = (int)(rnd() % 6);
            if (getenv("SIM_TRACE"))
                fprintf(stderr, "t=%lld SIM event %d a=dc%d b=dc%d\n", (long long)S->t, what, a + 1,
                        b + 1);
            switch (what) {
            case 0:
                isolate(a, true);
                break;
            case 1:
                partition(a, b, true);
                break;
            case 2:
                memset(S->cut, 0, sizeof S->cut);
                break;
            case 3:
                /* The daemon crashes. Deployment contract (docs/safety.md):
                 * PostgreSQL is bound to the daemon and stops with it. */
                if (S->nodes[a].alive) {
                    kill_site(a);
                } else {
                    S->pg_alive[a] = true;
                    S->revived_at[a] = S->t;
                    start_node(a, true, true);
                }
                break;
            case 4:
                if (!S->pg_alive[a] && !S->nodes[a].alive) {
                    S->pg_alive[a] = true; /* site back, as it was on disk */
                    S->revived_at[a] = S->t;
                    start_node(a, true, false);
                } else {
                    kill_site(a);
                }
                break;
            default:
                break;
            }
            run_for((int64_t)(rnd() % 8000));
        }
        if (S->violations) {
            fprintf(stderr, "seed %d: %s\n", seed, S->last_violation);
            failures++;
        }
        with_failover += S->decisions > 0;
        takeovers += S->takeovers;
        promoted += S->pg_primary[1] || S->pg_primary[2];
        sim_free();
    }
    printf("# %d schedules, %d with a failover decision, %d with a promotion, %d run takeovers, "
           "%d violations\n",
           runs, with_failover, promoted, takeovers, failures);
    assert_int_equal(failures, 0);
    /* The schedules must exercise failovers, or this test proves nothing. */
    if (runs >= 20)
        assert_true(with_failover > runs / 4 && promoted > runs / 5);
}

/* ---- message-level rules, on one instance ---- */

struct capture {
    json_t *sent[16];
    int to[16];
    int n_sent;
    int persists;
    bool fail_persist;
};

static struct capture CAP;

static void cap_send(struct quorum *q, int site, json_t *msg)
{
    (void)q;
    if (CAP.n_sent < 16) {
        CAP.to[CAP.n_sent] = site;
        CAP.sent[CAP.n_sent++] = json_incref(msg);
    }
}

static int cap_persist(struct quorum *q, const struct quorum_durable *d)
{
    (void)q;
    (void)d;
    CAP.persists++;
    return CAP.fail_persist ? -5 : 0;
}

static void cap_reset(void)
{
    for (int i = 0; i < CAP.n_sent; i++)
        json_decref(CAP.sent[i]);
    memset(&CAP, 0, sizeof CAP);
}

/* The last message of type t sent to `to`, or NULL. */
static json_t *cap_last(const char *t, int to)
{
    for (int i = CAP.n_sent - 1; i >= 0; i--) {
        if (CAP.to[i] == to && !strcmp(json_string_value(json_object_get(CAP.sent[i], "t")), t))
            return CAP.sent[i];
    }
    return NULL;
}

static void one_node(struct quorum *q, struct config *cfg, const char *site)
{
    struct diag d;
    diag_init(&d);
    struct config_load_opts o = { .no_file_checks = true, .skip_runbooks = true };
    assert_int_equal(config_load(cfg, "tests/fixtures/config/valid.yaml", &o, &d), 0);
    diag_free(&d);
    free(cfg->site);
    cfg->site = strdup(site);
    static const struct quorum_io io = { cap_send, cap_persist, NULL, NULL, NULL, NULL, NULL };
    cap_reset();
    assert_int_equal(quorum_init(q, cfg, &io, NULL, 1000, 1), 0);
}

static void vote_req(struct quorum *q, int from, int64_t epoch, const char *down, int64_t now)
{
    json_t *m = json_pack("{s:s,s:I,s:s,s:s}", "t", "vote-req", "epoch", (json_int_t)epoch,
                          "candidate", quorum_site_name(q, from), "target_down", down);
    quorum_receive(q, from, m, now);
    json_decref(m);
}

static void test_one_vote_per_epoch(void **state)
{
    (void)state;
    struct quorum q;
    struct config cfg;
    one_node(&q, &cfg, "dc3");
    quorum_set_view(&q, 0, HEALTH_DOWN, 1000);
    vote_req(&q, 1, 1, "dc1", 1100);
    assert_true(json_is_true(json_object_get(cap_last("vote", 1), "granted")));
    assert_int_equal(q.d.voted_epoch, 1);
    assert_int_equal(q.d.voted_for, 1);
    int persisted = CAP.persists;
    assert_true(persisted >= 1);
    /* Another candidate in the same epoch: refused. */
    vote_req(&q, 0, 1, "dc1", 1200);
    assert_false(json_is_true(json_object_get(cap_last("vote", 0), "granted")));
    /* A decision for epoch 1 from a leader we did not vote for: refused. */
    json_t *dec =
        json_pack("{s:s,s:I,s:s,s:s,s:s,s:s,s:s}", "t", "decision", "epoch", (json_int_t)1,
                  "leader", "dc1", "from", "dc1", "to", "dc2", "run", "x", "kind", "failover");
    quorum_receive(&q, 0, dec, 1300);
    json_decref(dec);
    assert_false(json_is_true(json_object_get(cap_last("decision-ack", 0), "accepted")));
    assert_int_equal(q.d.decision_epoch, 0);
    /* The next epoch may be voted for again. */
    vote_req(&q, 1, 2, "dc1", 1400);
    assert_true(json_is_true(json_object_get(cap_last("vote", 1), "granted")));
    cap_reset();
    config_free(&cfg);
}

static void test_vote_needs_own_sdown_and_disk(void **state)
{
    (void)state;
    struct quorum q;
    struct config cfg;
    one_node(&q, &cfg, "dc3");
    quorum_set_view(&q, 0, HEALTH_UP, 1000);
    vote_req(&q, 1, 1, "dc1", 1100);
    json_t *v = cap_last("vote", 1);
    assert_false(json_is_true(json_object_get(v, "granted")));
    assert_string_equal(json_string_value(json_object_get(v, "reason")),
                        "I do not see that site down");
    /* Not the primary: refused. */
    quorum_set_view(&q, 1, HEALTH_DOWN, 1000);
    vote_req(&q, 0, 2, "dc2", 1200);
    assert_false(json_is_true(json_object_get(cap_last("vote", 0), "granted")));
    /* A vote that cannot be written to disk is never sent. */
    quorum_set_view(&q, 0, HEALTH_DOWN, 1300);
    CAP.fail_persist = true;
    int before = CAP.n_sent;
    vote_req(&q, 1, 3, "dc1", 1400);
    for (int i = before; i < CAP.n_sent; i++)
        assert_string_not_equal(json_string_value(json_object_get(CAP.sent[i], "t")), "vote");
    cap_reset();
    config_free(&cfg);
}

static void test_lease_only_for_primary(void **state)
{
    (void)state;
    struct quorum q;
    struct config cfg;
    one_node(&q, &cfg, "dc3");
    json_t *hb = json_pack("{s:s,s:s,s:I,s:s,s:I,s:{},s:b,s:n,s:I}", "t", "hb", "site", "dc2",
                           "epoch", (json_int_t)0, "primary", "dc1", "primary_epoch", (json_int_t)0,
                           "views", "fenced", 0, "decision", "lease_seq", (json_int_t)5);
    quorum_receive(&q, 1, hb, 1100);
    assert_null(cap_last("lease-ack", 1));
    quorum_receive(&q, 0, hb, 1100);
    assert_non_null(cap_last("lease-ack", 0));
    json_decref(hb);
    cap_reset();
    config_free(&cfg);
}

/* Found by tests/fuzz/fuzz_quorum.c: the decision's runbook was dropped by
 * the durable state, the heartbeats and the leader's resends, so a restart
 * or a peer that learned of a switchover late went on with the failover
 * runbook. */
static void hb_from(struct quorum *q, int from, int64_t now)
{
    json_t *hb = json_pack("{s:s,s:s,s:I,s:s,s:I,s:{},s:b,s:n}", "t", "hb", "site",
                           quorum_site_name(q, from), "epoch", (json_int_t)0, "primary", "dc1",
                           "primary_epoch", (json_int_t)0, "views", "fenced", 0, "decision");
    quorum_receive(q, from, hb, now);
    json_decref(hb);
}

/* A peer that said it was fenced is reported fenced while we hear it; once
 * its link goes quiet that word is stale (the fence may have been lifted
 * just before the cut; found by 20-quorum.sh in CI). */
static void test_fenced_state_needs_a_fresh_peer(void **state)
{
    (void)state;
    struct quorum q;
    struct config cfg;
    one_node(&q, &cfg, "dc2");
    json_t *hb = json_pack("{s:s,s:s,s:I,s:s,s:I,s:{},s:b,s:n}", "t", "hb", "site", "dc1", "epoch",
                           (json_int_t)0, "primary", "dc1", "primary_epoch", (json_int_t)0, "views",
                           "fenced", 1, "decision");
    quorum_receive(&q, 0, hb, 1000);
    json_decref(hb);
    assert_int_equal(quorum_site_state(&q, 0, 1000), QSITE_FENCED);
    assert_int_equal(quorum_site_state(&q, 0, 1000 + cfg.quorum.peer_timeout_ms), QSITE_FENCED);
    quorum_set_view(&q, 0, HEALTH_DOWN, 1000);
    assert_int_equal(quorum_site_state(&q, 0, 1001 + cfg.quorum.peer_timeout_ms), QSITE_SDOWN);
    cap_reset();
    config_free(&cfg);
}

/* A primary's daemon restarted within its lease keeps it (restored from the
 * lease file) until its end: no fence unless no majority renews it. */
static void test_lease_restored_after_restart(void **state)
{
    (void)state;
    struct quorum q;
    struct config cfg;
    one_node(&q, &cfg, "dc1");
    int64_t lt = cfg.quorum.lease_timeout_ms;
    assert_false(quorum_holds_lease(&q, 1000));
    assert_int_equal(quorum_lease_until(&q, 1000), 0);
    assert_false(quorum_restore_lease(&q, 0, 1000));
    assert_true(quorum_restore_lease(&q, 2000, 1000));
    assert_true(quorum_holds_lease(&q, 1000));
    assert_int_equal(quorum_lease_until(&q, 1000), 3000);
    /* Never longer than a lease, never shortened by an older save. */
    assert_true(quorum_restore_lease(&q, lt * 10, 1000));
    assert_int_equal(quorum_lease_until(&q, 1000), 1000 + lt);
    assert_false(quorum_restore_lease(&q, 2000, 1000));
    quorum_tick(&q, 1000 + lt - 1);
    assert_false(q.self_fenced);
    quorum_tick(&q, 1000 + lt);
    assert_true(q.self_fenced);
    assert_false(quorum_restore_lease(&q, 2000, 1000 + lt));
    cap_reset();
    config_free(&cfg);
    /* A standby has no lease to restore. */
    one_node(&q, &cfg, "dc2");
    assert_false(quorum_restore_lease(&q, 2000, 1000));
    assert_false(quorum_holds_lease(&q, 1000));
    cap_reset();
    config_free(&cfg);
}

static void test_decision_keeps_its_runbook(void **state)
{
    (void)state;
    struct quorum q;
    struct config cfg;
    one_node(&q, &cfg, "dc3");
    json_t *dec = json_pack("{s:s,s:I,s:s,s:s,s:s,s:s,s:s,s:s}", "t", "decision", "epoch",
                            (json_int_t)1, "leader", "dc2", "from", "dc1", "to", "dc2", "run",
                            "dc2-e1-0001", "kind", "switchover", "runbook", "switchover");
    quorum_receive(&q, 1, dec, 1100);
    json_decref(dec);
    assert_int_equal(q.d.decision_epoch, 1);
    assert_string_equal(q.d.decision_runbook, "switchover");
    /* Through the disk. */
    json_t *j = quorum_durable_to_json(&q, &q.d);
    struct quorum_durable back;
    assert_int_equal(quorum_durable_from_json(&cfg, j, &back), 0);
    json_decref(j);
    assert_string_equal(back.decision_runbook, "switchover");
    /* In the heartbeats. */
    cap_reset();
    quorum_tick(&q, 5000);
    json_t *hb = cap_last("hb", 0);
    assert_non_null(hb);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(hb, "decision"), "runbook")),
        "switchover");
    cap_reset();
    config_free(&cfg);

    /* In the leader's resend to a site that has not acknowledged. */
    one_node(&q, &cfg, "dc2");
    hb_from(&q, 0, 1100);
    hb_from(&q, 2, 1100);
    assert_int_equal(quorum_request(&q, "switchover", 1, "switchover", 1200), 0);
    json_t *vote =
        json_pack("{s:s,s:I,s:b}", "t", "vote", "epoch", (json_int_t)q.d.epoch, "granted", 1);
    quorum_receive(&q, 2, vote, 1300);
    json_decref(vote);
    assert_int_equal(q.role, QROLE_LEADER);
    cap_reset();
    hb_from(&q, 0, 2000);
    hb_from(&q, 2, 2000);
    json_t *again = cap_last("decision", 0);
    assert_non_null(again);
    assert_string_equal(json_string_value(json_object_get(again, "runbook")), "switchover");
    cap_reset();
    config_free(&cfg);
}

/* Found by tests/fuzz/fuzz_quorum.c: a decision whose persisting failed was
 * left in memory, and on_decision then acknowledged it as accepted. */
static void test_unpersisted_decision_not_acked(void **state)
{
    (void)state;
    struct quorum q;
    struct config cfg;
    one_node(&q, &cfg, "dc3");
    CAP.fail_persist = true;
    json_t *dec = json_pack("{s:s,s:I,s:s,s:s,s:s,s:s,s:s}", "t", "decision", "epoch",
                            (json_int_t)1, "leader", "dc2", "from", "dc1", "to", "dc2", "run",
                            "dc2-e1-0001", "kind", "failover");
    quorum_receive(&q, 1, dec, 1100);
    json_t *ack = cap_last("decision-ack", 1);
    assert_non_null(ack);
    assert_false(json_is_true(json_object_get(ack, "accepted")));
    assert_int_equal(q.d.decision_epoch, 0);
    assert_int_equal(q.d.primary, 0);
    /* Once the disk works again the same decision is accepted. */
    CAP.fail_persist = false;
    quorum_receive(&q, 1, dec, 1200);
    json_decref(dec);
    assert_true(json_is_true(json_object_get(cap_last("decision-ack", 1), "accepted")));
    assert_int_equal(q.d.decision_epoch, 1);
    cap_reset();
    config_free(&cfg);
}

/* Found by tests/fuzz/fuzz_quorum.c: standing for election when the vote
 * could not be persisted took the epoch back but left the vote for the
 * next epoch in memory; the next state written was unreadable at restart. */
static void test_failed_stand_leaves_state_readable(void **state)
{
    (void)state;
    struct quorum q;
    struct config cfg;
    one_node(&q, &cfg, "dc3");
    hb_from(&q, 1, 1100);
    CAP.fail_persist = true;
    assert_int_equal(quorum_request(&q, "switchover", 1, "switchover", 1200), 0);
    assert_int_equal(q.d.epoch, 0);
    assert_int_equal(q.d.voted_epoch, 0);
    assert_int_equal(q.d.voted_for, -1);
    CAP.fail_persist = false;
    json_t *j = quorum_durable_to_json(&q, &q.d);
    struct quorum_durable back;
    assert_int_equal(quorum_durable_from_json(&cfg, j, &back), 0);
    json_decref(j);
    cap_reset();
    config_free(&cfg);
}

/* Found by tests/fuzz/fuzz_quorum.c: a decision whose run id did not fit
 * was cut, inside a multibyte character here; the state then failed to
 * serialise, so the decision was lost on disk and no heartbeat could be
 * built (the daemon went silent). Such a decision is refused now; and the
 * run ids a leader makes always fit, whatever the length of its site name. */
static void test_decision_ids_kept_whole(void **state)
{
    (void)state;
    struct quorum q;
    struct config cfg;
    one_node(&q, &cfg, "dc3");
    char run[64];
    snprintf(run, sizeof run, "%s\xc3\xa9", "dc2-e1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"); /* 38 + 2 */
    json_t *dec =
        json_pack("{s:s,s:I,s:s,s:s,s:s,s:s,s:s}", "t", "decision", "epoch", (json_int_t)1,
                  "leader", "dc2", "from", "dc1", "to", "dc2", "run", run, "kind", "failover");
    assert_non_null(dec);
    quorum_receive(&q, 1, dec, 1100);
    json_decref(dec);
    assert_false(json_is_true(json_object_get(cap_last("decision-ack", 1), "accepted")));
    assert_int_equal(q.d.decision_epoch, 0);
    cap_reset();
    quorum_tick(&q, 5000);
    assert_non_null(cap_last("hb", 0));
    cap_reset();
    config_free(&cfg);

    /* A long site name: the leader's run ids differ from epoch to epoch. */
    struct diag d;
    diag_init(&d);
    struct config_load_opts o = { .no_file_checks = true, .skip_runbooks = true };
    assert_int_equal(config_load(&cfg, "tests/fixtures/config/valid.yaml", &o, &d), 0);
    diag_free(&d);
    const char *longname = "datacenter-two-frankfurt-zone-b-rack-42";
    free(cfg.sites[1].name);
    cfg.sites[1].name = strdup(longname);
    free(cfg.site);
    cfg.site = strdup(longname);
    static const struct quorum_io io = { cap_send, cap_persist, NULL, NULL, NULL, NULL, NULL };
    assert_int_equal(quorum_init(&q, &cfg, &io, NULL, 1000, 1), 0);
    hb_from(&q, 0, 1100);
    hb_from(&q, 2, 1100);
    assert_int_equal(quorum_request(&q, "switchover", 1, "switchover", 1200), 0);
    json_t *vote = json_pack("{s:s,s:I,s:b}", "t", "vote", "epoch", (json_int_t)1, "granted", 1);
    quorum_receive(&q, 2, vote, 1300);
    json_decref(vote);
    assert_int_equal(q.d.decision_epoch, 1);
    assert_non_null(strstr(q.d.decision_run, "-e1-"));
    cap_reset();
    config_free(&cfg);
}

/* Found by tests/fuzz/fuzz_quorum.c: a state file whose decision names a
 * site the configuration does not have (say, renamed since) was accepted
 * with the site as -1; no heartbeat could then be built, so the daemon went
 * silent. A vote for an unknown site read as "no vote" (a second vote in
 * that epoch possible). Both are refused now, like any damaged state. */
static void test_state_file_with_unknown_sites(void **state)
{
    (void)state;
    struct config cfg;
    struct diag d;
    diag_init(&d);
    struct config_load_opts o = { .no_file_checks = true, .skip_runbooks = true };
    assert_int_equal(config_load(&cfg, "tests/fixtures/config/valid.yaml", &o, &d), 0);
    diag_free(&d);
    static const char *const good =
        "{\"epoch\":5,\"voted_epoch\":5,\"voted_for\":\"dc2\",\"primary\":\"dc2\","
        "\"primary_epoch\":5,\"fenced\":false,\"decision\":{\"epoch\":5,\"from\":\"dc1\","
        "\"to\":\"dc2\",\"leader\":\"dc2\",\"run\":\"dc2-e5-0a0a\",\"kind\":\"failover\"}}";
    static const char *const bad[] = {
        "{\"epoch\":5,\"voted_epoch\":5,\"voted_for\":\"dc6\",\"primary\":\"dc1\"}",
        "{\"epoch\":5,\"primary\":\"dc2\",\"decision\":{\"epoch\":5,\"from\":\"dc6\","
        "\"to\":\"dc2\",\"leader\":\"dc2\",\"run\":\"r\",\"kind\":\"failover\"}}",
        "{\"epoch\":5,\"primary\":\"dc2\",\"decision\":{\"epoch\":5,\"from\":\"dc1\","
        "\"to\":\"dc2\",\"leader\":\"dc2\",\"run\":\"0123456789012345678901234567890123456789\"}}",
    };
    struct quorum_durable dur;
    json_t *j = json_loads(good, 0, NULL);
    assert_int_equal(quorum_durable_from_json(&cfg, j, &dur), 0);
    json_decref(j);
    assert_int_equal(dur.voted_for, 1);
    assert_int_equal(dur.decision_from, 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        j = json_loads(bad[i], 0, NULL);
        assert_non_null(j);
        if (quorum_durable_from_json(&cfg, j, &dur) != -1)
            fail_msg("state file %zu accepted", i);
        json_decref(j);
    }
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steady_state),
        cmocka_unit_test(test_dc1_killed),
        cmocka_unit_test(test_dc1_isolated),
        cmocka_unit_test(test_failback_then_isolated_again),
        cmocka_unit_test(test_one_link_cut),
        cmocka_unit_test(test_witness_lost),
        cmocka_unit_test(test_standby_lost),
        cmocka_unit_test(test_flapping),
        cmocka_unit_test(test_restart_keeps_vote),
        cmocka_unit_test(test_primary_daemon_restart),
        cmocka_unit_test(test_random_schedules),
        cmocka_unit_test(test_one_vote_per_epoch),
        cmocka_unit_test(test_vote_needs_own_sdown_and_disk),
        cmocka_unit_test(test_lease_only_for_primary),
        cmocka_unit_test(test_fenced_state_needs_a_fresh_peer),
        cmocka_unit_test(test_lease_restored_after_restart),
        cmocka_unit_test(test_decision_keeps_its_runbook),
        cmocka_unit_test(test_unpersisted_decision_not_acked),
        cmocka_unit_test(test_failed_stand_leaves_state_readable),
        cmocka_unit_test(test_decision_ids_kept_whole),
        cmocka_unit_test(test_state_file_with_unknown_sites),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
