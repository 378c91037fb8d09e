/* TLS links over libuv: the OpenSSL context, the client and server
 * connection state machine over memory BIOs, peer name checks, framed
 * sends and receives, and the close path (see tls.h for the contract). */
#include "lib/tls.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "lib/frame.h"
#include "lib/log.h"
#include "lib/tls_util.h"

#define READ_CHUNK   (64 * 1024)
#define PLAIN_CHUNK  (16 * 1024)
#define REASON_MAX   320
#define ADDR_MAX     64
#define LISTEN_QUEUE 128

struct tls_ctx {
    SSL_CTX *ssl_ctx;
};

enum conn_state {
    CONN_CONNECTING,  /* client: TCP connect in progress */
    CONN_HANDSHAKING, /* TLS handshake in progress */
    CONN_CONFIRMING,  /* client, TLS 1.3: waiting for the server's first record */
    CONN_OPEN,
    CONN_CLOSING, /* uv_close called; waiting for the close callbacks */
};

struct tls_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* connect + handshake deadline */
    uv_connect_t connect_req;
    uv_loop_t *loop;
    SSL *ssl;
    BIO *rbio; /* ciphertext from the network, read by OpenSSL (owned by ssl) */
    BIO *wbio; /* ciphertext from OpenSSL, for the network (owned by ssl) */
    enum conn_state state;
    int is_server;
    int opened;
    int ticket_seen;  /* client: the server sent its post-handshake record */
    int name_checked; /* the peer's certificate passed check_peer_name */
    int silent;       /* closing after a synchronous error: no on_close */
    int handles_open; /* handles whose close callback is still due */
    int status;
    char reason[REASON_MAX];
    char verify_reason[REASON_MAX]; /* why certificate verification refused the peer */
    char peer_name[TLS_NAME_MAX];
    char peer_addr[ADDR_MAX];
    const char *const *names; /* acceptable peer names, or NULL for any */
    char *expect[2];          /* client: { expect_name, NULL } */
    struct frame_decoder dec;
    size_t frame_max;
    size_t write_queued;
    size_t write_queue_max;
    unsigned handshake_timeout_ms;
    struct tls_conn_cbs cbs;
    void *data;
    struct tls_server *server; /* accepting side, until open or closing */
    struct tls_conn *prev, *next;
    char rdbuf[READ_CHUNK];
};

struct tls_server {
    uv_tcp_t tcp;
    uv_loop_t *loop;
    SSL_CTX *ssl_ctx;
    char **names; /* NULL-terminated copy of accept_names, or NULL */
    struct tls_conn_opts conn_opts;
    struct tls_conn_cbs cbs;
    void *data;
    unsigned max_handshakes;
    unsigned handshaking;
    struct tls_conn *pending; /* connections still handshaking */
    int port;
    int closing;
    void (*on_closed)(struct tls_server *s);
    char addr[ADDR_MAX];
};

struct write_req {
    uv_write_t req;
    struct tls_conn *c;
    size_t len;
    char data[];
};

static void conn_drive(struct tls_conn *c);

/* ---- small helpers ---- */

/* ---- the context ---- */

/* The client's sign that a TLS 1.3 server accepted it (see tls.h). The
 * session itself is not kept: returning 0 leaves it to OpenSSL. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)sess;
    struct tls_conn *c = SSL_get_app_data(ssl);
    if (c)
        c->ticket_seen = 1;
    return 0;
}

static int check_peer_name(struct tls_conn *c, X509 *cert, X509_STORE_CTX *xs);

/* Runs for every certificate of the peer's chain, the leaf (depth 0) last.
 * It records why a peer was refused, and checks the leaf's name here so a
 * wrong peer is refused inside the handshake, with an alert. */
