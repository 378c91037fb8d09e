/* What the Kubernetes actions (k8s.scale, k8s.wait) share: a site's API
 * client made from its configuration (sites.<site>.kubernetes), the step's
 * time budget, fetching the objects a step names (by name or by label
 * selector) one request after the other, and the lifetime of an action's
 * state (cancel, then release once nothing is in flight).
 *
 * The fetch exists because a check must say what holds *now*: one read of
 * every object, nothing changed, nothing waited for. */
#ifndef TRIAD_K8S_COMMON_H
#define TRIAD_K8S_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "lib/k8s_client.h"
#include "runbooks/action.h"

/* The annotation that records the epoch of the last run that scaled an
 * object: a run never overrides a newer one (a stale leader). */
#define K8S_ACT_EPOCH_ANNOTATION "triad.element.io/epoch"

/* An object as fetched. */
struct k8s_act_obj {
    enum k8s_kind kind;
    size_t target; /* index of the target that found it */
    char name[K8S_NAME_MAX + 1];
    int spec;  /* spec.replicas */
    int ready; /* status.readyReplicas */
    int pods;  /* status.replicas (terminating pods too) */
    int64_t generation, observed;
    json_t *json; /* the whole object (valid during the callback) */
};

/* A site's API client; own_http is set when the host had no http client. */
struct k8s_act_site {
    struct http_client *own_http;
    struct k8s_client *k;
};

/* The action's state, first member of each Kubernetes action's own. */
struct k8s_act {
    struct rb_exec *x;
    struct k8s_act_site site;
    struct k8s_act_fetch *fetch; /* in flight */
    struct k8s_scale *scale;     /* in flight */
    uv_timer_t poll, deadline;   /* free for the action's use */
    int closing;
    bool releasing;
};

/* The step's time, a little less so that the action's own message (what
 * is missing) is the one reported rather than the engine's timeout. */
uint32_t k8s_act_budget_ms(const struct rb_exec *x);

/* Allocates the state (size bytes, at least sizeof(struct k8s_act)), sets
 * x->state, and connects to the site's API with requests bounded by
 * min(10 s, budget). NULL after rb_exec_done with the reason. */
void *k8s_act_start(struct rb_exec *x, size_t size, const char *site);

/* After an operation's callback cleared a->fetch / a->scale: true when the
 * callback must not go on (the operation was cancelled or has already
 * ended, or its state is being released: then the release goes on from
 * here). */
bool k8s_act_stopped(struct k8s_act *a);

/* The vtable's cancel and release for every Kubernetes action. */
void k8s_act_cancel(struct rb_exec *x);
void k8s_act_release(struct rb_exec *x);

/* rb_exec_done, with a detail cut to fit at a character boundary (the
 * API server's messages are long, and a detail must stay valid UTF-8). */
void k8s_act_done(struct rb_exec *x, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- fetching the named objects ---- */

struct k8s_act_fetch;

/* status 0 and every object, or the first error (-ENOENT: a name not found
 * or a selector matching nothing) with the reasons of every failed target
 * in detail; objs are those found. -ECANCELED after a cancel. Runs from a
 * loop callback; the fetch is freed after it returns. */
typedef void (*k8s_act_fetch_cb)(struct k8s_act_fetch *f, int status, const char *detail,
                                 const struct k8s_act_obj *objs, size_t n, void *arg);

/* Reads the targets in order: each an object by name, or every object a
 * selector matches (borrowed until the callback; replicas unused). With
 * keep_going, a missing object does not stop the others from being read (a
 * readiness report names every missing one); any other error stops at once.
 * 0, or a synchronous error (reason in k8s_client_error). */
int k8s_act_fetch_start(struct k8s_client *k, const char *ns, const struct k8s_scale_target *t,
                        size_t n, bool keep_going, k8s_act_fetch_cb cb, void *arg,
                        struct k8s_act_fetch **out);
void k8s_act_fetch_cancel(struct k8s_act_fetch *f);

/* A target for messages: "StatefulSet ess/ess-synapse-main" or
 * "StatefulSets in ess matching app=x". */
void k8s_act_target_name(const struct k8s_scale_target *t, const char *ns, char *out, size_t len);

/* Errors that waiting cannot cure (credentials, a missing object, a bad
 * request), as opposed to a slow or briefly failing API server. */
bool k8s_act_permanent(int status);

#endif
