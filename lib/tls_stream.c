/* The TLS stream server: the listener, each connection's handshake, the
 * hand-over of a socketpair to the plaintext server, the two pumps between
 * the TLS session and the socketpair with their back-pressure, the
 * timeouts and the close paths (see tls_stream.h for the contract).
 *
 * A connection has three handles: the client's TCP socket, our end of the
 * socketpair (a uv_pipe_t) and one timer whose meaning follows the state
 * (handshake deadline, stalled writes, lingering close). Reading either
 * socket is switched on and off by update_reading() from the amounts
 * queued the other way: that is the back-pressure, and what bounds every
 * buffer here.
 */
#include "lib/tls_stream.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "lib/log.h"
#include "lib/tls_util.h"

#define READ_CHUNK    (64 * 1024) /* one read from either socket */
#define PLAIN_CHUNK   (16 * 1024) /* one SSL_read: at most a TLS record */
#define LISTEN_QUEUE  128
#define LINGER_MS     1000
#define CERT_LIST_MAX (64 * 1024) /* the client's certificate chain, in bytes */
#define LOG_BURST     10          /* failed handshakes logged per second */
#define ADDR_MAX      64
#define REASON_MAX    320

enum conn_state { CONN_HANDSHAKING, CONN_OPEN, CONN_CLOSING };
enum timer_mode { TIMER_NONE, TIMER_HANDSHAKE, TIMER_STALL, TIMER_LINGER };

struct conn {
    uv_tcp_t tcp;
    uv_pipe_t pipe; /* our end of the socketpair */
    uv_timer_t timer;
    uv_shutdown_t tcp_shut, pipe_shut;
    struct tls_stream_server *s;
    SSL *ssl;
    BIO *rbio; /* ciphertext from the client, read by OpenSSL (owned by ssl) */
    BIO *wbio; /* ciphertext from OpenSSL, for the client (owned by ssl) */
    enum conn_state state;
    enum timer_mode timer_mode;
    int handles_open;
    int tcp_reading, pipe_reading;
    int pipe_open;   /* the socketpair exists and the plaintext side has its end */
    int pipe_broken; /* a write to the plaintext side failed */
    int pipe_shut_started;
    int in_done;  /* no more plaintext goes to the plaintext side */
    int net_eof;  /* the client's FIN was read */
    int out_done; /* the plaintext side ended: close_notify sent, FIN queued */
    int tcp_shut_done;
    size_t net_wq;   /* ciphertext handed to the TCP socket, not yet written */
    size_t plain_wq; /* plaintext handed to the socketpair, not yet written */
    char reason[REASON_MAX];
    char verify_reason[REASON_MAX]; /* why certificate verification refused the client */
    char addr[ADDR_MAX];
    char identity[TLS_STREAM_IDENTITY_MAX];
    struct conn *prev, *next;
};

struct tls_stream_server {
    uv_tcp_t tcp;
    uv_loop_t *loop;
    SSL_CTX *ssl_ctx;
    tls_stream_accept_cb cb;
    void *data;
    unsigned max_conns, max_handshakes, handshake_timeout_ms, stall_timeout_ms;
    size_t buf_max;
    struct conn *conns; /* every connection not yet freed */
    unsigned live;      /* of which not closing */
    struct tls_stream_stats stats;
    int port;
    int closing;
    int listener_closed;
    int busy_logged; /* the cap was reported; reset once under it again */
    uint64_t log_second;
    unsigned log_count, log_suppressed;
    void (*on_closed)(struct tls_stream_server *s);
    char addr[ADDR_MAX];
    /* Every read from any socket of this server lands here and is consumed
     * (copied into OpenSSL, or encrypted) before the read callback returns. */
    char rdbuf[READ_CHUNK];
};

struct wreq {
    uv_write_t req;
    struct conn *c;
    size_t len;
    char data[];
};

static void update_reading(struct conn *c);
static void pump_in(struct conn *c);

static void note_queued(struct conn *c, size_t queued)
{
    if (queued > c->s->stats.buffered_peak)
        c->s->stats.buffered_peak = queued;
}

