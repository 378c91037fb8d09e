/* RFC 2136 UPDATE and TSIG-signed queries: one request per call, on a libuv
 * loop.
 *
 * Owns each request's signed packet (ldns), its UDP socket (connected, so
 * the kernel drops datagrams from anyone but the server and reports "port
 * unreachable"), its TCP connection for the fallback, two timers (the next
 * UDP retransmission, and the deadline over everything) and the parsed
 * answer. A request is decided once (answer, error, timeout, cancel); then
 * its handles are closed and the user callback runs from the last close
 * callback, so it never runs inside a start or cancel call.
 *
 * Time budget: UDP gets the first half of the timeout, split evenly over its
 * tries (a late answer to an earlier try still counts); TCP gets whatever is
 * left. A request larger than DNS_UPDATE_UDP_MAX starts on TCP.
 *
 * Why ldns: c-ares 1.18 cannot build UPDATE packets or TSIG records. ldns'
 * TSIG verification does not look at the signing time, the key name or the
 * algorithm of the answer: those are checked here, before it runs (an
 * unknown algorithm would also make ldns leak the TSIG record).
 */
#include "lib/dns_update.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ldns/ldns.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/dns_wire.h"
#include "lib/log.h"
#include "lib/tsig_key.h"

#define TCP_FRAME_MAX  (2 + 65535)
#define DETAIL_MAX     512
#define NOTE_MAX       160
#define DESC_MAX       300
#define TSIG_ALG       "hmac-sha256."
#define RDATA_TEXT_MAX (4 * 65536) /* escaped text of the largest rdata */

struct dns_update {
    uv_loop_t *loop;
    dns_update_cb cb;
    void *arg;
    bool is_query;
    bool decided;
    int n_open; /* handles whose close callback has not run */

    /* The request. */
    ldns_pkt *req; /* signed: its TSIG holds the MAC the answer must cover */
    uint8_t *wire;
    size_t wire_len;
    uint16_t id;
    ldns_rdf *qname; /* the question the answer must repeat */
    uint16_t qtype;
    char key_name[TSIG_KEY_NAME_MAX + 1];
    char secret[TSIG_KEY_SECRET_MAX + 1];
    char target[80]; /* "127.0.0.1:5399", for messages */
    char what[300];  /* "zone lab.test", "_triad.x TXT" */
    struct sockaddr_storage peer;
    struct sockaddr_storage local;
    bool has_local;

    /* For -ESTALE: what each prerequisite required. */
    char **prereq_desc;
    enum dns_prereq_kind *prereq_kind;
    size_t n_prereqs;

    /* Transports. */
    uv_timer_t deadline;
    uv_timer_t retry;
    uv_udp_t udp;
    bool udp_open;
    uv_tcp_t tcp;
    bool tcp_open;
    bool tcp_started;
    uv_connect_t connect;
    uv_write_t write;
    uint8_t *tcp_out;
    uint8_t *rx; /* UDP datagrams, then the TCP frame */
    size_t rx_len;
    int tries;
    int sent;
    uint32_t timeout_ms;
    uint64_t per_try_ms;
    uint64_t start_ns;
    char udp_note[NOTE_MAX]; /* how UDP ended, for the final detail */
    int udp_err;

    /* The outcome. */
    struct dns_update_result res;
    char detail[DETAIL_MAX];
    struct dns_rr_text *records;
    size_t n_records;
};

/* snprintf for messages: truncation is fine (and expected to be rare). */
static void textf(char *out, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void textf(char *out, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, len, fmt, ap);
    va_end(ap);
}

const char *dns_update_rcode_name(int rcode)
{
    static const char *const names[] = { "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN",
                                         "NOTIMP",  "REFUSED", "YXDOMAIN", "YXRRSET",
                                         "NXRRSET", "NOTAUTH", "NOTZONE" };
    if (rcode >= 0 && rcode < (int)(sizeof names / sizeof names[0]))
        return names[rcode];
    switch (rcode) {
    case DNS_TSIG_BADSIG:
        return "BADSIG";
    case DNS_TSIG_BADKEY:
        return "BADKEY";
    case DNS_TSIG_BADTIME:
        return "BADTIME";
    case DNS_TSIG_BADTRUNC:
        return "BADTRUNC";
    default:
        return "RCODE?";
    }
}

/* ---- teardown -------------------------------------------------------------- */

static void free_update(struct dns_update *u)
{
    for (size_t i = 0; i < u->n_records; i++) {
        free((char *)u->records[i].name);
        free((char *)u->records[i].rdata);
    }
    free(u->records);
    for (size_t i = 0; i < u->n_prereqs; i++)
        free(u->prereq_desc[i]);
    free(u->prereq_desc);
    free(u->prereq_kind);
    if (u->req)
        ldns_pkt_free(u->req);
    if (u->qname)
        ldns_rdf_deep_free(u->qname);
    free(u->wire);
    free(u->tcp_out);
    free(u->rx);
    explicit_bzero(u->secret, sizeof u->secret);
    free(u);
}

static void on_closed(uv_handle_t *h)
{
    struct dns_update *u = h->data;
    if (--u->n_open > 0)
        return;
    u->res.records = u->records;
    u->res.n_records = u->n_records;
    u->res.detail = u->detail;
    if (u->cb)
        u->cb(u, &u->res, u->arg);
    free_update(u);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, on_closed);
}

