/* The exec fence: a site-specific program does the fencing (`command`),
 * then a second one checks it (`verify`); the fence holds only when the
 * command and then the verification both exit 0. Both are argv lists run
 * without a shell, from an absolute path, with the fence's name, site and
 * action in TRIAD_FENCE_NAME, TRIAD_FENCE_SITE, TRIAD_FENCE_ACTION, and the
 * fence's timeout shared between them (the program's process group is
 * killed when it runs out). The tail of their output goes into the detail.
 * Not liftable: a script's effect is not known to be reversible. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fencing/fence.h"
#include "lib/proc.h"

#define OUTPUT_TAIL 160

struct exec_fence {
    struct proc *p;
    bool verifying;
    bool releasing;
    uint64_t start_ms;
    char command_out[OUTPUT_TAIL];
    char env_name[128], env_site[128];
};

static void run(struct fence_op *op, char **argv, size_t n);

/* Time left, minus a little so that our message beats the fence timer. */
static uint32_t time_left(const struct fence_op *op)
{
    const struct exec_fence *f = op->drv;
    int64_t t = op->fence->timeout_ms;
    int64_t margin = t / 10 < 1000 ? t / 10 : 1000;
    int64_t left = t - margin - (int64_t)(uv_now(op->loop) - f->start_ms);
    return left < 1 ? 1 : (uint32_t)left;
}

static const char *prog(const struct fence_op *op)
{
    const struct exec_fence *f = op->drv;
    return f->verifying ? op->fence->verify[0] : op->fence->command[0];
}

static void on_done(struct proc *p, const struct proc_result *r, void *arg)
{
    (void)p;
    struct fence_op *op = arg;
    struct exec_fence *f = op->drv;
    char tail[OUTPUT_TAIL];
    f->p = NULL;
    if (f->releasing) {
        free(f);
        op->drv = NULL;
        fence_op_released(op);
        return;
    }
    proc_output_tail(r->output, r->output_len, tail, sizeof tail);
    const char *what = f->verifying ? "verify" : "command";
    if (r->result == -ETIMEDOUT) {
        fence_op_finish(op, -ETIMEDOUT, "%s %s timed out after %lld ms and was killed%s%s", what,
                        prog(op), (long long)r->duration_ms, tail[0] ? "; output: " : "", tail);
        return;
    }
    if (r->result < 0) {
        fence_op_finish(op, r->result, "%s %s: %s", what, prog(op), strerror(-r->result));
        return;
    }
    if (r->term_signal || r->exit_status != 0) {
        char how[48];
        if (r->term_signal)
            snprintf(how, sizeof how, "was killed by signal %d", r->term_signal);
        else
            snprintf(how, sizeof how, "exited %lld", (long long)r->exit_status);
        /* A failed verification means the site may still take writes. */
        fence_op_finish(op, f->verifying ? -EPROTO : -EIO, "%s %s %s%s%s", what, prog(op), how,
                        tail[0] ? "; output: " : "", tail);
        return;
    }
    if (!f->verifying) {
        snprintf(f->command_out, sizeof f->command_out, "%s", tail);
        f->verifying = true;
        fence_op_step(op, "running verify");
        run(op, op->fence->verify, op->fence->n_verify);
        return;
    }
    fence_op_finish(op, 0, "command exited 0%s%s%s; verify exited 0%s%s",
                    f->command_out[0] ? " (" : "", f->command_out, f->command_out[0] ? ")" : "",
                    tail[0] ? ": " : "", tail);
}

static void run(struct fence_op *op, char **argv, size_t n)
{
    struct exec_fence *f = op->drv;
    const char **args = calloc(n + 1, sizeof *args);
    if (!args) {
        fence_op_finish(op, -ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++)
        args[i] = argv[i];
    const char *env[] = { f->env_name, f->env_site,
                          op->unfence ? "TRIAD_FENCE_ACTION=unfence" : "TRIAD_FENCE_ACTION=fence",
                          NULL };
    struct proc_opts o = {
        .argv = args,
        .env = env,
        .timeout_ms = time_left(op),
        .grace_ms = 1000,
    };
    int rc = proc_start(op->loop, &o, on_done, op, &f->p);
    free(args);
    if (rc < 0)
        fence_op_finish(op, rc, "cannot run %s: %s", argv[0], strerror(-rc));
}

static void exec_start(struct fence_op *op)
{
    const struct cfg_fence *fc = op->fence;
    struct exec_fence *f = calloc(1, sizeof *f);
    if (!f) {
        fence_op_finish(op, -ENOMEM, "out of memory");
        return;
    }
    op->drv = f;
    f->start_ms = uv_now(op->loop);
    if (!fc->n_command || !fc->n_verify) {
        fence_op_finish(op, -EINVAL, "an exec fence needs 'command' and 'verify'");
        return;
    }
    if (fc->command[0][0] != '/' || fc->verify[0][0] != '/') {
        fence_op_finish(op, -EINVAL,
                        "'command' and 'verify' must start with an absolute program path "
                        "(no shell, no PATH lookup)");
        return;
    }
    snprintf(f->env_name, sizeof f->env_name, "TRIAD_FENCE_NAME=%s", fc->name);
    snprintf(f->env_site, sizeof f->env_site, "TRIAD_FENCE_SITE=%s", fc->site);
    fence_op_step(op, "running command");
    run(op, fc->command, fc->n_command);
}

static void exec_release(struct fence_op *op)
{
    struct exec_fence *f = op->drv;
    if (f && f->p) {
        /* Timed out or cancelled: kill the program, free once it is reaped. */
        f->releasing = true;
        proc_cancel(f->p);
        return;
    }
    free(f);
    op->drv = NULL;
    fence_op_released(op);
}

const struct fence_driver fence_driver_exec = {
    .method = "exec",
    .can_unfence = false,
    .start = exec_start,
    .release = exec_release,
};
