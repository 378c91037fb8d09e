/* Non-blocking DNS queries to a chosen server on a libuv loop (c-ares).
 *
 * A query goes to one given server (IPv4 or IPv6 literal and port), never
 * to the system resolver, for one name and type. It is bounded by a timeout
 * that covers all its tries. The answer section comes back as text records
 * with their TTLs (parsed with ldns, which gives TTLs for every type).
 *
 * Each query has its own c-ares channel (its own server, tries, timeouts and
 * source address), driven by ARES_OPT_SOCK_STATE_CB -> one uv_poll per
 * socket, plus one uv_timer for c-ares' retransmissions and the deadline.
 * Nothing from the system resolver configuration is read (resolv.conf is
 * replaced by /dev/null), so search domains, ndots and rotate never apply.
 *
 * Lifetime, libuv style:
 *   - dns_query_start() errors are returned, never called back. Once it
 *     returns 0 the callback runs exactly once, from a loop callback.
 *   - dns_query_cancel(): the callback runs with -ECANCELED.
 *   - dns_client_close(): cancels every query, then calls close_cb once all
 *     handles are closed; the client is freed after that.
 *   - A query's memory is freed only after its handles' close callbacks.
 *
 * ares_library_init: dns_global_init() calls it once; main() should call it
 * before starting any thread; dns_client_new() calls it too.
 */
#ifndef TRIAD_DNS_CLIENT_H
#define TRIAD_DNS_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define DNS_DEFAULT_TIMEOUT_MS 2000
#define DNS_DEFAULT_TRIES      2
#define DNS_MAX_TRIES          8
#define DNS_MAX_RECORDS        64 /* answer records kept; more sets `truncated` */
#define DNS_DETAIL_MAX         256

/* Record types (RFC 1035 numbers); any other number works too. */
enum {
    DNS_T_A = 1,
    DNS_T_NS = 2,
    DNS_T_CNAME = 5,
    DNS_T_SOA = 6,
    DNS_T_PTR = 12,
    DNS_T_MX = 15,
    DNS_T_TXT = 16,
    DNS_T_AAAA = 28,
    DNS_T_SRV = 33,
    DNS_T_CAA = 257,
};

/* Response codes. */
enum {
    DNS_RCODE_NOERROR = 0,
    DNS_RCODE_FORMERR = 1,
    DNS_RCODE_SERVFAIL = 2,
    DNS_RCODE_NXDOMAIN = 3,
    DNS_RCODE_NOTIMP = 4,
    DNS_RCODE_REFUSED = 5,
};

struct dns_client;
struct dns_query;

struct dns_query_opts {
    const char *server;     /* "127.0.9.53" or "::1" */
    uint16_t port;          /* 0: 53 */
    const char *name;       /* "matrix.lab.test" (a trailing dot is fine) */
    uint16_t type;          /* DNS_T_A, ... */
    uint32_t timeout_ms;    /* all tries together; 0: DNS_DEFAULT_TIMEOUT_MS */
    int tries;              /* 0: DNS_DEFAULT_TRIES; at most DNS_MAX_TRIES */
    const char *local_addr; /* optional numeric source address */
    int no_recurse;         /* 1: clear RD (asking an authoritative server) */
};

struct dns_record {
    const char *name; /* owner, absolute ("a.lab.test.") */
    uint16_t type;
    uint32_t ttl;
    /* Presentation text: "192.0.2.1", "ns1.lab.test.", SOA as
     * "mname rname serial refresh retry expire minimum". TXT is the
     * concatenation of its strings, bytes outside 0x20-0x7e and '\' written
     * as \DDD. */
    const char *value;
};

struct dns_result {
    /* 0 when the server answered NOERROR (n_records may be 0: NODATA), else:
     *   -ENOENT     NXDOMAIN          -EAGAIN      SERVFAIL
     *   -EACCES     REFUSED           -EOPNOTSUPP  NOTIMP
     *   -EPROTO     FORMERR or another rcode
     *   -ETIMEDOUT  no answer in time -ECONNREFUSED  port unreachable
     *   -EBADMSG    malformed answer  -ECANCELED   cancelled
     *   -EADDRNOTAVAIL (or another bind errno)  local_addr cannot be bound
     *   -ENOMEM, -EIO
     * Answers larger than the EDNS size (1232) are retried over TCP by
     * c-ares; both transports count against the same timeout. */
    int result;
    const char *detail; /* "NOERROR", "NXDOMAIN", "timeout after 1000 ms (2 tries)", ... */
    int rcode;          /* DNS_RCODE_*, or -1 when no response was received */
    int authoritative;  /* AA bit */
    int truncated;      /* more than DNS_MAX_RECORDS answers */
    const struct dns_record *records; /* the answer section, in order */
    size_t n_records;
    uint64_t elapsed_ms;
};

typedef void (*dns_done_cb)(struct dns_query *q, const struct dns_result *res, void *arg);
typedef void (*dns_close_cb)(void *arg);

int dns_global_init(void);
void dns_global_cleanup(void);

int dns_client_new(uv_loop_t *loop, struct dns_client **out);
void dns_client_close(struct dns_client *c, dns_close_cb close_cb, void *arg);
size_t dns_client_active(const struct dns_client *c);

/* 0 or -EINVAL (bad server, name, address; logged), -ENOMEM, -ESHUTDOWN. */
int dns_query_start(struct dns_client *c, const struct dns_query_opts *o, dns_done_cb cb, void *arg,
                    struct dns_query **out);
/* The callback runs soon with -ECANCELED; no-op once the result is decided. */
void dns_query_cancel(struct dns_query *q);

/* "A" <-> 1, case-insensitive; 0 / NULL when unknown. */
uint16_t dns_type_parse(const char *s);
const char *dns_type_name(uint16_t type);
const char *dns_rcode_name(int rcode);

#endif
