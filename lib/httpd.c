/* The HTTP server: libmicrohttpd daemons driven by the libuv loop, our own
 * listening sockets, request identity, body caps and deferred answers.
 *
 * How MHD is driven (checked against the 0.9.75 header and by the tests):
 * each listener is one MHD daemon started with MHD_USE_EPOLL and without
 * MHD_USE_INTERNAL_POLLING_THREAD, i.e. "external" polling with no MHD
 * thread. MHD keeps all its sockets (listen socket, connections, and the
 * eventfd that MHD_resume_connection() signals) in one epoll set whose fd
 * MHD_get_daemon_info(MHD_DAEMON_INFO_EPOLL_FD) returns. An epoll fd is
 * itself pollable: it is readable while its set has ready events, so one
 * uv_poll on it tells us when MHD_run() has work. MHD_run() never blocks
 * here: in this mode it calls epoll_wait() with a zero timeout (seen with
 * strace, as are the EPOLLET registrations below). MHD
 * registers connections edge-triggered and remembers sockets it has not
 * drained; MHD_get_timeout() then says 0 ("run again now"), and for idle
 * connections it returns the time to the next idle timeout. So after every
 * MHD_run() we re-arm one uv_timer from MHD_get_timeout(): that covers
 * both the pending work and the timeouts.
 *
 * Why one MHD daemon per listener: MHD takes one listen socket per daemon
 * (MHD_OPTION_LISTEN_SOCKET), and knowing which daemon accepted a
 * connection tells us how to identify its peer. External connections go to
 * a daemon with no listen socket at all (MHD_USE_NO_LISTEN_SOCKET).
 *
 * Lifetimes: a struct conn (the peer identity) lives from MHD's connection
 * STARTED notification to CLOSED; a struct req from the URI callback (MHD
 * then guarantees a completion notification) to NOTIFY_COMPLETED.
 */
#include "lib/httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/log.h"

#define MAX_EXTRA_HEADERS 8
#define LISTEN_BACKLOG    128
#define QUERY_MAX         4096 /* the whole request line fits in conn_memory anyway */
/* How much of a body over the cap is read (and dropped) to be able to
 * answer 413 after it: MHD 0.9.75 can queue a response only before the
 * body (MHD_queue_response() refuses in the middle of an upload) or after
 * all of it. See on_mhd_access. */
#define DISCARD_MAX (1024u * 1024u)

enum ep_kind { EP_UNIX, EP_TCP, EP_EXT, EP_COUNT };

struct httpd_priv;

/* One MHD daemon and the two loop handles that drive it. */
struct ep {
    struct httpd_priv *p;
    enum ep_kind kind;
    struct MHD_Daemon *mhd;
    uv_poll_t poll;
    uv_timer_t timer;
    int handles;     /* poll and timer initialised */
    unsigned closes; /* connections closed, for ep_run */
};

enum req_state {
    REQ_NEW,      /* headers parsed, handler not called yet */
    REQ_BODY,     /* reading the body */
    REQ_HANDLER,  /* inside the handler */
    REQ_DEFERRED, /* suspended, waiting for httpd_respond() */
    REQ_ANSWERED, /* response built (maybe not queued yet) */
    REQ_ABORTED,  /* deferred, then given up at close */
};

struct req {
    struct httpd_request pub;
    struct ep *ep;
    struct MHD_Connection *conn;
    enum req_state state;
    char *query;
    struct buf body;
    struct MHD_Response *resp;
    unsigned status;
    int queued;
    int suspended;
    int discarding; /* body over the cap: reading it to drop it */
    size_t discarded;
    int nhdr;
    char *hdr_name[MAX_EXTRA_HEADERS];
    char *hdr_value[MAX_EXTRA_HEADERS];
    httpd_abort_cb on_abort;
    struct req *prev, *next; /* deferred list */
};

struct conn {
    struct httpd_peer peer;
    int fd;
    int reading;    /* waiting for, or reading, a request */
    uint64_t since; /* uv_now() when the current request began */
    struct conn *prev, *next;
};

struct httpd_priv {
    struct httpd pub;
    uv_loop_t *loop;
    struct httpd_config cfg; /* limits resolved; strings not kept */
    struct ep ep[EP_COUNT];
    char *unix_path; /* set once we created the file */
    dev_t unix_dev;
    ino_t unix_ino;
    uint16_t tcp_port;
    int closing;
    int open_handles;
    httpd_close_cb close_cb;
    struct req *deferred; /* suspended requests */
    struct conn *conns;
    uv_timer_t sweep; /* request deadlines */
    int sweep_on;
    int pending_fd; /* httpd_add_connection() in progress */
    const char *pending_identity;
    struct httpd_stats stats;
};

static struct httpd_priv *priv_of(const struct httpd *s)
{
    return s->priv;
}

/* ---- driving MHD from the loop ---- */

static void on_ep_timer(uv_timer_t *t);
static void finish_close(struct httpd_priv *p);

static void ep_arm(struct ep *e)
{
    if (e->p->closing || !e->handles)
        return;
    MHD_UNSIGNED_LONG_LONG ms = 0;
    if (MHD_get_timeout(e->mhd, &ms) == MHD_YES)
        uv_timer_start(&e->timer, on_ep_timer, (uint64_t)ms, 0);
    else
        uv_timer_stop(&e->timer);
}

