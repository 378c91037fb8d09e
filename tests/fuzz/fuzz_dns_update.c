/* Fuzz target: the answers to RFC 2136 updates and TSIG-signed queries
 * (lib/dns_update.c: matching, TSIG verification, rcode and prerequisite
 * mapping, the records of a query), end to end. The harness is the DNS
 * server at 127.0.0.1, on UDP and TCP on one port in the same loop; the
 * input is its answer, with the request's id written into it, and signed
 * by the harness with the request's MAC when the control byte says so.
 *
 * Input: a control byte, then the answer.
 *   bit 0  sign the answer (the input is parsed, given the id and signed
 *          with the key; an answer ldns cannot parse goes out as is)
 *   bit 1  answer over TCP: UDP gets a bare truncated header, so the client
 *          retries on TCP, where the answer follows, framed
 *   bit 2  the request is an UPDATE (zone lab.test, a prerequisite on the
 *          epoch TXT and two changes); else a query for
 *          _triad.matrix.lab.test TXT
 *   bit 3  over TCP, the input is the raw stream, its own framing included
 *          (the id goes to bytes 2-3), and the connection closes after it
 * An answer the client ignores on UDP leaves it waiting: the harness
 * cancels the request a few loop turns after answering.
 *
 * Invariants: the callback runs once; a success (result 0) only for an
 * answer the harness signed - an unsigned or badly signed answer is never
 * trusted; failed_prereq within the request's prerequisites; records only
 * for a query, each with an owner and rdata. */
#include <errno.h>
#include <ldns/ldns.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include <string.h>
#include <uv.h>

#include "fuzzutil.h"
#include "lib/dns_update.h"
#include "lib/dns_wire.h"
#include "lib/tsig_key.h"

static const char key_text[] = "key \"triad-key\" {\n"
                               "\talgorithm hmac-sha256;\n"
                               "\tsecret \"yr04u1RqI7iw3jPgLiIC1q91EdaAXEPE/R/EYsrzp/A=\";\n"
                               "};\n";
static struct tsig_key key;

struct run {
    uv_loop_t loop;
    uv_udp_t udp;
    uv_tcp_t listener;
    uv_tcp_t conn;
    bool conn_open;
    uv_idle_t idle;
    uv_write_t write;
    uint8_t rx[65536 + 2];
    size_t rx_len;
    uint8_t *out;
    struct dns_update *u;
    uint8_t ctl;
    const uint8_t *answer;
    size_t answer_len;
    int answers;
    int idle_rounds;
    int calls;
    size_t n_prereqs;
    bool is_query;
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init();
    char detail[256];
    if (tsig_key_parse(key_text, strlen(key_text), "fuzz", NULL, &key, detail, sizeof detail)) {
        fprintf(stderr, "fuzz: key: %s\n", detail);
        abort();
    }
    return 0;
}

/* The answer to a request: the input with the request's id, signed with
 * the request's MAC when asked. Returns a malloc'ed buffer. */
static uint8_t *make_answer(struct run *x, const uint8_t *req, size_t req_len, size_t *len)
{
    uint8_t *out = malloc(x->answer_len + 1);
    memcpy(out, x->answer, x->answer_len);
    *len = x->answer_len;
    if (x->answer_len >= 2 && req_len >= 2)
        memcpy(out, req, 2);
    if (!(x->ctl & 1))
        return out;
    ldns_pkt *rq = NULL, *an = NULL;
    /* ldns leaks all but the last of several TSIG records (lib/dns_wire.h):
     * such an answer goes out unsigned, as the client must refuse it. */
    if (ldns_wire2pkt(&rq, req, req_len) == LDNS_STATUS_OK && ldns_pkt_tsig(rq) &&
        dns_wire2pkt(&an, out, *len) == LDNS_STATUS_OK) {
        ldns_rr *old = ldns_pkt_tsig(an);
        ldns_pkt_set_tsig(an, NULL);
        if (old)
            ldns_rr_free(old);
        ldns_pkt_set_id(an, ldns_pkt_id(rq));
        uint8_t *wire = NULL;
        size_t wlen = 0;
        if (ldns_pkt_tsig_sign(an, key.name, key.secret, 300, "hmac-sha256.",
                               ldns_rr_rdf(ldns_pkt_tsig(rq), 3)) == LDNS_STATUS_OK &&
            ldns_pkt2wire(&wire, an, &wlen) == LDNS_STATUS_OK) {
            free(out);
            out = wire;
            *len = wlen;
        } else {
            free(wire);
        }
    }
    if (rq)
        ldns_pkt_free(rq);
    if (an)
        ldns_pkt_free(an);
    return out;
}

