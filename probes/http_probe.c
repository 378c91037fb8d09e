/* The http probe: a GET with an expected status and body, TLS verified
 * against a CA file, optionally pinned to one site's address (the ingress by
 * its public name), and the certificate's days to expiry. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/http_client.h"
#include "probes/probe.h"

#define HTTP_PROBE_MAX_BODY (64 * 1024)

struct http_probe {
    struct http_request *req;
    char *connect_to; /* "host:port", or NULL (most probes: no need for 300 bytes each) */
    uint64_t seq;
};

struct cb_ctx {
    struct probe *p;
    uint64_t seq;
};

/* The result's fields; the previous result's object when they are the
 * same (most checks: nothing is allocated). Fields are never changed once
 * made, so sharing them is safe. */
static json_t *result_fields(const struct probe *p, const struct http_response *res)
{
    json_t *prev = p->last.fields;
    json_t *days = json_object_get(prev, "cert_days_left");
    if (prev && json_integer_value(json_object_get(prev, "status")) == res->status &&
        json_is_true(json_object_get(prev, "reused")) == (res->reused != 0) &&
        (res->has_cert ? days && json_integer_value(days) == res->cert_days_left : !days))
        return json_incref(prev);
    json_t *fields = json_pack("{s:i,s:b}", "status", (int)res->status, "reused", res->reused);
    if (res->has_cert)
        json_object_set_new(fields, "cert_days_left", json_integer(res->cert_days_left));
    return fields;
}

static void on_done(struct http_request *req, const struct http_response *res, void *arg)
{
    (void)req;
    struct cb_ctx *ctx = arg;
    struct probe *p = ctx->p;
    struct http_probe *hp = p->drv;
    bool current = hp && ctx->seq == hp->seq;
    free(ctx);
    if (!current)
        return;
    hp->req = NULL;
    const struct cfg_probe *c = p->cfg;
    json_t *fields = result_fields(p, res);
    if (res->result < 0) {
        probe_finish(p, false, fields, "%s", res->detail);
        return;
    }
    if (c->expect_body && !strstr(res->body ? res->body : "", c->expect_body)) {
        probe_finish(p, false, fields, "HTTP %ld but the body lacks \"%.64s\"", res->status,
                     c->expect_body);
        return;
    }
    if (res->has_cert && res->cert_days_left < c->cert_min_days) {
        probe_finish(p, false, fields, "HTTP %ld, certificate expires in %d days (minimum %d)",
                     res->status, res->cert_days_left, c->cert_min_days);
        return;
    }
    if (res->has_cert)
        probe_finish(p, true, fields, "HTTP %ld, certificate expires in %d days", res->status,
                     res->cert_days_left);
    else
        probe_finish(p, true, fields, "HTTP %ld", res->status);
}

static int http_open(struct probe *p)
{
    struct http_probe *hp = calloc(1, sizeof *hp);
    if (!hp)
        return -ENOMEM;
    p->drv = hp;
    if (p->cfg->connect_to_host) {
        char spec[300];
        snprintf(spec, sizeof spec, strchr(p->cfg->connect_to_host, ':') ? "[%s]:%u" : "%s:%u",
                 p->cfg->connect_to_host, (unsigned)p->cfg->connect_to_port);
        hp->connect_to = strdup(spec);
        if (!hp->connect_to)
            return -ENOMEM;
    }
    return 0;
}

static void http_run(struct probe *p)
{
    struct http_probe *hp = p->drv;
    hp->seq++;
    struct cb_ctx *ctx = malloc(sizeof *ctx);
    if (!ctx) {
        probe_finish(p, false, NULL, "out of memory");
        return;
    }
    ctx->p = p;
    ctx->seq = hp->seq;
    static const char *const headers[] = { "User-Agent: triad-probe" };
    struct http_request_opts o = {
        .url = p->cfg->url,
        .headers = headers,
        .n_headers = 1,
        .timeout_ms = (uint32_t)p->cfg->timeout_ms,
        .max_body = HTTP_PROBE_MAX_BODY,
        .expect_status = p->cfg->expect_status,
        .ca_file = p->cfg->ca_file,
        .connect_to = hp->connect_to,
        .keepalive_s = (uint32_t)(p->cfg->keepalive_ms / 1000),
    };
    int rc = http_request_start(p->sched->http, &o, on_done, ctx, &hp->req);
    if (rc < 0) {
        free(ctx);
        hp->req = NULL;
        probe_finish(p, false, NULL, "cannot start the request: %s", strerror(-rc));
    }
}

static void http_abort(struct probe *p)
{
    struct http_probe *hp = p->drv;
    hp->seq++;
    if (hp->req)
        http_request_cancel(hp->req);
    hp->req = NULL;
}

static void http_close(struct probe *p)
{
    /* Requests in flight are cancelled by the client's close; their
     * callbacks find no current run (seq) and free only their context. */
    struct http_probe *hp = p->drv;
    if (hp) {
        hp->seq++;
        free(hp->connect_to);
    }
    free(hp);
    p->drv = NULL;
    probe_driver_closed(p);
}

const struct probe_driver probe_driver_http = {
    .kind = "http",
    .open = http_open,
    .run = http_run,
    .abort = http_abort,
    .close = http_close,
};