static int verify_cb(int ok, X509_STORE_CTX *xs)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_conn *c = ssl ? SSL_get_app_data(ssl) : NULL;
    if (c == NULL)
        return ok;
    if (!ok) {
        if (c->verify_reason[0] == '\0') {
            char who[TLS_NAME_MAX] = "";
            X509 *cert = X509_STORE_CTX_get_current_cert(xs);
            if (cert)
                tls_util_cert_name(cert, who, sizeof who);
            snprintf(c->verify_reason, sizeof c->verify_reason,
                     "certificate verify failed: %s (certificate '%s', depth %d)",
                     X509_verify_cert_error_string(X509_STORE_CTX_get_error(xs)), who,
                     X509_STORE_CTX_get_error_depth(xs));
        }
        return 0;
    }
    if (X509_STORE_CTX_get_error_depth(xs) != 0)
        return 1;
    return check_peer_name(c, X509_STORE_CTX_get_current_cert(xs), xs);
}

static int check_peer_name(struct tls_conn *c, X509 *cert, X509_STORE_CTX *xs)
{
    char shown[TLS_NAME_MAX];
    tls_util_cert_name(cert, shown, sizeof shown);
    if (c->names == NULL) {
        if (shown[0] == '\0') {
            snprintf(c->verify_reason, sizeof c->verify_reason,
                     "peer certificate has no DNS name and no common name");
            goto refuse;
        }
        snprintf(c->peer_name, sizeof c->peer_name, "%s", shown);
        c->name_checked = 1;
        return 1;
    }
    for (size_t i = 0; c->names[i]; i++) {
        if (X509_check_host(cert, c->names[i], 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) ==
            1) {
            snprintf(c->peer_name, sizeof c->peer_name, "%s", c->names[i]);
            c->name_checked = 1;
            return 1;
        }
    }
    if (!c->is_server) {
        snprintf(c->verify_reason, sizeof c->verify_reason,
                 "peer name '%s' does not match expected '%s'", shown, c->names[0]);
    } else {
        size_t n = (size_t)snprintf(c->verify_reason, sizeof c->verify_reason,
                                    "peer name '%s' is not one of the accepted names (", shown);
        for (size_t i = 0; c->names[i] && n < sizeof c->verify_reason; i++)
            n += (size_t)snprintf(c->verify_reason + n, sizeof c->verify_reason - n, "%s%s",
                                  i ? ", " : "", c->names[i]);
        if (n < sizeof c->verify_reason)
            snprintf(c->verify_reason + n, sizeof c->verify_reason - n, ")");
    }
refuse:
    if (xs)
        X509_STORE_CTX_set_error(xs, X509_V_ERR_HOSTNAME_MISMATCH);
    return 0;
}

