/* Non-blocking PostgreSQL client: owns one PGconn, the uv_poll handle on
 * whatever socket libpq currently uses, the deadline timer, and the DNS
 * requests of a connect. The contract is in pg_async.h.
 *
 * One uv_timer does two jobs: it is the deadline of the connect or query in
 * flight, and, once the outcome is known, it fires with timeout 0 to run
 * the user's callback from the loop. So a callback never runs inside an API
 * call, and every outcome takes the same path (finish -> deliver).
 */
#include "lib/pg_async.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/log.h"

/* Per-field overhead counted against max_result_bytes, so a result of many
 * empty fields is bounded too. */
#define FIELD_OVERHEAD 8
#define LIST_MAX       8192 /* host/hostaddr/port/options strings we build */

enum pg_state {
    PG_IDLE,       /* no connection */
    PG_RESOLVING,  /* host names in uv_getaddrinfo */
    PG_CONNECTING, /* PQconnectPoll steps */
    PG_READY,      /* connected, no query in flight */
    PG_QUERY,      /* one query in flight */
    PG_CLOSING,    /* pg_async_close() called */
};

enum pg_op { OP_NONE, OP_CONNECT, OP_QUERY };

/* One entry of the caller's "host" list. */
struct pg_hostent {
    const char *name; /* points into hosts_copy */
    bool resolve;     /* a name (not a path, not numeric): resolved by us */
    bool done;
    int err; /* libuv error of the resolution */
    int naddrs;
    char addrs[PG_ASYNC_ADDRS_PER_HOST][INET6_ADDRSTRLEN];
};

/* A DNS request. It outlives an aborted connect (uv_cancel cannot stop one
 * already running), so it carries the connect generation it belongs to. */
struct pg_gai {
    uv_getaddrinfo_t req; /* first: the callback casts back */
    struct pg_async *pg;
    unsigned gen;
    int idx;
};

struct pg_async {
    uv_loop_t *loop;
    char *name;
    bool quiet;
    char **keys;
    char **vals;
    size_t nparams;
    char *password_file;
    uint32_t connect_timeout_ms;
    uint32_t query_timeout_ms;
    int32_t server_check_ms;
    size_t max_result_bytes;

    enum pg_state state;
    PGconn *conn;
    uv_poll_t *poll; /* heap: replaced when libpq switches sockets */
    int poll_fd;
    ino_t poll_ino; /* with poll_dev: the socket's identity, since a new */
    dev_t poll_dev; /* socket often reuses the old descriptor number */
    int poll_events;
    uv_timer_t timer;
    unsigned open_handles; /* timer + polls not yet through their close cb */
    unsigned gai_pending;  /* DNS requests not yet through their cb */
    unsigned gen;          /* bumped when a connect starts or is aborted */

    /* The operation in flight. */
    enum pg_op op;
    pg_async_cb cb;
    void *cb_arg;
    uint64_t op_start_us;
    uint64_t elapsed_us;
    uint32_t op_timeout_ms;
    bool pending;  /* outcome known; cb runs on the next timer tick */
    bool flushing; /* PQflush has more to send */
    bool failed;   /* the server sent an error result */
    bool fatal;    /* ... of severity FATAL or PANIC */
    int status;
    PGresult *res;  /* result to hand over */
    PGresult *rows; /* single-row mode accumulator */
    size_t rows_bytes;
    char sqlstate[6];
    char detail[PG_ASYNC_DETAIL_MAX];

    /* Name resolution for a connect. hosts (PG_ASYNC_HOSTS_MAX entries,
     * 6 KB) exists only while a connect resolves names: a daemon with a
     * hundred connections to numeric addresses need not carry 600 KB. */
    char *hosts_copy;
    struct pg_hostent *hosts;
    struct pg_gai *gai[PG_ASYNC_HOSTS_MAX];
    int nhosts;

    bool freeing;
    pg_async_close_cb close_cb;
    void *close_arg;
};

static void on_timer(uv_timer_t *t);
static void on_poll(uv_poll_t *h, int status, int events);
static void connect_start(struct pg_async *pg, const char *host, const char *hostaddr,
                          const char *port);

/* --- small helpers ------------------------------------------------------ */

static uint64_t now_us(void)
{
    return uv_hrtime() / 1000u;
}

static const char *errstr(int neg, char *buf, size_t len)
{
    return strerror_r(-neg, buf, len);
}

static const char *errname(int neg)
{
    const char *n = strerrorname_np(-neg);
    return n ? n : "EUNKNOWN";
}

