/* A small HTTP/1.1 server for the control API and /metrics, on the libuv
 * loop.
 *
 * The protocol work (request parsing, keep-alive, chunked bodies, limits) is
 * GNU libmicrohttpd's (MHD 0.9.75): DESIGN.md wants a maintained parser, not
 * a hand-written one. MHD runs in its "external epoll" mode, without any
 * thread of its own: each listener is one MHD daemon whose epoll fd is
 * watched by a uv_poll, and MHD_run() is called when it is readable or when
 * the uv_timer armed from MHD_get_timeout() fires.
 *
 * Listeners (any combination):
 *   - a Unix socket at a path, with a mode and an optional group; the peer's
 *     uid/gid/pid (SO_PEERCRED) and user name are the request's identity;
 *   - a TCP socket on a numeric host and a port (0: ephemeral); the remote
 *     address is the identity;
 *   - external connections: an already-connected stream fd handed over with
 *     httpd_add_connection() and an identity string (e.g. the plaintext end
 *     of a socketpair behind our own TLS layer, identity = client cert name).
 *
 * One callback per complete request (headers and capped body). The handler
 * answers at once with httpd_respond(), or calls httpd_defer() and answers
 * later from the loop (the connection is suspended meanwhile).
 *
 * Everything runs on the loop thread; no call blocks, except the user and
 * group name lookups noted at httpd_open(). How MHD is driven, and the
 * MHD 0.9.75 behaviours worked around, are described in httpd.c.
 */
#ifndef TRIAD_HTTPD_H
#define TRIAD_HTTPD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

struct httpd;
struct httpd_request;

#define HTTPD_DEFAULT_MAX_BODY           (64u * 1024u)
#define HTTPD_DEFAULT_MAX_CONNECTIONS    128u
#define HTTPD_DEFAULT_CONN_MEMORY        (32u * 1024u)
#define HTTPD_DEFAULT_TIMEOUT_S          10u
#define HTTPD_DEFAULT_REQUEST_TIMEOUT_MS 30000u
#define HTTPD_DEFAULT_UNIX_MODE          0660u
#define HTTPD_IDENTITY_MAX               256 /* bytes, with the NUL */

/* Called once per complete request. Before returning it must either call
 * httpd_respond() or httpd_defer(); otherwise the client gets a 500. */
typedef void (*httpd_handler_cb)(struct httpd_request *req);
/* A deferred request is gone without an answer (the server is closing).
 * The handle is invalid once this returns. */
typedef void (*httpd_abort_cb)(struct httpd_request *req);
typedef void (*httpd_close_cb)(struct httpd *s);

struct httpd_config {
    /* Unix listener; NULL for none. The file is created (a stale socket
     * file nobody answers on is replaced; anything else is an error) and
     * removed again by httpd_close(). */
    const char *unix_path;
    unsigned unix_mode;     /* 0: HTTPD_DEFAULT_UNIX_MODE (0660) */
    const char *unix_group; /* group name or number; NULL: the process's */
    /* TCP listener; NULL for none. A numeric IPv4/IPv6 address (no DNS:
     * resolving would block). Port 0 picks one: see httpd_tcp_port(). */
    const char *tcp_host;
    uint16_t tcp_port;
    /* Accept httpd_add_connection(). */
    int external;
    /* Limits; 0 picks the default. Connections and memory are per
     * listener. conn_memory is MHD's per-connection pool: the request line
     * and headers must fit in it (else 431 or 414). timeout_s is MHD's idle
     * timeout in whole seconds: a client silent that long is dropped.
     * request_timeout_ms bounds the time to receive a whole request (from
     * the connection's start or the previous answer), so that a client
     * trickling bytes cannot hold a connection either. */
    /* A larger body gets 413 and is never buffered: at once when its
     * Content-Length says so (the body is not read at all); a chunked one
     * is read and dropped, then answered 413, or cut off without an answer
     * once 1 MiB past the cap. */
    size_t max_body;
    /* Beyond it, MHD stops accepting: new connections wait in the listen
     * backlog; httpd_add_connection() fails with -EMFILE. */
    unsigned max_connections;
    size_t conn_memory;
    unsigned timeout_s;
    unsigned request_timeout_ms;
    httpd_handler_cb handler;
    void *data; /* copied to httpd->data */
};

enum httpd_transport { HTTPD_UNIX = 1, HTTPD_TCP, HTTPD_EXTERNAL };

/* Who is on the other end of a connection. identity is, for UNIX, the
 * user name or "uid:N"; for TCP, "addr:port" or "[addr]:port"; for
 * EXTERNAL, the string given to httpd_add_connection(). */
struct httpd_peer {
    enum httpd_transport transport;
    int has_cred; /* UNIX: SO_PEERCRED worked */
    uid_t uid;    /* valid if has_cred */
    gid_t gid;
    pid_t pid;
    char user[64]; /* UNIX: name of uid, "" if unknown */
    char identity[HTTPD_IDENTITY_MAX];
};

struct httpd_request {
    /* Read-only for the handler; valid until the request is answered. */
    const char *method;
    const char *path;          /* percent-decoded, without the query */
    const char *query;         /* raw query string after '?', "" if none */
    const char *authorization; /* NULL when absent */
    const char *content_type;  /* NULL when absent */
    const char *accept;        /* NULL when absent */
    const char *body;          /* NUL-terminated; "" when there is none */
    size_t body_len;
    const struct httpd_peer *peer;
    struct httpd *server;
    void *data; /* free for the handler's use */
};

