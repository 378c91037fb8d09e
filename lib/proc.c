/* Child processes: spawn with uv_spawn, one output pipe read into a capped
 * buffer, a timer that is in turn the timeout, the SIGTERM-to-SIGKILL grace
 * and the post-exit drain, and exactly one callback once all is closed. */
#include "lib/proc.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/log.h"

extern char **environ;

enum proc_phase {
    PHASE_RUNNING,     /* timer: the timeout */
    PHASE_TERMINATING, /* SIGTERM sent; timer: the grace before SIGKILL */
    PHASE_EXITED,      /* reaped; timer: the drain of the pipe */
    PHASE_CLOSING,     /* handles closing; the callback comes next */
};

struct proc {
    uv_loop_t *loop;
    uv_process_t process;
    uv_pipe_t out;
    uv_timer_t timer;
    int open_handles; /* handles whose close callback is still due */
    bool out_open;    /* `out` was initialised */
    bool proc_open;   /* `process` was initialised (by uv_spawn) */
    bool silent;      /* spawn failed: free without a callback */
    enum proc_phase phase;
    proc_done_cb cb;
    void *arg;
    int result;
    int pid;
    int64_t exit_status;
    int term_signal;
    bool eof;
    uint32_t grace_ms;
    uint64_t start_ns, exit_ns;
    struct buf output;
    char chunk[16384]; /* read buffer handed to libuv */
};

static void on_closed(uv_handle_t *h)
{
    struct proc *p = h->data;
    if (--p->open_handles > 0)
        return;
    if (!p->silent) {
        struct proc_result r = {
            .result = p->result,
            .exit_status = p->exit_status,
            .term_signal = p->term_signal,
            .output = p->output.data ? p->output.data : "",
            .output_len = p->output.len,
            .truncated = p->output.truncated != 0,
            .pid = p->pid,
            .duration_ms = (int64_t)((p->exit_ns - p->start_ns) / 1000000),
        };
        p->cb(p, &r, p->arg);
    }
    buf_free(&p->output);
    free(p);
}

static void close_handle(struct proc *p, uv_handle_t *h)
{
    if (uv_is_closing(h))
        return;
    p->open_handles++;
    uv_close(h, on_closed);
}

/* Everything is known: close the handles; the callback follows. */
static void finish(struct proc *p)
{
    if (p->phase == PHASE_CLOSING)
        return;
    p->phase = PHASE_CLOSING;
    uv_timer_stop(&p->timer);
    if (p->out_open)
        close_handle(p, (uv_handle_t *)&p->out);
    if (p->proc_open)
        close_handle(p, (uv_handle_t *)&p->process);
    close_handle(p, (uv_handle_t *)&p->timer);
}

/* The whole group: the program and whatever it started. */
static void signal_group(struct proc *p, int sig)
{
    if (kill(-p->pid, sig) < 0 && errno == ESRCH)
        kill(p->pid, sig);
}

static void on_timer(uv_timer_t *t)
{
    struct proc *p = t->data;
    switch (p->phase) {
    case PHASE_RUNNING:
        p->result = -ETIMEDOUT;
        p->phase = PHASE_TERMINATING;
        signal_group(p, SIGTERM);
        uv_timer_start(&p->timer, on_timer, p->grace_ms, 0);
        break;
    case PHASE_TERMINATING:
        signal_group(p, SIGKILL);
        break;
    case PHASE_EXITED:
        finish(p); /* something still holds the pipe open: stop waiting */
        break;
    case PHASE_CLOSING:
        break;
    }
}

static void on_exit_cb(uv_process_t *h, int64_t exit_status, int term_signal)
{
    struct proc *p = h->data;
    p->exit_ns = uv_hrtime();
    p->exit_status = term_signal ? -1 : exit_status;
    p->term_signal = term_signal;
    p->phase = PHASE_EXITED;
    uv_timer_stop(&p->timer);
    if (p->eof || !p->out_open) {
        finish(p);
        return;
    }
    uv_timer_start(&p->timer, on_timer, PROC_DRAIN_MS, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    struct proc *p = h->data;
    *b = uv_buf_init(p->chunk, sizeof p->chunk);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct proc *p = s->data;
    if (n > 0) {
        /* Keep what fits, drop the rest, but always read: a child must
         * never block on a full pipe. */
        size_t len = (size_t)n;
        size_t room = p->output.max - p->output.len;
        if (len > room) {
            p->output.truncated = 1;
            len = room;
        }
        if (len && buf_append(&p->output, b->base, len) < 0)
            p->output.truncated = 1;
        return;
    }
    if (n == 0)
        return;
    /* EOF or a read error: either way there is nothing more to read. */
    p->eof = true;
    uv_read_stop(s);
    if (p->phase == PHASE_EXITED)
        finish(p);
}

static int check_opts(const struct proc_opts *o)
{
    if (!o->argv || !o->argv[0]) {
        log_error("proc: no program given");
        return -EINVAL;
    }
    if (o->argv[0][0] != '/') {
        log_error("proc: program must be an absolute path: %s", o->argv[0]);
        return -EINVAL;
    }
    for (size_t i = 0; o->env && o->env[i]; i++) {
        const char *eq = strchr(o->env[i], '=');
        if (!eq || eq == o->env[i]) {
            log_error("proc: environment entries are NAME=value");
            return -EINVAL;
        }
    }
    return 0;
}

static bool overridden(const char *var, const char *const *env)
{
    const char *eq = strchr(var, '=');
    size_t n = eq ? (size_t)(eq - var) : strlen(var);
    for (size_t i = 0; env && env[i]; i++) {
        if (strncmp(env[i], var, n) == 0 && env[i][n] == '=')
            return true;
    }
    return false;
}

/* The daemon's environment with the additions; the strings are borrowed. */
static char **build_env(const char *const *add)
{
    size_t n = 0, m = 0;
    while (environ && environ[n])
        n++;
    while (add && add[m])
        m++;
    char **env = calloc(n + m + 1, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!overridden(environ[i], add))
            env[k++] = environ[i];
    }
    for (size_t i = 0; i < m; i++)
        env[k++] = (char *)add[i];
    env[k] = NULL;
    return env;
}