static void ep_run(struct ep *e)
{
    if (e->p->closing)
        return;
    unsigned closes = e->closes;
    MHD_run(e->mhd);
    /* A daemon at its connection limit takes its listen socket out of its
     * epoll set, and MHD 0.9.75 puts it back only at the start of the next
     * MHD_run(), without making the epoll fd readable or shortening
     * MHD_get_timeout(): seen as a third client waiting forever once two
     * idle ones timed out (test_connection_limit). So after any close, run
     * once more. */
    if (e->closes != closes) {
        uv_timer_start(&e->timer, on_ep_timer, 0, 0);
        return;
    }
    ep_arm(e);
}

/* Run MHD soon, from the loop, not from the current call stack (which may
 * be inside MHD_run already). */
static void ep_kick(struct ep *e)
{
    if (e->p->closing || !e->handles)
        return;
    uv_timer_start(&e->timer, on_ep_timer, 0, 0);
}

static void on_ep_timer(uv_timer_t *t)
{
    ep_run(t->data);
}

static void on_ep_poll(uv_poll_t *h, int status, int events)
{
    (void)events;
    struct ep *e = h->data;
    if (status < 0)
        log_ev(LOG_WARN, "httpd-poll", "poll error on MHD's epoll fd",
               { "error", uv_strerror(status) });
    ep_run(e);
}

/* ---- MHD callbacks ---- */

__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    /* MHD tries TCP_NODELAY/TCP_CORK on sockets handed over with
     * MHD_add_connection() (it cannot tell they are not TCP) and says so
     * for every connection; on a socketpair that is expected. */
    enum log_level lvl = LOG_WARN;
    if (strstr(msg, "TCP_NODELAY") || strstr(msg, "TCP_CORK") ||
        strstr(msg, "Failed to push the data"))
        lvl = LOG_DEBUG;
    log_ev(lvl, "httpd-mhd", msg);
}

static int conn_fd(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

static struct conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* The request is in (or refused): its deadline no longer applies. */
static void request_read(struct req *r)
{
    struct conn *cn = conn_of(r->conn);
    if (cn)
        cn->reading = 0;
}

static void peer_unix(struct httpd_peer *pr, int fd)
{
    struct ucred uc;
    socklen_t len = sizeof uc;
    pr->transport = HTTPD_UNIX;
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0) {
        snprintf(pr->identity, sizeof pr->identity, "unknown");
        return;
    }
    pr->has_cred = 1;
    pr->uid = uc.uid;
    pr->gid = uc.gid;
    pr->pid = uc.pid;
    struct passwd pw, *res = NULL;
    char tmp[4096];
    if (getpwuid_r(uc.uid, &pw, tmp, sizeof tmp, &res) == 0 && res && res->pw_name)
        snprintf(pr->user, sizeof pr->user, "%s", res->pw_name);
    if (pr->user[0])
        snprintf(pr->identity, sizeof pr->identity, "%s", pr->user);
    else
        snprintf(pr->identity, sizeof pr->identity, "uid:%u", (unsigned)uc.uid);
}

static void peer_tcp(struct httpd_peer *pr, struct MHD_Connection *c)
{
    pr->transport = HTTPD_TCP;
    snprintf(pr->identity, sizeof pr->identity, "unknown");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return;
    char a[INET6_ADDRSTRLEN];
    if (ci->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)ci->client_addr;
        if (inet_ntop(AF_INET, &sin->sin_addr, a, sizeof a))
            snprintf(pr->identity, sizeof pr->identity, "%s:%u", a, ntohs(sin->sin_port));
    } else if (ci->client_addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)ci->client_addr;
        if (inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof a))
            snprintf(pr->identity, sizeof pr->identity, "[%s]:%u", a, ntohs(s6->sin6_port));
    }
}

static void on_mhd_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                              enum MHD_ConnectionNotificationCode code)
{
    struct ep *e = cls;
    struct httpd_priv *p = e->p;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        struct conn *cn = *socket_context;
        e->closes++;
        if (cn) {
            if (cn->prev)
                cn->prev->next = cn->next;
            else
                p->conns = cn->next;
            if (cn->next)
                cn->next->prev = cn->prev;
            free(cn);
            *socket_context = NULL;
            p->stats.connections_open--;
        }
        return;
    }
    struct conn *cn = calloc(1, sizeof *cn);
    if (!cn)
        return; /* requests on it are refused in on_mhd_access */
    int fd = conn_fd(c);
    switch (e->kind) {
    case EP_UNIX:
        peer_unix(&cn->peer, fd);
        break;
    case EP_TCP:
        peer_tcp(&cn->peer, c);
        break;
    default:
        cn->peer.transport = HTTPD_EXTERNAL;
        /* MHD_add_connection() notifies from inside the call; the fd check
         * guards against anything else. */
        if (p->pending_identity && fd == p->pending_fd)
            snprintf(cn->peer.identity, sizeof cn->peer.identity, "%s", p->pending_identity);
        break;
    }
    cn->fd = fd;
    cn->reading = 1;
    cn->since = uv_now(p->loop);
    cn->next = p->conns;
    if (p->conns)
        p->conns->prev = cn;
    p->conns = cn;
    *socket_context = cn;
    p->stats.connections_total++;
    p->stats.connections_open++;
}

/* Called once per request, as soon as the request line is parsed; what it
 * returns becomes the request's context, and MHD then always reports the
 * request's end through on_mhd_completed. */
static void *on_mhd_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    struct ep *e = cls;
    struct req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->ep = e;
    r->conn = c;
    r->state = REQ_NEW;
    const char *q = uri ? strchr(uri, '?') : NULL;
    size_t qlen = q ? strnlen(q + 1, QUERY_MAX) : 0;
    r->query = malloc(qlen + 1);
    if (!r->query) {
        free(r);
        return NULL;
    }
    if (qlen)
        memcpy(r->query, q + 1, qlen);
    r->query[qlen] = '\0';
    buf_init(&r->body, e->p->cfg.max_body);
    r->pub.server = &e->p->pub;
    r->pub.query = r->query;
    r->pub.body = "";
    return r;
}