static void trim_end(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

static void set_detail(struct pg_async *pg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_detail(struct pg_async *pg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pg->detail, sizeof pg->detail, fmt, ap);
    va_end(ap);
    trim_end(pg->detail);
}

static const char *param_get(const struct pg_async *pg, const char *key)
{
    const char *v = NULL;
    for (size_t i = 0; i < pg->nparams; i++) {
        if (strcmp(pg->keys[i], key) == 0)
            v = pg->vals[i]; /* libpq takes the last one too */
    }
    return v;
}

static void log_failure(const struct pg_async *pg, const char *event, int status)
{
    log_ev(pg->quiet ? LOG_DEBUG : LOG_WARN, event, pg->detail, { "pg", pg->name },
           { "error", errname(status) }, { pg->sqlstate[0] ? "sqlstate" : NULL, pg->sqlstate });
}

/* Server notices (and errors the server sends on an idle connection just
 * before closing it) would go to stderr by default. */
static void on_notice(void *arg, const char *message)
{
    const struct pg_async *pg = arg;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", message);
    trim_end(msg);
    log_ev(LOG_DEBUG, "pg-notice", msg, { "pg", pg->name });
}

/* --- poll handle ----------------------------------------------------------- */

static void maybe_finish_close(struct pg_async *pg);

static void on_poll_closed(uv_handle_t *h)
{
    struct pg_async *pg = h->data;
    free(h);
    pg->open_handles--;
    maybe_finish_close(pg);
}

static void poll_drop(struct pg_async *pg)
{
    if (!pg->poll)
        return;
    uv_close((uv_handle_t *)pg->poll, on_poll_closed);
    pg->poll = NULL;
    pg->poll_fd = -1;
    pg->poll_events = 0;
}

/* Watch PQsocket() for `events`. libpq may have closed the socket we watch
 * and opened another (next address or host, SSL or GSS retry), often under
 * the same descriptor number, which epoll would then silently not watch: a
 * changed (fd, device, inode) is given a fresh handle. */
static int poll_update(struct pg_async *pg, int events)
{
    int fd = pg->conn ? PQsocket(pg->conn) : -1;
    if (fd < 0) {
        poll_drop(pg);
        return -ENOTCONN;
    }
    /* Once connected, libpq keeps its socket until the connection ends: the
     * socket the handle watches since the last step of the connection is
     * the one (a probe's queries need not fstat it twice a second). */
    bool same = pg->poll && pg->poll_fd == fd && PQstatus(pg->conn) == CONNECTION_OK;
    struct stat st;
    if (!same && fstat(fd, &st) != 0)
        return -errno;
    if (!same && pg->poll &&
        (pg->poll_fd != fd || pg->poll_ino != st.st_ino || pg->poll_dev != st.st_dev))
        poll_drop(pg);
    if (!pg->poll) {
        uv_poll_t *p = malloc(sizeof *p);
        if (!p)
            return -ENOMEM;
        int rc = uv_poll_init(pg->loop, p, fd);
        if (rc < 0) {
            free(p); /* not registered with the loop on failure */
            return rc;
        }
        p->data = pg;
        pg->poll = p;
        pg->poll_fd = fd;
        pg->poll_ino = st.st_ino;
        pg->poll_dev = st.st_dev;
        pg->poll_events = 0;
        pg->open_handles++;
    }
    if (events != pg->poll_events) {
        int rc = uv_poll_start(pg->poll, events, on_poll);
        if (rc < 0)
            return rc;
        pg->poll_events = events;
    }
    return 0;
}

/* Stop watching before PQfinish closes the socket (libuv's rule). */
static void conn_drop(struct pg_async *pg)
{
    poll_drop(pg);
    if (pg->conn) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }
    if (pg->rows) {
        PQclear(pg->rows);
        pg->rows = NULL;
    }
    pg->flushing = false;
}

static void gai_abort(struct pg_async *pg)
{
    pg->gen++;
    for (int i = 0; i < PG_ASYNC_HOSTS_MAX; i++) {
        if (pg->gai[i]) {
            /* Fails when already running; its callback then sees a stale gen. */
            uv_cancel((uv_req_t *)&pg->gai[i]->req);
            pg->gai[i] = NULL;
        }
    }
}

/* --- completion ------------------------------------------------------------ */

static void op_begin(struct pg_async *pg, enum pg_op op, pg_async_cb cb, void *arg,
                     uint32_t timeout_ms)
{
    pg->op = op;
    pg->cb = cb;
    pg->cb_arg = arg;
    pg->op_start_us = now_us();
    pg->op_timeout_ms = timeout_ms;
    pg->pending = false;
    pg->failed = false;
    pg->fatal = false;
    pg->status = 0;
    pg->rows_bytes = 0;
    pg->sqlstate[0] = '\0';
    pg->detail[0] = '\0';
    /* The loop's clock is cached; a caller outside a callback may come
     * after a long pause, which would silently shorten the deadline. */
    uv_update_time(pg->loop);
    uv_timer_start(&pg->timer, on_timer, timeout_ms, 0);
}

/* The outcome is known: hand it over on the next loop tick (or from the
 * close path when closing). */
static void finish(struct pg_async *pg, int status)
{
    pg->status = status;
    pg->pending = true;
    pg->elapsed_us = now_us() - pg->op_start_us;
    uv_timer_stop(&pg->timer);
    if (pg->state != PG_CLOSING)
        uv_timer_start(&pg->timer, on_timer, 0, 0);
}

static void deliver(struct pg_async *pg)
{
    /* Copies: the callback may start the next operation, which resets ours. */
    char detail[PG_ASYNC_DETAIL_MAX];
    char sqlstate[sizeof pg->sqlstate];
    memcpy(detail, pg->detail, sizeof detail);
    memcpy(sqlstate, pg->sqlstate, sizeof sqlstate);
    struct pg_async_result r = {
        .status = pg->status,
        .res = pg->status == 0 ? pg->res : NULL,
        .sqlstate = sqlstate,
        .detail = detail,
        .elapsed_us = pg->elapsed_us,
    };
    if (pg->status != 0 && pg->res)
        PQclear(pg->res);
    pg_async_cb cb = pg->cb;
    void *arg = pg->cb_arg;
    pg->res = NULL;
    pg->pending = false;
    pg->op = OP_NONE;
    pg->cb = NULL;
    pg->cb_arg = NULL;
    cb(pg, &r, arg);
    if (r.res)
        PQclear(r.res);
}

/* Abort the operation in flight; the connection goes with it. */
static void op_abort(struct pg_async *pg, int status, const char *why)
{
    set_detail(pg, "%s", why);
    pg->sqlstate[0] = '\0';
    gai_abort(pg);
    conn_drop(pg);
    if (pg->res) {
        PQclear(pg->res);
        pg->res = NULL;
    }
    if (pg->state != PG_CLOSING)
        pg->state = PG_IDLE;
    finish(pg, status);
}

/* --- connect ----------------------------------------------------------------- */

static bool is_sqlstate(const char *s)
{
    for (int i = 0; i < 5; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
            return false;
    }
    return true;
}

/* libpq 15 has no way to get the SQLSTATE of a failed connection but the
 * verbose message: "...failed: FATAL:  28P01: password authentication
 * failed ...\nLOCATION:  auth_failed, auth.c:323". Take the code out (the
 * last one: with several hosts, the last attempt) and drop LOCATION lines. */
static void parse_conn_error(const char *msg, char *sqlstate, char *detail, size_t dlen)
{
    size_t o = 0;
    const char *p = msg;
    sqlstate[0] = '\0';
    while (*p && o + 1 < dlen) {
        if ((p == msg || p[-1] == '\n') && strncmp(p, "LOCATION:  ", 11) == 0) {
            const char *nl = strchr(p, '\n');
            p = nl ? nl + 1 : p + strlen(p);
            continue;
        }
        if (p[0] == ':' && p[1] == ' ' && p[2] == ' ' && is_sqlstate(p + 3) && p[8] == ':' &&
            p[9] == ' ') {
            memcpy(sqlstate, p + 3, 5);
            sqlstate[5] = '\0';
            size_t n = o + 4 < dlen ? 3 : dlen - 1 - o;
            memcpy(detail + o, ":  ", n);
            o += n;
            p += 10;
            continue;
        }
        detail[o++] = *p++;
    }
    detail[o] = '\0';
    trim_end(detail);
}