static void close_udp(struct dns_update *u)
{
    if (u->udp_open) {
        u->udp_open = false;
        uv_udp_recv_stop(&u->udp);
        close_handle((uv_handle_t *)&u->udp);
    }
}

static void decide(struct dns_update *u, int result, int rcode, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void decide(struct dns_update *u, int result, int rcode, const char *fmt, ...)
{
    if (u->decided)
        return;
    u->decided = true;
    u->res.result = result;
    u->res.rcode = rcode;
    u->res.elapsed_ms = (uv_hrtime() - u->start_ns) / 1000000;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(u->detail, sizeof u->detail, fmt, ap);
    va_end(ap);
    uv_timer_stop(&u->retry);
    uv_timer_stop(&u->deadline);
    close_handle((uv_handle_t *)&u->retry);
    close_handle((uv_handle_t *)&u->deadline);
    close_udp(u);
    if (u->tcp_open) {
        u->tcp_open = false;
        close_handle((uv_handle_t *)&u->tcp);
    }
}

/* ---- building the request --------------------------------------------------- */

static bool bad_text(const char *s)
{
    return !s || !*s || strpbrk(s, "\r\n") != NULL || strlen(s) > 65535;
}

/* A record from text: owner, TTL, class IN, type, rdata in zone-file form. */
static ldns_rr *rr_from_text(const char *name, uint32_t ttl, uint16_t type, const char *rdata)
{
    ldns_rr *rr = NULL;
    char *type_name = ldns_rr_type2str((ldns_rr_type)type);
    ldns_rdf *owner = ldns_dname_new_frm_str(name);
    size_t len = strlen(name) + strlen(rdata) + 64;
    char *text = malloc(len);
    if (type_name && owner && text) {
        textf(text, len, "%s%s %u IN %s %s", name, name[strlen(name) - 1] == '.' ? "" : ".", ttl,
              type_name, rdata);
        if (ldns_rr_new_frm_str(&rr, text, ttl, NULL, NULL) != LDNS_STATUS_OK)
            rr = NULL;
        /* The text must not have smuggled in another owner or type. */
        if (rr && (ldns_rr_get_type(rr) != type || ldns_dname_compare(ldns_rr_owner(rr), owner))) {
            ldns_rr_free(rr);
            rr = NULL;
        }
    }
    free(text);
    free(type_name);
    if (owner)
        ldns_rdf_deep_free(owner);
    return rr;
}

/* A record without rdata (deletes and value-independent prerequisites). */
static ldns_rr *rr_empty(const char *name, uint16_t type, ldns_rr_class cls)
{
    ldns_rdf *owner = ldns_dname_new_frm_str(name);
    if (!owner)
        return NULL;
    ldns_rr *rr = ldns_rr_new();
    if (!rr) {
        ldns_rdf_deep_free(owner);
        return NULL;
    }
    ldns_rr_set_owner(rr, owner);
    ldns_rr_set_type(rr, (ldns_rr_type)type);
    ldns_rr_set_class(rr, cls);
    ldns_rr_set_ttl(rr, 0);
    return rr;
}

static const char *type_text(uint16_t type, char *buf, size_t len)
{
    char *t = ldns_rr_type2str((ldns_rr_type)type);
    textf(buf, len, "%s", t ? t : "?");
    free(t);
    return buf;
}

static int push(ldns_rr_list *list, ldns_rr *rr)
{
    if (!rr)
        return -EINVAL;
    if (!ldns_rr_list_push_rr(list, rr)) {
        ldns_rr_free(rr);
        return -ENOMEM;
    }
    return 0;
}

static int add_prereq(struct dns_update *u, ldns_rr_list *list, size_t i,
                      const struct dns_prereq *p, char *why, size_t why_len)
{
    char tn[32], desc[DESC_MAX];
    int result = 0;
    if (bad_text(p->name)) {
        textf(why, why_len, "prerequisite %zu has no valid name", i + 1);
        return -EINVAL;
    }
    type_text(p->type, tn, sizeof tn);
    switch (p->kind) {
    case DNS_PREREQ_RRSET_EQUALS: {
        if (p->n_rdata == 0 || p->n_rdata > DNS_UPDATE_MAX_ITEMS) {
            textf(why, why_len, "prerequisite %zu (%s %s): exactly-equal needs 1 to %d values",
                  i + 1, p->name, tn, DNS_UPDATE_MAX_ITEMS);
            return -EINVAL;
        }
        size_t off = (size_t)snprintf(desc, sizeof desc, "%s %s is exactly", p->name, tn);
        for (size_t k = 0; k < p->n_rdata && result == 0; k++) {
            if (bad_text(p->rdata[k])) {
                result = -EINVAL;
                break;
            }
            ldns_rr *rr = rr_from_text(p->name, 0, p->type, p->rdata[k]);
            if (rr)
                ldns_rr_set_ttl(rr, 0);
            result = push(list, rr);
            if (off < sizeof desc)
                off += (size_t)snprintf(desc + off, sizeof desc - off, "%s%s", k ? ", " : " ",
                                        p->rdata[k]);
        }
        if (result == -EINVAL)
            textf(why, why_len, "prerequisite %zu (%s %s): a value is not valid %s data", i + 1,
                  p->name, tn, tn);
        break;
    }
    case DNS_PREREQ_RRSET_EXISTS:
        textf(desc, sizeof desc, "%s %s exists", p->name, tn);
        result = push(list, rr_empty(p->name, p->type, LDNS_RR_CLASS_ANY));
        break;
    case DNS_PREREQ_RRSET_ABSENT:
        textf(desc, sizeof desc, "%s %s does not exist", p->name, tn);
        result = push(list, rr_empty(p->name, p->type, LDNS_RR_CLASS_NONE));
        break;
    case DNS_PREREQ_NAME_IN_USE:
        textf(desc, sizeof desc, "%s is in use", p->name);
        result = push(list, rr_empty(p->name, LDNS_RR_TYPE_ANY, LDNS_RR_CLASS_ANY));
        break;
    case DNS_PREREQ_NAME_ABSENT:
        textf(desc, sizeof desc, "%s does not exist", p->name);
        result = push(list, rr_empty(p->name, LDNS_RR_TYPE_ANY, LDNS_RR_CLASS_NONE));
        break;
    default:
        textf(why, why_len, "prerequisite %zu has an unknown kind", i + 1);
        return -EINVAL;
    }
    if (result == -EINVAL && !why[0])
        textf(why, why_len, "prerequisite %zu: '%s' is not a valid name", i + 1, p->name);
    if (result == 0) {
        u->prereq_desc[i] = strdup(desc);
        u->prereq_kind[i] = p->kind;
        if (!u->prereq_desc[i])
            result = -ENOMEM;
    }
    return result;
}

static int add_change(ldns_rr_list *list, size_t i, const struct dns_change *c, char *why,
                      size_t why_len)
{
    char tn[32];
    ldns_rr *rr = NULL;
    if (bad_text(c->name)) {
        textf(why, why_len, "change %zu has no valid name", i + 1);
        return -EINVAL;
    }
    type_text(c->type, tn, sizeof tn);
    switch (c->kind) {
    case DNS_CHANGE_ADD:
    case DNS_CHANGE_DELETE_RR:
        if (bad_text(c->rdata)) {
            textf(why, why_len, "change %zu (%s %s) has no value", i + 1, c->name, tn);
            return -EINVAL;
        }
        rr = rr_from_text(c->name, c->kind == DNS_CHANGE_ADD ? c->ttl : 0, c->type, c->rdata);
        if (rr && c->kind == DNS_CHANGE_DELETE_RR) {
            ldns_rr_set_class(rr, LDNS_RR_CLASS_NONE);
            ldns_rr_set_ttl(rr, 0);
        }
        break;
    case DNS_CHANGE_DELETE_RRSET:
        rr = rr_empty(c->name, c->type, LDNS_RR_CLASS_ANY);
        break;
    case DNS_CHANGE_DELETE_NAME:
        rr = rr_empty(c->name, LDNS_RR_TYPE_ANY, LDNS_RR_CLASS_ANY);
        break;
    default:
        textf(why, why_len, "change %zu has an unknown kind", i + 1);
        return -EINVAL;
    }
    if (!rr) {
        textf(why, why_len, "change %zu (%s %s): not a valid name or %s data", i + 1, c->name, tn,
              tn);
        return -EINVAL;
    }
    return push(list, rr);
}

static int parse_addr(const char *host, uint16_t port, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    if (!host)
        return -EINVAL;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0)
        return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) == 0)
        return 0;
    return -EINVAL;
}

