/* Unit tests: capped buffer, units, suggestions, YAML tree positions, the
 * memory a large YAML document leaves behind. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "lib/buf.h"
#include "lib/suggest.h"
#include "lib/units.h"
#include "lib/yaml_doc.h"

static void test_buf_cap(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 10);
    assert_int_equal(buf_append_str(&b, "hello"), 0);
    assert_int_equal(buf_append_str(&b, "world"), 0);
    assert_int_equal(b.len, 10);
    assert_int_equal(buf_append_str(&b, "!"), -EMSGSIZE);
    assert_true(b.truncated);
    assert_string_equal(b.data, "helloworld");
    buf_consume(&b, 5);
    assert_string_equal(b.data, "world");
    assert_int_equal(buf_printf(&b, "%d", 12345), 0);
    assert_string_equal(b.data, "world12345");
    assert_int_equal(buf_printf(&b, "%d", 1), -EMSGSIZE);
    buf_free(&b);
}

static void test_units(void **state)
{
    (void)state;
    int64_t ms;
    uint64_t sz;
    double r;
    const char *why;
    assert_int_equal(units_duration_ms("500ms", &ms, &why), 0);
    assert_int_equal(ms, 500);
    assert_int_equal(units_duration_ms("1.5s", &ms, &why), 0);
    assert_int_equal(ms, 1500);
    assert_int_equal(units_duration_ms("2m", &ms, &why), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(units_duration_ms("5", &ms, &why), -EINVAL);
    ms = -1;
    assert_int_equal(units_duration_ms("0", &ms, &why), 0); /* 0 needs no unit */
    assert_int_equal(ms, 0);
    assert_int_equal(units_duration_ms("5 parsecs", &ms, &why), -EINVAL);
    assert_int_equal(units_duration_ms("inf", &ms, &why), -EINVAL);
    assert_int_equal(units_size("16MB", &sz, &why), 0);
    assert_int_equal(sz, 16u * 1024 * 1024);
    assert_int_equal(units_size("0x10MB", &sz, &why), -EINVAL);
    assert_int_equal(units_ratio("5%", &r, &why), 0);
    assert_true(r > 0.0499 && r < 0.0501);
    assert_int_equal(units_ratio("150%", &r, &why), -ERANGE);
    char out[32];
    units_format_duration(1500, out, sizeof out);
    assert_string_equal(out, "1.5s");
    units_format_duration(120000, out, sizeof out);
    assert_string_equal(out, "2m");
}

static void test_suggest(void **state)
{
    (void)state;
    const char *const words[] = { "heartbeat_interval", "lease_timeout", "peer_timeout" };
    assert_string_equal(suggest_closest("lease_timout", words, 3), "lease_timeout");
    assert_string_equal(suggest_closest("heartbeat_intreval", words, 3), "heartbeat_interval");
    assert_null(suggest_closest("banana", words, 3));
}

static void test_yaml_positions(void **state)
{
    (void)state;
    const char *y = "a: 1\nb:\n  c: [x, y]\n  d: 'q'\n";
    struct ydoc doc;
    struct diag d;
    diag_init(&d);
    assert_int_equal(ydoc_parse(&doc, "t.yaml", y, strlen(y), &d), 0);
    struct ynode *b = ynode_get(doc.root, "b");
    assert_non_null(b);
    struct ynode *c = ynode_get(b, "c");
    assert_int_equal(c->type, YNODE_SEQ);
    assert_int_equal(c->items[1]->line, 3);
    assert_int_equal(c->items[1]->col, 10);
    assert_true(ynode_get(b, "d")->quoted);
    ydoc_free(&doc);
    diag_free(&d);
}

static void test_yaml_rejects(void **state)
{
    (void)state;
    const char *cases[] = {
        "a: &x [1]\nb: *x\n", /* anchors/aliases */
        "a: 1\na: 2\n",       /* duplicate key */
        "a: [1, 2\n",         /* syntax */
        "---\na: 1\n---\nb: 2\n",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ydoc doc;
        struct diag d;
        diag_init(&d);
        assert_int_equal(ydoc_parse(&doc, "t.yaml", cases[i], strlen(cases[i]), &d), -1);
        assert_true(diag_count(&d) >= 1);
        assert_true(d.items[0].line >= 1);
        ydoc_free(&doc);
        diag_free(&d);
    }
    /* Deep nesting is refused, not recursed into without bound. */
    char deep[400];
    size_t o = 0;
    for (int i = 0; i < 100; i++)
        deep[o++] = '[';
    for (int i = 0; i < 100; i++)
        deep[o++] = ']';
    deep[o] = '\0';
    struct ydoc doc;
    struct diag d;
    diag_init(&d);
    assert_int_equal(ydoc_parse(&doc, "t.yaml", deep, o, &d), -1);
    assert_non_null(strstr(d.items[0].msg, "nesting"));
    ydoc_free(&doc);
    diag_free(&d);
}

/* Resident bytes of this process (/proc/self/statm). */
static long resident_bytes(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%ld %ld", &size, &resident), 2);
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

/* A large document (a configuration with a thousand probes) freed below
 * allocations that live on gives its pages back: the daemon's RSS does not
 * keep the parse's peak (tests/bench/probes.sh). glibc only: sanitizers and
 * valgrind bring their own allocator. */
static void test_yaml_large_freed(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    skip();
#endif
    if (getenv("TRIAD_UNDER_VALGRIND"))
        skip();
    size_t cap = 2500 * 100, o = 0;
    char *y = malloc(cap);
    assert_non_null(y);
    for (int i = 0; i < 2500; i++)
        o += (size_t)snprintf(
            y + o, cap - o, "- {name: p%04d, kind: http, site: dc1, url: \"http://x/%d\"}\n", i, i);
    long before = resident_bytes();
    struct ydoc doc;
    struct diag d;
    diag_init(&d);
    assert_int_equal(ydoc_parse(&doc, "t.yaml", y, o, &d), 0);
    assert_true(doc.nodes > 20000);
    long parsed = resident_bytes();
    void *pin = malloc(64); /* lives on above the document, as the configuration does */
    assert_non_null(pin);
    ydoc_free(&doc);
    long after = resident_bytes();
    fprintf(stderr, "# resident: %ld KB before, %ld KB parsed, %ld KB after the free\n",
            before / 1024, parsed / 1024, after / 1024);
    assert_true(parsed - before > 2 * 1024 * 1024);
    assert_true(after - before < 1024 * 1024);
    free(pin);
    free(y);
    diag_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_cap),      cmocka_unit_test(test_units),
        cmocka_unit_test(test_suggest),      cmocka_unit_test(test_yaml_positions),
        cmocka_unit_test(test_yaml_rejects), cmocka_unit_test(test_yaml_large_freed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
