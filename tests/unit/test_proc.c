/* Unit tests: child processes on the loop (lib/proc): output capture and
 * its cap, environment additions, exit status and signals, the timeout's
 * SIGTERM then SIGKILL of the whole process group, cancel, and spawn errors
 * returned rather than called back. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <uv.h>

#include "lib/proc.h"

#define GUARD_MS 20000

struct ctx {
    uv_loop_t loop;
    uv_timer_t guard;
    int guard_fired;
    int calls;
    struct proc_result r;
    char output[70000];
    struct proc *p;
};

static void on_guard(uv_timer_t *t)
{
    struct ctx *x = t->data;
    x->guard_fired = 1;
    uv_stop(&x->loop);
}

static void ctx_init(struct ctx *x)
{
    memset(x, 0, sizeof *x);
    assert_int_equal(uv_loop_init(&x->loop), 0);
    uv_timer_init(&x->loop, &x->guard);
    x->guard.data = x;
    uv_timer_start(&x->guard, on_guard, GUARD_MS, 0);
    uv_unref((uv_handle_t *)&x->guard);
}

static void ctx_done(struct ctx *x)
{
    uv_close((uv_handle_t *)&x->guard, NULL);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&x->loop), 0);
}

static void on_done(struct proc *p, const struct proc_result *r, void *arg)
{
    struct ctx *x = arg;
    assert_ptr_equal(p, x->p);
    x->calls++;
    x->r = *r;
    size_t n = r->output_len < sizeof x->output - 1 ? r->output_len : sizeof x->output - 1;
    memcpy(x->output, r->output, n);
    x->output[n] = '\0';
    x->r.output = x->output;
    assert_int_equal(strlen(r->output), r->output_len); /* NUL-terminated */
}

/* Runs argv to its end; asserts exactly one callback. */
static void run(struct ctx *x, const struct proc_opts *o)
{
    assert_int_equal(proc_start(&x->loop, o, on_done, x, &x->p), 0);
    assert_int_equal(x->calls, 0); /* never from inside proc_start */
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_false(x->guard_fired);
    assert_int_equal(x->calls, 1);
}

/* Whether pid is gone (or a zombie waiting for a slow init to reap it). */
static int process_gone(int pid)
{
    char path[64], stat[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 1;
    size_t n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = '\0';
    const char *rp = strrchr(stat, ')');
    return rp && (rp[2] == 'Z' || rp[2] == 'X');
}

static int wait_gone(int pid, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        if (process_gone(pid))
            return 1;
        usleep(10000);
    }
    return process_gone(pid);
}

static void test_output_and_exit_status(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    const char *argv[] = { "/bin/sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3", NULL };
    struct proc_opts o = { .argv = argv, .timeout_ms = 5000 };
    run(&x, &o);
    assert_int_equal(x.r.result, 0);
    assert_int_equal(x.r.exit_status, 3);
    assert_int_equal(x.r.term_signal, 0);
    assert_false(x.r.truncated);
    assert_string_equal(x.output, "to-stdout\nto-stderr\n");
    assert_true(x.r.pid > 0);
    assert_true(x.r.duration_ms >= 0 && x.r.duration_ms < 5000);
    ctx_done(&x);
}

static void test_env_additions(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    setenv("TRIAD_TEST_KEEP", "kept", 1);
    setenv("TRIAD_TEST_OVER", "old", 1);
    const char *argv[] = { "/bin/sh", "-c",
                           "echo $TRIAD_TEST_KEEP $TRIAD_TEST_OVER $TRIAD_TEST_NEW", NULL };
    const char *env[] = { "TRIAD_TEST_OVER=new", "TRIAD_TEST_NEW=added", NULL };
    struct proc_opts o = { .argv = argv, .env = env, .timeout_ms = 5000 };
    run(&x, &o);
    assert_int_equal(x.r.exit_status, 0);
    assert_string_equal(x.output, "kept new added\n");
    unsetenv("TRIAD_TEST_KEEP");
    unsetenv("TRIAD_TEST_OVER");
    ctx_done(&x);
}

