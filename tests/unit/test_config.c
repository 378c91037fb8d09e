/* Unit tests: configuration reading, defaults, cross-references, errors
 * with positions, secret files, and runbook validation. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "orchestrator/config.h"
#include "orchestrator/config_files.h"
#include "orchestrator/reload.h"
#include "runbooks/runbook.h"

#define VALID "tests/fixtures/config/valid.yaml"

static const struct config_load_opts no_files = { .no_file_checks = true };

static bool has_error(const struct diag *d, int line, int col, const char *needle)
{
    for (size_t i = 0; i < d->n; i++) {
        if ((line == 0 || d->items[i].line == line) && (col == 0 || d->items[i].col == col) &&
            strstr(d->items[i].msg, needle))
            return true;
    }
    return false;
}

static void dump(const struct diag *d)
{
    diag_print(d, stderr);
}

/* Writes `text` to a new file in a temp dir; returns its path (static). */
static const char *write_tmp(const char *name, const char *text)
{
    static char dir[64];
    static char path[128];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/triad-cfgtest-XXXXXX");
        assert_non_null(mkdtemp(dir));
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* valid.yaml with one substring replaced, written to a temp file. */
static const char *variant(const char *from, const char *to)
{
    char *text = read_all(VALID);
    char *at = strstr(text, from);
    assert_non_null(at);
    size_t n = strlen(text) + strlen(to) + 1;
    char *out = malloc(n);
    snprintf(out, n, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    /* Runbook paths are relative to the config file's directory. */
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    char abs[600];
    snprintf(abs, sizeof abs, "%s/runbooks/dc1-loss.yaml", cwd);
    char *rb = strstr(out, "../../../runbooks/dc1-loss.yaml");
    char *out2 = malloc(strlen(out) + strlen(abs) + 1);
    if (rb)
        snprintf(out2, strlen(out) + strlen(abs) + 1, "%.*s%s%s", (int)(rb - out), out, abs,
                 rb + strlen("../../../runbooks/dc1-loss.yaml"));
    else
        snprintf(out2, strlen(out) + 1, "%s", out);
    const char *p = write_tmp("variant.yaml", out2);
    free(text);
    free(out);
    free(out2);
    return p;
}

static void test_valid_and_defaults(void **state)
{
    (void)state;
    struct config cfg;
    struct diag d;
    diag_init(&d);
    int r = config_load(&cfg, VALID, &no_files, &d);
    if (r)
        dump(&d);
    assert_int_equal(r, 0);
    assert_string_equal(cfg.site, "dc2");
    assert_int_equal(cfg.n_sites, 3);
    assert_int_equal(config_primary(&cfg)->port, 7400);
    assert_string_equal(config_site(&cfg, "dc3")->peer_name, "dc3");
    assert_int_equal(cfg.quorum.size, 2);
    assert_int_equal(cfg.quorum.heartbeat_interval_ms, 500);
    assert_int_equal(cfg.quorum.max_frame, 1u << 20);
    assert_int_equal(cfg.failover.mode, MODE_SEMI_AUTOMATIC);
    assert_string_equal(cfg.failover.runbook, "dc1-loss");
    assert_int_equal(cfg.health.fail_after, 3);
    /* Probe targets come from the cluster's member in the probe's site. */
    assert_string_equal(cfg.probes[1].host, "127.0.2.5");
    assert_int_equal(cfg.probes[1].port, 5432);
    assert_string_equal(cfg.probes[1].dbname, "synapse");
    assert_true(cfg.probes[0].critical);
    assert_false(cfg.probes[2].critical);
    assert_int_equal(cfg.probes[0].interval_ms, 500);
    assert_int_equal(cfg.probes[2].keepalive_ms, CFG_DEFAULT_HTTP_KEEPALIVE_MS);
    assert_int_equal(cfg.probes[3].keepalive_ms, 0);
    /* DNS probes default to the configured servers. */
    assert_int_equal(cfg.probes[4].n_servers, 1);
    assert_string_equal(cfg.dns.fence_record, "_triad.matrix.lab.test");
    /* Relative paths are relative to the config file. */
    assert_string_equal(cfg.tls.ca_file, "tests/fixtures/config/ca.pem");
    json_t *j = config_to_json(&cfg);
    assert_string_equal(json_string_value(json_array_get(
                            json_object_get(json_object_get(json_object_get(j, "sites"), "dc2"),
                                            "public_addresses"),
                            0)),
                        "127.0.2.10");
    json_decref(j);
    config_free(&cfg);
    diag_free(&d);
}

static void test_acceptance_misspelled_key_and_unknown_site(void **state)
{
    (void)state;
    struct config cfg;
    struct diag d;
    diag_init(&d);
    assert_int_equal(
        config_load(&cfg, "tests/fixtures/config/bad-key-and-site.yaml", &no_files, &d), -1);
    assert_true(has_error(&d, 10, 3,
                          "unknown key 'heartbeat_intreval' (did you mean "
                          "'heartbeat_interval'?)"));
    assert_true(has_error(&d, 12, 5, "unknown site 'dc9'"));
    assert_int_equal(diag_count(&d), 2);
    config_free(&cfg);
    diag_free(&d);
}

struct bad_case {
    const char *from, *to, *expect;
};

static void test_every_error_reported(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        { "role: standby", "role: primary", "exactly one site must have role 'primary'" },
        { "address: 127.0.1.1:7400", "address: 127.0.1.1:99999", "port must be a number" },
        { "interval: 500ms", "interval: 500", "a duration needs a unit" },
        { "interval: 500ms", "interval: 5 parsecs", "unknown duration unit" },
        { "cluster: synapse}\n  - {name: postgres, kind: postgres, site: dc2",
          "cluster: synapse}\n  - {name: postgres, kind: postgres, site: dc1", "is defined twice" },
        { "failover: {target: dc2}", "failover: {target: dc3}", "it must be a standby" },
        { "failover: {target: dc2}", "failover: {target: dc2, runbook: nope}",
          "failover.runbook 'nope' is not defined" },
        { "self_fence: [dc1-pg]", "self_fence: [dc1-ok]", "cannot run on itself" },
        { "fence: [dc1-pg, dc1-ok]", "fence: [dc1-pg, dc1-nope]", "unknown fencing method" },
        { "ess: [synapse, mas]", "ess: [synapse, maas]", "unknown PostgreSQL cluster 'maas'" },
        { "names: [matrix.lab.test]", "names: [matrix.example.org]", "is not inside zone" },
        { "{name: root, unix_user: root}", "{name: root, token_sha256: secret}", "64 hex digits" },
        { "{name: root, unix_user: root}", "{name: root}", "at least one of" },
        { "cluster: test", "cluster: test\nsize: 2", "unknown key 'size'" },
        { "kind: StatefulSet, selector", "kind: Statefulset, selector",
          "did you mean 'StatefulSet'" },
        { "dc3:\n    role: witness\n    address: 127.0.3.1", "", "at least 3" },
        { "state_dir: /tmp/triad-test-state", "state_dir: [a, b]", "must be a single value" },
        { "connect_to: \"127.0.1.10:443\"}", "connect_to: \"127.0.1.10:443\", keepalive: 1500ms}",
          "'keepalive' must be 0 or whole seconds" },
        { "connect_to: \"127.0.1.10:443\"}", "connect_to: \"127.0.1.10:443\", keepalive: 2h}",
          "keepalive" },
        { "a: 1", "a: 1", "" }, /* placeholder, replaced below */
    };
    for (size_t i = 0; i + 1 < sizeof cases / sizeof cases[0]; i++) {
        const char *path = variant(cases[i].from, cases[i].to);
        struct config cfg;
        struct diag d;
        diag_init(&d);
        int r = config_load(&cfg, path, &no_files, &d);
        if (r == 0 || !has_error(&d, 0, 0, cases[i].expect)) {
            fprintf(stderr, "case %zu: expected '%s', got:\n", i, cases[i].expect);
            dump(&d);
        }
        assert_int_equal(r, -1);
        assert_true(has_error(&d, 0, 0, cases[i].expect));
        for (size_t k = 0; k < d.n; k++)
            assert_true(d.items[k].line > 0);
        config_free(&cfg);
        diag_free(&d);
    }
}

/* Inputs the fuzzer (tests/fuzz/fuzz_config.c) found crashing the reader;
 * each is reported as an error now. */
static void test_fuzz_findings(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        /* A self_fence naming a fence that has no site: strcmp(NULL). */
        { "{name: dc1-pg, method: postgres, site: dc1, cluster: synapse}",
          "{name: dc1-pg, method: postgres, cluster: synapse}",
          "fencing method: missing required key 'site'" },
        /* A probe's cluster member whose address does not parse, and a
         * cluster that is not a map: strdup(NULL) of its host or dbname. */
        { "dc2: 127.0.2.5, dc3", "dc2: \"127.0.2.5:54x2\", dc3", "port must be a number" },
        { "    synapse:\n      members: {dc1: 127.0.1.5, dc2: 127.0.2.5, dc3: \"127.0.3.5:5432\"}",
          "    synapse: 5", "a PostgreSQL cluster" },
        /* An HTTPS key without its certificate was replaced by the peer
         * key (and leaked). */
        { "operators:", "api: {https: {listen: \"127.0.2.1:7443\", key_file: api.key}}\noperators:",
          "cert_file and key_file go together" },
        /* A name or url that is not a scalar (reported) was then used as a
         * string: check_name(NULL), strncmp(NULL). */
        { "{name: dns, kind: dns", "{name: [dns], kind: dns", "'name' must be a single value" },
        { "url: \"https://matrix.lab.test/\", connect_to: \"127.0.1.10:443\"",
          "url: [a, b], connect_to: \"127.0.1.10:443\"", "'url' must be a single value" },
        { "{name: dc1-ok, method: manual", "{name: {a: b}, method: manual",
          "'name' must be a single value" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = variant(cases[i].from, cases[i].to);
        struct config cfg;
        struct diag d;
        diag_init(&d);
        int r = config_load(&cfg, path, &no_files, &d);
        if (r == 0 || !has_error(&d, 0, 0, cases[i].expect)) {
            fprintf(stderr, "case %zu: expected '%s', got:\n", i, cases[i].expect);
            dump(&d);
        }
        assert_int_equal(r, -1);
        assert_true(has_error(&d, 0, 0, cases[i].expect));
        config_free(&cfg);
        diag_free(&d);
    }
}

static void test_quorum_must_be_majority(void **state)
{
    (void)state;
    const char *path = variant("probe_defaults:", "quorum: {size: 1}\nprobe_defaults:");
    struct config cfg;
    struct diag d;
    diag_init(&d);
    assert_int_equal(config_load(&cfg, path, &no_files, &d), -1);
    assert_true(has_error(&d, 0, 0, "must be a majority"));
    config_free(&cfg);
    diag_free(&d);
}

static void test_secret_files(void **state)
{
    (void)state;
    const char *p = write_tmp("secret", "s3cret\nsecond line\n");
    struct diag d;
    diag_init(&d);
    const char *why = NULL;
    chmod(p, 0644);
    config_check_file(&d, NULL, p, CFG_FILE_SECRET);
    assert_int_equal(diag_count(&d), 1);
    assert_non_null(strstr(d.items[0].msg, "accessible by everyone"));
    assert_null(config_read_secret(p, 64, &why));
    chmod(p, 0600);
    config_check_file(&d, NULL, p, CFG_FILE_SECRET);
    assert_int_equal(diag_count(&d), 1);
    char *s = config_read_secret(p, 64, &why);
    assert_string_equal(s, "s3cret");
    free(s);
    assert_null(config_read_secret(p, 3, &why));
    config_check_file(&d, NULL, "/nonexistent/triad", CFG_FILE_PLAIN);
    assert_int_equal(diag_count(&d), 2);
    /* Not a certificate. */
    config_check_file(&d, NULL, p, CFG_FILE_CERT);
    assert_int_equal(diag_count(&d), 3);
    assert_non_null(strstr(d.items[2].msg, "no PEM certificate"));
    diag_free(&d);
}

/* Appends a self-signed certificate valid from now+from_s to now+to_s. */
static void append_cert(const char *path, long from_s, long to_s)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(k);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), from_s);
    X509_gmtime_adj(X509_getm_notAfter(x), to_s);
    X509_set_pubkey(x, k);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"t", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    PEM_write_X509(f, x);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
}

