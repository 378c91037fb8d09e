/* Action `exec`: run a program (argv, no shell) with the step's time and
 * capture its output (capped).
 *
 * The step succeeds when the program exits with `expect_exit` (default 0).
 * `check` is the step's postcondition: a program whose exit 0 means the
 * outcome already holds (then the step is skipped), run again after the
 * command to verify it (exec is self-verifying: without `check` there is
 * nothing to observe but the command's own exit status).
 *
 * Both run without a shell from an absolute path, in their own process
 * group (killed as a whole when the step's time runs out or the run is
 * aborted), with the run in their environment: TRIAD_RUN_ID, TRIAD_EPOCH,
 * TRIAD_FROM, TRIAD_TO, TRIAD_STEP and TRIAD_OP (check or run). Output
 * (stdout and stderr) is captured up to PROC_DEFAULT_MAX_OUTPUT; its tail
 * goes into the detail and, up to RESULT_OUTPUT_MAX bytes, into the result
 * (output, output_bytes, output_truncated), made valid UTF-8. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/proc.h"
#include "runbooks/actions/actions.h"

#define RESULT_OUTPUT_MAX 4096
#define DETAIL_TAIL       200
#define N_ENV             6

static const struct rb_param_spec params[] = {
    { "command", RB_P_STRING_LIST, true, "program and arguments, no shell" },
    { "expect_exit", RB_P_INT, false, "exit status that means success (default 0)" },
    { "check", RB_P_STRING_LIST, false,
      "optional program whose exit 0 means the step's outcome already holds" },
    { NULL, RB_P_ANY, false, NULL },
};

static void need_absolute(const struct rb_validate_ctx *v, const char *param)
{
    json_t *cmd = json_object_get(v->params, param);
    if (!cmd)
        return;
    const char *prog = json_string_value(json_array_get(cmd, 0));
    if (!prog || prog[0] != '/')
        rb_param_error(v, param,
                       "'%s' must start with an absolute program path (no shell, no "
                       "PATH lookup)",
                       param);
}

static void validate(const struct rb_validate_ctx *v)
{
    need_absolute(v, "command");
    need_absolute(v, "check");
    json_t *e = json_object_get(v->params, "expect_exit");
    if (e && (json_integer_value(e) < 0 || json_integer_value(e) > 255))
        rb_param_error(v, "expect_exit", "'expect_exit' must be 0 to 255");
}

/* ---- runtime ---- */

enum exec_mode {
    MODE_CHECK,   /* the check op: `check` */
    MODE_COMMAND, /* run: `command` */
    MODE_VERIFY,  /* run: `check` after the command succeeded */
};

struct exec_state {
    struct rb_exec *x;
    struct proc *p;
    bool releasing;
    enum exec_mode mode;
    uint64_t start_ms;
    uint32_t budget_ms, grace_ms;
    char env[N_ENV][256];
    char command_tail[DETAIL_TAIL + 128];
};

/* rb_exec_done, with the detail cut to fit at a character boundary. */
static void done(struct rb_exec *x, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void done(struct rb_exec *x, int status, const char *fmt, ...)
{
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    size_t max = sizeof x->detail;
    if (strlen(text) >= max) {
        size_t cut = max - 4;
        while (cut > 0 && ((unsigned char)text[cut] & 0xC0) == 0x80)
            cut--;
        memcpy(text + cut, "...", 4);
    }
    rb_exec_done(x, status, "%s", text);
}

/* Valid UTF-8 of in[0..len) into out (NUL-terminated): invalid bytes and
 * NULs become '?', so that the text can go into JSON and logs. */
static void utf8_clean(const char *in, size_t len, char *out, size_t max)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t i = 0, k = 0;
    if (!max)
        return;
    while (i < len && k + 4 < max) {
        unsigned char c = s[i];
        size_t n = 0;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0x01 && c < 0x80)
            n = 1;
        else if (c >= 0xC2 && c <= 0xDF)
            n = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            n = 3;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        }
        bool ok = n > 0 && i + n <= len;
        for (size_t j = 1; ok && j < n; j++) {
            unsigned char lim_lo = j == 1 ? lo : 0x80, lim_hi = j == 1 ? hi : 0xBF;
            ok = s[i + j] >= lim_lo && s[i + j] <= lim_hi;
        }
        if (!ok) {
            out[k++] = '?';
            i++;
            continue;
        }
        memcpy(out + k, s + i, n);
        k += n;
        i += n;
    }
    out[k] = '\0';
}

