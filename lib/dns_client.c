/* DNS client: one c-ares channel per query, driven by a libuv loop.
 *
 * Owns each query's c-ares channel, its uv_polls (one per socket c-ares
 * reports through ARES_OPT_SOCK_STATE_CB), its uv_timer (c-ares' next
 * retransmission, bounded by the query's deadline) and its parsed answer.
 * A query is decided (answer, timeout, cancel) once; then its channel is
 * destroyed, its handles closed, and the user callback runs from the last
 * close callback, after which the query is freed.
 *
 * Why a channel per query: c-ares options (server, tries, timeouts, source
 * address) are per channel, queries are rare (probes, a few per second), and
 * a hostile server then cannot touch any other query's state.
 * Why ldns for parsing: c-ares 1.18's ares_parse_* helpers give no TTL for
 * TXT, NS, SOA or CNAME records.
 */
#include "lib/dns_client.h"

#include <arpa/inet.h>
#include <ares.h>
#include <errno.h>
#include <ldns/ldns.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "lib/buf.h"
#include "lib/dns_wire.h"
#include "lib/log.h"

#define DNS_EDNS_SIZE 1232 /* the DNS flag day 2020 value */
#define DNS_NAME_MAX  254
#define DNS_VALUE_MAX (4 * 65536) /* escaped text of the largest rdata */

struct dns_sock {
    uv_poll_t poll;
    struct dns_query *q;
    ares_socket_t fd;
    struct dns_sock *next;
};

struct dns_query {
    struct dns_client *client;
    struct dns_query *prev, *next;
    ares_channel channel;
    uv_timer_t timer;
    struct dns_sock *socks;
    int n_open; /* handles whose close callback has not run */
    dns_done_cb cb;
    void *arg;
    int decided;
    int torn_down;
    uint64_t start_ns;
    uint64_t deadline; /* uv_now() time */
    uint32_t timeout_ms;
    int tries;
    uint16_t type;
    char name[DNS_NAME_MAX + 1];
    /* Source address, bound by us (not ares_set_local_ip*) to learn why a
     * bind fails: c-ares would only say "connection refused". */
    struct sockaddr_storage local;
    socklen_t local_len;
    char local_text[INET6_ADDRSTRLEN];
    int bind_errno;

    int result;
    int rcode;
    int aa;
    int truncated;
    struct dns_record *records;
    size_t n_records;
    uint64_t elapsed_ms;
    char detail[DNS_DETAIL_MAX];
};

struct dns_client {
    uv_loop_t *loop;
    uv_timer_t handle; /* never started: makes close asynchronous */
    struct dns_query *queries;
    size_t n_queries;
    int closing;
    int handle_closed;
    dns_close_cb close_cb;
    void *close_arg;
};

static int dns_inited;

int dns_global_init(void)
{
    if (dns_inited)
        return 0;
    int st = ares_library_init(ARES_LIB_INIT_ALL);
    if (st != ARES_SUCCESS) {
        log_error("ares_library_init: %s", ares_strerror(st));
        return -EIO;
    }
    dns_inited = 1;
    return 0;
}

void dns_global_cleanup(void)
{
    if (!dns_inited)
        return;
    ares_library_cleanup();
    dns_inited = 0;
}

/* ---- names ---- */

static const struct {
    uint16_t type;
    const char *name;
} type_names[] = {
    { DNS_T_A, "A" },     { DNS_T_NS, "NS" },   { DNS_T_CNAME, "CNAME" }, { DNS_T_SOA, "SOA" },
    { DNS_T_PTR, "PTR" }, { DNS_T_MX, "MX" },   { DNS_T_TXT, "TXT" },     { DNS_T_AAAA, "AAAA" },
    { DNS_T_SRV, "SRV" }, { DNS_T_CAA, "CAA" },
};

uint16_t dns_type_parse(const char *s)
{
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++) {
        if (strcasecmp(s, type_names[i].name) == 0)
            return type_names[i].type;
    }
    return 0;
}

