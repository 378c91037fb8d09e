/* Non-blocking HTTP(S) client on a libuv loop (libcurl multi-socket API).
 *
 * One http_client per loop owns a CURLM, one uv_poll per socket curl asks
 * about and one uv_timer for curl's timeouts. Each request is one easy
 * handle; nothing blocks the loop and no thread is started per request.
 *
 * Everything from the network is capped: the response body (the transfer is
 * aborted as soon as it would exceed the cap, never buffered past it), the
 * response headers, the time (total and connect timeouts are always set).
 * Redirects are not followed unless asked, proxies from the environment are
 * ignored, only http and https are allowed.
 *
 * Lifetime, libuv style:
 *   - http_client_new() / http_client_close(): close cancels every request
 *     (each callback runs with -ECANCELED), closes the handles and calls
 *     close_cb once all of them are closed; the client is freed after that.
 *   - http_request_start() errors are returned, never called back. Once it
 *     returns 0 the callback runs exactly once, from a loop callback (never
 *     from inside http_request_start or http_request_cancel).
 *   - A request handle stays valid until its callback returns.
 *
 * Name resolution: URLs whose host is an IP literal, or requests with
 * connect_to set to an IP literal, never resolve a name. Other host names go
 * through libcurl's resolver, which on Debian runs getaddrinfo in a short
 * helper thread per lookup (the loop is still not blocked). Probes pin
 * addresses with connect_to.
 *
 * curl_global_init: http_global_init() calls it once. main() should call
 * http_global_init() before starting any thread; http_client_new() calls it
 * too (a no-op when already done) so tests and tools need not.
 */
#ifndef TRIAD_HTTP_CLIENT_H
#define TRIAD_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#define HTTP_DEFAULT_TIMEOUT_MS 10000
#define HTTP_DEFAULT_MAX_BODY   (1024 * 1024)
#define HTTP_DEFAULT_MAX_HEADER (32 * 1024)
#define HTTP_DETAIL_MAX         256
#define HTTP_MAX_KEEPALIVE_S    3600
/* Idle kept connections per client unless http_client_set_max_idle says. */
#define HTTP_DEFAULT_MAX_IDLE 64

struct http_client;
struct http_request;

struct http_request_opts {
    const char *method; /* "GET" when NULL; "HEAD" sends no body request */
    const char *url;    /* http:// or https:// */
    /* Extra request headers, each "Name: value". */
    const char *const *headers;
    size_t n_headers;
    const void *body; /* request body (copied), may be NULL */
    size_t body_len;

    uint32_t timeout_ms;         /* whole transfer; 0: HTTP_DEFAULT_TIMEOUT_MS */
    uint32_t connect_timeout_ms; /* TCP + TLS handshake; 0 or larger: timeout_ms */
    size_t max_body;             /* 0: HTTP_DEFAULT_MAX_BODY */
    size_t max_header;           /* all response header bytes; 0: HTTP_DEFAULT_MAX_HEADER */
    int expect_status;           /* 0: any status is a success; else mismatch fails */
    int max_redirects;           /* 0: redirects are returned, not followed */

    /* TLS. ca_file replaces the system CA store (only that file is trusted). */
    const char *ca_file;
    int insecure;            /* 1: do not verify the peer certificate nor its name */
    const char *client_cert; /* PEM file */
    const char *client_key;  /* PEM file */
    /* The same from memory (PEM text, copied; e.g. a kubeconfig's *-data
     * fields): each replaces its file option, which must then be NULL. */
    const void *ca_pem;
    size_t ca_pem_len;
    const void *client_cert_pem;
    size_t client_cert_pem_len;
    const void *client_key_pem;
    size_t client_key_pem_len;

    /* At most one of these. basic_auth is "user:password" (read by the caller). */
    const char *bearer_token;
    const char *basic_auth;

