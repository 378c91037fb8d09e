/* Non-blocking PostgreSQL client on libuv: one libpq connection driven by
 * uv_poll and uv_timer, so that probes and failover actions can talk to
 * servers in several datacenters from one loop thread.
 *
 * Nothing here blocks the loop and every step is bounded in time:
 * - connect: PQconnectStartParams + PQconnectPoll on a uv_poll of PQsocket().
 *   libpq may replace the socket while connecting (next host or address,
 *   SSL or GSS retry); the poll handle follows it. libpq's connect_timeout
 *   is not enforced in non-blocking mode, so our own timer bounds the whole
 *   attempt (a server that accepts TCP and never answers ends in -ETIMEDOUT).
 * - host names: libpq resolves them with blocking getaddrinfo(), so names in
 *   "host" are resolved first with uv_getaddrinfo (thread pool, within the
 *   connect deadline) and handed to libpq as "hostaddr"; "host" keeps the
 *   name for certificate checks and .pgpass. Each name expands to at most
 *   PG_ASYNC_ADDRS_PER_HOST addresses, tried in order. Give "hostaddr"
 *   yourself to skip this. (PGHOST from the environment is not resolved
 *   here: do not put a name there.)
 * - queries: PQsendQueryParams (text parameters and results) in single-row
 *   mode, PQflush until sent, PQconsumeInput/PQisBusy/PQgetResult on
 *   readability, with a per-query timeout.
 *
 * Timeouts and cancel close the connection. PQcancel in PostgreSQL 15 is
 * blocking (PQcancelStart is 17+) and a server that accepts TCP and never
 * answers would hold it forever: on a thread-pool thread that cannot be
 * bounded, and libuv's pool is 4 threads shared with DNS and files. Closing
 * is immediate and bounded. So that the server also stops working on the
 * abandoned query, every session is started with
 * client_connection_check_interval (PostgreSQL 14+, see server_check_ms):
 * the backend then sees the closed socket within that interval and ends
 * itself. The price is a reconnect after a timeout, which is rare.
 *
 * Not possible with libpq: binding a local source address (libpq has no
 * option for it). Route by destination instead.
 *
 * A closed connection helps only if the FIN reaches the server: across a
 * partition the server keeps going until its own TCP keepalive gives up
 * (as it would with PQcancel, whose request would not arrive either).
 *
 * While connected, the object watches its socket (to notice a server that
 * closes an idle connection), so it keeps the loop alive until closed or
 * disconnected.
 *
 * Secrets: the password comes from a file read at each connect (first line,
 * size-capped); our copy is wiped right after PQconnectStartParams (libpq
 * keeps its own copy inside the PGconn until the connection is dropped). It
 * is never logged and never part of an error detail. A literal "password"
 * parameter is refused.
 *
 * Blocking that remains, by libpq's design: reading the password file,
 * .pgpass and SSL key/certificate files (local files). GSSAPI can block on a
 * KDC, so gssencmode defaults to "disable" unless the caller sets it.
 *
 * Error codes (negative errno), in results and return values:
 *   -ETIMEDOUT     connect or query deadline passed (connection closed)
 *   -ECONNREFUSED, -EHOSTUNREACH, -ENETUNREACH, -ENOENT (no unix socket)
 *                  the connect failed at the socket level
 *   -EACCES        authentication failed (SQLSTATE class 28) or a password
 *                  is needed and none was given
 *   -EAGAIN        the server cannot take us now (57P03 starting up or
 *                  shutting down, 53300 too many connections)
 *   -EREMOTEIO     the server reported an SQL error (see sqlstate); after a
 *                  query the connection stays usable
 *   -ECONNRESET    the connection broke during a query (or the server sent
 *                  a FATAL error such as 57P01)
 *   -EMSGSIZE      the result exceeded max_result_bytes (connection closed)
 *   -EPROTO        anything libpq reported that fits none of the above
 *                  (SSL failure, unexpected COPY, ...)
 *   -ECANCELED     pg_async_cancel(), pg_async_disconnect() or
 *                  pg_async_close() aborted the operation
 * Each failure is logged once here (event pg-connect-failed,
 * pg-query-timeout, ...); callers just propagate.
 */
