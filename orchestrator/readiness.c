/* Failover readiness: every failover.readiness_interval, each daemon runs
 * the non-destructive `ready` checks of the failover runbook's steps (as
 * they would run now: from the primary to the target) and checks its own
 * certificates, so that rotted prerequisites - an expired Kubernetes token,
 * a TSIG key the server no longer accepts, an unreachable BMC, a replica
 * that stopped streaming, a certificate about to expire - are found before
 * the disaster. `triad status` shows ready yes/no with the reasons; the
 * metric triad_failover_ready follows; turning to "no" notifies. */
#include "orchestrator/readiness.h"

#include <errno.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "lib/loop.h"
#include "orchestrator/daemon.h"
#include "orchestrator/notify.h"
#include "runbooks/action.h"
#include "runbooks/runbook.h"

#define CERT_WARN_DAYS 14

struct readiness {
    struct daemon *d;
    struct rb_env env;
    struct runbook *rb;
    json_t *ctx;
    size_t cur;
    struct rb_exec *x;
    json_t *reasons; /* of the round in progress */
    json_t *last;    /* reasons of the last complete round */
    bool ready, known;
    int64_t checked_ms;
    int64_t next_ms;
    bool closing;
};

static void next_step(struct readiness *rd);

static void finish_round(struct readiness *rd)
{
    bool ok = json_array_size(rd->reasons) == 0;
    if (rd->known && rd->ready && !ok) {
        char text[1024];
        snprintf(text, sizeof text, "Failover readiness lost at %s: %s", rd->d->cfg.site,
                 json_string_value(json_array_get(rd->reasons, 0)));
        notify_send(rd->d->notifier, "readiness", "warning", text);
    }
    if (!rd->known || rd->ready != ok)
        log_ev(ok ? LOG_INFO : LOG_WARN, ok ? "+ready" : "-ready",
               ok ? "the failover runbook's checks pass"
                  : json_string_value(json_array_get(rd->reasons, 0)));
    rd->ready = ok;
    rd->known = true;
    rd->checked_ms = loop_now_ms();
    json_decref(rd->last);
    rd->last = rd->reasons;
    rd->reasons = NULL;
    rb_free(rd->rb);
    rd->rb = NULL;
    json_decref(rd->ctx);
    rd->ctx = NULL;
}

static void free_all(struct readiness *rd)
{
    rb_free(rd->rb);
    json_decref(rd->ctx);
    json_decref(rd->reasons);
    json_decref(rd->last);
    free(rd);
}

static void on_ready(struct rb_exec *x, int status, const char *detail, void *arg)
{
    struct readiness *rd = arg;
    rd->x = NULL;
    if (rd->closing) {
        free_all(rd);
        return;
    }
    if (status < 0)
        json_array_append_new(
            rd->reasons, json_sprintf("step %s (%s): %s", x->step->id, x->action->name, detail));
    rd->cur++;
    next_step(rd);
}

static void next_step(struct readiness *rd)
{
    while (rd->cur < rd->rb->n_steps) {
        const struct rb_step *st = &rd->rb->steps[rd->cur];
        struct diag dg;
        diag_init(&dg);
        json_t *params = rb_resolve_params(st, rd->ctx, &dg);
        const char *where = st->action && st->action->runs_on && params
                                ? json_string_value(json_object_get(params, st->action->runs_on))
                                : NULL;
        if (!params) {
            json_array_append_new(rd->reasons, json_sprintf("step %s: %s", st->id,
                                                            dg.n ? dg.items[0].msg : "bad params"));
        } else if (!st->action->ready || (where && strcmp(where, rd->d->cfg.site) != 0)) {
            /* nothing to check, or checked by that site's own daemon */
        } else {
            rd->x = rb_exec_start(&rd->env, st, params, rd->ctx, "readiness", 0, RB_OP_READY,
                                  on_ready, rd);
            json_decref(params);
            diag_free(&dg);
            if (rd->x)
                return;
            rd->cur++;
            continue;
        }
        json_decref(params);
        diag_free(&dg);
        rd->cur++;
    }
    finish_round(rd);
}