const char *dns_type_name(uint16_t type)
{
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++) {
        if (type_names[i].type == type)
            return type_names[i].name;
    }
    return NULL;
}

const char *dns_rcode_name(int rcode)
{
    static const char *const names[] = { "NOERROR",  "FORMERR", "SERVFAIL",
                                         "NXDOMAIN", "NOTIMP",  "REFUSED" };
    if (rcode >= 0 && rcode < (int)(sizeof names / sizeof names[0]))
        return names[rcode];
    return NULL;
}

/* ---- handles ---- */

static void client_maybe_finish(struct dns_client *c);

static void records_free(struct dns_query *q)
{
    for (size_t i = 0; i < q->n_records; i++) {
        free((char *)q->records[i].name);
        free((char *)q->records[i].value);
    }
    free(q->records);
    q->records = NULL;
    q->n_records = 0;
}

/* Last handle closed: report, then free. */
static void query_deliver(struct dns_query *q)
{
    struct dns_client *c = q->client;
    if (q->prev)
        q->prev->next = q->next;
    else
        c->queries = q->next;
    if (q->next)
        q->next->prev = q->prev;
    c->n_queries--;

    struct dns_result res;
    memset(&res, 0, sizeof res);
    res.result = q->result;
    res.detail = q->detail;
    res.rcode = q->rcode;
    res.authoritative = q->aa;
    res.truncated = q->truncated;
    res.records = q->records;
    res.n_records = q->n_records;
    res.elapsed_ms = q->elapsed_ms;
    if (q->result)
        log_debug("dns query %s %s failed: %s", q->name,
                  dns_type_name(q->type) ? dns_type_name(q->type) : "?", q->detail);
    q->cb(q, &res, q->arg);
    records_free(q);
    free(q);
    client_maybe_finish(c);
}

static void on_query_handle_closed(uv_handle_t *h)
{
    struct dns_query *q;
    if (h->type == UV_POLL) {
        struct dns_sock *s = h->data;
        q = s->q;
        free(s);
    } else {
        q = h->data;
    }
    if (--q->n_open == 0)
        query_deliver(q);
}

static void sock_close(struct dns_query *q, struct dns_sock *s)
{
    struct dns_sock **pp = &q->socks;
    while (*pp && *pp != s)
        pp = &(*pp)->next;
    if (*pp)
        *pp = s->next;
    uv_close((uv_handle_t *)&s->poll, on_query_handle_closed);
}

static void query_teardown(struct dns_query *q)
{
    if (q->torn_down)
        return;
    q->torn_down = 1;
    /* Calls back with ARES_EDESTRUCTION (ignored: decided) and reports every
     * socket as unwatched before closing it. */
    ares_destroy(q->channel);
    q->channel = NULL;
    while (q->socks)
        sock_close(q, q->socks);
    uv_close((uv_handle_t *)&q->timer, on_query_handle_closed);
}

static void decide(struct dns_query *q, int result, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void decide(struct dns_query *q, int result, const char *fmt, ...)
{
    if (q->decided)
        return;
    q->decided = 1;
    q->result = result;
    q->elapsed_ms = (uv_hrtime() - q->start_ns) / 1000000;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->detail, sizeof q->detail, fmt, ap);
    va_end(ap);
}

static void decide_timeout(struct dns_query *q)
{
    decide(q, -ETIMEDOUT, "timeout after %u ms (%d %s)", q->timeout_ms, q->tries,
           q->tries == 1 ? "try" : "tries");
}

/* ---- parsing ---- */

