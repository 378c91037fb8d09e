/* `triad console`: an interactive terminal view of the active run (plan,
 * progress, the sites' probes) that asks y/N at each gate. Redrawn every
 * second from the local daemon's status; answers go through the same API
 * as `triad approve` / `triad deny`, as the Unix user running the console. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "orchestrator/api_client.h"
#include "orchestrator/cli.h"
#include "orchestrator/config.h"

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "-";
}

static const char *mark(const char *state)
{
    if (!strcmp(state, "done"))
        return "[done]   ";
    if (!strcmp(state, "skipped"))
        return "[skipped]";
    if (!strcmp(state, "failed"))
        return "[FAILED] ";
    if (!strcmp(state, "running") || !strcmp(state, "verifying"))
        return "[..]     ";
    if (!strcmp(state, "awaiting_approval"))
        return "[GATE]   ";
    return "[ ]      ";
}

static void draw(json_t *st)
{
    printf("\033[H\033[2J");
    time_t now = time(NULL);
    char ts[32];
    strftime(ts, sizeof ts, "%H:%M:%S", localtime(&now));
    json_t *q = json_object_get(st, "quorum");
    printf("triad console  %s  cluster %s  site %s  epoch %lld  leader %s  primary %s  quorum "
           "%lld/%lld\n\n",
           ts, str(st, "cluster"), str(st, "site"),
           (long long)json_integer_value(json_object_get(st, "epoch")), str(st, "leader"),
           str(st, "primary_site"), (long long)json_integer_value(json_object_get(q, "have")),
           (long long)json_integer_value(json_object_get(q, "need")));
    const char *name;
    json_t *s;
    json_object_foreach(json_object_get(st, "sites"), name, s)
    {
        printf("  %-5s %-8s %-7s", name, str(s, "role"), str(s, "state"));
        size_t i;
        json_t *p;
        json_array_foreach(json_object_get(s, "probes"), i, p)
        {
            printf(" %s:%s", str(p, "name"), str(p, "state"));
        }
        printf("\n");
    }
    json_t *run = json_object_get(st, "run");
    if (!json_is_object(run)) {
        printf("\nno run in progress (q + Enter quits)\n");
        return;
    }
    printf("\nrun %s  %s  %s -> %s  epoch %lld  %s\n", str(run, "id"), str(run, "runbook"),
           str(run, "from"), str(run, "to"),
           (long long)json_integer_value(json_object_get(run, "epoch")), str(run, "state"));
    size_t i;
    json_t *step;
    json_array_foreach(json_object_get(run, "steps"), i, step)
    {
        printf("  %s %-22s %-12s %s\n", mark(str(step, "state")), str(step, "id"),
               str(step, "action"), str(step, "detail"));
    }
    if (json_object_get(run, "end_reason"))
        printf("\n%s (q + Enter quits)\n", str(run, "end_reason"));
}

/* The gate waiting now, if any. */
static json_t *waiting_gate(json_t *st, const char **run, const char **step)
{
    json_t *r = json_object_get(st, "run");
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(r, "steps"), i, s)
    {
        json_t *g = json_object_get(s, "gate");
        if (json_is_object(g)) {
            *run = str(r, "id");
            *step = str(s, "id");
            return g;
        }
    }
    return NULL;
}

/* A line from the terminal within ms; 1 with a line, 0 on timeout. */
static int read_line(char *buf, size_t len, int ms)
{
    struct pollfd p = { .fd = 0, .events = POLLIN };
    int r = poll(&p, 1, ms);
    if (r <= 0)
        return 0;
    if (!fgets(buf, (int)len, stdin))
        return -1;
    return 1;
}

int cmd_console(const struct cli_args *a)
{
    if (!isatty(0)) {
        fprintf(stderr, "triad console: needs a terminal (use triad approve / deny in scripts)\n");
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
    char asked[200] = "", line[256], err[512];
    int result = EXIT_OK;
    for (;;) {
        json_t *st = NULL;
        int code = api_call(cfg.api.socket, "GET", "/v1/status", NULL, &st, err, sizeof err);
        if (code != 200) {
            printf("\033[H\033[2Jtriad console: %s (retrying; q + Enter quits)\n",
                   code < 0 ? err : "the daemon did not answer");
            json_decref(st);
            if (read_line(line, sizeof line, 1000) == 1 && line[0] == 'q')
                break;
            continue;
        }
        draw(st);
        const char *run = NULL, *step = NULL;
        json_t *gate = waiting_gate(st, &run, &step);
        char key[200];
        if (gate)
            snprintf(key, sizeof key, "%s/%s/%lld", run, step,
                     (long long)json_integer_value(json_object_get(gate, "since_ms")));
        if (gate && strcmp(key, asked) != 0) {
            const char *prompt = str(gate, "prompt");
            const char *kind = str(gate, "kind");
            if (!strcmp(kind, "retry"))
                printf("\n%s [y/N] ", prompt);
            else if (!strcmp(kind, "confirm"))
                printf("\nStep '%s': %s? [y/N] ", step, prompt);
            else
                printf("\nApprove step '%s' (%s)? [y/N] ", step, prompt);
            fflush(stdout);
            int got = 0;
            /* Wait for the answer; give up if the gate is answered elsewhere. */
            for (int waited = 0; !got; waited++) {
                got = read_line(line, sizeof line, 1000);
                if (got < 0)
                    goto out;
                if (got)
                    break;
                json_t *st2 = NULL;
                if (api_call(cfg.api.socket, "GET", "/v1/status", NULL, &st2, err, sizeof err) ==
                    200) {
                    const char *r2, *s2;
                    json_t *g2 = waiting_gate(st2, &r2, &s2);
                    bool same = g2 && !strcmp(r2, run) && !strcmp(s2, step);
                    json_decref(st2);
                    if (!same) {
                        printf("\n(answered elsewhere)\n");
                        break;
                    }
                }
            }
            snprintf(asked, sizeof asked, "%s", key);
            if (got == 1) {
                bool yes = line[0] == 'y' || line[0] == 'Y';
                json_t *body =
                    json_pack("{s:s,s:s}", "shown", prompt, "reason", "answered no at the console");
                char path[256];
                snprintf(path, sizeof path, "/v1/runs/%s/steps/%s/%s", run, step,
                         yes ? "approve" : "deny");
                json_t *ans = NULL;
                int c2 = api_call(cfg.api.socket, "POST", path, body, &ans, err, sizeof err);
                const char *msg =
                    json_string_value(json_object_get(ans, c2 == 200 ? "detail" : "error"));
                printf("%s\n", msg ? msg : (c2 < 0 ? err : "no answer"));
                json_decref(ans);
                json_decref(body);
                sleep(1);
            }
            json_decref(st);
            continue;
        }
        json_decref(st);
        if (read_line(line, sizeof line, 1000) == 1 && line[0] == 'q')
            break;
    }
out:
    config_free(&cfg);
    return result;
}
