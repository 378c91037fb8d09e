/* HTTP client: libcurl's multi-socket API driven by one libuv loop.
 *
 * Owns the CURLM, one uv_poll per socket curl reports (struct http_sock),
 * the uv_timer curl asks for, a second timer that delivers cancellations on
 * the next loop iteration, and every request (easy handle, its header list,
 * its capped body buffer). User callbacks run only from our own loop
 * callbacks, never from inside a curl callback or an API call.
 *
 * A request uses a fresh connection that is closed when it ends
 * (FRESH_CONNECT + FORBID_REUSE) unless it sets keepalive_s: then curl's
 * connection cache in the CURLM may keep it (at most max_idle idle ones)
 * and give it to a later request with the same target and TLS settings,
 * until keepalive_s after it was opened (MAXLIFETIME_CONN). curl checks a
 * cached connection before it reuses it and opens a new one when the
 * server has closed it, or when a request on it fails before any answer.
 *
 * The peer certificate is read when it is verified (on_verify, through the
 * SSL_CTX of the connection, which then holds a pointer to the request:
 * the request keeps a reference to that SSL_CTX and clears the pointer
 * before it goes) and again from the connection's SSL when the answer's
 * headers arrive, which also covers a kept connection (no handshake).
 */
#include "lib/http_client.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "lib/buf.h"
#include "lib/log.h"

#ifndef TRIAD_VERSION
#define TRIAD_VERSION "0"
#endif

enum req_state { REQ_ACTIVE, REQ_CANCELLED, REQ_DONE };

/* Easy handles of finished requests kept for the next ones: an easy
 * handle and its 16 kB buffer cost more to make than to reset, and probes
 * make a thousand requests a second. Bounded: a burst leaves at most this
 * many behind. */
#define EASY_POOL 32

struct http_sock {
    uv_poll_t poll;
    struct http_client *client;
    struct http_request *req; /* the request using it now, or NULL */
    curl_socket_t fd;
    struct http_sock *prev, *next;
};

struct http_request {
    struct http_client *client;
    CURL *easy;
    struct curl_slist *headers;
    struct curl_slist *connect_to;
    http_done_cb cb;
    void *arg;
    struct http_request *prev, *next; /* in client->active or client->cancelled */
    enum req_state state;

    struct buf body;
    size_t max_header;
    size_t header_bytes;
    int over_body;
    int over_header;
    int headers_done;
    int expect_status;
    int https;
    uint32_t timeout_ms;
    uint32_t connect_timeout_ms;
    uint64_t start_ns;
    /* curl 7.88 reports no connect time until TLS is done too: we note when
     * the TCP socket itself is connected, to tell the two timeouts apart. */
    struct http_sock *sock;
    uint64_t tcp_connected_ns;

    int has_cert;
    time_t cert_not_after;
    SSL_CTX *ssl_ctx;  /* a reference while its ex data points here */
    int opened_socket; /* curl opened a socket for it: not (only) a kept connection */

    char errbuf[CURL_ERROR_SIZE];
    char detail[HTTP_DETAIL_MAX];
};

struct http_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;   /* curl's own timeout */
    uv_timer_t deliver; /* runs cancelled requests' callbacks */
    struct http_request *active;
    struct http_request *cancelled;
    struct http_sock *socks;
    size_t n_requests; /* active + cancelled not yet delivered */
    CURL *pool[EASY_POOL];
    size_t n_pool;
    int busy; /* depth of our dispatch: teardown waits for 0 */
    int closing;
    int torn_down;
    int n_closing; /* uv handles whose close callback is pending */
    http_close_cb close_cb;
    void *close_arg;
};

static int http_inited;
static int ssl_exidx = -1;

int http_global_init(void)
{
    if (http_inited)
        return 0;
    CURLcode cc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (cc != CURLE_OK) {
        log_error("curl_global_init: %s", curl_easy_strerror(cc));
        return -EIO;
    }
    /* Lets the certificate verify callback find its request. */
    ssl_exidx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    http_inited = 1;
    return 0;
}

void http_global_cleanup(void)
{
    if (!http_inited)
        return;
    curl_global_cleanup();
    http_inited = 0;
}

/* ---- lists ---- */

static void req_link(struct http_request **head, struct http_request *r)
{
    r->prev = NULL;
    r->next = *head;
    if (*head)
        (*head)->prev = r;
    *head = r;
}

