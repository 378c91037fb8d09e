/* The systemd notification protocol (sd_notify), spoken directly: one
 * datagram per state to the socket in $NOTIFY_SOCKET. READY=1 once the
 * daemon serves, WATCHDOG=1 at half the watchdog interval while the loop
 * runs (a stuck loop gets the service restarted), STOPPING=1 on the way
 * out. Without $NOTIFY_SOCKET every call does nothing. */
#ifndef TRIAD_SDNOTIFY_H
#define TRIAD_SDNOTIFY_H

#include <stdint.h>

/* 0 (sent or nothing to do) or a negative errno. */
int sdnotify(const char *state);
/* The watchdog interval from $WATCHDOG_USEC (for this process), in ms;
 * 0 when none. */
int64_t sdnotify_watchdog_ms(void);

#endif
