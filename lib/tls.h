/* Mutually authenticated TLS links over libuv, carrying length-prefixed
 * frames (lib/frame.h).
 *
 * OpenSSL runs over two memory BIOs; libuv moves the ciphertext on a
 * uv_tcp_t, so nothing ever blocks the loop. TLS 1.2 is the minimum and the
 * peer's certificate is always required and verified against one CA, on
 * both sides. A peer's name is checked with X509_check_host (subjectAltName
 * DNS entries, or the CN when there are none; no partial wildcards) during
 * the handshake, so a refused peer never sees an open link.
 *
 * Life of a connection: exactly one on_close per connection that a
 * function handed out (tls_connect, or an accept), whatever happened; on_open
 * before it only if the link came up. on_close runs from the close
 * callbacks of the libuv handles, i.e. never re-entrantly inside a tls_
 * call, and the memory is freed right after it returns. tls_conn_close is
 * safe from any callback; after it, sends fail with -ENOTCONN.
 *
 * On the connecting side with TLS 1.3 the handshake completes on the client
 * before the server has checked the client's certificate, so the link is
 * declared open only when the server's first post-handshake record (its
 * session ticket, which this module's servers always send) arrives: a
 * client refused by the server gets on_close, not on_open then on_close.
 *
 * Writes go to a socket with write(2): a peer that vanishes raises SIGPIPE,
 * so tls_ctx_new sets SIGPIPE to SIG_IGN if it is still SIG_DFL.
 */
#ifndef TRIAD_TLS_H
#define TRIAD_TLS_H

#include <stddef.h>
#include <uv.h>

#define TLS_WRITE_QUEUE_DEFAULT       ((size_t)4 * 1024 * 1024)
#define TLS_HANDSHAKE_TIMEOUT_DEFAULT 10000 /* ms */
#define TLS_MAX_HANDSHAKES_DEFAULT    64
#define TLS_NAME_MAX                  256

struct tls_ctx;
struct tls_conn;
struct tls_server;

/* Credentials and trust for both roles: the CA that signs every peer, and
 * this side's certificate chain and key (PEM). cert_file and key_file may
 * both be NULL for a client that presents no certificate (which servers
 * refuse: that is for tests). An encrypted key is refused, never prompted
 * for. On error *out is NULL, err says why (file names and OpenSSL's
 * reason, never key material) and -EINVAL, -ENOENT or -ENOMEM is returned.
 * Connections and servers keep what they need: the context may be freed
 * while they live. */
int tls_ctx_new(struct tls_ctx **out, const char *ca_file, const char *cert_file,
                const char *key_file, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *ctx);

struct tls_conn_opts {
    size_t frame_max;              /* cap on a frame payload, both ways; 0: FRAME_MAX_DEFAULT */
    size_t write_queue_max;        /* 0: TLS_WRITE_QUEUE_DEFAULT */
    unsigned handshake_timeout_ms; /* connect + handshake; 0: TLS_HANDSHAKE_TIMEOUT_DEFAULT */
};

struct tls_conn_cbs {
    /* The peer is verified and frames may be sent. */
    void (*on_open)(struct tls_conn *c);
    /* One whole frame; the payload is valid only during the call. */
    void (*on_frame)(struct tls_conn *c, const char *payload, size_t len);
    /* Exactly once, last. status is 0 after tls_conn_close, otherwise what
     * ended the link: -ECONNREFUSED, -ETIMEDOUT, -EACCES (the peer's
     * certificate or name was refused here), -EPROTO (TLS error, including
     * the peer refusing us), -EMSGSIZE (peer frame over the cap),
     * -ECONNRESET (peer closed), -ECANCELED (server closed), or another
     * negative errno from the socket. reason is one sentence, e.g. "peer
     * name 'dc3' does not match expected 'dc2'". c is freed afterwards. */
    void (*on_close)(struct tls_conn *c, int status, const char *reason);
};

