/* Peer links over lib/tls: dialling with backoff, accepting, framing JSON. */
#include "orchestrator/peers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/loop.h"
#include "lib/tls.h"

#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 2000
#define MAX_INBOUND    8 /* per site: old links linger until TCP notices */

struct peer {
    struct peers *owner;
    int site;
    const struct cfg_site *cfg;
    struct tls_conn *out; /* our link to it */
    bool out_open;
    struct tls_conn *in[MAX_INBOUND];
    uv_timer_t redial;
    int64_t backoff_ms;
    int64_t last_heard_ms;
    char state[300];
    char addr[64]; /* numeric address to dial */
};

struct peers {
    uv_loop_t *loop;
    const struct config *cfg;
    struct tls_ctx *ctx;
    struct tls_server *server;
    struct peer peer[CFG_MAX_SITES];
    int n;
    int self;
    const char *accept_names[CFG_MAX_SITES];
    uv_timer_t watchdog;
    peers_msg_cb on_msg;
    void *arg;
    bool closing;
    int open_handles;
    peers_closed_cb on_closed;
    void *closed_arg;
    uint64_t rng;
};

static void dial(struct peer *pr);

static int64_t jitter(struct peers *ps, int64_t ms)
{
    uint64_t x = ps->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    ps->rng = x;
    return ms * 8 / 10 + (int64_t)(x % (uint64_t)(ms * 4 / 10 + 1));
}

static void maybe_closed(struct peers *ps)
{
    if (!ps->closing || ps->open_handles > 0)
        return;
    tls_ctx_free(ps->ctx);
    peers_closed_cb cb = ps->on_closed;
    void *arg = ps->closed_arg;
    free(ps);
    if (cb)
        cb(NULL, arg);
}

static struct peer *peer_by_name(struct peers *ps, const char *name)
{
    for (int i = 0; name && i < ps->n; i++) {
        if (i != ps->self && strcmp(ps->cfg->sites[i].peer_name, name) == 0)
            return &ps->peer[i];
    }
    return NULL;
}

/* ---- messages ---- */

static void on_frame(struct tls_conn *c, const char *payload, size_t len)
{
    struct peer *pr = tls_conn_get_data(c);
    if (!pr)
        return;
    struct peers *ps = pr->owner;
    json_error_t jerr;
    json_t *msg = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(msg)) {
        log_ev(LOG_WARN, "peer-bad-frame", jerr.text, { "site", pr->cfg->name });
        json_decref(msg);
        tls_conn_close(c);
        return;
    }
    pr->last_heard_ms = loop_now_ms();
    if (ps->on_msg && !ps->closing)
        ps->on_msg(ps, pr->site, msg, ps->arg);
    json_decref(msg);
}

int peers_send(struct peers *ps, int site, json_t *msg)
{
    /* No peer links: the daemon sets its peers to NULL when it stops while
     * runs may still be closing, and the control API's fuzz harness runs
     * without any. Like a link that is down. */
    if (!ps)
        return -ENOTCONN;
    if (site < 0 || site >= ps->n || site == ps->self)
        return -EINVAL;
    struct peer *pr = &ps->peer[site];
    if (!pr->out || !pr->out_open)
        return -ENOTCONN;
    char *text = json_dumps(msg, JSON_COMPACT);
    if (!text)
        return -ENOMEM;
    int r = tls_conn_send(pr->out, text, strlen(text));
    free(text);
    if (r == -ENOBUFS)
        log_ev(LOG_WARN, "peer-backlog", "peer is not reading; message dropped",
               { "site", pr->cfg->name });
    return r;
}

/* ---- inbound ---- */

static void in_open(struct tls_conn *c)
{
    struct peers *ps = tls_conn_get_data(c);
    struct peer *pr = peer_by_name(ps, tls_conn_peer_name(c));
    if (!pr) {
        tls_conn_close(c); /* the server's accept list makes this unlikely */
        return;
    }
    int slot = -1;
    for (int i = 0; i < MAX_INBOUND && slot < 0; i++) {
        if (!pr->in[i])
            slot = i;
    }
    if (slot < 0) {
        /* Too many: drop the oldest, which is most likely dead. */
        tls_conn_close(pr->in[0]);
        tls_conn_set_data(pr->in[0], NULL);
        memmove(&pr->in[0], &pr->in[1], (MAX_INBOUND - 1) * sizeof pr->in[0]);
        slot = MAX_INBOUND - 1;
    }
    pr->in[slot] = c;
    tls_conn_set_data(c, pr);
    log_ev(LOG_INFO, "peer-accepted", NULL, { "site", pr->cfg->name },
           { "from", tls_conn_peer_addr(c) }, { "tls", tls_conn_protocol(c) });
}

