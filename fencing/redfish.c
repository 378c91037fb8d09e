/* The redfish fence: the host is powered off through its BMC (ComputerSystem
 * Reset, ForceOff), then PowerState is read back until the BMC reports
 * "Off". A BMC that accepts the ForceOff but keeps reporting another state
 * until shortly before the fence's timeout is a failed fence: power that is
 * not seen off is not off. A host already Off is verified as such without a
 * reset. It cannot be lifted: powering a host on is an operator's act. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fencing/fence.h"
#include "lib/http_client.h"
#include "lib/log.h"
#include "lib/redfish_client.h"

#define POLL_MS 500

struct rf_fence {
    struct fence_op *op;
    struct http_client *own_http;
    struct redfish_client *rf;
    struct redfish_request *req;
    uv_timer_t poll;
    bool releasing;
    uint64_t start_ms;
    uint64_t accepted_ms;
    uint64_t verify_until_ms; /* give up shortly before the fence's timeout */
    int64_t margin_ms;
    char system[256];
    char target[400];
    char power[32];
};

static void release_rest(struct fence_op *op);

static void on_poll_result(struct redfish_request *req, const struct redfish_result *r, void *arg);

static void poll_now(uv_timer_t *t)
{
    struct rf_fence *f = t->data;
    struct fence_op *op = f->op;
    int rc = redfish_get_system(f->rf, f->system, on_poll_result, op, &f->req);
    if (rc < 0)
        fence_op_finish(op, rc, "cannot read PowerState: %s", redfish_client_error(f->rf));
}

static void on_poll_result(struct redfish_request *req, const struct redfish_result *r, void *arg)
{
    (void)req;
    struct fence_op *op = arg;
    struct rf_fence *f = op->drv;
    f->req = NULL;
    if (f->releasing) {
        release_rest(op);
        return;
    }
    uint64_t now = uv_now(op->loop);
    if (r->status == 0) {
        snprintf(f->power, sizeof f->power, "%s", r->system->power_state);
        if (strcmp(f->power, "Off") == 0) {
            fence_op_finish(op, 0,
                            "ForceOff accepted; the BMC reports PowerState Off after %llu ms",
                            (unsigned long long)(now - f->accepted_ms));
            return;
        }
    } else {
        /* A BMC may stall while the host goes down: keep asking. */
        log_debug("redfish fence %s: %s", op->fence->name, r->detail);
    }
    if (now + POLL_MS >= f->verify_until_ms) {
        if (f->power[0])
            fence_op_finish(op, -EPROTO,
                            "BMC accepted ForceOff but still reports PowerState %s after %llu ms",
                            f->power, (unsigned long long)(now - f->accepted_ms));
        else
            fence_op_finish(op, r->status < 0 ? r->status : -EPROTO,
                            "BMC accepted ForceOff but PowerState could not be read back: %s",
                            r->detail);
        return;
    }
    uv_timer_start(&f->poll, poll_now, POLL_MS, 0);
}

static void on_reset(struct redfish_request *req, const struct redfish_result *r, void *arg)
{
    (void)req;
    struct fence_op *op = arg;
    struct rf_fence *f = op->drv;
    f->req = NULL;
    if (f->releasing) {
        release_rest(op);
        return;
    }
    if (r->status < 0) {
        fence_op_finish(op, r->status, "ForceOff refused: %s", r->detail);
        return;
    }
    f->accepted_ms = uv_now(op->loop);
    fence_op_step(op, "verifying PowerState Off");
    uv_timer_start(&f->poll, poll_now, 0, 0);
}

static void on_first_read(struct redfish_request *req, const struct redfish_result *r, void *arg)
{
    (void)req;
    struct fence_op *op = arg;
    struct rf_fence *f = op->drv;
    f->req = NULL;
    if (f->releasing) {
        release_rest(op);
        return;
    }
    if (r->status < 0) {
        fence_op_finish(op, r->status, "cannot read the system: %s", r->detail);
        return;
    }
    snprintf(f->power, sizeof f->power, "%s", r->system->power_state);
    if (strcmp(f->power, "Off") == 0) {
        fence_op_finish(op, 0, "the BMC reports PowerState Off already (no reset sent)");
        return;
    }
    snprintf(f->target, sizeof f->target, "%s", r->system->reset_target);
    fence_op_step(op, "ForceOff");
    int rc = redfish_reset(f->rf, f->target, "ForceOff", on_reset, op, &f->req);
    if (rc < 0)
        fence_op_finish(op, rc, "cannot send ForceOff: %s", redfish_client_error(f->rf));
}

static void rf_start(struct fence_op *op)
{
    const struct cfg_fence *fc = op->fence;
    char err[REDFISH_DETAIL_MAX];
    struct rf_fence *f = calloc(1, sizeof *f);
    if (!f) {
        fence_op_finish(op, -ENOMEM, "out of memory");
        return;
    }
    op->drv = f;
    f->op = op;
    uv_timer_init(op->loop, &f->poll);
    f->poll.data = f;
    int64_t t = fc->timeout_ms;
    f->margin_ms = t / 5 < 2000 ? t / 5 : 2000;
    f->start_ms = uv_now(op->loop);
    f->verify_until_ms = f->start_ms + (uint64_t)(t - f->margin_ms);
    snprintf(f->system, sizeof f->system, "%s", fc->system ? fc->system : REDFISH_DEFAULT_SYSTEM);
    struct http_client *http = op->http;
    if (!http) {
        int rc = http_client_new(op->loop, &f->own_http);
        if (rc < 0) {
            fence_op_finish(op, rc, "cannot set up an HTTP client: %s", strerror(-rc));
            return;
        }
        http = f->own_http;
    }
    /* Each request gets a slice of the time, so several polls fit. */
    int64_t per = t / 4 < 200 ? 200 : t / 4 > 10000 ? 10000 : t / 4;
    struct redfish_config cfg = {
        .url = fc->url,
        .credentials_file = fc->credentials_file,
        .ca_file = fc->ca_file,
        .timeout_ms = (uint32_t)per,
    };
    int rc = redfish_client_new(http, &cfg, &f->rf, err, sizeof err);
    if (rc < 0) {
        fence_op_finish(op, rc, "%s", err);
        return;
    }
    fence_op_step(op, "reading PowerState");
    rc = redfish_get_system(f->rf, f->system, on_first_read, op, &f->req);
    if (rc < 0)
        fence_op_finish(op, rc, "cannot read the system: %s", redfish_client_error(f->rf));
}

static void on_http_closed(void *arg)
{
    struct fence_op *op = arg;
    free(op->drv);
    op->drv = NULL;
    fence_op_released(op);
}

static void on_poll_closed(uv_handle_t *h)
{
    struct rf_fence *f = h->data;
    struct fence_op *op = f->op;
    redfish_client_free(f->rf);
    f->rf = NULL;
    if (f->own_http) {
        http_client_close(f->own_http, on_http_closed, op);
        return;
    }
    on_http_closed(op);
}

static void release_rest(struct fence_op *op)
{
    struct rf_fence *f = op->drv;
    uv_close((uv_handle_t *)&f->poll, on_poll_closed);
}

static void rf_release(struct fence_op *op)
{
    struct rf_fence *f = op->drv;
    if (!f) {
        fence_op_released(op);
        return;
    }
    f->releasing = true;
    uv_timer_stop(&f->poll);
    if (f->req) {
        redfish_request_cancel(f->req); /* its callback continues the release */
        return;
    }
    release_rest(op);
}

const struct fence_driver fence_driver_redfish = {
    .method = "redfish",
    .can_unfence = false,
    .start = rf_start,
    .release = rf_release,
};
