/* Unit tests: TSIG key files, RFC 2136 updates and signed queries against a
 * throwaway BIND 9 (tests/unit/namedtmp.c), and the dns.update action's
 * check/run/ready through rb_exec_start with a minimal rb_env. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "namedtmp.h"
#include "lib/buf.h"
#include "lib/dns_client.h"
#include "lib/dns_wire.h"
#include "lib/dns_update.h"
#include "lib/tsig_key.h"
#include "runbooks/action.h"
#include "runbooks/actions/actions.h"

#define GUARD_MS 20000
#define ZONE     "test.example"

/* Zone contents: names per test, so that tests do not see each other's
 * updates. `big` is larger than 512 bytes: its UDP answer is truncated. */
static const char records[] =
    "www 5 IN A 127.0.1.10\n"
    "_triad.www 5 IN TXT \"epoch=0\"\n"
    "race 5 IN A 127.0.1.10\n"
    "_triad.race 5 IN TXT \"epoch=0\"\n"
    "keep 5 IN A 127.0.1.10\n"
    "_triad.keep 5 IN TXT \"epoch=0\"\n"
    "relay 5 IN A 127.0.1.10\n"
    "matrix 5 IN A 127.0.1.10\n"
    "_triad.matrix 5 IN TXT \"epoch=0\"\n"
    "chat 5 IN A 127.0.1.10\n"
    "chat 5 IN AAAA ::1\n"
    "cas1 5 IN A 127.0.1.10\n"
    "_triad.cas1 5 IN TXT \"epoch=0\"\n"
    "cas2 5 IN A 127.0.1.10\n"
    "_triad.cas2 5 IN TXT \"epoch=0\"\n"
    "odd 5 IN A 127.0.1.10\n"
    "_triad.odd 5 IN TXT \"not an epoch\"\n"
    "big 5 IN TXT \"0123456789012345678901234567890123456789012345678901234567890123456789\"\n"
    "big 5 IN TXT \"1123456789012345678901234567890123456789012345678901234567890123456789\"\n"
    "big 5 IN TXT \"2123456789012345678901234567890123456789012345678901234567890123456789\"\n"
    "big 5 IN TXT \"3123456789012345678901234567890123456789012345678901234567890123456789\"\n"
    "big 5 IN TXT \"4123456789012345678901234567890123456789012345678901234567890123456789\"\n"
    "big 5 IN TXT \"5123456789012345678901234567890123456789012345678901234567890123456789\"\n"
    "big 5 IN TXT \"6123456789012345678901234567890123456789012345678901234567890123456789\"\n"
    "big 5 IN TXT \"7123456789012345678901234567890123456789012345678901234567890123456789\"\n"
    "big 5 IN TXT \"8123456789012345678901234567890123456789012345678901234567890123456789\"\n"
    "big 5 IN TXT \"9123456789012345678901234567890123456789012345678901234567890123456789\"\n";

static const char good_key_text[] = "# made by tsig-keygen\n"
                                    "key \"triad-key\" {\n"
                                    "\talgorithm hmac-sha256;\n"
                                    "\tsecret \"yr04u1RqI7iw3jPgLiIC1q91EdaAXEPE/R/EYsrzp/A=\";\n"
                                    "};\n";

static struct namedtmp named;
static int named_state; /* 1 running, -1 cannot run here (skip) */
static char skip_why[512];
static struct tsig_key key, ro_key, bad_key, unknown_key;
static char tmpdir[256];

#define NEED_NAMED()                                    \
    do {                                                \
        if (named_state != 1) {                         \
            print_message("# skipped: %s\n", skip_why); \
            skip();                                     \
        }                                               \
    } while (0)

static void write_text(const char *path, mode_t mode, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(chmod(path, mode), 0);
}

static int suite_setup(void **state)
{
    (void)state;
    char detail[512];
    snprintf(tmpdir, sizeof tmpdir, "/tmp/triad-test-dnsupd.XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    if (!namedtmp_available(skip_why, sizeof skip_why)) {
        /* The tests without a server still need a key to sign with. */
        named_state = -1;
        return tsig_key_parse(good_key_text, strlen(good_key_text), "test", NULL, &key, detail,
                              sizeof detail);
    }
    if (namedtmp_start(&named, ZONE, records) != 0) {
        fprintf(stderr, "namedtmp: %s\n", named.why);
        return -1;
    }
    named_state = 1;
    if (tsig_key_load(named.keyfile, NULL, &key, detail, sizeof detail) != 0 ||
        tsig_key_load(named.ro_keyfile, NULL, &ro_key, detail, sizeof detail) != 0) {
        fprintf(stderr, "key: %s\n", detail);
        return -1;
    }
    /* Same name, other secret (BADSIG); unknown name (BADKEY). */
    bad_key = key;
    memcpy(bad_key.secret, "AAAA", 4);
    unknown_key = key;
    snprintf(unknown_key.name, sizeof unknown_key.name, "nobody-key");
    return 0;
}

static int rm_file(const char *dir, const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return unlink(p);
}

static int suite_teardown(void **state)
{
    (void)state;
    namedtmp_destroy(&named);
    const char *files[] = { "good.key", "world.key", "sha512.key", "garbage.key", "two.key",
                            "big.key",  "bad64.key", "short.key",  "wrong.key",   NULL };
    for (size_t i = 0; files[i]; i++)
        rm_file(tmpdir, files[i]);
    rmdir(tmpdir);
    tsig_key_wipe(&key);
    tsig_key_wipe(&ro_key);
    tsig_key_wipe(&bad_key);
    tsig_key_wipe(&unknown_key);
    dns_global_cleanup();
    return 0;
}

/* ---- loop harness ---- */

struct ctx {
    uv_loop_t loop;
    uv_timer_t guard;
    int guard_fired;
};

static void on_guard(uv_timer_t *t)
{
    struct ctx *x = t->data;
    x->guard_fired = 1;
    uv_stop(&x->loop);
}

static void ctx_init(struct ctx *x)
{
    memset(x, 0, sizeof *x);
    assert_int_equal(uv_loop_init(&x->loop), 0);
    uv_timer_init(&x->loop, &x->guard);
    x->guard.data = x;
    uv_timer_start(&x->guard, on_guard, GUARD_MS, 0);
    uv_unref((uv_handle_t *)&x->guard);
}

static void ctx_run(struct ctx *x)
{
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_false(x->guard_fired);
}

static void ctx_done(struct ctx *x)
{
    uv_close((uv_handle_t *)&x->guard, NULL);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&x->loop), 0);
}

#define MAX_KEPT 16

struct outcome {
    int calls;
    int result;
    int rcode;
    int tsig_error;
    int tcp;
    int udp_sends;
    int failed_prereq;
    uint64_t elapsed_ms;
    char detail[512];
    size_t n;
    int truncated;
    struct {
        char name[128];
        uint16_t type;
        uint32_t ttl;
        char rdata[256];
    } rec[MAX_KEPT];
};

static void on_done(struct dns_update *u, const struct dns_update_result *res, void *arg)
{
    (void)u;
    struct outcome *o = arg;
    o->calls++;
    o->result = res->result;
    o->rcode = res->rcode;
    o->tsig_error = res->tsig_error;
    o->tcp = res->tcp;
    o->udp_sends = res->udp_sends;
    o->failed_prereq = res->failed_prereq;
    o->elapsed_ms = res->elapsed_ms;
    o->truncated = res->truncated;
    snprintf(o->detail, sizeof o->detail, "%s", res->detail);
    o->n = res->n_records;
    for (size_t i = 0; i < res->n_records && i < MAX_KEPT; i++) {
        snprintf(o->rec[i].name, sizeof o->rec[i].name, "%s", res->records[i].name);
        snprintf(o->rec[i].rdata, sizeof o->rec[i].rdata, "%s", res->records[i].rdata);
        o->rec[i].type = res->records[i].type;
        o->rec[i].ttl = res->records[i].ttl;
    }
}

