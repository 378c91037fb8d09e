/* Fuzz target: the quorum state machine (orchestrator/quorum.c) fed hostile
 * peer messages, as the daemon feeds it what the peer links decode: JSON
 * objects (parsed with duplicate keys refused), from an authenticated site.
 * A fresh quorum is built from the unit tests' valid configuration (dc1
 * primary, dc2 standby, dc3 witness) for every input.
 *
 * Input: lines of text, each one of
 *   N{...}     a message from site N (0-2), then 10 ms pass
 *   vNS        this daemon's view of site N: d(own), u(p), anything else unknown
 *   tMS        MS milliseconds pass (at most 10^7), then a tick
 *   rKN        an operator asks for a K (f: failover, s: switchover) to site N
 *   aB bB      run_active / blocked set to B (0 or 1)
 *   pB         persisting fails from now on (1) or works again (0)
 *   R          a restart from what was last persisted
 *   D{...}     a restart from this state file (state_dir/quorum.json as the
 *              daemon reads it); if it is refused, a first start
 *   @N         (first line only) this daemon is site N (default 1, dc2)
 *
 * Invariants, checked in the callbacks: the durable state survives a
 * restart (to JSON and back, unchanged); the epoch, the vote's epoch and the
 * decision's epoch never go back; one vote per epoch; nothing is promised
 * that is not on disk (a granted vote, an accepted decision, a vote request
 * or a decision of our own are sent only once persisted); every message
 * sent serialises. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "orchestrator/config.h"
#include "orchestrator/quorum.h"

static struct config cfgs[3];

static struct {
    struct quorum_durable disk; /* what was last persisted */
    bool has_disk;
    bool fail_persist;
    int64_t max_epoch;
    int self;
} W;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init();
    static const char *const sites[3] = { "dc1", "dc2", "dc3" };
    for (int i = 0; i < 3; i++)
        fuzz_valid_config(&cfgs[i], sites[i]);
    return 0;
}

static bool durable_equal(const struct quorum_durable *a, const struct quorum_durable *b)
{
    return a->epoch == b->epoch && a->voted_epoch == b->voted_epoch &&
           a->voted_for == b->voted_for && a->primary == b->primary &&
           a->primary_epoch == b->primary_epoch && a->decision_epoch == b->decision_epoch &&
           (!a->decision_epoch ||
            (a->decision_from == b->decision_from && a->decision_to == b->decision_to &&
             a->decision_leader == b->decision_leader &&
             strcmp(a->decision_run, b->decision_run) == 0 &&
             strcmp(a->decision_kind, b->decision_kind) == 0 &&
             strcmp(a->decision_runbook, b->decision_runbook) == 0)) &&
           a->fenced == b->fenced;
}

/* What a restart would read back. */
static int reload(struct quorum *q, const struct quorum_durable *d, struct quorum_durable *out)
{
    json_t *j = quorum_durable_to_json(q, d);
    FUZZ_CHECK(j != NULL, "quorum_durable_to_json failed");
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    FUZZ_CHECK(text != NULL, "the durable state does not serialise");
    json_t *back = json_loads(text, 0, NULL);
    free(text);
    int r = quorum_durable_from_json(q->cfg, back, out);
    json_decref(back);
    return r;
}