struct tls_connect_opts {
    const char *host;        /* numeric IPv4 or IPv6 address: no DNS here */
    int port;                /* 1..65535 */
    const char *bind_host;   /* numeric source address, or NULL */
    const char *expect_name; /* the name the server's certificate must carry */
    struct tls_conn_opts conn;
};

/* Starts connecting. Returns 0 and sets *out (then on_close is due), or a
 * negative errno for bad arguments (err says why; no callback follows).
 * Socket errors, including bind and connect, arrive through on_close. data
 * is returned by tls_conn_get_data. */
int tls_connect(uv_loop_t *loop, struct tls_ctx *ctx, const struct tls_connect_opts *opts,
                const struct tls_conn_cbs *cbs, void *data, struct tls_conn **out, char *err,
                size_t errlen);

struct tls_server_opts {
    const char *host; /* numeric address to listen on */
    int port;         /* 0: an ephemeral port, see tls_server_port */
    /* NULL-terminated list of names a client certificate must match (the
     * matched entry becomes the peer name), or NULL to accept any name the
     * CA signed (the peer name is then the first DNS name, else the CN). */
    const char *const *accept_names;
    unsigned max_handshakes; /* in progress at once; 0: TLS_MAX_HANDSHAKES_DEFAULT */
    struct tls_conn_opts conn;
};

/* Listens. Each accepted connection handshakes (with the timeout) and then
 * gets cbs->on_open; the caller reads tls_conn_peer_name and may close it.
 * Every accepted connection, opened or not, gets on_close (use
 * tls_conn_opened to tell refused handshakes apart). Accepted connections
 * start with the server's data. Returns 0 or a negative errno with err set
 * (bind and listen errors such as -EADDRINUSE). */
int tls_listen(uv_loop_t *loop, struct tls_ctx *ctx, const struct tls_server_opts *opts,
               const struct tls_conn_cbs *cbs, void *data, struct tls_server **out, char *err,
               size_t errlen);
int tls_server_port(const struct tls_server *s);
void *tls_server_get_data(const struct tls_server *s);
/* Stops listening and closes connections still handshaking (-ECANCELED).
 * Open connections are the caller's and stay up. on_closed (may be NULL)
 * runs when the listener is closed; s is freed after it. */
void tls_server_close(struct tls_server *s, void (*on_closed)(struct tls_server *s));

/* Queues one frame. 0, -ENOTCONN (not open yet, or closing), -EINVAL
 * (empty), -EMSGSIZE (over frame_max), -ENOBUFS (the bytes handed to the
 * socket and not yet written, plus this frame, would exceed
 * write_queue_max; nothing is queued and the link stays up). Any other
 * error also closes the link and reaches on_close. */
int tls_conn_send(struct tls_conn *c, const void *payload, size_t len);
/* Writes bytes into the TLS stream as they are, one TLS record per 16 KiB:
 * for sending frames already encoded with frame_append in one go, and for
 * tests that need to control record boundaries or send bad frames. Same
 * errors as tls_conn_send, without the frame checks. */
int tls_conn_write_raw(struct tls_conn *c, const void *bytes, size_t len);
/* Closes now: nothing more is sent or delivered, pending writes are
 * dropped. on_close follows with status 0, from the loop. Idempotent. */
void tls_conn_close(struct tls_conn *c);

/* The verified peer name (see tls_server_opts), or NULL before it is known. */
const char *tls_conn_peer_name(const struct tls_conn *c);
/* The peer's address as "127.0.0.1:7400" or "[::1]:7400". */
const char *tls_conn_peer_addr(const struct tls_conn *c);
/* "TLSv1.3" etc. once the handshake is done, else NULL. */
const char *tls_conn_protocol(const struct tls_conn *c);
/* Whether on_open was called. */
int tls_conn_opened(const struct tls_conn *c);
/* Bytes handed to the socket and not yet written. */
size_t tls_conn_write_queued(const struct tls_conn *c);
void *tls_conn_get_data(const struct tls_conn *c);
void tls_conn_set_data(struct tls_conn *c, void *data);

#endif
