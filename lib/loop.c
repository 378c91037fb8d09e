/* Event loop wrapper: signals and graceful stop. */
#include "lib/loop.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "lib/log.h"

static void on_deadline(uv_timer_t *t)
{
    (void)t;
    log_ev(LOG_ERROR, "stop-timeout", "graceful stop took too long; exiting");
    _exit(1);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct loop *l = h->data;
    if (signum == SIGHUP) {
        log_ev(LOG_INFO, "signal", "reload requested", { "signal", "SIGHUP" });
        if (l->on_reload)
            l->on_reload(l, signum);
        return;
    }
    const char *name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
    if (l->stopping) {
        log_ev(LOG_WARN, "signal", "second stop signal; exiting now", { "signal", name });
        _exit(1);
    }
    l->stopping = 1;
    log_ev(LOG_INFO, "signal", "stopping", { "signal", name });
    if (l->stop_timeout_ms > 0)
        uv_timer_start(&l->stop_deadline, on_deadline, (uint64_t)l->stop_timeout_ms, 0);
    if (l->on_stop)
        l->on_stop(l, signum);
}

int loop_init(struct loop *l, uv_loop_t *uv, loop_signal_cb on_stop, loop_signal_cb on_reload,
              int64_t stop_timeout_ms)
{
    memset(l, 0, sizeof *l);
    l->uv = uv;
    l->on_stop = on_stop;
    l->on_reload = on_reload;
    l->stop_timeout_ms = stop_timeout_ms;
    signal(SIGPIPE, SIG_IGN);
    uv_signal_t *sigs[] = { &l->sig_term, &l->sig_int, &l->sig_hup };
    int nums[] = { SIGTERM, SIGINT, SIGHUP };
    for (int i = 0; i < 3; i++) {
        uv_signal_init(uv, sigs[i]);
        sigs[i]->data = l;
        int r = uv_signal_start(sigs[i], on_signal, nums[i]);
        if (r < 0)
            return r;
        /* Signals must not keep the loop alive on their own. */
        uv_unref((uv_handle_t *)sigs[i]);
    }
    uv_timer_init(uv, &l->stop_deadline);
    l->stop_deadline.data = l;
    uv_unref((uv_handle_t *)&l->stop_deadline);
    return 0;
}

void loop_close(struct loop *l)
{
    if (l->closing)
        return;
    l->closing = 1;
    uv_close((uv_handle_t *)&l->sig_term, NULL);
    uv_close((uv_handle_t *)&l->sig_int, NULL);
    uv_close((uv_handle_t *)&l->sig_hup, NULL);
    uv_close((uv_handle_t *)&l->stop_deadline, NULL);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int loop_close_all(uv_loop_t *uv)
{
    uv_walk(uv, close_walk, NULL);
    uv_run(uv, UV_RUN_DEFAULT);
    return uv_loop_close(uv);
}

int64_t loop_now_ms(void)
{
    return (int64_t)(uv_hrtime() / 1000000u);
}