static void deferred_unlink(struct httpd_priv *p, struct req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else if (p->deferred == r)
        p->deferred = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void req_free(struct req *r)
{
    if (r->resp)
        MHD_destroy_response(r->resp);
    for (int i = 0; i < r->nhdr; i++) {
        free(r->hdr_name[i]);
        free(r->hdr_value[i]);
    }
    buf_free(&r->body);
    free(r->query);
    free(r);
}

static void on_mhd_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                             enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    struct ep *e = cls;
    struct req *r = *con_cls;
    /* The next request on this connection gets its own deadline. */
    struct conn *cn = conn_of(c);
    if (cn) {
        cn->reading = 1;
        cn->since = uv_now(e->p->loop);
    }
    if (!r)
        return;
    *con_cls = NULL;
    if (r->state == REQ_DEFERRED) {
        /* Only reachable if MHD dropped a suspended request on its own. */
        deferred_unlink(e->p, r);
        e->p->stats.deferred_open--;
        if (r->on_abort)
            r->on_abort(&r->pub);
    }
    req_free(r);
}

static int respond_with(struct req *r, unsigned status, const char *ctype,
                        struct MHD_Response *resp);

static enum MHD_Result queue_answer(struct req *r)
{
    if (log_get_level() <= LOG_DEBUG) {
        char st[8];
        snprintf(st, sizeof st, "%u", r->status);
        log_ev(LOG_DEBUG, "httpd-request", NULL, { "method", r->pub.method },
               { "path", r->pub.path }, { "status", st },
               { "peer", r->pub.peer ? r->pub.peer->identity : "" });
    }
    enum MHD_Result ok = MHD_queue_response(r->conn, r->status, r->resp);
    MHD_destroy_response(r->resp);
    r->resp = NULL;
    r->queued = 1;
    return ok;
}

static enum MHD_Result answer_now(struct req *r, unsigned status, const char *json)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        strlen(json), (void *)(uintptr_t)json, MHD_RESPMEM_MUST_COPY);
    if (!resp || respond_with(r, status, "application/json", resp) < 0)
        return MHD_NO; /* out of memory: drop the connection */
    return queue_answer(r);
}

static enum MHD_Result too_large(struct req *r)
{
    char msg[128];
    struct httpd_priv *p = r->ep->p;
    p->stats.too_large_total++;
    snprintf(msg, sizeof msg, "{\"error\":\"request body too large\",\"max_bytes\":%zu}\n",
             p->cfg.max_body);
    request_read(r);
    /* No keep-alive after this: the client misjudged us once already. */
    if (httpd_response_header(&r->pub, MHD_HTTP_HEADER_CONNECTION, "close") < 0)
        return MHD_NO;
    return answer_now(r, MHD_HTTP_CONTENT_TOO_LARGE, msg);
}

static void req_fill(struct req *r, const char *url, const char *method)
{
    struct MHD_Connection *c = r->conn;
    r->pub.method = method;
    r->pub.path = url;
    r->pub.authorization =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    r->pub.content_type =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    r->pub.accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
    struct conn *cn = conn_of(c);
    r->pub.peer = cn ? &cn->peer : NULL;
}

/* The body's declared length (Content-Length), or -1 when none is. */
static long long declared_length(struct req *r)
{
    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl)
        return -1;
    char *end;
    errno = 0;
    long long n = strtoll(cl, &end, 10);
    if (end == cl || n < 0)
        return -1; /* MHD rejects malformed lengths itself */
    return errno == ERANGE ? LLONG_MAX : n;
}

static int expects_continue(struct req *r)
{
    const char *ex = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    return ex && strcasecmp(ex, "100-continue") == 0;
}

static enum MHD_Result call_handler(struct req *r)
{
    struct httpd_priv *p = r->ep->p;
    request_read(r);
    r->pub.body = r->body.data ? r->body.data : "";
    r->pub.body_len = r->body.len;
    if (p->closing)
        return answer_now(r, MHD_HTTP_SERVICE_UNAVAILABLE, "{\"error\":\"server closing\"}\n");
    p->stats.requests_total++;
    r->state = REQ_HANDLER;
    p->cfg.handler(&r->pub);
    if (r->resp)
        return queue_answer(r);
    if (r->state == REQ_DEFERRED) {
        MHD_suspend_connection(r->conn);
        r->suspended = 1;
        r->next = p->deferred;
        if (p->deferred)
            p->deferred->prev = r;
        p->deferred = r;
        p->stats.deferred_open++;
        return MHD_YES;
    }
    log_ev(LOG_ERROR, "httpd-handler", "handler neither answered nor deferred the request",
           { "method", r->pub.method }, { "path", r->pub.path });
    return answer_now(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "{\"error\":\"no answer\"}\n");
}

