/* Notification queue with retries over lib/http_client. */
#include "orchestrator/notify.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/http_client.h"
#include "lib/log.h"
#include "orchestrator/config_files.h"

struct message {
    struct notifier *n;
    const struct cfg_notify *target;
    char *body;
    char url[2048];
    char auth[600];
    int tries;
    uv_timer_t timer;
    struct message *next;
    bool in_flight;
};

struct notifier {
    uv_loop_t *loop;
    const struct config *cfg;
    struct http_client *http;
    struct message *queue;
    size_t queued;
    unsigned long sent, failed, txn;
    bool closing;
    int open;
    void (*closed_cb)(void *);
    void *closed_arg;
};

static bool wants(const struct cfg_notify *t, const char *event)
{
    if (!t->n_events)
        return true;
    for (size_t i = 0; i < t->n_events; i++) {
        if (strcmp(t->events[i], event) == 0)
            return true;
    }
    return false;
}

static char *secret(const char *file)
{
    const char *why = NULL;
    char *s = config_read_secret(file, 1024, &why);
    if (!s)
        log_ev(LOG_ERROR, "notify-secret", why, { "file", file });
    return s;
}

/* The body and address each kind of target expects. */
static int build(struct notifier *n, struct message *m, const char *event, const char *severity,
                 const char *text)
{
    const struct cfg_notify *t = m->target;
    const struct config *cfg = n->cfg;
    json_t *body = NULL;
    char *url_secret = NULL;
    const char *url = t->url;
    if (t->url_file) {
        url_secret = secret(t->url_file);
        if (!url_secret)
            return -EACCES;
        url = url_secret;
    }
    switch (t->kind) {
    case NOTIFY_WEBHOOK:
        body = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "cluster", cfg->cluster, "site", cfg->site,
                         "event", event, "severity", severity, "text", text, "time",
                         (json_int_t)time(NULL));
        break;
    case NOTIFY_SLACK:
        body = json_object();
        json_object_set_new(body, "text",
                            json_sprintf("[triad %s/%s] %s", cfg->cluster, cfg->site, text));
        break;
    case NOTIFY_MATRIX: {
        char *token = secret(t->token_file);
        if (!token) {
            free(url_secret);
            return -EACCES;
        }
        /* PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txn} */
        char room[600];
        size_t o = 0;
        for (const char *c = t->room; *c && o + 4 < sizeof room; c++) {
            if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                *c == '.' || *c == '-' || *c == '_')
                room[o++] = *c;
            else
                o += (size_t)snprintf(room + o, sizeof room - o, "%%%02X", (unsigned char)*c);
        }
        room[o] = '\0';
        snprintf(m->url, sizeof m->url,
                 "%s/_matrix/client/v3/rooms/%s/send/m.room.message/triad-%ld-%lu", url, room,
                 (long)time(NULL), ++n->txn);
        snprintf(m->auth, sizeof m->auth, "%s", token);
        explicit_bzero(token, strlen(token));
        free(token);
        body = json_pack("{s:s}", "msgtype", "m.text");
        json_object_set_new(body, "body",
                            json_sprintf("[triad %s/%s] %s", cfg->cluster, cfg->site, text));
        break;
    }
    case NOTIFY_PAGERDUTY: {
        char *key = secret(t->routing_key_file);
        if (!key) {
            free(url_secret);
            return -EACCES;
        }
        const char *sev = !strcmp(severity, "critical")  ? "critical"
                          : !strcmp(severity, "warning") ? "warning"
                                                         : "info";
        body = json_pack("{s:s,s:s,s:{s:s,s:s,s:s}}", "routing_key", key, "event_action", "trigger",
                         "payload", "summary", text, "source", cfg->site, "severity", sev);
        explicit_bzero(key, strlen(key));
        free(key);
        break;
    }
    }
    if (!m->url[0])
        snprintf(m->url, sizeof m->url, "%s", url);
    if (url_secret) {
        explicit_bzero(url_secret, strlen(url_secret));
        free(url_secret);
    }
    m->body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return m->body ? 0 : -ENOMEM;
}

static void attempt(struct message *m);