static struct dns_update_server server_with(const struct tsig_key *k)
{
    return (struct dns_update_server){
        .server = "127.0.0.1", .port = (uint16_t)named.port, .key = k, .timeout_ms = 3000
    };
}

static void do_query(const struct dns_update_server *srv, const char *name, uint16_t type,
                     struct outcome *out)
{
    struct ctx x;
    ctx_init(&x);
    memset(out, 0, sizeof *out);
    assert_int_equal(dns_update_query(&x.loop, srv, name, type, on_done, out, NULL), 0);
    assert_int_equal(out->calls, 0); /* never from inside the call */
    ctx_run(&x);
    assert_int_equal(out->calls, 1);
    ctx_done(&x);
}

static void do_update(const struct dns_update_server *srv, const struct dns_update_msg *m,
                      struct outcome *out)
{
    struct ctx x;
    ctx_init(&x);
    memset(out, 0, sizeof *out);
    assert_int_equal(dns_update_send(&x.loop, srv, m, on_done, out, NULL), 0);
    assert_int_equal(out->calls, 0);
    ctx_run(&x);
    assert_int_equal(out->calls, 1);
    ctx_done(&x);
}

/* The rdata of name/type as the server has it now (signed query), joined
 * with '|' in answer order. */
static void current(const char *name, uint16_t type, char *out, size_t len)
{
    struct dns_update_server srv = server_with(&key);
    struct outcome o;
    do_query(&srv, name, type, &o);
    out[0] = '\0';
    assert_true(o.result == 0 || o.result == -ENOENT);
    for (size_t i = 0; i < o.n && i < MAX_KEPT; i++) {
        if (o.rec[i].type != type)
            continue;
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s%s", used ? "|" : "", o.rec[i].rdata);
    }
}

/* Compare-and-swap of a fence, the way the action does it. */
static void cas(const char *name, const char *fence, const char *from, int64_t to, const char *addr,
                struct dns_update_msg *m, struct dns_prereq *pre, struct dns_change ch[4],
                char *value, size_t vlen, const char **from_list)
{
    snprintf(value, vlen, "\"epoch=%lld\"", (long long)to);
    from_list[0] = from;
    *pre = (struct dns_prereq){ DNS_PREREQ_RRSET_EQUALS, fence, DNS_T_TXT, from_list, 1 };
    ch[0] = (struct dns_change){ DNS_CHANGE_DELETE_RRSET, name, DNS_T_A, 0, NULL };
    ch[1] = (struct dns_change){ DNS_CHANGE_ADD, name, DNS_T_A, 5, addr };
    ch[2] = (struct dns_change){ DNS_CHANGE_DELETE_RRSET, fence, DNS_T_TXT, 0, NULL };
    ch[3] = (struct dns_change){ DNS_CHANGE_ADD, fence, DNS_T_TXT, 5, value };
    *m = (struct dns_update_msg){ ZONE, pre, 1, ch, 4 };
}

/* ---- key files ---- */

static void key_path(const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", tmpdir, name);
}

/* A message: a question for lab.test, then `n` records of the given types
 * (owner: a pointer to the question's name, no rdata), all counted in the
 * additional section. */
static size_t wire_msg(uint8_t *m, const uint16_t *types, int n)
{
    static const uint8_t head[] = { 0x12, 0x34, 0x80, 0x00, 0,   1,   0,   0,   0, 0, 0, 0, 3,
                                    'l',  'a',  'b',  4,    't', 'e', 's', 't', 0, 0, 6, 0, 1 };
    memcpy(m, head, sizeof head);
    m[11] = (uint8_t)n;
    size_t len = sizeof head;
    for (int i = 0; i < n; i++) {
        const uint8_t rr[] = {
            0xC0, 12, (uint8_t)(types[i] >> 8), (uint8_t)types[i], 0, 0xFF, 0, 0, 0, 0, 0, 0
        };
        memcpy(m + len, rr, sizeof rr);
        len += sizeof rr;
    }
    return len;
}

/* ldns leaks all but the last of several TSIG (or OPT) records: such
 * messages are refused before it parses them (the dns_update fuzzer's
 * finding-two-tsig). */
static void test_wire_acceptable(void **state)
{
    (void)state;
    uint8_t m[512];
    const uint16_t one_each[] = { 41, 16, 250 }, two_tsig[] = { 250, 16, 250 },
                   two_opt[] = { 41, 41 };
    size_t len = wire_msg(m, one_each, 3);
    assert_true(dns_wire_acceptable(m, len));
    assert_false(dns_wire_acceptable(m, len - 1)); /* the last record cut short */
    assert_false(dns_wire_acceptable(m, 11));
    assert_false(dns_wire_acceptable(NULL, 0));
    assert_false(dns_wire_acceptable(m, wire_msg(m, two_tsig, 3)));
    assert_false(dns_wire_acceptable(m, wire_msg(m, two_opt, 2)));
    assert_true(dns_wire_acceptable(m, wire_msg(m, two_opt, 0)));
    /* A name with a reserved label type (0x40) is not walked. */
    len = wire_msg(m, one_each, 1);
    m[12] = 0x43;
    assert_false(dns_wire_acceptable(m, len));

    FILE *f = fopen("tests/fuzz/corpus/dns_update/finding-two-tsig", "rb");
    assert_non_null(f);
    size_t n = fread(m, 1, sizeof m, f);
    fclose(f);
    assert_true(n > 13);
    assert_false(dns_wire_acceptable(m + 1, n - 1)); /* after the harness's control byte */
    ldns_pkt *pkt = (ldns_pkt *)m;
    assert_int_not_equal(dns_wire2pkt(&pkt, m + 1, n - 1), LDNS_STATUS_OK);
    assert_null(pkt);
    len = wire_msg(m, one_each, 0);
    assert_int_equal(dns_wire2pkt(&pkt, m, len), LDNS_STATUS_OK);
    assert_non_null(pkt);
    ldns_pkt_free(pkt);
}

static void test_key_good(void **state)
{
    (void)state;
    char p[512], detail[512] = "";
    struct tsig_key k;
    key_path("good.key", p, sizeof p);
    write_text(p, 0600, good_key_text);
    assert_int_equal(tsig_key_load(p, NULL, &k, detail, sizeof detail), 0);
    assert_string_equal(k.name, "triad-key");
    assert_string_equal(k.algorithm, "hmac-sha256");
    assert_string_equal(k.secret, "yr04u1RqI7iw3jPgLiIC1q91EdaAXEPE/R/EYsrzp/A=");
    assert_int_equal(k.secret_bytes, 32);
    /* By name, with comments of every style and a trailing dot. */
    static const char two[] =
        "/* two keys */ key other { algorithm hmac-sha1; secret \"c2hvcnQ=\"; };\n"
        "// the one we want\n"
        "key \"triad-key.\" { secret \"yr04u1RqI7iw3jPgLiIC1q91EdaAXEPE/R/EYsrzp/A=\";\n"
        "  algorithm \"HMAC-SHA256\"; };\n";
    key_path("two.key", p, sizeof p);
    write_text(p, 0640, two);
    assert_int_equal(tsig_key_load(p, "triad-key", &k, detail, sizeof detail), 0);
    assert_int_equal(k.secret_bytes, 32);
    /* Without a name, two keys are ambiguous. */
    assert_int_equal(tsig_key_load(p, NULL, &k, detail, sizeof detail), -EINVAL);
    assert_non_null(strstr(detail, "2 keys"));
    assert_string_equal(k.secret, ""); /* wiped on failure */
    tsig_key_wipe(&k);
    assert_string_equal(k.name, "");
}