/* The last `max` bytes or so of the output, starting on a character. */
static json_t *output_json(const char *out, size_t len)
{
    size_t start = len > RESULT_OUTPUT_MAX ? len - RESULT_OUTPUT_MAX : 0;
    while (start < len && start > 0 && ((unsigned char)out[start] & 0xC0) == 0x80)
        start++;
    char *clean = malloc(RESULT_OUTPUT_MAX + 8);
    if (!clean)
        return json_null();
    utf8_clean(out + start, len - start, clean, RESULT_OUTPUT_MAX + 8);
    json_t *j = json_string(clean);
    free(clean);
    return j ? j : json_null();
}

static json_t *proc_json(const struct proc_result *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "exit_status",
                        r->result == 0 && !r->term_signal ? json_integer(r->exit_status)
                                                          : json_null());
    if (r->term_signal)
        json_object_set_new(o, "signal", json_integer(r->term_signal));
    if (r->result == -ETIMEDOUT)
        json_object_set_new(o, "timed_out", json_true());
    json_object_set_new(o, "duration_ms", json_integer(r->duration_ms));
    json_object_set_new(o, "output", output_json(r->output, r->output_len));
    json_object_set_new(o, "output_bytes", json_integer((json_int_t)r->output_len));
    json_object_set_new(o, "output_truncated",
                        json_boolean(r->truncated || r->output_len > RESULT_OUTPUT_MAX));
    return o;
}

/* "; output: <tail>" (valid UTF-8, one line), or "". */
static void tail_of(const struct proc_result *r, char *out, size_t len)
{
    char raw[DETAIL_TAIL], clean[DETAIL_TAIL];
    proc_output_tail(r->output, r->output_len, raw, sizeof raw);
    utf8_clean(raw, strlen(raw), clean, sizeof clean);
    if (!clean[0]) {
        snprintf(out, len, "%s", r->truncated ? "; output: (truncated)" : "");
        return;
    }
    snprintf(out, len, "; output%s: %s", r->truncated ? " (truncated)" : "", clean);
}

static const char *env_value(struct rb_exec *x, const char *path)
{
    const char *v = json_string_value(rb_ctx_get(x->ctx, path));
    return v ? v : "";
}

static const char *prog_of(json_t *argv_json)
{
    const char *p = json_string_value(json_array_get(argv_json, 0));
    return p ? p : "?";
}

static void start_proc(struct exec_state *s, json_t *argv_json);

/* The check op: exit 0 holds, another exit does not, anything else cannot
 * tell. */
static void checked(struct rb_exec *x, const struct proc_result *r, const char *how,
                    const char *tail)
{
    const char *prog = prog_of(json_object_get(x->params, "check"));
    if (r->term_signal)
        done(x, -EIO, "cannot tell: check %s %s%s", prog, how, tail);
    else
        done(x, r->exit_status == 0 ? 1 : 0, "check %s %s%s", prog, how, tail);
}

static void verified(struct exec_state *s, const struct proc_result *r, const char *how,
                     const char *tail)
{
    struct rb_exec *x = s->x;
    const char *cmd = prog_of(json_object_get(x->params, "command"));
    const char *prog = prog_of(json_object_get(x->params, "check"));
    if (r->term_signal || r->exit_status != 0)
        done(x, -EPROTO, "%s succeeded%s, but then check %s %s%s", cmd, s->command_tail, prog, how,
             tail);
    else
        done(x, 0, "%s succeeded%s; check %s exited 0%s", cmd, s->command_tail, prog, tail);
}

static void commanded(struct exec_state *s, const struct proc_result *r, const char *how,
                      const char *tail)
{
    struct rb_exec *x = s->x;
    const char *prog = prog_of(json_object_get(x->params, "command"));
    json_int_t expect = json_integer_value(json_object_get(x->params, "expect_exit"));
    if (r->term_signal || r->exit_status != expect) {
        if (r->term_signal || expect == 0)
            done(x, -EIO, "%s %s%s", prog, how, tail);
        else
            done(x, -EIO, "%s %s, not %lld%s", prog, how, (long long)expect, tail);
        return;
    }
    json_t *check = json_object_get(x->params, "check");
    if (!check) {
        done(x, 0, "%s %s%s", prog, how, tail);
        return;
    }
    snprintf(s->command_tail, sizeof s->command_tail, " (%s%s)", how, tail);
    s->mode = MODE_VERIFY;
    start_proc(s, check);
}