/* Map a failed connect to an errno. Socket errors are recognised by their
 * strerror() text, which libpq and we produce alike in any locale. */
static int classify_conn_error(PGconn *conn, const char *msg, const char *sqlstate)
{
    if (sqlstate[0]) {
        if (strncmp(sqlstate, "28", 2) == 0)
            return -EACCES;
        if (strcmp(sqlstate, "57P03") == 0 || strcmp(sqlstate, "53300") == 0)
            return -EAGAIN;
        return -EREMOTEIO;
    }
    if (conn && PQconnectionNeedsPassword(conn))
        return -EACCES;
    static const int errs[] = { ECONNREFUSED,  ETIMEDOUT,  EHOSTUNREACH, ENETUNREACH,
                                EADDRNOTAVAIL, ECONNRESET, ENOENT,       EACCES };
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        char buf[128];
        const char *s = strerror_r(errs[i], buf, sizeof buf);
        if (s && *s && strstr(msg, s))
            return -errs[i];
    }
    return -EPROTO;
}

static void connect_failed(struct pg_async *pg, int status)
{
    log_failure(pg, "pg-connect-failed", status);
    gai_abort(pg);
    conn_drop(pg);
    pg->state = PG_IDLE;
    finish(pg, status);
}

static void connect_failed_libpq(struct pg_async *pg)
{
    const char *msg = pg->conn ? PQerrorMessage(pg->conn) : "out of memory";
    parse_conn_error(msg, pg->sqlstate, pg->detail, sizeof pg->detail);
    if (!pg->detail[0])
        set_detail(pg, "connection failed");
    connect_failed(pg, classify_conn_error(pg->conn, pg->detail, pg->sqlstate));
}

static void connected(struct pg_async *pg)
{
    char eb[128];
    if (PQsetnonblocking(pg->conn, 1) != 0) {
        set_detail(pg, "cannot make the connection non-blocking: %s", PQerrorMessage(pg->conn));
        connect_failed(pg, -EPROTO);
        return;
    }
    PQsetErrorVerbosity(pg->conn, PQERRORS_DEFAULT);
    pg->state = PG_READY;
    int rc = poll_update(pg, UV_READABLE); /* notice a server closing the idle connection */
    if (rc < 0) {
        set_detail(pg, "cannot watch the connection: %s", errstr(rc, eb, sizeof eb));
        connect_failed(pg, rc);
        return;
    }
    char pid[16], ver[16];
    snprintf(pid, sizeof pid, "%d", PQbackendPID(pg->conn));
    snprintf(ver, sizeof ver, "%d", PQserverVersion(pg->conn));
    log_ev(LOG_DEBUG, "pg-connected", NULL, { "pg", pg->name }, { "host", PQhost(pg->conn) },
           { "port", PQport(pg->conn) }, { "backend_pid", pid }, { "server_version", ver });
    finish(pg, 0);
}

static void connect_step(struct pg_async *pg)
{
    char eb[128];
    int events;
    switch (PQconnectPoll(pg->conn)) {
    case PGRES_POLLING_OK:
        connected(pg);
        return;
    case PGRES_POLLING_READING:
        events = UV_READABLE;
        break;
    case PGRES_POLLING_WRITING:
        events = UV_WRITABLE;
        break;
    default:
        connect_failed_libpq(pg);
        return;
    }
    int rc = poll_update(pg, events);
    if (rc < 0) {
        set_detail(pg, "cannot watch the connection: %s", errstr(rc, eb, sizeof eb));
        connect_failed(pg, rc);
    }
}

static const char *connect_phase(const struct pg_async *pg)
{
    if (pg->state == PG_RESOLVING)
        return "resolving host names";
    if (!pg->conn)
        return "connecting";
    switch (PQstatus(pg->conn)) {
    case CONNECTION_STARTED:
        return "waiting for the TCP connection";
    case CONNECTION_MADE:
        return "sending the startup message";
    case CONNECTION_AWAITING_RESPONSE:
        return "waiting for the server to answer";
    case CONNECTION_AUTH_OK:
        return "waiting for the server to be ready";
    case CONNECTION_SSL_STARTUP:
        return "waiting for the server's answer to the SSL request";
    case CONNECTION_GSS_STARTUP:
        return "negotiating GSSAPI encryption";
    case CONNECTION_CHECK_WRITABLE:
    case CONNECTION_CHECK_TARGET:
    case CONNECTION_CHECK_STANDBY:
        return "checking target_session_attrs";
    default:
        return "connecting";
    }
}

static void connect_timed_out(struct pg_async *pg)
{
    const char *host = pg->conn ? PQhost(pg->conn) : NULL;
    const char *port = pg->conn ? PQport(pg->conn) : NULL;
    if (host && *host)
        set_detail(pg, "connect timed out after %" PRIu32 " ms while %s (host %s, port %s)",
                   pg->op_timeout_ms, connect_phase(pg), host, port && *port ? port : "default");
    else
        set_detail(pg, "connect timed out after %" PRIu32 " ms while %s", pg->op_timeout_ms,
                   connect_phase(pg));
    pg->sqlstate[0] = '\0';
    connect_failed(pg, -ETIMEDOUT);
}

/* Reads the first line of the password file into out (outsz must be
 * PG_ASYNC_PASSWORD_MAX + 2: one more byte tells a too long line). The
 * contents never reach a message. */