/* ---- the server's end ---- */

static void server_maybe_free(struct tls_stream_server *s)
{
    if (!s->closing || !s->listener_closed || s->conns != NULL)
        return;
    if (s->on_closed)
        s->on_closed(s);
    SSL_CTX_free(s->ssl_ctx);
    free(s);
}

/* Handshake failures are logged, but a flood of them is not: LOG_BURST a
 * second, and the next one after that says how many were left out. */
static void log_failure(struct tls_stream_server *s, struct conn *c, enum log_level lvl,
                        const char *event)
{
    uint64_t second = uv_now(s->loop) / 1000;
    if (second != s->log_second) {
        if (s->log_suppressed) {
            char n[24];
            snprintf(n, sizeof n, "%u", s->log_suppressed);
            log_ev(LOG_WARN, "tls-stream-suppressed", "failed TLS handshakes not logged",
                   { "count", n }, { "listener", s->addr });
        }
        s->log_second = second;
        s->log_count = 0;
        s->log_suppressed = 0;
    }
    if (s->log_count >= LOG_BURST) {
        s->log_suppressed++;
        return;
    }
    s->log_count++;
    log_ev(lvl, event, c->reason, { "peer", c->addr }, { "listener", s->addr });
}

/* ---- connection teardown ---- */

static void on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->handles_open > 0)
        return;
    struct tls_stream_server *s = c->s;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    SSL_free(c->ssl);
    free(c);
    server_maybe_free(s);
}

/* Ends the connection now, both sides; the first reason is kept. Queued
 * writes are dropped (libuv cancels them before the close callbacks). */
static void conn_close(struct conn *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void conn_close(struct conn *c, int status, const char *fmt, ...)
{
    va_list ap;
    struct tls_stream_server *s = c->s;
    if (c->state == CONN_CLOSING)
        return;
    va_start(ap, fmt);
    vsnprintf(c->reason, sizeof c->reason, fmt, ap);
    va_end(ap);
    if (c->state == CONN_HANDSHAKING)
        s->stats.handshaking--;
    else
        log_ev(LOG_DEBUG, "tls-stream-close", c->reason, { "peer", c->addr },
               { "identity", c->identity }, { "status", status ? strerror(-status) : "ok" });
    c->state = CONN_CLOSING;
    s->live--;
    s->stats.conns = s->live;
    if (s->live < s->max_conns)
        s->busy_logged = 0;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->pipe, on_handle_closed);
}

/* ---- the timer ---- */

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    struct tls_stream_server *s = c->s;
    enum timer_mode m = c->timer_mode;
    c->timer_mode = TIMER_NONE;
    switch (m) {
    case TIMER_HANDSHAKE:
        s->stats.handshake_failed++;
        s->stats.handshake_timeouts++;
        snprintf(c->reason, sizeof c->reason, "TLS handshake timed out after %u ms",
                 s->handshake_timeout_ms);
        log_failure(s, c, LOG_INFO, "tls-stream-handshake-failed");
        conn_close(c, -ETIMEDOUT, "TLS handshake timed out after %u ms", s->handshake_timeout_ms);
        break;
    case TIMER_STALL:
        s->stats.stalled++;
        conn_close(c, -ETIMEDOUT, "the client read nothing of %zu bytes for %u ms", c->net_wq,
                   s->stall_timeout_ms);
        log_ev(LOG_INFO, "tls-stream-stalled", c->reason, { "peer", c->addr },
               { "identity", c->identity });
        break;
    case TIMER_LINGER:
        conn_close(c, 0, "closed (the client did not close its side within %u ms)", LINGER_MS);
        break;
    case TIMER_NONE:
        break;
    }
}

