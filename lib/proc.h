/* Child processes on the loop: run a program (argv, no shell), capture its
 * output, bound its time.
 *
 * - argv[0] is an absolute path: no PATH lookup, no shell, so nothing in
 *   a parameter is ever interpreted.
 * - The environment is the daemon's plus `env` additions ("NAME=value",
 *   replacing a variable of the same name). stdin is /dev/null.
 * - stdout and stderr go into one pipe, read as the child writes (so it is
 *   never blocked on a full pipe) into a buffer capped at max_output;
 *   beyond that the output is read and dropped, and marked truncated.
 * - The child runs in its own session (setsid), so the timeout and cancel
 *   signal its whole process group: SIGTERM, then SIGKILL after the grace.
 * - proc_start errors (bad argv, a program that cannot be executed) are
 *   returned, never called back. Once it returned 0 the callback runs
 *   exactly once, from a loop callback, after the child was reaped and every
 *   handle closed; the proc is freed when the callback returns.
 */
#ifndef TRIAD_PROC_H
#define TRIAD_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define PROC_DEFAULT_MAX_OUTPUT (64 * 1024)
#define PROC_DEFAULT_GRACE_MS   2000
/* How long output is still read after the child exited, for the rest of
 * what it wrote (a grandchild keeping the pipe open cannot hold us longer). */
#define PROC_DRAIN_MS 200

struct proc;

struct proc_opts {
    const char *const *argv; /* NULL-terminated; argv[0] an absolute path */
    const char *const *env;  /* NULL-terminated "NAME=value" additions, or NULL */
    const char *cwd;         /* NULL: the daemon's */
    uint32_t timeout_ms;     /* 0: no limit */
    uint32_t grace_ms;       /* SIGTERM to SIGKILL; 0: PROC_DEFAULT_GRACE_MS */
    size_t max_output;       /* 0: PROC_DEFAULT_MAX_OUTPUT */
};

struct proc_result {
    /* 0: the program ran to its end (see exit_status / term_signal);
     * -ETIMEDOUT: killed because of timeout_ms; -ECANCELED: proc_cancel. */
    int result;
    int64_t exit_status; /* exit code, or -1 when ended by a signal */
    int term_signal;     /* signal that ended it, 0 when it exited */
    const char *output;  /* stdout+stderr, NUL-terminated, at most max_output bytes */
    size_t output_len;
    bool truncated; /* more output was written and dropped */
    int pid;
    int64_t duration_ms; /* start to exit */
};

typedef void (*proc_done_cb)(struct proc *p, const struct proc_result *r, void *arg);

/* Starts the program. 0, or a negative errno: -EINVAL (no argv, a relative
 * program path, a malformed env entry), -ENOENT/-EACCES/... from exec,
 * -ENOMEM. *out (may be NULL) receives the handle for proc_cancel. */
int proc_start(uv_loop_t *loop, const struct proc_opts *o, proc_done_cb cb, void *arg,
               struct proc **out);

/* Ends the child now (SIGTERM to its group, SIGKILL after the grace); the
 * callback runs with -ECANCELED once it is reaped. No-op once the child has
 * exited. The handle is valid until the callback returns. */
void proc_cancel(struct proc *p);

/* A one-line summary of output for messages: the last `max` bytes or so,
 * newlines and control characters replaced by spaces ("" for no output). */
void proc_output_tail(const char *output, size_t len, char *out, size_t max);

#endif
