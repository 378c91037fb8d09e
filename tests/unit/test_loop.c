/* Unit tests: the loop wrapper's signals (graceful stop, reload) and the
 * logger's format and secret redaction. */
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

#include <sys/socket.h>
#include <sys/un.h>

#include "lib/log.h"
#include "lib/loop.h"
#include "lib/sdnotify.h"

struct counts {
    int stops, reloads, ticks;
    uv_timer_t work; /* stands for the daemon's own handles */
    uv_timer_t guard;
};

static void on_stop(struct loop *l, int signum)
{
    struct counts *c = l->data;
    assert_int_equal(signum, SIGTERM);
    c->stops++;
    uv_close((uv_handle_t *)&c->work, NULL);
    uv_close((uv_handle_t *)&c->guard, NULL);
    loop_close(l);
}

static void on_reload(struct loop *l, int signum)
{
    struct counts *c = l->data;
    assert_int_equal(signum, SIGHUP);
    c->reloads++;
    /* Reload handled: now ask for a stop, as an operator would. */
    kill(getpid(), SIGTERM);
}

static void on_work(uv_timer_t *t)
{
    struct counts *c = t->data;
    if (++c->ticks == 3)
        kill(getpid(), SIGHUP);
}

static void on_guard(uv_timer_t *t)
{
    (void)t;
    fail_msg("the loop did not stop on SIGTERM");
}

static void test_signals(void **state)
{
    (void)state;
    uv_loop_t uv;
    struct loop l;
    struct counts c = { 0 };
    assert_int_equal(uv_loop_init(&uv), 0);
    assert_int_equal(loop_init(&l, &uv, on_stop, on_reload, 5000), 0);
    l.data = &c;
    uv_timer_init(&uv, &c.work);
    c.work.data = &c;
    uv_timer_start(&c.work, on_work, 10, 10);
    uv_timer_init(&uv, &c.guard);
    uv_timer_start(&c.guard, on_guard, 5000, 0);
    int64_t start = loop_now_ms();
    uv_run(&uv, UV_RUN_DEFAULT);
    assert_int_equal(c.reloads, 1);
    assert_int_equal(c.stops, 1);
    assert_true(c.ticks >= 3);
    assert_true(loop_now_ms() - start < 5000);
    assert_int_equal(loop_close_all(&uv), 0);
}

static char *capture(void (*fn)(void))
{
    char path[] = "/tmp/triad-logtest-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    log_set_fd(fd);
    fn();
    log_set_fd(2);
    char *buf = calloc(1, 16384);
    assert_true(pread(fd, buf, 16383, 0) >= 0);
    close(fd);
    unlink(path);
    return buf;
}

static void emit_lines(void)
{
    log_ev(LOG_WARN, "+sdown", "site is down", { "site", "dc1" }, { "probe", "pg one" });
    log_ev(LOG_INFO, "connect", NULL, { "password", "hunter2" },
           { "conninfo", "host=x password=hunter2" });
    log_ev(LOG_DEBUG, "hidden", "debug is below the default level");
    log_msgf(LOG_ERROR, NULL, "quote \" and newline\n%d", 42);
}

static void test_log_format(void **state)
{
    (void)state;
    char *out = capture(emit_lines);
    assert_non_null(strstr(out, "level=warn event=+sdown site=dc1 probe=\"pg one\" msg=\"site is "
                                "down\"\n"));
    assert_null(strstr(out, "hunter2"));
    assert_non_null(strstr(out, "password=(redacted) conninfo=(redacted)"));
    assert_null(strstr(out, "hidden"));
    assert_non_null(strstr(out, "msg=\"quote \\\" and newline\\n42\""));
    /* One event per line: exactly three lines. */
    int lines = 0;
    for (char *p = out; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 3);
    free(out);
    log_set_json(1);
    out = capture(emit_lines);
    log_set_json(0);
    assert_non_null(strstr(out, "\"event\":\"+sdown\",\"site\":\"dc1\""));
    assert_null(strstr(out, "hunter2"));
    free(out);
}

static void test_sdnotify(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(sdnotify("READY=1"), 0); /* no systemd: nothing to do */
    char path[] = "/tmp/triad-notify-XXXXXX";
    int tmp = mkstemp(path);
    close(tmp);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(sdnotify("READY=1"), 0);
    char got[64] = "";
    assert_int_equal(recv(fd, got, sizeof got - 1, 0), 7);
    assert_string_equal(got, "READY=1");
    setenv("WATCHDOG_USEC", "10000000", 1);
    unsetenv("WATCHDOG_PID");
    assert_int_equal(sdnotify_watchdog_ms(), 10000);
    setenv("WATCHDOG_PID", "1", 1); /* for another process */
    assert_int_equal(sdnotify_watchdog_ms(), 0);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    close(fd);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signals),
        cmocka_unit_test(test_log_format),
        cmocka_unit_test(test_sdnotify),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