static void test_key_world_readable(void **state)
{
    (void)state;
    char p[512], detail[512] = "";
    struct tsig_key k;
    key_path("world.key", p, sizeof p);
    write_text(p, 0644, good_key_text);
    assert_int_equal(tsig_key_load(p, NULL, &k, detail, sizeof detail), -EACCES);
    assert_non_null(strstr(detail, "readable by every user"));
    assert_null(strstr(detail, "yr04u1"));
    assert_string_equal(k.secret, "");
    write_text(p, 0602, good_key_text);
    assert_int_equal(tsig_key_load(p, NULL, &k, detail, sizeof detail), -EACCES);
    assert_non_null(strstr(detail, "writable"));
    key_path("missing.key", p, sizeof p);
    assert_int_equal(tsig_key_load(p, NULL, &k, detail, sizeof detail), -ENOENT);
    assert_non_null(strstr(detail, "does not exist"));
    /* A directory is not a key file. */
    assert_int_equal(tsig_key_load(tmpdir, NULL, &k, detail, sizeof detail), -EINVAL);
}

static void test_key_wrong_algorithm(void **state)
{
    (void)state;
    char p[512], detail[512] = "";
    struct tsig_key k;
    key_path("sha512.key", p, sizeof p);
    write_text(p, 0600,
               "key \"triad-key\" {\n\talgorithm hmac-sha512;\n\tsecret "
               "\"yr04u1RqI7iw3jPgLiIC1q91EdaAXEPE/R/EYsrzp/A=\";\n};\n");
    assert_int_equal(tsig_key_load(p, NULL, &k, detail, sizeof detail), -ENOTSUP);
    assert_non_null(strstr(detail, "hmac-sha512"));
    assert_non_null(strstr(detail, "tsig-keygen -a hmac-sha256"));
    assert_null(strstr(detail, "yr04u1"));
}

static void expect_garbage(const char *text, const char *needle)
{
    char p[512], detail[512] = "";
    struct tsig_key k;
    key_path("garbage.key", p, sizeof p);
    write_text(p, 0600, text);
    int rc = tsig_key_load(p, NULL, &k, detail, sizeof detail);
    if (rc != -EINVAL || !strstr(detail, needle))
        fail_msg("for %s: rc %d, detail '%s' (want '%s')", text, rc, detail, needle);
    assert_null(strstr(detail, "c2VjcmV0LXNlY3JldC1zZWNyZXQ"));
    assert_string_equal(k.secret, "");
}

static void test_key_garbage(void **state)
{
    (void)state;
    expect_garbage("", "no key statement");
    expect_garbage("hello world\n", "expected a key statement");
    expect_garbage("key \"k\" { algorithm hmac-sha256; secret \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n",
                   "never ends");
    expect_garbage("key \"k\" { algorithm hmac-sha256; };", "has no secret");
    expect_garbage("key \"k\" { secret \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\"; };", "has no algorithm");
    expect_garbage("key \"k\" { algorithm hmac-sha256; secret \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\"; }",
                   "expected ';' after");
    expect_garbage("key \"k\" { algorithm hmac-sha256; secret \"!!not base64!!\"; };",
                   "not valid base64");
    expect_garbage("key \"k\" { algorithm hmac-sha256; secret \"c2hvcnQ=\"; };", "only 5 bytes");
    expect_garbage("key \"k\" { algorithm hmac-sha256; colour blue; };", "unknown clause");
    expect_garbage("key \"k\" { algorithm hmac-sha256; secret \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\"; "
                   "};\x01\x02\xff",
                   "binary");
    char p[512], detail[512] = "";
    struct tsig_key k;
    /* Larger than any key file. */
    char *big = malloc(TSIG_KEY_FILE_MAX + 100);
    assert_non_null(big);
    memset(big, '#', TSIG_KEY_FILE_MAX + 99);
    big[TSIG_KEY_FILE_MAX + 99] = '\0';
    key_path("big.key", p, sizeof p);
    write_text(p, 0600, big);
    free(big);
    assert_int_equal(tsig_key_load(p, NULL, &k, detail, sizeof detail), -EMSGSIZE);
    /* A wanted name that is not there. */
    key_path("good.key", p, sizeof p);
    write_text(p, 0600, good_key_text);
    assert_int_equal(tsig_key_load(p, "other", &k, detail, sizeof detail), -EINVAL);
    assert_non_null(strstr(detail, "no key named \"other\""));
}

/* ---- updates and signed queries ---- */

static void test_update_and_verify(void **state)
{
    (void)state;
    NEED_NAMED();
    struct dns_update_server srv = server_with(&key);
    struct dns_update_msg m;
    struct dns_prereq pre;
    struct dns_change ch[4];
    char value[32], now[256];
    const char *from[1];
    struct outcome o;
    cas("www." ZONE, "_triad.www." ZONE, "\"epoch=0\"", 3, "127.0.2.10", &m, &pre, ch, value,
        sizeof value, from);
    do_update(&srv, &m, &o);
    assert_int_equal(o.result, 0);
    assert_int_equal(o.rcode, 0);
    assert_int_equal(o.tcp, 0);
    assert_int_equal(o.udp_sends, 1);
    assert_non_null(strstr(o.detail, "NOERROR"));
    current("www." ZONE, DNS_T_A, now, sizeof now);
    assert_string_equal(now, "127.0.2.10");
    current("_triad.www." ZONE, DNS_T_TXT, now, sizeof now);
    assert_string_equal(now, "\"epoch=3\"");
    /* The signed query gives owner, type and TTL too. */
    do_query(&srv, "www." ZONE, DNS_T_A, &o);
    assert_int_equal(o.n, 1);
    assert_string_equal(o.rec[0].name, "www." ZONE ".");
    assert_int_equal(o.rec[0].ttl, 5);
    /* The same compare-and-swap again: the fence no longer holds epoch=0. */
    do_update(&srv, &m, &o);
    assert_int_equal(o.result, -ESTALE);
    assert_int_equal(o.failed_prereq, 0);
    assert_non_null(strstr(o.detail, "NXRRSET"));
    assert_non_null(strstr(o.detail, "_triad.www." ZONE " TXT is exactly \"epoch=0\""));
}

static void test_wrong_key(void **state)
{
    (void)state;
    NEED_NAMED();
    struct dns_update_msg m;
    struct dns_prereq pre;
    struct dns_change ch[4];
    char value[32], now[256];
    const char *from[1];
    struct outcome o;
    cas("keep." ZONE, "_triad.keep." ZONE, "\"epoch=0\"", 7, "127.0.2.10", &m, &pre, ch, value,
        sizeof value, from);
    /* The secret differs from the server's: BADSIG, one packet, no TCP. */
    struct dns_update_server srv = server_with(&bad_key);
    do_update(&srv, &m, &o);
    assert_int_equal(o.result, -EACCES);
    assert_int_equal(o.rcode, 9); /* NOTAUTH */
    assert_int_equal(o.tsig_error, DNS_TSIG_BADSIG);
    assert_int_equal(o.udp_sends, 1);
    assert_int_equal(o.tcp, 0);
    assert_non_null(strstr(o.detail, "rejected the TSIG key 'triad-key'"));
    assert_non_null(strstr(o.detail, "BADSIG"));
    assert_null(strstr(o.detail, bad_key.secret));
    /* A key the server does not know: BADKEY. */
    srv = server_with(&unknown_key);
    do_update(&srv, &m, &o);
    assert_int_equal(o.result, -EACCES);
    assert_int_equal(o.tsig_error, DNS_TSIG_BADKEY);
    assert_int_equal(o.udp_sends, 1);
    assert_non_null(strstr(o.detail, "BADKEY"));
    /* A known key the update policy does not grant: REFUSED. */
    srv = server_with(&ro_key);
    do_update(&srv, &m, &o);
    assert_int_equal(o.result, -EPERM);
    assert_int_equal(o.rcode, 5);
    assert_int_equal(o.udp_sends, 1);
    assert_non_null(strstr(o.detail, "update policy"));
    /* Nothing changed. */
    current("keep." ZONE, DNS_T_A, now, sizeof now);
    assert_string_equal(now, "127.0.1.10");
    current("_triad.keep." ZONE, DNS_T_TXT, now, sizeof now);
    assert_string_equal(now, "\"epoch=0\"");
}