static int password_read(const char *path, char *out, size_t outsz, char *detail, size_t dlen)
{
    char eb[128];
    int result = 0;
    size_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        result = -errno;
        snprintf(detail, dlen, "cannot open password file %s: %s", path,
                 errstr(result, eb, sizeof eb));
        return result;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        result = -errno;
        snprintf(detail, dlen, "cannot stat password file %s: %s", path,
                 errstr(result, eb, sizeof eb));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        result = -EINVAL;
        snprintf(detail, dlen, "password file %s is not a regular file", path);
        goto out;
    }
    if (st.st_mode & S_IROTH) {
        result = -EPERM;
        snprintf(detail, dlen, "password file %s is readable by everyone (chmod 0600 or 0640)",
                 path);
        goto out;
    }
    while (n < outsz - 1) {
        ssize_t r = read(fd, out + n, outsz - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            result = -errno;
            snprintf(detail, dlen, "cannot read password file %s: %s", path,
                     errstr(result, eb, sizeof eb));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    const char *nl = memchr(out, '\n', n);
    size_t len = nl ? (size_t)(nl - out) : n;
    if (len > PG_ASYNC_PASSWORD_MAX) {
        result = -EMSGSIZE;
        snprintf(detail, dlen, "password file %s: first line longer than %d bytes", path,
                 PG_ASYNC_PASSWORD_MAX);
        goto out;
    }
    if (len > 0 && out[len - 1] == '\r')
        len--;
    if (memchr(out, '\0', len)) {
        result = -EINVAL;
        snprintf(detail, dlen, "password file %s contains a NUL byte", path);
        goto out;
    }
    if (len == 0) {
        result = -EINVAL;
        snprintf(detail, dlen, "password file %s is empty", path);
        goto out;
    }
    explicit_bzero(out + len, outsz - len);
out:
    close(fd);
    if (result < 0)
        explicit_bzero(out, outsz);
    return result;
}

/* host/hostaddr/port: NULL to pass the caller's values unchanged. */
static void connect_start(struct pg_async *pg, const char *host, const char *hostaddr,
                          const char *port)
{
    char password[PG_ASYNC_PASSWORD_MAX + 2];
    char eb[128];
    struct buf opt;
    size_t cap = pg->nparams + 8;
    const char **keys = calloc(cap, sizeof *keys);
    const char **vals = calloc(cap, sizeof *vals);
    size_t n = 0;
    int rc;

    buf_init(&opt, LIST_MAX);
    password[0] = '\0';
    if (!keys || !vals) {
        set_detail(pg, "out of memory");
        connect_failed(pg, -ENOMEM);
        goto out;
    }
    if (pg->password_file) {
        rc = password_read(pg->password_file, password, sizeof password, pg->detail,
                           sizeof pg->detail);
        if (rc < 0) {
            connect_failed(pg, rc);
            goto out;
        }
    }
    for (size_t i = 0; i < pg->nparams; i++) {
        const char *k = pg->keys[i];
        if (host && (!strcmp(k, "host") || !strcmp(k, "hostaddr")))
            continue;
        if (port && !strcmp(k, "port"))
            continue;
        if (!strcmp(k, "options")) {
            buf_append_str(&opt, pg->vals[i]);
            continue;
        }
        keys[n] = k;
        vals[n++] = pg->vals[i];
    }
    if (host) {
        keys[n] = "host";
        vals[n++] = host;
        keys[n] = "hostaddr";
        vals[n++] = hostaddr;
    }
    if (port) {
        keys[n] = "port";
        vals[n++] = port;
    }
    if (pg->server_check_ms > 0 &&
        !(opt.data && strstr(opt.data, "client_connection_check_interval")))
        buf_printf(&opt, "%s-c client_connection_check_interval=%" PRId32, opt.len ? " " : "",
                   pg->server_check_ms);
    if (opt.truncated) {
        set_detail(pg, "options longer than %d bytes", LIST_MAX);
        connect_failed(pg, -EINVAL);
        goto out;
    }
    if (opt.len) {
        keys[n] = "options";
        vals[n++] = opt.data;
    }
    if (!param_get(pg, "gssencmode")) {
        keys[n] = "gssencmode";
        vals[n++] = "disable";
    }
    if (!param_get(pg, "fallback_application_name")) {
        keys[n] = "fallback_application_name";
        vals[n++] = "triad";
    }
    if (password[0]) {
        keys[n] = "password";
        vals[n++] = password;
    }
    keys[n] = NULL;
    vals[n] = NULL;

    pg->conn = PQconnectStartParams(keys, vals, 0);
    explicit_bzero(password, sizeof password);
    if (!pg->conn) {
        set_detail(pg, "out of memory");
        connect_failed(pg, -ENOMEM);
        goto out;
    }
    /* Verbose until connected: see parse_conn_error. */
    PQsetErrorVerbosity(pg->conn, PQERRORS_VERBOSE);
    PQsetNoticeProcessor(pg->conn, on_notice, pg);
    if (PQstatus(pg->conn) == CONNECTION_BAD) {
        connect_failed_libpq(pg);
        goto out;
    }
    pg->state = PG_CONNECTING;
    /* libpq's rule: start as if PQconnectPoll had said "writing". */
    rc = poll_update(pg, UV_WRITABLE);
    if (rc < 0) {
        set_detail(pg, "cannot watch the connection: %s", errstr(rc, eb, sizeof eb));
        connect_failed(pg, rc);
    }
out:
    explicit_bzero(password, sizeof password);
    free(keys);
    free(vals);
    buf_free(&opt);
}

/* --- host name resolution ------------------------------------------------- */

static bool is_numeric_host(const char *h)
{
    unsigned char a[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1;
}

static int list_add(struct buf *b, const char *item)
{
    if (b->len && buf_append_str(b, ",") < 0)
        return -EMSGSIZE;
    return buf_append_str(b, item ? item : "");
}

/* Every name is resolved (or failed): give libpq one host/hostaddr pair per
 * address, in order, so it tries them all as it would have itself. */
static void hosts_free(struct pg_async *pg)
{
    free(pg->hosts);
    pg->hosts = NULL;
    pg->nhosts = 0;
}

static void resolved_all(struct pg_async *pg)
{
    struct buf hb, ab, pb, errs;
    const char *port = param_get(pg, "port");
    char *ports_copy = NULL;
    const char *ports[PG_ASYNC_HOSTS_MAX];
    int nports = 0, emitted = 0, rc = 0;

    buf_init(&hb, LIST_MAX);
    buf_init(&ab, LIST_MAX);
    buf_init(&pb, LIST_MAX);
    buf_init(&errs, PG_ASYNC_DETAIL_MAX);
    if (port && strchr(port, ',')) {
        ports_copy = strdup(port);
        if (!ports_copy) {
            set_detail(pg, "out of memory");
            connect_failed(pg, -ENOMEM);
            goto out;
        }
        for (char *p = ports_copy; p && nports < PG_ASYNC_HOSTS_MAX;) {
            char *comma = strchr(p, ',');
            if (comma)
                *comma = '\0';
            ports[nports++] = p;
            p = comma ? comma + 1 : NULL;
        }
    }
    for (int i = 0; i < pg->nhosts; i++) {
        const struct pg_hostent *h = &pg->hosts[i];
        const char *pi = nports ? ports[i] : NULL;
        if (!h->resolve) {
            rc |= list_add(&hb, h->name) | list_add(&ab, "") | (nports ? list_add(&pb, pi) : 0);
            emitted++;
            continue;
        }
        if (h->err) {
            buf_printf(&errs, "%scould not resolve host name \"%s\": %s", errs.len ? "; " : "",
                       h->name, uv_strerror(h->err));
            continue;
        }
        for (int a = 0; a < h->naddrs; a++) {
            rc |= list_add(&hb, h->name) | list_add(&ab, h->addrs[a]) |
                  (nports ? list_add(&pb, pi) : 0);
            emitted++;
        }
    }
    if (rc) {
        set_detail(pg, "host list longer than %d bytes", LIST_MAX);
        connect_failed(pg, -EINVAL);
        goto out;
    }
    if (emitted == 0) {
        set_detail(pg, "%s", errs.data ? errs.data : "no address");
        connect_failed(pg, -EHOSTUNREACH);
        goto out;
    }
    if (errs.len)
        log_ev(LOG_WARN, "pg-resolve-failed", errs.data, { "pg", pg->name });
    connect_start(pg, hb.data, ab.data, nports ? pb.data : NULL);
out:
    free(ports_copy);
    buf_free(&hb);
    buf_free(&ab);
    buf_free(&pb);
    buf_free(&errs);
    hosts_free(pg);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *ai)
{
    struct pg_gai *g = (struct pg_gai *)req;
    struct pg_async *pg = g->pg;
    pg->gai_pending--;
    if (g->gen == pg->gen && pg->state == PG_RESOLVING) {
        struct pg_hostent *h = &pg->hosts[g->idx];
        pg->gai[g->idx] = NULL;
        h->done = true;
        h->err = status;
        for (struct addrinfo *p = ai; status == 0 && p && h->naddrs < PG_ASYNC_ADDRS_PER_HOST;
             p = p->ai_next) {
            char *dst = h->addrs[h->naddrs];
            if (p->ai_family == AF_INET &&
                uv_ip4_name((const struct sockaddr_in *)p->ai_addr, dst, INET6_ADDRSTRLEN) == 0)
                h->naddrs++;
            else if (p->ai_family == AF_INET6 &&
                     uv_ip6_name((const struct sockaddr_in6 *)p->ai_addr, dst, INET6_ADDRSTRLEN) ==
                         0)
                h->naddrs++;
        }
        if (status == 0 && h->naddrs == 0)
            h->err = UV_EAI_NODATA;
        bool all = true;
        for (int i = 0; i < pg->nhosts; i++)
            all = all && (!pg->hosts[i].resolve || pg->hosts[i].done);
        if (all)
            resolved_all(pg);
    }
    uv_freeaddrinfo(ai);
    free(g);
    maybe_finish_close(pg);
}

/* 0: nothing to resolve; 1: resolving (or already moved on); <0: error with
 * the detail set. */
static int resolve_start(struct pg_async *pg)
{
    const char *host = param_get(pg, "host");
    const char *hostaddr = param_get(pg, "hostaddr");
    int started = 0;
    bool any = false;

    if (!host || !*host || (hostaddr && *hostaddr))
        return 0;
    free(pg->hosts_copy);
    pg->hosts_copy = strdup(host);
    if (!pg->hosts_copy) {
        set_detail(pg, "out of memory");
        return -ENOMEM;
    }
    hosts_free(pg);
    pg->hosts = calloc(PG_ASYNC_HOSTS_MAX, sizeof *pg->hosts);
    if (!pg->hosts) {
        set_detail(pg, "out of memory");
        return -ENOMEM;
    }
    for (char *p = pg->hosts_copy; p;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (pg->nhosts == PG_ASYNC_HOSTS_MAX) {
            set_detail(pg, "more than %d entries in host", PG_ASYNC_HOSTS_MAX);
            return -EINVAL;
        }
        struct pg_hostent *h = &pg->hosts[pg->nhosts++];
        h->name = p;
        h->resolve = *p && *p != '/' && *p != '@' && !is_numeric_host(p);
        any = any || h->resolve;
        p = comma ? comma + 1 : NULL;
    }
    if (!any) {
        hosts_free(pg);
        return 0;
    }
    const char *port = param_get(pg, "port");
    if (port && strchr(port, ',')) {
        int np = 1;
        for (const char *c = port; *c; c++)
            np += *c == ',';
        if (np != pg->nhosts) {
            set_detail(pg, "port has %d entries but host has %d", np, pg->nhosts);
            return -EINVAL;
        }
    }
    pg->state = PG_RESOLVING;
    for (int i = 0; i < pg->nhosts; i++) {
        struct pg_hostent *h = &pg->hosts[i];
        if (!h->resolve)
            continue;
        struct pg_gai *g = calloc(1, sizeof *g);
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
        int rc = g ? 0 : UV_ENOMEM;
        if (g) {
            g->pg = pg;
            g->gen = pg->gen;
            g->idx = i;
            rc = uv_getaddrinfo(pg->loop, &g->req, on_resolved, h->name, NULL, &hints);
        }
        if (rc < 0) {
            free(g);
            h->done = true;
            h->err = rc;
            continue;
        }
        pg->gai[i] = g;
        pg->gai_pending++;
        started++;
    }
    if (started == 0)
        resolved_all(pg);
    return 1;
}

/* --- queries ----------------------------------------------------------------- */

static int rows_append(struct pg_async *pg, const PGresult *row)
{
    int nf = PQnfields(row);
    for (int f = 0; f < nf; f++)
        pg->rows_bytes += (size_t)PQgetlength(row, 0, f) + FIELD_OVERHEAD;
    pg->rows_bytes += FIELD_OVERHEAD;
    if (pg->rows_bytes > pg->max_result_bytes)
        return -EMSGSIZE;
    if (!pg->rows) {
        pg->rows = PQcopyResult(row, PG_COPYRES_ATTRS);
        if (!pg->rows)
            return -ENOMEM;
    }
    /* A row of zero columns cannot be stored with PQsetvalue; such rows
     * ("select from t") are dropped, only their count would be lost. */
    int tup = PQntuples(pg->rows);
    for (int f = 0; f < nf; f++) {
        int ok = PQgetisnull(row, 0, f)
                     ? PQsetvalue(pg->rows, tup, f, NULL, -1)
                     : PQsetvalue(pg->rows, tup, f, PQgetvalue(row, 0, f), PQgetlength(row, 0, f));
        if (!ok)
            return -ENOMEM;
    }
    return 0;
}

/* The query is over with this error and the connection with it. */
static void query_abort(struct pg_async *pg, int status, const char *event)
{
    uv_timer_stop(&pg->timer);
    conn_drop(pg);
    if (pg->res) {
        PQclear(pg->res);
        pg->res = NULL;
    }
    pg->state = PG_IDLE;
    log_failure(pg, event, status);
    finish(pg, status);
}

/* Takes res. Returns -1 when the query was aborted. */
static int handle_result(struct pg_async *pg, PGresult *res)
{
    int rc = 0;
    switch (PQresultStatus(res)) {
    case PGRES_SINGLE_TUPLE:
        if (!pg->failed)
            rc = rows_append(pg, res);
        PQclear(res);
        if (rc == -EMSGSIZE) {
            set_detail(pg, "result larger than %zu bytes; connection closed", pg->max_result_bytes);
            query_abort(pg, rc, "pg-query-failed");
            return -1;
        }
        if (rc < 0) {
            set_detail(pg, "out of memory");
            query_abort(pg, rc, "pg-query-failed");
            return -1;
        }
        return 0;
    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
    case PGRES_EMPTY_QUERY:
        if (pg->rows || pg->failed) {
            PQclear(res); /* the rows came one by one; this is the empty end marker */
        } else {
            if (pg->res)
                PQclear(pg->res);
            pg->res = res;
        }
        return 0;
    case PGRES_FATAL_ERROR:
    case PGRES_NONFATAL_ERROR:
        if (!pg->failed) {
            const char *ss = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
            pg->failed = true;
            snprintf(pg->sqlstate, sizeof pg->sqlstate, "%s", ss && is_sqlstate(ss) ? ss : "");
            set_detail(pg, "%s", PQresultErrorMessage(res));
            pg->fatal = sev && (!strcmp(sev, "FATAL") || !strcmp(sev, "PANIC"));
            if (pg->rows) {
                PQclear(pg->rows);
                pg->rows = NULL;
            }
        }
        PQclear(res);
        return 0;
    default:
        /* COPY and the like: no way back to a usable state but closing. */
        set_detail(pg, "unexpected result %s; connection closed", PQresStatus(PQresultStatus(res)));
        PQclear(res);
        query_abort(pg, -EPROTO, "pg-query-failed");
        return -1;
    }
}

static void query_done(struct pg_async *pg)
{
    char eb[128];
    int status = 0;
    uv_timer_stop(&pg->timer);
    if (pg->failed) {
        if (pg->fatal || PQstatus(pg->conn) != CONNECTION_OK) {
            if (!pg->detail[0])
                set_detail(pg, "connection lost");
            query_abort(pg, -ECONNRESET, "pg-connection-lost");
            return;
        }
        status = -EREMOTEIO;
        log_failure(pg, "pg-query-failed", status);
    } else if (pg->rows) {
        if (pg->res)
            PQclear(pg->res);
        pg->res = pg->rows;
        pg->rows = NULL;
    }
    pg->state = PG_READY;
    int rc = poll_update(pg, UV_READABLE);
    if (rc < 0) {
        /* The result stands; the connection does not. */
        log_ev(pg->quiet ? LOG_DEBUG : LOG_WARN, "pg-connection-lost", errstr(rc, eb, sizeof eb),
               { "pg", pg->name });
        conn_drop(pg);
        pg->state = PG_IDLE;
    }
    finish(pg, status);
}

static void query_io(struct pg_async *pg, int events)
{
    char eb[128];
    /* A failed read shows up as an error result below. */
    if (events & UV_READABLE)
        (void)PQconsumeInput(pg->conn);
    if (pg->flushing)
        pg->flushing = PQflush(pg->conn) == 1;
    /* PQisBusy is false once the connection is dropped, so this ends. */
    while (!PQisBusy(pg->conn)) {
        PGresult *res = PQgetResult(pg->conn);
        if (!res) {
            query_done(pg);
            return;
        }
        if (handle_result(pg, res) < 0)
            return;
    }
    int rc = poll_update(pg, UV_READABLE | (pg->flushing ? UV_WRITABLE : 0));
    if (rc < 0) {
        set_detail(pg, "cannot watch the connection: %s", errstr(rc, eb, sizeof eb));
        query_abort(pg, rc == -ENOTCONN ? -ECONNRESET : rc, "pg-connection-lost");
    }
}

static void query_timed_out(struct pg_async *pg)
{
    set_detail(pg,
               "query timed out after %" PRIu32 " ms; connection closed (the server abandons "
               "the query when it notices)",
               pg->op_timeout_ms);
    pg->sqlstate[0] = '\0';
    query_abort(pg, -ETIMEDOUT, "pg-query-timeout");
}

/* Idle: only the server closing (restart, idle timeout, terminate) or
 * asynchronous messages. */
static void idle_read(struct pg_async *pg)
{
    if (!PQconsumeInput(pg->conn) || PQstatus(pg->conn) != CONNECTION_OK) {
        char msg[PG_ASYNC_DETAIL_MAX];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(pg->conn));
        trim_end(msg);
        log_ev(pg->quiet ? LOG_DEBUG : LOG_WARN, "pg-connection-lost", msg, { "pg", pg->name });
        conn_drop(pg);
        pg->state = PG_IDLE;
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(pg->conn)) != NULL)
        PQfreemem(n);
}