static int io_persist(struct quorum *q, const struct quorum_durable *d)
{
    struct quorum_durable back;
    FUZZ_CHECK(reload(q, d, &back) == 0, "the durable state is refused when read back");
    FUZZ_CHECK(durable_equal(d, &back),
               "the durable state changes through a restart (epoch %lld decision %lld run '%s' "
               "kind '%s' runbook '%s' -> run '%s' kind '%s' runbook '%s')",
               (long long)d->epoch, (long long)d->decision_epoch, d->decision_run, d->decision_kind,
               d->decision_runbook, back.decision_run, back.decision_kind, back.decision_runbook);
    if (W.fail_persist)
        return -EIO;
    if (W.has_disk) {
        const struct quorum_durable *o = &W.disk;
        FUZZ_CHECK(d->epoch >= o->epoch, "epoch %lld -> %lld", (long long)o->epoch,
                   (long long)d->epoch);
        FUZZ_CHECK(d->voted_epoch >= o->voted_epoch, "voted epoch %lld -> %lld",
                   (long long)o->voted_epoch, (long long)d->voted_epoch);
        FUZZ_CHECK(d->decision_epoch >= o->decision_epoch, "decision epoch %lld -> %lld",
                   (long long)o->decision_epoch, (long long)d->decision_epoch);
        FUZZ_CHECK(d->voted_epoch != o->voted_epoch || o->voted_for < 0 ||
                       d->voted_for == o->voted_for,
                   "two votes in epoch %lld (%d, then %d)", (long long)d->voted_epoch, o->voted_for,
                   d->voted_for);
    }
    W.disk = *d;
    W.has_disk = true;
    return 0;
}

static int64_t jint(json_t *m, const char *k)
{
    return json_integer_value(json_object_get(m, k));
}

static void io_send(struct quorum *q, int site, json_t *msg)
{
    FUZZ_CHECK(site >= 0 && site < q->n && site != q->self, "message to site %d", site);
    FUZZ_CHECK(msg != NULL, "a NULL message (a json_pack that failed) to site %d", site);
    char *text = json_dumps(msg, JSON_COMPACT);
    FUZZ_CHECK(text != NULL, "a message that does not serialise");
    free(text);
    const char *t = json_string_value(json_object_get(msg, "t"));
    FUZZ_CHECK(t != NULL, "a message without a type");
    int64_t epoch = jint(msg, "epoch");
    const struct quorum_durable *d = &W.disk;
    if (!strcmp(t, "vote") && json_is_true(json_object_get(msg, "granted")))
        FUZZ_CHECK(W.has_disk && d->voted_epoch == epoch && d->voted_for == site,
                   "vote for site %d in epoch %lld sent before it was persisted", site,
                   (long long)epoch);
    if (!strcmp(t, "decision-ack") && json_is_true(json_object_get(msg, "accepted")))
        FUZZ_CHECK(W.has_disk && d->decision_epoch == epoch,
                   "decision %lld acknowledged but not persisted (disk has %lld)", (long long)epoch,
                   (long long)d->decision_epoch);
    if (!strcmp(t, "vote-req"))
        FUZZ_CHECK(
            W.has_disk && d->epoch >= epoch && d->voted_epoch == epoch && d->voted_for == q->self,
            "vote request for epoch %lld before our own vote was persisted", (long long)epoch);
    if (!strcmp(t, "decision"))
        FUZZ_CHECK(W.has_disk && d->decision_epoch == epoch && d->decision_leader == q->self,
                   "decision %lld sent before it was persisted", (long long)epoch);
}

static void io_event(struct quorum *q, const char *name, const char *detail)
{
    (void)q;
    FUZZ_CHECK(name && detail, "an event without a name or detail");
}

static void io_fence(struct quorum *q, const char *why)
{
    (void)q;
    FUZZ_CHECK(why != NULL, "a fence without a reason");
}

static void io_decided(struct quorum *q, const struct quorum_durable *d)
{
    FUZZ_CHECK(q->role == QROLE_LEADER && d->decision_leader == q->self,
               "decided while not the leader");
}

static const struct quorum_io IO = { io_send,  io_persist, io_event, io_fence,
                                     io_fence, io_decided, NULL };

