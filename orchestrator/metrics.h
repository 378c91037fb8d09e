/* Prometheus metrics of a daemon, rendered in the text exposition format. */
#ifndef TRIAD_METRICS_H
#define TRIAD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

struct daemon;
struct probe;

/* Where a rendering in parts stands; zero it to start. */
struct metrics_cursor {
    bool started;
    uint64_t generation; /* of the probe set it began with */
    const struct probe *probes;
    size_t n;
    size_t family; /* per-probe family, then the rest */
    size_t i;      /* next probe in it */
    bool header_done;
};

/* All of it at once (tests, small daemons). */
void metrics_render(struct daemon *d, struct buf *out);
/* The next parts, at least at_least bytes of them unless they run out:
 * 1 when more follows, 0 when done, -1 when the probes were reloaded since
 * the first part (the scrape must fail rather than mix two sets). */
int metrics_render_next(struct daemon *d, struct buf *out, struct metrics_cursor *c,
                        size_t at_least);

#endif
