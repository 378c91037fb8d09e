/* Fuzz target: a run's journal as read back from disk (orchestrator/
 * journal.c: state_dir/runs/RUN.jsonl, one JSON record per line, written by
 * this daemon or copied from the leader's), its summary, and the reports
 * rendered from it (orchestrator/report.c: Markdown, HTML, the summary).
 *
 * Input: the file's bytes; when the first line is "drill:" followed by a
 * JSON object, that object is the drill's measurements (state_dir/drills/
 * RUN.json) and the rest is the journal.
 *
 * Invariants: every record read is an object; a record appended after
 * whatever the file holds is read back with the seq journal_append gave it;
 * and the HTML report is markup of its own making only: every tag and
 * attribute is one the renderer writes, and no text from the journal opens
 * a tag, closes one or leaves an attribute value. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "lib/buf.h"
#include "orchestrator/journal.h"
#include "orchestrator/report.h"

#define RUN "fuzz-run"

static struct journal jr;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init();
    if (journal_init(&jr, fuzz_dir()) < 0)
        abort();
    return 0;
}

static bool one_of(const char *s, size_t n, const char *const *set)
{
    for (size_t i = 0; set[i]; i++) {
        if (strlen(set[i]) == n && strncmp(s, set[i], n) == 0)
            return true;
    }
    return false;
}

static size_t name_len(const char *p)
{
    size_t n = 0;
    while ((p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z') ||
           (p[n] >= '0' && p[n] <= '9') || p[n] == '-' || p[n] == '!')
        n++;
    return n;
}

/* The HTML report contains only the renderer's own tags and attributes. */
static void check_html(const char *h)
{
    static const char *const tags[] = { "!DOCTYPE", "html", "head", "meta",   "title",
                                        "style",    "body", "h1",   "h2",     "p",
                                        "b",        "pre",  "svg",  "defs",   "pattern",
                                        "rect",     "line", "text", "circle", "table",
                                        "tr",       "th",   "td",   "small",  NULL };
    static const char *const attrs[] = { "charset",
                                         "class",
                                         "xmlns",
                                         "width",
                                         "height",
                                         "font-family",
                                         "font-size",
                                         "font-weight",
                                         "id",
                                         "patternUnits",
                                         "patternTransform",
                                         "fill",
                                         "x1",
                                         "y1",
                                         "x2",
                                         "y2",
                                         "stroke",
                                         "stroke-width",
                                         "x",
                                         "y",
                                         "cx",
                                         "cy",
                                         "r",
                                         "opacity",
                                         NULL };
    const char *p = h;
    while (*p) {
        if (*p == '>')
            FUZZ_CHECK(0, "a '>' outside any tag at offset %zu", (size_t)(p - h));
        if (*p != '<') {
            p++;
            continue;
        }
        p++;
        if (*p == '/')
            p++;
        size_t n = name_len(p);
        FUZZ_CHECK(one_of(p, n, tags), "tag '%.*s' at offset %zu", (int)(n ? n : 10), p,
                   (size_t)(p - h));
        p += n;
        /* attributes: name="value" (value without '"', '<' or '>'), or the
         * DOCTYPE's bare word */
        for (;;) {
            while (*p == ' ' || *p == '\n')
                p++;
            if (*p == '>' || (*p == '/' && p[1] == '>')) {
                p += *p == '>' ? 1 : 2;
                break;
            }
            size_t an = name_len(p);
            FUZZ_CHECK(an > 0, "junk inside a tag at offset %zu", (size_t)(p - h));
            if (p[an] != '=') {
                FUZZ_CHECK(an == 4 && strncmp(p, "html", 4) == 0, "bare attribute '%.*s'", (int)an,
                           p);
                p += an;
                continue;
            }
            FUZZ_CHECK(one_of(p, an, attrs), "attribute '%.*s' at offset %zu", (int)an, p,
                       (size_t)(p - h));
            p += an + 1;
            FUZZ_CHECK(*p == '"', "unquoted attribute value at offset %zu", (size_t)(p - h));
            p++;
            while (*p && *p != '"') {
                FUZZ_CHECK(*p != '<' && *p != '>', "markup in an attribute value at offset %zu",
                           (size_t)(p - h));
                p++;
            }
            FUZZ_CHECK(*p == '"', "attribute value not closed");
            p++;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    json_t *drill = NULL;
    if (size > 6 && memcmp(text, "drill:", 6) == 0) {
        const char *nl = memchr(text, '\n', size);
        size_t n = nl ? (size_t)(nl - text) : size;
        drill = json_loadb(text + 6, n - 6, 0, NULL);
        if (!json_is_object(drill)) {
            json_decref(drill);
            drill = NULL;
        }
        text += nl ? n + 1 : n;
        size -= nl ? n + 1 : n;
    }
    char path[600];
    fuzz_write_file("runs/" RUN ".jsonl", text, size, path, sizeof path);

    json_t *recs = journal_read(&jr, RUN);
    FUZZ_CHECK(json_is_array(recs), "journal_read gave no array for an existing file");
    size_t i;
    json_t *rec;
    json_array_foreach(recs, i, rec)
    {
        FUZZ_CHECK(json_is_object(rec), "record %zu is not an object", i);
    }
    json_t *rep = report_build(recs, drill);
    FUZZ_CHECK(rep != NULL, "report_build failed");
    struct buf b;
    buf_init(&b, 32u << 20);
    report_markdown(rep, &b);
    buf_reset(&b);
    report_summary(rep, &b);
    buf_reset(&b);
    report_html(rep, &b);
    FUZZ_CHECK(!b.truncated, "the HTML report is over 32 MB");
    check_html(b.data ? b.data : "");
    buf_free(&b);
    json_decref(rep);
    json_decref(drill);

    /* One more record, after whatever the file holds. */
    json_t *more = json_pack("{s:s,s:s,s:s}", "t", "probe", "site", "dc1", "probe", "fuzz");
    int64_t seq = journal_append(&jr, RUN, more);
    json_decref(more);
    if (seq > 0) {
        json_t *again = journal_read(&jr, RUN);
        json_t *last = json_array_get(again, json_array_size(again) - 1);
        FUZZ_CHECK(json_integer_value(json_object_get(last, "seq")) == seq &&
                       json_is_string(json_object_get(last, "probe")),
                   "record %lld was appended but is not the last one read back", (long long)seq);
        json_decref(again);
    }
    json_decref(recs);
    return 0;
}
