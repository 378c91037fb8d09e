/* The run journal on disk. */
#include "orchestrator/journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/fsutil.h"

/* Run ids start with the leader's site name, which may contain '.': allowed
 * here too, but not first (no "..", no hidden file); '/' never. */
static bool valid_run_id(const char *run)
{
    if (!run || !*run || *run == '.' || strlen(run) > 63)
        return false;
    for (const char *p = run; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return false;
    }
    return true;
}

static int path_of(struct journal *j, const char *run, char *out, size_t len)
{
    if (!valid_run_id(run))
        return -EINVAL;
    int n = snprintf(out, len, "%s/%s.jsonl", j->dir, run);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int journal_init(struct journal *j, const char *state_dir)
{
    snprintf(j->dir, sizeof j->dir, "%s/runs", state_dir);
    return fsutil_mkdirs(j->dir, 0700);
}

json_t *journal_read(struct journal *j, const char *run)
{
    char path[4200];
    if (path_of(j, run, path, sizeof path) < 0)
        return NULL;
    struct buf b;
    buf_init(&b, JOURNAL_MAX_BYTES);
    if (fsutil_read(path, &b) < 0) {
        buf_free(&b);
        return NULL;
    }
    json_t *arr = json_array();
    const char *p = b.data ? b.data : "";
    const char *end = p + b.len;
    /* By length, not up to a NUL: after a crash some file systems leave
     * zeros where the last write was, and the records appended after them
     * must still be read. */
    while (p < end && json_array_size(arr) < JOURNAL_MAX_RECORDS) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        /* A torn or damaged line (a crash mid-write) is ignored, nothing
         * else. */
        json_t *rec = n ? json_loadb(p, n, 0, NULL) : NULL;
        if (json_is_object(rec))
            json_array_append_new(arr, rec);
        else
            json_decref(rec);
        p += n + (nl ? 1 : 0);
    }
    buf_free(&b);
    return arr;
}

int64_t journal_last_seq(struct journal *j, const char *run)
{
    json_t *recs = journal_read(j, run);
    int64_t seq = 0;
    if (recs && json_array_size(recs))
        seq = json_integer_value(
            json_object_get(json_array_get(recs, json_array_size(recs) - 1), "seq"));
    json_decref(recs);
    return seq;
}

/* Whether the file's last line lacks its newline (a crash mid-write). */
static bool ends_torn(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    char c = '\n';
    bool torn =
        fstat(fd, &st) == 0 && st.st_size > 0 && pread(fd, &c, 1, st.st_size - 1) == 1 && c != '\n';
    close(fd);
    return torn;
}

int64_t journal_append(struct journal *j, const char *run, json_t *record)
{
    char path[4200];
    int r = path_of(j, run, path, sizeof path);
    if (r < 0)
        return r;
    int64_t last = journal_last_seq(j, run);
    json_t *seqj = json_object_get(record, "seq");
    int64_t seq = json_is_integer(seqj) ? json_integer_value(seqj) : last + 1;
    if (seq <= last)
        return -EEXIST;
    if (seq > last + 1)
        return -ERANGE;
    json_t *copy = json_copy(record);
    json_object_set_new(copy, "seq", json_integer(seq));
    char *text = json_dumps(copy, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(copy);
    if (!text)
        return -ENOMEM;
    /* A torn last line must stay a line of its own: glued to it, this
     * record would be lost with it. */
    size_t torn = ends_torn(path) ? 1 : 0;
    size_t len = strlen(text);
    char *line = malloc(torn + len + 1);
    if (!line) {
        free(text);
        return -ENOMEM;
    }
    line[0] = '\n';
    memcpy(line + torn, text, len);
    line[torn + len] = '\n';
    free(text);
    r = fsutil_append_sync(path, line, torn + len + 1, 0600);
    free(line);
    return r < 0 ? r : seq;
}

struct ent {
    char name[64];
    time_t mtime;
};

static int by_time(const void *a, const void *b)
{
    const struct ent *x = a, *y = b;
    return x->mtime < y->mtime ? 1 : x->mtime > y->mtime ? -1 : strcmp(x->name, y->name);
}

json_t *journal_runs(struct journal *j, int max)
{
    json_t *out = json_array();
    DIR *d = opendir(j->dir);
    if (!d)
        return out;
    struct ent *ents = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < 10000) {
        size_t l = strlen(de->d_name);
        if (l < 7 || l > 63 + 6 || strcmp(de->d_name + l - 6, ".jsonl") != 0)
            continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", j->dir, de->d_name);
        struct stat st;
        if (stat(path, &st) < 0)
            continue;
        struct ent *ne = realloc(ents, (n + 1) * sizeof *ne);
        if (!ne)
            break;
        ents = ne;
        snprintf(ents[n].name, sizeof ents[n].name, "%.*s", (int)(l - 6), de->d_name);
        ents[n].mtime = st.st_mtime;
        n++;
    }
    closedir(d);
    if (n) /* qsort(NULL, 0) is undefined: no run yet on a new site */
        qsort(ents, n, sizeof *ents, by_time);
    for (size_t i = 0; i < n && (int)i < max; i++)
        json_array_append_new(out, json_string(ents[i].name));
    free(ents);
    return out;
}