static void on_proc_done(struct proc *p, const struct proc_result *r, void *arg)
{
    (void)p;
    struct exec_state *s = arg;
    struct rb_exec *x = s->x;
    s->p = NULL;
    if (s->releasing) {
        free(s);
        x->state = NULL;
        rb_exec_released(x);
        return;
    }
    if (x->cancelled)
        return;
    json_t *pj = proc_json(r);
    if (s->mode == MODE_COMMAND) {
        json_object_update(x->result, pj);
        json_decref(pj);
    } else {
        json_object_set_new(x->result, "check", pj);
    }
    const char *prog =
        prog_of(json_object_get(x->params, s->mode == MODE_COMMAND ? "command" : "check"));
    char tail[DETAIL_TAIL + 32], how[64];
    tail_of(r, tail, sizeof tail);
    if (r->result == -ETIMEDOUT) {
        done(x, -ETIMEDOUT, "%s timed out after %lld ms; its process group was killed%s", prog,
             (long long)r->duration_ms, tail);
        return;
    }
    if (r->result < 0) {
        done(x, r->result, "%s: %s", prog, strerror(-r->result));
        return;
    }
    if (r->term_signal)
        snprintf(how, sizeof how, "was killed by signal %d", r->term_signal);
    else
        snprintf(how, sizeof how, "exited %lld", (long long)r->exit_status);
    switch (s->mode) {
    case MODE_CHECK:
        checked(x, r, how, tail);
        return;
    case MODE_VERIFY:
        verified(s, r, how, tail);
        return;
    case MODE_COMMAND:
        commanded(s, r, how, tail);
        return;
    }
}

