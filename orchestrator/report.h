/* Reports: a run's journal (and a drill's measurements, when there are any)
 * rendered for people and machines. JSON is the model; Markdown is for
 * tickets; HTML is one self-contained file (no external assets) with the
 * timeline drawn as SVG: a lane per site and per step, approval waits
 * shaded, the RTO/RPO figures, every probe transition and who approved
 * what. */
#ifndef TRIAD_REPORT_H
#define TRIAD_REPORT_H

#include <jansson.h>

#include "lib/buf.h"

/* The report model from a run's records and optional drill data
 * ({"scenario", "fault_ms", "service_ok_ms", "writer": {...}}). */
json_t *report_build(json_t *records, json_t *drill);
void report_markdown(json_t *report, struct buf *out);
void report_html(json_t *report, struct buf *out);
/* The short summary `make demo` prints (RTO, RPO, writes lost). */
void report_summary(json_t *report, struct buf *out);

#endif