static void set_timer(struct conn *c, enum timer_mode m, unsigned ms)
{
    c->timer_mode = m;
    if (m == TIMER_NONE)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* ---- towards the client ---- */

static void on_net_write(uv_write_t *req, int status)
{
    struct wreq *wr = (struct wreq *)req;
    struct conn *c = wr->c;
    c->net_wq -= wr->len;
    free(wr);
    if (c->state == CONN_CLOSING)
        return;
    if (status < 0) {
        conn_close(c, status, "write to %s failed: %s", c->addr, uv_strerror(status));
        return;
    }
    /* Progress: the stall clock starts again, or stops with nothing queued. */
    if (c->timer_mode == TIMER_STALL)
        set_timer(c, c->net_wq ? TIMER_STALL : TIMER_NONE, c->s->stall_timeout_ms);
    update_reading(c);
}

/* Hands everything OpenSSL produced to the TCP socket. 0, or the
 * connection is closed and a negative errno returned. */
static int flush_net(struct conn *c)
{
    size_t n;
    while ((n = BIO_ctrl_pending(c->wbio)) > 0) {
        if (n > READ_CHUNK)
            n = READ_CHUNK;
        struct wreq *wr = malloc(sizeof *wr + n);
        if (wr == NULL) {
            conn_close(c, -ENOMEM, "out of memory writing to %s", c->addr);
            return -ENOMEM;
        }
        int got = BIO_read(c->wbio, wr->data, (int)n);
        if (got <= 0) {
            free(wr);
            conn_close(c, -EIO, "cannot take TLS output for %s", c->addr);
            return -EIO;
        }
        wr->c = c;
        wr->len = (size_t)got;
        uv_buf_t b = uv_buf_init(wr->data, (unsigned)got);
        int r = uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_net_write);
        if (r < 0) {
            free(wr);
            conn_close(c, r, "write to %s failed: %s", c->addr, uv_strerror(r));
            return r;
        }
        c->net_wq += wr->len;
        note_queued(c, c->net_wq);
    }
    if (c->state == CONN_OPEN && c->timer_mode == TIMER_NONE && c->net_wq > 0)
        set_timer(c, TIMER_STALL, c->s->stall_timeout_ms);
    return 0;
}

static void on_tcp_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (c->state == CONN_CLOSING)
        return;
    if (status < 0) {
        conn_close(c, status, "closing the connection to %s failed: %s", c->addr,
                   uv_strerror(status));
        return;
    }
    c->tcp_shut_done = 1;
    if (c->net_eof) {
        conn_close(c, 0, "closed");
        return;
    }
    /* Read and drop what the client still sends until its FIN, for a
     * while: closing with unread input would reset the connection and
     * could destroy our last answer in flight. */
    set_timer(c, TIMER_LINGER, LINGER_MS);
    update_reading(c);
}

/* The plaintext side is done: the client gets what is queued, then
 * close_notify and a FIN. */
static void output_ended(struct conn *c)
{
    if (c->out_done || c->state != CONN_OPEN)
        return;
    c->out_done = 1;
    ERR_clear_error();
    (void)SSL_shutdown(c->ssl); /* 0: close_notify queued, the client's not seen yet */
    ERR_clear_error();
    if (flush_net(c) < 0)
        return;
    c->tcp_shut.data = c;
    int r = uv_shutdown(&c->tcp_shut, (uv_stream_t *)&c->tcp, on_tcp_shutdown);
    if (r < 0) {
        conn_close(c, r, "closing the connection to %s failed: %s", c->addr, uv_strerror(r));
        return;
    }
    update_reading(c);
}

static void on_pipe_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = st->data;
    char why[256];
    if (c->state != CONN_OPEN || nread == 0)
        return;
    if (nread < 0) {
        /* EOF, or a reset because the plaintext side closed with our input
         * unread: either way it has said all it will. */
        output_ended(c);
        return;
    }
    size_t written = 0;
    ERR_clear_error();
    if (SSL_write_ex(c->ssl, b->base, (size_t)nread, &written) != 1 || written != (size_t)nread) {
        conn_close(c, -EPROTO, "TLS write to %s failed: %s", c->addr,
                   tls_util_ssl_reason(why, sizeof why));
        return;
    }
    c->s->stats.bytes_out += (uint64_t)nread;
    if (flush_net(c) < 0)
        return;
    update_reading(c);
}

/* ---- towards the plaintext side ---- */

