/* The control API: HTTP+JSON on the daemon's Unix socket (what the CLI
 * uses), and /metrics in Prometheus text format.
 *
 *   GET /v1/status     the status document (DESIGN.md section 8)
 *   GET /metrics       Prometheus metrics
 *   GET /v1/health     "ok" while the daemon runs
 * Endpoints of the runbook engine (runs, approvals) answer 501 until it
 * exists. */
#ifndef TRIAD_CONTROL_H
#define TRIAD_CONTROL_H

#include <stddef.h>

struct control;
struct daemon;

int control_start(struct control **out, struct daemon *d, char *err, size_t errlen);
void control_close(struct control *c, void (*cb)(void *arg), void *arg);

#endif
