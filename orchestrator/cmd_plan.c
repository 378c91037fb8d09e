/* `triad plan`: the step state machine (--fsm), or what a runbook would do. */
#include <stdio.h>
#include <stdlib.h>

#include "lib/buf.h"
#include "orchestrator/cli.h"
#include "runbooks/fsm.h"

static int print_fsm(const struct cli_args *a)
{
    if (cli_flag(a, "dot")) {
        struct buf b;
        buf_init(&b, 1 << 20);
        rb_fsm_to_dot(&b);
        fputs(b.data, stdout);
        buf_free(&b);
        return EXIT_OK;
    }
    json_t *j = rb_fsm_to_json();
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    printf("%s\n", text);
    free(text);
    json_decref(j);
    return EXIT_OK;
}

int cmd_plan(const struct cli_args *a)
{
    if (cli_flag(a, "fsm"))
        return print_fsm(a);
    return cmd_plan_runbook(a);
}

/* ---- the dry run of a runbook ---- */

#include <errno.h>
#include <string.h>

#include "lib/dns_client.h"
#include "lib/http_client.h"
#include "lib/log.h"
#include "orchestrator/api_client.h"
#include "orchestrator/config.h"
#include "runbooks/action.h"
#include "runbooks/runbook.h"

struct plan {
    struct runbook *rb;
    json_t *ctx;
    struct rb_env env;
    size_t cur;
    int exit_code;
    json_t *out; /* --json */
    long long epoch;
    bool json;
};

static void plan_step(struct plan *p);

static void on_check(struct rb_exec *x, int status, const char *detail, void *arg)
{
    struct plan *p = arg;
    const struct rb_step *st = &p->rb->steps[p->cur];
    const char *verdict = status == 1   ? "already true: would be skipped"
                          : status == 0 ? "would run"
                                        : "cannot tell now: would run";
    if (p->json) {
        json_t *o =
            json_pack("{s:s,s:s,s:s,s:s,s:O}", "id", st->id, "action", st->action_name, "verdict",
                      status == 1 ? "skip" : "run", "check", detail, "params", x->params);
        struct buf b;
        buf_init(&b, 2048);
        rb_exec_describe(&p->env, st, x->params, p->ctx, &b);
        json_object_set_new(o, "describe", json_string(b.data ? b.data : ""));
        json_object_set_new(o, "approve", json_string(rb_approve_name(st->approve)));
        buf_free(&b);
        json_array_append_new(json_object_get(p->out, "steps"), o);
    } else {
        printf("     check: %s (%s)\n", detail, verdict);
    }
    p->cur++;
    plan_step(p);
}

static void plan_step(struct plan *p)
{
    while (p->cur < p->rb->n_steps) {
        const struct rb_step *st = &p->rb->steps[p->cur];
        struct diag d;
        diag_init(&d);
        json_t *params = rb_resolve_params(st, p->ctx, &d);
        if (!p->json) {
            printf("%2zu. %-20s %s%s\n", p->cur + 1, st->id, st->action_name,
                   st->approve == RB_APPROVE_NONE     ? ""
                   : st->approve == RB_APPROVE_ALWAYS ? "  [gate: always]"
                                                      : "  [gate: approval required]");
        }
        if (!params) {
            if (!p->json)
                printf("     cannot resolve its parameters: %s\n", d.n ? d.items[0].msg : "?");
            p->exit_code = EXIT_CONFIG;
            diag_free(&d);
            p->cur++;
            continue;
        }
        diag_free(&d);
        if (!p->json) {
            struct buf b;
            buf_init(&b, 2048);
            rb_exec_describe(&p->env, st, params, p->ctx, &b);
            printf("     %s\n", b.data ? b.data : "");
            buf_free(&b);
        }
        struct rb_exec *x =
            rb_exec_start(&p->env, st, params, p->ctx, "plan", p->epoch, RB_OP_CHECK, on_check, p);
        json_decref(params);
        if (x)
            return;
        p->cur++;
    }
    http_client_close(p->env.http, NULL, NULL);
    dns_client_close(p->env.dns, NULL, NULL);
}