static void check_state(const struct quorum *q, int64_t now)
{
    FUZZ_CHECK(q->d.epoch >= W.max_epoch, "epoch went back from %lld to %lld",
               (long long)W.max_epoch, (long long)q->d.epoch);
    W.max_epoch = q->d.epoch;
    int have = quorum_have(q, now);
    FUZZ_CHECK(have >= 1 && have <= q->n, "quorum_have %d", have);
    for (int i = 0; i < q->n; i++) {
        enum quorum_site_state s = quorum_site_state(q, i, now);
        FUZZ_CHECK(s <= QSITE_FENCED, "site state %d", (int)s);
        FUZZ_CHECK(quorum_site_state_name(s) != NULL, "no name for state %d", (int)s);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    memset(&W, 0, sizeof W);
    W.self = 1;
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    char *line = text, *end = text + size;
    if (size >= 2 && text[0] == '@' && text[1] >= '0' && text[1] <= '2')
        W.self = text[1] - '0';
    struct quorum q;
    int64_t now = 1000;
    FUZZ_CHECK(quorum_init(&q, &cfgs[W.self], &IO, NULL, now, 1) == 0, "quorum_init failed");
    while (line < end) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t len = nl ? (size_t)(nl - line) : (size_t)(end - line);
        int n = len >= 2 ? line[1] - '0' : -1;
        switch (len ? line[0] : 0) {
        case '0':
        case '1':
        case '2': {
            json_t *msg = json_loadb(line + 1, len - 1, JSON_REJECT_DUPLICATES, NULL);
            now += 10;
            if (json_is_object(msg))
                quorum_receive(&q, line[0] - '0', msg, now);
            json_decref(msg);
            break;
        }
        case 'v':
            if (len >= 3 && n >= 0 && n <= 2)
                quorum_set_view(&q, n,
                                line[2] == 'd'   ? HEALTH_DOWN
                                : line[2] == 'u' ? HEALTH_UP
                                                 : HEALTH_UNKNOWN,
                                now);
            break;
        case 't': {
            long long ms = strtoll(line + 1, NULL, 10);
            now += ms < 0 ? 0 : ms > 10000000 ? 10000000 : ms;
            quorum_tick(&q, now);
            break;
        }
        case 'r':
            if (len >= 3 && line[2] >= '0' && line[2] <= '2')
                quorum_request(&q, line[1] == 's' ? "switchover" : "failover", line[2] - '0',
                               line[1] == 's' ? "switchover" : "dc1-loss", now);
            break;
        case 'a':
            q.run_active = n == 1;
            break;
        case 'b':
            q.blocked = n == 1;
            break;
        case 'p':
            W.fail_persist = n == 1;
            break;
        case 'D': {
            /* What the daemon's load_state does with quorum.json. */
            json_t *j = json_loadb(line + 1, len - 1, 0, NULL);
            struct quorum_durable d;
            bool ok = quorum_durable_from_json(&cfgs[W.self], j, &d) == 0;
            json_decref(j);
            if (ok) {
                FUZZ_CHECK(d.primary >= 0 && d.primary < 3 && d.voted_for >= -1 && d.voted_for < 3,
                           "a state file accepted with sites out of range");
                struct quorum_durable back;
                FUZZ_CHECK(reload(&q, &d, &back) == 0 && durable_equal(&d, &back),
                           "a state file accepted that does not survive being written back");
            }
            FUZZ_CHECK(quorum_init(&q, &cfgs[W.self], &IO, ok ? &d : NULL, now, 3) == 0,
                       "quorum_init on a state file failed");
            W.has_disk = ok;
            if (ok)
                W.disk = d;
            W.max_epoch = q.d.epoch;
            break;
        }
        case 'R': {
            struct quorum_durable d;
            bool found = W.has_disk && reload(&q, &W.disk, &d) == 0;
            FUZZ_CHECK(quorum_init(&q, &cfgs[W.self], &IO, found ? &d : NULL, now, 2) == 0,
                       "quorum_init after a restart failed");
            W.max_epoch = q.d.epoch; /* the disk is the truth after a restart */
            break;
        }
        default:
            break;
        }
        quorum_tick(&q, now);
        check_state(&q, now);
        line += len + 1;
    }
    free(text);
    return 0;
}