int tls_ctx_new(struct tls_ctx **out, const char *ca_file, const char *cert_file,
                const char *key_file, char *err, size_t errlen)
{
    char why[256];
    int result = -EINVAL;
    struct tls_ctx *ctx = NULL;
    SSL_CTX *sc = NULL;
    STACK_OF(X509_NAME) *cas = NULL;

    *out = NULL;
    ERR_clear_error();
    if (ca_file == NULL || (cert_file == NULL) != (key_file == NULL)) {
        tls_util_set_err(err, errlen, "a CA file is required, and a certificate goes with its key");
        goto out;
    }
    ctx = calloc(1, sizeof *ctx);
    sc = SSL_CTX_new(TLS_method());
    if (ctx == NULL || sc == NULL) {
        tls_util_set_err(err, errlen, "cannot create a TLS context: out of memory");
        result = -ENOMEM;
        goto out;
    }
    if (!SSL_CTX_set_min_proto_version(sc, TLS1_2_VERSION)) {
        tls_util_set_err(err, errlen, "cannot require TLS 1.2: %s",
                         tls_util_ssl_reason(why, sizeof why));
        goto out;
    }
    SSL_CTX_set_options(sc, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_default_passwd_cb(sc, tls_util_no_passphrase);
    if (!SSL_CTX_load_verify_file(sc, ca_file)) {
        tls_util_set_err(err, errlen, "cannot load CA file %s: %s", ca_file,
                         tls_util_ssl_reason(why, sizeof why));
        result = -ENOENT;
        goto out;
    }
    /* Tells clients which CA the server wants their certificate from. */
    cas = SSL_load_client_CA_file(ca_file);
    if (cas == NULL) {
        tls_util_set_err(err, errlen, "no CA certificate in %s", ca_file);
        goto out;
    }
    SSL_CTX_set_client_CA_list(sc, cas);
    cas = NULL;
    if (cert_file && tls_util_use_cert_key(sc, cert_file, key_file, err, errlen) < 0)
        goto out;
    SSL_CTX_set_verify(sc, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
    /* Sessions are never resumed; the client-side cache callback only
     * serves to notice the server's ticket, and one ticket is enough. */
    SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(sc, on_new_session);
    SSL_CTX_set_num_tickets(sc, 1);
    SSL_CTX_set_session_id_context(sc, (const unsigned char *)"triad", 5);
    tls_util_ignore_sigpipe();
    ctx->ssl_ctx = sc;
    *out = ctx;
    ctx = NULL;
    sc = NULL;
    result = 0;
out:
    sk_X509_NAME_pop_free(cas, X509_NAME_free);
    SSL_CTX_free(sc);
    free(ctx);
    ERR_clear_error();
    return result;
}

void tls_ctx_free(struct tls_ctx *ctx)
{
    if (ctx == NULL)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx);
}

/* ---- connection teardown ---- */

static void server_unlink(struct tls_conn *c)
{
    struct tls_server *s = c->server;
    if (s == NULL)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->pending = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    s->handshaking--;
    c->server = NULL;
}

static void conn_free(struct tls_conn *c)
{
    SSL_free(c->ssl);
    frame_decoder_free(&c->dec);
    free(c->expect[0]);
    free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct tls_conn *c = h->data;
    if (--c->handles_open > 0)
        return;
    if (!c->silent && c->cbs.on_close)
        c->cbs.on_close(c, c->status, c->reason);
    conn_free(c);
}

static void conn_start_close(struct tls_conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    c->state = CONN_CLOSING;
    server_unlink(c);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

/* Ends the link for a reason; the first reason wins and reaches on_close. */
static void conn_fail(struct tls_conn *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void conn_fail(struct tls_conn *c, int status, const char *fmt, ...)
{
    va_list ap;
    if (c->state == CONN_CLOSING)
        return;
    c->status = status;
    va_start(ap, fmt);
    vsnprintf(c->reason, sizeof c->reason, fmt, ap);
    va_end(ap);
    conn_start_close(c);
}

void tls_conn_close(struct tls_conn *c)
{
    if (c == NULL || c->state == CONN_CLOSING)
        return;
    c->status = 0;
    snprintf(c->reason, sizeof c->reason, "closed locally");
    conn_start_close(c);
}

/* ---- writing ---- */

static void on_write(uv_write_t *req, int status)
{
    struct write_req *wr = (struct write_req *)req;
    struct tls_conn *c = wr->c;
    c->write_queued -= wr->len;
    free(wr);
    if (status < 0 && c->state != CONN_CLOSING)
        conn_fail(c, status, "write to %s failed: %s", c->peer_addr, uv_strerror(status));
}

/* Hands everything OpenSSL produced to libuv. */
static int conn_flush(struct tls_conn *c)
{
    size_t n;
    while ((n = BIO_ctrl_pending(c->wbio)) > 0) {
        if (n > INT32_MAX)
            n = INT32_MAX;
        struct write_req *wr = malloc(sizeof *wr + n);
        if (wr == NULL)
            return -ENOMEM;
        int got = BIO_read(c->wbio, wr->data, (int)n);
        if (got <= 0) {
            free(wr);
            return -EIO;
        }
        wr->c = c;
        wr->len = (size_t)got;
        uv_buf_t b = uv_buf_init(wr->data, (unsigned)got);
        int r = uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
        if (r < 0) {
            free(wr);
            return r;
        }
        c->write_queued += wr->len;
    }
    return 0;
}

static void conn_flush_or_fail(struct tls_conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    int r = conn_flush(c);
    if (r < 0)
        conn_fail(c, r, "write to %s failed: %s", c->peer_addr, uv_strerror(r));
}

static void flush_alert(struct tls_conn *c)
{
    tls_util_send_alert(c->wbio, (uv_stream_t *)&c->tcp);
}

static int conn_write_plain(struct tls_conn *c, const void *p, size_t len)
{
    char why[256];
    size_t written = 0;
    if (c->state != CONN_OPEN)
        return -ENOTCONN;
    if (len > c->write_queue_max || c->write_queued > c->write_queue_max - len)
        return -ENOBUFS;
    ERR_clear_error();
    if (SSL_write_ex(c->ssl, p, len, &written) != 1 || written != len) {
        conn_fail(c, -EPROTO, "TLS write failed: %s", tls_util_ssl_reason(why, sizeof why));
        return -EPROTO;
    }
    int r = conn_flush(c);
    if (r < 0) {
        conn_fail(c, r, "write to %s failed: %s", c->peer_addr, uv_strerror(r));
        return r;
    }
    return 0;
}

int tls_conn_send(struct tls_conn *c, const void *payload, size_t len)
{
    unsigned char hdr[FRAME_HDR_LEN];
    if (c->state != CONN_OPEN)
        return -ENOTCONN;
    int r = frame_header(hdr, len, c->frame_max);
    if (r < 0)
        return r;
    /* One buffer, so that a small frame is one TLS record. */
    char *frame = malloc(len + FRAME_HDR_LEN);
    if (frame == NULL)
        return -ENOMEM;
    memcpy(frame, hdr, FRAME_HDR_LEN);
    memcpy(frame + FRAME_HDR_LEN, payload, len);
    r = conn_write_plain(c, frame, len + FRAME_HDR_LEN);
    free(frame);
    return r;
}

int tls_conn_write_raw(struct tls_conn *c, const void *bytes, size_t len)
{
    if (c->state != CONN_OPEN)
        return -ENOTCONN;
    if (len == 0)
        return -EINVAL;
    return conn_write_plain(c, bytes, len);
}

/* ---- reading and the handshake ---- */

static void conn_open(struct tls_conn *c)
{
    uv_timer_stop(&c->timer);
    server_unlink(c);
    c->state = CONN_OPEN;
    c->opened = 1;
    /* The end of the handshake goes out before the caller can close. */
    conn_flush_or_fail(c);
    if (c->state == CONN_OPEN && c->cbs.on_open)
        c->cbs.on_open(c);
}

static int on_frame_decoded(void *arg, const char *payload, size_t len)
{
    struct tls_conn *c = arg;
    if (c->cbs.on_frame)
        c->cbs.on_frame(c, payload, len);
    /* Closed from inside the callback: deliver nothing more. */
    return c->state == CONN_CLOSING ? 1 : 0;
}

/* The handshake failed: say why, as precisely as we know. */
static void handshake_failed(struct tls_conn *c)
{
    char why[256];
    unsigned long e = ERR_peek_error();
    if (c->verify_reason[0]) {
        ERR_clear_error();
        flush_alert(c);
        conn_fail(c, -EACCES, "%s", c->verify_reason);
        return;
    }
    if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
        (ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE ||
         ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED)) {
        long v = SSL_get_verify_result(c->ssl);
        tls_util_ssl_reason(why, sizeof why);
        flush_alert(c);
        if (v != X509_V_OK)
            conn_fail(c, -EACCES, "certificate verify failed: %s",
                      X509_verify_cert_error_string(v));
        else
            conn_fail(c, -EACCES, "TLS handshake failed: %s", why);
        return;
    }
    tls_util_ssl_reason(why, sizeof why);
    flush_alert(c);
    conn_fail(c, -EPROTO, "TLS handshake failed: %s", why);
}

/* The handshake is done: make sure the peer really was verified, then open
 * (or, as a TLS 1.3 client, wait for the server to confirm). */
static void handshake_done(struct tls_conn *c)
{
    X509 *cert = SSL_get0_peer_certificate(c->ssl);
    if (cert == NULL) {
        conn_fail(c, -EACCES, "peer presented no certificate");
        return;
    }
    if (SSL_get_verify_result(c->ssl) != X509_V_OK) {
        conn_fail(c, -EACCES, "certificate verify failed: %s",
                  X509_verify_cert_error_string(SSL_get_verify_result(c->ssl)));
        return;
    }
    if (!c->name_checked && !check_peer_name(c, cert, NULL)) {
        conn_fail(c, -EACCES, "%s", c->verify_reason);
        return;
    }
    if (!c->is_server && SSL_version(c->ssl) >= TLS1_3_VERSION && !c->ticket_seen) {
        c->state = CONN_CONFIRMING;
        return;
    }
    conn_open(c);
}

static void read_records(struct tls_conn *c)
{
    char plain[PLAIN_CHUNK];
    char why[256] = "";
    while (c->state == CONN_CONFIRMING || c->state == CONN_OPEN) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, plain, sizeof plain);
        /* Read the outcome now: any later SSL call (a send from on_open)
         * resets what SSL_get_error looks at. */
        int e = n > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_SSL || e == SSL_ERROR_SYSCALL)
            tls_util_ssl_reason(why, sizeof why);
        /* Application data also proves the server accepted us. */
        if (c->state == CONN_CONFIRMING && (c->ticket_seen || n > 0)) {
            conn_open(c);
            if (c->state != CONN_OPEN)
                return;
        }
        if (n > 0) {
            int r = frame_decoder_feed(&c->dec, plain, (size_t)n, on_frame_decoded, c);
            if (r > 0)
                return;
            if (r < 0) {
                conn_fail(c, r, "%s", frame_decoder_strerror(&c->dec, why, sizeof why));
                return;
            }
            continue;
        }
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return;
        if (e == SSL_ERROR_ZERO_RETURN) {
            conn_fail(c, -ECONNRESET, "peer closed the TLS session");
            return;
        }
        if (e != SSL_ERROR_SSL && e != SSL_ERROR_SYSCALL)
            snprintf(why, sizeof why, "unexpected TLS state %d", e);
        if (c->state == CONN_CONFIRMING)
            conn_fail(c, -EPROTO, "TLS handshake failed: %s", why);
        else
            conn_fail(c, -EPROTO, "TLS error: %s", why);
        return;
    }
}