static void test_stdin_is_null_and_cwd(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    /* cat of /dev/null ends at once; a terminal or pipe would hang. */
    const char *argv[] = { "/bin/sh", "-c", "cat; pwd", NULL };
    struct proc_opts o = { .argv = argv, .cwd = "/tmp", .timeout_ms = 5000 };
    run(&x, &o);
    assert_int_equal(x.r.result, 0);
    assert_string_equal(x.output, "/tmp\n");
    ctx_done(&x);
}

/* 2 MB of output against a 4 KiB cap: the first 4 KiB are kept, the rest
 * read and dropped, and the child is never blocked (it exits 0 quickly). */
static void test_output_cap(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    const char *argv[] = { "/bin/sh", "-c", "yes abcdefgh | head -c 2000000; echo done >&2", NULL };
    struct proc_opts o = { .argv = argv, .timeout_ms = 10000, .max_output = 4096 };
    run(&x, &o);
    assert_int_equal(x.r.result, 0);
    assert_int_equal(x.r.exit_status, 0);
    assert_true(x.r.truncated);
    assert_int_equal(x.r.output_len, 4096);
    assert_memory_equal(x.output, "abcdefgh\nabcdefgh\n", 18);
    assert_null(strstr(x.output, "done"));
    ctx_done(&x);
}

static void test_default_cap_is_64k(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    const char *argv[] = { "/bin/sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x", NULL };
    struct proc_opts o = { .argv = argv, .timeout_ms = 10000 };
    run(&x, &o);
    assert_int_equal(x.r.exit_status, 0);
    assert_true(x.r.truncated);
    assert_int_equal(x.r.output_len, PROC_DEFAULT_MAX_OUTPUT);
    ctx_done(&x);
}

static void test_timeout_sigterm(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    const char *argv[] = { "/bin/sleep", "30", NULL };
    struct proc_opts o = { .argv = argv, .timeout_ms = 200 };
    uint64_t t0 = uv_hrtime();
    run(&x, &o);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(x.r.result, -ETIMEDOUT);
    assert_int_equal(x.r.term_signal, SIGTERM);
    assert_int_equal(x.r.exit_status, -1);
    assert_true(ms >= 190 && ms < 2000);
    assert_true(process_gone(x.r.pid));
    ctx_done(&x);
}

/* A program that ignores SIGTERM is killed after the grace, and so is the
 * child it started (same process group). */
static void test_timeout_sigkill_whole_group(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    const char *argv[] = { "/bin/sh", "-c", "trap '' TERM; /bin/sleep 30 & echo $!; wait", NULL };
    struct proc_opts o = { .argv = argv, .timeout_ms = 300, .grace_ms = 300 };
    uint64_t t0 = uv_hrtime();
    run(&x, &o);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(x.r.result, -ETIMEDOUT);
    assert_int_equal(x.r.term_signal, SIGKILL);
    assert_true(ms >= 590 && ms < 3000);
    int grandchild = (int)strtol(x.output, NULL, 10);
    assert_true(grandchild > 0);
    assert_true(wait_gone(grandchild, 3000));
    ctx_done(&x);
}

static void on_cancel_timer(uv_timer_t *t)
{
    struct ctx *x = t->data;
    proc_cancel(x->p);
    proc_cancel(x->p); /* twice is harmless */
    uv_close((uv_handle_t *)t, NULL);
}

static void test_cancel(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    const char *argv[] = { "/bin/sleep", "30", NULL };
    struct proc_opts o = { .argv = argv, .timeout_ms = 10000 };
    uv_timer_t t;
    uv_timer_init(&x.loop, &t);
    t.data = &x;
    uv_timer_start(&t, on_cancel_timer, 100, 0);
    run(&x, &o);
    assert_int_equal(x.r.result, -ECANCELED);
    assert_int_equal(x.r.term_signal, SIGTERM);
    ctx_done(&x);
}

/* The program exits but a background child keeps the pipe open: the
 * result still comes right after the drain period, with what was written. */