/* TXT: the strings concatenated, unprintable bytes as \DDD. */
static char *txt_value(const ldns_rr *rr)
{
    struct buf b;
    buf_init(&b, DNS_VALUE_MAX);
    buf_append_str(&b, "");
    for (size_t i = 0; i < ldns_rr_rd_count(rr); i++) {
        const ldns_rdf *rdf = ldns_rr_rdf(rr, i);
        const uint8_t *d = ldns_rdf_data(rdf);
        size_t n = ldns_rdf_size(rdf);
        if (ldns_rdf_get_type(rdf) != LDNS_RDF_TYPE_STR || n == 0)
            continue;
        size_t len = d[0] < n - 1 ? d[0] : n - 1;
        for (size_t k = 1; k <= len; k++) {
            if (d[k] < 0x20 || d[k] > 0x7e || d[k] == '\\')
                buf_printf(&b, "\\%03u", d[k]);
            else
                buf_append(&b, &d[k], 1);
        }
    }
    return buf_steal(&b);
}

/* Other types: ldns' presentation of each rdata field, space separated. */
static char *rdata_value(const ldns_rr *rr)
{
    struct buf b;
    buf_init(&b, DNS_VALUE_MAX);
    buf_append_str(&b, "");
    for (size_t i = 0; i < ldns_rr_rd_count(rr); i++) {
        char *s = ldns_rdf2str(ldns_rr_rdf(rr, i));
        if (!s)
            continue;
        if (i > 0)
            buf_append_str(&b, " ");
        buf_append_str(&b, s);
        free(s);
    }
    return buf_steal(&b);
}

static int parse_answer(struct dns_query *q, const unsigned char *abuf, int alen)
{
    int result = 0;
    ldns_pkt *pkt = NULL;
    if (dns_wire2pkt(&pkt, abuf, (size_t)alen) != LDNS_STATUS_OK) {
        result = -EBADMSG;
        goto out;
    }
    q->rcode = (int)ldns_pkt_get_rcode(pkt);
    q->aa = ldns_pkt_aa(pkt) ? 1 : 0;
    ldns_rr_list *an = ldns_pkt_answer(pkt);
    size_t n = an ? ldns_rr_list_rr_count(an) : 0;
    if (n > DNS_MAX_RECORDS) {
        n = DNS_MAX_RECORDS;
        q->truncated = 1;
    }
    if (n == 0)
        goto out;
    q->records = calloc(n, sizeof *q->records);
    if (!q->records) {
        result = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const ldns_rr *rr = ldns_rr_list_rr(an, i);
        struct dns_record *rec = &q->records[q->n_records];
        rec->type = (uint16_t)ldns_rr_get_type(rr);
        rec->ttl = ldns_rr_ttl(rr);
        rec->name = ldns_rdf2str(ldns_rr_owner(rr));
        rec->value = rec->type == DNS_T_TXT ? txt_value(rr) : rdata_value(rr);
        q->n_records++;
        if (!rec->name || !rec->value) {
            result = -ENOMEM;
            goto out;
        }
    }
out:
    if (pkt)
        ldns_pkt_free(pkt);
    return result;
}

static void decide_rcode(struct dns_query *q)
{
    const char *name = dns_rcode_name(q->rcode);
    switch (q->rcode) {
    case DNS_RCODE_NOERROR:
        if (q->n_records == 0)
            decide(q, 0, "NODATA");
        else
            decide(q, 0, "NOERROR");
        break;
    case DNS_RCODE_NXDOMAIN:
        decide(q, -ENOENT, "%s", name);
        break;
    case DNS_RCODE_SERVFAIL:
        decide(q, -EAGAIN, "%s", name);
        break;
    case DNS_RCODE_REFUSED:
        decide(q, -EACCES, "%s", name);
        break;
    case DNS_RCODE_NOTIMP:
        decide(q, -EOPNOTSUPP, "%s", name);
        break;
    case DNS_RCODE_FORMERR:
        decide(q, -EPROTO, "%s", name);
        break;
    default:
        decide(q, -EPROTO, "rcode %d", q->rcode);
        break;
    }
}