/* Common part of both requests: the struct, the key, the addresses. */
static int new_update(uv_loop_t *loop, const struct dns_update_server *srv, dns_update_cb cb,
                      void *arg, struct dns_update **out, char *why, size_t why_len)
{
    if (!loop || !srv || !cb || !out || !srv->key || !srv->key->name[0] || !srv->key->secret[0]) {
        textf(why, why_len, "missing server, key or callback");
        return -EINVAL;
    }
    uint16_t port = srv->port ? srv->port : 53;
    struct dns_update *u = calloc(1, sizeof *u);
    if (!u)
        return -ENOMEM;
    u->loop = loop;
    u->cb = cb;
    u->arg = arg;
    u->res.failed_prereq = -1;
    u->res.rcode = -1;
    if (parse_addr(srv->server, port, &u->peer) < 0) {
        textf(why, why_len, "server '%s' is not a numeric IPv4 or IPv6 address",
              srv->server ? srv->server : "(null)");
        free(u);
        return -EINVAL;
    }
    if (srv->local_addr && *srv->local_addr) {
        if (parse_addr(srv->local_addr, 0, &u->local) < 0 ||
            u->local.ss_family != u->peer.ss_family) {
            textf(why, why_len,
                  "source address '%s' is not a numeric address of the server's "
                  "family",
                  srv->local_addr);
            free(u);
            return -EINVAL;
        }
        u->has_local = true;
    }
    textf(u->target, sizeof u->target, u->peer.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u",
          srv->server, port);
    textf(u->key_name, sizeof u->key_name, "%s", srv->key->name);
    textf(u->secret, sizeof u->secret, "%s", srv->key->secret);
    u->timeout_ms = srv->timeout_ms ? srv->timeout_ms : DNS_UPDATE_DEFAULT_TIMEOUT_MS;
    u->tries = srv->tries > 0 ? srv->tries : DNS_UPDATE_DEFAULT_TRIES;
    if (u->tries > DNS_UPDATE_MAX_TRIES)
        u->tries = DNS_UPDATE_MAX_TRIES;
    *out = u;
    return 0;
}

