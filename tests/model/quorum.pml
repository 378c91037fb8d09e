/* quorum.pml: the safety core of triad (orchestrator/quorum.c, DESIGN.md
 * section 5) as a Promela model, checked with spin by `make model`.
 *
 * Three sites; site 0 starts as the primary. The environment cuts and heals
 * links between sites nondeterministically and may kill the primary site.
 * Time advances in ticks of a global clock; the drift allowance and the
 * margin are folded into GRANT (a peer's promise) exceeding LEASE (the
 * primary's own count), as in quorum.c's grant_span().
 *
 * Abstractions (stated, since a model is only as good as them):
 *  - a message exchange between two sites whose link is up is one atomic
 *    step (no message is delayed past a later one); a cut link loses it;
 *  - a site "sees X down" when its link to X is cut or X is dead: probes
 *    and ODOWN counting are not modelled beyond that;
 *  - the runbook is reduced to "promote the target once the leader knows the
 *    old primary's lease has surely expired";
 *  - durable state survives; daemon restarts are not modelled (the unit
 *    simulation in tests/unit/test_quorum.c covers them).
 *
 * Checked: at most one leader per epoch; no decision without a majority
 * having accepted it; never two sites writable at once. */

#define N       3
#define MAJ     2
#define LEASE   3 /* ticks the primary counts from the request a majority acked */
#define GRANT   4 /* ticks a peer promises (lease x (1 + drift) + margin) */
#define MAXT    14
#define MAXE    3
#define MAXCUTS 4

byte now;
bool link[9];    /* link[i*3+j]: up; symmetric */
bool alive[N];
bool pg_primary[N];
bool fenced[N];

byte epoch[N];
byte voted_epoch[N];
byte voted_for[N];
byte primary[N];    /* whom each site believes primary */
byte dec_epoch[N];  /* latest decision accepted */

/* The primary's lease: send time of the latest request acked by a peer. */
byte acked_at[N];
/* Each peer's promise to the primary. */
byte grant_until[N];

/* Temporaries of the inline steps (each step is atomic). */
byte j, k, best, e, votes, acks, expiry, t, c;
byte lease_end; /* the primary's own count: latest acked request + LEASE */

/* Leader bookkeeping. */
byte leader_of[MAXE + 1]; /* 0: none yet, else site + 1 */
bool decided;
byte decided_epoch;
byte target;
byte lease_expiry;
byte cuts;

#define up(i, j) (link[(i) * 3 + (j)] && alive[i] && alive[j])
#define writable(i) (alive[i] && pg_primary[i] && !fenced[i])
#define sees_down(i, x) (!up(i, x))

inline cut(i, j) {
    link[i * 3 + j] = false;
    link[j * 3 + i] = false
}

inline heal_all() {
    k = 0;
    do
    :: k < 9 -> link[k] = true; k++
    :: else -> break
    od
}

/* The primary asks for its lease; every peer that still believes it is
 * primary grants it and promises GRANT ticks. */
inline lease_round(p) {
    j = 0;
    do
    :: j < N ->
        if
        :: j != p && up(p, j) && primary[j] == p ->
            grant_until[j] = now + GRANT;
            acked_at[j] = now;
            lease_end = now + LEASE
        :: else -> skip
        fi;
        j++
    :: else -> break
    od
}

/* The primary's own check: fence once its lease has run out. */
inline lease_check(p) {
    if
    :: now >= lease_end -> fenced[p] = true
    :: else -> skip
    fi
}

/* Candidate c stands for epoch e against the primary p. */
inline election(c, p) {
    e = epoch[c] + 1;
    epoch[c] = e;
    voted_epoch[c] = e;
    voted_for[c] = c;
    votes = 1;
    j = 0;
    do
    :: j < N ->
        if
        :: j != c && up(c, j) ->
            if
            :: epoch[j] < e -> epoch[j] = e
            :: else -> skip
            fi;
            if
            :: voted_epoch[j] < e && primary[j] == p && j != p && sees_down(j, p) ->
                voted_epoch[j] = e;
                voted_for[j] = c;
                votes++
            :: else -> skip
            fi
        :: else -> skip
        fi;
        j++
    :: else -> break
    od;
    if
    :: votes >= MAJ ->
        assert(leader_of[e] == 0); /* at most one leader per epoch */
        leader_of[e] = c + 1;
        decide(c, p, e)
    :: else -> skip
    fi
}