static void test_grandchild_holding_pipe(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    const char *argv[] = { "/bin/sh", "-c", "/bin/sleep 3 & echo $!", NULL };
    struct proc_opts o = { .argv = argv, .timeout_ms = 10000 };
    uint64_t t0 = uv_hrtime();
    run(&x, &o);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(x.r.result, 0);
    assert_int_equal(x.r.exit_status, 0);
    assert_true(ms < 1500);
    int grandchild = (int)strtol(x.output, NULL, 10);
    assert_true(grandchild > 0);
    kill(grandchild, SIGKILL);
    ctx_done(&x);
}

static void test_spawn_errors_returned(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    const char *rel[] = { "sh", "-c", "true", NULL };
    const char *missing[] = { "/nonexistent/triad-test-program", NULL };
    const char *ok[] = { "/bin/true", NULL };
    const char *bad_env[] = { "NOEQUALS", NULL };
    struct proc_opts o = { .argv = rel };
    assert_int_equal(proc_start(&x.loop, &o, on_done, &x, &x.p), -EINVAL);
    o.argv = missing;
    assert_int_equal(proc_start(&x.loop, &o, on_done, &x, &x.p), -ENOENT);
    o.argv = ok;
    o.env = bad_env;
    assert_int_equal(proc_start(&x.loop, &o, on_done, &x, &x.p), -EINVAL);
    o.argv = NULL;
    assert_int_equal(proc_start(&x.loop, &o, on_done, &x, &x.p), -EINVAL);
    uv_run(&x.loop, UV_RUN_DEFAULT);
    assert_int_equal(x.calls, 0);
    ctx_done(&x);
}

static void test_killed_by_signal(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x);
    const char *argv[] = { "/bin/sh", "-c", "kill -USR1 $$", NULL };
    struct proc_opts o = { .argv = argv, .timeout_ms = 5000 };
    run(&x, &o);
    assert_int_equal(x.r.result, 0);
    assert_int_equal(x.r.term_signal, SIGUSR1);
    assert_int_equal(x.r.exit_status, -1);
    ctx_done(&x);
}

static void test_several_at_once(void **state)
{
    (void)state;
    struct ctx x[4];
    uv_loop_t *loop;
    ctx_init(&x[0]);
    loop = &x[0].loop;
    const char *argv[] = { "/bin/sh", "-c", "sleep 0.1; echo $0", NULL };
    for (int i = 1; i < 4; i++)
        memset(&x[i], 0, sizeof x[i]);
    for (int i = 0; i < 4; i++) {
        struct proc_opts o = { .argv = argv, .timeout_ms = 5000 };
        assert_int_equal(proc_start(loop, &o, on_done, &x[i], &x[i].p), 0);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(x[i].calls, 1);
        assert_string_equal(x[i].output, "/bin/sh\n");
    }
    ctx_done(&x[0]);
}

static void test_output_tail(void **state)
{
    (void)state;
    char out[16];
    proc_output_tail("", 0, out, sizeof out);
    assert_string_equal(out, "");
    proc_output_tail("ok\n", 3, out, sizeof out);
    assert_string_equal(out, "ok");
    proc_output_tail("a\nb\tc\n\n", 7, out, sizeof out);
    assert_string_equal(out, "a b c");
    const char *long_out = "0123456789abcdefghijklmnopqrstuvwxyz\n";
    proc_output_tail(long_out, strlen(long_out), out, sizeof out);
    assert_string_equal(out, "...opqrstuvwxyz");
    assert_int_equal(strlen(out), sizeof out - 1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_output_and_exit_status),
        cmocka_unit_test(test_env_additions),
        cmocka_unit_test(test_stdin_is_null_and_cwd),
        cmocka_unit_test(test_output_cap),
        cmocka_unit_test(test_default_cap_is_64k),
        cmocka_unit_test(test_timeout_sigterm),
        cmocka_unit_test(test_timeout_sigkill_whole_group),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_grandchild_holding_pipe),
        cmocka_unit_test(test_spawn_errors_returned),
        cmocka_unit_test(test_killed_by_signal),
        cmocka_unit_test(test_several_at_once),
        cmocka_unit_test(test_output_tail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