    /* "host:port" (IPv6 as "[addr]:port"): connect there while the URL's name
     * is still used for SNI, Host and certificate verification. */
    const char *connect_to;
    /* Numeric source address to bind before connecting ("127.0.2.1"). */
    const char *local_addr;
    /* Talk HTTP over this Unix socket instead of TCP (the URL's host is then
     * only the Host header): the daemon's control socket. */
    const char *unix_socket;

    /* 0 (the default): a fresh connection for this request, closed when it
     * ends. N: the connection may stay open and serve later requests that
     * also set keepalive_s, to the same target with the same TLS settings,
     * until N seconds after it was opened (at most HTTP_MAX_KEEPALIVE_S);
     * then a fresh one is opened, so the connect, the TLS handshake and the
     * peer certificate are checked again at least every N seconds. A kept
     * connection that the server has closed is replaced transparently. */
    uint32_t keepalive_s;
};

struct http_response {
    /* 0, or a negative errno:
     *   -ETIMEDOUT        total or connect timeout
     *   -ECONNREFUSED, -EHOSTUNREACH, -ENETUNREACH, ...  connect failed
     *   -ECONNRESET       connection reset or closed without an answer
     *   -EMSGSIZE         body or headers exceed their cap
     *   -EKEYREJECTED     TLS peer certificate or name not verified
     *   -EPROTO           TLS handshake or HTTP protocol error
     *   -EREMOTEIO        status differs from expect_status
     *   -EADDRNOTAVAIL    local_addr cannot be bound
     *   -ELOOP            too many redirects
     *   -ECANCELED        cancelled (http_request_cancel, http_client_close)
     *   -EINVAL, -ENOMEM, -EIO  bad URL or option, out of memory, other */
    int result;
    const char *detail; /* human-readable, e.g. "connect timeout after 1000 ms" */
    int curl_code;      /* CURLcode, for debugging */
    long status;        /* HTTP status, 0 when none was received */
    const char *body;   /* NUL-terminated, at most max_body bytes (a prefix on -EMSGSIZE) */
    size_t body_len;
    const char *content_type; /* "" when none */
    int64_t total_us;         /* start to end */
    int64_t connect_us;       /* start to TCP connected, 0 if never */
    int64_t tls_us;           /* start to TLS handshake done, 0 if none */
    int reused;               /* 1: sent on a kept connection (no connect, no handshake) */
    /* Peer (leaf) certificate, HTTPS only; also set when verification failed. */
    int has_cert;
    time_t cert_not_after;
    int cert_days_left; /* floor((notAfter - now) / 1 day); negative when expired */
};

typedef void (*http_done_cb)(struct http_request *req, const struct http_response *res, void *arg);
typedef void (*http_close_cb)(void *arg);

/* Once per process (curl_global_init); thread-unsafe, call from main. */
int http_global_init(void);
/* Optional at exit, after every client is closed (keeps valgrind quiet). */
void http_global_cleanup(void);

int http_client_new(uv_loop_t *loop, struct http_client **out);
/* Cancel all requests and release everything; close_cb (may be NULL) runs
 * when the last handle is closed. Safe to call from a request callback. */
void http_client_close(struct http_client *c, http_close_cb close_cb, void *arg);
/* At most this many idle kept connections (keepalive_s) stay open: when
 * one more would be kept, curl closes one of them. Each holds a file
 * descriptor. */
void http_client_set_max_idle(struct http_client *c, size_t n);
/* Requests in flight (started, callback not yet returned). */
size_t http_client_active(const struct http_client *c);

/* Start a request; 0 or a negative errno (-EINVAL with a logged reason,
 * -ENOMEM, -ESHUTDOWN when the client is closing). *out (may be NULL)
 * receives the handle for http_request_cancel. */
int http_request_start(struct http_client *c, const struct http_request_opts *o, http_done_cb cb,
                       void *arg, struct http_request **out);
/* Stop the transfer now; the callback runs on the next loop iteration with
 * -ECANCELED. No-op when the result is already decided. */
void http_request_cancel(struct http_request *req);

#endif
