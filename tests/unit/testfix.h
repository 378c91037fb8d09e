/* Test helper: start the C fixtures of tests/fixtures (built next to the
 * test binaries in $BUILD/fixtures) as child processes. A fixture prints
 * its port on stdout once it listens; it dies with the test process. */
#ifndef TRIAD_TESTFIX_H
#define TRIAD_TESTFIX_H

#include <stddef.h>
#include <sys/types.h>

/* Path of fixture `name` into out. */
void fixture_path(const char *name, char *out, size_t outsz);
/* Starts fixture `name` with args (NULL-terminated, may be NULL); waits up
 * to 10 s for its port. Returns its pid, or -1. */
pid_t fixture_start(const char *name, const char *const *args, int *port);
/* SIGTERM and reap. */
void fixture_stop(pid_t pid);

#endif