/* Sets a random id, signs, and renders the wire form. */
static int sign(struct dns_update *u, char *why, size_t why_len)
{
    u->id = (uint16_t)arc4random_uniform(65536);
    ldns_pkt_set_id(u->req, u->id);
    ldns_status st =
        ldns_pkt_tsig_sign(u->req, u->key_name, u->secret, DNS_UPDATE_FUDGE_S, TSIG_ALG, NULL);
    if (st != LDNS_STATUS_OK) {
        textf(why, why_len, "cannot sign with key '%s': %s", u->key_name,
              ldns_get_errorstr_by_id(st));
        return -EINVAL;
    }
    if (ldns_pkt2wire(&u->wire, u->req, &u->wire_len) != LDNS_STATUS_OK || u->wire_len > 65535) {
        textf(why, why_len, "the request does not fit in a DNS message");
        return -EMSGSIZE;
    }
    return 0;
}

static int launch(struct dns_update *u);

static void log_refused(const struct dns_update_server *srv, const char *why, int rc)
{
    log_ev(LOG_WARN, NULL, "dns request not sent",
           { "server", srv && srv->server ? srv->server : "" },
           { "error", why[0] ? why : strerror(-rc) });
}

int dns_update_send(uv_loop_t *loop, const struct dns_update_server *srv,
                    const struct dns_update_msg *msg, dns_update_cb cb, void *arg,
                    struct dns_update **out)
{
    char why[300] = "";
    struct dns_update *u = NULL;
    ldns_rr_list *pre = NULL, *upd = NULL;
    ldns_rdf *zone = NULL;
    int result;
    if (!msg || bad_text(msg->zone) || msg->n_prereqs > DNS_UPDATE_MAX_ITEMS ||
        msg->n_changes > DNS_UPDATE_MAX_ITEMS || (msg->n_prereqs && !msg->prereqs) ||
        (msg->n_changes && !msg->changes)) {
        textf(why, sizeof why, "no zone, or too many prerequisites or changes");
        result = -EINVAL;
        goto out;
    }
    result = new_update(loop, srv, cb, arg, &u, why, sizeof why);
    if (result < 0)
        goto out;
    textf(u->what, sizeof u->what, "zone %s", msg->zone);
    u->qname = ldns_dname_new_frm_str(msg->zone);
    u->qtype = LDNS_RR_TYPE_SOA;
    u->n_prereqs = msg->n_prereqs;
    u->prereq_desc = calloc(msg->n_prereqs + 1, sizeof *u->prereq_desc);
    u->prereq_kind = calloc(msg->n_prereqs + 1, sizeof *u->prereq_kind);
    pre = ldns_rr_list_new();
    upd = ldns_rr_list_new();
    zone = ldns_dname_new_frm_str(msg->zone);
    if (!u->qname || !zone) {
        textf(why, sizeof why, "zone '%s' is not a valid name", msg->zone);
        result = -EINVAL;
        goto out;
    }
    if (!u->prereq_desc || !u->prereq_kind || !pre || !upd) {
        result = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < msg->n_prereqs && result == 0; i++)
        result = add_prereq(u, pre, i, &msg->prereqs[i], why, sizeof why);
    for (size_t i = 0; i < msg->n_changes && result == 0; i++)
        result = add_change(upd, i, &msg->changes[i], why, sizeof why);
    if (result < 0)
        goto out;
    u->req = ldns_update_pkt_new(zone, LDNS_RR_CLASS_IN, pre, upd, NULL);
    zone = NULL; /* the packet owns it, or it was freed */
    if (!u->req) {
        result = -ENOMEM;
        goto out;
    }
    /* The header bits after the opcode are zero in an UPDATE (RFC 2136 2.2). */
    ldns_pkt_set_rd(u->req, false);
    result = sign(u, why, sizeof why);
    if (result < 0)
        goto out;
    result = launch(u);
out:
    if (pre)
        ldns_rr_list_deep_free(pre);
    if (upd)
        ldns_rr_list_deep_free(upd);
    if (zone)
        ldns_rdf_deep_free(zone);
    if (result < 0) {
        log_refused(srv, why, result);
        if (u)
            free_update(u);
        u = NULL;
    }
    if (out)
        *out = u;
    return result;
}

int dns_update_query(uv_loop_t *loop, const struct dns_update_server *srv, const char *name,
                     uint16_t type, dns_update_cb cb, void *arg, struct dns_update **out)
{
    char why[300] = "";
    char tn[32];
    struct dns_update *u = NULL;
    ldns_rdf *qn = NULL;
    int result = 0;
    if (bad_text(name) || strlen(name) > 254 || type == 0) {
        textf(why, sizeof why, "no valid name or type to query");
        result = -EINVAL;
        goto out;
    }
    result = new_update(loop, srv, cb, arg, &u, why, sizeof why);
    if (result < 0)
        goto out;
    u->is_query = true;
    textf(u->what, sizeof u->what, "%s %s", name, type_text(type, tn, sizeof tn));
    u->qname = ldns_dname_new_frm_str(name);
    qn = ldns_dname_new_frm_str(name);
    u->qtype = type;
    if (!u->qname || !qn) {
        textf(why, sizeof why, "'%s' is not a valid name", name);
        result = -EINVAL;
        goto out;
    }
    u->req = ldns_pkt_query_new(qn, (ldns_rr_type)type, LDNS_RR_CLASS_IN, 0);
    qn = NULL;
    if (!u->req) {
        result = -ENOMEM;
        goto out;
    }
    result = sign(u, why, sizeof why);
    if (result < 0)
        goto out;
    result = launch(u);
out:
    if (qn)
        ldns_rdf_deep_free(qn);
    if (result < 0) {
        log_refused(srv, why, result);
        if (u)
            free_update(u);
        u = NULL;
    }
    if (out)
        *out = u;
    return result;
}