static enum MHD_Result on_mhd_access(void *cls, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **con_cls)
{
    (void)c;
    (void)version;
    struct ep *e = cls;
    struct httpd_priv *p = e->p;
    struct req *r = *con_cls;
    if (!r)
        return MHD_NO; /* could not allocate: close the connection */
    switch (r->state) {
    case REQ_NEW:
        req_fill(r, url, method);
        if (!r->pub.peer)
            return MHD_NO;
        r->state = REQ_BODY;
        long long len = declared_length(r);
        if (len <= (long long)p->cfg.max_body)
            return MHD_YES;
        /* Over the cap. A client waiting for "100 Continue" is refused
         * before it sends anything (MHD then skips the 100 and the body).
         * One already sending would often see its send fail and miss the
         * 413 if we answered and closed now, so a body up to DISCARD_MAX
         * past the cap is read and dropped first; beyond that, refuse now
         * anyway. */
        if (expects_continue(r) || len - (long long)p->cfg.max_body > (long long)DISCARD_MAX)
            return too_large(r);
        r->discarding = 1;
        return MHD_YES;
    case REQ_BODY:
        if (*upload_data_size == 0)
            return r->discarding ? too_large(r) : call_handler(r);
        if (r->discarding) {
            r->discarded += *upload_data_size;
            *upload_data_size = 0;
            if (r->discarded <= p->cfg.max_body + DISCARD_MAX)
                return MHD_YES;
            log_ev(LOG_WARN, "httpd-too-large", "request body far over the cap; dropping",
                   { "peer", r->pub.peer->identity }, { "path", r->pub.path });
            return MHD_NO;
        }
        if (buf_append(&r->body, upload_data, *upload_data_size) < 0) {
            /* No length was given (chunked): stop keeping the body. */
            r->discarding = 1;
            r->discarded = r->body.len + *upload_data_size;
            buf_free(&r->body);
        }
        *upload_data_size = 0;
        return MHD_YES;
    case REQ_ANSWERED:
        *upload_data_size = 0;
        if (r->resp && !r->queued)
            return queue_answer(r); /* a deferred answer, after the resume */
        return MHD_YES;
    case REQ_ABORTED:
        /* Resumed by httpd_close() for MHD's sake; say why if we can. */
        *upload_data_size = 0;
        return answer_now(r, MHD_HTTP_SERVICE_UNAVAILABLE, "{\"error\":\"server closing\"}\n");
    default:
        /* REQ_HANDLER, REQ_DEFERRED: MHD does not call a suspended
         * connection; nothing to do if it ever does. */
        *upload_data_size = 0;
        return MHD_YES;
    }
}

/* ---- listening sockets ---- */

static int resolve_group(const char *group, gid_t *out)
{
    char *end;
    errno = 0;
    long n = strtol(group, &end, 10);
    if (*group && *end == '\0' && errno == 0 && n >= 0 && n <= INT_MAX) {
        *out = (gid_t)n;
        return 0;
    }
    size_t size = 4096;
    int result = -ENOENT;
    char *tmp = NULL;
    for (;;) {
        char *nt = realloc(tmp, size);
        if (!nt) {
            result = -ENOMEM;
            goto out;
        }
        tmp = nt;
        struct group gr, *res = NULL;
        int rc = getgrnam_r(group, &gr, tmp, size, &res);
        if (rc == ERANGE && size < (1u << 20)) {
            size *= 2;
            continue;
        }
        if (rc == 0 && res) {
            *out = res->gr_gid;
            result = 0;
        } else {
            result = rc ? -rc : -ENOENT;
        }
        break;
    }
out:
    free(tmp);
    if (result < 0)
        log_ev(LOG_ERROR, "httpd-listen", "unknown group for the control socket",
               { "group", group });
    return result;
}

/* A socket file at path: -EADDRINUSE if a server answers on it, 0 after
 * removing it if nobody does (left over from a crash). */
static int clear_stale_socket(const char *path, const struct sockaddr_un *sa)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode)) {
        log_ev(LOG_ERROR, "httpd-listen", "path exists and is not a socket; not touching it",
               { "path", path });
        return -EEXIST;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* Non-blocking: a live server with a full backlog says EAGAIN. */
    int rc = connect(fd, (const struct sockaddr *)sa, sizeof *sa);
    int err = rc == 0 ? 0 : errno;
    close(fd);
    if (rc == 0 || err == EAGAIN || err == EINPROGRESS) {
        log_ev(LOG_ERROR, "httpd-listen", "another server is answering on the control socket",
               { "path", path });
        return -EADDRINUSE;
    }
    if (err != ECONNREFUSED && err != ENOENT)
        return -err;
    if (unlink(path) != 0 && errno != ENOENT)
        return -errno;
    log_ev(LOG_INFO, "httpd-listen", "removed a stale control socket", { "path", path });
    return 0;
}

static int listen_unix(struct httpd_priv *p, const struct httpd_config *cfg, int *out)
{
    int result = 0;
    int fd = -1;
    struct sockaddr_un sa;
    const char *path = cfg->unix_path;
    gid_t gid = 0;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path || !path[0]) {
        result = path[0] ? -ENAMETOOLONG : -EINVAL;
        goto out;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (cfg->unix_group && (result = resolve_group(cfg->unix_group, &gid)) < 0)
        goto out;
    if ((result = clear_stale_socket(path, &sa)) < 0)
        goto out;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        result = -errno;
        goto out;
    }
    if (bind(fd, (const struct sockaddr *)&sa, sizeof sa) != 0) {
        result = -errno;
        goto out;
    }
    p->unix_path = strdup(path);
    struct stat st;
    if (!p->unix_path || lstat(path, &st) != 0) {
        result = p->unix_path ? -errno : -ENOMEM;
        unlink(path);
        goto out;
    }
    p->unix_dev = st.st_dev;
    p->unix_ino = st.st_ino;
    /* Nobody can connect before listen(): set the mode and group first. */
    if (chmod(path, (mode_t)(cfg->unix_mode & 0777)) != 0 ||
        (cfg->unix_group && chown(path, (uid_t)-1, gid) != 0)) {
        result = -errno;
        goto out;
    }
    if (listen(fd, LISTEN_BACKLOG) != 0) {
        result = -errno;
        goto out;
    }
    *out = fd;
    fd = -1;
