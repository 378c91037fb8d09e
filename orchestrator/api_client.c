/* One control API request, on a private loop (the CLI may wait). */
#include "orchestrator/api_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/http_client.h"

struct call {
    int status;
    json_t *answer;
    char *err;
    size_t errlen;
    struct http_client *client;
};

static void on_done(struct http_request *req, const struct http_response *res, void *arg)
{
    (void)req;
    struct call *c = arg;
    if (res->result < 0 && res->status == 0) {
        c->status = res->result;
        snprintf(c->err, c->errlen, "%s", res->detail);
    } else {
        c->status = (int)res->status;
        c->answer = json_loadb(res->body ? res->body : "", res->body_len, 0, NULL);
    }
    http_client_close(c->client, NULL, NULL);
}

int api_call(const char *socket, const char *method, const char *path, json_t *body, json_t **out,
             char *err, size_t errlen)
{
    *out = NULL;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct call c = { .err = err, .errlen = errlen, .status = -EIO };
    char url[512];
    snprintf(url, sizeof url, "http://triad%s", path);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    static const char *const json_hdr[] = { "Content-Type: application/json" };
    struct http_request_opts o = {
        .method = method,
        .url = url,
        .headers = text ? json_hdr : NULL,
        .n_headers = text ? 1 : 0,
        .body = text,
        .body_len = text ? strlen(text) : 0,
        .timeout_ms = 10000,
        .max_body = 8u << 20,
        .unix_socket = socket,
    };
    int r = http_client_new(&loop, &c.client);
    if (r == 0)
        r = http_request_start(c.client, &o, on_done, &c, NULL);
    if (r < 0) {
        snprintf(err, errlen, "cannot start the request: %s", strerror(-r));
        if (c.client)
            http_client_close(c.client, NULL, NULL);
        c.status = r;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(text);
    if (c.status == -ECONNREFUSED || c.status == -ENOENT)
        snprintf(err, errlen, "no daemon answers on %s (is `triad daemon` running?)", socket);
    *out = c.answer;
    return c.status;
}
