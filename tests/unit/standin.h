/* Test helper: run the lab's Python stand-ins (the .py files of tests/fixtures, or
 * helpers next to this file) as child processes of a test, on a free
 * 127.0.0.1 port, with Debian's /usr/bin/python3. */
#ifndef TRIAD_STANDIN_H
#define TRIAD_STANDIN_H

#include <stddef.h>
#include <sys/types.h>

/* <repository>/<rel> into out (found from the test binary's location, so
 * any working directory does). */
void standin_repo_path(const char *rel, char *out, size_t outsz);

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int standin_free_port(void);

/* Starts /usr/bin/python3 <repository>/<script> args... (NULL-terminated)
 * with stdout and stderr appended to log_path (or dropped when NULL), and
 * waits up to 10 s until 127.0.0.1:port accepts connections. The child
 * dies with the test process. Returns its pid, or -1. */
pid_t standin_start(const char *script, const char *const *args, int port, const char *log_path);
/* SIGTERM, then SIGKILL after 2 s; reaped. */
void standin_stop(pid_t pid);

/* Writes text to path (mode 0600); 0 or -1. */
int standin_write(const char *path, const char *text);

#endif