/* Our own certificate must be valid; a CA bundle (like the system store,
 * which carries a few expired roots) only needs one valid certificate. */
static void test_cert_validity(void **state)
{
    (void)state;
    const char *p = write_tmp("bundle.pem", "");
    append_cert(p, -7200, -3600);
    append_cert(p, -3600, 3600);
    struct diag d;
    diag_init(&d);
    config_check_file(&d, NULL, p, CFG_FILE_CA);
    assert_int_equal(diag_count(&d), 0);
    config_check_file(&d, NULL, p, CFG_FILE_CERT);
    assert_int_equal(diag_count(&d), 1);
    assert_non_null(strstr(d.items[0].msg, "certificate 1 in"));
    assert_non_null(strstr(d.items[0].msg, "has expired"));
    p = write_tmp("future.pem", "");
    append_cert(p, 3600, 7200);
    config_check_file(&d, NULL, p, CFG_FILE_CA);
    assert_int_equal(diag_count(&d), 2);
    assert_true(has_error(&d, 0, 0, "every certificate in"));
    config_check_file(&d, NULL, p, CFG_FILE_CERT);
    assert_true(has_error(&d, 0, 0, "is not valid yet"));
    diag_free(&d);
}

/* SIGHUP: which changes apply live and which need a restart. */
static void load_variant(struct config *cfg, const char *from, const char *to)
{
    struct diag d;
    diag_init(&d);
    /* Both through variant(): relative paths resolve in the same place. */
    const char *path = from ? variant(from, to) : variant("cluster: test", "cluster: test");
    if (config_load(cfg, path, &no_files, &d) != 0)
        dump(&d);
    assert_int_equal(d.n, 0);
    diag_free(&d);
}