static void req_unlink(struct http_request **head, struct http_request *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        *head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

/* ---- handles ---- */

static void client_finish_close(struct http_client *c);

static void on_handle_closed(uv_handle_t *h)
{
    struct http_client *c;
    if (h->type == UV_POLL) {
        struct http_sock *s = h->data;
        c = s->client;
        free(s);
    } else {
        c = h->data;
    }
    c->n_closing--;
    if (c->torn_down && c->n_closing == 0)
        client_finish_close(c);
}

static void sock_close(struct http_sock *s)
{
    struct http_client *c = s->client;
    if (s->prev)
        s->prev->next = s->next;
    else
        c->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (s->req)
        s->req->sock = NULL;
    s->req = NULL;
    /* Stops the poll now (epoll forgets the fd before curl closes it). */
    c->n_closing++;
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
}

static void teardown(struct http_client *c);

static void dispatch_end(struct http_client *c)
{
    c->busy--;
    if (c->closing && !c->torn_down && c->busy == 0)
        teardown(c);
}

/* ---- results ---- */

/* Details are truncated to HTTP_DETAIL_MAX on purpose (curl's own message
 * may fill its whole buffer). */
static void detailf(struct http_request *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void detailf(struct http_request *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->detail, sizeof r->detail, fmt, ap);
    va_end(ap);
}

static int64_t info_us(CURL *e, CURLINFO what)
{
    curl_off_t v = 0;
    if (curl_easy_getinfo(e, what, &v) != CURLE_OK)
        return 0;
    return (int64_t)v;
}

static const char *errbuf_or(const struct http_request *r, CURLcode cc)
{
    return r->errbuf[0] ? r->errbuf : curl_easy_strerror(cc);
}

static int timeout_result(struct http_request *r, const struct http_response *res)
{
    uint32_t connect_ms = r->connect_timeout_ms;
    if (res->connect_us == 0) {
        detailf(r, "connect timeout after %u ms", connect_ms);
    } else if (r->https && res->tls_us == 0) {
        detailf(r, "TLS handshake timeout after %u ms", connect_ms);
    } else if (!r->headers_done) {
        snprintf(r->detail, sizeof r->detail,
                 "timeout after %u ms waiting for the response headers", r->timeout_ms);
    } else {
        detailf(r, "timeout after %u ms reading the response body", r->timeout_ms);
    }
    return -ETIMEDOUT;
}

static int connect_result(struct http_request *r, CURLcode cc)
{
    long os_err = 0;
    char *ip = NULL;
    long port = 0;
    curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_err);
    curl_easy_getinfo(r->easy, CURLINFO_PRIMARY_IP, &ip);
    curl_easy_getinfo(r->easy, CURLINFO_PRIMARY_PORT, &port);
    int err = os_err > 0 ? (int)os_err : ECONNREFUSED;
    if (ip && *ip && port > 0)
        detailf(r, "connect to %s port %ld failed: %s", ip, port, strerror(err));
    else
        detailf(r, "connect failed: %s (%s)", strerror(err), errbuf_or(r, cc));
    return -err;
}