void dns_update_cancel(struct dns_update *u)
{
    if (u && !u->decided)
        decide(u, -ECANCELED, -1, "cancelled");
}

/* ---- the answer ------------------------------------------------------------------ */

static uint64_t tsig_time(const ldns_rdf *rdf)
{
    const uint8_t *d = ldns_rdf_data(rdf);
    uint64_t t = 0;
    if (ldns_rdf_size(rdf) != 6)
        return 0;
    for (int i = 0; i < 6; i++)
        t = (t << 8) | d[i];
    return t;
}

static int rcode_result(struct dns_update *u, int rcode)
{
    switch (rcode) {
    case LDNS_RCODE_NOERROR:
        return 0;
    case LDNS_RCODE_FORMERR:
        return -EPROTO;
    case LDNS_RCODE_SERVFAIL:
        return -EAGAIN;
    case LDNS_RCODE_NXDOMAIN:
        return u->is_query ? -ENOENT : -ESTALE;
    case LDNS_RCODE_NOTIMPL:
        return -EOPNOTSUPP;
    case LDNS_RCODE_REFUSED:
        return -EPERM;
    case LDNS_RCODE_YXDOMAIN:
    case LDNS_RCODE_YXRRSET:
    case LDNS_RCODE_NXRRSET:
        return u->is_query ? -EPROTO : -ESTALE;
    case LDNS_RCODE_NOTAUTH:
        return -EACCES;
    case LDNS_RCODE_NOTZONE:
        return -EINVAL;
    default:
        return -EPROTO;
    }
}

/* Which prerequisite an rcode names, when only one of that kind was sent. */
static int failed_prereq(const struct dns_update *u, int rcode)
{
    int found = -1, n = 0;
    for (size_t i = 0; i < u->n_prereqs; i++) {
        enum dns_prereq_kind k = u->prereq_kind[i];
        bool match = (rcode == LDNS_RCODE_NXRRSET &&
                      (k == DNS_PREREQ_RRSET_EQUALS || k == DNS_PREREQ_RRSET_EXISTS)) ||
                     (rcode == LDNS_RCODE_YXRRSET && k == DNS_PREREQ_RRSET_ABSENT) ||
                     (rcode == LDNS_RCODE_NXDOMAIN && k == DNS_PREREQ_NAME_IN_USE) ||
                     (rcode == LDNS_RCODE_YXDOMAIN && k == DNS_PREREQ_NAME_ABSENT);
        if (match) {
            found = (int)i;
            n++;
        }
    }
    return n == 1 ? found : -1;
}

static void keep_records(struct dns_update *u, const ldns_pkt *pkt)
{
    const ldns_rr_list *ans = ldns_pkt_answer(pkt);
    size_t n = ans ? ldns_rr_list_rr_count(ans) : 0;
    if (n > DNS_UPDATE_MAX_RECORDS) {
        u->res.truncated = 1;
        n = DNS_UPDATE_MAX_RECORDS;
    }
    u->records = calloc(n + 1, sizeof *u->records);
    if (!u->records)
        return;
    for (size_t i = 0; i < n; i++) {
        const ldns_rr *rr = ldns_rr_list_rr(ans, i);
        struct dns_rr_text *t = &u->records[u->n_records];
        char *name = ldns_rdf2str(ldns_rr_owner(rr));
        struct buf b;
        buf_init(&b, RDATA_TEXT_MAX);
        bool ok = name != NULL;
        for (size_t k = 0; ok && k < ldns_rr_rd_count(rr); k++) {
            char *f = ldns_rdf2str(ldns_rr_rdf(rr, k));
            ok = f && buf_printf(&b, "%s%s", k ? " " : "", f) == 0;
            free(f);
        }
        if (ok && !b.data)
            ok = buf_append(&b, "", 0) == 0 && b.data;
        if (!ok) {
            free(name);
            buf_free(&b);
            continue;
        }
        t->rdata = buf_steal(&b);
        t->name = name;
        t->type = (uint16_t)ldns_rr_get_type(rr);
        t->ttl = ldns_rr_ttl(rr);
        u->n_records++;
    }
}

static void reject_detail(struct dns_update *u, int tsig_error, char *out, size_t len)
{
    const char *why;
    switch (tsig_error) {
    case DNS_TSIG_BADSIG:
        why = "BADSIG: our signature does not verify with the server's secret for that key name";
        break;
    case DNS_TSIG_BADKEY:
        why = "BADKEY: the server has no hmac-sha256 key of that name";
        break;
    case DNS_TSIG_BADTIME:
        why = "BADTIME: this host's clock and the server's differ by more than the 300 s fudge";
        break;
    case 0:
        why = NULL;
        break;
    default:
        why = "a TSIG error";
        break;
    }
    if (why)
        textf(out, len, "the DNS server %s rejected the TSIG key '%s' (%s)", u->target, u->key_name,
              why);
    else
        textf(out, len,
              "the DNS server %s answered NOTAUTH for %s: it rejected the TSIG key "
              "'%s' or is not authoritative for the zone",
              u->target, u->what, u->key_name);
}