/* Two leaders read epoch=0; epoch 3 writes first, then the stale epoch 2
 * tries with the same prerequisite: the server refuses it. */
static void test_stale_epoch_refused(void **state)
{
    (void)state;
    NEED_NAMED();
    struct dns_update_server srv = server_with(&key);
    struct dns_update_msg m3, m2;
    struct dns_prereq p3, p2;
    struct dns_change c3[4], c2[4];
    char v3[32], v2[32], now[256];
    const char *f3[1], *f2[1];
    struct outcome o3, o2;
    cas("race." ZONE, "_triad.race." ZONE, "\"epoch=0\"", 3, "127.0.2.10", &m3, &p3, c3, v3,
        sizeof v3, f3);
    cas("race." ZONE, "_triad.race." ZONE, "\"epoch=0\"", 2, "127.0.3.10", &m2, &p2, c2, v2,
        sizeof v2, f2);
    do_update(&srv, &m3, &o3);
    assert_int_equal(o3.result, 0);
    do_update(&srv, &m2, &o2);
    assert_int_equal(o2.result, -ESTALE);
    assert_int_equal(o2.rcode, 8); /* NXRRSET */
    assert_int_equal(o2.failed_prereq, 0);
    current("race." ZONE, DNS_T_A, now, sizeof now);
    assert_string_equal(now, "127.0.2.10");
    current("_triad.race." ZONE, DNS_T_TXT, now, sizeof now);
    assert_string_equal(now, "\"epoch=3\"");

    /* Both in flight at once, from epoch=3: exactly one wins. */
    struct ctx x;
    struct outcome a, b;
    cas("race." ZONE, "_triad.race." ZONE, "\"epoch=3\"", 5, "127.0.2.11", &m3, &p3, c3, v3,
        sizeof v3, f3);
    cas("race." ZONE, "_triad.race." ZONE, "\"epoch=3\"", 4, "127.0.3.11", &m2, &p2, c2, v2,
        sizeof v2, f2);
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    ctx_init(&x);
    assert_int_equal(dns_update_send(&x.loop, &srv, &m3, on_done, &a, NULL), 0);
    assert_int_equal(dns_update_send(&x.loop, &srv, &m2, on_done, &b, NULL), 0);
    ctx_run(&x);
    ctx_done(&x);
    assert_int_equal(a.calls + b.calls, 2);
    assert_true((a.result == 0 && b.result == -ESTALE) || (a.result == -ESTALE && b.result == 0));
    current("_triad.race." ZONE, DNS_T_TXT, now, sizeof now);
    assert_string_equal(now, a.result == 0 ? "\"epoch=5\"" : "\"epoch=4\"");
    current("race." ZONE, DNS_T_A, now, sizeof now);
    assert_string_equal(now, a.result == 0 ? "127.0.2.11" : "127.0.3.11");
}

/* A server that swallows UDP and accepts TCP but never answers. */
struct silent {
    int udp, tcp, port;
};

static void silent_open(struct silent *s)
{
    /* A UDP port whose TCP twin is free too. */
    for (int attempt = 0; attempt < 50; attempt++) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t al = sizeof a;
        s->udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        s->tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(s->udp >= 0 && s->tcp >= 0);
        assert_int_equal(bind(s->udp, (struct sockaddr *)&a, sizeof a), 0);
        assert_int_equal(getsockname(s->udp, (struct sockaddr *)&a, &al), 0);
        if (bind(s->tcp, (struct sockaddr *)&a, sizeof a) == 0 && listen(s->tcp, 8) == 0) {
            s->port = ntohs(a.sin_port);
            return;
        }
        close(s->udp);
        close(s->tcp);
    }
    fail_msg("no port free for both UDP and TCP");
}

static void silent_close(struct silent *s)
{
    close(s->udp);
    close(s->tcp);
}

static void test_unreachable_times_out(void **state)
{
    (void)state;
    struct silent s;
    silent_open(&s);
    struct dns_update_server srv = server_with(&key);
    srv.port = (uint16_t)s.port;
    srv.timeout_ms = 600;
    srv.tries = 3;
    struct dns_update_msg m;
    struct dns_prereq pre;
    struct dns_change ch[4];
    char value[32];
    const char *from[1];
    struct outcome o;
    cas("www." ZONE, "_triad.www." ZONE, "\"epoch=0\"", 9, "127.0.2.10", &m, &pre, ch, value,
        sizeof value, from);
    uint64_t t0 = uv_hrtime();
    do_update(&srv, &m, &o);
    uint64_t took = (uv_hrtime() - t0) / 1000000;
    silent_close(&s);
    assert_int_equal(o.result, -ETIMEDOUT);
    assert_int_equal(o.rcode, -1);
    assert_int_equal(o.udp_sends, 3);
    assert_int_equal(o.tcp, 1); /* UDP went unanswered: TCP had its turn */
    assert_true(o.elapsed_ms >= 590);
    assert_true(took < 600 + 400);
    assert_non_null(strstr(o.detail, "no answer from 127.0.0.1:"));
    assert_non_null(strstr(o.detail, "within 600 ms"));
}

static void test_tcp_fallback(void **state)
{
    (void)state;
    NEED_NAMED();
    struct dns_update_server srv = server_with(&key);
    struct outcome o;
    /* The answer does not fit in 512 bytes: truncated over UDP, whole over
     * TCP, and its signature verified there. */
    do_query(&srv, "big." ZONE, DNS_T_TXT, &o);
    assert_int_equal(o.result, 0);
    assert_int_equal(o.tcp, 1);
    assert_int_equal(o.udp_sends, 1);
    assert_int_equal(o.n, 10);
    assert_int_equal(o.rec[0].type, DNS_T_TXT);
    /* Nothing listens on UDP at the relay's port: port unreachable, then the
     * update goes over TCP through the relay to named. */
    int port = 0;
    pid_t relay = namedtmp_tcp_relay(named.port, &port);
    assert_true(relay > 0);
    srv.port = (uint16_t)port;
    struct dns_update_msg m;
    struct dns_change ch[2] = {
        { DNS_CHANGE_DELETE_RRSET, "relay." ZONE, DNS_T_A, 0, NULL },
        { DNS_CHANGE_ADD, "relay." ZONE, DNS_T_A, 5, "127.0.2.10" },
    };
    m = (struct dns_update_msg){ ZONE, NULL, 0, ch, 2 };
    do_update(&srv, &m, &o);
    namedtmp_kill(relay);
    assert_int_equal(o.result, 0);
    assert_int_equal(o.tcp, 1);
    assert_true(o.elapsed_ms < 1500); /* refused at once, not timed out */
    char now[256];
    current("relay." ZONE, DNS_T_A, now, sizeof now);
    assert_string_equal(now, "127.0.2.10");
    /* An update too large for UDP goes straight to TCP. */
    struct dns_change many[40];
    char values[40][80];
    for (int i = 0; i < 40; i++) {
        snprintf(values[i], sizeof values[i], "\"value %02d of a large update, padded out\"", i);
        many[i] = (struct dns_change){ DNS_CHANGE_ADD, "many." ZONE, DNS_T_TXT, 5, values[i] };
    }
    srv.port = (uint16_t)named.port;
    m = (struct dns_update_msg){ ZONE, NULL, 0, many, 40 };
    do_update(&srv, &m, &o);
    assert_int_equal(o.result, 0);
    assert_int_equal(o.tcp, 1);
    assert_int_equal(o.udp_sends, 0);
    do_query(&srv, "many." ZONE, DNS_T_TXT, &o);
    assert_int_equal(o.result, 0);
    assert_int_equal(o.n, 40);
}

