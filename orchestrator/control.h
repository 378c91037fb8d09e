/* The control API: HTTP+JSON on the daemon's Unix socket (what the CLI
 * uses) and, with api.https, on an HTTPS listener; /metrics in Prometheus
 * text format.
 *
 *   GET  /v1/status                          the status document (DESIGN.md 8)
 *   GET  /metrics                            Prometheus metrics
 *   GET  /v1/health                          "ok" while the daemon runs
 *   GET  /v1/runs                            runs, newest first
 *   POST /v1/runs {kind, to, runbook}        an operator's failover/switchover
 *   GET  /v1/runs/ID                         a run (live at the leader)
 *   GET  /v1/runs/ID/journal                 its journal records
 *   POST /v1/runs/ID/steps/STEP/approve      {shown}: approve a gate
 *   POST /v1/runs/ID/steps/STEP/deny         {reason}: deny it
 *   POST /v1/runs/ID/abort
 *   POST /v1/ack                             lift the anti-flapping block
 * Changes need an operator (operators: unix_user, cert_cn, token_sha256);
 * requests given to a follower are forwarded to the leader. Over HTTPS
 * every endpoint but /v1/health also needs a verified client certificate
 * or an operator's bearer token (401 otherwise). */
#ifndef TRIAD_CONTROL_H
#define TRIAD_CONTROL_H

#include <stddef.h>

struct control;
struct daemon;

/* Opens the Unix socket, then the HTTPS listener when configured (logging
 * +api-https). On error err says what failed; *out may be set all the same
 * (the socket opened, HTTPS did not) and must then be closed with
 * control_close. -EINVAL from the HTTPS listener means its certificate, key
 * or CA files cannot be used. */
int control_start(struct control **out, struct daemon *d, char *err, size_t errlen);
void control_close(struct control *c, void (*cb)(void *arg), void *arg);

#endif