/* An answer that matches the request (id, question), over UDP or TCP. */
static void conclude(struct dns_update *u, const uint8_t *data, size_t len, ldns_pkt *pkt)
{
    char d[DETAIL_MAX];
    int rcode = (int)ldns_pkt_get_rcode(pkt);
    const char *via = u->res.tcp ? "tcp" : "udp";
    ldns_rr *tsig = ldns_pkt_tsig(pkt);
    bool signed_ok = false;
    if (tsig) {
        ldns_rdf *owner = ldns_rr_owner(tsig);
        ldns_rdf *key = ldns_dname_new_frm_str(u->key_name);
        char *alg = ldns_rr_rd_count(tsig) >= 7 ? ldns_rdf2str(ldns_rr_rdf(tsig, 0)) : NULL;
        bool ours = key && owner && ldns_dname_compare(owner, key) == 0 && alg &&
                    strcasecmp(alg, TSIG_ALG) == 0;
        if (key)
            ldns_rdf_deep_free(key);
        free(alg);
        if (!ours) {
            decide(u, -EBADMSG, rcode,
                   "the answer from %s is signed with another key or "
                   "algorithm than '%s' (hmac-sha256)",
                   u->target, u->key_name);
            return;
        }
        int tsig_error = (int)ldns_rdf2native_int16(ldns_rr_rdf(tsig, 5));
        if (tsig_error) {
            u->res.tsig_error = tsig_error;
            reject_detail(u, tsig_error, d, sizeof d);
            decide(u, -EACCES, rcode, "%s", d);
            return;
        }
        const ldns_rdf *req_mac = ldns_rr_rdf(ldns_pkt_tsig(u->req), 3);
        if (!ldns_pkt_tsig_verify(pkt, data, len, u->key_name, u->secret, req_mac)) {
            decide(u, -EBADMSG, rcode,
                   "the TSIG signature of the answer from %s does not verify "
                   "with key '%s' (%s over %s): spoofed or corrupted",
                   u->target, u->key_name, dns_update_rcode_name(rcode), via);
            return;
        }
        int64_t skew = (int64_t)tsig_time(ldns_rr_rdf(tsig, 1)) - (int64_t)time(NULL);
        int64_t fudge = (int64_t)ldns_rdf2native_int16(ldns_rr_rdf(tsig, 2));
        if (skew > fudge || -skew > fudge) {
            decide(u, -EBADMSG, rcode,
                   "the answer from %s was signed %lld s away from our "
                   "clock (fudge %lld s)",
                   u->target, (long long)skew, (long long)fudge);
            return;
        }
        signed_ok = true;
    }
    if (!signed_ok && rcode == LDNS_RCODE_NOERROR) {
        decide(u, -EBADMSG, rcode,
               "the answer from %s is not signed: it cannot be trusted "
               "(does the server know key '%s'?)",
               u->target, u->key_name);
        return;
    }
    const char *unsigned_note = signed_ok ? "" : " (unsigned answer)";
    int result = rcode_result(u, rcode);
    const char *rn = dns_update_rcode_name(rcode);
    if (u->is_query && (result == 0 || result == -ENOENT))
        keep_records(u, pkt);
    switch (result) {
    case 0:
        decide(u, 0, rcode, "NOERROR from %s over %s", u->target, via);
        break;
    case -ENOENT:
        decide(u, result, rcode, "%s does not exist (NXDOMAIN from %s)", u->what, u->target);
        break;
    case -EACCES:
        reject_detail(u, 0, d, sizeof d);
        decide(u, result, rcode, "%s%s", d, unsigned_note);
        break;
    case -EPERM:
        decide(u, result, rcode, "the DNS server %s refused %s (REFUSED)%s: %s", u->target,
               u->is_query ? "the query" : "the update", unsigned_note,
               u->is_query ? "it does not serve that name to us"
                           : "its update policy does not let this key change these records");
        break;
    case -ESTALE: {
        int idx = failed_prereq(u, rcode);
        u->res.failed_prereq = idx;
        if (idx >= 0)
            decide(u, result, rcode, "prerequisite not met on %s (%s): %s", u->target, rn,
                   u->prereq_desc[idx]);
        else
            decide(u, result, rcode, "a prerequisite was not met on %s (%s)", u->target, rn);
        break;
    }
    case -EAGAIN:
        decide(u, result, rcode, "SERVFAIL from %s for %s%s", u->target, u->what, unsigned_note);
        break;
    case -EINVAL:
        decide(u, result, rcode, "NOTZONE from %s: a name is outside %s", u->target, u->what);
        break;
    default:
        decide(u, result, rcode, "%s from %s for %s%s", rn, u->target, u->what, unsigned_note);
        break;
    }
}

/* Checks that a message answers our request; UDP ignores strangers, TCP
 * (a stream to the server itself) fails on them. */