/* c-ares' query callback: record the outcome only (no ares_destroy here). */
static void on_ares_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    struct dns_query *q = arg;
    if (q->decided)
        return;
    if (abuf && alen > 0) {
        int rc = parse_answer(q, abuf, alen);
        if (rc == -EBADMSG)
            decide(q, rc, "malformed answer");
        else if (rc < 0)
            decide(q, rc, "out of memory");
        else
            decide_rcode(q);
        return;
    }
    switch (status) {
    case ARES_ETIMEOUT:
        decide_timeout(q);
        break;
    case ARES_ECONNREFUSED:
        if (q->bind_errno)
            decide(q, -q->bind_errno, "cannot bind source address %s: %s", q->local_text,
                   strerror(q->bind_errno));
        else
            decide(q, -ECONNREFUSED, "connection refused");
        break;
    case ARES_EBADRESP:
        decide(q, -EBADMSG, "malformed answer");
        break;
    case ARES_ENOMEM:
        decide(q, -ENOMEM, "out of memory");
        break;
    case ARES_EBADNAME:
        decide(q, -EINVAL, "bad name");
        break;
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
        decide(q, -ECANCELED, "cancelled");
        break;
    default:
        decide(q, -EIO, "c-ares: %s", ares_strerror(status));
        break;
    }
}

/* ---- driving c-ares ---- */

static void on_timer(uv_timer_t *t);

/* After each call into c-ares: finish, or wait for its next deadline. */
static void query_after_ares(struct dns_query *q)
{
    if (q->decided) {
        query_teardown(q);
        return;
    }
    uint64_t now = uv_now(q->client->loop);
    uint64_t left = q->deadline > now ? q->deadline - now : 0;
    struct timeval maxtv = { .tv_sec = (time_t)(left / 1000),
                             .tv_usec = (suseconds_t)((left % 1000) * 1000) };
    struct timeval tv;
    struct timeval *tvp = ares_timeout(q->channel, &maxtv, &tv);
    uint64_t ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
    uv_timer_start(&q->timer, on_timer, ms, 0);
}

static void on_timer(uv_timer_t *t)
{
    struct dns_query *q = t->data;
    if (q->torn_down)
        return;
    if (uv_now(q->client->loop) >= q->deadline) {
        decide_timeout(q);
    } else {
        ares_process_fd(q->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    }
    query_after_ares(q);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct dns_sock *s = h->data;
    struct dns_query *q = s->q;
    if (q->torn_down)
        return;
    ares_socket_t rfd = ARES_SOCKET_BAD;
    ares_socket_t wfd = ARES_SOCKET_BAD;
    /* On a poll error let c-ares read: it sees the socket error itself. */
    if (status < 0 || (events & UV_READABLE))
        rfd = s->fd;
    if (events & UV_WRITABLE)
        wfd = s->fd;
    ares_process_fd(q->channel, rfd, wfd);
    query_after_ares(q);
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns_query *q = data;
    struct dns_sock *s = q->socks;
    while (s && s->fd != fd)
        s = s->next;
    if (!readable && !writable) {
        /* c-ares closes fd right after this: stop watching it first. */
        if (s)
            sock_close(q, s);
        return;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) {
            log_error("dns: out of memory watching a socket");
            return;
        }
        int rc = uv_poll_init_socket(q->client->loop, &s->poll, fd);
        if (rc < 0) {
            log_error("dns: uv_poll_init_socket(%d): %s", (int)fd, uv_strerror(rc));
            free(s);
            return; /* the deadline still ends the query */
        }
        s->q = q;
        s->fd = fd;
        s->poll.data = s;
        s->next = q->socks;
        q->socks = s;
        q->n_open++;
    }
    int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
    int rc = uv_poll_start(&s->poll, events, on_poll);
    if (rc < 0)
        log_error("dns: uv_poll_start(%d): %s", (int)fd, uv_strerror(rc));
}

/* Called by c-ares for each new socket, before it connects. */
static int on_sock_config(ares_socket_t fd, int type, void *data)
{
    (void)type;
    struct dns_query *q = data;
    if (q->local_len == 0)
        return 0;
    if (bind(fd, (const struct sockaddr *)&q->local, q->local_len) < 0) {
        q->bind_errno = errno;
        return -1;
    }
    return 0;
}

