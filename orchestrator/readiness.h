/* Failover readiness: the failover runbook's non-destructive checks, run
 * every failover.readiness_interval (see readiness.c). */
#ifndef TRIAD_READINESS_H
#define TRIAD_READINESS_H

#include <jansson.h>
#include <stdbool.h>

struct readiness;
struct daemon;

int readiness_init(struct readiness **out, struct daemon *d);
void readiness_tick(struct readiness *rd);
/* {"ready": true|false|null, "reasons": [...], "checked_ms_ago"} */
json_t *readiness_status(const struct readiness *rd);
bool readiness_ready(const struct readiness *rd);
/* A round of checks is in progress (NULL: not). */
bool readiness_busy(const struct readiness *rd);
void readiness_close(struct readiness *rd);

#endif
