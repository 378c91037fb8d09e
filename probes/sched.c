/* The probe scheduler: one timer per probe, jittered intervals, a hard
 * timeout per run, results and debounced health. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "lib/dns_client.h"
#include "lib/http_client.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "probes/probe.h"

/* Drivers enforce the probe's timeout themselves; this grace lets their own
 * error through before the scheduler calls it a timeout. */
#define PROBE_TIMEOUT_GRACE_MS 250

const double probe_bucket_ms[PROBE_BUCKETS] = { 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000 };

static uint64_t rnd(struct probe_sched *s)
{
    uint64_t x = s->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s->rng = x;
    return x;
}

int64_t probe_now_ms(const struct probe *p)
{
    (void)p;
    return loop_now_ms();
}

static const struct probe_driver *driver_for(enum probe_kind k)
{
    switch (k) {
    case PROBE_POSTGRES:
        return &probe_driver_postgres;
    case PROBE_HTTP:
        return &probe_driver_http;
    case PROBE_DNS:
        return &probe_driver_dns;
    }
    return NULL;
}

/* Each kept http connection and each postgres probe holds a descriptor;
 * 1,000 kept connections would not fit a soft limit of 1,024 (systemd's
 * default). Raise the soft limit toward the hard one when needed. */
static void ensure_fd_room(size_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? (rlim_t)need : rl.rlim_max;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = want;
    if (want > was && setrlimit(RLIMIT_NOFILE, &rl) == 0)
        log_info("probes: open file limit raised from %llu to %llu", (unsigned long long)was,
                 (unsigned long long)want);
    if (want < need)
        log_warn("probes: the open file limit (%llu) is below the %zu descriptors the probes may "
                 "need (raise LimitNOFILE)",
                 (unsigned long long)want, need);
}

/* The idle kept connections the http probes may hold: one per probe. */
static void size_http_cache(struct probe_sched *s, const struct config *cfg)
{
    size_t kept = 0, other = 0;
    for (size_t i = 0; i < cfg->n_probes; i++) {
        if (cfg->probes[i].kind == PROBE_HTTP && cfg->probes[i].keepalive_ms > 0)
            kept++;
        else
            other++;
    }
    if (kept)
        http_client_set_max_idle(s->http, kept);
    /* Kept connections, one more each while it is replaced, the others,
     * and room for the daemon's own sockets and files. */
    ensure_fd_room(2 * kept + other + 256);
}

static int site_index(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_sites; i++) {
        if (strcmp(cfg->sites[i].name, name) == 0)
            return (int)i;
    }
    return -1;
}

int probe_sched_init(struct probe_sched *s, uv_loop_t *loop, const struct config *cfg,
                     probe_result_cb on_result, void *arg)
{
    static uint64_t generations;
    memset(s, 0, sizeof *s);
    s->generation = ++generations;
    s->loop = loop;
    s->cfg = cfg;
    s->on_result = on_result;
    s->arg = arg;
    s->rng = (uint64_t)uv_hrtime() | 1;
    /* Everything counted here is released by probe_sched_close, even after
     * a failure part way through. */
    s->open_count = 2;
    int result = http_client_new(loop, &s->http);
    if (result < 0)
        return result;
    size_http_cache(s, cfg);
    result = dns_client_new(loop, &s->dns);
    if (result < 0)
        return result;
    s->probes = calloc(cfg->n_probes ? cfg->n_probes : 1, sizeof *s->probes);
    if (!s->probes)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->n_probes; i++) {
        struct probe *p = &s->probes[i];
        p->cfg = &cfg->probes[i];
        p->driver = driver_for(p->cfg->kind);
        p->sched = s;
        p->site = site_index(cfg, p->cfg->site);
        uv_timer_init(loop, &p->timer);
        p->timer.data = p;
        s->n++;
        s->open_count += 2; /* the timer, and the driver (whose close always reports) */
        result = p->driver->open(p);
        if (result < 0) {
            log_ev(LOG_ERROR, "probe-open-failed", NULL, { "site", p->cfg->site },
                   { "probe", p->cfg->name });
            return result;
        }
    }
    return 0;
}

static void schedule(struct probe *p, bool first);

static void record_duration(struct probe *p, int64_t ms)
{
    for (int i = 0; i < PROBE_BUCKETS; i++) {
        if ((double)ms <= probe_bucket_ms[i])
            p->buckets[i]++;
    }
    p->duration_sum_s += (double)ms / 1000.0;
    p->duration_count++;
}

/* One line: libpq and others put hints on following lines. Most checks
 * repeat the previous detail ("HTTP 200"): then nothing is allocated. */