/* ---- queries ---- */

struct server_addr {
    int family;
    union {
        struct in_addr v4;
        struct in6_addr v6;
    } a;
};

static int parse_addr(const char *s, struct server_addr *out)
{
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, s, &out->a.v4) == 1) {
        out->family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, s, &out->a.v6) == 1) {
        out->family = AF_INET6;
        return 0;
    }
    return -EINVAL;
}

/* c-ares doubles the per-try timeout after each try (with one server):
 * base * (2^tries - 1) = timeout makes all tries fit in the timeout. */
static int per_try_ms(uint32_t timeout_ms, int tries)
{
    uint32_t parts = (1u << tries) - 1;
    uint32_t base = timeout_ms / parts;
    return base ? (int)base : 1;
}

static int channel_init(struct dns_query *q, const struct dns_query_opts *o,
                        const struct server_addr *srv, const struct server_addr *local)
{
    struct ares_options opts;
    memset(&opts, 0, sizeof opts);
    opts.flags = ARES_FLAG_NOCHECKRESP | ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES | ARES_FLAG_EDNS |
                 (o->no_recurse ? ARES_FLAG_NORECURSE : 0);
    opts.timeout = per_try_ms(q->timeout_ms, q->tries);
    opts.tries = q->tries;
    opts.ndomains = 0;
    opts.domains = NULL;
    opts.lookups = (char *)"b";
    opts.ednspsz = DNS_EDNS_SIZE;
    opts.sock_state_cb = on_sock_state;
    opts.sock_state_cb_data = q;
    /* Nothing from the system resolver configuration applies. */
    opts.resolvconf_path = (char *)"/dev/null";
    int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_DOMAINS |
               ARES_OPT_LOOKUPS | ARES_OPT_EDNSPSZ | ARES_OPT_SOCK_STATE_CB | ARES_OPT_RESOLVCONF;
    int st = ares_init_options(&q->channel, &opts, mask);
    if (st != ARES_SUCCESS) {
        log_error("dns: ares_init_options: %s", ares_strerror(st));
        q->channel = NULL;
        return st == ARES_ENOMEM ? -ENOMEM : -EIO;
    }
    struct ares_addr_port_node node;
    memset(&node, 0, sizeof node);
    node.family = srv->family;
    if (srv->family == AF_INET)
        node.addr.addr4 = srv->a.v4;
    else
        memcpy(&node.addr.addr6, &srv->a.v6, sizeof srv->a.v6);
    node.udp_port = o->port ? o->port : 53;
    node.tcp_port = node.udp_port;
    st = ares_set_servers_ports(q->channel, &node);
    if (st != ARES_SUCCESS) {
        log_error("dns: ares_set_servers_ports: %s", ares_strerror(st));
        return st == ARES_ENOMEM ? -ENOMEM : -EIO;
    }
    if (local && local->family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&q->local;
        sin->sin_family = AF_INET;
        sin->sin_addr = local->a.v4;
        q->local_len = sizeof *sin;
    } else if (local) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&q->local;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_addr = local->a.v6;
        q->local_len = sizeof *sin6;
    }
    if (local) {
        inet_ntop(local->family, &local->a, q->local_text, sizeof q->local_text);
        ares_set_socket_configure_callback(q->channel, on_sock_config, q);
    }
    return 0;
}

