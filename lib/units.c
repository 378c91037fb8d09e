/* Parsing and formatting of durations, sizes and ratios. */
#include "lib/units.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A decimal number followed by a unit; strtod alone would accept "inf",
 * hex and exponents, which have no place in a config file. */
static int split_number(const char *s, double *num, const char **unit)
{
    const char *p = s;
    int digits = 0, dot = 0;
    while (*p == ' ')
        p++;
    const char *start = p;
    while ((*p >= '0' && *p <= '9') || (*p == '.' && !dot)) {
        if (*p == '.')
            dot = 1;
        else
            digits++;
        p++;
    }
    if (!digits)
        return -EINVAL;
    char tmp[64];
    size_t n = (size_t)(p - start);
    if (n >= sizeof tmp)
        return -ERANGE;
    memcpy(tmp, start, n);
    tmp[n] = '\0';
    *num = strtod(tmp, NULL);
    while (*p == ' ')
        p++;
    *unit = p;
    return 0;
}

int units_duration_ms(const char *s, int64_t *out_ms, const char **why)
{
    static const struct {
        const char *u;
        double ms;
    } units[] = { { "ms", 1 },      { "s", 1000 },    { "m", 60000 },
                  { "min", 60000 }, { "h", 3600000 }, { "d", 86400000.0 } };
    double v;
    const char *u;
    if (split_number(s, &v, &u) < 0) {
        *why = "expected a duration such as 500ms, 5s, 2m, 1h";
        return -EINVAL;
    }
    if (*u == '\0' && v == 0) {
        *out_ms = 0; /* "0" is 0 in any unit */
        return 0;
    }
    if (*u == '\0') {
        *why = "a duration needs a unit (ms, s, m, h, d), e.g. 5s";
        return -EINVAL;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(u, units[i].u) == 0) {
            double ms = v * units[i].ms;
            if (ms > 365.0 * 86400000.0) {
                *why = "duration too long (at most a year)";
                return -ERANGE;
            }
            *out_ms = (int64_t)llround(ms);
            return 0;
        }
    }
    *why = "unknown duration unit (use ms, s, m, h or d)";
    return -EINVAL;
}

int units_size(const char *s, uint64_t *out, const char **why)
{
    static const struct {
        const char *u;
        double mul;
    } units[] = { { "B", 1 },
                  { "kB", 1024.0 },
                  { "KB", 1024.0 },
                  { "KiB", 1024.0 },
                  { "MB", 1048576.0 },
                  { "MiB", 1048576.0 },
                  { "GB", 1073741824.0 },
                  { "GiB", 1073741824.0 },
                  { "TB", 1099511627776.0 },
                  { "TiB", 1099511627776.0 } };
    double v;
    const char *u;
    if (split_number(s, &v, &u) < 0) {
        *why = "expected a size such as 512B, 64kB, 16MB";
        return -EINVAL;
    }
    if (*u == '\0') {
        *why = "a size needs a unit (B, kB, MB, GB, TB), e.g. 16MB";
        return -EINVAL;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(u, units[i].u) == 0) {
            double b = v * units[i].mul;
            if (b > 9.0e15) {
                *why = "size too large";
                return -ERANGE;
            }
            *out = (uint64_t)llround(b);
            return 0;
        }
    }
    *why = "unknown size unit (use B, kB, MB, GB or TB)";
    return -EINVAL;
}

int units_ratio(const char *s, double *out, const char **why)
{
    double v;
    const char *u;
    if (split_number(s, &v, &u) < 0) {
        *why = "expected a ratio such as 10% or 0.1";
        return -EINVAL;
    }
    if (strcmp(u, "%") == 0)
        v /= 100.0;
    else if (*u != '\0') {
        *why = "a ratio is a percentage (10%) or a fraction (0.1)";
        return -EINVAL;
    }
    if (v < 0.0 || v > 1.0) {
        *why = "a ratio must be between 0% and 100%";
        return -ERANGE;
    }
    *out = v;
    return 0;
}

void units_format_duration(int64_t ms, char *out, size_t outlen)
{
    if (ms < 0) {
        snprintf(out, outlen, "-");
        return;
    }
    if (ms < 1000)
        snprintf(out, outlen, "%lldms", (long long)ms);
    else if (ms % 1000)
        snprintf(out, outlen, "%.1fs", (double)ms / 1000.0);
    else if (ms < 60000)
        snprintf(out, outlen, "%llds", (long long)(ms / 1000));
    else if (ms % 60000 == 0 && ms < 3600000)
        snprintf(out, outlen, "%lldm", (long long)(ms / 60000));
    else if (ms % 3600000 == 0)
        snprintf(out, outlen, "%lldh", (long long)(ms / 3600000));
    else
        snprintf(out, outlen, "%lldm%llds", (long long)(ms / 60000),
                 (long long)((ms % 60000) / 1000));
}

void units_format_size(uint64_t bytes, char *out, size_t outlen)
{
    if (bytes < 1024)
        snprintf(out, outlen, "%llu B", (unsigned long long)bytes);
    else if (bytes < 1048576)
        snprintf(out, outlen, "%.1f KiB", (double)bytes / 1024.0);
    else if (bytes < 1073741824ULL)
        snprintf(out, outlen, "%.1f MiB", (double)bytes / 1048576.0);
    else
        snprintf(out, outlen, "%.1f GiB", (double)bytes / 1073741824.0);
}