static void on_idle(uv_idle_t *h)
{
    struct run *x = h->data;
    if (++x->idle_rounds < 3)
        return;
    uv_idle_stop(h);
    if (x->u)
        dns_update_cancel(x->u);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    static char space[65536];
    buf->base = space;
    buf->len = sizeof space;
}

static void on_udp(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *addr,
                   unsigned flags)
{
    (void)flags;
    struct run *x = h->data;
    if (n < 12 || !addr || x->answers >= 8)
        return;
    x->answers++;
    if (x->ctl & 2) {
        /* A bare truncated answer: the client goes to TCP. */
        uint8_t tc[12];
        memcpy(tc, buf->base, 12);
        tc[2] |= 0x82; /* QR, TC */
        uv_buf_t b = uv_buf_init((char *)tc, sizeof tc);
        uv_udp_try_send(h, &b, 1, addr);
        return;
    }
    size_t len;
    uint8_t *out = make_answer(x, (const uint8_t *)buf->base, (size_t)n, &len);
    uv_buf_t b = uv_buf_init((char *)out, (unsigned)len);
    uv_udp_try_send(h, &b, 1, addr);
    free(out);
    x->idle_rounds = 0;
    uv_idle_start(&x->idle, on_idle);
}

static void close_conn(struct run *x)
{
    if (x->conn_open) {
        x->conn_open = false;
        uv_close((uv_handle_t *)&x->conn, NULL);
    }
}

static void on_written(uv_write_t *w, int status)
{
    (void)status;
    struct run *x = w->data;
    free(x->out);
    x->out = NULL;
    close_conn(x); /* the client sees the end of the stream */
}

static void on_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct run *x = s->data;
    if (n < 0) {
        close_conn(x);
        return;
    }
    if (x->rx_len + (size_t)n > sizeof x->rx)
        n = (ssize_t)(sizeof x->rx - x->rx_len);
    memcpy(x->rx + x->rx_len, buf->base, (size_t)n);
    x->rx_len += (size_t)n;
    if (x->rx_len < 2 || x->rx_len < 2 + ((size_t)x->rx[0] << 8 | x->rx[1]))
        return;
    uv_read_stop(s);
    size_t req_len = (size_t)x->rx[0] << 8 | x->rx[1];
    size_t len;
    if (x->ctl & 8) {
        x->out = malloc(x->answer_len + 1);
        memcpy(x->out, x->answer, x->answer_len);
        len = x->answer_len;
        if (len >= 4)
            memcpy(x->out + 2, x->rx + 2, 2);
    } else {
        uint8_t *a = make_answer(x, x->rx + 2, req_len, &len);
        x->out = malloc(len + 2);
        x->out[0] = (uint8_t)(len >> 8);
        x->out[1] = (uint8_t)len;
        memcpy(x->out + 2, a, len);
        free(a);
        len += 2;
    }
    uv_buf_t b = uv_buf_init((char *)x->out, (unsigned)len);
    x->write.data = x;
    if (uv_write(&x->write, s, &b, 1, on_written) < 0) {
        free(x->out);
        x->out = NULL;
        close_conn(x);
    }
}

