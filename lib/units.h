/* Units in configuration values: durations ("500ms", "5s", "1.5m", "2h",
 * "1d"), sizes ("512B", "16kB", "16MB", "1GiB"; k/M/G are powers of 1024
 * as in PostgreSQL) and ratios ("10%", "0.1"). Each parser returns 0 or a
 * negative errno and, on error, a short reason in `why`. */
#ifndef TRIAD_UNITS_H
#define TRIAD_UNITS_H

#include <stddef.h>
#include <stdint.h>

int units_duration_ms(const char *s, int64_t *out_ms, const char **why);
int units_size(const char *s, uint64_t *out, const char **why);
int units_ratio(const char *s, double *out, const char **why);
/* Formats a duration compactly ("500ms", "5s", "2m30s") into out. */
void units_format_duration(int64_t ms, char *out, size_t outlen);
/* Formats a byte count ("0 B", "1.5 KiB", "16.0 MiB"). */
void units_format_size(uint64_t bytes, char *out, size_t outlen);

#endif
