/* `triad probe`: run every configured probe without a daemon and print the
 * results, once (--once) or continuously until interrupted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/dns_client.h"
#include "lib/http_client.h"
#include "lib/log.h"
#include "lib/loop.h"
#include "orchestrator/cli.h"
#include "orchestrator/config.h"
#include "probes/probe.h"

struct probe_cmd {
    struct loop loop;
    struct probe_sched sched;
    bool json;
    bool once;
    bool all_up;
    bool stopping;
};

static void print_table(const struct probe_sched *s)
{
    printf("%-6s %-16s %-9s %-6s %9s  %s\n", "SITE", "PROBE", "KIND", "STATE", "LATENCY", "DETAIL");
    for (size_t i = 0; i < s->n; i++) {
        const struct probe *p = &s->probes[i];
        char lat[24];
        snprintf(lat, sizeof lat, "%lldms", (long long)p->last.latency_ms);
        printf("%-6s %-16s %-9s %-6s %9s  %s\n", p->cfg->site, p->cfg->name,
               config_probe_kind_name(p->cfg->kind),
               !p->last.done ? "?"
               : p->last.ok  ? "up"
                             : "down",
               lat, probe_detail(p));
    }
}

static void print_json(const struct probe_sched *s)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < s->n; i++)
        json_array_append_new(arr, probe_to_json(&s->probes[i]));
    json_t *o = json_pack("{s:o}", "probes", arr);
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text)
        printf("%s\n", text);
    free(text);
    json_decref(o);
}

static void on_closed(struct probe_sched *s, void *arg)
{
    (void)s;
    struct probe_cmd *c = arg;
    loop_close(&c->loop);
}

static void stop(struct probe_cmd *c)
{
    if (c->stopping)
        return;
    c->stopping = true;
    probe_sched_close(&c->sched, on_closed, c);
}

static void on_result(struct probe_sched *s, struct probe *p, bool changed, void *arg)
{
    (void)changed;
    struct probe_cmd *c = arg;
    if (!p->last.ok)
        c->all_up = false;
    if (c->once) {
        if (s->pending == 0) {
            if (c->json)
                print_json(s);
            else
                print_table(s);
            stop(c);
        }
        return;
    }
    if (c->json) {
        json_t *j = probe_to_json(p);
        char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (text)
            printf("%s\n", text);
        free(text);
        json_decref(j);
    } else {
        printf("%-6s %-16s %-6s %6lldms  %s\n", p->cfg->site, p->cfg->name,
               p->last.ok ? "up" : "down", (long long)p->last.latency_ms, probe_detail(p));
    }
    fflush(stdout);
}

static void on_signal_stop(struct loop *l, int signum)
{
    (void)signum;
    stop(l->data);
}

int cmd_probe(const struct cli_args *a)
{
    struct config cfg;
    struct diag d;
    struct config_load_opts opts = { .skip_runbooks = true };
    diag_init(&d);
    if (config_load(&cfg, a->config, &opts, &d) < 0) {
        diag_print(&d, stderr);
        diag_free(&d);
        config_free(&cfg);
        return EXIT_CONFIG;
    }
    diag_free(&d);
    log_set_level(LOG_ERROR);
    http_global_init();
    dns_global_init();
    int result = EXIT_OK;
    struct probe_cmd c = { .json = cli_flag(a, "json"),
                           .once = cli_flag(a, "once"),
                           .all_up = true };
    uv_loop_t uv;
    uv_loop_init(&uv);
    loop_init(&c.loop, &uv, on_signal_stop, NULL, 5000);
    c.loop.data = &c;
    if (cfg.n_probes == 0) {
        fprintf(stderr, "triad probe: %s configures no probes\n", a->config);
        result = EXIT_CONFIG;
        loop_close(&c.loop);
    } else if (probe_sched_init(&c.sched, &uv, &cfg, on_result, &c) < 0) {
        fprintf(stderr, "triad probe: cannot set up the probes\n");
        result = EXIT_FATAL;
        stop(&c);
    } else {
        probe_sched_start(&c.sched, c.once);
    }
    uv_run(&uv, UV_RUN_DEFAULT);
    loop_close_all(&uv);
    if (result == EXIT_OK && c.once && !c.all_up)
        result = EXIT_FAILED;
    config_free(&cfg);
    http_global_cleanup();
    dns_global_cleanup();
    return result;
}