static void conn_drive(struct tls_conn *c)
{
    if (c->state == CONN_HANDSHAKING) {
        ERR_clear_error();
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                handshake_failed(c);
                return;
            }
        } else {
            handshake_done(c);
        }
    }
    if (c->state == CONN_CONFIRMING || c->state == CONN_OPEN)
        read_records(c);
    conn_flush_or_fail(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct tls_conn *c = h->data;
    (void)suggested;
    *b = uv_buf_init(c->rdbuf, sizeof c->rdbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct tls_conn *c = s->data;
    if (c->state == CONN_CLOSING || nread == 0)
        return;
    if (nread < 0) {
        if (nread != UV_EOF)
            conn_fail(c, (int)nread, "read from %s failed: %s", c->peer_addr,
                      uv_strerror((int)nread));
        else if (c->state != CONN_OPEN)
            conn_fail(c, -ECONNRESET, "connection closed by peer during the TLS handshake");
        else if (frame_decoder_pending(&c->dec))
            conn_fail(c, -ECONNRESET, "connection closed by peer in the middle of a frame");
        else
            conn_fail(c, -ECONNRESET, "connection closed by peer");
        return;
    }
    if (BIO_write(c->rbio, b->base, (int)nread) != (int)nread) {
        conn_fail(c, -ENOMEM, "cannot buffer %zd bytes from %s", nread, c->peer_addr);
        return;
    }
    conn_drive(c);
}

static void on_timeout(uv_timer_t *t)
{
    struct tls_conn *c = t->data;
    if (c->state == CONN_CONNECTING)
        conn_fail(c, -ETIMEDOUT, "connect to %s timed out after %u ms", c->peer_addr,
                  c->handshake_timeout_ms);
    else
        conn_fail(c, -ETIMEDOUT, "TLS handshake with %s timed out after %u ms", c->peer_addr,
                  c->handshake_timeout_ms);
}

static void start_tls(struct tls_conn *c)
{
    uv_tcp_nodelay(&c->tcp, 1);
    int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (r < 0) {
        conn_fail(c, r, "read from %s failed: %s", c->peer_addr, uv_strerror(r));
        return;
    }
    c->state = CONN_HANDSHAKING;
    conn_drive(c);
}

/* A connection with both handles initialised; closing it is the only way
 * to free it from here on. */
static struct tls_conn *conn_new(uv_loop_t *loop, SSL_CTX *sc, const struct tls_conn_opts *o,
                                 const struct tls_conn_cbs *cbs, void *data, int is_server)
{
    struct tls_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->ssl = SSL_new(sc);
    BIO *rbio = BIO_new(BIO_s_mem());
    BIO *wbio = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || rbio == NULL || wbio == NULL) {
        BIO_free(rbio);
        BIO_free(wbio);
        SSL_free(c->ssl);
        free(c);
        ERR_clear_error();
        return NULL;
    }
    /* An empty read BIO means "more later", not end of stream. */
    BIO_set_mem_eof_return(rbio, -1);
    SSL_set_bio(c->ssl, rbio, wbio);
    c->rbio = rbio;
    c->wbio = wbio;
    SSL_set_app_data(c->ssl, c);
    if (is_server)
        SSL_set_accept_state(c->ssl);
    else
        SSL_set_connect_state(c->ssl);
    c->loop = loop;
    c->is_server = is_server;
    c->cbs = *cbs;
    c->data = data;
    c->frame_max = o->frame_max ? o->frame_max : FRAME_MAX_DEFAULT;
    if (c->frame_max > FRAME_MAX_LIMIT)
        c->frame_max = FRAME_MAX_LIMIT;
    c->write_queue_max = o->write_queue_max ? o->write_queue_max : TLS_WRITE_QUEUE_DEFAULT;
    c->handshake_timeout_ms =
        o->handshake_timeout_ms ? o->handshake_timeout_ms : TLS_HANDSHAKE_TIMEOUT_DEFAULT;
    frame_decoder_init(&c->dec, c->frame_max);
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->connect_req.data = c;
    c->handles_open = 2;
    snprintf(c->peer_addr, sizeof c->peer_addr, "?");
    return c;
}

