/* Logging: formats and writes one logfmt (or JSON) line per event. */
#include "lib/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"

#define LOG_LINE_MAX 8192

static int log_fd = 2;
static enum log_level log_min = LOG_INFO;
static int log_json;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_set_fd(int fd)
{
    log_fd = fd;
}

void log_set_level(enum log_level lvl)
{
    log_min = lvl;
}

enum log_level log_get_level(void)
{
    return log_min;
}

void log_set_json(int on)
{
    log_json = on;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_key_is_secret(const char *k)
{
    static const char *const words[] = { "password", "passwd", "secret", "token", "private" };
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (strcasestr(k, words[i]))
            return 1;
    }
    return 0;
}

/* A conninfo-like value may carry "password=..."; never print it. */
static int value_has_secret(const char *v)
{
    return strcasestr(v, "password=") != NULL;
}

static void put_logfmt_value(struct buf *b, const char *v)
{
    int quote = (*v == '\0');
    for (const char *p = v; *p && !quote; p++) {
        if (*p == ' ' || *p == '=' || *p == '"' || (unsigned char)*p < 0x20)
            quote = 1;
    }
    if (!quote) {
        buf_append_str(b, v);
        return;
    }
    buf_append_str(b, "\"");
    for (const char *p = v; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\')
            buf_printf(b, "\\%c", c);
        else if (c == '\n')
            buf_append_str(b, "\\n");
        else if (c < 0x20)
            buf_printf(b, "\\x%02x", c);
        else
            buf_append(b, p, 1);
    }
    buf_append_str(b, "\"");
}

static void put_json_string(struct buf *b, const char *v)
{
    buf_append_str(b, "\"");
    for (const char *p = v; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\')
            buf_printf(b, "\\%c", c);
        else if (c == '\n')
            buf_append_str(b, "\\n");
        else if (c < 0x20)
            buf_printf(b, "\\u%04x", c);
        else
            buf_append(b, p, 1);
    }
    buf_append_str(b, "\"");
}

static void put_pair(struct buf *b, const char *k, const char *v, int first)
{
    if (log_json) {
        buf_append_str(b, first ? "{" : ",");
        put_json_string(b, k);
        buf_append_str(b, ":");
        put_json_string(b, v);
    } else {
        if (!first)
            buf_append_str(b, " ");
        buf_append_str(b, k);
        buf_append_str(b, "=");
        put_logfmt_value(b, v);
    }
}

void log_emit(enum log_level lvl, const char *event, const char *msg, const struct log_kv *kv,
              size_t n)
{
    if (lvl < log_min)
        return;
    char ts[40];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t tl = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof ts - tl, ".%03ldZ", now.tv_nsec / 1000000L);

    struct buf b;
    buf_init(&b, LOG_LINE_MAX);
    put_pair(&b, "ts", ts, 1);
    put_pair(&b, "level", level_names[lvl], 0);
    if (event)
        put_pair(&b, "event", event, 0);
    for (size_t i = 0; i < n; i++) {
        if (!kv[i].k)
            continue;
        const char *v = kv[i].v ? kv[i].v : "";
        if (log_key_is_secret(kv[i].k) || value_has_secret(v))
            v = "(redacted)";
        put_pair(&b, kv[i].k, v, 0);
    }
    if (msg)
        put_pair(&b, "msg", value_has_secret(msg) ? "(redacted)" : msg, 0);
    if (log_json)
        buf_append_str(&b, "}");
    if (b.truncated) {
        /* Never cut a line in the middle of a value: say what was lost. */
        buf_reset(&b);
        put_pair(&b, "ts", ts, 1);
        put_pair(&b, "level", level_names[lvl], 0);
        if (event)
            put_pair(&b, "event", event, 0);
        put_pair(&b, "msg", "log line over 8 KiB dropped", 0);
        if (log_json)
            buf_append_str(&b, "}");
    }
    buf_append_str(&b, "\n");
    const char *p = b.data;
    size_t left = b.len;
    while (left > 0) {
        ssize_t w = write(log_fd, p, left);
        if (w <= 0)
            break;
        p += w;
        left -= (size_t)w;
    }
    buf_free(&b);
}

void log_msgf(enum log_level lvl, const char *event, const char *fmt, ...)
{
    if (lvl < log_min)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_emit(lvl, event, msg, NULL, 0);
}