static void on_pipe_shutdown(uv_shutdown_t *req, int status)
{
    /* A failure means the plaintext side is gone already: its end-of-file
     * reaches on_pipe_read. */
    (void)req;
    (void)status;
}

/* No more plaintext for the plaintext side: it sees end-of-file after what
 * is queued (unless it is gone). */
static void input_ended(struct conn *c)
{
    c->in_done = 1;
    if (!c->pipe_open || c->pipe_broken || c->pipe_shut_started)
        return;
    c->pipe_shut_started = 1;
    c->pipe_shut.data = c;
    if (uv_shutdown(&c->pipe_shut, (uv_stream_t *)&c->pipe, on_pipe_shutdown) < 0)
        c->pipe_broken = 1;
}

static void on_pipe_write(uv_write_t *req, int status)
{
    struct wreq *wr = (struct wreq *)req;
    struct conn *c = wr->c;
    c->plain_wq -= wr->len;
    free(wr);
    if (c->state != CONN_OPEN)
        return;
    if (status < 0) {
        /* The plaintext side closed its end. What it wrote before (an
         * answer such as 413) is still to be read and sent: only the input
         * stops here. */
        c->pipe_broken = 1;
        input_ended(c);
        update_reading(c);
        return;
    }
    pump_in(c);
}

static int write_pipe(struct conn *c, const char *p, size_t len)
{
    struct wreq *wr = malloc(sizeof *wr + len);
    if (wr == NULL) {
        conn_close(c, -ENOMEM, "out of memory reading from %s", c->addr);
        return -ENOMEM;
    }
    memcpy(wr->data, p, len);
    wr->c = c;
    wr->len = len;
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)len);
    int r = uv_write(&wr->req, (uv_stream_t *)&c->pipe, &b, 1, on_pipe_write);
    if (r < 0) {
        free(wr);
        c->pipe_broken = 1;
        input_ended(c);
        return 0;
    }
    c->plain_wq += len;
    c->s->stats.bytes_in += len;
    note_queued(c, c->plain_wq);
    return 0;
}

/* Decrypts what the client sent, as long as the plaintext side keeps up. */
static void pump_in(struct conn *c)
{
    char plain[PLAIN_CHUNK];
    char why[256];
    while (c->state == CONN_OPEN && !c->in_done && !c->out_done && c->plain_wq < c->s->buf_max) {
        size_t got = 0;
        ERR_clear_error();
        if (SSL_read_ex(c->ssl, plain, sizeof plain, &got) == 1) {
            if (write_pipe(c, plain, got) < 0)
                return;
            continue;
        }
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            input_ended(c); /* the client's close_notify */
            break;
        }
        if (e == SSL_ERROR_SSL || e == SSL_ERROR_SYSCALL)
            tls_util_ssl_reason(why, sizeof why);
        else
            snprintf(why, sizeof why, "unexpected TLS state %d", e);
        conn_close(c, -EPROTO, "TLS error from %s: %s", c->addr, why);
        return;
    }
    if (c->state != CONN_OPEN)
        return;
    /* Reading may have produced records of ours (a TLS 1.3 key update). */
    if (flush_net(c) < 0)
        return;
    update_reading(c);
}

/* ---- reading switches ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct conn *c = h->data;
    size_t len = sizeof c->s->rdbuf;
    (void)suggested;
    /* Plaintext is read only as far as the client's queue has room, so
     * that what waits for the client stays within buf_max (plus the TLS
     * records' overhead). */
    if (h == (uv_handle_t *)&c->pipe) {
        size_t room = c->net_wq < c->s->buf_max ? c->s->buf_max - c->net_wq : 1024;
        if (room < len)
            len = room;
    }
    *b = uv_buf_init(c->s->rdbuf, (unsigned)len);
}

static void on_tcp_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);

