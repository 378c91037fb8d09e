/* RFC 2136 dynamic updates and TSIG-signed queries on a libuv loop.
 *
 * A request goes to one server (numeric address and port), signed with a
 * TSIG key (hmac-sha256, lib/tsig_key.h). The packet is built, signed and
 * verified with ldns; it travels over a libuv UDP socket, retransmitted on
 * silence, and over TCP (2-byte length framing) when the answer is
 * truncated, when UDP fails (port unreachable, or no answer in the UDP part
 * of the time budget) or when the request is too large for UDP. One timeout
 * covers every try on both transports.
 *
 * An answer counts only if its id and question match the request. Its TSIG
 * must verify against the request (and be signed within the fudge of our
 * clock); a server that rejects the key answers NOTAUTH with the TSIG error
 * BADSIG, BADKEY or BADTIME and no signature, which is reported as such.
 * Nothing is retried once a server has answered.
 *
 * Results (dns_update_result.result):
 *   0            NOERROR
 *   -EACCES      NOTAUTH, or any TSIG error: the key was rejected
 *   -EPERM       REFUSED (the update policy does not allow it)
 *   -ESTALE      a prerequisite failed (NXRRSET, YXRRSET, NXDOMAIN,
 *                YXDOMAIN on an UPDATE); failed_prereq says which
 *   -ENOENT      NXDOMAIN on a query (not an error for most callers)
 *   -EAGAIN      SERVFAIL
 *   -EINVAL      NOTZONE (a name outside the zone)
 *   -EOPNOTSUPP  NOTIMP
 *   -EPROTO      FORMERR or another rcode
 *   -EBADMSG     malformed answer, unsigned NOERROR, or a signature that
 *                does not verify
 *   -ETIMEDOUT   no answer in time     -ECONNREFUSED  refused on UDP and TCP
 *   -ECANCELED   dns_update_cancel()
 *   -EADDRNOTAVAIL (or another bind errno): local_addr cannot be bound
 *
 * Lifetime, libuv style: the start functions return errors (bad arguments,
 * memory), never call back; once they return 0 the callback runs exactly
 * once, from a loop callback, and the request is freed after its handles'
 * close callbacks: the handle is invalid once the callback has run.
 * dns_update_cancel() makes the callback run soon with -ECANCELED (no-op
 * once the result is decided).
 */
#ifndef TRIAD_DNS_UPDATE_H
#define TRIAD_DNS_UPDATE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define DNS_UPDATE_DEFAULT_TIMEOUT_MS 2000
#define DNS_UPDATE_DEFAULT_TRIES      3
#define DNS_UPDATE_MAX_TRIES          8
#define DNS_UPDATE_MAX_RECORDS        64   /* answer records kept by a query */
#define DNS_UPDATE_MAX_ITEMS          512  /* prerequisites or changes per update */
#define DNS_UPDATE_UDP_MAX            1232 /* larger requests go over TCP */
#define DNS_UPDATE_FUDGE_S            300

/* TSIG errors (RFC 8945), in dns_update_result.tsig_error. */
enum {
    DNS_TSIG_BADSIG = 16,
    DNS_TSIG_BADKEY = 17,
    DNS_TSIG_BADTIME = 18,
    DNS_TSIG_BADTRUNC = 22,
};

struct tsig_key;
struct dns_update;

struct dns_update_server {
    const char *server;         /* "127.0.9.53" or "::1" */
    uint16_t port;              /* 0: 53 */
    const char *local_addr;     /* optional numeric source address */
    const struct tsig_key *key; /* required; copied at start */
    uint32_t timeout_ms;        /* every try on both transports; 0: default */
    int tries;                  /* UDP sends; 0: default; at most DNS_UPDATE_MAX_TRIES */
};

/* Prerequisites (RFC 2136 section 2.4). */
enum dns_prereq_kind {
    DNS_PREREQ_RRSET_EQUALS, /* the RRset is exactly `rdata` (2.4.2) */
    DNS_PREREQ_RRSET_EXISTS, /* (2.4.1) */
    DNS_PREREQ_RRSET_ABSENT, /* (2.4.3) */
    DNS_PREREQ_NAME_IN_USE,  /* (2.4.4) */
    DNS_PREREQ_NAME_ABSENT,  /* (2.4.5) */
};

struct dns_prereq {
    enum dns_prereq_kind kind;
    const char *name;
    uint16_t type;            /* not for the NAME_* kinds */
    const char *const *rdata; /* RRSET_EQUALS: zone-file presentation ("\"epoch=3\"") */
    size_t n_rdata;
};

/* Changes (RFC 2136 section 2.5), applied in order. */
enum dns_change_kind {
    DNS_CHANGE_ADD,          /* name ttl type rdata (2.5.1) */
    DNS_CHANGE_DELETE_RRSET, /* every record of name/type (2.5.2) */
    DNS_CHANGE_DELETE_NAME,  /* every record of name (2.5.3) */
    DNS_CHANGE_DELETE_RR,    /* the record name/type/rdata (2.5.4) */
};

struct dns_change {
    enum dns_change_kind kind;
    const char *name;
    uint16_t type;
    uint32_t ttl;      /* ADD */
    const char *rdata; /* ADD, DELETE_RR: zone-file presentation */
};

struct dns_update_msg {
    const char *zone;
    const struct dns_prereq *prereqs;
    size_t n_prereqs;
    const struct dns_change *changes;
    size_t n_changes;
};

/* A record of a query's answer section. */
struct dns_rr_text {
    const char *name; /* absolute, "matrix.lab.test." */
    uint16_t type;
    uint32_t ttl;
    /* Zone-file presentation of the rdata ("127.0.2.10", "\"epoch=3\""):
     * usable as-is in a dns_prereq or dns_change. */
    const char *rdata;
};

struct dns_update_result {
    int result;         /* see the table above */
    const char *detail; /* one line, never a secret */
    int rcode;          /* the answer's rcode, -1 when none was accepted */
    int tsig_error;     /* 0, or DNS_TSIG_* from the answer */
    int tcp;            /* 1: TCP was used (an answer, if any, came over it) */
    int udp_sends;      /* UDP packets sent (retransmissions included) */
    int failed_prereq;  /* -ESTALE: index into msg->prereqs, -1 when unknown */
    uint64_t elapsed_ms;
    /* Queries: the answer section (at most DNS_UPDATE_MAX_RECORDS). */
    const struct dns_rr_text *records;
    size_t n_records;
    int truncated; /* more records than kept */
};

typedef void (*dns_update_cb)(struct dns_update *u, const struct dns_update_result *res, void *arg);

/* Sends one signed UPDATE. 0, or -EINVAL (a bad server, name, type or
 * rdata: logged) or -ENOMEM. */
int dns_update_send(uv_loop_t *loop, const struct dns_update_server *srv,
                    const struct dns_update_msg *msg, dns_update_cb cb, void *arg,
                    struct dns_update **out);

/* Sends one signed query (recursion not desired) for name/type: "is our key
 * still accepted by this server?" (the SOA of the zone), or an exact read of
 * an RRset to build a prerequisite from. Same returns. */
int dns_update_query(uv_loop_t *loop, const struct dns_update_server *srv, const char *name,
                     uint16_t type, dns_update_cb cb, void *arg, struct dns_update **out);

void dns_update_cancel(struct dns_update *u);

/* "NOERROR", ..., "NOTZONE"; "BADSIG", ... for TSIG errors. */
const char *dns_update_rcode_name(int rcode);

#endif