static void set_detail(struct probe *p, const char *detail)
{
    char line[PROBE_DETAIL_MAX];
    size_t o = 0;
    for (const char *c = detail; *c && o + 1 < sizeof line; c++) {
        if (*c == '\n' || *c == '\t' || *c == '\r') {
            if (o && line[o - 1] != ' ')
                line[o++] = ' ';
            continue;
        }
        line[o++] = *c;
    }
    while (o && line[o - 1] == ' ')
        o--;
    line[o] = '\0';
    if (p->last.detail && strcmp(p->last.detail, line) == 0)
        return;
    free(p->last.detail);
    p->last.detail = strdup(line); /* out of memory: no detail, never a stale one */
}

const char *probe_detail(const struct probe *p)
{
    return p->last.detail ? p->last.detail : "";
}

static void finish(struct probe *p, bool ok, json_t *fields, const char *detail)
{
    struct probe_sched *s = p->sched;
    int64_t now = loop_now_ms();
    p->running = false;
    uv_timer_stop(&p->timer);
    if (!p->last.done || p->last.ok != ok)
        p->state_since_ms = now;
    json_decref(p->last.fields);
    p->last.fields = fields;
    if (ok && fields) {
        json_decref(p->last_ok_fields);
        p->last_ok_fields = json_incref(fields);
        p->last_ok_at_ms = now;
    }
    p->last.done = true;
    p->last.ok = ok;
    p->last.latency_ms = now - p->started_ms;
    p->last.at_ms = now;
    set_detail(p, detail);
    record_duration(p, p->last.latency_ms);
    struct health_params hp = { s->cfg->health.fail_after, s->cfg->health.down_after_ms,
                                s->cfg->health.recover_after };
    enum health_state before = p->health.state;
    bool changed = health_feed(&p->health, &hp, ok, now);
    if (changed && p->cfg->critical)
        log_ev(p->health.state == HEALTH_DOWN ? LOG_WARN : LOG_INFO, "probe-state", probe_detail(p),
               { "site", p->cfg->site }, { "probe", p->cfg->name },
               { "from", health_state_name(before) }, { "to", health_state_name(p->health.state) });
    if (s->once) {
        if (s->pending)
            s->pending--;
    } else if (!p->closing) {
        schedule(p, false);
    }
    if (s->on_result)
        s->on_result(s, p, changed, s->arg);
}