static int check_opts(const struct dns_query_opts *o, struct server_addr *srv,
                      struct server_addr *local)
{
    if (!o->server || parse_addr(o->server, srv) < 0) {
        log_error("dns: server must be a numeric address: %s", o->server ? o->server : "(none)");
        return -EINVAL;
    }
    size_t n = o->name ? strlen(o->name) : 0;
    if (n == 0 || n > DNS_NAME_MAX) {
        log_error("dns: bad query name");
        return -EINVAL;
    }
    if (o->type == 0) {
        log_error("dns: query type 0");
        return -EINVAL;
    }
    if (o->tries < 0 || o->tries > DNS_MAX_TRIES) {
        log_error("dns: tries must be 1..%d", DNS_MAX_TRIES);
        return -EINVAL;
    }
    if (o->local_addr) {
        if (parse_addr(o->local_addr, local) < 0 || local->family != srv->family) {
            log_error("dns: local_addr must be a numeric address of the server's family: %s",
                      o->local_addr);
            return -EINVAL;
        }
    }
    return 0;
}

int dns_query_start(struct dns_client *c, const struct dns_query_opts *o, dns_done_cb cb, void *arg,
                    struct dns_query **out)
{
    int result = 0;
    struct dns_query *q = NULL;
    struct server_addr srv, local;
    if (out)
        *out = NULL;
    if (!c || !o || !cb)
        return -EINVAL;
    if (c->closing)
        return -ESHUTDOWN;
    result = check_opts(o, &srv, &local);
    if (result < 0)
        return result;

    q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    q->client = c;
    q->cb = cb;
    q->arg = arg;
    q->rcode = -1;
    q->type = o->type;
    q->timeout_ms = o->timeout_ms ? o->timeout_ms : DNS_DEFAULT_TIMEOUT_MS;
    q->tries = o->tries ? o->tries : DNS_DEFAULT_TRIES;
    snprintf(q->name, sizeof q->name, "%s", o->name);
    result = channel_init(q, o, &srv, o->local_addr ? &local : NULL);
    if (result < 0)
        goto out;

    uv_timer_init(c->loop, &q->timer);
    q->timer.data = q;
    q->n_open = 1;
    q->next = c->queries;
    if (c->queries)
        c->queries->prev = q;
    c->queries = q;
    c->n_queries++;

    q->start_ns = uv_hrtime();
    uv_update_time(c->loop);
    q->deadline = uv_now(c->loop) + q->timeout_ms;
    /* May call on_ares_answer at once (e.g. the socket cannot be opened);
     * query_after_ares then tears down and the callback still comes later. */
    ares_query(q->channel, q->name, 1 /* IN */, q->type, on_ares_answer, q);
    query_after_ares(q);
    if (out)
        *out = q;
    return 0;
out:
    if (q->channel)
        ares_destroy(q->channel);
    free(q);
    return result;
}

void dns_query_cancel(struct dns_query *q)
{
    if (!q || q->decided)
        return;
    decide(q, -ECANCELED, "cancelled");
    query_teardown(q);
}

/* ---- client ---- */

int dns_client_new(uv_loop_t *loop, struct dns_client **out)
{
    *out = NULL;
    int result = dns_global_init();
    if (result < 0)
        return result;
    struct dns_client *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->loop = loop;
    uv_timer_init(loop, &c->handle);
    c->handle.data = c;
    *out = c;
    return 0;
}

size_t dns_client_active(const struct dns_client *c)
{
    return c->n_queries;
}

static void client_maybe_finish(struct dns_client *c)
{
    if (!c->closing || !c->handle_closed || c->n_queries > 0)
        return;
    dns_close_cb cb = c->close_cb;
    void *arg = c->close_arg;
    free(c);
    if (cb)
        cb(arg);
}

static void on_client_handle_closed(uv_handle_t *h)
{
    struct dns_client *c = h->data;
    c->handle_closed = 1;
    client_maybe_finish(c);
}

void dns_client_close(struct dns_client *c, dns_close_cb close_cb, void *arg)
{
    if (!c || c->closing)
        return;
    c->closing = 1;
    c->close_cb = close_cb;
    c->close_arg = arg;
    for (struct dns_query *q = c->queries; q; q = q->next)
        dns_query_cancel(q);
    uv_close((uv_handle_t *)&c->handle, on_client_handle_closed);
}
