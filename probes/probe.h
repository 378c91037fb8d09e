/* Probes: the driver vtable and the scheduler that runs every configured
 * probe on the loop (interval with jitter, a timeout per probe, a slow target
 * never delays another) and keeps each probe's last result and debounced
 * health for status, metrics and the quorum. */
#ifndef TRIAD_PROBE_H
#define TRIAD_PROBE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "orchestrator/config.h"
#include "probes/health.h"

#define PROBE_DETAIL_MAX 512
/* Probes start on a grid of 2% of their interval, at most this (see
 * schedule() in probes/sched.c). */
#define PROBE_GRID_MAX_MS 20
/* Histogram buckets of probe durations, in ms (Prometheus style). */
#define PROBE_BUCKETS 10

struct probe;
struct probe_sched;

struct probe_driver {
    const char *kind;
    /* Set up driver state (p->drv). 0 or a negative errno. */
    int (*open)(struct probe *p);
    /* Start one check; the driver must end it with probe_finish() exactly
     * once, from a loop callback, within the probe's timeout. */
    void (*run)(struct probe *p);
    /* Stop a check in flight without finishing it (the scheduler finishes
     * it as a timeout). */
    void (*abort)(struct probe *p);
    /* Release everything; call probe_driver_closed() when done (may be
     * from inside this call). */
    void (*close)(struct probe *p);
};

struct probe_result {
    bool done; /* at least one result */
    bool ok;
    int64_t latency_ms;
    int64_t at_ms; /* monotonic, when it finished */
    /* One line, at most PROBE_DETAIL_MAX - 1 bytes; NULL before the first
     * result (probe_detail() gives ""). Heap-allocated to its length: a
     * thousand probes do not each carry PROBE_DETAIL_MAX bytes. */
    char *detail;
    json_t *fields; /* driver fields (in_recovery, replay_lag_bytes, ...) */
};

struct probe {
    const struct cfg_probe *cfg;
    const struct probe_driver *driver;
    struct probe_sched *sched;
    int site; /* index in cfg->sites */
    void *drv;
    uv_timer_t timer; /* next run, then the hard timeout of a run */
    bool running;
    bool closing;
    int64_t started_ms;
    uint64_t runs, skipped;
    struct probe_result last;
    /* The fields of the last successful result and when it finished: what
     * was last known of a target that has since gone (e.g. the old
     * primary's LSN, for the RPO). */
    json_t *last_ok_fields;
    int64_t last_ok_at_ms;
    bool prev_ok;           /* for the owner: the previous result's outcome */
    int64_t state_since_ms; /* monotonic: when the outcome (ok or not) last changed */
    struct probe_health health;
    /* Durations (for triad_probe_duration_seconds). */
    uint64_t buckets[PROBE_BUCKETS];
    double duration_sum_s;
    uint64_t duration_count;
};

typedef void (*probe_result_cb)(struct probe_sched *s, struct probe *p, bool health_changed,
                                void *arg);
typedef void (*probe_closed_cb)(struct probe_sched *s, void *arg);

struct probe_sched {
    uv_loop_t *loop;
    const struct config *cfg;
    struct probe *probes;
    size_t n;
    struct http_client *http;
    struct dns_client *dns;
    probe_result_cb on_result;
    void *arg;
    bool once;         /* run each probe once, then stop scheduling */
    size_t pending;    /* probes not yet finished (once mode) */
    size_t open_count; /* things still to close */
    probe_closed_cb on_closed;
    void *closed_arg;
    uint64_t rng;
    uint64_t generation; /* differs for every probe_sched_init in the process */
};

extern const double probe_bucket_ms[PROBE_BUCKETS];

/* Creates the probes of `cfg`. Nothing runs until probe_sched_start(). */
int probe_sched_init(struct probe_sched *s, uv_loop_t *loop, const struct config *cfg,
                     probe_result_cb on_result, void *arg);
/* once: run every probe one time (all at once), then stop. */
void probe_sched_start(struct probe_sched *s, bool once);
/* Stops and releases everything; cb after the last handle closed. */
void probe_sched_close(struct probe_sched *s, probe_closed_cb cb, void *arg);

/* Re-evaluates time-based health transitions (call every ~100 ms). */
void probe_sched_tick(struct probe_sched *s);

/* The grid (ms) that the due times of probes of this interval are rounded
 * to. */
int64_t probe_grid_ms(int64_t interval_ms);

/* Health of a site from its critical probes. */
enum health_state probe_site_health(const struct probe_sched *s, int site);

/* Driver API. */
void probe_finish(struct probe *p, bool ok, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void probe_driver_closed(struct probe *p);
int64_t probe_now_ms(const struct probe *p);

/* One probe as JSON (site, name, kind, state, latency_ms, detail, fields). */
/* The last result's detail, "" before the first. */
const char *probe_detail(const struct probe *p);
json_t *probe_to_json(const struct probe *p);

extern const struct probe_driver probe_driver_postgres;
extern const struct probe_driver probe_driver_http;
extern const struct probe_driver probe_driver_dns;

#endif
