/* Reports from a run's journal: the model, Markdown, HTML with an SVG
 * timeline, and the short summary. */
#include "orchestrator/report.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "orchestrator/journal.h"

static int64_t ival(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* Seconds from b to a. In doubles: the times come from a journal, which
 * may hold any integer, and int64 differences could overflow. */
static double secs(int64_t a, int64_t b)
{
    return ((double)a - (double)b) / 1000.0;
}

static const char *sval(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static void add_event(json_t *tl, int64_t at, const char *lane, const char *label, int64_t end,
                      const char *kind)
{
    if (at <= 0)
        return;
    json_t *e = json_pack("{s:I,s:s,s:s,s:s}", "at_ms", (json_int_t)at, "lane", lane, "label",
                          label, "kind", kind);
    if (end > 0)
        json_object_set_new(e, "end_ms", json_integer(end));
    json_array_append_new(tl, e);
}

struct ev_ref {
    int64_t at;
    size_t idx;
    json_t *e;
};

static int by_time(const void *a, const void *b)
{
    const struct ev_ref *x = a, *y = b;
    if (x->at != y->at)
        return x->at < y->at ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* The timeline in time order (ties keep the order they were added in). */
static json_t *sorted_timeline(json_t *tl)
{
    size_t n = json_array_size(tl);
    struct ev_ref *v = calloc(n ? n : 1, sizeof *v);
    json_t *out = json_array();
    if (!v)
        return json_incref(tl);
    for (size_t i = 0; i < n; i++) {
        v[i].e = json_array_get(tl, i);
        v[i].at = ival(v[i].e, "at_ms");
        v[i].idx = i;
    }
    qsort(v, n, sizeof *v, by_time);
    for (size_t i = 0; i < n; i++)
        json_array_append(out, v[i].e);
    free(v);
    return out;
}

json_t *report_build(json_t *records, json_t *drill)
{
    json_t *run = journal_summary(records);
    json_t *tl = json_array();
    json_t *det = json_object_get(run, "detection");
    int64_t fault = drill ? ival(drill, "fault_ms") : 0;
    int64_t t0 = fault                   ? fault
                 : ival(det, "sdown_ms") ? ival(det, "sdown_ms")
                                         : ival(run, "started_ms");
    const char *from = sval(run, "from"), *leader = sval(run, "leader");
    add_event(tl, fault, "drill", drill ? sval(drill, "scenario") : "", 0, "fault");
    add_event(tl, ival(det, "sdown_ms"), sval(det, "site"), "+sdown", 0, "detect");
    add_event(tl, ival(det, "odown_ms"), sval(det, "site"), "+odown", 0, "detect");
    add_event(tl, ival(det, "decided_ms"), leader, "decision (leader)", 0, "decide");
    int64_t promote_end = 0, dns_end = 0, rpo = -1, run_end = ival(run, "ended_ms");
    double human = 0; /* ms; a sum of journal values, so not an int64 */
    const char *rpo_basis = "";
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(run, "steps"), i, s)
    {
        char lane[96];
        snprintf(lane, sizeof lane, "step %s", sval(s, "id"));
        int64_t gate = ival(s, "gate_since_ms"), answered = ival(s, "gate_answered_ms");
        if (gate)
            add_event(tl, gate, lane, "waiting for approval", answered ? answered : run_end,
                      "wait");
        int64_t st = ival(s, "started_ms"), en = ival(s, "ended_ms");
        char label[64];
        snprintf(label, sizeof label, "%s -> %s", st ? "started" : "not run", sval(s, "state"));
        add_event(tl, st ? st : en, lane, label, en, "step");
        human += (double)ival(s, "waited_ms");
        const char *action = sval(s, "action");
        if (!strcmp(action, "pg.promote") && en) {
            promote_end = en;
            json_t *r = json_object_get(s, "result");
            if (json_is_integer(json_object_get(r, "rpo_bytes")))
                rpo = ival(r, "rpo_bytes");
            rpo_basis = sval(r, "rpo_basis");
        }
        if (!strcmp(action, "dns.update") && en)
            dns_end = en;
    }
    json_array_foreach(json_object_get(run, "takeovers"), i, s)
    {
        char label[96];
        snprintf(label, sizeof label, "takeover (epoch %lld)", (long long)ival(s, "epoch"));
        add_event(tl, ival(s, "ts_ms"), sval(s, "leader"), label, 0, "decide");
    }
    json_array_foreach(json_object_get(run, "probes"), i, s)
    {
        char label[128];
        snprintf(label, sizeof label, "%s %s", sval(s, "probe"), sval(s, "state"));
        add_event(tl, ival(s, "ts_ms"), sval(s, "site"), label, 0,
                  !strcmp(sval(s, "state"), "up") ? "probe-up" : "probe-down");
    }
    int64_t service_ok = drill ? ival(drill, "service_ok_ms") : 0;
    add_event(tl, service_ok, "drill", "writes succeed through the public name", 0, "verified");
    json_t *fig = json_object();
#define SECS(name, v) \
    json_object_set_new(fig, name, (v) > 0 && t0 > 0 ? json_real(secs((v), t0)) : json_null())
    SECS("detection_s", ival(det, "odown_ms"));
    SECS("decision_s", ival(det, "decided_ms"));
    SECS("promoted_s", promote_end);
    SECS("dns_verified_s", dns_end);
    SECS("run_finished_s", run_end);
    SECS("rto_s", service_ok);
#undef SECS
    json_object_set_new(fig, "human_wait_s", json_real(human / 1000.0));
    if (service_ok > t0 && t0 > 0)
        json_object_set_new(fig, "rto_without_human_wait_s",
                            json_real(secs(service_ok, t0) - human / 1000.0));
    json_object_set_new(fig, "rpo_bytes", rpo >= 0 ? json_integer(rpo) : json_null());
    if (*rpo_basis)
        json_object_set_new(fig, "rpo_basis", json_string(rpo_basis));
    json_t *w = drill ? json_object_get(drill, "writer") : NULL;
    json_object_set_new(fig, "acknowledged_writes_lost",
                        json_is_integer(json_object_get(w, "acked_lost"))
                            ? json_integer(ival(w, "acked_lost"))
                            : json_null());
    json_object_set_new(fig, "split_brain_writes",
                        json_is_integer(json_object_get(w, "split_brain"))
                            ? json_integer(ival(w, "split_brain"))
                            : json_null());
    json_t *sorted = sorted_timeline(tl);
    json_decref(tl);
    json_t *rep = json_pack("{s:o,s:o,s:I,s:s}", "run", run, "timeline", sorted, "t0_ms",
                            (json_int_t)t0, "lost_site", from);
    json_object_set_new(rep, "figures", fig);
    if (drill)
        json_object_set(rep, "drill", drill);
    return rep;
}

static void fmt_time(int64_t ms, char *out, size_t len)
{
    if (ms <= 0) {
        snprintf(out, len, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(out, len, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%03lldZ", (long long)(ms % 1000));
}

static void fig_line(struct buf *b, json_t *fig, const char *key, const char *label)
{
    json_t *v = json_object_get(fig, key);
    if (json_is_number(v))
        buf_printf(b, "| %s | %.1f s |\n", label, json_number_value(v));
    else
        buf_printf(b, "| %s | not measured |\n", label);
}

void report_summary(json_t *rep, struct buf *b)
{
    json_t *fig = json_object_get(rep, "figures");
    json_t *run = json_object_get(rep, "run");
    json_t *rto = json_object_get(fig, "rto_s");
    buf_printf(b, "run %s (%s %s -> %s): %s\n", sval(run, "id"), sval(run, "runbook"),
               sval(run, "from"), sval(run, "to"), sval(run, "state"));
    if (json_is_number(rto))
        buf_printf(b, "RTO: %.1f s (of which waiting for humans: %.1f s)\n", json_number_value(rto),
                   json_number_value(json_object_get(fig, "human_wait_s")));
    else
        buf_printf(b, "RTO: not measured (no drill data)\n");
    json_t *rpo = json_object_get(fig, "rpo_bytes");
    if (json_is_integer(rpo))
        buf_printf(b, "RPO: %lld bytes%s%s%s\n", (long long)json_integer_value(rpo),
                   json_is_string(json_object_get(fig, "rpo_basis")) ? " (against " : "",
                   sval(fig, "rpo_basis"),
                   json_is_string(json_object_get(fig, "rpo_basis")) ? ")" : "");
    else
        buf_printf(b, "RPO: not measured\n");
    json_t *lost = json_object_get(fig, "acknowledged_writes_lost");
    if (json_is_integer(lost))
        buf_printf(b, "acknowledged writes lost: %lld\n", (long long)json_integer_value(lost));
    else
        buf_printf(b, "acknowledged writes lost: not measured\n");
    json_t *sb = json_object_get(fig, "split_brain_writes");
    if (json_is_integer(sb))
        buf_printf(b, "writes accepted by two primaries: %lld\n",
                   (long long)json_integer_value(sb));
}

void report_markdown(json_t *rep, struct buf *b)
{
    json_t *run = json_object_get(rep, "run");
    json_t *fig = json_object_get(rep, "figures");
    char t1[40], t2[40];
    fmt_time(ival(run, "started_ms"), t1, sizeof t1);
    fmt_time(ival(run, "ended_ms"), t2, sizeof t2);
    buf_printf(b, "# triad run %s\n\n", sval(run, "id"));
    buf_printf(b, "- runbook: **%s** (%s), %s -> %s, epoch %lld, leader %s\n", sval(run, "runbook"),
               sval(run, "kind"), sval(run, "from"), sval(run, "to"), (long long)ival(run, "epoch"),
               sval(run, "leader"));
    buf_printf(b, "- state: **%s**%s%s\n- started %s, ended %s\n", sval(run, "state"),
               json_object_get(run, "end_reason") ? ": " : "", sval(run, "end_reason"), t1, t2);
    json_t *drill = json_object_get(rep, "drill");
    if (drill)
        buf_printf(b, "- drill: %s\n", sval(drill, "scenario"));
    buf_printf(b, "\n## Figures\n\n| | |\n|---|---|\n");
    fig_line(b, fig, "rto_s", "RTO (fault to writes succeeding through the public name)");
    fig_line(b, fig, "human_wait_s", "of which waiting for approvals");
    fig_line(b, fig, "rto_without_human_wait_s", "RTO without the human wait");
    fig_line(b, fig, "detection_s", "detection (to ODOWN)");
    fig_line(b, fig, "decision_s", "decision recorded on a majority");
    fig_line(b, fig, "promoted_s", "new primary promoted");
    fig_line(b, fig, "dns_verified_s", "DNS verified on every server");
    json_t *rpo = json_object_get(fig, "rpo_bytes");
    if (json_is_integer(rpo))
        buf_printf(b, "| RPO | %lld bytes (against %s) |\n", (long long)json_integer_value(rpo),
                   *sval(fig, "rpo_basis") ? sval(fig, "rpo_basis") : "?");
    else
        buf_printf(b, "| RPO | not measured |\n");
    json_t *lost = json_object_get(fig, "acknowledged_writes_lost");
    if (json_is_integer(lost))
        buf_printf(b, "| acknowledged writes lost | %lld |\n", (long long)json_integer_value(lost));
    buf_printf(
        b, "\n## Steps\n\n| step | action | state | waited | detail |\n|---|---|---|---|---|\n");
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(run, "steps"), i, s)
    {
        char detail[400];
        snprintf(detail, sizeof detail, "%s", sval(s, "detail"));
        for (char *p = detail; *p; p++) {
            if (*p == '|' || *p == '\n')
                *p = ' ';
        }
        buf_printf(b, "| %s | %s | %s | %.1f s | %s |\n", sval(s, "id"), sval(s, "action"),
                   sval(s, "state"), (double)ival(s, "waited_ms") / 1000.0, detail);
    }
    buf_printf(b, "\n## Approvals\n\n");
    if (!json_array_size(json_object_get(run, "approvals")))
        buf_printf(b, "none\n");
    json_array_foreach(json_object_get(run, "approvals"), i, s)
    {
        fmt_time(ival(s, "ts_ms"), t1, sizeof t1);
        buf_printf(b, "- %s: **%s** %s step `%s`%s%s (shown: %s)\n", t1, sval(s, "who"),
                   sval(s, "decision"), sval(s, "step"), *sval(s, "reason") ? ", reason: " : "",
                   sval(s, "reason"), sval(s, "shown"));
    }
    buf_printf(b, "\n## Timeline\n\n| t (s) | where | event |\n|---|---|---|\n");
    int64_t t0 = ival(rep, "t0_ms");
    json_array_foreach(json_object_get(rep, "timeline"), i, s)
    {
        int64_t at = ival(s, "at_ms"), end = ival(s, "end_ms");
        buf_printf(b, "| %+.1f | %s | %s", secs(at, t0), sval(s, "lane"), sval(s, "label"));
        if (end >= at)
            buf_printf(b, " (%.1f s, until %+.1f)", secs(end, at), secs(end, t0));
        buf_append_str(b, " |\n");
    }
}

/* ---- HTML ---- */

static void esc(struct buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<':
            buf_append_str(b, "&lt;");
            break;
        case '>':
            buf_append_str(b, "&gt;");
            break;
        case '&':
            buf_append_str(b, "&amp;");
            break;
        case '"':
            buf_append_str(b, "&quot;");
            break;
        default:
            buf_append(b, s, 1);
        }
    }
}

/* Markup and values alternating, NULL-terminated: markup, value, markup,
 * value, ...; the values are escaped. */
static void esc_all(struct buf *b, const char *markup, ...)
{
    va_list ap;
    va_start(ap, markup);
    for (const char *m = markup; m; m = va_arg(ap, const char *)) {
        buf_append_str(b, m);
        const char *v = va_arg(ap, const char *);
        if (!v)
            break;
        esc(b, v);
    }
    va_end(ap);
}

static const char *color(const char *kind, const char *label)
{
    if (!strcmp(kind, "wait"))
        return "url(#hatch)";
    if (!strcmp(kind, "step"))
        return !strcmp(label, "done")      ? "#2e7d32"
               : !strcmp(label, "skipped") ? "#90a4ae"
               : !strcmp(label, "failed")  ? "#c62828"
                                           : "#1565c0";
    if (!strcmp(kind, "fault") || !strcmp(kind, "probe-down"))
        return "#c62828";
    if (!strcmp(kind, "probe-up") || !strcmp(kind, "verified"))
        return "#2e7d32";
    return "#6a1b9a";
}

static void svg_timeline(json_t *rep, struct buf *b)
{
    json_t *tl = json_object_get(rep, "timeline");
    int64_t t0 = ival(rep, "t0_ms");
    double tmax = (double)t0 + 1000; /* ms */
    const char *lanes[128];
    size_t nl = 0, i;
    json_t *e;
    json_array_foreach(tl, i, e)
    {
        int64_t end = ival(e, "end_ms") ? ival(e, "end_ms") : ival(e, "at_ms");
        if ((double)end > tmax)
            tmax = (double)end;
        const char *lane = sval(e, "lane");
        bool seen = false;
        for (size_t k = 0; k < nl && !seen; k++)
            seen = !strcmp(lanes[k], lane);
        if (!seen && nl < 128)
            lanes[nl++] = lane;
    }
    const int left = 170, width = 760, row = 26, top = 30;
    double span = (tmax - (double)t0) / 1000.0;
    if (span < 1)
        span = 1;
    int height = top + (int)nl * row + 20;
    buf_printf(b,
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"11\">\n",
               left + width + 20, height);
    buf_append_str(b, "<defs><pattern id=\"hatch\" width=\"6\" height=\"6\" "
                      "patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">"
                      "<rect width=\"6\" height=\"6\" fill=\"#ffe0b2\"/>"
                      "<line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#ef6c00\" "
                      "stroke-width=\"2\"/></pattern></defs>\n");
    /* the time axis, a tick per second or per 10 s */
    /* At most about 60 ticks, however long the span: the journal's times
     * may be anything (one run-start at 1 ms and a run-end at 10^14 ms
     * made billions of ticks). */
    double step = span > 600 ? ceil(span / 60) : span > 60 ? 10 : span > 20 ? 5 : 1;
    for (double t = 0; t <= span; t += step) {
        double x = left + t / span * width;
        buf_printf(b,
                   "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#eee\"/>"
                   "<text x=\"%.1f\" y=\"%d\" fill=\"#666\">%.0fs</text>\n",
                   x, top - 5, x, height - 15, x + 2, top - 10, t);
    }
    for (size_t k = 0; k < nl; k++) {
        buf_printf(b, "<text x=\"4\" y=\"%zu\" font-weight=\"bold\">", top + k * row + 16);
        esc(b, lanes[k]);
        buf_append_str(b, "</text>\n");
    }
    json_array_foreach(tl, i, e)
    {
        size_t k = 0;
        while (k < nl && strcmp(lanes[k], sval(e, "lane")))
            k++;
        double x = left + secs(ival(e, "at_ms"), t0) / span * width;
        double y = top + (double)k * row + 4;
        const char *kind = sval(e, "kind"), *label = sval(e, "label");
        if (ival(e, "end_ms")) {
            double x2 = left + secs(ival(e, "end_ms"), t0) / span * width;
            if (x2 < x + 2)
                x2 = x + 2;
            buf_printf(b,
                       "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"16\" fill=\"%s\" "
                       "opacity=\"0.85\"><title>",
                       x, y, x2 - x, color(kind, label));
            esc(b, label);
            buf_append_str(b, "</title></rect>\n");
            if (strcmp(kind, "wait") != 0) {
                buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#fff\">", x + 3, y + 12);
                esc(b, label);
                buf_append_str(b, "</text>\n");
            }
        } else {
            buf_printf(b,
                       "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"%s\"/><text x=\"%.1f\" "
                       "y=\"%.1f\">",
                       x, y + 8, color(kind, label), x + 8, y + 12);
            esc(b, label);
            buf_append_str(b, "</text>\n");
        }
    }
    buf_append_str(b, "</svg>\n");
}

void report_html(json_t *rep, struct buf *b)
{
    json_t *run = json_object_get(rep, "run");
    struct buf md;
    buf_init(&md, 4u << 20);
    report_summary(rep, &md);
    buf_append_str(b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>triad run ");
    esc(b, sval(run, "id"));
    buf_append_str(b, "</title><style>body{font-family:sans-serif;margin:2em;max-width:1000px}"
                      "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
                      "text-align:left;vertical-align:top}th{background:#f4f4f4}"
                      ".fig{font-size:1.3em}.done{color:#2e7d32}.failed{color:#c62828}"
                      ".skipped{color:#607d8b}pre{background:#f7f7f7;padding:1em}"
                      "</style></head><body>\n<h1>triad run ");
    esc(b, sval(run, "id"));
    buf_append_str(b, "</h1>\n<p>");
    /* Every value from the journal is escaped: it is data, possibly a
     * peer's, never markup. */
    esc_all(b, "runbook <b>", sval(run, "runbook"), "</b> (", sval(run, "kind"), "), ",
            sval(run, "from"), " &rarr; ", sval(run, "to"), (const char *)NULL);
    buf_printf(b, ", epoch %lld, leader ", (long long)ival(run, "epoch"));
    esc_all(b, "", sval(run, "leader"), ", state <b>", sval(run, "state"), "</b>",
            (const char *)NULL);
    if (json_object_get(run, "end_reason")) {
        buf_append_str(b, ": ");
        esc(b, sval(run, "end_reason"));
    }
    buf_append_str(b, "</p>\n<h2>Figures</h2>\n<pre class=\"fig\">");
    esc(b, md.data ? md.data : "");
    buf_append_str(b, "</pre>\n<h2>Timeline</h2>\n<p>Seconds from the fault (or from the "
                      "first detection). Hatched: waiting for an operator.</p>\n");
    svg_timeline(rep, b);
    buf_append_str(b, "<h2>Steps</h2>\n<table><tr><th>step</th><th>action</th><th>state</th>"
                      "<th>waited</th><th>detail</th></tr>\n");
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(run, "steps"), i, s)
    {
        esc_all(b, "<tr><td>", sval(s, "id"), "</td><td>", sval(s, "action"), "</td><td class=\"",
                sval(s, "state"), "\">", sval(s, "state"), "</td>", (const char *)NULL);
        buf_printf(b, "<td>%.1f s</td><td>", (double)ival(s, "waited_ms") / 1000.0);
        esc(b, sval(s, "detail"));
        buf_append_str(b, "</td></tr>\n");
    }
    buf_append_str(b, "</table>\n<h2>Approvals</h2>\n<table><tr><th>time</th><th>who</th>"
                      "<th>decision</th><th>step</th><th>shown</th></tr>\n");
    json_array_foreach(json_object_get(run, "approvals"), i, s)
    {
        char t[40];
        fmt_time(ival(s, "ts_ms"), t, sizeof t);
        buf_printf(b, "<tr><td>%s</td><td>", t);
        esc(b, sval(s, "who"));
        esc_all(b, "</td><td>", sval(s, "decision"), "</td><td>", sval(s, "step"), "</td><td>",
                (const char *)NULL);
        esc(b, sval(s, "shown"));
        buf_append_str(b, "</td></tr>\n");
    }
    buf_append_str(b,
                   "</table>\n<h2>Probe transitions during the run</h2>\n<table><tr>"
                   "<th>time</th><th>site</th><th>probe</th><th>state</th><th>detail</th></tr>\n");
    json_array_foreach(json_object_get(run, "probes"), i, s)
    {
        char t[40];
        fmt_time(ival(s, "ts_ms"), t, sizeof t);
        esc_all(b, "<tr><td>", t, "</td><td>", sval(s, "site"), "</td><td>", sval(s, "probe"),
                "</td><td>", sval(s, "state"), "</td><td>", (const char *)NULL);
        esc(b, sval(s, "detail"));
        buf_append_str(b, "</td></tr>\n");
    }
    buf_append_str(b, "</table>\n<p><small>Generated by triad from the run's journal.</small></p>"
                      "</body></html>\n");
    buf_free(&md);
}