static void test_reload_classify(void **state)
{
    (void)state;
    static const struct {
        const char *from, *to;
        int restart;
        const char *restart_keys, *live_keys;
    } cases[] = {
        { NULL, NULL, 0, "", "" },
        { "failover: {target: dc2}", "failover: {target: dc2, mode: automatic}", 0, "",
          "failover" },
        { "  - {name: root, unix_user: root}\n", "", 0, "", "operators" },
        { "probe_defaults: {interval: 500ms,", "probe_defaults: {interval: 1s,", 0, "", "probes" },
        { "  ttl: 5s", "  ttl: 30s", 1, "dns", "" },
        { "address: 127.0.2.1:7400", "address: 127.0.2.1:7401", 1, "sites", "" },
        { "failover: {target: dc2}",
          "failover: {target: dc2, mode: manual}\nquorum: {size: 3, "
          "lease_timeout: 9s}",
          1, "quorum", "failover" },
    };
    struct config cur;
    load_variant(&cur, NULL, NULL);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config fresh;
        load_variant(&fresh, cases[i].from, cases[i].to);
        struct buf restart, live;
        buf_init(&restart, 1024);
        buf_init(&live, 1024);
        int n = reload_classify(&cur, &fresh, &restart, &live);
        print_message("# case %zu: restart [%s] live [%s]\n", i, restart.data ? restart.data : "",
                      live.data ? live.data : "");
        assert_int_equal(n, cases[i].restart);
        assert_string_equal(restart.data ? restart.data : "", cases[i].restart_keys);
        assert_string_equal(live.data ? live.data : "", cases[i].live_keys);
        buf_free(&restart);
        buf_free(&live);
        config_free(&fresh);
    }
    config_free(&cur);
}