/* ---- client ---- */

static void on_connect(uv_connect_t *req, int status)
{
    struct tls_conn *c = req->data;
    if (c->state == CONN_CLOSING)
        return;
    if (status < 0) {
        conn_fail(c, status, "connect to %s failed: %s", c->peer_addr, uv_strerror(status));
        return;
    }
    start_tls(c);
}

int tls_connect(uv_loop_t *loop, struct tls_ctx *ctx, const struct tls_connect_opts *opts,
                const struct tls_conn_cbs *cbs, void *data, struct tls_conn **out, char *err,
                size_t errlen)
{
    struct sockaddr_storage dst, src;
    struct tls_conn *c;
    int r;

    *out = NULL;
    if (ctx == NULL || opts == NULL || cbs == NULL) {
        tls_util_set_err(err, errlen, "missing context, options or callbacks");
        return -EINVAL;
    }
    if (opts->port <= 0 || tls_util_parse_addr(opts->host, opts->port, &dst) < 0) {
        tls_util_set_err(err, errlen, "'%s' port %d is not a numeric address and port",
                         opts->host ? opts->host : "(null)", opts->port);
        return -EINVAL;
    }
    if (opts->bind_host && tls_util_parse_addr(opts->bind_host, 0, &src) < 0) {
        tls_util_set_err(err, errlen, "source address '%s' is not a numeric address",
                         opts->bind_host);
        return -EINVAL;
    }
    if (opts->expect_name == NULL || opts->expect_name[0] == '\0') {
        tls_util_set_err(err, errlen, "an expected peer name is required");
        return -EINVAL;
    }
    c = conn_new(loop, ctx->ssl_ctx, &opts->conn, cbs, data, 0);
    if (c == NULL) {
        tls_util_set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    c->expect[0] = strdup(opts->expect_name);
    if (c->expect[0] == NULL) {
        tls_util_set_err(err, errlen, "out of memory");
        c->silent = 1;
        conn_start_close(c);
        return -ENOMEM;
    }
    c->names = (const char *const *)c->expect;
    tls_util_format_addr(&dst, c->peer_addr, sizeof c->peer_addr);
    c->state = CONN_CONNECTING;
    *out = c;
    /* From here on, failures are the socket's and arrive via on_close. */
    uv_timer_start(&c->timer, on_timeout, c->handshake_timeout_ms, 0);
    if (opts->bind_host) {
        r = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&src, 0);
        if (r < 0) {
            conn_fail(c, r, "bind to source address %s failed: %s", opts->bind_host,
                      uv_strerror(r));
            return 0;
        }
    }
    r = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&dst, on_connect);
    if (r < 0)
        conn_fail(c, r, "connect to %s failed: %s", c->peer_addr, uv_strerror(r));
    return 0;
}

