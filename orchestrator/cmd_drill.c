/* `triad drill SCENARIO`: a game day. Injects the fault through the
 * configured hook (or asks triad for a switchover/failback), follows the
 * run the daemons start, approves its gates when told to (--yes), waits
 * until writes succeed again through the public name, collects the writer's
 * audit, and writes the drill's measurements next to the run's journal and
 * an HTML report. The timeline: fault injected, detection, decision, each
 * step with its approval wait, service verified. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/fsutil.h"
#include "orchestrator/api_client.h"
#include "orchestrator/cli.h"
#include "orchestrator/config.h"

#define POLL_US 200000

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* Runs the hook for a phase, optionally capturing its output. Returns its
 * exit status (or -1 when it could not run). The CLI may block: it is not
 * the daemon. */
static int hook(const struct config *cfg, const char *phase, const char *scenario, const char *site,
                int64_t fault_ms, struct buf *out)
{
    if (!cfg->drill.n_hook)
        return -1;
    int pfd[2] = { -1, -1 };
    if (out && pipe(pfd) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        char fault[32];
        snprintf(fault, sizeof fault, "%lld", (long long)fault_ms);
        setenv("TRIAD_DRILL_FAULT_MS", fault, 1);
        if (out) {
            dup2(pfd[1], 1);
            close(pfd[0]);
        } else {
            dup2(2, 1);
        }
        const char *argv[CFG_MAX_LIST + 4];
        size_t n = 0;
        for (size_t i = 0; i < cfg->drill.n_hook && n < CFG_MAX_LIST; i++)
            argv[n++] = cfg->drill.hook[i];
        argv[n++] = phase;
        argv[n++] = scenario;
        argv[n++] = site;
        argv[n] = NULL;
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (out) {
        close(pfd[1]);
        char chunk[4096];
        ssize_t r;
        while ((r = read(pfd[0], chunk, sizeof chunk)) > 0)
            buf_append(out, chunk, (size_t)r);
        close(pfd[0]);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static json_t *status(const struct config *cfg)
{
    char err[256];
    json_t *st = NULL;
    if (api_call(cfg->api.socket, "GET", "/v1/status", NULL, &st, err, sizeof err) != 200) {
        json_decref(st);
        return NULL;
    }
    return st;
}

static void approve(const struct config *cfg, const char *run, const char *step, const char *shown)
{
    char path[256], err[256];
    snprintf(path, sizeof path, "/v1/runs/%s/steps/%s/approve", run, step);
    json_t *body = json_pack("{s:s}", "shown", shown);
    json_t *ans = NULL;
    int code = api_call(cfg->api.socket, "POST", path, body, &ans, err, sizeof err);
    printf("  [drill --yes] approved step '%s' (%s): %s\n", step, shown,
           code == 200 ? "ok"
           : json_is_string(json_object_get(ans, "error"))
               ? json_string_value(json_object_get(ans, "error"))
               : err);
    json_decref(ans);
    json_decref(body);
}

int cmd_drill(const struct cli_args *a)
{
    const char *scenario = a->positional[0];
    bool loss = !strcmp(scenario, "dc1-loss") || !strcmp(scenario, "dc1-isolation");
    if (!loss && strcmp(scenario, "switchover") && strcmp(scenario, "failback")) {
        fprintf(stderr, "triad drill: scenarios are dc1-loss, dc1-isolation, switchover, "
                        "failback\n");
        return EXIT_USAGE;
    }
    struct config cfg;
    struct diag d;
    struct config_load_opts opts = { .no_file_checks = true, .skip_runbooks = true };
    diag_init(&d);
    if (config_load(&cfg, a->config, &opts, &d) < 0) {
        diag_print(&d, stderr);
        diag_free(&d);
        config_free(&cfg);
        return EXIT_CONFIG;
    }
    diag_free(&d);
    int result = EXIT_OK;
    json_t *st = status(&cfg);
    json_t *drill = NULL;
    if (!st) {
        fprintf(stderr, "triad drill: the daemon at %s does not answer\n", cfg.api.socket);
        result = EXIT_PEER;
        goto out;
    }
    const char *primary = str(st, "primary_site");
    char site[64], target[64], before_run[64];
    snprintf(site, sizeof site, "%s", primary);
    /* Loss: the primary is lost, the target takes over. Switchover: the
     * primary moves to the target. Failback: back to the original primary. */
    const char *tgt = cfg.failover.target;
    if (!strcmp(scenario, "failback"))
        tgt = config_primary(&cfg)->name;
    if (!strcmp(tgt, primary)) {
        const struct cfg_site *other = NULL;
        for (size_t i = 0; i < cfg.n_sites && !other; i++) {
            if (cfg.sites[i].role != ROLE_WITNESS && strcmp(cfg.sites[i].name, primary) != 0)
                other = &cfg.sites[i];
        }
        tgt = other ? other->name : tgt;
    }
    snprintf(target, sizeof target, "%s", tgt);
    snprintf(before_run, sizeof before_run, "%s", str(json_object_get(st, "run"), "id"));
    printf("drill %s: %s %s; expected: %s takes over (mode %s)\n", scenario,
           loss ? (strcmp(scenario, "dc1-loss") ? "isolate" : "kill") : "no fault for", site,
           target, config_mode_name(cfg.failover.mode));
    if (loss && !cfg.drill.n_hook) {
        fprintf(stderr, "triad drill: no drill.hook in the configuration: nothing can inject "
                        "the fault\n");
        result = EXIT_CONFIG;
        goto out;
    }
    if (cli_flag(a, "dry-run")) {
        printf("dry run: would call the hook with prepare, %s, writes-ok (until it succeeds), "
               "stats, finish; %s; gates %s.\n",
               loss ? "inject" : "no inject",
               loss ? "the daemons detect the loss and start the failover runbook"
                    : "triad is asked for the run through the control API",
               cli_flag(a, "yes") ? "approved automatically (--yes)" : "wait for operators");
        goto out;
    }
    if (cfg.drill.n_hook && hook(&cfg, "prepare", scenario, site, 0, NULL) != 0)
        printf("  (the hook's prepare phase failed; going on)\n");
    sleep(1); /* some writes before the fault */
    int64_t fault = wall_ms();
    if (loss) {
        int rc = hook(&cfg, "inject", scenario, site, fault, NULL);
        printf("fault injected at %lld (hook exit %d)\n", (long long)fault, rc);
    } else {
        char err[256];
        json_t *body = json_pack("{s:s,s:s}", "kind", scenario, "to", target);
        if (!strcmp(scenario, "failback"))
            json_object_set_new(body, "runbook", json_string("failback"));
        json_t *ans = NULL;
        int code = api_call(cfg.api.socket, "POST", "/v1/runs", body, &ans, err, sizeof err);
        printf("%s requested: %s\n", scenario,
               code == 202           ? str(ans, "detail")
               : json_is_object(ans) ? str(ans, "error")
                                     : err);
        json_decref(ans);
        json_decref(body);
        if (code != 202) {
            result = EXIT_FAILED;
            goto out;
        }
    }
    /* Follow the run. */
    char run[64] = "", last_state[2048] = "";
    int64_t deadline = fault + cfg.drill.timeout_ms;
    bool ended = false;
    json_t *final = NULL;
    while (wall_ms() < deadline && !ended) {
        usleep(POLL_US);
        json_decref(st);
        st = status(&cfg);
        json_t *r = st ? json_object_get(st, "run") : NULL;
        if (!json_is_object(r) || !strcmp(str(r, "id"), before_run))
            continue;
        snprintf(run, sizeof run, "%s", str(r, "id"));
        char now_state[2048] = "";
        size_t i, o = 0;
        json_t *s;
        json_array_foreach(json_object_get(r, "steps"), i, s)
        {
            o += (size_t)snprintf(now_state + o, sizeof now_state - o, "%s=%s ", str(s, "id"),
                                  str(s, "state"));
            if (o >= sizeof now_state)
                break;
            json_t *g = json_object_get(s, "gate");
            if (json_is_object(g) && cli_flag(a, "yes")) {
                bool mine = false;
                size_t k;
                json_t *who;
                json_array_foreach(json_object_get(g, "approved_by"), k, who)
                {
                    mine = mine || !strcmp(json_string_value(who), "root");
                }
                if (!mine)
                    approve(&cfg, run, str(s, "id"), str(g, "prompt"));
            }
        }
        if (strcmp(now_state, last_state) != 0) {
            printf("  +%5.1fs run %s: %s\n", (double)(wall_ms() - fault) / 1000.0, run, now_state);
            snprintf(last_state, sizeof last_state, "%s", now_state);
        }
        const char *rs = str(r, "state");
        if (!strcmp(rs, "done") || !strcmp(rs, "failed") || !strcmp(rs, "aborted")) {
            ended = true;
            final = json_incref(r);
        }
    }
    if (!run[0]) {
        printf("no run started within the drill's timeout\n");
        result = EXIT_FAILED;
    }
    /* Writes through the public name again? */
    int64_t service_ok = 0;
    if (run[0] && cfg.drill.n_hook) {
        int64_t until = wall_ms() + cfg.drill.service_timeout_ms;
        while (wall_ms() < until) {
            if (hook(&cfg, "writes-ok", scenario, site, fault, NULL) == 0) {
                service_ok = wall_ms();
                break;
            }
            usleep(POLL_US);
        }
    }
    struct buf stats;
    buf_init(&stats, 1 << 20);
    json_t *writer = json_null();
    if (cfg.drill.n_hook && hook(&cfg, "stats", scenario, site, fault, &stats) == 0) {
        json_t *w = json_loadb(stats.data ? stats.data : "", stats.len, 0, NULL);
        if (json_is_object(w)) {
            json_decref(writer);
            writer = w;
            /* The writer saw the first write succeed: more exact than our poll. */
            if (json_is_integer(json_object_get(w, "first_ack_after_ms")))
                service_ok = json_integer_value(json_object_get(w, "first_ack_after_ms"));
        } else {
            json_decref(w);
        }
    }
    buf_free(&stats);
    if (cfg.drill.n_hook)
        hook(&cfg, "finish", scenario, site, fault, NULL);
    drill = json_pack("{s:s,s:s,s:s,s:I,s:o,s:o,s:s}", "scenario", scenario, "site", site, "target",
                      target, "fault_ms", (json_int_t)fault, "service_ok_ms",
                      service_ok ? json_integer(service_ok) : json_null(), "writer", writer, "run",
                      run);
    if (run[0]) {
        /* Wait until this site's copy of the journal has the run's end. */
        for (int i = 0; i < 25; i++) {
            char path[4200];
            snprintf(path, sizeof path, "%s/runs/%s.jsonl", cfg.state_dir, run);
            struct buf jb;
            buf_init(&jb, 16u << 20);
            bool has_end = fsutil_read(path, &jb) == 0 && jb.data && strstr(jb.data, "\"run-end\"");
            buf_free(&jb);
            if (has_end)
                break;
            usleep(POLL_US);
        }
        char dir[4200], path[4300], html[4300];
        snprintf(dir, sizeof dir, "%s/drills", cfg.state_dir);
        fsutil_mkdirs(dir, 0700);
        snprintf(path, sizeof path, "%s/%s.json", dir, run);
        char *text = json_dumps(drill, JSON_INDENT(2));
        fsutil_write_atomic(path, text, strlen(text), 0600);
        free(text);
        snprintf(dir, sizeof dir, "%s/reports", cfg.state_dir);
        fsutil_mkdirs(dir, 0755);
        snprintf(html, sizeof html, "%s/%s.html", dir, run);
        printf("\n");
        report_render(cfg.state_dir, run, "md", NULL, true);
        report_render(cfg.state_dir, run, "html", html, false);
        printf("report: %s\n", html);
        const char *fs = final ? str(final, "state") : "unknown";
        json_t *lost = json_object_get(writer, "acked_lost");
        if (strcmp(fs, "done") != 0 || !service_ok ||
            (json_is_integer(lost) && json_integer_value(lost) > 0))
            result = EXIT_FAILED;
    }
    json_decref(final);
out:
    json_decref(drill);
    json_decref(st);
    config_free(&cfg);
    return result;
}