/* The leader records "failover e: p -> t" on a majority; each acceptor
 * stops granting p's lease and reports how long its promise still runs. */
inline decide(c, p, e) {
    t = (c == 1 -> 1 : (p == 1 -> 2 : 1)); /* the standby (site 1) unless it is the old primary */
    acks = 0;
    expiry = now;
    k = 0;
    do
    :: k < N ->
        if
        :: (k == c || up(c, k)) && dec_epoch[k] < e &&
           !(voted_epoch[k] == e && voted_for[k] != c) ->
            dec_epoch[k] = e;
            primary[k] = t;
            if
            :: grant_until[k] > expiry -> expiry = grant_until[k]
            :: else -> skip
            fi;
            if
            :: k == p -> fenced[p] = true /* it learns another site is primary */
            :: else -> skip
            fi;
            acks++
        :: else -> skip
        fi;
        k++
    :: else -> break
    od;
    if
    :: acks >= MAJ && !decided ->
        decided = true;
        decided_epoch = e;
        target = t;
        lease_expiry = expiry
    :: else -> skip
    fi;
    assert(!decided || decided_epoch != e || acks >= MAJ) /* no decision without a majority */
}

active proctype world()
{
    alive[0] = true; alive[1] = true; alive[2] = true;
    pg_primary[0] = true;
    primary[0] = 0; primary[1] = 0; primary[2] = 0;
    heal_all();
    /* At start the primary counts as if a request had just gone out, and
     * every peer keeps a promise as if it had just granted one: quorum.c's
     * quorum_init does both (a restart must not shorten a promise). */
    lease_end = LEASE;
    grant_until[1] = GRANT;
    grant_until[2] = GRANT;
    do
    /* Time passes, but not beyond the primary's lease end while it has not
     * checked it: the daemon ticks every 100 ms, well inside the margin
     * (GRANT - LEASE) that its peers add to their promises. */
    :: atomic { now < MAXT && !(alive[0] && !fenced[0] && now >= lease_end) -> now++ }
    :: atomic { !fenced[0] && alive[0] && primary[0] == 0 -> lease_round(0) }
    :: atomic { alive[0] && !fenced[0] -> lease_check(0) }
    :: atomic { cuts < MAXCUTS -> cuts++; cut(0, 1) }
    :: atomic { cuts < MAXCUTS -> cuts++; cut(0, 2) }
    :: atomic { cuts < MAXCUTS -> cuts++; cut(1, 2) }
    :: atomic { cuts < MAXCUTS -> cuts++; heal_all() }
    :: atomic { alive[0] -> alive[0] = false }
    :: atomic {
        /* a site that sees the primary down stands (bounded epochs) */
        c = 1;
        do
        :: c < N ->
            if
            :: alive[c] && primary[c] == 0 && sees_down(c, 0) && epoch[c] < MAXE && !decided ->
                election(c, 0)
            :: else -> skip
            fi;
            c++
        :: else -> break
        od
       }
    :: atomic {
        /* a site that had not heard of the decision learns it */
        c = 0;
        do
        :: c < N ->
            if
            :: decided && dec_epoch[c] < decided_epoch && up(c, target) ->
                dec_epoch[c] = decided_epoch;
                primary[c] = target;
                if
                :: c == 0 -> fenced[0] = true
                :: else -> skip
                fi
            :: else -> skip
            fi;
            c++
        :: else -> break
        od
       }
    :: atomic { decided && !pg_primary[target] && now >= lease_expiry -> pg_primary[target] = true }
    od
}

/* Never two writable primaries. */
active proctype monitor()
{
    atomic {
        (writable(0) && writable(1)) || (writable(0) && writable(2)) || (writable(1) && writable(2)) ->
            assert(false)
    }
}
