/* Unit tests: the primary's lease across a daemon restart
 * (orchestrator/lease_file.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "orchestrator/lease_file.h"

static void test_round_trip(void **state)
{
    (void)state;
    char dir[] = "/tmp/triad-leasetest-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/lease", dir);

    assert_int_equal(lease_file_load(path, 0), 0); /* no file */
    assert_int_equal(lease_file_save(path, 3, 4000), 0);
    int64_t left = lease_file_load(path, 3);
    assert_true(left > 3000 && left <= 4000);
    assert_int_equal(lease_file_load(path, 4), 0); /* another primary epoch */
    assert_int_equal(lease_file_save(path, 3, 0), 0);
    assert_int_equal(lease_file_load(path, 3), 0); /* no lease held */
    assert_int_equal(lease_file_save(path, 3, -5), 0);
    assert_int_equal(lease_file_load(path, 3), 0);

    /* Another boot: the saved end means nothing on this clock. */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"boot_id\": \"00000000-0000-0000-0000-000000000000\", \"primary_epoch\": 3, "
          "\"until_boottime_ms\": 9223372036854775000}\n",
          f);
    fclose(f);
    assert_int_equal(lease_file_load(path, 3), 0);
    /* Damaged: no lease. */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"boot_id\": ", f);
    fclose(f);
    assert_int_equal(lease_file_load(path, 3), 0);

    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
