/* Debouncing of probe results into probe and site health. */
#include "probes/health.h"

static bool set_state(struct probe_health *h, enum health_state s, int64_t now_ms)
{
    if (h->state == s)
        return false;
    h->state = s;
    h->changed_ms = now_ms;
    return true;
}

static bool evaluate(struct probe_health *h, const struct health_params *p, int64_t now_ms)
{
    if (h->fails >= p->fail_after && now_ms - h->first_fail_ms >= p->down_after_ms)
        return set_state(h, HEALTH_DOWN, now_ms);
    if (h->passes >= p->recover_after || (h->state == HEALTH_UNKNOWN && h->passes > 0))
        return set_state(h, HEALTH_UP, now_ms);
    return false;
}

bool health_feed(struct probe_health *h, const struct health_params *p, bool passed, int64_t now_ms)
{
    if (passed) {
        h->passes++;
        h->fails = 0;
    } else {
        if (h->fails == 0)
            h->first_fail_ms = now_ms;
        h->fails++;
        h->passes = 0;
    }
    return evaluate(h, p, now_ms);
}

bool health_tick(struct probe_health *h, const struct health_params *p, int64_t now_ms)
{
    if (h->fails == 0)
        return false;
    return evaluate(h, p, now_ms);
}

enum health_state health_site(const struct probe_health *const *critical, int n)
{
    bool unknown = false;
    for (int i = 0; i < n; i++) {
        if (critical[i]->state == HEALTH_DOWN)
            return HEALTH_DOWN;
        if (critical[i]->state == HEALTH_UNKNOWN)
            unknown = true;
    }
    return unknown || n == 0 ? HEALTH_UNKNOWN : HEALTH_UP;
}

const char *health_state_name(enum health_state s)
{
    switch (s) {
    case HEALTH_UP:
        return "up";
    case HEALTH_DOWN:
        return "down";
    case HEALTH_UNKNOWN:
        break;
    }
    return "unknown";
}