static void test_signed_query_readiness(void **state)
{
    (void)state;
    NEED_NAMED();
    struct dns_update_server srv = server_with(&key);
    struct outcome o;
    do_query(&srv, ZONE, DNS_T_SOA, &o);
    assert_int_equal(o.result, 0);
    assert_int_equal(o.n, 1);
    assert_int_equal(o.rec[0].type, DNS_T_SOA);
    assert_non_null(strstr(o.rec[0].rdata, "ns." ZONE "."));
    srv = server_with(&bad_key);
    do_query(&srv, ZONE, DNS_T_SOA, &o);
    assert_int_equal(o.result, -EACCES);
    assert_int_equal(o.tsig_error, DNS_TSIG_BADSIG);
    assert_int_equal(o.udp_sends, 1);
    assert_int_equal(o.n, 0);
    srv = server_with(&unknown_key);
    do_query(&srv, ZONE, DNS_T_SOA, &o);
    assert_int_equal(o.result, -EACCES);
    assert_int_equal(o.tsig_error, DNS_TSIG_BADKEY);
    /* A name that does not exist. */
    srv = server_with(&key);
    do_query(&srv, "nothing-here." ZONE, DNS_T_TXT, &o);
    assert_int_equal(o.result, -ENOENT);
    assert_int_equal(o.rcode, 3);
}

static void test_source_address(void **state)
{
    (void)state;
    NEED_NAMED();
    struct dns_update_server srv = server_with(&key);
    struct outcome o;
    /* The zone answers only NAMEDTMP_BOUND_SOURCE. */
    do_query(&srv, NAMEDTMP_BOUND_ZONE, DNS_T_SOA, &o);
    assert_int_equal(o.result, -EPERM);
    srv.local_addr = NAMEDTMP_BOUND_SOURCE;
    do_query(&srv, NAMEDTMP_BOUND_ZONE, DNS_T_SOA, &o);
    assert_int_equal(o.result, 0);
    assert_int_equal(o.n, 1);
}

static void test_cancel_and_bad_input(void **state)
{
    (void)state;
    struct silent s;
    silent_open(&s);
    struct dns_update_server srv = server_with(&key);
    srv.port = (uint16_t)s.port;
    struct ctx x;
    struct outcome o;
    struct dns_update *u = NULL;
    memset(&o, 0, sizeof o);
    ctx_init(&x);
    assert_int_equal(dns_update_query(&x.loop, &srv, ZONE, DNS_T_SOA, on_done, &o, &u), 0);
    dns_update_cancel(u);
    assert_int_equal(o.calls, 0);
    ctx_run(&x);
    ctx_done(&x);
    silent_close(&s);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.result, -ECANCELED);
    /* Refused at the start, never called back. */
    ctx_init(&x);
    memset(&o, 0, sizeof o);
    struct dns_change bad = { DNS_CHANGE_ADD, "www." ZONE, DNS_T_A, 5, "not-an-address" };
    struct dns_update_msg m = { ZONE, NULL, 0, &bad, 1 };
    assert_int_equal(dns_update_send(&x.loop, &srv, &m, on_done, &o, NULL), -EINVAL);
    struct dns_change inject = { DNS_CHANGE_ADD, "www." ZONE, DNS_T_A, 5,
                                 "127.0.0.1\nx A 1.2.3.4" };
    m.changes = &inject;
    assert_int_equal(dns_update_send(&x.loop, &srv, &m, on_done, &o, NULL), -EINVAL);
    srv.server = "localhost"; /* numeric addresses only */
    assert_int_equal(dns_update_query(&x.loop, &srv, ZONE, DNS_T_SOA, on_done, &o, NULL), -EINVAL);
    srv.server = "127.0.0.1";
    srv.key = NULL;
    assert_int_equal(dns_update_query(&x.loop, &srv, ZONE, DNS_T_SOA, on_done, &o, NULL), -EINVAL);
    ctx_run(&x);
    ctx_done(&x);
    assert_int_equal(o.calls, 0);
}

/* ---- the dns.update action ---- */

struct act_env {
    struct ctx x;
    struct rb_env env;
    struct rb_step step;
    json_t *ctx;
    json_t *params;
    int dns_closed;
};

struct act_out {
    int calls;
    int status;
    char detail[512];
    json_t *result;
};

static void on_exec(struct rb_exec *x, int status, const char *detail, void *arg)
{
    struct act_out *o = arg;
    o->calls++;
    o->status = status;
    snprintf(o->detail, sizeof o->detail, "%s", detail);
    o->result = json_incref(x->result);
}

/* ctx as config_to_json + rb_context would give it. */
static json_t *action_ctx(const char *keyfile, const char *fence, const char *names_json, int port,
                          int64_t timeout_ms)
{
    char server[64];
    snprintf(server, sizeof server, "127.0.0.1:%d", port);
    json_error_t err;
    json_t *names = json_loads(names_json, 0, &err);
    assert_non_null(names);
    json_t *ctx = json_pack(
        "{s:{s:s,s:[s],s:s,s:o,s:I,s:s,s:I},s:{s:{s:s,s:[s]},s:{s:s,s:[s,s]},s:{s:s,s:[s]}},"
        "s:{s:I}}",
        "dns", "zone", ZONE, "servers", server, "tsig_key_file", keyfile, "names", names, "ttl_ms",
        (json_int_t)5000, "fence_record", fence, "timeout_ms", (json_int_t)timeout_ms, "sites",
        "dc1", "host", "127.0.1.1", "public_addresses", "127.0.1.10", "dc2", "host", "127.0.2.1",
        "public_addresses", "127.0.2.10", "::2", "dc3", "host", "127.0.3.1", "public_addresses",
        "127.0.3.10", "run", "epoch", (json_int_t)0);
    assert_non_null(ctx);
    return ctx;
}

static void act_init(struct act_env *e, json_t *ctx, const char *site)
{
    memset(e, 0, sizeof *e);
    ctx_init(&e->x);
    e->env.loop = &e->x.loop;
    assert_int_equal(dns_client_new(&e->x.loop, &e->env.dns), 0);
    e->step.id = "dns";
    e->step.action_name = "dns.update";
    e->step.action = rb_action_find("dns.update");
    e->step.timeout_ms = 8000;
    assert_ptr_equal(e->step.action, &rb_action_dns_update);
    e->ctx = ctx;
    e->params = json_pack("{s:s}", "site", site);
}

static void on_dns_closed(void *arg)
{
    struct act_env *e = arg;
    e->dns_closed++;
}

static void act_done(struct act_env *e)
{
    dns_client_close(e->env.dns, on_dns_closed, e);
    uv_run(&e->x.loop, UV_RUN_DEFAULT);
    assert_int_equal(e->dns_closed, 1);
    ctx_done(&e->x);
    json_decref(e->ctx);
    json_decref(e->params);
}

static void act_op(struct act_env *e, int64_t epoch, enum rb_op op, struct act_out *o)
{
    memset(o, 0, sizeof *o);
    struct rb_exec *x =
        rb_exec_start(&e->env, &e->step, e->params, e->ctx, "run-1", epoch, op, on_exec, o);
    assert_non_null(x);
    assert_int_equal(o->calls, 0);
    ctx_run(&e->x);
    assert_int_equal(o->calls, 1);
}

static void act_out_free(struct act_out *o)
{
    json_decref(o->result);
    o->result = NULL;
}