/* ---- server ---- */

static void on_connection(uv_stream_t *l, int status)
{
    struct tls_server *s = l->data;
    struct sockaddr_storage peer;
    int len = sizeof peer;

    if (s->closing)
        return;
    if (status < 0) {
        log_warn("tls: accept on %s failed: %s", s->addr, uv_strerror(status));
        return;
    }
    struct tls_conn *c = conn_new(s->loop, s->ssl_ctx, &s->conn_opts, &s->cbs, s->data, 1);
    if (c == NULL) {
        log_error("tls: out of memory accepting a connection on %s", s->addr);
        return;
    }
    c->names = (const char *const *)s->names;
    c->state = CONN_HANDSHAKING;
    c->server = s;
    c->next = s->pending;
    if (s->pending)
        s->pending->prev = c;
    s->pending = c;
    s->handshaking++;
    int r = uv_accept(l, (uv_stream_t *)&c->tcp);
    if (r < 0) {
        conn_fail(c, r, "accept on %s failed: %s", s->addr, uv_strerror(r));
        return;
    }
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &len) == 0)
        tls_util_format_addr(&peer, c->peer_addr, sizeof c->peer_addr);
    if (s->handshaking > s->max_handshakes) {
        conn_fail(c, -EBUSY, "too many TLS handshakes in progress on %s (%u)", s->addr,
                  s->max_handshakes);
        return;
    }
    uv_timer_start(&c->timer, on_timeout, c->handshake_timeout_ms, 0);
    start_tls(c);
}

