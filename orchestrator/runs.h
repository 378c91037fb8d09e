/* Runs inside the daemon: the leader starts a run when a decision is
 * recorded (or takes one over from its journal), journals every record and
 * sends it to the peers; followers keep the same journal and know whether a
 * run is in progress. Approvals, denials and aborts given at any daemon are
 * forwarded to the leader. After a run, automatic runs are blocked for
 * failover.block_period until an operator acknowledges (`triad ack`). */
#ifndef TRIAD_RUNS_H
#define TRIAD_RUNS_H

#include <jansson.h>
#include <stdbool.h>

#include "orchestrator/quorum.h"

struct runs;
struct daemon;

/* The answer to an operator's request, possibly from the leader. */
typedef void (*runs_reply_cb)(int status, const char *detail, void *arg);

int runs_init(struct runs **out, struct daemon *d);
void runs_close(struct runs *r, void (*cb)(void *arg), void *arg);

/* A decision of ours was recorded on a majority: start or resume its run. */
void runs_decided(struct runs *r, const struct quorum_durable *dur);
/* Messages from peers: journal records and pulls, forwarded operator
 * requests and their answers, acks. Returns true when it was one of ours. */
bool runs_peer_message(struct runs *r, int site, json_t *msg);
void runs_tick(struct runs *r);
/* A probe's raw result changed (up/down): journaled while a run is on. */
void runs_probe_changed(struct runs *r, const char *site, const char *probe, bool up,
                        const char *detail);

/* The current (or last) run for `triad status`, or JSON null. */
json_t *runs_status(struct runs *r);
/* A run by id: the live run at the leader, else its journal summary. */
json_t *runs_get(struct runs *r, const char *id);
json_t *runs_list(struct runs *r);
json_t *runs_journal(struct runs *r, const char *id);

/* Operator requests. who is the operator's name. cb runs exactly once,
 * possibly later (when forwarded to the leader); status is 0 or a negative
 * errno with a detail for the operator. */
void runs_request_start(struct runs *r, const char *kind, const char *to, const char *runbook,
                        const char *who, runs_reply_cb cb, void *arg);
void runs_request_decide(struct runs *r, const char *run, const char *step, bool approve,
                         const char *who, const char *reason, const char *shown, runs_reply_cb cb,
                         void *arg);
void runs_request_abort(struct runs *r, const char *run, const char *who, runs_reply_cb cb,
                        void *arg);
void runs_request_ack(struct runs *r, const char *who, runs_reply_cb cb, void *arg);

#endif