out:
    if (fd >= 0)
        close(fd);
    if (result < 0)
        log_ev(LOG_ERROR, "httpd-listen", "cannot listen on the control socket", { "path", path },
               { "error", strerror(-result) });
    return result;
}

static int listen_tcp(struct httpd_priv *p, const struct httpd_config *cfg, int *out)
{
    int result = 0;
    int fd = -1;
    struct sockaddr_storage ss;
    socklen_t sl;
    char host[INET6_ADDRSTRLEN + 2];
    memset(&ss, 0, sizeof ss);
    /* Accept "::1" and "[::1]". */
    size_t hl = strlen(cfg->tcp_host);
    if (hl >= sizeof host) {
        result = -EINVAL;
        goto out;
    }
    if (hl >= 2 && cfg->tcp_host[0] == '[' && cfg->tcp_host[hl - 1] == ']') {
        memcpy(host, cfg->tcp_host + 1, hl - 2);
        host[hl - 2] = '\0';
    } else {
        memcpy(host, cfg->tcp_host, hl + 1);
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(cfg->tcp_port);
        sl = sizeof *sin;
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(cfg->tcp_port);
        sl = sizeof *s6;
    } else {
        result = -EINVAL; /* names would need DNS, which blocks */
        goto out;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        result = -errno;
        goto out;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        result = -errno;
        goto out;
    }
    sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        result = -errno;
        goto out;
    }
    p->tcp_port = ntohs(ss.ss_family == AF_INET ? sin->sin_port : s6->sin6_port);
    *out = fd;
    fd = -1;
out:
    if (fd >= 0)
        close(fd);
    if (result < 0)
        log_ev(LOG_ERROR, "httpd-listen", "cannot listen on TCP", { "host", cfg->tcp_host },
               { "error", strerror(-result) });
    return result;
}

/* ---- daemons ---- */

static int ep_start(struct httpd_priv *p, enum ep_kind kind, int listen_fd)
{
    struct ep *e = &p->ep[kind];
    e->p = p;
    e->kind = kind;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (kind == EP_EXT)
        flags |= MHD_USE_NO_LISTEN_SOCKET;
    struct MHD_OptionItem ops[] = {
        { MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_mhd_log, NULL },
        { MHD_OPTION_CONNECTION_LIMIT, (intptr_t)p->cfg.max_connections, NULL },
        { MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)p->cfg.conn_memory, NULL },
        { MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)p->cfg.timeout_s, NULL },
        { MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_mhd_connection, e },
        { MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_mhd_completed, e },
        { MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_mhd_uri, e },
        { kind == EP_EXT ? MHD_OPTION_END : MHD_OPTION_LISTEN_SOCKET, listen_fd, NULL },
        { MHD_OPTION_END, 0, NULL },
    };
    e->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_mhd_access, e, MHD_OPTION_ARRAY, ops,
                              MHD_OPTION_END);
    if (!e->mhd) {
        /* Whether MHD closed the listen socket on its failure path is not
         * documented; nothing else has opened an fd since, so a still
         * valid number is still ours. */
        if (listen_fd >= 0 && fcntl(listen_fd, F_GETFD) >= 0)
            close(listen_fd);
        log_ev(LOG_ERROR, "httpd-listen", "libmicrohttpd refused to start");
        return -EPROTO;
    }
    return 0;
}

/* Puts a started daemon on the loop. */
static int ep_watch(struct ep *e)
{
    struct httpd_priv *p = e->p;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(e->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di) {
        log_ev(LOG_ERROR, "httpd-listen", "libmicrohttpd has no epoll fd");
        return -EPROTO;
    }
    int r = uv_poll_init(p->loop, &e->poll, di->epoll_fd);
    if (r < 0)
        return r;
    uv_timer_init(p->loop, &e->timer);
    e->poll.data = e;
    e->timer.data = e;
    e->handles = 1;
    p->open_handles += 2;
    r = uv_poll_start(&e->poll, UV_READABLE, on_ep_poll);
    if (r < 0)
        return r;
    ep_arm(e);
    return 0;
}

/* MHD's timeout is an idle timeout: a client that sends one byte now and
 * then keeps a connection forever. Every request must also arrive in full
 * (headers and body) within request_timeout_ms of the connection opening
 * or of the previous request's end; a late one is shut down under MHD's
 * feet, which MHD sees as the client hanging up. Deferred requests and
 * answers being sent are not subject to it. */
static void on_sweep(uv_timer_t *t)
{
    struct httpd_priv *p = t->data;
    uint64_t now = uv_now(p->loop);
    for (struct conn *cn = p->conns; cn; cn = cn->next) {
        if (!cn->reading || now - cn->since < p->cfg.request_timeout_ms || cn->fd < 0)
            continue;
        cn->reading = 0;
        p->stats.request_timeouts_total++;
        log_ev(LOG_WARN, "httpd-request-timeout", "request not received in time; dropping",
               { "peer", cn->peer.identity });
        shutdown(cn->fd, SHUT_RDWR);
    }
}

static void on_sweep_closed(uv_handle_t *h)
{
    struct httpd_priv *p = h->data;
    if (--p->open_handles == 0)
        finish_close(p);
}

