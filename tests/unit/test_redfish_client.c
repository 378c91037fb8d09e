/* Unit tests: the Redfish client (lib/redfish_client) against the lab's BMC
 * stand-in (tests/fixtures/bmc_standin.py) on 127.0.0.1 with throwaway
 * certificates. The stand-in's PostgreSQL hooks point at nothing here: its
 * ForceOff finds no postmaster and only records the power state, and its
 * On command is /bin/true. */
#include <errno.h>
#include <fcntl.h>
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

#include "standin.h"
#include "testcerts.h"
#include "lib/http_client.h"
#include "lib/log.h"
#include "lib/redfish_client.h"

#define GUARD_MS 20000
#define PASSWORD "s3cret-bmc-pass"

static char dir[256];
static char ca[300], other_ca[300], srv_crt[300], srv_key[300], creds[300], bad_creds[300];
static char fault[300], power[300], url[64];
static pid_t bmc_pid;

static void path(char *out, const char *name)
{
    snprintf(out, 300, "%s/%s", dir, name);
}

static int suite_setup(void **state)
{
    (void)state;
    char pgdata[300], log[300];
    if (testcerts_dir(dir, sizeof dir) < 0 || testcerts_ca(dir, "ca") < 0 ||
        testcerts_ca(dir, "other") < 0 ||
        testcerts_leaf(dir, "ca", "bmc", "localhost", "localhost,IP:127.0.0.1") < 0)
        return -1;
    path(ca, "ca-ca.pem");
    path(other_ca, "other-ca.pem");
    path(srv_crt, "bmc.pem");
    path(srv_key, "bmc.key");
    path(creds, "bmc-credentials");
    path(bad_creds, "bad-credentials");
    path(fault, "bmc-fault");
    path(power, "bmc-power");
    path(pgdata, "no-pgdata");
    path(log, "bmc.log");
    if (standin_write(creds, "admin:" PASSWORD "\n") < 0 ||
        standin_write(bad_creds, "admin:wrong\n") < 0)
        return -1;
    int port = standin_free_port();
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(url, sizeof url, "https://127.0.0.1:%d", port);
    const char *args[] = { "--site",       "dc1",       "--listen",
                           listen,         "--cert",    srv_crt,
                           "--key",        srv_key,     "--credentials-file",
                           creds,          "--pgdata",  pgdata,
                           "--power-file", power,       "--on-cmd",
                           "/bin/true",    "--off-cmd", "/bin/true",
                           "--fault-file", fault,       NULL };
    bmc_pid = standin_start("tests/fixtures/bmc_standin.py", args, port, log);
    return bmc_pid > 0 ? 0 : -1;
}

static int suite_teardown(void **state)
{
    (void)state;
    standin_stop(bmc_pid);
    testcerts_rmdir(dir);
    http_global_cleanup();
    return 0;
}

struct ctx {
    uv_loop_t loop;
    struct http_client *http;
    struct redfish_client *rf;
    uv_timer_t guard;
    int guard_fired;
    int calls;
    int status;
    long http_status;
    char detail[REDFISH_DETAIL_MAX];
    char power[32];
    char target[256];
    int has_system;
};

static void on_guard(uv_timer_t *t)
{
    struct ctx *x = t->data;
    x->guard_fired = 1;
    uv_stop(&x->loop);
}

static void ctx_init(struct ctx *x, const char *cred_file, const char *ca_file)
{
    char err[256];
    memset(x, 0, sizeof *x);
    assert_int_equal(uv_loop_init(&x->loop), 0);
    assert_int_equal(http_client_new(&x->loop, &x->http), 0);
    uv_timer_init(&x->loop, &x->guard);
    x->guard.data = x;
    uv_timer_start(&x->guard, on_guard, GUARD_MS, 0);
    uv_unref((uv_handle_t *)&x->guard);
    struct redfish_config cfg = { .url = url, .credentials_file = cred_file, .ca_file = ca_file };
    int rc = redfish_client_new(x->http, &cfg, &x->rf, err, sizeof err);
    if (rc < 0)
        fail_msg("redfish_client_new: %s", err);
}

static void ctx_done(struct ctx *x)
{
    redfish_client_free(x->rf);
    http_client_close(x->http, NULL, NULL);
    uv_close((uv_handle_t *)&x->guard, NULL);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&x->loop), 0);
}

static void on_result(struct redfish_request *req, const struct redfish_result *r, void *arg)
{
    (void)req;
    struct ctx *x = arg;
    x->calls++;
    x->status = r->status;
    x->http_status = r->http_status;
    snprintf(x->detail, sizeof x->detail, "%s", r->detail);
    x->has_system = r->system != NULL;
    x->power[0] = x->target[0] = '\0';
    if (r->system) {
        snprintf(x->power, sizeof x->power, "%s", r->system->power_state);
        snprintf(x->target, sizeof x->target, "%s", r->system->reset_target);
    }
}