/* Turn curl's outcome into a negative errno and r->detail. */
static int map_result(struct http_request *r, CURLcode cc, const struct http_response *res)
{
    switch (cc) {
    case CURLE_OK:
        if (r->expect_status && res->status != r->expect_status) {
            detailf(r, "HTTP %ld, expected %d", res->status, r->expect_status);
            return -EREMOTEIO;
        }
        detailf(r, "HTTP %ld", res->status);
        return 0;
    case CURLE_WRITE_ERROR:
    case CURLE_FILESIZE_EXCEEDED:
        if (r->over_body || cc == CURLE_FILESIZE_EXCEEDED) {
            detailf(r, "response body exceeds %zu bytes", r->body.max);
            return -EMSGSIZE;
        }
        if (r->over_header) {
            detailf(r, "response headers exceed %zu bytes", r->max_header);
            return -EMSGSIZE;
        }
        detailf(r, "out of memory storing the response");
        return -ENOMEM;
    case CURLE_OPERATION_TIMEDOUT:
        return timeout_result(r, res);
    case CURLE_COULDNT_CONNECT:
        return connect_result(r, cc);
    case CURLE_COULDNT_RESOLVE_HOST:
        detailf(r, "cannot resolve host: %s", errbuf_or(r, cc));
        return -EHOSTUNREACH;
    case CURLE_PEER_FAILED_VERIFICATION: {
        const char *why = errbuf_or(r, cc);
        static const char prefix[] = "SSL certificate problem: ";
        if (strncmp(why, prefix, sizeof prefix - 1) == 0)
            why += sizeof prefix - 1;
        detailf(r, "TLS: certificate verify failed: %s", why);
        return -EKEYREJECTED;
    }
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_SHUTDOWN_FAILED:
        detailf(r, "TLS: handshake failed: %s", errbuf_or(r, cc));
        return -EPROTO;
    case CURLE_SSL_CERTPROBLEM:
        detailf(r, "TLS: client certificate: %s", errbuf_or(r, cc));
        return -EINVAL;
    case CURLE_SSL_CACERT_BADFILE:
        detailf(r, "TLS: CA file: %s", errbuf_or(r, cc));
        return -EINVAL;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR: {
        long os_err = 0;
        curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_err);
        detailf(r, "connection error: %s", errbuf_or(r, cc));
        return os_err > 0 ? -(int)os_err : -ECONNRESET;
    }
    case CURLE_GOT_NOTHING:
        detailf(r, "server closed the connection without a response");
        return -ECONNRESET;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_PARTIAL_FILE:
    case CURLE_BAD_CONTENT_ENCODING:
        detailf(r, "HTTP protocol error: %s", errbuf_or(r, cc));
        return -EPROTO;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        detailf(r, "bad URL: %s", errbuf_or(r, cc));
        return -EINVAL;
    case CURLE_INTERFACE_FAILED:
        detailf(r, "cannot bind the local address: %s", errbuf_or(r, cc));
        return -EADDRNOTAVAIL;
    case CURLE_TOO_MANY_REDIRECTS:
        detailf(r, "too many redirects");
        return -ELOOP;
    case CURLE_OUT_OF_MEMORY:
        /* curl 7.88 reports a header line longer than its fixed limit as
         * out of memory; before the end of the headers that is by far the
         * likelier cause. */
        if (res->connect_us > 0 && !r->headers_done) {
            detailf(r, "response header line exceeds %d bytes", CURL_MAX_HTTP_HEADER);
            return -EMSGSIZE;
        }
        detailf(r, "out of memory");
        return -ENOMEM;
    default:
        detailf(r, "curl: %s", errbuf_or(r, cc));
        return -EIO;
    }
}

static void fill_cert(const struct http_request *r, struct http_response *res)
{
    if (!r->has_cert)
        return;
    res->has_cert = 1;
    res->cert_not_after = r->cert_not_after;
    double left = difftime(r->cert_not_after, time(NULL));
    res->cert_days_left = (int)floor(left / 86400.0);
}

/* The connection's SSL_CTX may outlive the request (a kept connection):
 * it must no longer point here. */
static void release_ssl_ctx(struct http_request *r)
{
    if (!r->ssl_ctx)
        return;
    SSL_CTX_set_ex_data(r->ssl_ctx, ssl_exidx, NULL);
    SSL_CTX_free(r->ssl_ctx);
    r->ssl_ctx = NULL;
}

static CURL *easy_take(struct http_client *c)
{
    if (c->n_pool)
        return c->pool[--c->n_pool];
    return curl_easy_init();
}

/* Only once out of the multi handle; every option is set again. */
static void easy_give(struct http_client *c, CURL *e)
{
    if (!c->closing && c->n_pool < EASY_POOL) {
        curl_easy_reset(e);
        c->pool[c->n_pool++] = e;
    } else {
        curl_easy_cleanup(e);
    }
}

static void request_free(struct http_request *r)
{
    if (!r)
        return;
    if (r->sock)
        r->sock->req = NULL;
    release_ssl_ctx(r);
    if (r->easy)
        easy_give(r->client, r->easy);
    curl_slist_free_all(r->headers);
    curl_slist_free_all(r->connect_to);
    buf_free(&r->body);
    free(r);
}

/* Run the user callback, then free the request. */
static void request_deliver(struct http_request *r, struct http_response *res)
{
    struct http_client *c = r->client;
    res->body = r->body.data ? r->body.data : "";
    res->body_len = r->body.len;
    res->detail = r->detail;
    if (!res->content_type)
        res->content_type = "";
    if (res->result)
        log_debug("http request failed: %s", r->detail);
    c->n_requests--;
    r->cb(r, res, r->arg);
    request_free(r);
}

static void request_done(struct http_request *r, CURLcode cc)
{
    struct http_client *c = r->client;
    struct http_response res;
    memset(&res, 0, sizeof res);
    res.curl_code = (int)cc;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
    char *ct = NULL;
    if (curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct)
        res.content_type = ct; /* valid until curl_easy_cleanup */
    res.total_us = info_us(r->easy, CURLINFO_TOTAL_TIME_T);
    res.connect_us = info_us(r->easy, CURLINFO_CONNECT_TIME_T);
    if (r->tcp_connected_ns)
        res.connect_us = (int64_t)((r->tcp_connected_ns - r->start_ns) / 1000);
    res.tls_us = info_us(r->easy, CURLINFO_APPCONNECT_TIME_T);
    if (!r->opened_socket && r->tcp_connected_ns) {
        /* A kept connection: connected, and TLS done, before it started. */
        res.reused = 1;
        if (r->https && res.tls_us == 0)
            res.tls_us = res.connect_us;
    }
    fill_cert(r, &res);
    res.result = map_result(r, cc, &res);

    curl_multi_remove_handle(c->multi, r->easy);
    req_unlink(&c->active, r);
    r->state = REQ_DONE;
    request_deliver(r, &res);
}