static void in_close(struct tls_conn *c, int status, const char *reason)
{
    void *data = tls_conn_get_data(c);
    if (!tls_conn_opened(c)) {
        /* Cancelled by our own server close: `data` may be gone already. */
        if (status == -ECANCELED)
            return;
        /* A refused handshake: a peer from another CA, or the wrong name. */
        struct peers *ps = data;
        if (ps && !ps->closing)
            log_ev(LOG_WARN, "peer-refused", reason, { "from", tls_conn_peer_addr(c) });
        return;
    }
    struct peer *pr = data;
    if (!pr)
        return;
    for (int i = 0; i < MAX_INBOUND; i++) {
        if (pr->in[i] == c)
            pr->in[i] = NULL;
    }
    (void)status;
}

/* ---- outbound ---- */

static void out_open(struct tls_conn *c)
{
    struct peer *pr = tls_conn_get_data(c);
    pr->out_open = true;
    pr->backoff_ms = BACKOFF_MIN_MS;
    /* Count the link as contact so the watchdog does not cut it at once. */
    if (!pr->last_heard_ms)
        pr->last_heard_ms = loop_now_ms();
    snprintf(pr->state, sizeof pr->state, "up (%s)", tls_conn_protocol(c));
    log_ev(LOG_INFO, "peer-up", NULL, { "site", pr->cfg->name }, { "tls", tls_conn_protocol(c) });
}

static void on_redial(uv_timer_t *t)
{
    struct peer *pr = t->data;
    if (!pr->owner->closing)
        dial(pr);
}

static void out_close(struct tls_conn *c, int status, const char *reason)
{
    struct peer *pr = tls_conn_get_data(c);
    struct peers *ps = pr->owner;
    bool was_open = pr->out_open;
    pr->out = NULL;
    pr->out_open = false;
    ps->open_handles--;
    if (ps->closing) {
        maybe_closed(ps);
        return;
    }
    snprintf(pr->state, sizeof pr->state, "down: %s", reason ? reason : strerror(-status));
    if (was_open || status == -EACCES || status == -EPROTO)
        log_ev(status == -EACCES || status == -EPROTO ? LOG_ERROR : LOG_WARN, "peer-down", reason,
               { "site", pr->cfg->name });
    int64_t delay = jitter(ps, pr->backoff_ms);
    pr->backoff_ms = pr->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : pr->backoff_ms * 2;
    uv_timer_start(&pr->redial, on_redial, (uint64_t)delay, 0);
}

static void dial(struct peer *pr)
{
    struct peers *ps = pr->owner;
    const struct cfg_site *self = &ps->cfg->sites[ps->self];
    static const struct tls_conn_cbs cbs = { out_open, on_frame, out_close };
    /* Bind to our own peer address when we listen on a specific one, so the
     * source address is this site's (and network partitions apply). */
    struct in6_addr any6;
    const char *bind_host = self->listen_host;
    if (!bind_host || strcmp(bind_host, "0.0.0.0") == 0 || strcmp(bind_host, "::") == 0 ||
        (inet_pton(AF_INET, bind_host, &any6) != 1 && inet_pton(AF_INET6, bind_host, &any6) != 1))
        bind_host = NULL;
    struct tls_connect_opts o = {
        .host = pr->addr,
        .port = pr->cfg->port,
        .bind_host = bind_host,
        .expect_name = pr->cfg->peer_name,
        .conn = { .frame_max = ps->cfg->quorum.max_frame,
                  .handshake_timeout_ms = (unsigned)ps->cfg->quorum.peer_timeout_ms },
    };
    char err[256];
    snprintf(pr->state, sizeof pr->state, "connecting");
    int r = tls_connect(ps->loop, ps->ctx, &o, &cbs, pr, &pr->out, err, sizeof err);
    if (r < 0) {
        snprintf(pr->state, sizeof pr->state, "down: %s", err);
        log_ev(LOG_ERROR, "peer-dial-failed", err, { "site", pr->cfg->name });
        uv_timer_start(&pr->redial, on_redial, BACKOFF_MAX_MS, 0);
        return;
    }
    ps->open_handles++;
}

/* A peer silent for two peer timeouts: recycle our link to it. */
static void on_watchdog(uv_timer_t *t)
{
    struct peers *ps = t->data;
    int64_t now = loop_now_ms();
    for (int i = 0; i < ps->n; i++) {
        struct peer *pr = &ps->peer[i];
        if (i == ps->self || !pr->out_open)
            continue;
        if (now - pr->last_heard_ms > 2 * ps->cfg->quorum.peer_timeout_ms) {
            log_ev(LOG_WARN, "peer-silent", "no message for two peer timeouts; redialling",
                   { "site", pr->cfg->name });
            pr->last_heard_ms = now; /* one recycle per silence */
            tls_conn_close(pr->out);
        }
    }
}

