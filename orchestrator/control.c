/* Control API routing on lib/httpd. */
#include "orchestrator/control.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/httpd.h"
#include "lib/log.h"
#include "orchestrator/daemon.h"
#include "orchestrator/metrics.h"

struct control {
    struct daemon *d;
    struct httpd *server;
    void (*closed_cb)(void *arg);
    void *closed_arg;
};

static void respond_json(struct httpd_request *req, unsigned status, json_t *j)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!text) {
        httpd_respond(req, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    size_t len = strlen(text);
    text[len] = '\0';
    httpd_respond(req, status, "application/json", text, len);
    free(text);
}

static void respond_error(struct httpd_request *req, unsigned status, const char *msg)
{
    respond_json(req, status, json_pack("{s:s}", "error", msg));
}

static void handle(struct httpd_request *req)
{
    struct control *c = req->server->data;
    const char *path = req->path;
    bool get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    if (strcmp(path, "/v1/status") == 0) {
        if (!get) {
            httpd_response_header(req, "Allow", "GET");
            respond_error(req, 405, "use GET");
            return;
        }
        respond_json(req, 200, daemon_status(c->d));
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        struct buf b;
        buf_init(&b, 4u << 20);
        metrics_render(c->d, &b);
        httpd_respond(req, 200, "text/plain; version=0.0.4", b.data ? b.data : "", b.len);
        buf_free(&b);
        return;
    }
    if (strcmp(path, "/v1/health") == 0) {
        httpd_respond(req, 200, "text/plain", "ok\n", 3);
        return;
    }
    if (strncmp(path, "/v1/runs", 8) == 0 || strcmp(path, "/v1/ack") == 0) {
        respond_error(req, 501, "the runbook engine is not implemented yet in this version");
        return;
    }
    respond_error(req, 404, "no such endpoint");
}

int control_start(struct control **out, struct daemon *d, char *err, size_t errlen)
{
    *out = NULL;
    struct control *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->d = d;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", d->cfg.api.socket);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        fsutil_mkdirs(dir, 0750);
    }
    struct httpd_config hc = {
        .unix_path = d->cfg.api.socket,
        .unix_mode = d->cfg.api.socket_mode,
        .unix_group = d->cfg.api.socket_group,
        .handler = handle,
        .data = c,
    };
    int r = httpd_open(d->uv, &hc, &c->server);
    if (r < 0) {
        snprintf(err, errlen, "cannot serve the control API on %s: %s", d->cfg.api.socket,
                 r == -EADDRINUSE ? "another daemon answers there" : strerror(-r));
        free(c);
        return r;
    }
    *out = c;
    return 0;
}

static void on_closed(struct httpd *s)
{
    struct control *c = s->data;
    void (*cb)(void *) = c->closed_cb;
    void *arg = c->closed_arg;
    free(c);
    if (cb)
        cb(arg);
}

void control_close(struct control *c, void (*cb)(void *arg), void *arg)
{
    c->closed_cb = cb;
    c->closed_arg = arg;
    httpd_close(c->server, on_closed);
}