/* --- loop callbacks ------------------------------------------------------- */

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct pg_async *pg = h->data;
    if (h != pg->poll)
        return;
    if (status < 0)
        events = UV_READABLE | UV_WRITABLE; /* let libpq find and report the error */
    switch (pg->state) {
    case PG_CONNECTING:
        connect_step(pg);
        break;
    case PG_QUERY:
        query_io(pg, events);
        break;
    case PG_READY:
        idle_read(pg);
        break;
    default:
        break;
    }
}

static void on_timer(uv_timer_t *t)
{
    struct pg_async *pg = t->data;
    if (pg->pending) {
        deliver(pg);
        return;
    }
    switch (pg->state) {
    case PG_RESOLVING:
    case PG_CONNECTING:
        connect_timed_out(pg);
        break;
    case PG_QUERY:
        query_timed_out(pg);
        break;
    default:
        break;
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    struct pg_async *pg = h->data;
    pg->open_handles--;
    maybe_finish_close(pg);
}

static void pg_free(struct pg_async *pg)
{
    for (size_t i = 0; i < pg->nparams; i++) {
        free(pg->keys[i]);
        free(pg->vals[i]);
    }
    free(pg->keys);
    free(pg->vals);
    free(pg->password_file);
    free(pg->name);
    free(pg->hosts_copy);
    free(pg->hosts);
    if (pg->res)
        PQclear(pg->res);
    if (pg->rows)
        PQclear(pg->rows);
    free(pg);
}

static void maybe_finish_close(struct pg_async *pg)
{
    if (pg->state != PG_CLOSING || pg->open_handles > 0 || pg->gai_pending > 0 || pg->freeing)
        return;
    pg->freeing = true;
    if (pg->pending)
        deliver(pg);
    if (pg->close_cb)
        pg->close_cb(pg, pg->close_arg);
    pg_free(pg);
}

/* --- public API ------------------------------------------------------------- */

int pg_async_new(uv_loop_t *loop, const struct pg_async_opts *o, pg_async_t **out)
{
    struct pg_async *pg = NULL;
    int result = 0;

    if (!loop || !o || !out || (o->nparams && !o->params))
        return -EINVAL;
    *out = NULL;
    for (size_t i = 0; i < o->nparams; i++) {
        if (!o->params[i].key || !*o->params[i].key) {
            log_msgf(LOG_ERROR, "pg-bad-option", "empty connection parameter name");
            return -EINVAL;
        }
        if (strcmp(o->params[i].key, "password") == 0) {
            log_msgf(LOG_ERROR, "pg-bad-option",
                     "a literal password parameter is refused; use a password file");
            return -EINVAL;
        }
    }
    pg = calloc(1, sizeof *pg);
    if (!pg)
        return -ENOMEM;
    pg->loop = loop;
    pg->poll_fd = -1;
    pg->keys = calloc(o->nparams + 1, sizeof *pg->keys);
    pg->vals = calloc(o->nparams + 1, sizeof *pg->vals);
    if (!pg->keys || !pg->vals) {
        result = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < o->nparams; i++) {
        if (!o->params[i].value)
            continue;
        size_t k = pg->nparams;
        pg->keys[k] = strdup(o->params[i].key);
        pg->vals[k] = strdup(o->params[i].value);
        pg->nparams++;
        if (!pg->keys[k] || !pg->vals[k]) {
            result = -ENOMEM;
            goto out;
        }
    }
    if (o->password_file && !(pg->password_file = strdup(o->password_file))) {
        result = -ENOMEM;
        goto out;
    }
    pg->connect_timeout_ms = o->connect_timeout_ms;
    if (!pg->connect_timeout_ms) {
        const char *ct = param_get(pg, "connect_timeout");
        char *end = NULL;
        long s = ct ? strtol(ct, &end, 10) : 0;
        pg->connect_timeout_ms = (ct && *ct && end && *end == '\0' && s > 0 && s <= 86400)
                                     ? (uint32_t)s * 1000u
                                     : PG_ASYNC_CONNECT_TIMEOUT_MS;
    }
    pg->query_timeout_ms = o->query_timeout_ms ? o->query_timeout_ms : PG_ASYNC_QUERY_TIMEOUT_MS;
    pg->server_check_ms = o->server_check_ms ? o->server_check_ms : PG_ASYNC_SERVER_CHECK_MS;
    pg->max_result_bytes = o->max_result_bytes ? o->max_result_bytes : PG_ASYNC_MAX_RESULT_BYTES;
    const char *name = o->name ? o->name : param_get(pg, "host");
    pg->name = strdup(name ? name : "postgres");
    pg->quiet = o->quiet;
    if (!pg->name) {
        result = -ENOMEM;
        goto out;
    }
    result = uv_timer_init(loop, &pg->timer);
    if (result < 0)
        goto out;
    pg->timer.data = pg;
    pg->open_handles = 1;
    pg->state = PG_IDLE;
    *out = pg;
out:
    if (result < 0)
        pg_free(pg);
    return result;
}

int pg_async_connect(pg_async_t *pg, pg_async_cb cb, void *arg)
{
    if (!pg || !cb || pg->state == PG_CLOSING)
        return -EINVAL;
    if (pg->op != OP_NONE)
        return -EBUSY;
    if (pg->state != PG_IDLE)
        return -EISCONN;
    op_begin(pg, OP_CONNECT, cb, arg, pg->connect_timeout_ms);
    pg->gen++;
    int rc = resolve_start(pg);
    if (rc == 0)
        connect_start(pg, NULL, NULL, NULL);
    else if (rc < 0)
        connect_failed(pg, rc);
    return 0;
}

int pg_async_query(pg_async_t *pg, const char *sql, int nparams, const char *const *params,
                   uint32_t timeout_ms, pg_async_cb cb, void *arg)
{
    char eb[128];
    if (!pg || !sql || !cb || nparams < 0 || (nparams > 0 && !params) || pg->state == PG_CLOSING)
        return -EINVAL;
    if (pg->op != OP_NONE)
        return -EBUSY;
    if (pg->state != PG_READY)
        return -ENOTCONN;
    op_begin(pg, OP_QUERY, cb, arg, timeout_ms ? timeout_ms : pg->query_timeout_ms);
    pg->state = PG_QUERY;
    if (!PQsendQueryParams(pg->conn, sql, nparams, NULL, params, NULL, NULL, 0)) {
        set_detail(pg, "%s", PQerrorMessage(pg->conn));
        if (PQstatus(pg->conn) != CONNECTION_OK) {
            query_abort(pg, -ECONNRESET, "pg-connection-lost");
        } else {
            pg->state = PG_READY;
            uv_timer_stop(&pg->timer);
            log_failure(pg, "pg-query-failed", -EPROTO);
            finish(pg, -EPROTO);
        }
        return 0;
    }
    /* Rows arrive one by one, so their total can be capped. */
    (void)PQsetSingleRowMode(pg->conn);
    pg->flushing = PQflush(pg->conn) == 1;
    int rc = poll_update(pg, UV_READABLE | (pg->flushing ? UV_WRITABLE : 0));
    if (rc < 0) {
        set_detail(pg, "cannot watch the connection: %s", errstr(rc, eb, sizeof eb));
        query_abort(pg, rc == -ENOTCONN ? -ECONNRESET : rc, "pg-connection-lost");
    }
    return 0;
}

int pg_async_cancel(pg_async_t *pg)
{
    if (!pg || pg->state == PG_CLOSING)
        return -EINVAL;
    if (pg->op == OP_NONE)
        return -ENOENT;
    if (pg->pending)
        return -EALREADY;
    op_abort(pg, -ECANCELED,
             pg->op == OP_QUERY ? "query cancelled; connection closed" : "connect cancelled");
    log_ev(LOG_INFO, "pg-cancelled", pg->detail, { "pg", pg->name });
    return 0;
}

void pg_async_disconnect(pg_async_t *pg)
{
    if (!pg || pg->state == PG_CLOSING)
        return;
    if (pg->op != OP_NONE && !pg->pending) {
        op_abort(pg, -ECANCELED, "disconnected");
        return;
    }
    gai_abort(pg);
    conn_drop(pg);
    pg->state = PG_IDLE;
}

void pg_async_close(pg_async_t *pg, pg_async_close_cb close_cb, void *arg)
{
    if (!pg || pg->state == PG_CLOSING)
        return;
    pg->state = PG_CLOSING;
    pg->close_cb = close_cb;
    pg->close_arg = arg;
    if (pg->op != OP_NONE && !pg->pending)
        op_abort(pg, -ECANCELED, "connection object closed");
    gai_abort(pg);
    conn_drop(pg);
    uv_timer_stop(&pg->timer);
    uv_close((uv_handle_t *)&pg->timer, on_timer_closed);
}

bool pg_async_is_connected(const pg_async_t *pg)
{
    return pg && (pg->state == PG_READY || pg->state == PG_QUERY) && pg->conn &&
           PQstatus(pg->conn) == CONNECTION_OK;
}

PGconn *pg_async_pgconn(pg_async_t *pg)
{
    return pg_async_is_connected(pg) ? pg->conn : NULL;
}

const char *pg_async_name(const pg_async_t *pg)
{
    return pg ? pg->name : NULL;
}

/* --- values ----------------------------------------------------------------- */

static int field_text(const PGresult *res, int row, int col, const char **out)
{
    if (!res || row < 0 || col < 0 || row >= PQntuples(res) || col >= PQnfields(res))
        return -EINVAL;
    if (PQgetisnull(res, row, col))
        return -ENODATA;
    *out = PQgetvalue(res, row, col);
    return 0;
}

int pg_async_get_int64(const PGresult *res, int row, int col, int64_t *out)
{
    const char *s;
    int rc = field_text(res, row, col, &s);
    if (rc < 0)
        return rc;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0')
        return -EINVAL;
    if (errno == ERANGE)
        return -ERANGE;
    *out = (int64_t)v;
    return 0;
}

int pg_async_get_bool(const PGresult *res, int row, int col, bool *out)
{
    static const char *const yes[] = { "t", "true", "on", "1", "yes" };
    static const char *const no[] = { "f", "false", "off", "0", "no" };
    const char *s;
    int rc = field_text(res, row, col, &s);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

int pg_async_get_double(const PGresult *res, int row, int col, double *out)
{
    const char *s;
    int rc = field_text(res, row, col, &s);
    if (rc < 0)
        return rc;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0')
        return -EINVAL;
    if (errno == ERANGE || !isfinite(v))
        return -ERANGE;
    *out = v;
    return 0;
}

int pg_async_get_lsn(const PGresult *res, int row, int col, uint64_t *out)
{
    const char *s;
    int rc = field_text(res, row, col, &s);
    if (rc < 0)
        return rc;
    return pg_async_lsn_parse(s, out);
}

static int hex_part(const char *s, size_t *len, uint32_t *v)
{
    uint32_t x = 0;
    size_t n = 0;
    for (;; n++) {
        char c = s[n];
        uint32_t d;
        if (c >= '0' && c <= '9')
            d = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (uint32_t)(c - 'A' + 10);
        else
            break;
        if (n == 8)
            return -EINVAL; /* more than 32 bits */
        x = (x << 4) | d;
    }
    if (n == 0)
        return -EINVAL;
    *len = n;
    *v = x;
    return 0;
}

int pg_async_lsn_parse(const char *s, uint64_t *out)
{
    size_t n1, n2;
    uint32_t hi, lo;
    if (!s || !out)
        return -EINVAL;
    if (hex_part(s, &n1, &hi) < 0 || s[n1] != '/')
        return -EINVAL;
    if (hex_part(s + n1 + 1, &n2, &lo) < 0 || s[n1 + 1 + n2] != '\0')
        return -EINVAL;
    *out = ((uint64_t)hi << 32) | lo;
    return 0;
}

int pg_async_lsn_format(uint64_t lsn, char *buf, size_t len)
{
    if (!buf || len == 0)
        return -ENOSPC;
    int n = snprintf(buf, len, "%" PRIX32 "/%" PRIX32, (uint32_t)(lsn >> 32), (uint32_t)lsn);
    if (n < 0 || (size_t)n >= len) {
        buf[0] = '\0';
        return -ENOSPC;
    }
    return 0;
}