json_t *journal_summary(json_t *records)
{
    json_t *sum = json_object();
    json_t *steps = json_object();
    json_t *order = json_array();
    json_t *approvals = json_array();
    json_t *leaders = json_array();
    json_object_set_new(sum, "state", json_string("running"));
    size_t i;
    json_t *rec;
    json_array_foreach(records, i, rec)
    {
        const char *t = json_string_value(json_object_get(rec, "t"));
        if (!t)
            continue;
        if (!strcmp(t, "run-start")) {
            const char *keys[] = { "run", "runbook", "kind", "from", "to", "epoch", "mode" };
            for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
                json_object_set(sum, strcmp(keys[k], "run") ? keys[k] : "id",
                                json_object_get(rec, keys[k]));
            json_object_set(sum, "started_ms", json_object_get(rec, "ts_ms"));
            json_object_set(sum, "leader", json_object_get(rec, "leader"));
        } else if (!strcmp(t, "step")) {
            const char *id = json_string_value(json_object_get(rec, "step"));
            if (!id)
                continue;
            json_t *s = json_object_get(steps, id);
            if (!s) {
                s = json_pack("{s:s}", "id", id);
                json_object_set_new(steps, id, s);
                json_array_append_new(order, json_string(id));
            }
            json_object_set(s, "state", json_object_get(rec, "to"));
            if (json_object_get(rec, "action"))
                json_object_set(s, "action", json_object_get(rec, "action"));
            if (json_object_get(rec, "detail"))
                json_object_set(s, "detail", json_object_get(rec, "detail"));
            if (json_object_get(rec, "result"))
                json_object_set(s, "result", json_object_get(rec, "result"));
            if (json_object_get(rec, "waited_ms"))
                json_object_set(s, "waited_ms", json_object_get(rec, "waited_ms"));
            const char *to = json_string_value(json_object_get(rec, "to"));
            if (to && !strcmp(to, "running") && !json_object_get(s, "started_ms"))
                json_object_set(s, "started_ms", json_object_get(rec, "ts_ms"));
            if (to && (!strcmp(to, "done") || !strcmp(to, "failed") || !strcmp(to, "skipped")))
                json_object_set(s, "ended_ms", json_object_get(rec, "ts_ms"));
            if (to && !strcmp(to, "awaiting_approval"))
                json_object_set(s, "gate_since_ms", json_object_get(rec, "ts_ms"));
            const char *from = json_string_value(json_object_get(rec, "from"));
            if (from && !strcmp(from, "awaiting_approval"))
                json_object_set(s, "gate_answered_ms", json_object_get(rec, "ts_ms"));
        } else if (!strcmp(t, "approval")) {
            json_array_append(approvals, rec);
        } else if (!strcmp(t, "takeover")) {
            json_array_append(leaders, rec);
        } else if (!strcmp(t, "detection")) {
            json_object_set(sum, "detection", rec);
        } else if (!strcmp(t, "probe")) {
            json_t *pr = json_object_get(sum, "probes");
            if (!pr) {
                pr = json_array();
                json_object_set_new(sum, "probes", pr);
            }
            json_array_append(pr, rec);
        } else if (!strcmp(t, "run-end")) {
            json_object_set(sum, "state", json_object_get(rec, "state"));
            json_object_set(sum, "end_reason", json_object_get(rec, "reason"));
            json_object_set(sum, "ended_ms", json_object_get(rec, "ts_ms"));
        }
    }
    json_t *list = json_array();
    json_array_foreach(order, i, rec)
    {
        json_array_append(list, json_object_get(steps, json_string_value(rec)));
    }
    json_object_set_new(sum, "steps", list);
    json_object_set_new(sum, "approvals", approvals);
    json_object_set_new(sum, "takeovers", leaders);
    json_decref(steps);
    json_decref(order);
    return sum;
}