void probe_finish(struct probe *p, bool ok, json_t *fields, const char *fmt, ...)
{
    if (!p->running) {
        json_decref(fields);
        return; /* already finished as a timeout */
    }
    char detail[PROBE_DETAIL_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    finish(p, ok, fields, detail);
}

static void on_timeout(uv_timer_t *t)
{
    struct probe *p = t->data;
    if (!p->running)
        return;
    p->driver->abort(p);
    if (!p->running)
        return; /* the abort finished it */
    char detail[96];
    snprintf(detail, sizeof detail, "timeout: no result within %lld ms",
             (long long)p->cfg->timeout_ms);
    finish(p, false, NULL, detail);
}

static void on_due(uv_timer_t *t)
{
    struct probe *p = t->data;
    if (p->closing)
        return;
    if (p->running) {
        p->skipped++;
        schedule(p, false);
        return;
    }
    p->running = true;
    p->runs++;
    p->started_ms = loop_now_ms();
    uv_timer_start(&p->timer, on_timeout, (uint64_t)(p->cfg->timeout_ms + PROBE_TIMEOUT_GRACE_MS),
                   0);
    p->driver->run(p);
}

/* The grid that due times are rounded to: 2% of the interval, at most
 * PROBE_GRID_MAX_MS. */
int64_t probe_grid_ms(int64_t interval_ms)
{
    int64_t g = interval_ms / 50;
    if (g > PROBE_GRID_MAX_MS)
        g = PROBE_GRID_MAX_MS;
    return g > 1 ? g : 1;
}

/* The next run is due one interval (with jitter) after the previous one
 * STARTED: a target that makes every check time out is still checked at the
 * configured rate, so failures accumulate as fast as successes would.
 *
 * The due time is rounded to the nearest point of a grid shared by every
 * probe of the same interval, so that probes due within a few ms of each
 * other start in one loop wakeup (and one pass of curl's timer) instead of
 * one wakeup each: with 1,000 probes a second that is about a quarter of
 * the daemon's CPU (tests/bench/probes.sh). Rounding to the nearest point
 * keeps the mean interval; the error is at most 1% of it, far inside the
 * jitter. */
static void schedule(struct probe *p, bool first)
{
    int64_t base = p->cfg->interval_ms;
    int64_t spread = (int64_t)((double)base * p->cfg->jitter);
    int64_t delay = base;
    if (spread > 0)
        delay += (int64_t)(rnd(p->sched) % (uint64_t)(2 * spread + 1)) - spread;
    if (first) /* spread the first runs over one interval */
        delay = (int64_t)(rnd(p->sched) % (uint64_t)(base + 1));
    else if (p->started_ms)
        delay -= loop_now_ms() - p->started_ms;
    if (delay < 0)
        delay = 0;
    /* In the loop's own time: libuv sets a timer's expiry from it, so probes
     * rounded to the same point expire in the same pass. */
    int64_t now = (int64_t)uv_now(p->sched->loop);
    int64_t grid = probe_grid_ms(base);
    int64_t due = (now + delay + grid / 2) / grid * grid;
    uv_timer_start(&p->timer, on_due, (uint64_t)(due > now ? due - now : 0), 0);
}

void probe_sched_start(struct probe_sched *s, bool once)
{
    s->once = once;
    s->pending = once ? s->n : 0;
    for (size_t i = 0; i < s->n; i++) {
        if (once)
            uv_timer_start(&s->probes[i].timer, on_due, 0, 0);
        else
            schedule(&s->probes[i], true);
    }
}

void probe_sched_tick(struct probe_sched *s)
{
    int64_t now = loop_now_ms();
    struct health_params hp = { s->cfg->health.fail_after, s->cfg->health.down_after_ms,
                                s->cfg->health.recover_after };
    for (size_t i = 0; i < s->n; i++) {
        struct probe *p = &s->probes[i];
        if (health_tick(&p->health, &hp, now) && s->on_result)
            s->on_result(s, p, true, s->arg);
    }
}

/* health_site()'s rule over every critical probe of the site, however many
 * there are: a fixed array of 64 here once ignored the site's critical
 * probes after its 64th, so one of those going DOWN changed nothing. */
enum health_state probe_site_health(const struct probe_sched *s, int site)
{
    bool any = false, unknown = false;
    for (size_t i = 0; i < s->n; i++) {
        const struct probe *p = &s->probes[i];
        if (p->site != site || !p->cfg->critical)
            continue;
        any = true;
        if (p->health.state == HEALTH_DOWN)
            return HEALTH_DOWN;
        if (p->health.state == HEALTH_UNKNOWN)
            unknown = true;
    }
    return unknown || !any ? HEALTH_UNKNOWN : HEALTH_UP;
}

/* ---- closing ---- */

static void closed_one(struct probe_sched *s)
{
    if (s->open_count && --s->open_count == 0) {
        for (size_t i = 0; i < s->n; i++) {
            json_decref(s->probes[i].last.fields);
            json_decref(s->probes[i].last_ok_fields);
            free(s->probes[i].last.detail);
        }
        free(s->probes);
        s->probes = NULL;
        s->n = 0;
        if (s->on_closed)
            s->on_closed(s, s->closed_arg);
    }
}

void probe_driver_closed(struct probe *p)
{
    closed_one(p->sched);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct probe *p = h->data;
    closed_one(p->sched);
}

static void on_http_closed(void *arg)
{
    closed_one(arg);
}

static void on_dns_closed(void *arg)
{
    closed_one(arg);
}

void probe_sched_close(struct probe_sched *s, probe_closed_cb cb, void *arg)
{
    s->on_closed = cb;
    s->closed_arg = arg;
    s->on_result = NULL;
    size_t n = s->n;
    /* Count every close before starting any, so none completes early. */
    for (size_t i = 0; i < n; i++) {
        struct probe *p = &s->probes[i];
        p->closing = true;
        if (p->running) {
            p->driver->abort(p);
            p->running = false;
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct probe *p = &s->probes[i];
        uv_close((uv_handle_t *)&p->timer, on_timer_closed);
        p->driver->close(p);
    }
    if (s->http)
        http_client_close(s->http, on_http_closed, s);
    else
        closed_one(s);
    if (s->dns)
        dns_client_close(s->dns, on_dns_closed, s);
    else
        closed_one(s);
}

json_t *probe_to_json(const struct probe *p)
{
    const char *state = !p->last.done ? "unknown" : p->last.ok ? "up" : "down";
    json_t *o =
        json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:s,s:b}", "site", p->cfg->site, "name", p->cfg->name,
                  "kind", config_probe_kind_name(p->cfg->kind), "state", state, "health",
                  health_state_name(p->health.state), "latency_ms", (json_int_t)p->last.latency_ms,
                  "detail", probe_detail(p), "critical", p->cfg->critical);
    if (p->last.fields)
        json_object_update_missing(o, p->last.fields);
    return o;
}