static void on_message(struct dns_update *u, const uint8_t *data, size_t len, bool via_tcp)
{
    if (len < LDNS_HEADER_SIZE || LDNS_ID_WIRE(data) != u->id || !LDNS_QR_WIRE(data)) {
        if (via_tcp)
            decide(u, -EBADMSG, -1, "a TCP message from %s that does not answer our request",
                   u->target);
        return;
    }
    if (!via_tcp && LDNS_TC_WIRE(data)) {
        textf(u->udp_note, sizeof u->udp_note, "the UDP answer was truncated");
        u->udp_err = 0;
        close_udp(u);
        uv_timer_stop(&u->retry);
        launch(u);
        return;
    }
    ldns_pkt *pkt = NULL;
    if (dns_wire2pkt(&pkt, data, len) != LDNS_STATUS_OK || !pkt) {
        decide(u, -EBADMSG, -1, "malformed answer from %s", u->target);
        return;
    }
    const ldns_rr_list *q = ldns_pkt_question(pkt);
    const ldns_rr *q0 = q && ldns_rr_list_rr_count(q) == 1 ? ldns_rr_list_rr(q, 0) : NULL;
    bool same_q = q0 && ldns_dname_compare(ldns_rr_owner(q0), u->qname) == 0 &&
                  ldns_rr_get_type(q0) == u->qtype;
    /* Some servers leave the question out of error answers. */
    if (!same_q && !(q && ldns_rr_list_rr_count(q) == 0 && ldns_pkt_get_rcode(pkt) != 0)) {
        ldns_pkt_free(pkt);
        if (via_tcp)
            decide(u, -EBADMSG, -1, "the answer from %s is for another question", u->target);
        return;
    }
    conclude(u, data, len, pkt);
    ldns_pkt_free(pkt);
}

/* ---- TCP ------------------------------------------------------------------------ */

static void tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct dns_update *u = h->data;
    buf->base = (char *)u->rx + u->rx_len;
    buf->len = TCP_FRAME_MAX - u->rx_len;
}

static void on_tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct dns_update *u = s->data;
    if (u->decided)
        return;
    if (nread < 0) {
        decide(u, nread == UV_EOF ? -ECONNRESET : (int)nread, -1,
               "%s closed the TCP connection before answering: %s%s%s%s", u->target,
               nread == UV_EOF ? "end of stream" : uv_strerror((int)nread),
               u->udp_note[0] ? " (UDP: " : "", u->udp_note, u->udp_note[0] ? ")" : "");
        return;
    }
    u->rx_len += (size_t)nread;
    if (u->rx_len < 2)
        return;
    size_t frame = ((size_t)u->rx[0] << 8) | u->rx[1];
    if (frame < LDNS_HEADER_SIZE) {
        decide(u, -EBADMSG, -1, "a %zu-byte TCP message from %s", frame, u->target);
        return;
    }
    if (u->rx_len >= 2 + frame) {
        uv_read_stop(s);
        on_message(u, u->rx + 2, frame, true);
    }
}

static void on_tcp_written(uv_write_t *w, int status)
{
    struct dns_update *u = w->data;
    if (u->decided || status == 0)
        return;
    decide(u, status, -1, "cannot send the request to %s over TCP: %s", u->target,
           uv_strerror(status));
}

static void on_tcp_connect(uv_connect_t *c, int status)
{
    struct dns_update *u = c->data;
    if (u->decided)
        return;
    if (status < 0) {
        /* UDP went unanswered: the server is unreachable, whatever TCP
         * says. Refused on both: nothing serves DNS there. */
        int r = u->udp_err == UV_ETIMEDOUT ? -ETIMEDOUT : status;
        decide(u, r, -1, "cannot reach %s over TCP: %s%s%s%s", u->target, uv_strerror(status),
               u->udp_note[0] ? " (UDP: " : "", u->udp_note, u->udp_note[0] ? ")" : "");
        return;
    }
    uv_buf_t b = uv_buf_init((char *)u->tcp_out, (unsigned)(u->wire_len + 2));
    u->write.data = u;
    int r = uv_write(&u->write, (uv_stream_t *)&u->tcp, &b, 1, on_tcp_written);
    if (r == 0)
        r = uv_read_start((uv_stream_t *)&u->tcp, tcp_alloc, on_tcp_read);
    if (r < 0)
        decide(u, r, -1, "cannot talk to %s over TCP: %s", u->target, uv_strerror(r));
}

static void start_tcp(struct dns_update *u)
{
    int r;
    u->tcp_started = true;
    u->res.tcp = 1;
    u->rx_len = 0;
    u->tcp_out = malloc(u->wire_len + 2);
    if (!u->tcp_out) {
        decide(u, -ENOMEM, -1, "out of memory");
        return;
    }
    u->tcp_out[0] = (uint8_t)(u->wire_len >> 8);
    u->tcp_out[1] = (uint8_t)(u->wire_len & 0xff);
    memcpy(u->tcp_out + 2, u->wire, u->wire_len);
    r = uv_tcp_init(u->loop, &u->tcp);
    if (r < 0) {
        decide(u, r, -1, "cannot make a TCP socket: %s", uv_strerror(r));
        return;
    }
    u->tcp.data = u;
    u->tcp_open = true;
    u->n_open++;
    if (u->has_local) {
        r = uv_tcp_bind(&u->tcp, (const struct sockaddr *)&u->local, 0);
        if (r < 0) {
            decide(u, r, -1, "cannot use source address for %s: %s", u->target, uv_strerror(r));
            return;
        }
    }
    u->connect.data = u;
    r = uv_tcp_connect(&u->connect, &u->tcp, (const struct sockaddr *)&u->peer, on_tcp_connect);
    if (r < 0)
        decide(u, r, -1, "cannot connect to %s over TCP: %s", u->target, uv_strerror(r));
}