static void test_action_describe(void **state)
{
    (void)state;
    struct act_env e;
    act_init(&e,
             action_ctx("/nonexistent", "_triad.matrix." ZONE, "[\"matrix." ZONE "\"]", 53, 2000),
             "dc2");
    struct buf b;
    buf_init(&b, 512);
    struct rb_exec x = { .env = &e.env,
                         .step = &e.step,
                         .action = e.step.action,
                         .params = e.params,
                         .ctx = e.ctx,
                         .epoch = 3 };
    rb_action_dns_update.describe(&x, &b);
    assert_string_equal(b.data, "point matrix." ZONE " at 127.0.2.10, ::2 (dc2), epoch 3 (TXT "
                                "_triad.matrix." ZONE ")");
    /* From the run's context when the exec has no epoch (plans). */
    buf_reset(&b);
    json_object_set_new(json_object_get(e.ctx, "run"), "epoch", json_integer(4));
    rb_exec_describe(&e.env, &e.step, e.params, e.ctx, &b);
    assert_non_null(strstr(b.data, "epoch 4"));
    buf_free(&b);
    act_done(&e);
}

static void test_action_run_check_ready(void **state)
{
    (void)state;
    NEED_NAMED();
    struct act_env e;
    struct act_out o;
    act_init(
        &e,
        action_ctx(named.keyfile, "_triad.matrix." ZONE, "[\"matrix." ZONE "\"]", named.port, 2000),
        "dc3");
    /* Before: the name points at dc1, the fence holds epoch=0. */
    act_op(&e, 3, RB_OP_CHECK, &o);
    assert_int_equal(o.status, 0);
    assert_non_null(strstr(o.detail, "matrix." ZONE " A is 127.0.1.10"));
    assert_non_null(strstr(o.detail, "holds \"epoch=0\" (want \"epoch=3\")"));
    act_out_free(&o);
    act_op(&e, 3, RB_OP_READY, &o);
    assert_int_equal(o.status, 0);
    assert_non_null(strstr(o.detail, "TSIG key 'triad-key' accepted by 127.0.0.1:"));
    assert_non_null(strstr(o.detail, "holds epoch=0"));
    assert_int_equal(json_integer_value(json_object_get(o.result, "fence_epoch")), 0);
    act_out_free(&o);
    /* Run with epoch 3. */
    act_op(&e, 3, RB_OP_RUN, &o);
    assert_int_equal(o.status, 0);
    assert_non_null(strstr(o.detail, "127.0.3.10 (dc3), epoch 0 -> 3"));
    assert_non_null(strstr(o.detail, "clients follow within 5 s"));
    assert_int_equal(json_integer_value(json_object_get(o.result, "previous_epoch")), 0);
    assert_int_equal(json_integer_value(json_object_get(o.result, "old_ttl_s")), 5);
    assert_int_equal(json_array_size(json_object_get(o.result, "servers_verified")), 1);
    assert_false(json_is_true(json_object_get(o.result, "already_done")));
    act_out_free(&o);
    char now[256];
    current("matrix." ZONE, DNS_T_A, now, sizeof now);
    assert_string_equal(now, "127.0.3.10");
    current("_triad.matrix." ZONE, DNS_T_TXT, now, sizeof now);
    assert_string_equal(now, "\"epoch=3\"");
    /* Now the postcondition holds... */
    act_op(&e, 3, RB_OP_CHECK, &o);
    assert_int_equal(o.status, 1);
    assert_non_null(strstr(o.detail, "answer 127.0.3.10 for matrix." ZONE "; fence epoch=3"));
    act_out_free(&o);
    /* ...and running again changes nothing. */
    struct outcome soa1, soa2;
    struct dns_update_server srv = server_with(&key);
    do_query(&srv, ZONE, DNS_T_SOA, &soa1);
    act_op(&e, 3, RB_OP_RUN, &o);
    assert_int_equal(o.status, 0);
    assert_non_null(strstr(o.detail, "already done"));
    assert_true(json_is_true(json_object_get(o.result, "already_done")));
    act_out_free(&o);
    do_query(&srv, ZONE, DNS_T_SOA, &soa2);
    assert_string_equal(soa1.rec[0].rdata, soa2.rec[0].rdata); /* same serial */
    /* Nothing to do needs no key either. */
    json_t *dns = json_object_get(e.ctx, "dns");
    json_object_set_new(dns, "tsig_key_file", json_string("/nonexistent/tsig.key"));
    act_op(&e, 3, RB_OP_RUN, &o);
    assert_int_equal(o.status, 0);
    assert_non_null(strstr(o.detail, "already done"));
    act_out_free(&o);
    act_op(&e, 3, RB_OP_READY, &o);
    assert_int_equal(o.status, -ENOENT);
    assert_non_null(strstr(o.detail, "/nonexistent/tsig.key does not exist"));
    act_out_free(&o);
    json_object_set_new(dns, "tsig_key_file", json_string(named.keyfile));
    act_op(&e, 3, RB_OP_CHECK, &o);
    assert_int_equal(o.status, 1);
    act_out_free(&o);
    /* A stale run (epoch 2) is refused before it writes anything. */
    json_object_set_new(e.params, "site", json_string("dc2"));
    act_op(&e, 2, RB_OP_RUN, &o);
    assert_int_equal(o.status, -ESTALE);
    assert_non_null(strstr(o.detail, "a newer decision (epoch 3) already changed DNS; this run "
                                     "(epoch 2) is stale"));
    act_out_free(&o);
    current("_triad.matrix." ZONE, DNS_T_TXT, now, sizeof now);
    assert_string_equal(now, "\"epoch=3\"");
    current("matrix." ZONE, DNS_T_A, now, sizeof now);
    assert_string_equal(now, "127.0.3.10");
    /* A newer run (epoch 4) moves it to dc2, IPv4 and IPv6. */
    act_op(&e, 4, RB_OP_RUN, &o);
    assert_int_equal(o.status, 0);
    assert_non_null(strstr(o.detail, "epoch 3 -> 4"));
    act_out_free(&o);
    current("matrix." ZONE, DNS_T_AAAA, now, sizeof now);
    assert_string_equal(now, "::2");
    act_op(&e, 4, RB_OP_CHECK, &o);
    assert_int_equal(o.status, 1);
    act_out_free(&o);
    act_done(&e);
}

static void test_action_fence_absent_and_several_names(void **state)
{
    (void)state;
    NEED_NAMED();
    struct act_env e;
    struct act_out o;
    /* chat has A and AAAA records; new.* does not exist; no fence yet. */
    act_init(&e,
             action_ctx(named.keyfile, "_triad.chat." ZONE, "[\"chat." ZONE "\", \"new." ZONE "\"]",
                        named.port, 2000),
             "dc1");
    act_op(&e, 1, RB_OP_READY, &o);
    assert_int_equal(o.status, 0);
    assert_non_null(strstr(o.detail, "does not exist yet"));
    act_out_free(&o);
    act_op(&e, 1, RB_OP_RUN, &o);
    assert_int_equal(o.status, 0);
    assert_non_null(strstr(o.detail, "epoch (none) -> 1"));
    assert_non_null(strstr(o.detail, "clients follow within 5 s")); /* chat's old records */
    assert_true(json_is_null(json_object_get(o.result, "previous_epoch")));
    act_out_free(&o);
    char now[256];
    current("chat." ZONE, DNS_T_AAAA, now, sizeof now);
    assert_string_equal(now, ""); /* dc1 has no IPv6 address */
    current("new." ZONE, DNS_T_A, now, sizeof now);
    assert_string_equal(now, "127.0.1.10");
    current("_triad.chat." ZONE, DNS_T_TXT, now, sizeof now);
    assert_string_equal(now, "\"epoch=1\"");
    act_op(&e, 1, RB_OP_CHECK, &o);
    assert_int_equal(o.status, 1);
    act_out_free(&o);
    act_done(&e);
}