static void update_reading(struct conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    struct tls_stream_server *s = c->s;
    int want_tcp, want_pipe;
    if (c->state == CONN_HANDSHAKING) {
        want_tcp = 1;
        want_pipe = 0;
    } else if (c->out_done) {
        /* Only to drop the rest and see the FIN. */
        want_tcp = !c->net_eof;
        want_pipe = 0;
    } else {
        want_tcp = !c->in_done && !c->net_eof && c->plain_wq < s->buf_max &&
                   BIO_ctrl_pending(c->rbio) < READ_CHUNK;
        want_pipe = c->pipe_open && c->net_wq < s->buf_max;
    }
    if (want_tcp != c->tcp_reading) {
        int r = want_tcp ? uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_tcp_read)
                         : uv_read_stop((uv_stream_t *)&c->tcp);
        if (r < 0) {
            conn_close(c, r, "read from %s failed: %s", c->addr, uv_strerror(r));
            return;
        }
        c->tcp_reading = want_tcp;
    }
    if (want_pipe != c->pipe_reading) {
        int r = want_pipe ? uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_pipe_read)
                          : uv_read_stop((uv_stream_t *)&c->pipe);
        if (r < 0) {
            conn_close(c, r, "reading the plaintext side failed: %s", uv_strerror(r));
            return;
        }
        c->pipe_reading = want_pipe;
    }
}

/* ---- the handshake ---- */

/* Runs for every certificate of the client's chain, the leaf (depth 0)
 * last; records why a client was refused, for the log. */
static int verify_cb(int ok, X509_STORE_CTX *xs)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct conn *c = ssl ? SSL_get_app_data(ssl) : NULL;
    if (c == NULL || ok || c->verify_reason[0])
        return ok;
    char who[256] = "";
    X509 *cert = X509_STORE_CTX_get_current_cert(xs);
    if (cert)
        tls_util_cert_name(cert, who, sizeof who);
    snprintf(c->verify_reason, sizeof c->verify_reason,
             "client certificate refused: %s (certificate '%s', depth %d)",
             X509_verify_cert_error_string(X509_STORE_CTX_get_error(xs)), who,
             X509_STORE_CTX_get_error_depth(xs));
    return ok;
}

static void handshake_failed(struct conn *c)
{
    struct tls_stream_server *s = c->s;
    char why[REASON_MAX];
    int status = -EPROTO;
    unsigned long e = ERR_peek_error();
    if (c->verify_reason[0]) {
        status = -EACCES;
        snprintf(why, sizeof why, "%s", c->verify_reason);
        ERR_clear_error();
    } else if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
               ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        status = -EACCES;
        snprintf(why, sizeof why, "client certificate refused: %s",
                 X509_verify_cert_error_string(SSL_get_verify_result(c->ssl)));
        ERR_clear_error();
    } else {
        char ssl_why[200];
        snprintf(why, sizeof why, "TLS handshake failed: %s",
                 tls_util_ssl_reason(ssl_why, sizeof ssl_why));
    }
    tls_util_send_alert(c->wbio, (uv_stream_t *)&c->tcp);
    snprintf(c->reason, sizeof c->reason, "%s", why);
    if (status == -EACCES) {
        s->stats.refused_cert++;
        log_failure(s, c, LOG_WARN, "tls-stream-refused");
    } else {
        s->stats.handshake_failed++;
        log_failure(s, c, LOG_INFO, "tls-stream-handshake-failed");
    }
    conn_close(c, status, "%s", why);
}

