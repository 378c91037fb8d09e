/* Control API routing on lib/httpd, its Unix socket and its optional HTTPS
 * listener (lib/tls_stream in front of httpd's external connections), and
 * who may do what on each. */
#include "orchestrator/control.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/httpd.h"
#include "lib/log.h"
#include "lib/tls_stream.h"
#include "orchestrator/daemon.h"
#include "orchestrator/metrics.h"
#include "orchestrator/runs.h"

#include <openssl/evp.h>

struct control {
    struct daemon *d;
    struct httpd *server;
    struct tls_stream_server *https; /* NULL without api.https */
    int open_parts;                  /* server and https, until their close callbacks */
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

/* Who is asking: an operator named in the configuration, by Unix user (on
 * the socket), certificate CN (external TLS connections carry "cn=NAME") or
 * bearer token (compared by its SHA-256). NULL when nobody we know. */
static const char *operator_of(struct control *c, struct httpd_request *req)
{
    const struct config *cfg = &c->d->cfg;
    const struct httpd_peer *peer = req->peer;
    char token_hex[65] = "";
    if (req->authorization && !strncmp(req->authorization, "Bearer ", 7)) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        const char *tok = req->authorization + 7;
        if (EVP_Digest(tok, strlen(tok), md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == 32) {
            for (unsigned i = 0; i < 32; i++)
                snprintf(token_hex + 2 * i, 3, "%02x", md[i]);
        }
    }
    /* A token, when one is presented, decides alone: a wrong one is refused
     * rather than falling back to the connection's identity. */
    if (req->authorization) {
        for (size_t i = 0; token_hex[0] && i < cfg->n_operators; i++) {
            const struct cfg_operator *o = &cfg->operators[i];
            if (o->token_sha256 && !strcmp(o->token_sha256, token_hex))
                return o->name;
        }
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_operators; i++) {
        const struct cfg_operator *o = &cfg->operators[i];
        if (peer->transport == HTTPD_UNIX && o->unix_user && peer->user[0] &&
            !strcmp(o->unix_user, peer->user))
            return o->name;
        if (peer->transport == HTTPD_EXTERNAL && o->cert_cn && !strncmp(peer->identity, "cn=", 3) &&
            !strcmp(peer->identity + 3, o->cert_cn))
            return o->name;
    }
    return NULL;
}

/* A request answered later (the leader may be another daemon). */
struct pending_req {
    struct httpd_request *req;
    bool aborted;
    bool answered;
    unsigned ok_status;
};

static void on_req_abort(struct httpd_request *req)
{
    struct pending_req *p = req->data;
    if (p)
        p->aborted = true;
}

static void on_reply(int status, const char *detail, void *arg)
{
    struct pending_req *p = arg;
    if (!p->aborted) {
        unsigned code = status == 0                               ? p->ok_status
                        : status == -ENOENT                       ? 404
                        : status == -EBUSY || status == -EALREADY ? 409
                        : status == -EINVAL                       ? 400
                        : status == -EAGAIN || status == -ENOTCONN || status == -ETIMEDOUT ? 503
                                                                                           : 500;
        json_t *j = status == 0 ? json_pack("{s:b,s:s}", "ok", 1, "detail", detail)
                                : json_pack("{s:s}", "error", detail);
        respond_json(p->req, code, j);
    }
    free(p);
}

static struct pending_req *defer(struct httpd_request *req, unsigned ok_status)
{
    struct pending_req *p = calloc(1, sizeof *p);
    if (!p) {
        httpd_respond(req, 500, "text/plain", "out of memory\n", 14);
        return NULL;
    }
    p->req = req;
    p->ok_status = ok_status;
    req->data = p;
    httpd_defer(req, on_req_abort);
    return p;
}

/* /v1/runs/ID[/journal|/abort|/steps/STEP/(approve|deny)] */
static void handle_runs(struct control *c, struct httpd_request *req, const char *rest)
{
    struct runs *runs = c->d->runs;
    bool get = !strcmp(req->method, "GET");
    bool post = !strcmp(req->method, "POST");
    if (!*rest) {
        if (get) {
            respond_json(req, 200, json_pack("{s:o}", "runs", runs_list(runs)));
            return;
        }
        if (!post) {
            respond_error(req, 405, "use GET or POST");
            return;
        }
        const char *who = operator_of(c, req);
        if (!who) {
            respond_error(req, 403, "not an operator of this cluster");
            return;
        }
        json_t *body = json_loadb(req->body, req->body_len, 0, NULL);
        const char *kind = json_string_value(json_object_get(body, "kind"));
        const char *to = json_string_value(json_object_get(body, "to"));
        const char *rb = json_string_value(json_object_get(body, "runbook"));
        if (!kind || !to ||
            (strcmp(kind, "failover") && strcmp(kind, "switchover") && strcmp(kind, "failback"))) {
            json_decref(body);
            respond_error(req, 400, "need {\"kind\": failover|switchover|failback, \"to\": SITE}");
            return;
        }
        if (!rb)
            rb = !strcmp(kind, "failover") ? c->d->cfg.failover.runbook : kind;
        struct pending_req *p = defer(req, 202);
        if (p)
            runs_request_start(runs, kind, to, rb, who, on_reply, p);
        json_decref(body);
        return;
    }
    char id[64];
    const char *slash = strchr(rest, '/');
    size_t idlen = slash ? (size_t)(slash - rest) : strlen(rest);
    if (idlen == 0 || idlen >= sizeof id) {
        respond_error(req, 404, "no such run");
        return;
    }
    memcpy(id, rest, idlen);
    id[idlen] = '\0';
    const char *sub = slash ? slash : "";
    if (!*sub && get) {
        json_t *run = runs_get(runs, id);
        if (!run)
            respond_error(req, 404, "no such run");
        else
            respond_json(req, 200, run);
        return;
    }
    if (!strcmp(sub, "/journal") && get) {
        json_t *recs = runs_journal(runs, id);
        if (!recs)
            respond_error(req, 404, "no such run");
        else
            respond_json(req, 200, json_pack("{s:s,s:o}", "run", id, "records", recs));
        return;
    }
    if (!post) {
        respond_error(req, 405, "use POST");
        return;
    }
    const char *who = operator_of(c, req);
    if (!who) {
        respond_error(req, 403, "not an operator of this cluster");
        return;
    }
    json_t *body = req->body_len ? json_loadb(req->body, req->body_len, 0, NULL) : NULL;
    if (!strcmp(sub, "/abort")) {
        struct pending_req *p = defer(req, 200);
        if (p)
            runs_request_abort(runs, id, who, on_reply, p);
        json_decref(body);
        return;
    }
    char step[64];
    const char *verb = NULL;
    if (!strncmp(sub, "/steps/", 7)) {
        const char *s2 = sub + 7;
        const char *sl = strchr(s2, '/');
        if (sl && (size_t)(sl - s2) < sizeof step && sl > s2) {
            memcpy(step, s2, (size_t)(sl - s2));
            step[sl - s2] = '\0';
            verb = sl + 1;
        }
    }
    if (!verb || (strcmp(verb, "approve") && strcmp(verb, "deny"))) {
        json_decref(body);
        respond_error(req, 404, "no such endpoint");
        return;
    }
    struct pending_req *p = defer(req, 200);
    if (p)
        runs_request_decide(runs, id, step, !strcmp(verb, "approve"), who,
                            json_string_value(json_object_get(body, "reason")),
                            json_string_value(json_object_get(body, "shown")), on_reply, p);
    json_decref(body);
}

/* Over HTTPS a client must be someone before it may even read: a
 * certificate verified against api.https.client_ca_file ("cn=NAME"), or an
 * operator's bearer token. /v1/health stays open for load balancers. The
 * Unix socket needs nothing more: its file mode already says who connects. */
static bool refused_anonymous(struct control *c, struct httpd_request *req)
{
    if (req->peer->transport != HTTPD_EXTERNAL || strcmp(req->path, "/v1/health") == 0)
        return false;
    if (req->authorization == NULL && strncmp(req->peer->identity, "cn=", 3) == 0)
        return false;
    if (req->authorization && operator_of(c, req))
        return false;
    httpd_response_header(req, "WWW-Authenticate",
                          req->authorization ? "Bearer realm=\"triad\", error=\"invalid_token\""
                                             : "Bearer realm=\"triad\"");
    respond_error(req, 401,
                  req->authorization
                      ? "unknown bearer token"
                      : "authenticate with a client certificate or an operator's bearer token");
    return true;
}

/* /metrics is made as it is sent: a thousand probes make about a
 * megabyte of text, which then never exists whole. */
struct metrics_stream {
    struct daemon *d;
    struct metrics_cursor cur;
    struct buf pending;
    bool done;
};

static ssize_t metrics_read(void *arg, char *out, size_t max)
{
    struct metrics_stream *ms = arg;
    if (ms->pending.len < max && !ms->done) {
        int rc = metrics_render_next(ms->d, &ms->pending, &ms->cur, max - ms->pending.len);
        if (rc < 0 || ms->pending.truncated)
            return -1;
        ms->done = rc == 0;
    }
    size_t n = ms->pending.len < max ? ms->pending.len : max;
    if (n) {
        memcpy(out, ms->pending.data, n);
        buf_consume(&ms->pending, n);
    }
    return (ssize_t)n;
}

static void metrics_free(void *arg)
{
    struct metrics_stream *ms = arg;
    buf_free(&ms->pending);
    free(ms);
}

static void handle(struct httpd_request *req)
{
    struct control *c = req->server->data;
    const char *path = req->path;
    bool get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    if (refused_anonymous(c, req))
        return;
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
        struct metrics_stream *ms = calloc(1, sizeof *ms);
        if (!ms) {
            respond_error(req, 500, "out of memory");
            return;
        }
        ms->d = c->d;
        buf_init(&ms->pending, 2 * HTTPD_STREAM_BLOCK + 64 * 1024);
        httpd_respond_stream(req, 200, "text/plain; version=0.0.4", metrics_read, metrics_free, ms);
        return;
    }
    if (strcmp(path, "/v1/health") == 0) {
        httpd_respond(req, 200, "text/plain", "ok\n", 3);
        return;
    }
    if (strcmp(path, "/v1/runs") == 0) {
        handle_runs(c, req, "");
        return;
    }
    if (strncmp(path, "/v1/runs/", 9) == 0) {
        handle_runs(c, req, path + 9);
        return;
    }
    if (strcmp(path, "/v1/ack") == 0) {
        const char *who = operator_of(c, req);
        if (strcmp(req->method, "POST") != 0) {
            respond_error(req, 405, "use POST");
        } else if (!who) {
            respond_error(req, 403, "not an operator of this cluster");
        } else {
            struct pending_req *p = defer(req, 200);
            if (p)
                runs_request_ack(c->d->runs, who, on_reply, p);
        }
        return;
    }
    respond_error(req, 404, "no such endpoint");
}