static void server_free(struct tls_server *s)
{
    if (s->names) {
        for (size_t i = 0; s->names[i]; i++)
            free(s->names[i]);
        free(s->names);
    }
    SSL_CTX_free(s->ssl_ctx);
    free(s);
}

static void on_server_closed(uv_handle_t *h)
{
    struct tls_server *s = h->data;
    if (s->on_closed)
        s->on_closed(s);
    server_free(s);
}

static int copy_names(struct tls_server *s, const char *const *names)
{
    size_t n = 0;
    if (names == NULL)
        return 0;
    while (names[n])
        n++;
    s->names = calloc(n + 1, sizeof *s->names);
    if (s->names == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        s->names[i] = strdup(names[i]);
        if (s->names[i] == NULL)
            return -ENOMEM;
    }
    return 0;
}

int tls_listen(uv_loop_t *loop, struct tls_ctx *ctx, const struct tls_server_opts *opts,
               const struct tls_conn_cbs *cbs, void *data, struct tls_server **out, char *err,
               size_t errlen)
{
    struct sockaddr_storage addr;
    struct tls_server *s;
    int len = sizeof addr;
    int r;

    *out = NULL;
    if (ctx == NULL || opts == NULL || cbs == NULL) {
        tls_util_set_err(err, errlen, "missing context, options or callbacks");
        return -EINVAL;
    }
    if (SSL_CTX_get0_certificate(ctx->ssl_ctx) == NULL) {
        tls_util_set_err(err, errlen, "a TLS server needs a certificate and key");
        return -EINVAL;
    }
    if (tls_util_parse_addr(opts->host, opts->port, &addr) < 0) {
        tls_util_set_err(err, errlen, "'%s' port %d is not a numeric address and port",
                         opts->host ? opts->host : "(null)", opts->port);
        return -EINVAL;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL || copy_names(s, opts->accept_names) < 0) {
        tls_util_set_err(err, errlen, "out of memory");
        if (s)
            server_free(s);
        return -ENOMEM;
    }
    SSL_CTX_up_ref(ctx->ssl_ctx);
    s->ssl_ctx = ctx->ssl_ctx;
    s->loop = loop;
    s->conn_opts = opts->conn;
    s->cbs = *cbs;
    s->data = data;
    s->max_handshakes = opts->max_handshakes ? opts->max_handshakes : TLS_MAX_HANDSHAKES_DEFAULT;
    tls_util_format_addr(&addr, s->addr, sizeof s->addr);
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    r = uv_tcp_bind(&s->tcp, (const struct sockaddr *)&addr, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&s->tcp, LISTEN_QUEUE, on_connection);
    if (r < 0) {
        tls_util_set_err(err, errlen, "cannot listen on %s: %s", s->addr, uv_strerror(r));
        s->closing = 1;
        uv_close((uv_handle_t *)&s->tcp, on_server_closed);
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

int tls_server_port(const struct tls_server *s)
{
    return s->port;
}

void *tls_server_get_data(const struct tls_server *s)
{
    return s->data;
}

void tls_server_close(struct tls_server *s, void (*on_closed)(struct tls_server *s))
{
    if (s == NULL || s->closing)
        return;
    s->closing = 1;
    s->on_closed = on_closed;
    while (s->pending)
        conn_fail(s->pending, -ECANCELED, "server on %s closed during the handshake", s->addr);
    uv_close((uv_handle_t *)&s->tcp, on_server_closed);
}

/* ---- accessors ---- */

const char *tls_conn_peer_name(const struct tls_conn *c)
{
    return c->name_checked ? c->peer_name : NULL;
}

const char *tls_conn_peer_addr(const struct tls_conn *c)
{
    return c->peer_addr;
}

const char *tls_conn_protocol(const struct tls_conn *c)
{
    return SSL_is_init_finished(c->ssl) ? SSL_get_version(c->ssl) : NULL;
}

int tls_conn_opened(const struct tls_conn *c)
{
    return c->opened;
}

size_t tls_conn_write_queued(const struct tls_conn *c)
{
    return c->write_queued;
}

void *tls_conn_get_data(const struct tls_conn *c)
{
    return c->data;
}

void tls_conn_set_data(struct tls_conn *c, void *data)
{
    c->data = data;
}