static void request_deliver_cancel(struct http_request *r)
{
    struct http_response res;
    memset(&res, 0, sizeof res);
    res.result = -ECANCELED;
    res.total_us = (int64_t)((uv_hrtime() - r->start_ns) / 1000);
    fill_cert(r, &res);
    detailf(r, "cancelled");
    r->state = REQ_DONE;
    request_deliver(r, &res);
}

static void check_multi_info(struct http_client *c)
{
    CURLMsg *msg;
    int left;
    while (!c->closing && (msg = curl_multi_info_read(c->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURLcode cc = msg->data.result;
        struct http_request *r = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        if (r)
            request_done(r, cc);
    }
}

/* ---- loop and curl callbacks ---- */

/* A TCP socket has a peer once connected. The family check skips the
 * socketpair curl's threaded resolver may hand us while resolving. */
static void note_connected(struct http_sock *s)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (s->req && !s->req->tcp_connected_ns &&
        getpeername(s->fd, (struct sockaddr *)&ss, &len) == 0 &&
        (ss.ss_family == AF_INET || ss.ss_family == AF_INET6))
        s->req->tcp_connected_ns = uv_hrtime();
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct http_sock *s = h->data;
    struct http_client *c = s->client;
    int flags = 0;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    int running;
    note_connected(s);
    c->busy++;
    /* s may be closed by the socket callback from here on. */
    curl_multi_socket_action(c->multi, s->fd, flags, &running);
    check_multi_info(c);
    dispatch_end(c);
}

static void on_timer(uv_timer_t *t)
{
    struct http_client *c = t->data;
    int running;
    c->busy++;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_info(c);
    dispatch_end(c);
}

static void on_deliver(uv_timer_t *t)
{
    struct http_client *c = t->data;
    c->busy++;
    while (c->cancelled && !c->closing) {
        struct http_request *r = c->cancelled;
        req_unlink(&c->cancelled, r);
        request_deliver_cancel(r);
    }
    dispatch_end(c);
}

static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct http_client *c = userp;
    struct http_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(c->multi, fd, NULL);
            sock_close(s);
        }
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return -1;
        int rc = uv_poll_init_socket(c->loop, &s->poll, fd);
        if (rc < 0) {
            log_error("http: uv_poll_init_socket(%d): %s", (int)fd, uv_strerror(rc));
            free(s);
            return -1;
        }
        s->client = c;
        s->fd = fd;
        s->poll.data = s;
        s->next = c->socks;
        if (c->socks)
            c->socks->prev = s;
        c->socks = s;
        curl_multi_assign(c->multi, fd, s);
    }
    /* A kept connection passes from one request to the next. */
    struct http_request *r = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
    if (r && s->req != r) {
        if (s->req)
            s->req->sock = NULL;
        if (r->sock)
            r->sock->req = NULL;
        r->sock = s;
        s->req = r;
    }
    note_connected(s);
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    int rc = uv_poll_start(&s->poll, events, on_poll);
    if (rc < 0) {
        log_error("http: uv_poll_start(%d): %s", (int)fd, uv_strerror(rc));
        return -1;
    }
    return 0;
}

static int on_curl_timer(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    struct http_client *c = userp;
    if (uv_is_closing((uv_handle_t *)&c->timer))
        return 0;
    if (timeout_ms < 0) {
        uv_timer_stop(&c->timer);
        return 0;
    }
    /* curl asks again and again for the same deadline while transfers
     * progress; moving a timer costs a heap removal and insertion among
     * the probes' thousand timers. */
    if (uv_is_active((uv_handle_t *)&c->timer) &&
        uv_timer_get_due_in(&c->timer) == (uint64_t)timeout_ms)
        return 0;
    uv_timer_start(&c->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct http_request *r = ud;
    size_t len = size * n;
    size_t room = r->body.max - r->body.len;
    if (len > room) {
        /* Keep the prefix that fits, then abort: never buffer past the cap. */
        if (room)
            buf_append(&r->body, p, room);
        r->over_body = 1;
        return 0;
    }
    if (len && buf_append(&r->body, p, len) < 0)
        return 0;
    return len;
}

static void note_not_after(struct http_request *r, X509 *cert)
{
    struct tm tm;
    if (cert && ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) == 1) {
        r->cert_not_after = timegm(&tm);
        r->has_cert = 1;
    }
}