struct httpd_stats {
    uint64_t connections_total;
    uint64_t connections_open;
    uint64_t requests_total;         /* handler calls */
    uint64_t too_large_total;        /* 413 answers */
    uint64_t request_timeouts_total; /* connections dropped by request_timeout_ms */
    uint64_t deferred_open;          /* deferred requests not answered yet */
};

struct httpd {
    void *data;
    /* private */
    struct httpd_priv *priv;
};

/* Creates the server and starts listening. The struct is allocated here
 * and freed after httpd_close() (its cb gets the last look at it).
 * Errors: -EINVAL (bad config: no listener, no handler, non-numeric host),
 * -ENAMETOOLONG, -EADDRINUSE (a live server answers on unix_path, or the
 * TCP port is taken), -EEXIST (unix_path exists and is no socket),
 * -ENOENT (unknown group), -EPROTO (MHD refused to start), or another
 * -errno from socket calls. The user/group lookups (getgrnam_r here,
 * getpwuid_r per Unix connection) go through NSS; with files-only NSS
 * they do not wait on anything. */
int httpd_open(uv_loop_t *loop, const struct httpd_config *cfg, struct httpd **out);

/* Stops listening, drops every connection (deferred requests are first
 * handed to their abort callbacks), unlinks the Unix socket file and frees
 * everything; cb (may be NULL) runs when done, from the loop. Safe to call
 * from a handler. Calling it twice is a no-op. */
void httpd_close(struct httpd *s, httpd_close_cb cb);

/* The bound TCP port, 0 when there is no TCP listener. */
uint16_t httpd_tcp_port(const struct httpd *s);

/* Hands an already-connected stream socket to the server, with the
 * identity its requests carry (truncated to HTTPD_IDENTITY_MAX - 1).
 * Ownership of fd passes to the server in every case, even on error.
 * Errors: -ENOTSUP (cfg.external not set), -ESHUTDOWN (closing),
 * -EMFILE (connection limit), -ENOMEM. */
int httpd_add_connection(struct httpd *s, int fd, const char *identity);

void httpd_get_stats(const struct httpd *s, struct httpd_stats *out);

/* A query argument (decoded) or a request header (case-insensitive);
 * NULL when absent. For a key given several times, one of them. */
const char *httpd_query_get(const struct httpd_request *req, const char *key);
const char *httpd_header_get(const struct httpd_request *req, const char *name);

/* Adds a response header (e.g. WWW-Authenticate, Allow) to the answer about
 * to be given. At most 8 per request; -EMSGSIZE beyond. */
int httpd_response_header(struct httpd_request *req, const char *name, const char *value);

/* Answers the request: status, content type (NULL: none), body (copied).
 * From the handler, or later for a deferred request. The request handle is
 * invalid after a deferred request is answered. Errors: -EALREADY
 * (answered already), -ENOMEM. */
int httpd_respond(struct httpd_request *req, unsigned status, const char *content_type,
                  const char *body, size_t len);
/* An answer of unknown length made as it is sent (chunked), so that a
 * large one (/metrics of a thousand probes) never exists whole: read fills
 * at most max bytes of out and returns how many (> 0), 0 at the end, or -1
 * to abort (the connection is closed: the client sees an incomplete
 * answer). It runs on the loop, from the server, between other callbacks:
 * what it reads may have changed since the previous call. free_cb (may be
 * NULL) runs once when the answer is done with, also when this call fails
 * (-EALREADY, -ENOMEM). */
#define HTTPD_STREAM_BLOCK (32 * 1024)
typedef ssize_t (*httpd_stream_cb)(void *arg, char *out, size_t max);
typedef void (*httpd_stream_free_cb)(void *arg);
int httpd_respond_stream(struct httpd_request *req, unsigned status, const char *content_type,
                         httpd_stream_cb read, httpd_stream_free_cb free_cb, void *arg);

/* From the handler only: the answer comes later, from the loop, through
 * httpd_respond(). The connection is suspended meanwhile: no timeout
 * applies, and a client that went away is noticed only when the answer is
 * sent, so the owner should bound the wait itself. on_abort (may be NULL)
 * runs if the server closes first. */
void httpd_defer(struct httpd_request *req, httpd_abort_cb on_abort);

/* For fuzzing the request path (a libFuzzer harness calls this).
 * Runs a private loop with a server that has only the external listener,
 * feeds `data` as raw bytes through one end of a socketpair (then half-
 * closes it), answers every complete request with 200, and returns what the
 * handler saw. 0, or -errno when the harness itself could not be set up. */
struct httpd_fuzz_seen {
    int requests;        /* complete requests the handler got */
    int status;          /* status code of the first answer on the wire; 0: none */
    size_t response_len; /* bytes the server wrote back */
    char method[16];     /* of the first request, truncated */
    char path[128];
    char query[128];
    size_t body_len; /* of the first request */
};
int httpd_fuzz_feed(const void *data, size_t len, struct httpd_fuzz_seen *seen);

#endif