/* ---- runbooks ---- */

static json_t *valid_ctx(struct config *cfg)
{
    struct diag d;
    diag_init(&d);
    struct config_load_opts o = { .no_file_checks = true, .skip_runbooks = true };
    assert_int_equal(config_load(cfg, VALID, &o, &d), 0);
    diag_free(&d);
    return config_to_json(cfg);
}

static void test_stock_runbook_valid(void **state)
{
    (void)state;
    struct config cfg;
    json_t *ctx = valid_ctx(&cfg);
    struct diag d;
    diag_init(&d);
    struct runbook *rb = NULL;
    int r = rb_load("runbooks/dc1-loss.yaml", ctx, &rb, &d);
    if (r)
        dump(&d);
    assert_int_equal(r, 0);
    assert_string_equal(rb->name, "dc1-loss");
    assert_true(rb->n_steps >= 6);
    assert_int_equal(rb->steps[0].approve, RB_APPROVE_REQUIRED);
    /* Resolution for a real run: lists stay lists, strings interpolate. */
    json_t *run = rb_context(ctx, "r-1", 7, "dc1", "dc2", "dc1-loss");
    json_t *p = rb_resolve_params(&rb->steps[0], run, &d);
    assert_non_null(p);
    assert_string_equal(json_string_value(json_object_get(p, "site")), "dc1");
    assert_int_equal(json_array_size(json_object_get(p, "methods")), 2);
    json_decref(p);
    json_t *n = rb_resolve_params(&rb->steps[rb->n_steps - 1], run, &d);
    assert_non_null(n);
    assert_string_equal(json_string_value(json_object_get(n, "message")),
                        "Failover r-1 (epoch 7): dc1 -> dc2 complete.");
    json_decref(n);
    json_decref(run);
    rb_free(rb);
    json_decref(ctx);
    config_free(&cfg);
    diag_free(&d);
}