static void on_closed(uv_handle_t *h)
{
    struct message *m = h->data;
    struct notifier *n = m->n;
    explicit_bzero(m->auth, sizeof m->auth);
    free(m->body);
    free(m);
    n->open--;
    if (n->closing && n->open == 0) {
        void (*cb)(void *) = n->closed_cb;
        void *arg = n->closed_arg;
        free(n);
        if (cb)
            cb(arg);
    }
}

static void finish(struct message *m)
{
    struct notifier *n = m->n;
    struct message **p = &n->queue;
    while (*p && *p != m)
        p = &(*p)->next;
    if (*p)
        *p = m->next;
    n->queued--;
    uv_close((uv_handle_t *)&m->timer, on_closed);
}

static void on_retry(uv_timer_t *t)
{
    attempt(t->data);
}

static void on_done(struct http_request *req, const struct http_response *res, void *arg)
{
    (void)req;
    struct message *m = arg;
    struct notifier *n = m->n;
    m->in_flight = false;
    if (res->result == 0 && res->status >= 200 && res->status < 300) {
        n->sent++;
        finish(m);
        return;
    }
    if (n->closing || m->tries >= NOTIFY_TRIES || res->result == -ECANCELED) {
        n->failed++;
        log_ev(LOG_WARN, "notify-failed", res->detail, { "target", m->target->name });
        finish(m);
        return;
    }
    uv_timer_start(&m->timer, on_retry, 1000u << (m->tries - 1), 0);
}

static void attempt(struct message *m)
{
    struct notifier *n = m->n;
    m->tries++;
    char auth_hdr[640];
    const char *headers[2] = { "Content-Type: application/json", auth_hdr };
    size_t nh = 1;
    if (m->auth[0]) {
        snprintf(auth_hdr, sizeof auth_hdr, "Authorization: Bearer %s", m->auth);
        nh = 2;
    }
    struct http_request_opts o = {
        .method = m->target->kind == NOTIFY_MATRIX ? "PUT" : "POST",
        .url = m->url,
        .headers = headers,
        .n_headers = nh,
        .body = m->body,
        .body_len = strlen(m->body),
        .timeout_ms = 5000,
        .max_body = 16384,
    };
    m->in_flight = true;
    if (http_request_start(n->http, &o, on_done, m, NULL) < 0) {
        m->in_flight = false;
        n->failed++;
        finish(m);
    }
    explicit_bzero(auth_hdr, sizeof auth_hdr);
}

struct notifier *notify_new(uv_loop_t *loop, const struct config *cfg, struct http_client *http)
{
    struct notifier *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->loop = loop;
    n->cfg = cfg;
    n->http = http;
    return n;
}

void notify_send(struct notifier *n, const char *event, const char *severity, const char *text)
{
    if (!n || n->closing)
        return;
    for (size_t i = 0; i < n->cfg->n_notify; i++) {
        const struct cfg_notify *t = &n->cfg->notify[i];
        if (!wants(t, event))
            continue;
        if (n->queued >= NOTIFY_QUEUE_MAX) {
            n->failed++;
            log_ev(LOG_WARN, "notify-dropped", "the notification queue is full",
                   { "target", t->name });
            continue;
        }
        struct message *m = calloc(1, sizeof *m);
        if (!m)
            continue;
        m->n = n;
        m->target = t;
        if (build(n, m, event, severity, text) < 0) {
            free(m->body);
            free(m);
            n->failed++;
            continue;
        }
        uv_timer_init(n->loop, &m->timer);
        m->timer.data = m;
        m->next = n->queue;
        n->queue = m;
        n->queued++;
        n->open++;
        attempt(m);
    }
}

void notify_close(struct notifier *n, void (*cb)(void *arg), void *arg)
{
    n->closing = true;
    n->closed_cb = cb;
    n->closed_arg = arg;
    if (n->open == 0) {
        free(n);
        if (cb)
            cb(arg);
        return;
    }
    /* Messages in flight end through their callbacks (the http client is
     * closed by its owner, which cancels them); waiting retries end now. */
    for (struct message *m = n->queue, *next; m; m = next) {
        next = m->next;
        if (!m->in_flight) {
            n->failed++;
            finish(m);
        }
    }
}

bool notify_busy(const struct notifier *n)
{
    return n && (n->queue || n->open);
}

unsigned long notify_sent(const struct notifier *n)
{
    return n ? n->sent : 0;
}

unsigned long notify_failed(const struct notifier *n)
{
    return n ? n->failed : 0;
}