/* The peer certificate of the connection the answer comes on: on a kept
 * connection there was no handshake (hence no on_verify) for this request.
 * curl's SSL pointer is valid during the transfer only, as here. */
static void note_peer_cert(struct http_request *r)
{
    struct curl_tlssessioninfo *ti = NULL;
    if (curl_easy_getinfo(r->easy, CURLINFO_TLS_SSL_PTR, &ti) != CURLE_OK || !ti ||
        ti->backend != CURLSSLBACKEND_OPENSSL || !ti->internals)
        return;
    note_not_after(r, SSL_get0_peer_certificate((SSL *)ti->internals));
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct http_request *r = ud;
    size_t len = size * n;
    if (len > r->max_header - r->header_bytes) {
        r->over_header = 1;
        return 0;
    }
    r->header_bytes += len;
    if (r->https && r->header_bytes == len)
        note_peer_cert(r);
    if ((len == 2 && p[0] == '\r' && p[1] == '\n') || (len == 1 && p[0] == '\n'))
        r->headers_done = 1;
    return len;
}

/* Called by OpenSSL for each certificate of the chain; depth 0 is the peer's.
 * It only records notAfter and keeps OpenSSL's verdict, so an expired or
 * untrusted certificate is still reported with its expiry. */
static int on_verify(int ok, X509_STORE_CTX *st)
{
    if (X509_STORE_CTX_get_error_depth(st) != 0)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(st, SSL_get_ex_data_X509_STORE_CTX_idx());
    SSL_CTX *ctx = ssl ? SSL_get_SSL_CTX(ssl) : NULL;
    struct http_request *r = ctx ? SSL_CTX_get_ex_data(ctx, ssl_exidx) : NULL;
    if (r)
        note_not_after(r, X509_STORE_CTX_get_current_cert(st));
    return ok;
}

/* Called for each new connection (curl gives each its own SSL_CTX), while
 * the request that opens it is alive. */
static CURLcode on_ssl_ctx(CURL *e, void *sslctx, void *userp)
{
    (void)e;
    struct http_request *r = userp;
    SSL_CTX *ctx = sslctx;
    if (ssl_exidx < 0 || SSL_CTX_up_ref(ctx) != 1)
        return CURLE_OK;
    release_ssl_ctx(r); /* a retry or a redirect: a second connection */
    r->ssl_ctx = ctx;
    if (SSL_CTX_set_ex_data(ctx, ssl_exidx, r) == 1)
        SSL_CTX_set_verify(ctx, SSL_CTX_get_verify_mode(ctx), on_verify);
    return CURLE_OK;
}

/* The connection is ready (connected and TLS done, or kept) and the
 * request is about to be sent. A kept connection may bring no socket
 * callback at all (its poll state does not change). */
static int on_prereq(void *clientp, char *conn_primary_ip, char *conn_local_ip,
                     int conn_primary_port, int conn_local_port)
{
    (void)conn_primary_ip;
    (void)conn_local_ip;
    (void)conn_primary_port;
    (void)conn_local_port;
    struct http_request *r = clientp;
    if (!r->tcp_connected_ns)
        r->tcp_connected_ns = uv_hrtime();
    return CURL_PREREQFUNC_OK;
}

/* curl made a socket for this request (a new connection). */
static int on_sockopt(void *clientp, curl_socket_t fd, curlsocktype purpose)
{
    (void)fd;
    (void)purpose;
    struct http_request *r = clientp;
    r->opened_socket = 1;
    return CURL_SOCKOPT_OK;
}

/* ---- requests ---- */

