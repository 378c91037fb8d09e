/* Unit tests: the runtime of the exec action (check, run with its
 * verification, ready, describe, cancel) with small shell programs: the
 * run's environment, exit statuses, a program that outlives the step (its
 * whole process group killed), output over the cap and output that is not
 * UTF-8, programs that are not there. */
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
#include <jansson.h>
#include <uv.h>

#include "acttest.h"
#include "standin.h"
#include "testcerts.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/proc.h"
#include "runbooks/runbook.h"

static char dir[256];
static json_t *ctx;

static void path(char *out, const char *name)
{
    snprintf(out, 300, "%s/%s", dir, name);
}

static int suite_setup(void **state)
{
    (void)state;
    log_set_level(LOG_ERROR);
    if (testcerts_dir(dir, sizeof dir) < 0)
        return -1;
    json_t *cfg = json_pack("{s:{s:{},s:{},s:{}}}", "sites", "dc1", "dc2", "dc3");
    ctx = rb_context(cfg, "run-7", 5, "dc1", "dc2", "dc1-loss");
    json_decref(cfg);
    return ctx ? 0 : -1;
}

static int suite_teardown(void **state)
{
    (void)state;
    json_decref(ctx);
    testcerts_rmdir(dir);
    return 0;
}

struct h {
    uv_loop_t loop;
    struct rb_env env;
    struct acttest t;
};

static void h_init(struct h *h)
{
    memset(h, 0, sizeof *h);
    assert_int_equal(uv_loop_init(&h->loop), 0);
    h->env = (struct rb_env){ .loop = &h->loop, .site = "dc2" };
    h->t.env = &h->env;
    h->t.ctx = ctx;
    h->t.epoch = 5;
    h->t.run_id = "run-7";
    h->t.step_id = "fix-dns";
}

static void h_done(struct h *h)
{
    acttest_done(&h->t);
    assert_int_equal(uv_loop_close(&h->loop), 0);
}

/* {"command": ["/bin/sh", "-c", script], "check": [...]?, ...extra} */
static json_t *sh(const char *script, const char *check, json_t *extra)
{
    json_t *p = json_pack("{s:[s,s,s]}", "command", "/bin/sh", "-c", script);
    if (check)
        json_object_set_new(p, "check", json_pack("[s,s,s]", "/bin/sh", "-c", check));
    if (extra) {
        json_object_update(p, extra);
        json_decref(extra);
    }
    return p;
}

static int op(struct h *h, enum rb_op o, int64_t timeout_ms, json_t *params)
{
    int calls = acttest_op(&h->t, "exec", o, timeout_ms, params);
    json_decref(params);
    print_message("# exec %s: %d %s (%llu ms)\n",
                  o == RB_OP_RUN     ? "run"
                  : o == RB_OP_CHECK ? "check"
                                     : "ready",
                  h->t.status, h->t.detail, (unsigned long long)h->t.ms);
    assert_false(h->t.guard_fired);
    assert_false(h->t.release_hung);
    assert_int_equal(calls, 1);
    /* Whatever the program wrote, the detail is valid UTF-8. */
    json_t *d = json_string(h->t.detail);
    assert_non_null(d);
    json_decref(d);
    return h->t.status;
}

static bool has(const char *hay, const char *needle)
{
    if (hay && strstr(hay, needle))
        return true;
    print_message("# '%s' not in '%s'\n", needle, hay ? hay : "(null)");
    return false;
}

static json_int_t int_of(struct h *h, const char *p)
{
    json_t *v = acttest_get(&h->t, p);
    if (!json_is_integer(v))
        fail_msg("result has no integer at %s", p);
    return json_integer_value(v);
}

static const char *str_of(struct h *h, const char *p)
{
    return json_string_value(acttest_get(&h->t, p));
}

