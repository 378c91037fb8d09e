/* `triad failover`, `switchover`, `approve`, `deny`, `abort`, `ack`: operator
 * requests to the local daemon (which forwards them to the leader). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchestrator/api_client.h"
#include "orchestrator/cli.h"
#include "orchestrator/config.h"

static int load(const struct cli_args *a, struct config *cfg)
{
    struct diag d;
    struct config_load_opts opts = { .no_file_checks = true, .skip_runbooks = true };
    diag_init(&d);
    int r = config_load(cfg, a->config, &opts, &d);
    if (r < 0)
        diag_print(&d, stderr);
    diag_free(&d);
    return r;
}

/* Sends one request and prints the outcome; the exit code follows it. */
static int call(const char *cmd, const struct config *cfg, const char *method, const char *path,
                json_t *body, json_t **out)
{
    char err[512];
    json_t *ans = NULL;
    int code = api_call(cfg->api.socket, method, path, body, &ans, err, sizeof err);
    if (code < 0) {
        fprintf(stderr, "triad %s: %s\n", cmd, err);
        return EXIT_PEER;
    }
    const char *detail = json_string_value(json_object_get(ans, "detail"));
    const char *error = json_string_value(json_object_get(ans, "error"));
    int result = EXIT_OK;
    if (code >= 200 && code < 300) {
        if (detail)
            printf("%s\n", detail);
    } else {
        fprintf(stderr, "triad %s: %s (HTTP %d)\n", cmd, error ? error : "refused", code);
        result = code == 403 ? EXIT_USAGE : code == 503 ? EXIT_PEER : EXIT_FAILED;
    }
    if (out)
        *out = ans;
    else
        json_decref(ans);
    return result;
}

static int start_run(const struct cli_args *a, const char *kind)
{
    const char *to = cli_get(a, "to");
    if (!to) {
        fprintf(stderr, "triad %s: --to SITE is required\n", kind);
        return EXIT_USAGE;
    }
    struct config cfg;
    if (load(a, &cfg) < 0) {
        config_free(&cfg);
        return EXIT_CONFIG;
    }
    const char *rb = cli_get(a, "runbook");
    const char *k = rb && !strcmp(rb, "failback") ? "failback" : kind;
    json_t *body = json_pack("{s:s,s:s}", "kind", k, "to", to);
    if (rb)
        json_object_set_new(body, "runbook", json_string(rb));
    int r = call(kind, &cfg, "POST", "/v1/runs", body, NULL);
    json_decref(body);
    config_free(&cfg);
    return r;
}

int cmd_failover(const struct cli_args *a)
{
    return start_run(a, "failover");
}

int cmd_switchover(const struct cli_args *a)
{
    return start_run(a, "switchover");
}

/* The gate's prompt, as the daemon shows it (recorded with the answer). */
static char *gate_prompt(const struct config *cfg, const char *run, const char *step)
{
    char path[200], err[256];
    snprintf(path, sizeof path, "/v1/runs/%s", run);
    json_t *ans = NULL;
    char *prompt = NULL;
    if (api_call(cfg->api.socket, "GET", path, NULL, &ans, err, sizeof err) == 200) {
        size_t i;
        json_t *s;
        json_array_foreach(json_object_get(ans, "steps"), i, s)
        {
            const char *p =
                json_string_value(json_object_get(json_object_get(s, "gate"), "prompt"));
            if (p && !strcmp(json_string_value(json_object_get(s, "id")), step))
                prompt = strdup(p);
        }
    }
    json_decref(ans);
    return prompt;
}

static int decide(const struct cli_args *a, bool approve)
{
    struct config cfg;
    if (load(a, &cfg) < 0) {
        config_free(&cfg);
        return EXIT_CONFIG;
    }
    const char *run = a->positional[0], *step = a->positional[1];
    const char *reason = cli_get(a, "reason");
    if (!approve && !reason) {
        fprintf(stderr, "triad deny: --reason TEXT is required (it is recorded)\n");
        config_free(&cfg);
        return EXIT_USAGE;
    }
    char *prompt = gate_prompt(&cfg, run, step);
    if (prompt)
        printf("%s step '%s' of run %s: %s\n", approve ? "Approving" : "Denying", step, run,
               prompt);
    json_t *body = json_pack("{s:s}", "shown", prompt ? prompt : "(nothing shown: command line)");
    if (reason)
        json_object_set_new(body, "reason", json_string(reason));
    char path[256];
    snprintf(path, sizeof path, "/v1/runs/%s/steps/%s/%s", run, step, approve ? "approve" : "deny");
    int r = call(approve ? "approve" : "deny", &cfg, "POST", path, body, NULL);
    json_decref(body);
    free(prompt);
    config_free(&cfg);
    return r;
}

int cmd_approve(const struct cli_args *a)
{
    return decide(a, true);
}

int cmd_deny(const struct cli_args *a)
{
    return decide(a, false);
}

int cmd_abort(const struct cli_args *a)
{
    struct config cfg;
    if (load(a, &cfg) < 0) {
        config_free(&cfg);
        return EXIT_CONFIG;
    }
    char path[200];
    snprintf(path, sizeof path, "/v1/runs/%s/abort", a->positional[0]);
    int r = call("abort", &cfg, "POST", path, NULL, NULL);
    config_free(&cfg);
    return r;
}

int cmd_ack(const struct cli_args *a)
{
    struct config cfg;
    if (load(a, &cfg) < 0) {
        config_free(&cfg);
        return EXIT_CONFIG;
    }
    int r = call("ack", &cfg, "POST", "/v1/ack", NULL, NULL);
    config_free(&cfg);
    return r;
}