static void on_connection(uv_stream_t *l, int status)
{
    struct run *x = l->data;
    if (status < 0 || x->conn_open)
        return;
    uv_tcp_init(&x->loop, &x->conn);
    x->conn.data = x;
    x->conn_open = true;
    if (uv_accept(l, (uv_stream_t *)&x->conn) != 0) {
        close_conn(x);
        return;
    }
    /* Closed with a reset, not a FIN: tens of thousands of connections a
     * minute in TIME_WAIT would use up the ports. The client still reads
     * what was sent before the reset (then an error instead of the end of
     * the stream, which it handles the same way). */
    uv_os_fd_t fd;
    struct linger lg = { 1, 0 };
    if (uv_fileno((uv_handle_t *)&x->conn, &fd) == 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    uv_read_start((uv_stream_t *)&x->conn, alloc_cb, on_tcp_read);
}

static void on_done(struct dns_update *u, const struct dns_update_result *res, void *arg)
{
    (void)u;
    struct run *x = arg;
    FUZZ_CHECK(++x->calls == 1, "the callback ran %d times", x->calls);
    x->u = NULL;
    if (getenv("FUZZ_DEBUG"))
        fprintf(stderr, "result %d rcode %d tsig_error %d tcp %d: %s\n", res->result, res->rcode,
                res->tsig_error, res->tcp, res->detail);
    FUZZ_CHECK(res->detail != NULL, "no detail");
    FUZZ_CHECK(res->result <= 0, "result %d", res->result);
    FUZZ_CHECK(res->result != 0 || (x->ctl & 1),
               "an answer the harness did not sign was trusted: %s", res->detail);
    FUZZ_CHECK(res->failed_prereq >= -1 && res->failed_prereq < (int)x->n_prereqs,
               "failed_prereq %d of %zu", res->failed_prereq, x->n_prereqs);
    FUZZ_CHECK(res->n_records == 0 || x->is_query, "records in the answer to an update");
    FUZZ_CHECK(res->n_records <= DNS_UPDATE_MAX_RECORDS, "%zu records", res->n_records);
    for (size_t i = 0; i < res->n_records; i++)
        FUZZ_CHECK(res->records[i].name && res->records[i].rdata, "record %zu incomplete", i);
    uv_close((uv_handle_t *)&x->udp, NULL);
    uv_close((uv_handle_t *)&x->listener, NULL);
    uv_close((uv_handle_t *)&x->idle, NULL);
    close_conn(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct run *x = calloc(1, sizeof *x);
    x->ctl = data[0];
    x->answer = data + 1;
    x->answer_len = size - 1;
    uv_loop_init(&x->loop);
    /* One port for both transports: sockets bound by hand, so that a port
     * whose TCP side is taken is simply skipped. */
    struct sockaddr_in sa;
    int ufd = -1, tfd = -1;
    for (int tries = 0; tries < 50 && tfd < 0; tries++) {
        uv_ip4_addr("127.0.0.1", 0, &sa);
        socklen_t sl = sizeof sa;
        ufd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (ufd < 0 || bind(ufd, (const struct sockaddr *)&sa, sizeof sa) < 0 ||
            getsockname(ufd, (struct sockaddr *)&sa, &sl) < 0) {
            close(ufd);
            ufd = -1;
            continue;
        }
        tfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1; /* ports whose earlier connections are in TIME_WAIT */
        if (tfd < 0 || setsockopt(tfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            bind(tfd, (const struct sockaddr *)&sa, sizeof sa) < 0 || listen(tfd, 4) < 0) {
            close(tfd);
            tfd = -1;
            close(ufd);
            ufd = -1;
        }
    }
    FUZZ_CHECK(ufd >= 0 && tfd >= 0, "no port for UDP and TCP");
    uv_udp_init(&x->loop, &x->udp);
    x->udp.data = x;
    uv_udp_open(&x->udp, ufd);
    uv_tcp_init(&x->loop, &x->listener);
    x->listener.data = x;
    uv_tcp_open(&x->listener, tfd);
    FUZZ_CHECK(uv_listen((uv_stream_t *)&x->listener, 4, on_connection) == 0, "tcp listen");
    uv_udp_recv_start(&x->udp, alloc_cb, on_udp);
    uv_idle_init(&x->loop, &x->idle);
    x->idle.data = x;

    struct dns_update_server srv = {
        .server = "127.0.0.1",
        .port = ntohs(sa.sin_port),
        .key = &key,
        .timeout_ms = 2000,
        .tries = 1,
    };
    int r;
    if (x->ctl & 4) {
        static const char *const epoch[] = { "\"epoch=3\"" };
        const struct dns_prereq pre[] = {
            { DNS_PREREQ_RRSET_EQUALS, "_triad.matrix.lab.test", 16, epoch, 1 },
            { DNS_PREREQ_NAME_IN_USE, "matrix.lab.test", 0, NULL, 0 },
        };
        const struct dns_change ch[] = {
            { DNS_CHANGE_DELETE_RRSET, "matrix.lab.test", 1, 0, NULL },
            { DNS_CHANGE_ADD, "matrix.lab.test", 1, 5, "127.0.2.10" },
        };
        struct dns_update_msg msg = { "lab.test", pre, 2, ch, 2 };
        x->n_prereqs = 2;
        r = dns_update_send(&x->loop, &srv, &msg, on_done, x, &x->u);
    } else {
        x->is_query = true;
        r = dns_update_query(&x->loop, &srv, "_triad.matrix.lab.test", 16, on_done, x, &x->u);
    }
    FUZZ_CHECK(r == 0, "the request was not sent: %d", r);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    FUZZ_CHECK(x->calls == 1, "the callback ran %d times", x->calls);
    FUZZ_CHECK(uv_loop_close(&x->loop) == 0, "handles left open");
    free(x->out);
    free(x);
    return 0;
}