static void finish_close(struct httpd_priv *p)
{
    /* Give up on deferred requests: their owners hear it first, then the
     * connections are resumed (MHD must not be stopped with suspended
     * connections) and answered 503 if MHD gets to them. */
    while (p->deferred) {
        struct req *r = p->deferred;
        deferred_unlink(p, r);
        p->stats.deferred_open--;
        r->state = REQ_ABORTED;
        if (r->on_abort)
            r->on_abort(&r->pub);
        MHD_resume_connection(r->conn);
    }
    for (int i = 0; i < EP_COUNT; i++) {
        if (!p->ep[i].mhd)
            continue;
        /* Lets MHD take the resumed connections back before the stop. */
        MHD_run(p->ep[i].mhd);
        MHD_stop_daemon(p->ep[i].mhd);
        p->ep[i].mhd = NULL;
    }
    if (p->unix_path) {
        struct stat st;
        /* Only our own file: a successor may have replaced it already. */
        if (lstat(p->unix_path, &st) == 0 && st.st_dev == p->unix_dev && st.st_ino == p->unix_ino)
            unlink(p->unix_path);
        free(p->unix_path);
        p->unix_path = NULL;
    }
    if (p->close_cb)
        p->close_cb(&p->pub);
    free(p);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct ep *e = h->data;
    struct httpd_priv *p = e->p;
    if (--p->open_handles == 0)
        finish_close(p);
}

void httpd_close(struct httpd *s, httpd_close_cb cb)
{
    struct httpd_priv *p = priv_of(s);
    if (p->closing)
        return;
    p->closing = 1;
    p->close_cb = cb;
    if (p->open_handles == 0) {
        finish_close(p); /* only after a failed httpd_open */
        return;
    }
    if (p->sweep_on)
        uv_close((uv_handle_t *)&p->sweep, on_sweep_closed);
    /* MHD itself is stopped once the handles watching its fds are gone,
     * which is also never from inside MHD_run(). */
    for (int i = 0; i < EP_COUNT; i++) {
        struct ep *e = &p->ep[i];
        if (!e->handles)
            continue;
        uv_close((uv_handle_t *)&e->poll, on_handle_closed);
        uv_close((uv_handle_t *)&e->timer, on_handle_closed);
    }
}

int httpd_open(uv_loop_t *loop, const struct httpd_config *cfg, struct httpd **out)
{
    int result = 0;
    int fd = -1;
    *out = NULL;
    if (!cfg->handler || (!cfg->unix_path && !cfg->tcp_host && !cfg->external))
        return -EINVAL;
    struct httpd_priv *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->pub.priv = p;
    p->pub.data = cfg->data;
    p->loop = loop;
    p->pending_fd = -1;
    p->cfg = *cfg;
    if (!p->cfg.max_body)
        p->cfg.max_body = HTTPD_DEFAULT_MAX_BODY;
    if (!p->cfg.max_connections)
        p->cfg.max_connections = HTTPD_DEFAULT_MAX_CONNECTIONS;
    if (!p->cfg.conn_memory)
        p->cfg.conn_memory = HTTPD_DEFAULT_CONN_MEMORY;
    if (!p->cfg.timeout_s)
        p->cfg.timeout_s = HTTPD_DEFAULT_TIMEOUT_S;
    if (!p->cfg.request_timeout_ms)
        p->cfg.request_timeout_ms = HTTPD_DEFAULT_REQUEST_TIMEOUT_MS;
    if (!p->cfg.unix_mode)
        p->cfg.unix_mode = HTTPD_DEFAULT_UNIX_MODE;
    /* First everything that can fail without the loop... */
    if (cfg->unix_path) {
        if ((result = listen_unix(p, &p->cfg, &fd)) < 0)
            goto out;
        result = ep_start(p, EP_UNIX, fd);
        fd = -1;
        if (result < 0)
            goto out;
    }
    if (cfg->tcp_host) {
        if ((result = listen_tcp(p, &p->cfg, &fd)) < 0)
            goto out;
        result = ep_start(p, EP_TCP, fd);
        fd = -1;
        if (result < 0)
            goto out;
    }
    if (cfg->external && (result = ep_start(p, EP_EXT, -1)) < 0)
        goto out;
    /* ...then the loop handles. */
    for (int i = 0; i < EP_COUNT; i++)
        if (p->ep[i].mhd && (result = ep_watch(&p->ep[i])) < 0)
            goto out;
    uv_timer_init(loop, &p->sweep);
    p->sweep.data = p;
    p->sweep_on = 1;
    p->open_handles++;
    uint64_t every = p->cfg.request_timeout_ms / 4;
    every = every < 50 ? 50 : every > 1000 ? 1000 : every;
    uv_timer_start(&p->sweep, on_sweep, every, every);
    log_ev(LOG_INFO, "httpd-listen", "HTTP server listening",
           { cfg->unix_path ? "unix" : NULL, cfg->unix_path },
           { cfg->tcp_host ? "tcp" : NULL, cfg->tcp_host });
    /* The strings belong to the caller. */
    p->cfg.unix_path = p->cfg.unix_group = p->cfg.tcp_host = NULL;
    *out = &p->pub;
out:
    if (result < 0) {
        /* Without loop handles this frees everything now; with some (only
         * if uv_poll_init failed) the rest goes when the loop runs. */
        httpd_close(&p->pub, NULL);
    }
    return result;
}

uint16_t httpd_tcp_port(const struct httpd *s)
{
    return priv_of(s)->tcp_port;
}

void httpd_get_stats(const struct httpd *s, struct httpd_stats *out)
{
    *out = priv_of(s)->stats;
}

