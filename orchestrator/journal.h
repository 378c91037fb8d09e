/* The run journal: every record of a run (start, step transitions,
 * approvals, end) appended as one JSON line to state_dir/runs/RUN.jsonl and
 * fsynced before anything depends on it. The leader sends each record to
 * its peers, which keep the same file; a peer that missed records pulls
 * them, so a new leader can take a run over from its own copy. */
#ifndef TRIAD_JOURNAL_H
#define TRIAD_JOURNAL_H

#include <jansson.h>
#include <stdint.h>

#define JOURNAL_MAX_BYTES   (16u << 20) /* per run: a run is a few dozen records */
#define JOURNAL_MAX_RECORDS 10000

struct journal {
    char dir[4096];
};

int journal_init(struct journal *j, const char *state_dir);
/* Appends a record (borrowed) to a run's journal; the record gets "seq"
 * (1, 2, ...) when it has none. Returns the seq written, or a negative
 * errno. A record whose seq is not the next one is refused (-EEXIST if
 * already there, -ERANGE when records are missing before it). */
int64_t journal_append(struct journal *j, const char *run, json_t *record);
/* The records of a run (new array), or NULL when there is none. */
json_t *journal_read(struct journal *j, const char *run);
/* The last seq of a run's journal, 0 when empty or absent. */
int64_t journal_last_seq(struct journal *j, const char *run);
/* Run ids, newest first (by file time), at most max. */
json_t *journal_runs(struct journal *j, int max);

/* A run's story from its records: id, runbook, kind, from, to, epoch,
 * state, started/ended, steps with their last state and detail, approvals,
 * leaders (takeovers). Used by followers' status and by reports. */
json_t *journal_summary(json_t *records);

#endif