static void start_proc(struct exec_state *s, json_t *argv_json)
{
    struct rb_exec *x = s->x;
    size_t n = json_array_size(argv_json);
    const char **argv = calloc(n + 1, sizeof *argv);
    if (!argv) {
        done(x, -ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++)
        argv[i] = json_string_value(json_array_get(argv_json, i));
    const char *env[N_ENV + 1];
    for (size_t i = 0; i < N_ENV; i++)
        env[i] = s->env[i];
    env[N_ENV] = NULL;
    snprintf(s->env[N_ENV - 1], sizeof s->env[N_ENV - 1], "TRIAD_OP=%s",
             s->mode == MODE_COMMAND  ? "run"
             : s->mode == MODE_VERIFY ? "verify"
                                      : "check");
    /* What is left of the step's time (the check after the command shares
     * it). */
    uint64_t used = uv_now(x->env->loop) - s->start_ms;
    uint32_t left = used >= s->budget_ms ? 1 : s->budget_ms - (uint32_t)used;
    struct proc_opts o = {
        .argv = argv,
        .env = env,
        .timeout_ms = left,
        .grace_ms = s->grace_ms,
    };
    int rc = n ? proc_start(x->env->loop, &o, on_proc_done, s, &s->p) : -EINVAL;
    free(argv);
    if (rc < 0)
        done(x, rc, "cannot run %s: %s", prog_of(argv_json), strerror(-rc));
}

static struct exec_state *setup(struct rb_exec *x, enum exec_mode mode)
{
    struct exec_state *s = calloc(1, sizeof *s);
    if (!s) {
        done(x, -ENOMEM, "out of memory");
        return NULL;
    }
    s->x = x;
    s->mode = mode;
    x->state = s;
    /* The step's time, less a margin in which the process group is killed
     * (SIGTERM, then SIGKILL after the grace) and our message delivered
     * before the engine's own timeout. */
    int64_t t =
        x->step && x->step->timeout_ms > 0 ? x->step->timeout_ms : x->action->default_timeout_ms;
    int64_t margin = t / 5 < 3000 ? t / 5 : 3000;
    s->budget_ms = (uint32_t)(t - margin > 1 ? t - margin : 1);
    s->grace_ms = (uint32_t)(margin * 2 / 3 > 1 ? margin * 2 / 3 : 1);
    s->start_ms = uv_now(x->env->loop);
    snprintf(s->env[0], sizeof s->env[0], "TRIAD_RUN_ID=%s", x->run_id ? x->run_id : "");
    snprintf(s->env[1], sizeof s->env[1], "TRIAD_EPOCH=%lld", (long long)x->epoch);
    snprintf(s->env[2], sizeof s->env[2], "TRIAD_FROM=%s", env_value(x, "run.from"));
    snprintf(s->env[3], sizeof s->env[3], "TRIAD_TO=%s", env_value(x, "run.to"));
    snprintf(s->env[4], sizeof s->env[4], "TRIAD_STEP=%s",
             x->step && x->step->id ? x->step->id : "");
    return s;
}

static void run(struct rb_exec *x)
{
    struct exec_state *s = setup(x, MODE_COMMAND);
    if (s)
        start_proc(s, json_object_get(x->params, "command"));
}

/* Holds when `check` exits 0; without one, never (the command runs). */
static void check(struct rb_exec *x)
{
    json_t *c = json_object_get(x->params, "check");
    if (!c) {
        done(x, 0, "no check command: the command always runs");
        return;
    }
    struct exec_state *s = setup(x, MODE_CHECK);
    if (s)
        start_proc(s, c);
}

/* The programs are there and executable (nothing is run). */
static void ready(struct rb_exec *x)
{
    static const char *const which[] = { "command", "check" };
    char names[600] = "";
    size_t off = 0;
    for (size_t i = 0; i < 2; i++) {
        json_t *argv = json_object_get(x->params, which[i]);
        if (!argv)
            continue;
        const char *prog = prog_of(argv);
        if (prog[0] != '/') {
            done(x, -EINVAL, "%s %s is not an absolute path", which[i], prog);
            return;
        }
        if (access(prog, X_OK) < 0) {
            int e = errno;
            done(x, -e, "%s %s cannot be executed: %s", which[i], prog, strerror(e));
            return;
        }
        int w = snprintf(names + off, sizeof names - off, "%s%s", off ? " and " : "", prog);
        if (w > 0 && (size_t)w < sizeof names - off)
            off += (size_t)w;
    }
    done(x, 0, "%s executable", names);
}

static void cancel(struct rb_exec *x)
{
    struct exec_state *s = x->state;
    if (s && s->p)
        proc_cancel(s->p);
}

static void release(struct rb_exec *x)
{
    struct exec_state *s = x->state;
    if (s && s->p) {
        /* Still running (a timeout or an abort): killed; freed once reaped. */
        s->releasing = true;
        proc_cancel(s->p);
        return;
    }
    free(s);
    x->state = NULL;
    rb_exec_released(x);
}

/* One argument for a message: quoted when it would not read as one word. */
static void put_arg(struct buf *out, const char *a)
{
    if (*a && !strpbrk(a, " \t\n'\"\\$`;&|<>(){}*?[]#~")) {
        buf_printf(out, "%s", a);
        return;
    }
    buf_printf(out, "'");
    for (const char *p = a; *p; p++) {
        if (*p == '\'')
            buf_printf(out, "'\\''");
        else
            buf_printf(out, "%c", *p);
    }
    buf_printf(out, "'");
}

static void put_argv(struct buf *out, json_t *argv)
{
    for (size_t i = 0; i < json_array_size(argv); i++) {
        if (i)
            buf_printf(out, " ");
        put_arg(out, json_string_value(json_array_get(argv, i)));
    }
}

static void describe(struct rb_exec *x, struct buf *out)
{
    json_int_t expect = json_integer_value(json_object_get(x->params, "expect_exit"));
    json_t *check = json_object_get(x->params, "check");
    buf_printf(out, "run ");
    put_argv(out, json_object_get(x->params, "command"));
    if (expect)
        buf_printf(out, " (success: exit %lld)", (long long)expect);
    if (check) {
        buf_printf(out, "; already done (and verified) when ");
        put_argv(out, check);
        buf_printf(out, " exits 0");
    }
}

const struct rb_action_ops rb_action_exec = {
    .name = "exec",
    .summary = "run a program (argv, no shell) with a timeout",
    .params = params,
    .default_timeout_ms = 60000,
    .validate = validate,
    .describe = describe,
    .check = check,
    .run = run,
    .ready = ready,
    .cancel = cancel,
    .release = release,
    .self_verifying = true,
};