int proc_start(uv_loop_t *loop, const struct proc_opts *o, proc_done_cb cb, void *arg,
               struct proc **out)
{
    int result;
    struct proc *p = NULL;
    char **env = NULL;
    uv_file fds[2] = { -1, -1 };
    if (out)
        *out = NULL;
    if (!loop || !o || !cb)
        return -EINVAL;
    result = check_opts(o);
    if (result < 0)
        return result;

    p = calloc(1, sizeof *p);
    env = build_env(o->env);
    if (!p || !env) {
        result = -ENOMEM;
        goto out;
    }
    p->loop = loop;
    p->cb = cb;
    p->arg = arg;
    p->grace_ms = o->grace_ms ? o->grace_ms : PROC_DEFAULT_GRACE_MS;
    p->exit_status = -1;
    buf_init(&p->output, o->max_output ? o->max_output : PROC_DEFAULT_MAX_OUTPUT);

    /* Our end non-blocking for the loop; the child's end an ordinary
     * blocking pipe, given to it as both stdout and stderr. */
    result = uv_pipe(fds, UV_NONBLOCK_PIPE, 0);
    if (result < 0)
        goto out;
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    uv_pipe_init(loop, &p->out, 0);
    p->out.data = p;
    p->out_open = true;
    result = uv_pipe_open(&p->out, fds[0]);
    if (result < 0)
        goto out;
    fds[0] = -1; /* owned by p->out now */

    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = fds[1];
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = fds[1];
    uv_process_options_t po = {
        .exit_cb = on_exit_cb,
        .file = o->argv[0],
        .args = (char **)o->argv,
        .env = env,
        .cwd = o->cwd,
        .flags = UV_PROCESS_DETACHED, /* own session: signals reach its group */
        .stdio_count = 3,
        .stdio = stdio,
    };
    p->process.data = p;
    p->start_ns = uv_hrtime();
    p->proc_open = true; /* even when it fails */
    result = uv_spawn(loop, &p->process, &po);
    close(fds[1]);
    fds[1] = -1;
    if (result < 0) {
        /* The caller reports it, with its context. */
        log_debug("proc: cannot run %s: %s", o->argv[0], uv_strerror(result));
        /* libuv wants the process handle closed even after a failed spawn. */
        p->silent = true;
        finish(p);
        p = NULL;
        goto out;
    }
    p->pid = p->process.pid;
    result = uv_read_start((uv_stream_t *)&p->out, on_alloc, on_read);
    if (result < 0) {
        /* Without a reader the child could block: end it at once. */
        log_error("proc: cannot read the output of %s: %s", o->argv[0], uv_strerror(result));
        p->eof = true;
        p->result = -EIO;
        p->phase = PHASE_TERMINATING;
        signal_group(p, SIGKILL);
        result = 0;
        goto out;
    }
    if (o->timeout_ms)
        uv_timer_start(&p->timer, on_timer, o->timeout_ms, 0);
    result = 0;
out:
    free(env);
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    if (result < 0) {
        if (p && p->out_open) {
            /* Handles exist: let their close callbacks free p, silently. */
            p->silent = true;
            finish(p);
        } else if (p) {
            buf_free(&p->output);
            free(p);
        }
        return result;
    }
    if (out)
        *out = p;
    return 0;
}

void proc_cancel(struct proc *p)
{
    if (!p || p->phase != PHASE_RUNNING)
        return;
    p->result = -ECANCELED;
    p->phase = PHASE_TERMINATING;
    signal_group(p, SIGTERM);
    uv_timer_start(&p->timer, on_timer, p->grace_ms, 0);
}

void proc_output_tail(const char *output, size_t len, char *out, size_t max)
{
    if (!max)
        return;
    out[0] = '\0';
    while (len && (unsigned char)output[len - 1] <= ' ')
        len--;
    if (!len || max < 8)
        return;
    size_t start = 0, k = 0;
    if (len > max - 1) {
        start = len - (max - 4);
        /* Never begin inside a UTF-8 sequence. */
        while (start < len && ((unsigned char)output[start] & 0xC0) == 0x80)
            start++;
        memcpy(out, "...", 3);
        k = 3;
    }
    for (size_t i = start; i < len && k < max - 1; i++) {
        unsigned char c = (unsigned char)output[i];
        out[k++] = (c < ' ' || c == 0x7f) ? ' ' : (char)c;
    }
    out[k] = '\0';
}
