/* Notifications: on +odown, a gate waiting, a step failed, a run finished
 * or readiness lost, a message goes to every configured target (generic
 * JSON webhook, a Matrix room, Slack-compatible webhook, PagerDuty Events
 * v2). Sending never blocks anything: each message is queued, retried with
 * backoff (1 s, 2 s, 4 s ... up to 5 tries), and dropped with a log line
 * after that. The queue is capped. */
#ifndef TRIAD_NOTIFY_H
#define TRIAD_NOTIFY_H

#include <stdbool.h>
#include <uv.h>

#include "orchestrator/config.h"

#define NOTIFY_QUEUE_MAX 256
#define NOTIFY_TRIES     5

struct notifier;
struct http_client;

struct notifier *notify_new(uv_loop_t *loop, const struct config *cfg, struct http_client *http);
/* event: odown, gate, step-failed, run-finished, readiness (targets filter
 * on it); severity: info, warning, critical. */
void notify_send(struct notifier *n, const char *event, const char *severity, const char *text);
void notify_close(struct notifier *n, void (*cb)(void *arg), void *arg);
/* Messages are queued or in flight (NULL: not). */
bool notify_busy(const struct notifier *n);
/* Counters for metrics. */
unsigned long notify_sent(const struct notifier *n);
unsigned long notify_failed(const struct notifier *n);

#endif