static void test_runbook_errors(void **state)
{
    (void)state;
    struct config cfg;
    json_t *ctx = valid_ctx(&cfg);
    const char *text = "runbook: t\n"
                       "steps:\n"
                       "  - id: a\n"
                       "    action: pg.promot\n"
                       "  - id: a\n"
                       "    action: wait\n"
                       "    params: {duration: 5 parsecs}\n"
                       "  - id: c\n"
                       "    action: dns.update\n"
                       "    params: {site: '${to.nope}'}\n"
                       "  - id: d\n"
                       "    action: fence\n"
                       "    params: {site: dc1, methodz: [x]}\n"
                       "  - id: e\n"
                       "    action: fence\n"
                       "    params: {site: dc1, methods: [dc1-pg, nope]}\n"
                       "    approve: maybe\n";
    const char *path = write_tmp("rb.yaml", text);
    struct diag d;
    diag_init(&d);
    struct runbook *rb = NULL;
    assert_int_equal(rb_load(path, ctx, &rb, &d), -1);
    assert_null(rb);
    assert_true(has_error(&d, 4, 13, "unknown action 'pg.promot' (did you mean 'pg.promote'?)"));
    assert_true(has_error(&d, 5, 9, "duplicate step id 'a'"));
    assert_true(has_error(&d, 13, 25, "has no parameter 'methodz' (did you mean 'methods'?)"));
    assert_true(has_error(&d, 17, 14, "'approve' must be one of none, required, always"));
    diag_free(&d);

    /* Parameter-level checks run once the structure is right. */
    const char *text2 = "runbook: t\n"
                        "steps:\n"
                        "  - id: b\n"
                        "    action: wait\n"
                        "    params: {duration: 5 parsecs}\n"
                        "  - id: c\n"
                        "    action: dns.update\n"
                        "    params: {site: '${to.nope}'}\n"
                        "  - id: e\n"
                        "    action: fence\n"
                        "    params: {site: dc1, methods: [dc1-pg, nope]}\n"
                        "  - id: f\n"
                        "    action: fence\n"
                        "    params: {site: dc1}\n";
    path = write_tmp("rb2.yaml", text2);
    diag_init(&d);
    assert_int_equal(rb_load(path, ctx, &rb, &d), -1);
    assert_true(has_error(&d, 5, 24, "unknown duration unit"));
    assert_true(has_error(&d, 8, 20, "${to.nope} refers to nothing"));
    assert_true(has_error(&d, 11, 34, "'nope' is not a configured fencing method"));
    assert_true(has_error(&d, 12, 5, "needs parameter 'methods'"));
    /* A missing parameter is reported once, not also as an empty list. */
    assert_false(has_error(&d, 0, 0, "lists no fencing method"));
    diag_free(&d);
    json_decref(ctx);
    config_free(&cfg);
}

/* Found by tests/fuzz/fuzz_runbook.c: a step whose id or action is not a
 * scalar (reported) was then read as a string (strlen(NULL)). */