static void test_action_errors(void **state)
{
    (void)state;
    NEED_NAMED();
    struct act_env e;
    struct act_out o;
    char now[256];
    /* A fence that is not "epoch=N" is never overwritten. */
    act_init(&e,
             action_ctx(named.keyfile, "_triad.odd." ZONE, "[\"odd." ZONE "\"]", named.port, 2000),
             "dc2");
    act_op(&e, 5, RB_OP_RUN, &o);
    assert_int_equal(o.status, -EPROTO);
    assert_non_null(strstr(o.detail, "holds \"not an epoch\", not \"epoch=N\""));
    act_out_free(&o);
    current("odd." ZONE, DNS_T_A, now, sizeof now);
    assert_string_equal(now, "127.0.1.10");
    act_done(&e);

    /* The wrong key: ready and run say so, nothing changes. */
    char wrong[512];
    key_path("wrong.key", wrong, sizeof wrong);
    write_text(wrong, 0600,
               "key \"triad-key\" { algorithm hmac-sha256; secret "
               "\"yr04u1RqI7iw3jPgLiIC1q91EdaAXEPE/R/EYsrzp/A=\"; };\n");
    act_init(&e, action_ctx(wrong, "_triad.keep." ZONE, "[\"keep." ZONE "\"]", named.port, 2000),
             "dc2");
    act_op(&e, 5, RB_OP_READY, &o);
    assert_int_equal(o.status, -EACCES);
    assert_non_null(strstr(o.detail, "rejected the TSIG key 'triad-key' (BADSIG"));
    act_out_free(&o);
    act_op(&e, 5, RB_OP_RUN, &o);
    assert_int_equal(o.status, -EACCES);
    act_out_free(&o);
    current("keep." ZONE, DNS_T_A, now, sizeof now);
    assert_string_equal(now, "127.0.1.10");
    act_done(&e);

    /* A world-readable key file is refused before anything is sent. */
    chmod(wrong, 0644);
    act_init(&e, action_ctx(wrong, "_triad.keep." ZONE, "[\"keep." ZONE "\"]", named.port, 2000),
             "dc2");
    act_op(&e, 5, RB_OP_RUN, &o);
    assert_int_equal(o.status, -EACCES);
    assert_non_null(strstr(o.detail, "readable by every user"));
    act_out_free(&o);
    act_done(&e);
}

/* Queries and updates leave from this daemon's site address (when it is a
 * local address): NAMEDTMP_BOUND_ZONE serves only NAMEDTMP_BOUND_SOURCE. */
static void test_action_source_address(void **state)
{
    (void)state;
    NEED_NAMED();
    struct act_env e;
    struct act_out o;
    json_t *ctx = action_ctx(named.keyfile, "_triad.matrix." NAMEDTMP_BOUND_ZONE,
                             "[\"matrix." NAMEDTMP_BOUND_ZONE "\"]", named.port, 1000);
    json_object_set_new(json_object_get(ctx, "dns"), "zone", json_string(NAMEDTMP_BOUND_ZONE));
    json_object_set_new(json_object_get(json_object_get(ctx, "sites"), "dc3"), "host",
                        json_string(NAMEDTMP_BOUND_SOURCE));
    act_init(&e, ctx, "dc2");
    /* From dc1's address (127.0.1.1): refused. */
    json_object_set_new(e.ctx, "site", json_string("dc1"));
    act_op(&e, 2, RB_OP_RUN, &o);
    assert_int_equal(o.status, -EPERM);
    assert_non_null(strstr(o.detail, "cannot read the fence record"));
    act_out_free(&o);
    /* From dc3's (NAMEDTMP_BOUND_SOURCE): served. */
    json_object_set_new(e.ctx, "site", json_string("dc3"));
    act_op(&e, 2, RB_OP_RUN, &o);
    assert_int_equal(o.status, 0);
    assert_non_null(strstr(o.detail, "epoch 0 -> 2"));
    act_out_free(&o);
    act_op(&e, 2, RB_OP_CHECK, &o);
    assert_int_equal(o.status, 1);
    act_out_free(&o);
    act_done(&e);
}

/* Two leaders at once, epochs 6 and 7: whatever the order the server sees
 * them in, the newer decision is what DNS ends up with. */
static void test_action_concurrent_leaders(void **state)
{
    (void)state;
    NEED_NAMED();
    int rereads = 0;
    for (int round = 0; round < 3; round++) {
        struct act_env e;
        struct act_out o6, o7;
        char name[64], fence[80], names[80], now[256];
        snprintf(name, sizeof name, "lead%d." ZONE, round);
        snprintf(fence, sizeof fence, "_triad.%s", name);
        snprintf(names, sizeof names, "[\"%s\"]", name);
        act_init(&e, action_ctx(named.keyfile, fence, names, named.port, 2000), "dc2");
        json_t *p7 = json_pack("{s:s}", "site", "dc3");
        memset(&o6, 0, sizeof o6);
        memset(&o7, 0, sizeof o7);
        struct rb_exec *x6 = rb_exec_start(&e.env, &e.step, e.params, e.ctx, "run-6", 6 + 2 * round,
                                           RB_OP_RUN, on_exec, &o6);
        struct rb_exec *x7 = rb_exec_start(&e.env, &e.step, p7, e.ctx, "run-7", 7 + 2 * round,
                                           RB_OP_RUN, on_exec, &o7);
        assert_non_null(x6);
        assert_non_null(x7);
        ctx_run(&e.x);
        assert_int_equal(o6.calls, 1);
        assert_int_equal(o7.calls, 1);
        assert_int_equal(o7.status, 0);
        assert_true(o6.status == 0 || o6.status == -ESTALE);
        rereads += (int)json_integer_value(json_object_get(o7.result, "fence_rereads"));
        if (o6.status == -ESTALE)
            assert_non_null(strstr(o6.detail, "newer decision"));
        current(fence, DNS_T_TXT, now, sizeof now);
        char want[32];
        snprintf(want, sizeof want, "\"epoch=%d\"", 7 + 2 * round);
        assert_string_equal(now, want);
        current(name, DNS_T_A, now, sizeof now);
        assert_string_equal(now, "127.0.3.10");
        act_out_free(&o6);
        act_out_free(&o7);
        json_decref(p7);
        act_done(&e);
    }
    print_message("# the newer leader re-read the fence in %d of 3 rounds\n", rereads);
}

/* A UDP relay to named on the test's loop. Before it forwards the first
 * UPDATE it sees, it lets another writer change the fence: the action's
 * prerequisite then fails, deterministically. */
struct interloper {
    uv_udp_t front; /* the action talks to this */
    uv_udp_t back;  /* to named */
    struct sockaddr_in named_addr;
    struct {
        uint16_t id;
        struct sockaddr_storage from;
    } map[256];
    int updates;
    int port;
    const char *name, *fence;
    int64_t epoch; /* what the other writer writes */
    char buf[65536];
};

static void il_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    struct interloper *il = h->data;
    *b = uv_buf_init(il->buf, sizeof il->buf);
}

static void il_from_client(uv_udp_t *h, ssize_t n, const uv_buf_t *b, const struct sockaddr *from,
                           unsigned flags)
{
    (void)flags;
    struct interloper *il = h->data;
    if (n < 12 || !from)
        return;
    const unsigned char *p = (const unsigned char *)b->base;
    uint16_t id = (uint16_t)(p[0] << 8 | p[1]);
    il->map[id & 255].id = id;
    memcpy(&il->map[id & 255].from, from, sizeof(struct sockaddr_in));
    if (((p[2] >> 3) & 0x0f) == 5 && ++il->updates == 1) {
        /* The other writer's compare-and-swap, on a loop of its own. */
        struct dns_update_server srv = server_with(&key);
        struct dns_update_msg m;
        struct dns_prereq pre;
        struct dns_change ch[4];
        char value[32];
        const char *from_list[1];
        struct outcome o;
        cas(il->name, il->fence, "\"epoch=0\"", il->epoch, "127.0.9.9", &m, &pre, ch, value,
            sizeof value, from_list);
        do_update(&srv, &m, &o);
        assert_int_equal(o.result, 0);
    }
    uv_buf_t out = uv_buf_init(b->base, (unsigned)n);
    uv_udp_try_send(&il->back, &out, 1, (const struct sockaddr *)&il->named_addr);
}