static void handshake_done(struct conn *c)
{
    struct tls_stream_server *s = c->s;
    char cn[TLS_STREAM_IDENTITY_MAX - 3];
    int sv[2];

    set_timer(c, TIMER_NONE, 0);
    s->stats.handshaking--;
    c->state = CONN_OPEN;
    X509 *cert = SSL_get0_peer_certificate(c->ssl);
    if (cert && SSL_get_verify_result(c->ssl) != X509_V_OK) {
        /* Not reached while verify_cb fails the handshake; kept so that an
         * unverified certificate can never become an identity. */
        s->stats.refused_cert++;
        conn_close(c, -EACCES, "client certificate not verified");
        return;
    }
    if (cert && tls_util_subject_cn(cert, cn, sizeof cn) == 0) {
        snprintf(c->identity, sizeof c->identity, "cn=%s", cn);
        s->stats.with_cert++;
    } else {
        if (cert)
            log_ev(LOG_INFO, "tls-stream-no-cn",
                   "a verified client certificate has no printable CN: the client is anonymous",
                   { "peer", c->addr });
        snprintf(c->identity, sizeof c->identity, "tls:%s", c->addr);
    }
    /* The end of our handshake goes out before anything else. */
    if (flush_net(c) < 0)
        return;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        int err = errno;
        conn_close(c, -err, "cannot create a socketpair for %s: %s", c->addr, strerror(err));
        return;
    }
    int r = uv_pipe_open(&c->pipe, sv[1]);
    if (r < 0) {
        close(sv[0]);
        close(sv[1]);
        conn_close(c, r, "cannot use a socketpair for %s: %s", c->addr, uv_strerror(r));
        return;
    }
    c->pipe_open = 1;
    s->stats.opened++;
    log_ev(LOG_DEBUG, "tls-stream-open", NULL, { "peer", c->addr }, { "identity", c->identity },
           { "protocol", SSL_get_version(c->ssl) });
    r = s->cb(s, sv[0], c->identity);
    if (c->state != CONN_OPEN)
        return; /* closed from the callback */
    if (r < 0) {
        conn_close(c, r, "the plaintext server refused %s: %s", c->identity, strerror(-r));
        return;
    }
    /* A TLS 1.3 client's first request often came with its Finished. */
    pump_in(c);
}

static void do_handshake(struct conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        handshake_done(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        handshake_failed(c);
        return;
    }
    flush_net(c);
}

static void on_tcp_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = st->data;
    struct tls_stream_server *s = c->s;
    if (c->state == CONN_CLOSING || nread == 0)
        return;
    if (nread < 0) {
        if (nread != UV_EOF) {
            if (c->state == CONN_HANDSHAKING)
                s->stats.handshake_failed++;
            conn_close(c, (int)nread, "read from %s failed: %s", c->addr, uv_strerror((int)nread));
            return;
        }
        c->net_eof = 1;
        if (c->state == CONN_HANDSHAKING) {
            s->stats.handshake_failed++;
            conn_close(c, -ECONNRESET, "connection closed by the client during the TLS handshake");
            return;
        }
        if (c->out_done) {
            if (c->tcp_shut_done)
                conn_close(c, 0, "closed");
            else
                update_reading(c);
            return;
        }
        input_ended(c);
        update_reading(c);
        return;
    }
    if (c->out_done)
        return; /* lingering: dropped */
    if (BIO_write(c->rbio, b->base, (int)nread) != (int)nread) {
        conn_close(c, -ENOMEM, "cannot buffer %zd bytes from %s", nread, c->addr);
        return;
    }
    if (c->state == CONN_HANDSHAKING)
        do_handshake(c);
    else
        pump_in(c);
}

/* ---- accepting ---- */

static struct conn *conn_new(struct tls_stream_server *s)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->s = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_pipe_init(s->loop, &c->pipe, 0);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->pipe.data = c;
    c->timer.data = c;
    c->handles_open = 3;
    c->state = CONN_HANDSHAKING;
    snprintf(c->addr, sizeof c->addr, "?");
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->live++;
    s->stats.conns = s->live;
    s->stats.handshaking++;
    return c;
}

static int conn_start_tls(struct conn *c)
{
    SSL *ssl = SSL_new(c->s->ssl_ctx);
    BIO *rbio = BIO_new(BIO_s_mem());
    BIO *wbio = BIO_new(BIO_s_mem());
    if (ssl == NULL || rbio == NULL || wbio == NULL) {
        BIO_free(rbio);
        BIO_free(wbio);
        SSL_free(ssl);
        ERR_clear_error();
        return -ENOMEM;
    }
    /* An empty read BIO means "more later", not end of stream. */
    BIO_set_mem_eof_return(rbio, -1);
    SSL_set_bio(ssl, rbio, wbio);
    SSL_set_app_data(ssl, c);
    SSL_set_accept_state(ssl);
    c->ssl = ssl;
    c->rbio = rbio;
    c->wbio = wbio;
    return 0;
}

