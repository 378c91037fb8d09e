/* `triad status`: the local daemon's view, as a compact table or JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orchestrator/api_client.h"
#include "orchestrator/cli.h"
#include "orchestrator/config.h"

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "-";
}

static void print_human(json_t *st)
{
    json_t *q = json_object_get(st, "quorum");
    printf("cluster %s  site %s  epoch %lld  leader %s  primary %s  quorum %lld/%lld (have/need)\n",
           str(st, "cluster"), str(st, "site"),
           (long long)json_integer_value(json_object_get(st, "epoch")), str(st, "leader"),
           str(st, "primary_site"), (long long)json_integer_value(json_object_get(q, "have")),
           (long long)json_integer_value(json_object_get(q, "need")));
    json_t *lease = json_object_get(st, "lease");
    if (json_is_true(json_object_get(lease, "primary")))
        printf("lease: %s%s\n", json_is_true(json_object_get(lease, "held")) ? "held" : "NOT held",
               json_is_true(json_object_get(lease, "fenced")) ? ", this site is FENCED" : "");
    else if (json_is_true(json_object_get(lease, "fenced")))
        printf("this site is FENCED\n");
    printf("failover mode: %s%s\n", str(st, "mode"),
           json_is_true(json_object_get(st, "reload_pending"))
               ? " (a reloaded configuration waits to be applied)"
               : "");
    json_t *dec = json_object_get(st, "decision");
    if (json_is_object(dec))
        printf("decision: epoch %lld %s %s -> %s (run %s, leader %s)\n",
               (long long)json_integer_value(json_object_get(dec, "epoch")), str(dec, "kind"),
               str(dec, "from"), str(dec, "to"), str(dec, "run"), str(dec, "leader"));
    printf("\n%-6s %-8s %-7s %-26s %s\n", "SITE", "ROLE", "STATE", "LINK", "PROBES");
    const char *name;
    json_t *s;
    json_object_foreach(json_object_get(st, "sites"), name, s)
    {
        char link[27];
        snprintf(link, sizeof link, "%s", str(s, "link"));
        printf("%-6s %-8s %-7s %-26s", name, str(s, "role"), str(s, "state"),
               json_object_get(s, "link") ? link : "(this daemon)");
        size_t i;
        json_t *p;
        json_array_foreach(json_object_get(s, "probes"), i, p)
        {
            printf("%s%s %s", i ? ", " : " ", str(p, "name"), str(p, "state"));
        }
        printf("\n");
        json_array_foreach(json_object_get(s, "probes"), i, p)
        {
            printf("       %-14s %s\n", str(p, "name"), str(p, "detail"));
        }
    }
    json_t *rd = json_object_get(st, "readiness");
    json_t *ready = json_object_get(rd, "ready");
    if (json_is_boolean(ready)) {
        printf("\nready: %s", json_is_true(ready) ? "yes" : "no");
        size_t i;
        json_t *why;
        json_array_foreach(json_object_get(rd, "reasons"), i, why)
        {
            printf("%s%s", i ? "; " : " (", json_string_value(why));
        }
        printf("%s\n", json_array_size(json_object_get(rd, "reasons")) ? ")" : "");
    } else {
        printf("\nready: not checked yet\n");
    }
    json_t *run = json_object_get(st, "run");
    if (json_is_object(run))
        printf("\nrun %s (%s): %s\n", str(run, "id"), str(run, "runbook"), str(run, "state"));
    else
        printf("\nno run in progress\n");
}

int cmd_status(const struct cli_args *a)
{
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
    char err[512];
    json_t *st = NULL;
    int code = api_call(cfg.api.socket, "GET", "/v1/status", NULL, &st, err, sizeof err);
    int result = EXIT_OK;
    if (code < 0) {
        fprintf(stderr, "triad status: %s\n", err);
        result = EXIT_PEER;
    } else if (code != 200 || !json_is_object(st)) {
        fprintf(stderr, "triad status: the daemon answered %d\n", code);
        result = EXIT_PEER;
    } else if (cli_flag(a, "json")) {
        char *text = json_dumps(st, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("%s\n", text ? text : "{}");
        free(text);
    } else {
        print_human(st);
    }
    json_decref(st);
    config_free(&cfg);
    return result;
}