int cmd_plan_runbook(const struct cli_args *a)
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
    const char *name = a->n_positional ? a->positional[0] : cfg.failover.runbook;
    const struct cfg_runbook_ref *ref = config_runbook(&cfg, name);
    int result = EXIT_OK;
    json_t *status = NULL;
    struct plan p = { .json = cli_flag(a, "json"), .exit_code = EXIT_OK };
    json_t *cj = config_runbook_json(&cfg);
    if (!ref) {
        fprintf(stderr, "triad plan: no runbook '%s' under 'runbooks'\n", name);
        result = EXIT_CONFIG;
        goto out;
    }
    if (rb_load(ref->path, cj, &p.rb, &d) < 0) {
        diag_print(&d, stderr);
        result = EXIT_CONFIG;
        goto out;
    }
    const char *to = cli_get(a, "to") ? cli_get(a, "to") : cfg.failover.target;
    if (!config_site(&cfg, to)) {
        fprintf(stderr, "triad plan: --to %s is not a configured site\n", to);
        result = EXIT_USAGE;
        goto out;
    }
    /* The daemon's view: the current primary, and the last decision (to
     * replay it when it went to the same site). */
    char from[64], err[256];
    long long epoch = 0;
    snprintf(from, sizeof from, "%s", config_primary(&cfg)->name);
    if (api_call(cfg.api.socket, "GET", "/v1/status", NULL, &status, err, sizeof err) == 200) {
        json_t *dec = json_object_get(status, "decision");
        const char *pri = json_string_value(json_object_get(status, "primary_site"));
        const char *dto = json_string_value(json_object_get(dec, "to"));
        const char *dfrom = json_string_value(json_object_get(dec, "from"));
        if (dto && dfrom && !strcmp(dto, to)) {
            snprintf(from, sizeof from, "%s", dfrom);
            epoch = json_integer_value(json_object_get(dec, "epoch"));
        } else if (pri) {
            snprintf(from, sizeof from, "%s", pri);
        }
    }
    if (cli_get(a, "from"))
        snprintf(from, sizeof from, "%s", cli_get(a, "from"));
    if (cli_get(a, "epoch")) {
        char *end;
        errno = 0;
        epoch = strtoll(cli_get(a, "epoch"), &end, 10);
        if (errno || *end || epoch < 0) {
            fprintf(stderr, "triad plan: --epoch wants a number >= 0\n");
            result = EXIT_USAGE;
            goto out;
        }
    }
    if (!config_site(&cfg, from)) {
        fprintf(stderr, "triad plan: --from %s is not a configured site\n", from);
        result = EXIT_USAGE;
        goto out;
    }
    p.epoch = epoch;
    p.ctx = rb_context(cj, "plan", epoch, from, to, p.rb->name);
    log_set_level(LOG_ERROR);
    http_global_init();
    dns_global_init();
    uv_loop_t loop;
    uv_loop_init(&loop);
    p.env.loop = &loop;
    p.env.cfg = &cfg;
    p.env.dry_run = true;
    http_client_new(&loop, &p.env.http);
    dns_client_new(&loop, &p.env.dns);
    if (p.json)
        p.out =
            json_pack("{s:s,s:s,s:s,s:[]}", "runbook", p.rb->name, "from", from, "to", to, "steps");
    else
        printf("runbook %s (%s): %s -> %s, epoch %lld, mode %s\n%s\n\n", p.rb->name, ref->path,
               from, to, epoch, config_mode_name(cfg.failover.mode),
               p.rb->description ? p.rb->description : "");
    plan_step(&p);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (p.json) {
        char *text = json_dumps(p.out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("%s\n", text);
        free(text);
        json_decref(p.out);
    } else {
        printf("\n(a dry run: nothing was changed; checks that need the daemon's probe results "
               "cannot tell here)\n");
    }
    result = p.exit_code;
    http_global_cleanup();
    dns_global_cleanup();
out:
    json_decref(status);
    rb_free(p.rb);
    json_decref(p.ctx);
    json_decref(cj);
    diag_free(&d);
    config_free(&cfg);
    return result;
}
