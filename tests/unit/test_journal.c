/* Unit tests: the run journal on disk (orchestrator/journal.c) and the
 * reports rendered from it (orchestrator/report.c). Several cases come
 * from tests/fuzz/fuzz_journal.c. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
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
#include "orchestrator/journal.h"
#include "orchestrator/report.h"

struct fixture {
    char dir[64];
    struct journal j;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/triad-journaltest-XXXXXX");
    if (!mkdtemp(f->dir) || journal_init(&f->j, f->dir) < 0)
        return -1;
    *state = f;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Writes raw bytes as run `run`'s journal. */
static void write_raw(struct fixture *f, const char *run, const void *data, size_t len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/runs/%s.jsonl", f->dir, run);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void test_append_and_read(void **state)
{
    struct fixture *f = *state;
    /* No run yet (found by fuzz_control: qsort(NULL, 0), undefined
     * behaviour reported by UBSan in make asan). */
    json_t *none = journal_runs(&f->j, 5);
    assert_int_equal(json_array_size(none), 0);
    json_decref(none);
    assert_null(journal_read(&f->j, "r1"));
    assert_int_equal(journal_last_seq(&f->j, "r1"), 0);
    for (int i = 1; i <= 3; i++) {
        json_t *rec = json_pack("{s:s,s:i}", "t", "step", "n", i);
        assert_int_equal(journal_append(&f->j, "r1", rec), i);
        json_decref(rec);
    }
    /* A record's own seq must be the next one. */
    json_t *dup = json_pack("{s:s,s:i}", "t", "step", "seq", 2);
    assert_int_equal(journal_append(&f->j, "r1", dup), -EEXIST);
    json_decref(dup);
    json_t *gap = json_pack("{s:s,s:i}", "t", "step", "seq", 9);
    assert_int_equal(journal_append(&f->j, "r1", gap), -ERANGE);
    json_decref(gap);
    json_t *recs = journal_read(&f->j, "r1");
    assert_int_equal(json_array_size(recs), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(recs, 2), "n")), 3);
    json_decref(recs);
    assert_int_equal(journal_last_seq(&f->j, "r1"), 3);
    json_t *ids = journal_runs(&f->j, 5);
    assert_int_equal(json_array_size(ids), 1);
    assert_string_equal(json_string_value(json_array_get(ids, 0)), "r1");
    json_decref(ids);
    /* Ids that could leave the directory are refused. */
    json_t *rec = json_pack("{s:s}", "t", "x");
    assert_int_equal(journal_append(&f->j, "../x", rec), -EINVAL);
    assert_int_equal(journal_append(&f->j, "..", rec), -EINVAL);
    assert_int_equal(journal_append(&f->j, ".hidden", rec), -EINVAL);
    /* A site name may contain '.', and run ids begin with one. */
    assert_int_equal(journal_append(&f->j, "dc2.fra-e1-0a0a", rec), 1);
    json_decref(rec);
}

/* Found by fuzz_journal: after a crash mid-write the file ends in a torn
 * line; the next record was glued to it and lost with it (read back as one
 * damaged line), and its seq given out again by the append after. */
static void test_append_after_torn_line(void **state)
{
    struct fixture *f = *state;
    const char *text = "{\"t\":\"run-start\",\"seq\":1}\n{\"t\":\"step\",\"st";
    write_raw(f, "r2", text, strlen(text));
    json_t *recs = journal_read(&f->j, "r2");
    assert_int_equal(json_array_size(recs), 1);
    json_decref(recs);
    json_t *rec = json_pack("{s:s}", "t", "run-end");
    assert_int_equal(journal_append(&f->j, "r2", rec), 2);
    json_decref(rec);
    recs = journal_read(&f->j, "r2");
    assert_int_equal(json_array_size(recs), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(recs, 1), "t")),
                        "run-end");
    json_decref(recs);
    assert_int_equal(journal_last_seq(&f->j, "r2"), 2);
}

/* Seen next to the torn line: reading stopped at a NUL byte (zeros a file
 * system can leave after a crash), so every record after them was
 * invisible, and the append after gave out their seqs again. */
