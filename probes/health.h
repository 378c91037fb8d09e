/* Health, as seen from this daemon: each probe's result stream is debounced
 * into a probe health, and a site's critical probes decide the site state.
 *
 * A probe is DOWN once it has failed `fail_after` times in a row AND the
 * first of those failures is at least `down_after` old; it is UP again after
 * `recover_after` passes in a row. A site is SDOWN (subjectively down) while
 * any of its critical probes is DOWN, UP when all of them are UP, UNKNOWN
 * before every critical probe has an answer. Time is monotonic ms. */
#ifndef TRIAD_HEALTH_H
#define TRIAD_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

enum health_state { HEALTH_UNKNOWN = 0, HEALTH_UP, HEALTH_DOWN };

struct health_params {
    int fail_after;
    int64_t down_after_ms;
    int recover_after;
};

struct probe_health {
    enum health_state state;
    int fails;             /* consecutive failures */
    int passes;            /* consecutive passes */
    int64_t first_fail_ms; /* start of the current failure streak */
    int64_t changed_ms;    /* when `state` last changed */
};

/* Feeds one raw result. Returns true when the debounced state changed. */
bool health_feed(struct probe_health *h, const struct health_params *p, bool passed,
                 int64_t now_ms);
/* Re-evaluates time-based transitions without a new result (a failure
 * streak that reaches down_after between probes). */
bool health_tick(struct probe_health *h, const struct health_params *p, int64_t now_ms);

/* Combines the critical probes of one site. */
enum health_state health_site(const struct probe_health *const *critical, int n);

const char *health_state_name(enum health_state s);

#endif