static int is_ip_literal(const char *s)
{
    unsigned char tmp[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

/* "host:port" with a numeric port; IPv6 hosts in brackets. */
static int valid_host_port(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return 0;
    if (s[0] == '[' && colon[-1] != ']')
        return 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    return colon[1] != '\0' && *end == '\0' && port > 0 && port <= 65535;
}

#define SETOPT(e, opt, val)                                                   \
    do {                                                                      \
        CURLcode cc_ = curl_easy_setopt((e), (opt), (val));                   \
        if (cc_ != CURLE_OK) {                                                \
            log_error("http: setting " #opt ": %s", curl_easy_strerror(cc_)); \
            return cc_ == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;            \
        }                                                                     \
    } while (0)

static int add_header(struct http_request *r, const char *h)
{
    struct curl_slist *l = curl_slist_append(r->headers, h);
    if (!l)
        return -ENOMEM;
    r->headers = l;
    return 0;
}

static int setup_method(struct http_request *r, const struct http_request_opts *o)
{
    CURL *e = r->easy;
    const char *m = o->method ? o->method : "GET";
    int has_body = o->body != NULL || strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 ||
                   strcmp(m, "PATCH") == 0;
    if (strcmp(m, "HEAD") == 0) {
        SETOPT(e, CURLOPT_NOBODY, 1L);
        return 0;
    }
    if (has_body) {
        SETOPT(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
        SETOPT(e, CURLOPT_COPYPOSTFIELDS, o->body ? (const char *)o->body : "");
        /* No "Expect: 100-continue" round trip (it costs a second on servers
         * that ignore it). */
        if (add_header(r, "Expect:") < 0)
            return -ENOMEM;
    }
    if (strcmp(m, "GET") != 0 && strcmp(m, "POST") != 0)
        SETOPT(e, CURLOPT_CUSTOMREQUEST, m);
    else if (strcmp(m, "GET") == 0 && has_body)
        SETOPT(e, CURLOPT_CUSTOMREQUEST, m);
    return 0;
}

static int setup_tls(struct http_request *r, const struct http_request_opts *o)
{
    CURL *e = r->easy;
    SETOPT(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (o->insecure) {
        SETOPT(e, CURLOPT_SSL_VERIFYPEER, 0L);
        SETOPT(e, CURLOPT_SSL_VERIFYHOST, 0L);
    } else {
        SETOPT(e, CURLOPT_SSL_VERIFYPEER, 1L);
        SETOPT(e, CURLOPT_SSL_VERIFYHOST, 2L);
    }
    if (o->ca_file) {
        SETOPT(e, CURLOPT_CAINFO, o->ca_file);
        /* Otherwise the system's CA directory would be trusted as well. */
        SETOPT(e, CURLOPT_CAPATH, (char *)NULL);
    }
    if (o->client_cert)
        SETOPT(e, CURLOPT_SSLCERT, o->client_cert);
    if (o->client_key)
        SETOPT(e, CURLOPT_SSLKEY, o->client_key);
    /* Blobs are copied by curl (CURL_BLOB_COPY): the caller's memory may go
     * as soon as the request is started. */
    if (o->ca_pem) {
        struct curl_blob blob = { (void *)o->ca_pem, o->ca_pem_len, CURL_BLOB_COPY };
        SETOPT(e, CURLOPT_CAINFO_BLOB, &blob);
        /* Only the blob is trusted, never the system store as well. */
        SETOPT(e, CURLOPT_CAINFO, (char *)NULL);
        SETOPT(e, CURLOPT_CAPATH, (char *)NULL);
    }
    if (o->client_cert_pem) {
        struct curl_blob blob = { (void *)o->client_cert_pem, o->client_cert_pem_len,
                                  CURL_BLOB_COPY };
        SETOPT(e, CURLOPT_SSLCERT_BLOB, &blob);
        SETOPT(e, CURLOPT_SSLCERTTYPE, "PEM");
    }
    if (o->client_key_pem) {
        struct curl_blob blob = { (void *)o->client_key_pem, o->client_key_pem_len,
                                  CURL_BLOB_COPY };
        SETOPT(e, CURLOPT_SSLKEY_BLOB, &blob);
        SETOPT(e, CURLOPT_SSLKEYTYPE, "PEM");
    }
    /* Not every TLS backend supports this; the expiry is then unknown. */
    if (curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx) == CURLE_OK)
        SETOPT(e, CURLOPT_SSL_CTX_DATA, r);
    return 0;
}

static int setup_request(struct http_request *r, const struct http_request_opts *o)
{
    CURL *e = r->easy;
    int result;
    SETOPT(e, CURLOPT_URL, o->url);
    SETOPT(e, CURLOPT_PRIVATE, (char *)r);
    SETOPT(e, CURLOPT_ERRORBUFFER, r->errbuf);
    SETOPT(e, CURLOPT_NOSIGNAL, 1L);
    SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SETOPT(e, CURLOPT_NOPROXY, "*");
    SETOPT(e, CURLOPT_USERAGENT, "triad/" TRIAD_VERSION);
    if (o->keepalive_s) {
        SETOPT(e, CURLOPT_MAXLIFETIME_CONN, (long)o->keepalive_s);
        /* An idle connection is not kept longer than its whole life. */
        SETOPT(e, CURLOPT_MAXAGE_CONN, (long)o->keepalive_s);
    } else {
        SETOPT(e, CURLOPT_FRESH_CONNECT, 1L);
        SETOPT(e, CURLOPT_FORBID_REUSE, 1L);
    }
    SETOPT(e, CURLOPT_SOCKOPTFUNCTION, on_sockopt);
    SETOPT(e, CURLOPT_SOCKOPTDATA, r);
    SETOPT(e, CURLOPT_PREREQFUNCTION, on_prereq);
    SETOPT(e, CURLOPT_PREREQDATA, r);
    SETOPT(e, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms);
    SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS, (long)r->connect_timeout_ms);
    if (o->max_redirects > 0) {
        SETOPT(e, CURLOPT_FOLLOWLOCATION, 1L);
        SETOPT(e, CURLOPT_MAXREDIRS, (long)o->max_redirects);
    }
    SETOPT(e, CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(e, CURLOPT_WRITEDATA, r);
    SETOPT(e, CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(e, CURLOPT_HEADERDATA, r);
    /* Fails early when Content-Length already says too much. */
    SETOPT(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->body.max);

    result = setup_method(r, o);
    if (result < 0)
        return result;
    for (size_t i = 0; i < o->n_headers; i++) {
        if (add_header(r, o->headers[i]) < 0)
            return -ENOMEM;
    }
    if (r->headers)
        SETOPT(e, CURLOPT_HTTPHEADER, r->headers);

    if (r->https) {
        result = setup_tls(r, o);
        if (result < 0)
            return result;
    }
    if (o->bearer_token) {
        SETOPT(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
        SETOPT(e, CURLOPT_XOAUTH2_BEARER, o->bearer_token);
    } else if (o->basic_auth) {
        SETOPT(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        SETOPT(e, CURLOPT_USERPWD, o->basic_auth);
    }
    if (o->connect_to) {
        char spec[300];
        /* "::H:P": any URL host and port go to H:P. */
        snprintf(spec, sizeof spec, "::%s", o->connect_to);
        r->connect_to = curl_slist_append(NULL, spec);
        if (!r->connect_to)
            return -ENOMEM;
        SETOPT(e, CURLOPT_CONNECT_TO, r->connect_to);
    }
    if (o->local_addr) {
        char dev[80];
        /* "host!" makes curl take it as an address, never an interface name. */
        snprintf(dev, sizeof dev, "host!%s", o->local_addr);
        SETOPT(e, CURLOPT_INTERFACE, dev);
    }
    if (o->unix_socket)
        SETOPT(e, CURLOPT_UNIX_SOCKET_PATH, o->unix_socket);
    return 0;
}

static int check_opts(const struct http_request_opts *o)
{
    if (strncmp(o->url, "http://", 7) != 0 && strncmp(o->url, "https://", 8) != 0) {
        log_error("http: URL must start with http:// or https://: %s", o->url);
        return -EINVAL;
    }
    if (o->bearer_token && o->basic_auth) {
        log_error("http: bearer_token and basic_auth are exclusive");
        return -EINVAL;
    }
    if (o->local_addr && !is_ip_literal(o->local_addr)) {
        log_error("http: local_addr must be a numeric address: %s", o->local_addr);
        return -EINVAL;
    }
    if (o->connect_to && (strlen(o->connect_to) > 256 || !valid_host_port(o->connect_to))) {
        log_error("http: connect_to must be host:port: %s", o->connect_to);
        return -EINVAL;
    }
    if (o->keepalive_s > HTTP_MAX_KEEPALIVE_S) {
        log_error("http: keepalive_s must be at most %d", HTTP_MAX_KEEPALIVE_S);
        return -EINVAL;
    }
    if (o->method && (!*o->method || strlen(o->method) > 16 || strpbrk(o->method, " \r\n"))) {
        log_error("http: bad method");
        return -EINVAL;
    }
    int has_cert = o->client_cert != NULL || o->client_cert_pem != NULL;
    int has_key = o->client_key != NULL || o->client_key_pem != NULL;
    if (has_cert != has_key) {
        log_error("http: client_cert and client_key go together");
        return -EINVAL;
    }
    if ((o->ca_file && o->ca_pem) || (o->client_cert && o->client_cert_pem) ||
        (o->client_key && o->client_key_pem)) {
        log_error("http: a TLS file and the same from memory are exclusive");
        return -EINVAL;
    }
    if ((o->ca_pem && !o->ca_pem_len) || (o->client_cert_pem && !o->client_cert_pem_len) ||
        (o->client_key_pem && !o->client_key_pem_len)) {
        log_error("http: empty PEM data");
        return -EINVAL;
    }
    return 0;
}

int http_request_start(struct http_client *c, const struct http_request_opts *o, http_done_cb cb,
                       void *arg, struct http_request **out)
{
    int result = 0;
    struct http_request *r = NULL;
    if (out)
        *out = NULL;
    if (!c || !o || !o->url || !cb)
        return -EINVAL;
    if (c->closing)
        return -ESHUTDOWN;
    result = check_opts(o);
    if (result < 0)
        goto out;

    r = calloc(1, sizeof *r);
    if (!r) {
        result = -ENOMEM;
        goto out;
    }
    r->client = c;
    r->cb = cb;
    r->arg = arg;
    r->state = REQ_ACTIVE;
    r->start_ns = uv_hrtime();
    r->https = strncmp(o->url, "https://", 8) == 0;
    r->expect_status = o->expect_status;
    r->timeout_ms = o->timeout_ms ? o->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
    r->connect_timeout_ms = o->connect_timeout_ms && o->connect_timeout_ms < r->timeout_ms
                                ? o->connect_timeout_ms
                                : r->timeout_ms;
    r->max_header = o->max_header ? o->max_header : HTTP_DEFAULT_MAX_HEADER;
    buf_init(&r->body, o->max_body ? o->max_body : HTTP_DEFAULT_MAX_BODY);

    r->easy = easy_take(c);
    if (!r->easy) {
        result = -ENOMEM;
        goto out;
    }
    result = setup_request(r, o);
    if (result < 0)
        goto out;
    CURLMcode mc = curl_multi_add_handle(c->multi, r->easy);
    if (mc != CURLM_OK) {
        log_error("http: curl_multi_add_handle: %s", curl_multi_strerror(mc));
        result = mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EIO;
        goto out;
    }
    req_link(&c->active, r);
    c->n_requests++;
out:
    if (result < 0) {
        request_free(r);
        return result;
    }
    if (out)
        *out = r;
    return 0;
}

void http_request_cancel(struct http_request *r)
{
    if (!r || r->state != REQ_ACTIVE)
        return;
    struct http_client *c = r->client;
    /* Closes the connection now: no more bytes to or from the target. */
    curl_multi_remove_handle(c->multi, r->easy);
    req_unlink(&c->active, r);
    r->state = REQ_CANCELLED;
    req_link(&c->cancelled, r);
    if (!c->closing)
        uv_timer_start(&c->deliver, on_deliver, 0, 0);
}

/* ---- client ---- */

int http_client_new(uv_loop_t *loop, struct http_client **out)
{
    int result = http_global_init();
    struct http_client *c = NULL;
    *out = NULL;
    if (result < 0)
        return result;
    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->loop = loop;
    c->multi = curl_multi_init();
    if (!c->multi) {
        free(c);
        return -ENOMEM;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    http_client_set_max_idle(c, HTTP_DEFAULT_MAX_IDLE);
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_timer_init(loop, &c->deliver);
    c->deliver.data = c;
    *out = c;
    return 0;
}

void http_client_set_max_idle(struct http_client *c, size_t n)
{
    /* 0 would mean no limit to curl. */
    if (n < 1)
        n = 1;
    if (n > 100000)
        n = 100000;
    /* curl's default grows with the transfers in flight (4 each): kept
     * connections would be closed whenever few requests overlap. */
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)n);
}

size_t http_client_active(const struct http_client *c)
{
    return c->n_requests;
}

static void teardown(struct http_client *c)
{
    c->torn_down = 1;
    while (c->active) {
        struct http_request *r = c->active;
        curl_multi_remove_handle(c->multi, r->easy);
        req_unlink(&c->active, r);
        r->state = REQ_CANCELLED;
        req_link(&c->cancelled, r);
    }
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    while (c->n_pool)
        curl_easy_cleanup(c->pool[--c->n_pool]);
    while (c->socks)
        sock_close(c->socks);
    c->n_closing += 2;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->deliver, on_handle_closed);
}

/* Every handle is closed: report the cancelled requests, then the close. */
static void client_finish_close(struct http_client *c)
{
    while (c->cancelled) {
        struct http_request *r = c->cancelled;
        req_unlink(&c->cancelled, r);
        request_deliver_cancel(r);
    }
    http_close_cb cb = c->close_cb;
    void *arg = c->close_arg;
    free(c);
    if (cb)
        cb(arg);
}

void http_client_close(struct http_client *c, http_close_cb close_cb, void *arg)
{
    if (!c || c->closing)
        return;
    c->closing = 1;
    c->close_cb = close_cb;
    c->close_arg = arg;
    if (c->busy == 0)
        teardown(c);
}