static void il_from_named(uv_udp_t *h, ssize_t n, const uv_buf_t *b, const struct sockaddr *from,
                          unsigned flags)
{
    (void)flags;
    (void)from;
    struct interloper *il = h->data;
    if (n < 12)
        return;
    const unsigned char *p = (const unsigned char *)b->base;
    uint16_t id = (uint16_t)(p[0] << 8 | p[1]);
    if (il->map[id & 255].id != id)
        return;
    uv_buf_t out = uv_buf_init(b->base, (unsigned)n);
    uv_udp_try_send(&il->front, &out, 1, (const struct sockaddr *)&il->map[id & 255].from);
}

static void il_open(struct interloper *il, uv_loop_t *loop, const char *name, const char *fence,
                    int64_t epoch)
{
    struct sockaddr_in a;
    int len = sizeof a;
    memset(il, 0, sizeof *il);
    il->name = name;
    il->fence = fence;
    il->epoch = epoch;
    uv_ip4_addr("127.0.0.1", named.port, &il->named_addr);
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_udp_init(loop, &il->front);
    uv_udp_init(loop, &il->back);
    il->front.data = il;
    il->back.data = il;
    assert_int_equal(uv_udp_bind(&il->front, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_udp_bind(&il->back, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_udp_getsockname(&il->front, (struct sockaddr *)&a, &len), 0);
    il->port = ntohs(a.sin_port);
    uv_udp_recv_start(&il->front, il_alloc, il_from_client);
    uv_udp_recv_start(&il->back, il_alloc, il_from_named);
    uv_unref((uv_handle_t *)&il->front);
    uv_unref((uv_handle_t *)&il->back);
}

static void il_close(struct interloper *il)
{
    uv_close((uv_handle_t *)&il->front, NULL);
    uv_close((uv_handle_t *)&il->back, NULL);
}

static void test_action_fence_changed_under_us(void **state)
{
    (void)state;
    NEED_NAMED();
    struct act_env e;
    struct act_out o;
    struct interloper il;
    char now[256];
    /* Another writer moves the fence to epoch 2 (older than ours): read it
     * again, and the update with the new prerequisite goes through. */
    act_init(&e, action_ctx(named.keyfile, "_triad.cas1." ZONE, "[\"cas1." ZONE "\"]", 0, 2000),
             "dc2");
    il_open(&il, &e.x.loop, "cas1." ZONE, "_triad.cas1." ZONE, 2);
    char server[64];
    snprintf(server, sizeof server, "127.0.0.1:%d", il.port);
    json_array_set_new(json_object_get(json_object_get(e.ctx, "dns"), "servers"), 0,
                       json_string(server));
    act_op(&e, 5, RB_OP_RUN, &o);
    assert_int_equal(o.status, 0);
    assert_int_equal(il.updates, 2);
    assert_int_equal(json_integer_value(json_object_get(o.result, "fence_rereads")), 1);
    assert_non_null(strstr(o.detail, "epoch 2 -> 5"));
    assert_int_equal(json_integer_value(json_object_get(o.result, "previous_epoch")), 2);
    act_out_free(&o);
    il_close(&il);
    act_done(&e);
    current("_triad.cas1." ZONE, DNS_T_TXT, now, sizeof now);
    assert_string_equal(now, "\"epoch=5\"");
    current("cas1." ZONE, DNS_T_A, now, sizeof now);
    assert_string_equal(now, "127.0.2.10");

    /* The other writer is a newer decision (epoch 9): stop, change nothing. */
    act_init(&e, action_ctx(named.keyfile, "_triad.cas2." ZONE, "[\"cas2." ZONE "\"]", 0, 2000),
             "dc2");
    il_open(&il, &e.x.loop, "cas2." ZONE, "_triad.cas2." ZONE, 9);
    snprintf(server, sizeof server, "127.0.0.1:%d", il.port);
    json_array_set_new(json_object_get(json_object_get(e.ctx, "dns"), "servers"), 0,
                       json_string(server));
    act_op(&e, 5, RB_OP_RUN, &o);
    assert_int_equal(o.status, -ESTALE);
    assert_int_equal(il.updates, 1);
    assert_non_null(strstr(o.detail, "a newer decision (epoch 9) already changed DNS"));
    act_out_free(&o);
    il_close(&il);
    act_done(&e);
    current("_triad.cas2." ZONE, DNS_T_TXT, now, sizeof now);
    assert_string_equal(now, "\"epoch=9\"");
    current("cas2." ZONE, DNS_T_A, now, sizeof now);
    assert_string_equal(now, "127.0.9.9");
}

static void test_action_unreachable_and_cancel(void **state)
{
    (void)state;
    struct silent s;
    silent_open(&s);
    struct act_env e;
    struct act_out o;
    char keyfile[512];
    key_path("good.key", keyfile, sizeof keyfile);
    write_text(keyfile, 0600, good_key_text);
    act_init(&e, action_ctx(keyfile, "_triad.www." ZONE, "[\"www." ZONE "\"]", s.port, 400), "dc2");
    /* check cannot tell; ready and run fail within the DNS timeout. */
    uint64_t t0 = uv_hrtime();
    act_op(&e, 3, RB_OP_CHECK, &o);
    assert_true(o.status < 0);
    assert_non_null(strstr(o.detail, "cannot tell"));
    act_out_free(&o);
    act_op(&e, 3, RB_OP_READY, &o);
    assert_int_equal(o.status, -ETIMEDOUT);
    act_out_free(&o);
    act_op(&e, 3, RB_OP_RUN, &o);
    assert_int_equal(o.status, -ETIMEDOUT);
    assert_non_null(strstr(o.detail, "fence record"));
    act_out_free(&o);
    assert_true((uv_hrtime() - t0) / 1000000 < 4000);
    /* Cancelled while waiting: the callback says so once, nothing leaks. */
    memset(&o, 0, sizeof o);
    struct rb_exec *x =
        rb_exec_start(&e.env, &e.step, e.params, e.ctx, "run-1", 3, RB_OP_RUN, on_exec, &o);
    assert_non_null(x);
    rb_exec_cancel(x, false);
    ctx_run(&e.x);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, -ECANCELED);
    act_out_free(&o);
    /* Without a DNS client from the host, the action makes its own. */
    struct dns_client *host_dns = e.env.dns;
    e.env.dns = NULL;
    act_op(&e, 3, RB_OP_CHECK, &o);
    assert_true(o.status < 0);
    act_out_free(&o);
    e.env.dns = host_dns;
    act_done(&e);
    silent_close(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire_acceptable),
        cmocka_unit_test(test_key_good),
        cmocka_unit_test(test_key_world_readable),
        cmocka_unit_test(test_key_wrong_algorithm),
        cmocka_unit_test(test_key_garbage),
        cmocka_unit_test(test_update_and_verify),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_stale_epoch_refused),
        cmocka_unit_test(test_unreachable_times_out),
        cmocka_unit_test(test_tcp_fallback),
        cmocka_unit_test(test_signed_query_readiness),
        cmocka_unit_test(test_source_address),
        cmocka_unit_test(test_cancel_and_bad_input),
        cmocka_unit_test(test_action_describe),
        cmocka_unit_test(test_action_run_check_ready),
        cmocka_unit_test(test_action_fence_absent_and_several_names),
        cmocka_unit_test(test_action_errors),
        cmocka_unit_test(test_action_source_address),
        cmocka_unit_test(test_action_concurrent_leaders),
        cmocka_unit_test(test_action_fence_changed_under_us),
        cmocka_unit_test(test_action_unreachable_and_cancel),
    };
    return cmocka_run_group_tests(tests, suite_setup, suite_teardown);
}