#ifndef TRIAD_PG_ASYNC_H
#define TRIAD_PG_ASYNC_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define PG_ASYNC_CONNECT_TIMEOUT_MS 10000u
#define PG_ASYNC_QUERY_TIMEOUT_MS   10000u
#define PG_ASYNC_SERVER_CHECK_MS    1000
#define PG_ASYNC_SERVER_CHECK_OFF   (-1)
#define PG_ASYNC_MAX_RESULT_BYTES   (1024u * 1024u)
#define PG_ASYNC_PASSWORD_MAX       1024 /* bytes of the password file's first line */
#define PG_ASYNC_HOSTS_MAX          16   /* entries in a "host" list */
#define PG_ASYNC_ADDRS_PER_HOST     8
#define PG_ASYNC_DETAIL_MAX         1024 /* error details are cut to this */
#define PG_ASYNC_LSN_STRLEN         18   /* "FFFFFFFF/FFFFFFFF" and the NUL */

typedef struct pg_async pg_async_t;

/* One libpq connection keyword and its value, e.g. {"host", "10.1.0.5"}. */
struct pg_async_param {
    const char *key;
    const char *value;
};

struct pg_async_opts {
    /* libpq keywords as given by the caller: host, port, dbname, user,
     * sslmode, sslrootcert, application_name, target_session_attrs, ...
     * Copied by pg_async_new(). dbname is taken literally (never expanded
     * as a conninfo string). Refused: "password" (use password_file). */
    const struct pg_async_param *params;
    size_t nparams;
    /* File whose first line is the password; read at every connect. Refused
     * when readable by everyone. NULL: no password (peer, cert, trust,
     * .pgpass). */
    const char *password_file;
    /* Deadline for a whole connect (DNS, TCP, SSL, auth, every host).
     * 0: the "connect_timeout" parameter in seconds if given, else
     * PG_ASYNC_CONNECT_TIMEOUT_MS. */
    uint32_t connect_timeout_ms;
    /* Default per-query timeout when pg_async_query() is given 0.
     * 0: PG_ASYNC_QUERY_TIMEOUT_MS. */
    uint32_t query_timeout_ms;
    /* client_connection_check_interval asked of the server, so it abandons
     * a query whose connection we closed. 0: PG_ASYNC_SERVER_CHECK_MS;
     * PG_ASYNC_SERVER_CHECK_OFF: not set (needed for servers before 14,
     * which refuse the unknown setting). */
    int32_t server_check_ms;
    /* Cap on a result's size (field bytes plus a small per-field overhead).
     * 0: PG_ASYNC_MAX_RESULT_BYTES. libpq itself still buffers one row
     * before we can count it. */
    size_t max_result_bytes;
    /* Label in logs ("dc1/synapse"); default: the host. */
    const char *name;
    /* Log failures at debug level only: the caller reports them (a probe
     * failing every 500 ms must not flood the log). */
    bool quiet;
};

/* What a connect or a query ended with. Valid during the callback only.
 * Rows arrive one by one (single-row mode, so the size cap can be applied)
 * and are put back together in one PGRES_TUPLES_OK result; for such results
 * PQcmdStatus/PQcmdTuples are empty (use PQntuples), and rows of zero
 * columns ("select from t") are not kept. Commands keep their PQcmdTuples. */
struct pg_async_result {
    int status;           /* 0 or a negative errno (see above) */
    PGresult *res;        /* query success only: PGRES_TUPLES_OK or PGRES_COMMAND_OK */
    const char *sqlstate; /* 5 characters when the server sent one, else "" */
    const char *detail;   /* human-readable; "" on success; never holds the password */
    uint64_t elapsed_us;  /* since pg_async_connect()/pg_async_query() */
};