static void test_runbook_fuzz_findings(void **state)
{
    (void)state;
    struct config cfg;
    json_t *ctx = valid_ctx(&cfg);
    const char *path = write_tmp("rbf.yaml", "runbook: t\n"
                                             "steps:\n"
                                             "  - id:\n"
                                             "      on_failure: stop\n"
                                             "    action: wait\n"
                                             "  - id: b\n"
                                             "    action: [wait, notify]\n");
    struct diag d;
    diag_init(&d);
    struct runbook *rb = NULL;
    assert_int_equal(rb_load(path, ctx, &rb, &d), -1);
    assert_null(rb);
    assert_true(has_error(&d, 4, 7, "'id' must be a single value"));
    assert_true(has_error(&d, 7, 13, "'action' must be a single value"));
    diag_free(&d);
    json_decref(ctx);
    config_free(&cfg);
}

static void test_runbook_checked_from_config(void **state)
{
    (void)state;
    /* A runbook named by the config is validated by config_load. */
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    const char *rb = write_tmp("broken.yaml", "runbook: x\nsteps:\n  - id: a\n    action: nope\n");
    char line[700];
    snprintf(line, sizeof line, "dc1-loss: %s", rb);
    const char *path = variant("dc1-loss: ../../../runbooks/dc1-loss.yaml", line);
    struct config cfg;
    struct diag d;
    diag_init(&d);
    assert_int_equal(config_load(&cfg, path, &no_files, &d), -1);
    assert_true(has_error(&d, 4, 13, "unknown action 'nope'"));
    assert_non_null(strstr(d.items[0].file, "broken.yaml"));
    config_free(&cfg);
    diag_free(&d);
}

/* api.https: cert_file and key_file go together; an operator known by
 * cert_cn needs a client CA to be recognised; defaults and --dump. */
static void test_api_https(void **state)
{
    (void)state;
    struct config cfg;
    struct diag d;
    const char *path = variant("operators:", "api: {https: {listen: 127.0.2.1:7443, cert_file: "
                                             "api.pem}}\noperators:");
    diag_init(&d);
    assert_int_equal(config_load(&cfg, path, &no_files, &d), -1);
    assert_true(has_error(&d, 0, 0, "cert_file and key_file go together"));
    assert_true(has_error(&d, 0, 0,
                          "operator 'bob' is known by cert_cn, but api.https has no "
                          "client_ca_file"));
    config_free(&cfg);
    diag_free(&d);

    path = variant("operators:", "api: {https: {listen: \"api.example.com:7443\", "
                                 "client_ca_file: ops-ca.pem}}\noperators:");
    diag_init(&d);
    assert_int_equal(config_load(&cfg, path, &no_files, &d), -1);
    assert_true(has_error(&d, 0, 0, "'listen' needs a numeric IPv4 or IPv6 address"));
    config_free(&cfg);
    diag_free(&d);

    path = variant("operators:",
                   "api: {https: {listen: 127.0.2.1, client_ca_file: ops-ca.pem}}\noperators:");
    diag_init(&d);
    if (config_load(&cfg, path, &no_files, &d) < 0)
        dump(&d);
    assert_int_equal(d.n, 0);
    assert_string_equal(cfg.api.https_host, "127.0.2.1");
    assert_int_equal(cfg.api.https_port, 7443);
    /* Without its own pair, the site's tls certificate serves HTTPS. */
    assert_non_null(strstr(cfg.api.https_cert_file, "/dc2.pem"));
    assert_non_null(strstr(cfg.api.https_key_file, "/dc2.key"));
    assert_non_null(strstr(cfg.api.https_client_ca_file, "/ops-ca.pem"));
    config_free(&cfg);
    diag_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_and_defaults),
        cmocka_unit_test(test_acceptance_misspelled_key_and_unknown_site),
        cmocka_unit_test(test_every_error_reported),
        cmocka_unit_test(test_fuzz_findings),
        cmocka_unit_test(test_quorum_must_be_majority),
        cmocka_unit_test(test_secret_files),
        cmocka_unit_test(test_cert_validity),
        cmocka_unit_test(test_reload_classify),
        cmocka_unit_test(test_stock_runbook_valid),
        cmocka_unit_test(test_runbook_errors),
        cmocka_unit_test(test_runbook_fuzz_findings),
        cmocka_unit_test(test_runbook_checked_from_config),
        cmocka_unit_test(test_api_https),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