int httpd_add_connection(struct httpd *s, int fd, const char *identity)
{
    struct httpd_priv *p = priv_of(s);
    struct ep *e = &p->ep[EP_EXT];
    if (!e->mhd || p->closing) {
        close(fd);
        return e->mhd ? -ESHUTDOWN : -ENOTSUP;
    }
    /* MHD in external mode expects non-blocking sockets. */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    p->pending_fd = fd;
    p->pending_identity = identity ? identity : "";
    errno = 0;
    enum MHD_Result ok =
        MHD_add_connection(e->mhd, fd, (const struct sockaddr *)&sa, sizeof(sa_family_t));
    int err = errno;
    p->pending_fd = -1;
    p->pending_identity = NULL;
    if (ok != MHD_YES) {
        log_ev(LOG_WARN, "httpd-external", "connection refused",
               { "identity", identity ? identity : "" }, { "error", strerror(err ? err : ENOMEM) });
        return err == ENFILE || err == EMFILE || err == EAGAIN ? -EMFILE : -(err ? err : ENOMEM);
    }
    ep_kick(e);
    return 0;
}

const char *httpd_query_get(const struct httpd_request *req, const char *key)
{
    const struct req *r = (const struct req *)req;
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *httpd_header_get(const struct httpd_request *req, const char *name)
{
    const struct req *r = (const struct req *)req;
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

int httpd_response_header(struct httpd_request *req, const char *name, const char *value)
{
    struct req *r = (struct req *)req;
    if (r->nhdr >= MAX_EXTRA_HEADERS)
        return -EMSGSIZE;
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return -ENOMEM;
    }
    r->hdr_name[r->nhdr] = n;
    r->hdr_value[r->nhdr] = v;
    r->nhdr++;
    return 0;
}

/* Takes resp: it becomes the request's answer, or is destroyed. */
static int respond_with(struct req *r, unsigned status, const char *ctype,
                        struct MHD_Response *resp)
{
    if (ctype && MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) != MHD_YES)
        goto fail;
    for (int i = 0; i < r->nhdr; i++)
        if (MHD_add_response_header(resp, r->hdr_name[i], r->hdr_value[i]) != MHD_YES)
            goto fail;
    r->resp = resp;
    r->status = status;
    r->state = REQ_ANSWERED;
    if (r->suspended) {
        struct httpd_priv *p = r->ep->p;
        deferred_unlink(p, r);
        p->stats.deferred_open--;
        r->suspended = 0;
        /* MHD calls on_mhd_access again, which queues the answer. */
        MHD_resume_connection(r->conn);
        ep_kick(r->ep);
    }
    return 0;
fail:
    MHD_destroy_response(resp);
    return -ENOMEM;
}

static bool may_respond(const struct req *r)
{
    return r->state == REQ_HANDLER || r->state == REQ_DEFERRED;
}

int httpd_respond(struct httpd_request *req, unsigned status, const char *content_type,
                  const char *body, size_t len)
{
    struct req *r = (struct req *)req;
    if (!may_respond(r))
        return -EALREADY;
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        body ? len : 0, (void *)(uintptr_t)(body ? body : ""), MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return -ENOMEM;
    return respond_with(r, status, content_type, resp);
}

struct stream {
    httpd_stream_cb read;
    httpd_stream_free_cb free;
    void *arg;
};

static ssize_t on_stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    struct stream *st = cls;
    ssize_t n = st->read(st->arg, out, max);
    if (n > 0)
        return n;
    return n == 0 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void on_stream_free(void *cls)
{
    struct stream *st = cls;
    if (st->free)
        st->free(st->arg);
    free(st);
}

int httpd_respond_stream(struct httpd_request *req, unsigned status, const char *content_type,
                         httpd_stream_cb read, httpd_stream_free_cb free_cb, void *arg)
{
    struct req *r = (struct req *)req;
    struct stream *st = may_respond(r) ? malloc(sizeof *st) : NULL;
    struct MHD_Response *resp = NULL;
    if (st) {
        *st = (struct stream){ read, free_cb, arg };
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, HTTPD_STREAM_BLOCK,
                                                 on_stream_read, st, on_stream_free);
    }
    if (!resp) {
        free(st);
        if (free_cb)
            free_cb(arg);
        return may_respond(r) ? -ENOMEM : -EALREADY;
    }
    return respond_with(r, status, content_type, resp);
}

void httpd_defer(struct httpd_request *req, httpd_abort_cb on_abort)
{
    struct req *r = (struct req *)req;
    if (r->state != REQ_HANDLER)
        return;
    r->state = REQ_DEFERRED;
    r->on_abort = on_abort;
}

/* ---- fuzzing entry ---- */

struct fuzz {
    struct httpd *s;
    struct httpd_fuzz_seen *seen;
    const unsigned char *data;
    size_t len, off;
    int fd;
    uv_poll_t poll;
    uv_timer_t guard;
    uv_check_t idle;
    char head[16];
    size_t head_len;
    int done;
};

static void fuzz_handler(struct httpd_request *req)
{
    struct fuzz *f = req->server->data;
    struct httpd_fuzz_seen *sn = f->seen;
    if (sn->requests++ == 0) {
        snprintf(sn->method, sizeof sn->method, "%s", req->method);
        snprintf(sn->path, sizeof sn->path, "%s", req->path);
        snprintf(sn->query, sizeof sn->query, "%s", req->query);
        sn->body_len = req->body_len;
    }
    httpd_respond(req, 200, "text/plain", "ok\n", 3);
}

static void fuzz_finish(struct fuzz *f)
{
    if (f->done)
        return;
    f->done = 1;
    uv_close((uv_handle_t *)&f->poll, NULL);
    uv_close((uv_handle_t *)&f->guard, NULL);
    uv_close((uv_handle_t *)&f->idle, NULL);
    httpd_close(f->s, NULL);
}

