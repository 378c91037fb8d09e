/* Fencing: making a site unable to accept writes, and verifying it.
 *
 * A fence is only as good as its verification: every driver first acts,
 * then checks the outcome through an independent observation (a write
 * attempt refused, the BMC reporting PowerState Off, the workloads at zero
 * ready replicas) and reports success only then. Drivers behind one vtable:
 *   postgres  read-only (ALTER SYSTEM default_transaction_read_only + reload)
 *             and client backends terminated; verified by a refused write
 *   k8s       the site's ESS workloads scaled to 0; verified by readiness
 *   redfish   BMC ForceOff; verified by PowerState Off
 *   exec      a site script; verified by a second command exiting 0
 * `manual` (an operator's confirmation) and `lease` (waiting for the old
 * primary's lease to surely expire) are decided by the runbook engine with
 * the quorum; they have no driver here.
 *
 * Some fences can be lifted (the primary's own soft fence when its lease
 * comes back): postgres (read-write again) and k8s (configured replicas). */
#ifndef TRIAD_FENCE_H
#define TRIAD_FENCE_H

#include <stdbool.h>
#include <uv.h>

#include "orchestrator/config.h"

#define FENCE_DETAIL_MAX 512

struct fence_op;
struct http_client;

typedef void (*fence_done_cb)(struct fence_op *op, int status, const char *detail, void *arg);

struct fence_driver {
    const char *method;
    bool can_unfence;
    /* Act, then verify; end with fence_op_finish exactly once (late calls
     * after a timeout or cancel are ignored). */
    void (*start)(struct fence_op *op);
    /* Release the driver's resources after the result was delivered; call
     * fence_op_released(op) when done (may be from inside this call). */
    void (*release)(struct fence_op *op);
};

struct fence_op {
    uv_loop_t *loop;
    const struct config *cfg;
    const struct cfg_fence *fence;
    const struct fence_driver *driver;
    struct http_client *http;
    bool unfence;
    void *drv; /* driver state */
    uv_timer_t timer;
    fence_done_cb cb;
    void *arg;
    bool finished;
    int status;
    char detail[FENCE_DETAIL_MAX];
    char step[64]; /* what it is doing now, for the timeout message */
    void (*released_cb)(void *arg);
    void *released_arg;
};

/* Starts fencing (or lifting the fence, unfence=true) with the method in
 * `fence`, bounded by its timeout. 0 or a negative errno (-ENOTSUP for a
 * method without a driver or that cannot be lifted). The callback runs
 * exactly once, from the loop: 0 when verified, else a negative errno with
 * a detail; the op is freed after it returns. */
int fence_start(uv_loop_t *loop, const struct config *cfg, const struct cfg_fence *fence,
                bool unfence, struct http_client *http, fence_done_cb cb, void *arg,
                struct fence_op **out);
/* Abandons an operation: its callback runs with -ECANCELED. */
void fence_cancel(struct fence_op *op);
/* Abandons it and never calls back (the caller is going away). */
void fence_forget(struct fence_op *op);
/* cb(arg) runs once the operation has let go of everything it used (the
 * HTTP client among them), after its result: its owner may then close
 * those. The op is freed right after. */
void fence_on_released(struct fence_op *op, void (*cb)(void *arg), void *arg);

/* Driver API. */
void fence_op_finish(struct fence_op *op, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void fence_op_step(struct fence_op *op, const char *step);
void fence_op_released(struct fence_op *op);

extern const struct fence_driver fence_driver_postgres;
extern const struct fence_driver fence_driver_k8s;
extern const struct fence_driver fence_driver_redfish;
extern const struct fence_driver fence_driver_exec;

#endif
