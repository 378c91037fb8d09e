/* Durable files: atomic replacement (write a temporary file, fsync it,
 * rename it over the old one, fsync the directory), capped reads, and
 * directories. Used for the quorum's epoch and votes, which must be on disk
 * before they are announced, and for the run journal. These calls block on
 * the disk for a few milliseconds; they are used for rare, small writes. */
#ifndef TRIAD_FSUTIL_H
#define TRIAD_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "lib/buf.h"

/* 0 or a negative errno. */
int fsutil_write_atomic(const char *path, const void *data, size_t len, mode_t mode);
/* The same replacement without fsync: readers see the old or the new file,
 * whole, as long as the machine stays up (a power cut may leave either, or
 * an empty file). For state only worth keeping across a process restart. */
int fsutil_replace(const char *path, const void *data, size_t len, mode_t mode);
/* Reads a whole file into b (whose cap bounds it). -ENOENT when absent,
 * -EMSGSIZE when larger than the cap. */
int fsutil_read(const char *path, struct buf *b);
/* mkdir -p with a mode for the directories it creates. */
int fsutil_mkdirs(const char *path, mode_t mode);
/* Appends a line and fsyncs (the journal). The file is created with mode. */
int fsutil_append_sync(const char *path, const void *data, size_t len, mode_t mode);

#endif