int peers_start(struct peers **out, uv_loop_t *loop, const struct config *cfg, peers_msg_cb on_msg,
                void *arg, char *err, size_t errlen)
{
    *out = NULL;
    struct peers *ps = calloc(1, sizeof *ps);
    if (!ps)
        return -ENOMEM;
    ps->loop = loop;
    ps->cfg = cfg;
    ps->on_msg = on_msg;
    ps->arg = arg;
    ps->n = (int)cfg->n_sites;
    ps->self = -1;
    ps->rng = (uint64_t)uv_hrtime() | 1;
    int result =
        tls_ctx_new(&ps->ctx, cfg->tls.ca_file, cfg->tls.cert_file, cfg->tls.key_file, err, errlen);
    if (result < 0) {
        free(ps);
        return result;
    }
    int k = 0;
    for (int i = 0; i < ps->n; i++) {
        if (strcmp(cfg->sites[i].name, cfg->site) == 0)
            ps->self = i;
        else
            ps->accept_names[k++] = cfg->sites[i].peer_name;
    }
    ps->accept_names[k] = NULL;
    const struct cfg_site *self = &cfg->sites[ps->self];
    static const struct tls_conn_cbs in_cbs = { in_open, on_frame, in_close };
    struct tls_server_opts so = {
        .host = self->listen_host,
        .port = self->listen_port,
        .accept_names = ps->accept_names,
        .conn = { .frame_max = cfg->quorum.max_frame,
                  .handshake_timeout_ms = (unsigned)cfg->quorum.peer_timeout_ms },
    };
    result = tls_listen(loop, ps->ctx, &so, &in_cbs, ps, &ps->server, err, errlen);
    if (result < 0) {
        tls_ctx_free(ps->ctx);
        free(ps);
        return result;
    }
    ps->open_handles = 1; /* the server */
    uv_timer_init(loop, &ps->watchdog);
    ps->watchdog.data = ps;
    uv_timer_start(&ps->watchdog, on_watchdog, (uint64_t)cfg->quorum.peer_timeout_ms / 2,
                   (uint64_t)cfg->quorum.peer_timeout_ms / 2);
    ps->open_handles++;
    for (int i = 0; i < ps->n; i++) {
        struct peer *pr = &ps->peer[i];
        pr->owner = ps;
        pr->site = i;
        pr->cfg = &cfg->sites[i];
        pr->backoff_ms = BACKOFF_MIN_MS;
        if (i == ps->self)
            continue;
        uv_timer_init(loop, &pr->redial);
        pr->redial.data = pr;
        ps->open_handles++;
        snprintf(pr->addr, sizeof pr->addr, "%s", pr->cfg->host);
        dial(pr);
    }
    *out = ps;
    return 0;
}

bool peers_link_up(const struct peers *ps, int site)
{
    return site >= 0 && site < ps->n && ps->peer[site].out_open;
}

int64_t peers_last_heard(const struct peers *ps, int site)
{
    return site >= 0 && site < ps->n ? ps->peer[site].last_heard_ms : 0;
}

const char *peers_link_state(const struct peers *ps, int site)
{
    if (site == ps->self)
        return "self";
    return ps->peer[site].state[0] ? ps->peer[site].state : "down";
}

static void on_handle_closed(uv_handle_t *h)
{
    struct peers *ps = h->data;
    if (h != (uv_handle_t *)&ps->watchdog)
        ps = ((struct peer *)h->data)->owner;
    ps->open_handles--;
    maybe_closed(ps);
}

static void on_server_closed(struct tls_server *s)
{
    struct peers *ps = tls_server_get_data(s);
    ps->open_handles--;
    maybe_closed(ps);
}

void peers_close(struct peers *ps, peers_closed_cb cb, void *arg)
{
    ps->closing = true;
    ps->on_closed = cb;
    ps->closed_arg = arg;
    ps->open_handles++; /* hold until every close below is started */
    tls_server_close(ps->server, on_server_closed);
    uv_close((uv_handle_t *)&ps->watchdog, on_handle_closed);
    for (int i = 0; i < ps->n; i++) {
        struct peer *pr = &ps->peer[i];
        if (i == ps->self)
            continue;
        uv_close((uv_handle_t *)&pr->redial, on_handle_closed);
        if (pr->out)
            tls_conn_close(pr->out);
        for (int j = 0; j < MAX_INBOUND; j++) {
            if (pr->in[j]) {
                tls_conn_set_data(pr->in[j], NULL);
                tls_conn_close(pr->in[j]);
                pr->in[j] = NULL;
            }
        }
    }
    ps->open_handles--;
    maybe_closed(ps);
}