static void on_connection(uv_stream_t *l, int status)
{
    struct tls_stream_server *s = l->data;
    struct sockaddr_storage peer;
    int len = sizeof peer;

    if (s->closing)
        return;
    if (status < 0) {
        log_ev(LOG_WARN, "tls-stream-accept", uv_strerror(status), { "listener", s->addr });
        return;
    }
    struct conn *c = conn_new(s);
    if (c == NULL) {
        log_ev(LOG_ERROR, "tls-stream-accept", "out of memory", { "listener", s->addr });
        return;
    }
    int r = uv_accept(l, (uv_stream_t *)&c->tcp);
    if (r < 0) {
        conn_close(c, r, "accept on %s failed: %s", s->addr, uv_strerror(r));
        return;
    }
    s->stats.accepted++;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &len) == 0)
        tls_util_format_addr(&peer, c->addr, sizeof c->addr);
    if (s->live > s->max_conns || s->stats.handshaking > s->max_handshakes) {
        s->stats.refused_busy++;
        if (!s->busy_logged) {
            char lim[48];
            snprintf(lim, sizeof lim, "max %u connections, %u handshakes", s->max_conns,
                     s->max_handshakes);
            log_ev(LOG_WARN, "tls-stream-busy",
                   "connection limit reached: new connections are closed at once",
                   { "listener", s->addr }, { "limit", lim });
            s->busy_logged = 1;
        }
        conn_close(c, -EBUSY, "too many connections on %s", s->addr);
        return;
    }
    if (conn_start_tls(c) < 0) {
        conn_close(c, -ENOMEM, "out of memory for the TLS session of %s", c->addr);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    set_timer(c, TIMER_HANDSHAKE, s->handshake_timeout_ms);
    update_reading(c);
}

/* ---- the listener ---- */

static void on_listener_closed(uv_handle_t *h)
{
    struct tls_stream_server *s = h->data;
    s->listener_closed = 1;
    server_maybe_free(s);
}