static void wait_result(struct ctx *x, int rc)
{
    if (rc < 0)
        fail_msg("not started: %s", redfish_client_error(x->rf));
    int before = x->calls;
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_false(x->guard_fired);
    assert_int_equal(x->calls, before + 1);
}

static void get_system(struct ctx *x, const char *sys)
{
    wait_result(x, redfish_get_system(x->rf, sys, on_result, x, NULL));
}

static void reset(struct ctx *x, const char *type)
{
    wait_result(x, redfish_reset(x->rf, "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset", type,
                                 on_result, x, NULL));
}

static void test_get_system(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x, creds, ca);
    get_system(&x, REDFISH_DEFAULT_SYSTEM);
    assert_int_equal(x.status, 0);
    assert_int_equal(x.http_status, 200);
    assert_true(x.has_system);
    assert_string_equal(x.power, "On");
    assert_string_equal(x.target, "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset");
    ctx_done(&x);
}

static void test_force_off_and_on(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x, creds, ca);
    reset(&x, "ForceOff");
    assert_int_equal(x.status, 0);
    assert_int_equal(x.http_status, 204);
    assert_false(x.has_system);
    get_system(&x, REDFISH_DEFAULT_SYSTEM);
    assert_string_equal(x.power, "Off");
    reset(&x, "On");
    assert_int_equal(x.status, 0);
    get_system(&x, REDFISH_DEFAULT_SYSTEM);
    assert_string_equal(x.power, "On");
    ctx_done(&x);
}

static void test_bad_credentials_401(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x, bad_creds, ca);
    get_system(&x, REDFISH_DEFAULT_SYSTEM);
    assert_int_equal(x.status, -EACCES);
    assert_int_equal(x.http_status, 401);
    assert_non_null(strstr(x.detail, "insufficient privileges"));
    ctx_done(&x);
}

/* The credentials file is read at each request. */
static void test_credentials_reread(void **state)
{
    (void)state;
    struct ctx x;
    char rot[300];
    path(rot, "rotating-credentials");
    assert_int_equal(standin_write(rot, "admin:old-password"), 0);
    ctx_init(&x, rot, ca);
    get_system(&x, REDFISH_DEFAULT_SYSTEM);
    assert_int_equal(x.status, -EACCES);
    assert_int_equal(standin_write(rot, "admin:" PASSWORD), 0);
    get_system(&x, REDFISH_DEFAULT_SYSTEM);
    assert_int_equal(x.status, 0);
    assert_int_equal(standin_write(rot, "no-colon-here"), 0);
    assert_int_equal(redfish_get_system(x.rf, REDFISH_DEFAULT_SYSTEM, on_result, &x, NULL),
                     -EINVAL);
    assert_non_null(strstr(redfish_client_error(x.rf), "user:password"));
    unlink(rot);
    ctx_done(&x);
}

static void test_errors_carry_redfish_message(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x, creds, ca);
    get_system(&x, "/redfish/v1/Systems/2");
    assert_int_equal(x.status, -ENOENT);
    assert_non_null(
        strstr(x.detail, "The resource at the URI /redfish/v1/Systems/2 was not found"));
    reset(&x, "Bogus");
    assert_int_equal(x.status, -EINVAL);
    assert_int_equal(x.http_status, 400);
    assert_non_null(strstr(x.detail, "not in the list of acceptable values"));
    wait_result(&x, redfish_reset(x.rf, "/redfish/v1/Systems", "On", on_result, &x, NULL));
    assert_int_equal(x.status, -EOPNOTSUPP);
    assert_int_equal(standin_write(fault, "500"), 0);
    get_system(&x, REDFISH_DEFAULT_SYSTEM);
    unlink(fault);
    assert_int_equal(x.status, -EREMOTEIO);
    assert_non_null(strstr(x.detail, "Injected fault."));
    /* Refused before any request. */
    assert_int_equal(redfish_get_system(x.rf, "/etc/passwd", on_result, &x, NULL), -EINVAL);
    assert_int_equal(redfish_reset(x.rf, REDFISH_DEFAULT_SYSTEM, "A\"B", on_result, &x, NULL),
                     -EINVAL);
    ctx_done(&x);
}

static void test_tls_wrong_ca(void **state)
{
    (void)state;
    struct ctx x;
    ctx_init(&x, creds, other_ca);
    get_system(&x, REDFISH_DEFAULT_SYSTEM);
    assert_int_equal(x.status, -EKEYREJECTED);
    ctx_done(&x);
}

