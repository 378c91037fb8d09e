/* A TLS front for a plaintext byte-stream server (such as lib/httpd's
 * external connections): it accepts TCP on a numeric address, does the TLS
 * handshake, and hands each verified client over as the plaintext end of a
 * socketpair with an identity string; then it moves the bytes both ways
 * until either side closes.
 *
 * OpenSSL runs over memory BIOs and libuv moves the ciphertext, as in
 * lib/tls.c: nothing blocks the loop. TLS 1.2 is the minimum. The server
 * presents its certificate chain and key. With a client CA, clients are
 * asked for a certificate: one that does not verify against that CA is
 * refused inside the handshake (with an alert), while a client that sends
 * none is let through as anonymous; without a client CA, no certificate is
 * asked for. Whoever consumes the plaintext decides what an anonymous
 * client may do (e.g. require a bearer token).
 *
 * Identity handed over with each connection:
 *   "cn=NAME"        a certificate verified against the client CA whose
 *                    subject's first CN is NAME (printable ASCII only);
 *   "tls:ADDR:PORT"  no certificate (or a verified one with no usable CN),
 *                    e.g. "tls:127.0.0.1:50312" or "tls:[::1]:50312".
 *
 * Limits (every input from the network is bounded):
 *   - connections (handshaking or open) at once: max_conns; beyond it a new
 *     connection is accepted and closed at once. Of these, at most
 *     max_handshakes may be handshaking;
 *   - handshake_timeout_ms from accept to a finished handshake;
 *   - buf_max bytes buffered per connection and direction (plus one TLS
 *     record, 16 KiB, towards the plaintext side, and the records'
 *     overhead towards the client): past it the module stops reading the
 *     side that sends (back-pressure), so a fast sender waits for a slow
 *     receiver instead of filling memory;
 *   - stall_timeout_ms: a client that reads none of what is queued for it
 *     for that long is dropped.
 * Idle connections are the plaintext server's business (lib/httpd drops
 * idle and slow clients and closes its end, which closes the TLS side).
 *
 * Closing: when the plaintext side closes (or half-closes) its end, the
 * client gets what was queued, then a TLS close_notify and a FIN; its
 * further input is read and dropped for up to a second so that the last
 * answer is not lost to a reset. When the client ends its side (close_notify
 * or FIN), the plaintext end sees end-of-file after the data before it.
 * When the plaintext side stops taking input (it closed while the client
 * was still sending, e.g. after answering 413), the rest of the input is
 * dropped and what it said is still delivered. Other errors on either side
 * (a reset, a TLS error, a stalled client) close both at once.
 *
 * Writes go to sockets with write(2): tls_stream_listen sets SIGPIPE to
 * SIG_IGN if it is still SIG_DFL. Everything runs on the loop thread.
 */
#ifndef TRIAD_TLS_STREAM_H
#define TRIAD_TLS_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define TLS_STREAM_MAX_CONNS_DEFAULT         64
#define TLS_STREAM_MAX_HANDSHAKES_DEFAULT    16
#define TLS_STREAM_HANDSHAKE_TIMEOUT_DEFAULT 10000 /* ms */
#define TLS_STREAM_STALL_TIMEOUT_DEFAULT     30000 /* ms */
#define TLS_STREAM_BUF_DEFAULT               ((size_t)256 * 1024)
#define TLS_STREAM_IDENTITY_MAX              80 /* "cn=" + 64 (X.509's CN bound) */

struct tls_stream_server;

/* A client passed the handshake. fd is the plaintext end of a socketpair
 * (AF_UNIX, SOCK_STREAM, close-on-exec) and belongs to the callee from now
 * on, whatever it returns. A negative return refuses the client: its TLS
 * connection is closed. Called from the loop, never from inside a
 * tls_stream_ call. lib/httpd's httpd_add_connection() fits as it is. */
typedef int (*tls_stream_accept_cb)(struct tls_stream_server *s, int fd, const char *identity);

struct tls_stream_opts {
    const char *host;           /* numeric IPv4 or IPv6 address: no DNS here */
    int port;                   /* 0: an ephemeral port, see tls_stream_port */
    const char *cert_file;      /* PEM chain, this server's certificate first */
    const char *key_file;       /* PEM, unencrypted */
    const char *client_ca_file; /* PEM CA(s) client certificates must chain to; NULL: none asked */
    unsigned max_conns;         /* 0: TLS_STREAM_MAX_CONNS_DEFAULT */
    unsigned max_handshakes;    /* 0: TLS_STREAM_MAX_HANDSHAKES_DEFAULT */
    unsigned handshake_timeout_ms; /* 0: TLS_STREAM_HANDSHAKE_TIMEOUT_DEFAULT */
    unsigned stall_timeout_ms;     /* 0: TLS_STREAM_STALL_TIMEOUT_DEFAULT */
    size_t buf_max;                /* per connection and direction; 0: TLS_STREAM_BUF_DEFAULT */
};

struct tls_stream_stats {
    uint64_t accepted;           /* TCP connections accepted */
    uint64_t refused_busy;       /* closed at once: max_conns or max_handshakes reached */
    uint64_t refused_cert;       /* a client certificate was refused in the handshake */
    uint64_t handshake_failed;   /* other failed handshakes, timeouts included */
    uint64_t handshake_timeouts; /* of which timeouts */
    uint64_t opened;             /* handed to the accept callback */
    uint64_t with_cert;          /* of which with a verified client certificate */
    uint64_t stalled;            /* dropped: the client read nothing for stall_timeout_ms */
    uint64_t bytes_in;           /* plaintext from clients */
    uint64_t bytes_out;          /* plaintext to clients */
    unsigned conns;              /* now: connections handshaking or open */
    unsigned handshaking;        /* now */
    size_t buffered_peak;        /* most bytes one connection had queued in one direction */
};

/* Loads the credentials and listens. Returns 0 and sets *out, or a
 * negative errno with err set: -EINVAL (bad arguments, or a certificate,
 * key or CA file that cannot be used: err names the file and why), or the
 * bind/listen error (-EADDRINUSE, -EADDRNOTAVAIL, -EACCES...). */
int tls_stream_listen(uv_loop_t *loop, const struct tls_stream_opts *opts, tls_stream_accept_cb cb,
                      void *data, struct tls_stream_server **out, char *err, size_t errlen);

int tls_stream_port(const struct tls_stream_server *s);
/* The bound address, "127.0.0.1:7443" or "[::1]:7443". */
const char *tls_stream_addr(const struct tls_stream_server *s);
void *tls_stream_get_data(const struct tls_stream_server *s);
void tls_stream_get_stats(const struct tls_stream_server *s, struct tls_stream_stats *out);

/* Stops listening and closes every connection at once (the plaintext ends
 * see end-of-file). on_closed (may be NULL) runs from the loop when every
 * handle is closed; s is freed after it. Safe from any callback; a second
 * call is a no-op. */
void tls_stream_close(struct tls_stream_server *s, void (*on_closed)(struct tls_stream_server *s));

#endif
