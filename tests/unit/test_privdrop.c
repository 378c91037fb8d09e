/* Unit tests: giving up root after binding (orchestrator/privdrop.c). Run
 * as root (as the suites are in CI); skipped otherwise. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "orchestrator/privdrop.h"

static void test_resolve(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    struct privdrop pd;
    char err[256];
    assert_int_equal(privdrop_resolve("nobody", &pd, err, sizeof err), 0);
    assert_int_equal(pd.uid, 65534);
    assert_string_equal(pd.user, "nobody");
    assert_string_equal(pd.group, "");
    assert_int_equal(privdrop_resolve("nobody:nogroup", &pd, err, sizeof err), 0);
    assert_string_equal(pd.group, "nogroup");
    static const char *const bad[] = { "",
                                       ":",
                                       "nobody:",
                                       ":nogroup",
                                       "root",
                                       "root:nogroup",
                                       "no-such-user-here",
                                       "nobody:no-such-group-here" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(privdrop_resolve(bad[i], &pd, err, sizeof err), -1);
        assert_true(strncmp(err, "--user", 6) == 0);
    }
}

static void test_apply(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char dir[] = "/tmp/triad-privtest-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sub[64], file[80];
    snprintf(sub, sizeof sub, "%s/runs", dir);
    snprintf(file, sizeof file, "%s/quorum.json", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct privdrop pd;
        char err[256];
        if (privdrop_resolve("nobody", &pd, err, sizeof err) < 0 ||
            privdrop_apply(&pd, dir, NULL, err, sizeof err) < 0)
            _exit(10);
        /* Root is gone, and the state is ours. */
        if (geteuid() != 65534 || setuid(0) == 0)
            _exit(11);
        f = fopen(file, "w");
        if (!f)
            _exit(12);
        fclose(f);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    struct stat sb;
    assert_int_equal(stat(sub, &sb), 0);
    assert_int_equal(sb.st_uid, 65534);
    unlink(file);
    rmdir(sub);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_apply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