static int on_https_client(struct tls_stream_server *s, int fd, const char *identity)
{
    struct control *c = tls_stream_get_data(s);
    return httpd_add_connection(c->server, fd, identity);
}

/* The HTTPS listener next to the Unix socket: TLS ends in lib/tls_stream,
 * which hands each client to the same httpd as an external connection. */
static int https_start(struct control *c, char *err, size_t errlen)
{
    const struct cfg_api *a = &c->d->cfg.api;
    char why[512];
    struct tls_stream_opts o = {
        .host = a->https_host,
        .port = a->https_port,
        .cert_file = a->https_cert_file,
        .key_file = a->https_key_file,
        .client_ca_file = a->https_client_ca_file,
        /* API bodies are small (64 KiB at most): 64 KiB a direction keeps
         * 64 connections within about 10 MiB even when none reads. */
        .buf_max = 64 * 1024,
    };
    int r = tls_stream_listen(c->d->uv, &o, on_https_client, c, &c->https, why, sizeof why);
    if (r < 0) {
        bool v6 = strchr(a->https_host, ':') != NULL;
        snprintf(err, errlen, "cannot serve the HTTPS API on %s%s%s:%u: %s", v6 ? "[" : "",
                 a->https_host, v6 ? "]" : "", (unsigned)a->https_port, why);
        return r;
    }
    c->open_parts++;
    log_ev(LOG_INFO, "+api-https", "HTTPS control API listening",
           { "address", tls_stream_addr(c->https) },
           { "client_certs", a->https_client_ca_file ? a->https_client_ca_file
                                                     : "not asked (bearer tokens only)" });
    return 0;
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
        .external = d->cfg.api.https_host != NULL,
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
    c->open_parts = 1;
    /* From here on the caller closes what is open, even on error. */
    *out = c;
    if (d->cfg.api.https_host)
        return https_start(c, err, errlen);
    return 0;
}

static void part_closed(struct control *c)
{
    if (--c->open_parts > 0)
        return;
    void (*cb)(void *) = c->closed_cb;
    void *arg = c->closed_arg;
    free(c);
    if (cb)
        cb(arg);
}

static void on_closed(struct httpd *s)
{
    part_closed(s->data);
}

static void on_https_closed(struct tls_stream_server *s)
{
    part_closed(tls_stream_get_data(s));
}

void control_close(struct control *c, void (*cb)(void *arg), void *arg)
{
    c->closed_cb = cb;
    c->closed_arg = arg;
    /* TLS first: its clients' plaintext ends then close inside httpd. */
    if (c->https)
        tls_stream_close(c->https, on_https_closed);
    httpd_close(c->server, on_closed);
}