/* Reads what the server wrote; 1 once the server has closed. */
static int fuzz_read(struct fuzz *f)
{
    for (;;) {
        char b[4096];
        ssize_t n = recv(f->fd, b, sizeof b, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n <= 0)
            return 1;
        size_t take = sizeof f->head - f->head_len;
        if (take > (size_t)n)
            take = (size_t)n;
        memcpy(f->head + f->head_len, b, take);
        f->head_len += take;
        f->seen->response_len += (size_t)n;
    }
}

static void fuzz_on_guard(uv_timer_t *t)
{
    fuzz_finish(t->data);
}

static void fuzz_on_poll(uv_poll_t *h, int status, int events)
{
    struct fuzz *f = h->data;
    if (status < 0) {
        fuzz_read(f);
        fuzz_finish(f);
        return;
    }
    if ((events & UV_WRITABLE) && f->off < f->len) {
        ssize_t n = send(f->fd, f->data + f->off, f->len - f->off, MSG_NOSIGNAL);
        if (n > 0)
            f->off += (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EINTR)
            f->off = f->len; /* the server hung up: stop writing */
        if (f->off == f->len) {
            shutdown(f->fd, SHUT_WR);
            uv_poll_start(&f->poll, UV_READABLE, fuzz_on_poll);
        }
    }
    if ((events & UV_READABLE) && fuzz_read(f))
        fuzz_finish(f);
}

/* Runs at the end of every loop iteration. MHD may never notice the half
 * close of an incomplete request (after a short read it assumes the socket
 * drained and waits for the next edge), so waiting for the server to hang
 * up could cost a whole idle timeout per input. Instead: once everything
 * is written and MHD has nothing to do (its epoll fd is quiet and it asks
 * to be run only for timeouts), the request path is done with the input. */
static void fuzz_on_idle(uv_check_t *h)
{
    struct fuzz *f = h->data;
    struct httpd_priv *p = priv_of(f->s);
    struct ep *e = &p->ep[EP_EXT];
    if (f->done || f->off < f->len)
        return;
    if (uv_is_active((uv_handle_t *)&e->timer) && uv_timer_get_due_in(&e->timer) == 0)
        return;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(e->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    struct pollfd pfd = { .fd = di ? di->epoll_fd : -1, .events = POLLIN };
    if (di && poll(&pfd, 1, 0) > 0)
        return;
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(e->mhd, &ms) == MHD_YES && ms == 0)
        return;
    fuzz_read(f);
    fuzz_finish(f);
}

/* Feeds raw bytes to the request path exactly as a client would (through a
 * real socket and MHD's parser), on a private loop, and reports what the
 * handler saw. Meant for a libFuzzer harness:
 *   int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
 *   { struct httpd_fuzz_seen s; httpd_fuzz_feed(d, n, &s); return 0; }
 * It returns as soon as the server has nothing left to do with the input
 * (see fuzz_on_idle); a 2 s guard bounds it regardless. Not reentrant with
 * respect to signals, like everything else here; one call at a time per
 * thread. */
int httpd_fuzz_feed(const void *data, size_t len, struct httpd_fuzz_seen *seen)
{
    int result = 0;
    int sv[2] = { -1, -1 };
    uv_loop_t loop;
    struct fuzz f;
    memset(seen, 0, sizeof *seen);
    memset(&f, 0, sizeof f);
    f.seen = seen;
    f.data = data;
    f.len = len;
    if ((result = uv_loop_init(&loop)) < 0)
        return result;
    struct httpd_config cfg = {
        .external = 1,
        .timeout_s = 1,
        .max_connections = 2,
        .handler = fuzz_handler,
        .data = &f,
    };
    if ((result = httpd_open(&loop, &cfg, &f.s)) < 0)
        goto out;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        result = -errno;
        httpd_close(f.s, NULL);
        goto out;
    }
    f.fd = sv[1];
    if (fcntl(f.fd, F_SETFL, fcntl(f.fd, F_GETFL) | O_NONBLOCK) < 0) {
        result = -errno;
        close(sv[0]);
        sv[0] = -1;
        httpd_close(f.s, NULL);
        goto out;
    }
    result = httpd_add_connection(f.s, sv[0], "fuzz");
    sv[0] = -1; /* the server's now, even on failure */
    if (result < 0) {
        httpd_close(f.s, NULL);
        goto out;
    }
    uv_poll_init(&loop, &f.poll, f.fd);
    f.poll.data = &f;
    uv_timer_init(&loop, &f.guard);
    f.guard.data = &f;
    uv_timer_start(&f.guard, fuzz_on_guard, 2000, 0);
    uv_check_init(&loop, &f.idle);
    f.idle.data = &f;
    uv_check_start(&f.idle, fuzz_on_idle);
    if (len == 0)
        shutdown(f.fd, SHUT_WR);
    uv_poll_start(&f.poll, len ? UV_READABLE | UV_WRITABLE : UV_READABLE, fuzz_on_poll);
out:
    uv_run(&loop, UV_RUN_DEFAULT);
    if (f.head_len >= 12 && memcmp(f.head, "HTTP/1.", 7) == 0) {
        char code[4] = { f.head[9], f.head[10], f.head[11], '\0' };
        seen->status = (int)strtol(code, NULL, 10);
    }
    if (sv[1] >= 0)
        close(sv[1]);
    int rc = uv_loop_close(&loop);
    if (result == 0 && rc < 0)
        result = rc;
    return result;
}