/* ---- UDP ------------------------------------------------------------------------- */

static void udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct dns_update *u = h->data;
    buf->base = (char *)u->rx;
    buf->len = TCP_FRAME_MAX;
}

static void udp_failed(struct dns_update *u, int err, const char *note)
{
    textf(u->udp_note, sizeof u->udp_note, "%s", note);
    u->udp_err = err;
    close_udp(u);
    uv_timer_stop(&u->retry);
    launch(u);
}

static void on_udp_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                        const struct sockaddr *addr, unsigned flags)
{
    (void)addr;
    struct dns_update *u = h->data;
    if (u->decided || !u->udp_open)
        return;
    if (nread < 0) {
        char note[NOTE_MAX];
        textf(note, sizeof note, "%s",
              nread == UV_ECONNREFUSED ? "port unreachable" : uv_strerror((int)nread));
        udp_failed(u, (int)nread, note);
        return;
    }
    if (nread == 0 || (flags & UV_UDP_PARTIAL))
        return;
    on_message(u, (const uint8_t *)buf->base, (size_t)nread, false);
}

static void udp_send(struct dns_update *u)
{
    uv_buf_t b = uv_buf_init((char *)u->wire, (unsigned)u->wire_len);
    int r = uv_udp_try_send(&u->udp, &b, 1, NULL);
    u->sent++;
    u->res.udp_sends = u->sent;
    if (r < 0 && r != UV_EAGAIN && r != UV_ENOBUFS) {
        char note[NOTE_MAX];
        textf(note, sizeof note, "%s", r == UV_ECONNREFUSED ? "port unreachable" : uv_strerror(r));
        udp_failed(u, r, note);
        return;
    }
}

static void on_retry(uv_timer_t *t)
{
    struct dns_update *u = t->data;
    if (u->decided || !u->udp_open)
        return;
    if (u->sent >= u->tries) {
        char note[NOTE_MAX];
        textf(note, sizeof note, "no answer over UDP in %llu ms (%d %s)",
              (unsigned long long)(u->per_try_ms * (uint64_t)u->tries), u->sent,
              u->sent == 1 ? "try" : "tries");
        udp_failed(u, UV_ETIMEDOUT, note);
        return;
    }
    udp_send(u);
    if (u->udp_open && !u->decided)
        uv_timer_start(&u->retry, on_retry, u->per_try_ms, 0);
}

static void start_udp(struct dns_update *u)
{
    int r = uv_udp_init(u->loop, &u->udp);
    if (r < 0) {
        decide(u, r, -1, "cannot make a UDP socket: %s", uv_strerror(r));
        return;
    }
    u->udp.data = u;
    u->udp_open = true;
    u->n_open++;
    if (u->has_local) {
        r = uv_udp_bind(&u->udp, (const struct sockaddr *)&u->local, 0);
        if (r < 0) {
            decide(u, r, -1, "cannot use the source address for %s: %s", u->target, uv_strerror(r));
            return;
        }
    }
    r = uv_udp_connect(&u->udp, (const struct sockaddr *)&u->peer);
    if (r == 0)
        r = uv_udp_recv_start(&u->udp, udp_alloc, on_udp_recv);
    if (r < 0) {
        udp_failed(u, r, uv_strerror(r));
        return;
    }
    u->per_try_ms = u->timeout_ms / 2 / (uint64_t)u->tries;
    if (u->per_try_ms == 0)
        u->per_try_ms = 1;
    udp_send(u);
    if (u->udp_open && !u->decided)
        uv_timer_start(&u->retry, on_retry, u->per_try_ms, 0);
}

/* ---- the request's life ------------------------------------------------------- */

static void on_deadline(uv_timer_t *t)
{
    struct dns_update *u = t->data;
    if (u->decided)
        return;
    char via[NOTE_MAX * 2];
    if (u->tcp_started)
        textf(via, sizeof via, "%s%sTCP: no answer", u->udp_note, u->udp_note[0] ? "; then " : "");
    else
        textf(via, sizeof via, "%d UDP %s", u->sent, u->sent == 1 ? "try" : "tries");
    decide(u, -ETIMEDOUT, -1, "no answer from %s within %u ms (%s)", u->target, u->timeout_ms, via);
}

/* First call: timers, then UDP (or TCP for a large request). Later calls
 * (UDP failed or truncated): TCP. */
static int launch(struct dns_update *u)
{
    if (u->start_ns == 0) {
        u->rx = malloc(TCP_FRAME_MAX);
        if (!u->rx)
            return -ENOMEM;
        u->start_ns = uv_hrtime();
        uv_timer_init(u->loop, &u->deadline);
        uv_timer_init(u->loop, &u->retry);
        u->deadline.data = u;
        u->retry.data = u;
        u->n_open = 2;
        uv_timer_start(&u->deadline, on_deadline, u->timeout_ms, 0);
        if (u->wire_len > DNS_UPDATE_UDP_MAX) {
            textf(u->udp_note, sizeof u->udp_note, "request too large for UDP");
            start_tcp(u);
        } else {
            start_udp(u);
        }
        return 0;
    }
    if (!u->decided && !u->tcp_started)
        start_tcp(u);
    return 0;
}