static void test_config_errors(void **state)
{
    (void)state;
    struct http_client *http;
    struct redfish_client *rf = NULL;
    uv_loop_t loop;
    char err[256];
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(http_client_new(&loop, &http), 0);
    struct redfish_config plain = { .url = "http://127.0.0.1:1", .credentials_file = creds };
    assert_int_equal(redfish_client_new(http, &plain, &rf, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "https://"));
    struct redfish_config nofile = { .url = url, .credentials_file = "/nonexistent/creds" };
    assert_int_equal(redfish_client_new(http, &nofile, &rf, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "/nonexistent/creds"));
    assert_null(rf);
    http_client_close(http, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_timeout_and_cancel(void **state)
{
    (void)state;
    struct ctx x;
    char err[256];
    ctx_init(&x, creds, ca);
    redfish_client_free(x.rf);
    struct redfish_config cfg = {
        .url = url, .credentials_file = creds, .ca_file = ca, .timeout_ms = 300
    };
    assert_int_equal(redfish_client_new(x.http, &cfg, &x.rf, err, sizeof err), 0);
    assert_int_equal(standin_write(fault, "timeout"), 0);
    get_system(&x, REDFISH_DEFAULT_SYSTEM);
    unlink(fault);
    assert_int_equal(x.status, -ETIMEDOUT);
    struct redfish_request *req;
    assert_int_equal(redfish_get_system(x.rf, REDFISH_DEFAULT_SYSTEM, on_result, &x, &req), 0);
    redfish_request_cancel(req);
    wait_result(&x, 0);
    assert_int_equal(x.status, -ECANCELED);
    ctx_done(&x);
}

static void test_password_not_logged(void **state)
{
    (void)state;
    struct ctx x;
    char logfile[300];
    path(logfile, "test.log");
    int fd = open(logfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    log_set_fd(fd);
    log_set_level(LOG_DEBUG);
    ctx_init(&x, creds, ca);
    get_system(&x, REDFISH_DEFAULT_SYSTEM);
    get_system(&x, "/redfish/v1/Systems/9");
    ctx_done(&x);
    ctx_init(&x, bad_creds, ca);
    get_system(&x, REDFISH_DEFAULT_SYSTEM);
    ctx_done(&x);
    ctx_init(&x, creds, other_ca); /* a failure http_client logs */
    get_system(&x, REDFISH_DEFAULT_SYSTEM);
    ctx_done(&x);
    log_set_fd(2);
    log_set_level(LOG_INFO);
    close(fd);
    char text[65536];
    FILE *f = fopen(logfile, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    assert_true(n > 0);
    assert_null(strstr(text, PASSWORD));
    assert_null(strstr(text, "wrong"));
}

/* redfish_response_parse: what both calls do with a response, without a
 * BMC (the fuzz harness tests/fuzz/fuzz_redfish.c drives it too). */
static void test_response_parse(void **state)
{
    (void)state;
    struct redfish_response p;
    const char *sys = "{\"PowerState\":\"On\",\"Actions\":{\"#ComputerSystem.Reset\":"
                      "{\"target\":\"/redfish/v1/Systems/1/Actions/ComputerSystem.Reset\"}}}";
    redfish_response_parse(&p, true, "/redfish/v1/Systems/1", "GET s", 200, sys, strlen(sys));
    assert_int_equal(p.result.status, 0);
    assert_non_null(p.result.system);
    assert_string_equal(p.result.system->power_state, "On");
    assert_string_equal(p.result.system->reset_target,
                        "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset");
    redfish_response_free(&p);
    /* No target, or one that is not a path: the standard one. */
    const char *rel = "{\"Actions\":{\"#ComputerSystem.Reset\":{\"target\":\"http://x/y\"}}}";
    redfish_response_parse(&p, true, "/redfish/v1/Systems/7", "GET s", 200, rel, strlen(rel));
    assert_string_equal(p.result.system->power_state, "");
    assert_string_equal(p.result.system->reset_target,
                        "/redfish/v1/Systems/7/Actions/ComputerSystem.Reset");
    redfish_response_free(&p);
    redfish_response_parse(&p, true, "/redfish/v1/Systems/1", "GET s", 200, "\"On\"", 4);
    assert_int_equal(p.result.status, -EBADMSG);
    assert_null(p.result.system);
    redfish_response_free(&p);
    const char *err = "{\"error\":{\"message\":\"generic\",\"@Message.ExtendedInfo\":"
                      "[{\"Message\":\"The system is busy.\"}]}}";
    redfish_response_parse(&p, false, NULL, "POST reset", 409, err, strlen(err));
    assert_int_equal(p.result.status, -EBUSY);
    assert_string_equal(p.result.detail, "POST reset: The system is busy. (HTTP 409)");
    redfish_response_free(&p);
    redfish_response_parse(&p, false, NULL, "POST reset", 204, "", 0);
    assert_int_equal(p.result.status, 0);
    assert_null(p.result.system);
    redfish_response_free(&p);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_system),
        cmocka_unit_test(test_force_off_and_on),
        cmocka_unit_test(test_bad_credentials_401),
        cmocka_unit_test(test_credentials_reread),
        cmocka_unit_test(test_errors_carry_redfish_message),
        cmocka_unit_test(test_tls_wrong_ca),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_timeout_and_cancel),
        cmocka_unit_test(test_password_not_logged),
        cmocka_unit_test(test_response_parse),
    };
    return cmocka_run_group_tests(tests, suite_setup, suite_teardown);
}
