/* Fence operations: driver selection, timeout, exactly-once completion. */
#include "fencing/fence.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"

static const struct fence_driver *driver_for(enum fence_method m)
{
    switch (m) {
    case FENCE_POSTGRES:
        return &fence_driver_postgres;
    case FENCE_K8S:
        return &fence_driver_k8s;
    case FENCE_REDFISH:
        return &fence_driver_redfish;
    case FENCE_EXEC:
        return &fence_driver_exec;
    case FENCE_MANUAL:
    case FENCE_LEASE:
        break;
    }
    return NULL;
}

static void on_closed(uv_handle_t *h)
{
    struct fence_op *op = h->data;
    if (op->released_cb)
        op->released_cb(op->released_arg);
    free(op);
}

void fence_on_released(struct fence_op *op, void (*cb)(void *arg), void *arg)
{
    op->released_cb = cb;
    op->released_arg = arg;
}

void fence_op_released(struct fence_op *op)
{
    uv_close((uv_handle_t *)&op->timer, on_closed);
}

/* The result goes out from a timer callback: never from inside a call into
 * this module, and the driver may still be unwinding. */
static void deliver(uv_timer_t *t)
{
    struct fence_op *op = t->data;
    log_ev(op->status == 0 ? LOG_INFO : LOG_WARN, op->unfence ? "unfence" : "fence", op->detail,
           { "method", op->driver->method }, { "name", op->fence->name },
           { "site", op->fence->site }, { "result", op->status == 0 ? "verified" : "failed" });
    if (op->cb)
        op->cb(op, op->status, op->detail, op->arg);
    op->driver->release(op);
}

static void complete(struct fence_op *op, int status, const char *detail)
{
    if (op->finished)
        return;
    op->finished = true;
    op->status = status;
    snprintf(op->detail, sizeof op->detail, "%s", detail);
    uv_timer_start(&op->timer, deliver, 0, 0);
}

void fence_op_finish(struct fence_op *op, int status, const char *fmt, ...)
{
    char detail[FENCE_DETAIL_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    complete(op, status, detail);
}

void fence_op_step(struct fence_op *op, const char *step)
{
    snprintf(op->step, sizeof op->step, "%s", step);
}

static void on_timeout(uv_timer_t *t)
{
    struct fence_op *op = t->data;
    char detail[160];
    snprintf(detail, sizeof detail, "timed out after %lld ms while: %s",
             (long long)op->fence->timeout_ms, op->step[0] ? op->step : "starting");
    complete(op, -ETIMEDOUT, detail);
}

int fence_start(uv_loop_t *loop, const struct config *cfg, const struct cfg_fence *fence,
                bool unfence, struct http_client *http, fence_done_cb cb, void *arg,
                struct fence_op **out)
{
    const struct fence_driver *d = driver_for(fence->method);
    if (!d || (unfence && !d->can_unfence))
        return -ENOTSUP;
    struct fence_op *op = calloc(1, sizeof *op);
    if (!op)
        return -ENOMEM;
    op->loop = loop;
    op->cfg = cfg;
    op->fence = fence;
    op->driver = d;
    op->http = http;
    op->unfence = unfence;
    op->cb = cb;
    op->arg = arg;
    uv_timer_init(loop, &op->timer);
    op->timer.data = op;
    uv_timer_start(&op->timer, on_timeout, (uint64_t)fence->timeout_ms, 0);
    if (out)
        *out = op;
    d->start(op);
    return 0;
}

void fence_cancel(struct fence_op *op)
{
    complete(op, -ECANCELED, "cancelled");
}

void fence_forget(struct fence_op *op)
{
    op->cb = NULL;
    complete(op, -ECANCELED, "cancelled");
}