static int make_ctx(SSL_CTX **out, const struct tls_stream_opts *o, char *err, size_t errlen)
{
    char why[256];
    int result = -EINVAL;
    STACK_OF(X509_NAME) *cas = NULL;
    SSL_CTX *sc = SSL_CTX_new(TLS_server_method());

    *out = NULL;
    ERR_clear_error();
    if (sc == NULL) {
        tls_util_set_err(err, errlen, "cannot create a TLS context: out of memory");
        result = -ENOMEM;
        goto out;
    }
    if (!SSL_CTX_set_min_proto_version(sc, TLS1_2_VERSION)) {
        tls_util_set_err(err, errlen, "cannot require TLS 1.2: %s",
                         tls_util_ssl_reason(why, sizeof why));
        goto out;
    }
    /* No renegotiation, no session resumption: every connection does a full
     * handshake, so its identity is always checked afresh. */
    SSL_CTX_set_options(sc, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET |
                                SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_num_tickets(sc, 0);
    SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(sc, (const unsigned char *)"tls_stream", 10);
    /* Idle connections keep no record buffers. */
    SSL_CTX_set_mode(sc, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_max_cert_list(sc, CERT_LIST_MAX);
    if (tls_util_use_cert_key(sc, o->cert_file, o->key_file, err, errlen) < 0)
        goto out;
    if (o->client_ca_file) {
        if (!SSL_CTX_load_verify_file(sc, o->client_ca_file)) {
            tls_util_set_err(err, errlen, "cannot load client CA file %s: %s", o->client_ca_file,
                             tls_util_ssl_reason(why, sizeof why));
            goto out;
        }
        /* Tells clients which CA their certificate should come from. */
        cas = SSL_load_client_CA_file(o->client_ca_file);
        if (cas == NULL) {
            tls_util_set_err(err, errlen, "no CA certificate in %s", o->client_ca_file);
            goto out;
        }
        SSL_CTX_set_client_CA_list(sc, cas);
        cas = NULL;
        /* A certificate is asked for, not required; one that is sent must
         * verify, or the handshake fails. */
        SSL_CTX_set_verify(sc, SSL_VERIFY_PEER, verify_cb);
    } else {
        SSL_CTX_set_verify(sc, SSL_VERIFY_NONE, NULL);
    }
    *out = sc;
    sc = NULL;
    result = 0;
out:
    sk_X509_NAME_pop_free(cas, X509_NAME_free);
    SSL_CTX_free(sc);
    ERR_clear_error();
    return result;
}

int tls_stream_listen(uv_loop_t *loop, const struct tls_stream_opts *opts, tls_stream_accept_cb cb,
                      void *data, struct tls_stream_server **out, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    struct tls_stream_server *s;
    SSL_CTX *sc = NULL;
    int len = sizeof addr;
    int r;

    *out = NULL;
    if (loop == NULL || opts == NULL || cb == NULL || opts->cert_file == NULL ||
        opts->key_file == NULL) {
        tls_util_set_err(err, errlen, "a loop, a callback, a certificate and a key are required");
        return -EINVAL;
    }
    if (tls_util_parse_addr(opts->host, opts->port, &addr) < 0) {
        tls_util_set_err(err, errlen, "'%s' port %d is not a numeric address and port",
                         opts->host ? opts->host : "(null)", opts->port);
        return -EINVAL;
    }
    r = make_ctx(&sc, opts, err, errlen);
    if (r < 0)
        return r;
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        SSL_CTX_free(sc);
        tls_util_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    s->loop = loop;
    s->ssl_ctx = sc;
    s->cb = cb;
    s->data = data;
    s->max_conns = opts->max_conns ? opts->max_conns : TLS_STREAM_MAX_CONNS_DEFAULT;
    s->max_handshakes =
        opts->max_handshakes ? opts->max_handshakes : TLS_STREAM_MAX_HANDSHAKES_DEFAULT;
    s->handshake_timeout_ms = opts->handshake_timeout_ms ? opts->handshake_timeout_ms
                                                         : TLS_STREAM_HANDSHAKE_TIMEOUT_DEFAULT;
    s->stall_timeout_ms =
        opts->stall_timeout_ms ? opts->stall_timeout_ms : TLS_STREAM_STALL_TIMEOUT_DEFAULT;
    s->buf_max = opts->buf_max ? opts->buf_max : TLS_STREAM_BUF_DEFAULT;
    tls_util_format_addr(&addr, s->addr, sizeof s->addr);
    tls_util_ignore_sigpipe();
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    r = uv_tcp_bind(&s->tcp, (const struct sockaddr *)&addr, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&s->tcp, LISTEN_QUEUE, on_connection);
    if (r < 0) {
        tls_util_set_err(err, errlen, "cannot listen on %s: %s", s->addr, uv_strerror(r));
        s->closing = 1;
        uv_close((uv_handle_t *)&s->tcp, on_listener_closed);
        return r;
    }
    if (uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&addr, &len) == 0) {
        tls_util_format_addr(&addr, s->addr, sizeof s->addr);
        s->port = ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                                   : ((struct sockaddr_in *)&addr)->sin_port);
    }
    *out = s;
    return 0;
}

int tls_stream_port(const struct tls_stream_server *s)
{
    return s->port;
}

const char *tls_stream_addr(const struct tls_stream_server *s)
{
    return s->addr;
}

void *tls_stream_get_data(const struct tls_stream_server *s)
{
    return s->data;
}

void tls_stream_get_stats(const struct tls_stream_server *s, struct tls_stream_stats *out)
{
    *out = s->stats;
}

void tls_stream_close(struct tls_stream_server *s, void (*on_closed)(struct tls_stream_server *s))
{
    if (s == NULL || s->closing)
        return;
    s->closing = 1;
    s->on_closed = on_closed;
    for (struct conn *c = s->conns; c; c = c->next)
        conn_close(c, -ECANCELED, "the server on %s closed", s->addr);
    uv_close((uv_handle_t *)&s->tcp, on_listener_closed);
}