static int gone(int pid)
{
    char p[64], stat[512];
    snprintf(p, sizeof p, "/proc/%d/stat", pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return 1;
    size_t n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = '\0';
    const char *rp = strrchr(stat, ')');
    return rp && (rp[2] == 'Z' || rp[2] == 'X');
}

/* A process that is not our child is reaped by someone else: give it a
 * moment to be gone after its group was signalled. */
static int goes(int pid)
{
    for (int i = 0; i < 100 && !gone(pid); i++)
        usleep(10 * 1000);
    return gone(pid);
}

static int read_pid(const char *file, int which)
{
    FILE *f = fopen(file, "r");
    int pid = 0;
    for (int i = 0; f && i <= which; i++) {
        if (fscanf(f, "%d", &pid) != 1)
            pid = 0;
    }
    if (f)
        fclose(f);
    return pid;
}

/* ---- run ---- */

static void test_run_env_and_output(void **state)
{
    (void)state;
    struct h h;
    h_init(&h);
    assert_int_equal(op(&h, RB_OP_RUN, 5000,
                        sh("echo \"id=$TRIAD_RUN_ID epoch=$TRIAD_EPOCH from=$TRIAD_FROM "
                           "to=$TRIAD_TO step=$TRIAD_STEP op=$TRIAD_OP\"; echo warn >&2",
                           NULL, NULL)),
                     0);
    assert_true(has(h.t.detail, "/bin/sh exited 0; output: id=run-7 epoch=5 from=dc1 to=dc2 "
                                "step=fix-dns op=run warn"));
    assert_int_equal(int_of(&h, "exit_status"), 0);
    assert_true(has(str_of(&h, "output"), "op=run\nwarn\n"));
    assert_int_equal(int_of(&h, "output_bytes"), (json_int_t)strlen(str_of(&h, "output")));
    assert_true(json_is_false(acttest_get(&h.t, "output_truncated")));
    assert_null(acttest_get(&h.t, "check"));
    h_done(&h);
}

static void test_run_exit_status(void **state)
{
    (void)state;
    struct h h;
    h_init(&h);
    assert_int_equal(op(&h, RB_OP_RUN, 5000, sh("echo no route to host >&2; exit 3", NULL, NULL)),
                     -EIO);
    assert_string_equal(h.t.detail, "/bin/sh exited 3; output: no route to host");
    assert_int_equal(int_of(&h, "exit_status"), 3);
    /* An expected non-zero status is success... */
    assert_int_equal(
        op(&h, RB_OP_RUN, 5000, sh("exit 3", NULL, json_pack("{s:i}", "expect_exit", 3))), 0);
    assert_string_equal(h.t.detail, "/bin/sh exited 3");
    /* ...and then 0 is not. */
    assert_int_equal(
        op(&h, RB_OP_RUN, 5000, sh("true", NULL, json_pack("{s:i}", "expect_exit", 3))), -EIO);
    assert_string_equal(h.t.detail, "/bin/sh exited 0, not 3");
    /* Killed by a signal. */
    assert_int_equal(op(&h, RB_OP_RUN, 5000, sh("kill -9 $$", NULL, NULL)), -EIO);
    assert_true(has(h.t.detail, "was killed by signal 9"));
    assert_int_equal(int_of(&h, "signal"), 9);
    assert_true(json_is_null(acttest_get(&h.t, "exit_status")));
    h_done(&h);
}

/* The step's time runs out: the program and what it started (its whole
 * process group) are killed, before the engine's own timeout. */
static void test_run_timeout_kills_group(void **state)
{
    (void)state;
    struct h h;
    char pids[300], script[700];
    path(pids, "pids");
    snprintf(script, sizeof script,
             "echo $$ > %s; /bin/sleep 30 & echo $! >> %s; echo started; wait", pids, pids);
    h_init(&h);
    assert_int_equal(op(&h, RB_OP_RUN, 1000, sh(script, NULL, NULL)), -ETIMEDOUT);
    assert_true(has(h.t.detail, "/bin/sh timed out after "));
    assert_true(has(h.t.detail, "ms; its process group was killed; output: started"));
    assert_true(h.t.ms >= 750 && h.t.ms < 1000);
    assert_true(json_is_true(acttest_get(&h.t, "timed_out")));
    int sh_pid = read_pid(pids, 0), sleep_pid = read_pid(pids, 1);
    assert_true(sh_pid > 0 && sleep_pid > 0);
    assert_true(gone(sh_pid)); /* our child: reaped before the callback */
    assert_true(goes(sleep_pid));
    unlink(pids);
    h_done(&h);
}

/* Aborted (rb_exec_cancel), or forgotten by an engine that moved on: the
 * program is killed and reaped before the loop ends either way. */
static void test_run_cancel(void **state)
{
    (void)state;
    struct h h;
    char pids[300], script[600];
    path(pids, "cancel-pids");
    snprintf(script, sizeof script, "echo $$ > %s; exec /bin/sleep 30", pids);
    h_init(&h);
    h.t.cancel_after_ms = 200;
    assert_int_equal(op(&h, RB_OP_RUN, 10000, sh(script, NULL, NULL)), -ECANCELED);
    assert_true(h.t.ms < 1000);
    int pid = read_pid(pids, 0);
    assert_true(pid > 0);
    assert_true(gone(pid));
    unlink(pids);
    h.t.forget = true;
    json_t *p = sh(script, NULL, NULL);
    assert_int_equal(acttest_op(&h.t, "exec", RB_OP_RUN, 10000, p), 0);
    json_decref(p);
    assert_false(h.t.release_hung);
    assert_true(h.t.total_ms < 3000);
    pid = read_pid(pids, 0);
    assert_true(pid > 0);
    assert_true(gone(pid));
    unlink(pids);
    h_done(&h);
}

/* More output than the cap, and bytes that are not UTF-8. */
static void test_run_output_cap(void **state)
{
    (void)state;
    struct h h;
    h_init(&h);
    assert_int_equal(op(&h, RB_OP_RUN, 10000,
                        sh("i=0; while [ $i -lt 2000 ]; do echo \"line $i of a long output, "
                           "padded to about fifty bytes\"; i=$((i+1)); done; echo the end",
                           NULL, NULL)),
                     0);
    assert_int_equal(int_of(&h, "output_bytes"), PROC_DEFAULT_MAX_OUTPUT);
    assert_true(json_is_true(acttest_get(&h.t, "output_truncated")));
    assert_true(strlen(str_of(&h, "output")) <= 4096);
    assert_true(has(h.t.detail, "exited 0; output (truncated): "));
    assert_true(strlen(h.t.detail) < 300);

    assert_int_equal(op(&h, RB_OP_RUN, 5000,
                        sh("printf 'caf\\303\\251 \\377\\376 half \\342\\202'", NULL, NULL)),
                     0);
    assert_string_equal(str_of(&h, "output"), "caf\xc3\xa9 ?? half ??");
    assert_true(has(h.t.detail, "output: caf\xc3\xa9 ?? half ??"));
    h_done(&h);
}

/* ---- check, and the verification after a run ---- */

static void test_check(void **state)
{
    (void)state;
    struct h h;
    char marker[300], test[400], make[400];
    path(marker, "applied");
    snprintf(test, sizeof test, "echo op=$TRIAD_OP; test -e %s", marker);
    snprintf(make, sizeof make, "touch %s && echo applied", marker);
    unlink(marker);
    h_init(&h);
    /* Without a check, nothing is known: the command runs. */
    assert_int_equal(op(&h, RB_OP_CHECK, 5000, sh("true", NULL, NULL)), 0);
    assert_true(has(h.t.detail, "no check command"));
    /* Not done yet; the run does it and the check verifies it. */
    assert_int_equal(op(&h, RB_OP_CHECK, 5000, sh(make, test, NULL)), 0);
    assert_string_equal(h.t.detail, "check /bin/sh exited 1; output: op=check");
    assert_int_equal(int_of(&h, "check.exit_status"), 1);
    assert_int_equal(op(&h, RB_OP_RUN, 5000, sh(make, test, NULL)), 0);
    assert_string_equal(h.t.detail, "/bin/sh succeeded (exited 0; output: applied); check /bin/sh "
                                    "exited 0; output: op=verify");
    assert_int_equal(int_of(&h, "exit_status"), 0);
    assert_int_equal(int_of(&h, "check.exit_status"), 0);
    /* Done now: the step would be skipped. */
    assert_int_equal(op(&h, RB_OP_CHECK, 5000, sh(make, test, NULL)), 1);
    /* A check that cannot tell. */
    assert_int_equal(op(&h, RB_OP_CHECK, 5000, sh("true", "kill -9 $$", NULL)), -EIO);
    assert_true(has(h.t.detail, "cannot tell: check /bin/sh was killed by signal 9"));
    assert_int_equal(op(&h, RB_OP_CHECK, 1000, sh("true", "exec /bin/sleep 30", NULL)), -ETIMEDOUT);
    unlink(marker);
    h_done(&h);
}

static void test_run_not_verified(void **state)
{
    (void)state;
    struct h h;
    char marker[300], check[400];
    path(marker, "check-ran");
    snprintf(check, sizeof check, "touch %s; echo still primary; exit 1", marker);
    unlink(marker);
    h_init(&h);
    /* The command succeeds but its outcome does not hold. */
    assert_int_equal(op(&h, RB_OP_RUN, 5000, sh("echo done", check, NULL)), -EPROTO);
    assert_string_equal(h.t.detail, "/bin/sh succeeded (exited 0; output: done), but then check "
                                    "/bin/sh exited 1; output: still primary");
    assert_int_equal(access(marker, F_OK), 0);
    unlink(marker);
    /* A failed command is not verified at all. */
    assert_int_equal(op(&h, RB_OP_RUN, 5000, sh("exit 2", check, NULL)), -EIO);
    assert_int_equal(access(marker, F_OK), -1);
    assert_null(acttest_get(&h.t, "check"));
    /* The check shares what is left of the step's time. */
    assert_int_equal(op(&h, RB_OP_RUN, 1500, sh("/bin/sleep 0.5", "exec /bin/sleep 30", NULL)),
                     -ETIMEDOUT);
    assert_true(h.t.ms >= 1100 && h.t.ms < 1500);
    h_done(&h);
}

/* ---- programs that are not there ---- */

static void test_missing_programs(void **state)
{
    (void)state;
    struct h h;
    h_init(&h);
    json_t *p = json_pack("{s:[s]}", "command", "/nonexistent/failover-hook");
    assert_int_equal(op(&h, RB_OP_RUN, 5000, json_incref(p)), -ENOENT);
    assert_true(has(h.t.detail, "cannot run /nonexistent/failover-hook"));
    assert_int_equal(op(&h, RB_OP_READY, 5000, p), -ENOENT);
    assert_true(has(h.t.detail, "command /nonexistent/failover-hook cannot be executed"));
    char plain[300];
    path(plain, "not-a-program");
    assert_int_equal(standin_write(plain, "#!/bin/sh\n"), 0);
    p = json_pack("{s:[s],s:[s]}", "command", "/bin/true", "check", plain);
    assert_int_equal(op(&h, RB_OP_READY, 5000, p), -EACCES);
    assert_true(has(h.t.detail, "cannot be executed: Permission denied"));
    unlink(plain);
    p = json_pack("{s:[s],s:[s]}", "command", "/bin/true", "check", "/bin/false");
    assert_int_equal(op(&h, RB_OP_READY, 5000, p), 0);
    assert_string_equal(h.t.detail, "/bin/true and /bin/false executable");
    p = json_pack("{s:[s]}", "command", "relative/hook");
    assert_int_equal(op(&h, RB_OP_RUN, 5000, p), -EINVAL);
    h_done(&h);
}

static void test_describe(void **state)
{
    (void)state;
    struct h h;
    struct buf b;
    h_init(&h);
    struct rb_step step = { .id = "s", .action = rb_action_find("exec"), .timeout_ms = 60000 };
    json_t *p =
        json_pack("{s:[s,s,s,s],s:i,s:[s,s]}", "command", "/usr/local/bin/hook", "--to", "dc2",
                  "it's here", "expect_exit", 2, "check", "/usr/local/bin/done?", "dc2");
    buf_init(&b, 4096);
    rb_exec_describe(&h.env, &step, p, ctx, &b);
    assert_string_equal(b.data,
                        "run /usr/local/bin/hook --to dc2 'it'\\''s here' (success: exit 2); "
                        "already done (and verified) when '/usr/local/bin/done?' dc2 exits "
                        "0");
    buf_free(&b);
    json_decref(p);
    h_done(&h);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_env_and_output),
        cmocka_unit_test(test_run_exit_status),
        cmocka_unit_test(test_run_timeout_kills_group),
        cmocka_unit_test(test_run_cancel),
        cmocka_unit_test(test_run_output_cap),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_run_not_verified),
        cmocka_unit_test(test_missing_programs),
        cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, suite_setup, suite_teardown);
}