static void check_cert(struct readiness *rd, const char *what, const char *file)
{
    if (!file)
        return;
    FILE *f = fopen(file, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (!x) {
        json_array_append_new(rd->reasons, json_sprintf("%s %s cannot be read", what, file));
        return;
    }
    time_t soon = time(NULL) + CERT_WARN_DAYS * 86400;
    if (X509_cmp_time(X509_get0_notAfter(x), &soon) < 0)
        json_array_append_new(
            rd->reasons, json_sprintf("%s %s expires within %d days", what, file, CERT_WARN_DAYS));
    X509_free(x);
}

static void start_round(struct readiness *rd)
{
    struct daemon *d = rd->d;
    rd->reasons = json_array();
    check_cert(rd, "the peer certificate", d->cfg.tls.cert_file);
    check_cert(rd, "the CA certificate", d->cfg.tls.ca_file);
    const struct cfg_runbook_ref *ref = config_runbook(&d->cfg, d->cfg.failover.runbook);
    json_t *cj = config_runbook_json(&d->cfg);
    struct diag dg;
    diag_init(&dg);
    if (!ref || rb_load(ref->path, cj, &rd->rb, &dg) < 0) {
        json_array_append_new(rd->reasons, json_sprintf("the failover runbook does not load: %s",
                                                        dg.n ? dg.items[0].msg : "not configured"));
        diag_free(&dg);
        json_decref(cj);
        finish_round(rd);
        return;
    }
    diag_free(&dg);
    const char *primary = quorum_site_name(&d->q, d->q.d.primary);
    const char *to = d->cfg.failover.target;
    if (!strcmp(to, primary)) {
        for (size_t i = 0; i < d->cfg.n_sites; i++) {
            if (d->cfg.sites[i].role != ROLE_WITNESS && strcmp(d->cfg.sites[i].name, primary))
                to = d->cfg.sites[i].name;
        }
    }
    rd->ctx = rb_context(cj, "readiness", d->q.d.epoch + 1, primary, to, rd->rb->name);
    json_decref(cj);
    rd->cur = 0;
    next_step(rd);
}

int readiness_init(struct readiness **out, struct daemon *d)
{
    struct readiness *rd = calloc(1, sizeof *rd);
    if (!rd)
        return -ENOMEM;
    rd->d = d;
    rd->env.loop = d->uv;
    rd->env.cfg = &d->cfg;
    rd->env.site = d->cfg.site;
    rd->env.http = d->http;
    rd->env.dns = d->dns;
    rd->env.dry_run = true;
    /* The first round soon after start, once probes have results. */
    rd->next_ms = loop_now_ms() + 10000;
    *out = rd;
    return 0;
}

void readiness_tick(struct readiness *rd)
{
    int64_t now = loop_now_ms();
    if (rd->closing || rd->rb || now < rd->next_ms)
        return;
    rd->next_ms = now + rd->d->cfg.failover.readiness_interval_ms;
    start_round(rd);
}

json_t *readiness_status(const struct readiness *rd)
{
    if (!rd || !rd->known)
        return json_pack("{s:n,s:s}", "ready", "detail", "not checked yet");
    return json_pack("{s:b,s:I,s:O}", "ready", rd->ready, "checked_ms_ago",
                     (json_int_t)(loop_now_ms() - rd->checked_ms), "reasons", rd->last);
}

bool readiness_ready(const struct readiness *rd)
{
    return rd && rd->known && rd->ready;
}

bool readiness_busy(const struct readiness *rd)
{
    return rd && rd->rb;
}

void readiness_close(struct readiness *rd)
{
    rd->closing = true;
    if (rd->x)
        rb_exec_cancel(rd->x, false); /* on_ready frees the rest */
    else
        free_all(rd);
}
