/* Unit tests: probe and site health debouncing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "probes/health.h"

static const struct health_params P = { .fail_after = 3,
                                        .down_after_ms = 1000,
                                        .recover_after = 3 };

static void test_down_needs_count_and_time(void **state)
{
    (void)state;
    struct probe_health h = { 0 };
    assert_true(health_feed(&h, &P, true, 0));
    assert_int_equal(h.state, HEALTH_UP);
    /* Three fast failures are not enough before down_after has passed. */
    assert_false(health_feed(&h, &P, false, 100));
    assert_false(health_feed(&h, &P, false, 200));
    assert_false(health_feed(&h, &P, false, 300));
    assert_int_equal(h.state, HEALTH_UP);
    assert_false(health_tick(&h, &P, 1099));
    assert_true(health_tick(&h, &P, 1100));
    assert_int_equal(h.state, HEALTH_DOWN);
    assert_int_equal(h.changed_ms, 1100);
    /* Recovery needs recover_after passes in a row. */
    assert_false(health_feed(&h, &P, true, 1200));
    assert_false(health_feed(&h, &P, true, 1300));
    assert_false(health_feed(&h, &P, false, 1400));
    assert_int_equal(h.state, HEALTH_DOWN);
    assert_false(health_feed(&h, &P, true, 1500));
    assert_false(health_feed(&h, &P, true, 1600));
    assert_true(health_feed(&h, &P, true, 1700));
    assert_int_equal(h.state, HEALTH_UP);
}

static void test_flapping_never_down(void **state)
{
    (void)state;
    struct probe_health h = { 0 };
    int64_t t = 0;
    health_feed(&h, &P, true, t);
    /* Two failures, one pass, forever: never DOWN. */
    for (int i = 0; i < 300; i++) {
        t += 500;
        health_feed(&h, &P, i % 3 == 2, t);
        health_tick(&h, &P, t + 250);
        assert_int_equal(h.state, HEALTH_UP);
    }
}

static void test_unknown_until_decided(void **state)
{
    (void)state;
    struct probe_health h = { 0 };
    health_feed(&h, &P, false, 0);
    health_feed(&h, &P, false, 500);
    assert_int_equal(h.state, HEALTH_UNKNOWN);
    health_feed(&h, &P, false, 1000);
    assert_int_equal(h.state, HEALTH_DOWN);
}

static void test_site_combination(void **state)
{
    (void)state;
    struct probe_health a = { .state = HEALTH_UP }, b = { .state = HEALTH_UNKNOWN };
    const struct probe_health *both[] = { &a, &b };
    assert_int_equal(health_site(both, 2), HEALTH_UNKNOWN);
    b.state = HEALTH_UP;
    assert_int_equal(health_site(both, 2), HEALTH_UP);
    a.state = HEALTH_DOWN;
    b.state = HEALTH_UNKNOWN;
    assert_int_equal(health_site(both, 2), HEALTH_DOWN);
    assert_int_equal(health_site(both, 0), HEALTH_UNKNOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_down_needs_count_and_time),
        cmocka_unit_test(test_flapping_never_down),
        cmocka_unit_test(test_unknown_until_decided),
        cmocka_unit_test(test_site_combination),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
