/* Prometheus metrics of a daemon, rendered in the text exposition format. */
#ifndef TRIAD_METRICS_H
#define TRIAD_METRICS_H

#include "lib/buf.h"

struct daemon;

void metrics_render(struct daemon *d, struct buf *out);

#endif