/* Connect and query completion. `res` is PQclear()ed after the callback
 * returns; to keep it, copy the pointer and set r->res = NULL. The
 * callback may call anything here, including pg_async_query() (the next
 * query), pg_async_connect() (after a failure) and pg_async_close(). */
typedef void (*pg_async_cb)(pg_async_t *pg, struct pg_async_result *r, void *arg);
typedef void (*pg_async_close_cb)(pg_async_t *pg, void *arg);

/* Create a connection object (not connected). Returns 0, -EINVAL (bad
 * options; logged) or -ENOMEM. */
int pg_async_new(uv_loop_t *loop, const struct pg_async_opts *opts, pg_async_t **out);

/* Start connecting. 0: cb runs exactly once, later, from the loop (never
 * from inside this call). Also used to reconnect after any failure,
 * timeout or disconnect. Errors returned (cb not called): -EBUSY (a connect
 * or query is in progress), -EISCONN (already connected), -EINVAL (closing
 * or cb NULL). */
int pg_async_connect(pg_async_t *pg, pg_async_cb cb, void *arg);

/* Send one statement; params are text values (NULL entries are SQL NULL),
 * referenced as $1..$n. timeout_ms 0: the connection's default. One query
 * at a time per connection: a second one while the first is in flight is
 * refused with -EBUSY (chain queries from the callback). 0: cb runs exactly
 * once, later. Also returned: -ENOTCONN (not connected: connect first),
 * -EINVAL (closing, bad arguments). */
int pg_async_query(pg_async_t *pg, const char *sql, int nparams, const char *const *params,
                   uint32_t timeout_ms, pg_async_cb cb, void *arg);

/* Abort the connect or query in flight: its cb runs with -ECANCELED and the
 * connection is closed (see above why). Returns 0, -ENOENT (nothing in
 * flight) or -EALREADY (it finished and its cb is about to run). */
int pg_async_cancel(pg_async_t *pg);

/* Close the connection, aborting anything in flight like pg_async_cancel.
 * The object stays usable: pg_async_connect() again. */
void pg_async_disconnect(pg_async_t *pg);

/* Abort anything in flight (its cb runs with -ECANCELED, or with its real
 * outcome if that was already known), close every handle, then call
 * close_cb (may be NULL) and free the object. Safe from inside any
 * callback. Do not use pg after calling this, except that a pending cb
 * still receives it. */
void pg_async_close(pg_async_t *pg, pg_async_close_cb close_cb, void *arg);

/* Connected and not broken as far as we know (an idle connection that the
 * server closes is noticed and dropped). */
bool pg_async_is_connected(const pg_async_t *pg);

/* The libpq connection while connected, else NULL: for PQbackendPID,
 * PQserverVersion, PQparameterStatus and the like. Do not call anything
 * that sends, receives or blocks. */
PGconn *pg_async_pgconn(pg_async_t *pg);

const char *pg_async_name(const pg_async_t *pg);

/* Single values from a result, by row and column. 0 on success; -EINVAL
 * (no such row/column, or not parseable), -ENODATA (SQL NULL), -ERANGE
 * (out of range). bool accepts PostgreSQL's "t"/"f" and the spellings of
 * SHOW (on/off), true/false, yes/no, 1/0. double refuses NaN/Infinity
 * (-ERANGE). */
int pg_async_get_int64(const PGresult *res, int row, int col, int64_t *out);
int pg_async_get_bool(const PGresult *res, int row, int col, bool *out);
int pg_async_get_double(const PGresult *res, int row, int col, double *out);
int pg_async_get_lsn(const PGresult *res, int row, int col, uint64_t *out);

/* pg_lsn text ("16/B374D848": two hex numbers of 1 to 8 digits) to the
 * 64-bit position and back (upper-case, as PostgreSQL prints it). Byte
 * distances between LSNs are plain subtraction. parse: 0 or -EINVAL.
 * format: 0 or -ENOSPC (buf needs PG_ASYNC_LSN_STRLEN). */
int pg_async_lsn_parse(const char *s, uint64_t *out);
int pg_async_lsn_format(uint64_t lsn, char *buf, size_t len);

#endif