static void test_read_past_zeros(void **state)
{
    struct fixture *f = *state;
    const char text[] = "{\"t\":\"run-start\",\"seq\":1}\n\0\0\0\0\n{\"t\":\"step\",\"seq\":2}\n";
    write_raw(f, "r3", text, sizeof text - 1);
    json_t *recs = journal_read(&f->j, "r3");
    assert_int_equal(json_array_size(recs), 2);
    json_decref(recs);
    assert_int_equal(journal_last_seq(&f->j, "r3"), 2);
}

static json_t *records_of(const char *text)
{
    json_t *recs = json_array();
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        json_t *rec = json_loadb(p, n, 0, NULL);
        assert_non_null(rec);
        json_array_append_new(recs, rec);
        p += n + (nl ? 1 : 0);
    }
    return recs;
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

static char *html_of(const char *text)
{
    json_t *recs = records_of(text);
    json_t *rep = report_build(recs, NULL);
    struct buf b;
    buf_init(&b, 32u << 20);
    report_html(rep, &b);
    json_decref(rep);
    json_decref(recs);
    return buf_steal(&b);
}

/* Found by fuzz_journal: the HTML report printed the runbook, sites,
 * states, step ids, decisions and probe names from the journal as markup. */
static void test_html_escapes_journal_values(void **state)
{
    (void)state;
    char *h = html_of("{\"t\":\"run-start\",\"runbook\":\"<script>a()</script>\",\"kind\":\"<i>\","
                      "\"from\":\"<u>\",\"to\":\"dc2\",\"leader\":\"<s>\",\"ts_ms\":1000}\n"
                      "{\"t\":\"step\",\"step\":\"<x1>\",\"action\":\"<x2>\",\"to\":\"\\\"><x3>\","
                      "\"ts_ms\":2000}\n"
                      "{\"t\":\"approval\",\"step\":\"<x4>\",\"decision\":\"<x5>\",\"who\":\"a\","
                      "\"ts_ms\":3000}\n"
                      "{\"t\":\"probe\",\"site\":\"<x6>\",\"probe\":\"<x7>\",\"state\":\"<x8>\","
                      "\"ts_ms\":4000}\n");
    assert_null(strstr(h, "<script"));
    static const char *const tags[] = { "<i>",  "<u>",  "<s>",  "<x1>", "<x2>", "\"><x3>",
                                        "<x4>", "<x5>", "<x6>", "<x7>", "<x8>" };
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++) {
        if (strstr(h, tags[i]))
            fail_msg("%s is in the HTML report as markup", tags[i]);
    }
    assert_non_null(strstr(h, "&lt;script&gt;a()&lt;/script&gt;"));
    free(h);
}

/* Found by fuzz_journal: the timeline's time axis had a tick per second
 * (or 10 s) of the run's span, whatever the span: a journal with times far
 * apart took minutes and hundreds of megabytes (and the span, cast to int,
 * overflowed). */
static void test_timeline_ticks_bounded(void **state)
{
    (void)state;
    char *h = html_of("{\"t\":\"run-start\",\"ts_ms\":1000}\n"
                      "{\"t\":\"step\",\"step\":\"a\",\"to\":\"running\",\"ts_ms\":1000}\n"
                      "{\"t\":\"step\",\"step\":\"a\",\"to\":\"done\",\"ts_ms\":100001000}\n");
    assert_true(count(h, "<line ") <= 70);
    free(h);
    /* Times at the ends of int64: no overflow (UBSan in make asan). */
    h = html_of("{\"t\":\"run-start\",\"ts_ms\":9223372036854775807}\n"
                "{\"t\":\"step\",\"step\":\"a\",\"to\":\"done\",\"waited_ms\":"
                "9223372036854775807,\"ts_ms\":-9223372036854775807}\n"
                "{\"t\":\"step\",\"step\":\"b\",\"to\":\"done\",\"waited_ms\":"
                "9223372036854775807,\"ts_ms\":1}\n"
                "{\"t\":\"run-end\",\"ts_ms\":9223372036854775807}\n");
    assert_non_null(strstr(h, "</html>"));
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_and_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_after_torn_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_past_zeros, setup, teardown),
        cmocka_unit_test(test_html_escapes_journal_values),
        cmocka_unit_test(test_timeline_ticks_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
