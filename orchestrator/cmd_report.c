/* `triad report RUN`: a run's journal (and its drill's measurements, if it
 * was a drill) as Markdown, self-contained HTML or JSON. Reads this site's
 * copy of the journal in state_dir: no daemon needed. RUN may be `last`. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/fsutil.h"
#include "orchestrator/cli.h"
#include "orchestrator/config.h"
#include "orchestrator/journal.h"
#include "orchestrator/report.h"

/* The drill's own measurements, kept next to the journal. */
json_t *report_drill_data(const char *state_dir, const char *run)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/drills/%s.json", state_dir, run);
    struct buf b;
    buf_init(&b, 1 << 20);
    json_t *j = NULL;
    if (fsutil_read(path, &b) == 0)
        j = json_loadb(b.data ? b.data : "", b.len, 0, NULL);
    buf_free(&b);
    return j;
}

int report_render(const char *state_dir, const char *run, const char *format, const char *output,
                  bool summary)
{
    struct journal j;
    snprintf(j.dir, sizeof j.dir, "%s/runs", state_dir);
    char id[64];
    snprintf(id, sizeof id, "%s", run);
    if (!strcmp(run, "last")) {
        json_t *ids = journal_runs(&j, 1);
        if (!json_array_size(ids)) {
            fprintf(stderr, "triad report: no run in %s\n", j.dir);
            json_decref(ids);
            return EXIT_FAILED;
        }
        snprintf(id, sizeof id, "%s", json_string_value(json_array_get(ids, 0)));
        json_decref(ids);
    }
    json_t *recs = journal_read(&j, id);
    if (!recs) {
        fprintf(stderr, "triad report: no journal for run %s in %s\n", id, j.dir);
        return EXIT_FAILED;
    }
    json_t *drill = report_drill_data(state_dir, id);
    json_t *rep = report_build(recs, drill);
    struct buf b;
    buf_init(&b, 32u << 20);
    if (summary)
        report_summary(rep, &b);
    else if (!strcmp(format, "html"))
        report_html(rep, &b);
    else if (!strcmp(format, "json")) {
        char *text = json_dumps(rep, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        buf_append_str(&b, text ? text : "{}");
        buf_append_str(&b, "\n");
        free(text);
    } else
        report_markdown(rep, &b);
    int result = EXIT_OK;
    if (output) {
        int r = fsutil_write_atomic(output, b.data ? b.data : "", b.len, 0644);
        if (r < 0) {
            fprintf(stderr, "triad report: cannot write %s: %s\n", output, strerror(-r));
            result = EXIT_FAILED;
        }
    } else {
        fwrite(b.data ? b.data : "", 1, b.len, stdout);
    }
    buf_free(&b);
    json_decref(rep);
    json_decref(drill);
    json_decref(recs);
    return result;
}

int cmd_report(const struct cli_args *a)
{
    const char *format = cli_get(a, "format") ? cli_get(a, "format") : "md";
    if (strcmp(format, "md") && strcmp(format, "html") && strcmp(format, "json")) {
        fprintf(stderr, "triad report: --format is md, html or json\n");
        return EXIT_USAGE;
    }
    struct config cfg;
    struct diag d;
    struct config_load_opts opts = { .no_file_checks = true, .skip_runbooks = true };
    diag_init(&d);
    if (config_load(&cfg, a->config, &opts, &d) < 0) {
        diag_print(&d, stderr);
        diag_free(&d);
        config_free(&cfg);
        return EXIT_CONFIG;
    }
    diag_free(&d);
    int r = report_render(cfg.state_dir, a->positional[0], format, cli_get(a, "output"), false);
    config_free(&cfg);
    return r;
}
