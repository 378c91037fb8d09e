/* The event loop wrapper: one libuv loop, and the signals a daemon answers.
 * SIGTERM/SIGINT ask for a graceful stop (the owner closes its handles and
 * the loop ends); a second stop signal, or the stop taking longer than its
 * deadline, ends the process. SIGHUP asks for a reload. SIGPIPE is ignored:
 * a peer closing a socket is an error code, never a signal. */
#ifndef TRIAD_LOOP_H
#define TRIAD_LOOP_H

#include <stdint.h>
#include <uv.h>

struct loop;
typedef void (*loop_signal_cb)(struct loop *l, int signum);

struct loop {
    uv_loop_t *uv;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t stop_deadline;
    loop_signal_cb on_stop;
    loop_signal_cb on_reload;
    int64_t stop_timeout_ms;
    int stopping;
    int closing; /* 0 while the loop wrapper's own handles are open */
    void *data;
};

/* Sets up signal handling on `uv`. stop_timeout_ms bounds a graceful stop. */
int loop_init(struct loop *l, uv_loop_t *uv, loop_signal_cb on_stop, loop_signal_cb on_reload,
              int64_t stop_timeout_ms);
/* Closes the wrapper's handles (signals, deadline timer). */
void loop_close(struct loop *l);
/* Closes every handle still open on `uv`, runs the loop until they are
 * gone and closes it. Returns uv_loop_close's result. */
int loop_close_all(uv_loop_t *uv);

/* Monotonic milliseconds (uv_hrtime based; never goes backwards). */
int64_t loop_now_ms(void);

#endif
