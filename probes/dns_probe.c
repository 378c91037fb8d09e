/* The dns probe: what each listed server answers for a public name, asked
 * of that server directly, compared with an expected value when one is set.
 * Every server must answer (and match) for the probe to pass. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/dns_client.h"
#include "lib/yaml_read.h"
#include "probes/probe.h"

#define DNS_PROBE_MAX_SERVERS 16

struct server_answer {
    bool done;
    bool ok;
    char text[160];
};

struct dns_probe {
    uint16_t type;
    char *hosts[DNS_PROBE_MAX_SERVERS];
    uint16_t ports[DNS_PROBE_MAX_SERVERS];
    size_t n;
    struct dns_query *q[DNS_PROBE_MAX_SERVERS];
    struct server_answer ans[DNS_PROBE_MAX_SERVERS];
    size_t outstanding;
    uint64_t seq;
};

struct cb_ctx {
    struct probe *p;
    uint64_t seq;
    size_t idx;
};

static void conclude(struct probe *p)
{
    struct dns_probe *dp = p->drv;
    struct buf detail;
    buf_init(&detail, PROBE_DETAIL_MAX - 1);
    bool ok = true;
    json_t *answers = json_object();
    for (size_t i = 0; i < dp->n; i++) {
        ok = ok && dp->ans[i].ok;
        buf_printf(&detail, "%s%s: %s", i ? "; " : "", dp->hosts[i], dp->ans[i].text);
        json_object_set_new(answers, dp->hosts[i], json_string(dp->ans[i].text));
    }
    probe_finish(p, ok, json_pack("{s:o}", "answers", answers), "%s",
                 detail.data ? detail.data : "");
    buf_free(&detail);
}

static void on_answer(struct dns_query *q, const struct dns_result *res, void *arg)
{
    (void)q;
    struct cb_ctx *ctx = arg;
    struct probe *p = ctx->p;
    struct dns_probe *dp = p->drv;
    size_t i = ctx->idx;
    bool current = dp && ctx->seq == dp->seq;
    free(ctx);
    if (!current)
        return;
    dp->q[i] = NULL;
    struct server_answer *a = &dp->ans[i];
    a->done = true;
    const char *expect = p->cfg->expect;
    if (res->result < 0) {
        snprintf(a->text, sizeof a->text, "%s", res->detail);
        a->ok = false;
    } else {
        struct buf vals;
        buf_init(&vals, sizeof a->text - 1);
        bool matched = !expect;
        uint32_t ttl = 0;
        size_t shown = 0;
        for (size_t k = 0; k < res->n_records; k++) {
            if (res->records[k].type != dp->type)
                continue;
            buf_printf(&vals, "%s%s", shown++ ? "," : "", res->records[k].value);
            ttl = res->records[k].ttl;
            if (expect && strcmp(res->records[k].value, expect) == 0)
                matched = true;
        }
        if (!shown) {
            snprintf(a->text, sizeof a->text, "no %s record (%s)", dns_type_name(dp->type),
                     res->detail);
            a->ok = false;
        } else {
            snprintf(a->text, sizeof a->text, "%s ttl=%u%s%s%s", vals.data, ttl,
                     matched ? "" : " (expected ", matched ? "" : expect, matched ? "" : ")");
            a->ok = matched;
        }
        buf_free(&vals);
    }
    if (--dp->outstanding == 0)
        conclude(p);
}

static int dns_open(struct probe *p)
{
    struct dns_probe *dp = calloc(1, sizeof *dp);
    if (!dp)
        return -ENOMEM;
    p->drv = dp;
    dp->type = dns_type_parse(p->cfg->qtype);
    for (size_t i = 0; i < p->cfg->n_servers && i < DNS_PROBE_MAX_SERVERS; i++) {
        const char *why = NULL;
        if (hostport_parse(p->cfg->servers[i], 53, &dp->hosts[i], &dp->ports[i], &why) < 0)
            return -EINVAL;
        dp->n++;
    }
    return dp->n ? 0 : -EINVAL;
}

static void dns_run(struct probe *p)
{
    struct dns_probe *dp = p->drv;
    dp->seq++;
    dp->outstanding = dp->n;
    memset(dp->ans, 0, sizeof dp->ans);
    for (size_t i = 0; i < dp->n; i++) {
        struct cb_ctx *ctx = malloc(sizeof *ctx);
        int rc = -ENOMEM;
        if (ctx) {
            *ctx = (struct cb_ctx){ p, dp->seq, i };
            struct dns_query_opts o = {
                .server = dp->hosts[i],
                .port = dp->ports[i],
                .name = p->cfg->qname,
                .type = dp->type,
                .timeout_ms = (uint32_t)p->cfg->timeout_ms,
                .tries = 2,
                .no_recurse = 1,
            };
            rc = dns_query_start(p->sched->dns, &o, on_answer, ctx, &dp->q[i]);
        }
        if (rc < 0) {
            free(ctx);
            dp->q[i] = NULL;
            dp->ans[i].done = true;
            snprintf(dp->ans[i].text, sizeof dp->ans[i].text, "cannot query: %s", strerror(-rc));
            if (--dp->outstanding == 0) {
                conclude(p);
                return;
            }
        }
    }
}

static void dns_abort(struct probe *p)
{
    struct dns_probe *dp = p->drv;
    dp->seq++;
    for (size_t i = 0; i < dp->n; i++) {
        if (dp->q[i])
            dns_query_cancel(dp->q[i]);
        dp->q[i] = NULL;
    }
}

static void dns_close(struct probe *p)
{
    struct dns_probe *dp = p->drv;
    if (dp) {
        dp->seq++;
        for (size_t i = 0; i < DNS_PROBE_MAX_SERVERS; i++)
            free(dp->hosts[i]);
    }
    free(dp);
    p->drv = NULL;
    probe_driver_closed(p);
}

const struct probe_driver probe_driver_dns = {
    .kind = "dns",
    .open = dns_open,
    .run = dns_run,
    .abort = dns_abort,
    .close = dns_close,
};
