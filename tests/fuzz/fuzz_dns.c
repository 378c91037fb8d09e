/* Fuzz target: DNS answers as the probes and actions get them
 * (lib/dns_client.c on c-ares), end to end: the harness is the DNS server,
 * on a UDP socket at 127.0.0.1 in the same loop; a query goes to it and the
 * input, with the query's id written into its first two bytes, is the
 * answer to every request the query sends. c-ares hands over what matches
 * the query (id and question: the seeds ask "fuzz.lab.test" of the type
 * chosen below) and the client parses it with ldns.
 *
 * Input: a control byte (bits 0-3: the query type, from a table; bit 4: ask
 * without recursion), then the answer. An answer with TC set sends c-ares
 * to TCP, which is refused (a TCP socket is bound to the port, not
 * listening). An answer c-ares ignores leaves the query waiting: the
 * harness cancels it a few loop turns after answering (loopback delivery
 * is immediate).
 *
 * Invariants: the callback runs once, with a documented result; a NOERROR
 * result has rcode 0; the records are at most DNS_MAX_RECORDS, each with an
 * owner and a value; a TXT value is printable ASCII (everything else
 * escaped as \DDD, so it is safe to log and to compare). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "fuzzutil.h"
#include "lib/dns_client.h"

struct run {
    uv_loop_t loop;
    uv_udp_t server;
    uv_idle_t idle;
    uv_timer_t guard;
    struct dns_client *client;
    struct dns_query *query;
    const uint8_t *answer;
    size_t answer_len;
    int answers;
    int idle_rounds; /* loop turns since the last answer */
    int calls;
    int done;
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init();
    dns_global_init();
    return 0;
}

static void check_result(const struct dns_result *res)
{
    static const int allowed[] = { 0,       -ENOENT,    -EAGAIN,       -EACCES,  -EOPNOTSUPP,
                                   -EPROTO, -ETIMEDOUT, -ECONNREFUSED, -EBADMSG, -ECANCELED,
                                   -ENOMEM, -EIO,       -EINVAL };
    bool known = false;
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        known = known || res->result == allowed[i];
    FUZZ_CHECK(known, "result %d (%s)", res->result, res->detail ? res->detail : "");
    FUZZ_CHECK(res->detail != NULL, "no detail");
    FUZZ_CHECK(res->result != 0 || res->rcode == 0, "NOERROR result with rcode %d", res->rcode);
    FUZZ_CHECK(res->n_records <= DNS_MAX_RECORDS, "%zu records", res->n_records);
    FUZZ_CHECK(res->n_records == 0 || res->records, "records missing");
    for (size_t i = 0; i < res->n_records; i++) {
        const struct dns_record *r = &res->records[i];
        FUZZ_CHECK(r->name && r->value, "record %zu lacks its owner or value", i);
        if (r->type == DNS_T_TXT) {
            for (const char *p = r->value; *p; p++)
                FUZZ_CHECK(*p >= 0x20 && *p <= 0x7e, "TXT value with byte 0x%02x",
                           (unsigned char)*p);
        }
    }
}

static void on_client_closed(void *arg)
{
    (void)arg;
}

static void finish(struct run *x)
{
    x->done = 1;
    uv_close((uv_handle_t *)&x->server, NULL);
    uv_close((uv_handle_t *)&x->idle, NULL);
    uv_close((uv_handle_t *)&x->guard, NULL);
    dns_client_close(x->client, on_client_closed, NULL);
}

static void on_done(struct dns_query *q, const struct dns_result *res, void *arg)
{
    (void)q;
    struct run *x = arg;
    FUZZ_CHECK(++x->calls == 1, "the callback ran %d times", x->calls);
    x->query = NULL;
    if (getenv("FUZZ_DEBUG")) /* to see what a seed does */
        fprintf(stderr, "result %d (%s), rcode %d, %zu records%s%s\n", res->result, res->detail,
                res->rcode, res->n_records, res->n_records ? ", first: " : "",
                res->n_records ? res->records[0].value : "");
    check_result(res);
    finish(x);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    static char space[65536];
    buf->base = space;
    buf->len = sizeof space;
}

/* An answer c-ares did not take leaves the query waiting for its timeout:
 * cancel it once the answer had its chance. The idle handle keeps the loop
 * from blocking meanwhile; loopback delivery is immediate, so two turns are
 * enough for the answer to be read and handled. */
static void on_idle(uv_idle_t *h)
{
    struct run *x = h->data;
    if (++x->idle_rounds < 3)
        return;
    uv_idle_stop(h);
    if (x->query)
        dns_query_cancel(x->query);
}

static void on_request(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *addr,
                       unsigned flags)
{
    (void)flags;
    struct run *x = h->data;
    if (n < 2 || !addr || x->answers >= 8)
        return;
    uint8_t *out = malloc(x->answer_len ? x->answer_len : 1);
    memcpy(out, x->answer, x->answer_len);
    if (x->answer_len >= 2)
        memcpy(out, buf->base, 2); /* the request's id */
    uv_buf_t b = uv_buf_init((char *)out, (unsigned)x->answer_len);
    uv_udp_try_send(h, &b, 1, addr);
    free(out);
    x->answers++;
    x->idle_rounds = 0;
    uv_idle_start(&x->idle, on_idle);
}

static void on_guard(uv_timer_t *t)
{
    struct run *x = t->data;
    if (x->query)
        dns_query_cancel(x->query);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint16_t types[16] = { DNS_T_A,   DNS_T_AAAA,  DNS_T_TXT, DNS_T_SOA,
                                        DNS_T_NS,  DNS_T_CNAME, DNS_T_MX,  DNS_T_SRV,
                                        DNS_T_CAA, DNS_T_PTR,   99,        65,
                                        35,        52,          255,       DNS_T_TXT };
    if (size < 1)
        return 0;
    struct run x;
    memset(&x, 0, sizeof x);
    x.answer = data + 1;
    x.answer_len = size - 1;
    uv_loop_init(&x.loop);
    uv_udp_init(&x.loop, &x.server);
    x.server.data = &x;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    FUZZ_CHECK(uv_udp_bind(&x.server, (const struct sockaddr *)&sa, 0) == 0, "bind");
    int len = sizeof sa;
    uv_udp_getsockname(&x.server, (struct sockaddr *)&sa, &len);
    /* Holds the TCP port so that c-ares' TCP retry is refused at once. */
    int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bind(tcp, (const struct sockaddr *)&sa, sizeof sa);
    uv_udp_recv_start(&x.server, alloc_cb, on_request);
    uv_idle_init(&x.loop, &x.idle);
    x.idle.data = &x;
    uv_timer_init(&x.loop, &x.guard);
    x.guard.data = &x;
    uv_timer_start(&x.guard, on_guard, 3000, 0);
    FUZZ_CHECK(dns_client_new(&x.loop, &x.client) == 0, "dns_client_new");
    struct dns_query_opts o = {
        .server = "127.0.0.1",
        .port = ntohs(sa.sin_port),
        .name = "fuzz.lab.test",
        .type = types[data[0] & 15],
        .timeout_ms = 2000,
        .tries = 1,
        .no_recurse = (data[0] & 16) != 0,
    };
    FUZZ_CHECK(dns_query_start(x.client, &o, on_done, &x, &x.query) == 0, "dns_query_start");
    uv_run(&x.loop, UV_RUN_DEFAULT);
    close(tcp);
    FUZZ_CHECK(x.calls == 1, "the callback ran %d times", x.calls);
    FUZZ_CHECK(uv_loop_close(&x.loop) == 0, "handles left open");
    return 0;
}
