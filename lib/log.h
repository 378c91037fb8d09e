/* Logging: one event per line in logfmt, with levels and named events.
 *
 * A line looks like
 *   ts=2026-11-26T03:06:22.123Z level=warn event=+sdown site=dc1 msg="..."
 * Named events (+sdown, +odown, +vote, ...) are what logs, tests and
 * notifications match on. Values whose key names a secret are never printed.
 */
#ifndef TRIAD_LOG_H
#define TRIAD_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

struct log_kv {
    const char *k;
    const char *v;
};

/* Where lines go (default stderr) and the least level printed. */
void log_set_fd(int fd);
void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
int log_level_parse(const char *s, enum log_level *out);
/* "logfmt" (default) or "json". */
void log_set_json(int on);

/* Emit one line. event and msg may be NULL; kv entries with a NULL key are
 * skipped. */
void log_emit(enum log_level lvl, const char *event, const char *msg, const struct log_kv *kv,
              size_t n);

/* printf-style message without key/values. */
void log_msgf(enum log_level lvl, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* log_ev(LOG_WARN, "+sdown", "site down", {"site", name}, {"probe", p}) */
#define log_ev(lvl, event, msg, ...)                                                               \
    do {                                                                                           \
        const struct log_kv log_kv_[] = { { NULL, NULL }, __VA_ARGS__ };                           \
        log_emit((lvl), (event), (msg), log_kv_, sizeof log_kv_ / sizeof log_kv_[0]);              \
    } while (0)

#define log_debug(...) log_msgf(LOG_DEBUG, NULL, __VA_ARGS__)
#define log_info(...)  log_msgf(LOG_INFO, NULL, __VA_ARGS__)
#define log_warn(...)  log_msgf(LOG_WARN, NULL, __VA_ARGS__)
#define log_error(...) log_msgf(LOG_ERROR, NULL, __VA_ARGS__)

/* Whether a key names a secret (password, token, secret, key material). */
int log_key_is_secret(const char *k);

#endif
