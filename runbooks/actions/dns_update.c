/* Action `dns.update`: point the public names at a site (RFC 2136 + TSIG,
 * compare-and-swap on the epoch TXT record), then verify every server.
 *
 * The run's epoch is the fencing token. The fence record (dns.fence_record,
 * TXT "epoch=N") is read from the first server (the primary master) with a
 * signed query, which gives its exact rdata; a newer epoch there stops the
 * run. Otherwise ONE signed UPDATE replaces every name's A/AAAA RRsets and
 * the fence, under the prerequisite that the fence RRset is still exactly
 * what was read (or still absent): a stale leader's update is rejected by
 * the server itself. A failed prerequisite means someone wrote in between:
 * read again once and decide again.
 *
 * check asks every server (c-ares, recursion off) for every name's A and
 * AAAA and for the fence; it holds when each answers exactly the site's
 * addresses and "epoch=<ours>". run starts with the same survey (nothing to
 * do when it holds; it also gives the TTL of the old records, i.e. how long
 * resolvers may keep answering them) and ends polling it until every server
 * answers the new values or the step's deadline nears. ready sends a signed
 * SOA query to every server (our key is accepted) and reads the fence.
 *
 * Servers are dns.servers (the zone's NS set is not looked up). Queries and
 * updates leave from this daemon's site address when it is a local numeric
 * address, so that network partitions (the lab's) apply to them too. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/dns_client.h"
#include "lib/dns_update.h"
#include "lib/log.h"
#include "lib/tsig_key.h"
#include "lib/yaml_read.h"
#include "runbooks/actions/actions.h"

#define MAX_SERVERS  16
#define MAX_NAMES    64
#define MAX_ADDRS    64
#define MAX_INFLIGHT 16
#define POLL_MS      250
#define DETAIL_CAP   480

static const struct rb_param_spec params[] = {
    { "site", RB_P_STRING, true, "the site whose public_addresses the names get" },
    { "names", RB_P_STRING_LIST, false, "public names (default dns.names)" },
    { NULL, RB_P_ANY, false, NULL },
};

struct server {
    char *host;
    uint16_t port;
    char label[80];
};

struct addr {
    int family;
    unsigned char bin[16];
    char text[INET6_ADDRSTRLEN];
};

/* One question of a survey: a name's A or AAAA, or the fence's TXT. */
struct question {
    const char *name;
    uint16_t type;
};

/* One answer of a survey (server x question). */
struct answer {
    int err;        /* < 0: the server could not be asked */
    bool match;     /* the answer is what we want */
    int64_t epoch;  /* fence: highest epoch=N seen, -1 none, -2 unreadable */
    uint32_t ttl;   /* highest TTL of the records */
    char seen[160]; /* what was answered, for messages */
};

struct job {
    struct act *a;
    size_t idx;
    struct dns_query *q;
};

enum phase { PH_NONE, PH_SURVEY, PH_READ, PH_UPDATE, PH_WAIT, PH_READY };

struct act {
    struct rb_exec *x;
    enum rb_op op;
    enum phase phase;
    bool stopped;   /* done was called, or cancelled: start nothing new */
    bool releasing; /* free once nothing is pending */
    int pending;    /* callbacks still owed to us */

    /* What to do. */
    const char *zone, *fence, *site, *key_file;
    const char *names[MAX_NAMES];
    size_t n_names;
    struct server servers[MAX_SERVERS];
    size_t n_servers;
    struct addr addrs[MAX_ADDRS];
    size_t n_addrs, n_v4, n_v6;
    uint32_t ttl_s;
    uint32_t timeout_ms;
    char local[INET6_ADDRSTRLEN];
    struct tsig_key key;
    struct dns_client *dns;
    bool own_dns;
    uv_timer_t timer;
    bool timer_open;
    uint64_t t0;
    uint64_t deadline; /* uv_now() time by which verification must be done */

    /* The survey. */
    struct question qs[2 * MAX_NAMES + 1];
    size_t n_q;
    struct job *jobs;
    struct answer *ans;
    size_t n_jobs, next_job, jobs_done, inflight;
    int rounds;
    uint32_t old_ttl; /* of the records we replace, from the first survey */

    /* Run: the fence as read, and the update. */
    struct dns_update *upd;
    struct dns_update *reads[MAX_SERVERS + 1];
    char **fence_rdata;
    size_t n_fence_rdata;
    int64_t fence_epoch; /* -1: absent */
    int64_t prev_epoch;
    bool reread;
    bool over_tcp;
    uint64_t updated_at;

    /* Ready. */
    int ready_err;
    char ready_detail[DETAIL_CAP];
    size_t ready_left;
};

/* ---- configuration ---------------------------------------------------------------- */

static int64_t run_epoch(const struct rb_exec *x)
{
    if (x->epoch > 0)
        return x->epoch;
    return json_integer_value(rb_ctx_get(x->ctx, "run.epoch"));
}

static int add_addr(struct act *a, const char *s)
{
    struct addr *ad = &a->addrs[a->n_addrs];
    if (a->n_addrs >= MAX_ADDRS)
        return -E2BIG;
    if (inet_pton(AF_INET, s, ad->bin) == 1)
        ad->family = AF_INET;
    else if (inet_pton(AF_INET6, s, ad->bin) == 1)
        ad->family = AF_INET6;
    else
        return -EINVAL;
    inet_ntop(ad->family, ad->bin, ad->text, sizeof ad->text);
    if (ad->family == AF_INET)
        a->n_v4++;
    else
        a->n_v6++;
    a->n_addrs++;
    return 0;
}

/* This daemon's site address, when it is a numeric address that can be
 * bound here: the source of our DNS traffic. */
static void pick_source(struct act *a, json_t *ctx)
{
    const char *self = json_string_value(json_object_get(ctx, "site"));
    json_t *site = self ? json_object_get(json_object_get(ctx, "sites"), self) : NULL;
    const char *host = json_string_value(json_object_get(site, "host"));
    unsigned char bin[16];
    int fam = 0;
    if (!host)
        return;
    if (inet_pton(AF_INET, host, bin) == 1)
        fam = AF_INET;
    else if (inet_pton(AF_INET6, host, bin) == 1)
        fam = AF_INET6;
    if (!fam)
        return;
    /* The servers' family must match. */
    for (size_t i = 0; i < a->n_servers; i++) {
        if ((strchr(a->servers[i].host, ':') != NULL) != (fam == AF_INET6))
            return;
    }
    struct sockaddr_storage ss = { 0 };
    socklen_t len;
    if (fam == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, bin, 4);
        len = sizeof *s4;
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, bin, 16);
        len = sizeof *s6;
    }
    int fd = socket(fam, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&ss, len) == 0;
    if (fd >= 0)
        close(fd);
    if (ok)
        snprintf(a->local, sizeof a->local, "%s", host);
    else
        log_ev(LOG_WARN, NULL, "dns.update: site address not local, using the default source",
               { "address", host });
}

/* Reads everything the action needs from its parameters and the context.
 * On error, *why says what is wrong. */
static int configure(struct act *a, char *why, size_t len)
{
    struct rb_exec *x = a->x;
    json_t *dns = json_object_get(x->ctx, "dns");
    if (!json_is_object(dns)) {
        snprintf(why, len, "dns.update needs a 'dns' section in the configuration");
        return -EINVAL;
    }
    a->zone = json_string_value(json_object_get(dns, "zone"));
    a->fence = json_string_value(json_object_get(dns, "fence_record"));
    a->key_file = json_string_value(json_object_get(dns, "tsig_key_file"));
    a->site = json_string_value(json_object_get(x->params, "site"));
    json_int_t ttl_ms = json_integer_value(json_object_get(dns, "ttl_ms"));
    json_int_t tmo_ms = json_integer_value(json_object_get(dns, "timeout_ms"));
    a->ttl_s = ttl_ms > 0 ? (uint32_t)(ttl_ms / 1000) : 60;
    if (a->ttl_s == 0)
        a->ttl_s = 1;
    a->timeout_ms = tmo_ms > 0 && tmo_ms < 600000 ? (uint32_t)tmo_ms : 2000;
    if (!a->zone || !a->fence || !a->site) {
        snprintf(why, len, "dns.update needs dns.zone, dns.fence_record and a 'site'");
        return -EINVAL;
    }
    json_t *names = json_object_get(x->params, "names");
    if (!names)
        names = json_object_get(dns, "names");
    if (json_is_string(names)) {
        a->names[a->n_names++] = json_string_value(names);
    } else {
        size_t i;
        json_t *n;
        json_array_foreach(names, i, n)
        {
            if (!json_is_string(n) || a->n_names >= MAX_NAMES) {
                snprintf(why, len, "names: a list of at most %d names", MAX_NAMES);
                return -EINVAL;
            }
            a->names[a->n_names++] = json_string_value(n);
        }
    }
    if (a->n_names == 0) {
        snprintf(why, len, "no names to point (dns.names is empty)");
        return -EINVAL;
    }
    json_t *servers = json_object_get(dns, "servers");
    size_t i;
    json_t *s;
    json_array_foreach(servers, i, s)
    {
        const char *hp = json_string_value(s);
        const char *bad = "not host:port";
        struct server *sv = &a->servers[a->n_servers];
        if (a->n_servers >= MAX_SERVERS) {
            snprintf(why, len, "dns.servers: at most %d servers", MAX_SERVERS);
            return -EINVAL;
        }
        if (!hp || hostport_parse(hp, 53, &sv->host, &sv->port, &bad) < 0) {
            snprintf(why, len, "dns.servers: '%s': %s", hp ? hp : "?", bad);
            return -EINVAL;
        }
        snprintf(sv->label, sizeof sv->label, strchr(sv->host, ':') ? "[%s]:%u" : "%s:%u", sv->host,
                 sv->port);
        a->n_servers++;
    }
    if (a->n_servers == 0) {
        snprintf(why, len, "dns.servers is empty");
        return -EINVAL;
    }
    json_t *site = json_object_get(json_object_get(x->ctx, "sites"), a->site);
    json_t *addrs = json_object_get(site, "public_addresses");
    if (!site) {
        snprintf(why, len, "'%s' is not a configured site", a->site);
        return -EINVAL;
    }
    json_array_foreach(addrs, i, s)
    {
        const char *t = json_string_value(s);
        if (!t || add_addr(a, t) < 0) {
            snprintf(why, len, "site '%s': '%s' is not an IPv4 or IPv6 address", a->site,
                     t ? t : "?");
            return -EINVAL;
        }
    }
    if (a->n_addrs == 0) {
        snprintf(why, len, "site '%s' has no public_addresses to publish", a->site);
        return -EINVAL;
    }
    for (size_t k = 0; k < a->n_names; k++) {
        a->qs[a->n_q++] = (struct question){ a->names[k], DNS_T_A };
        a->qs[a->n_q++] = (struct question){ a->names[k], DNS_T_AAAA };
    }
    a->qs[a->n_q++] = (struct question){ a->fence, DNS_T_TXT };
    pick_source(a, x->ctx);
    return 0;
}

static int load_key(struct act *a, char *why, size_t len)
{
    if (!a->key_file) {
        snprintf(why, len, "dns.update needs dns.tsig_key_file in the configuration");
        return -EINVAL;
    }
    return tsig_key_load(a->key_file, NULL, &a->key, why, len);
}

static void addr_list(const struct act *a, struct buf *b)
{
    for (size_t i = 0; i < a->n_addrs; i++)
        buf_printf(b, "%s%s", i ? ", " : "", a->addrs[i].text);
}

static void name_list(const struct act *a, struct buf *b)
{
    for (size_t i = 0; i < a->n_names; i++)
        buf_printf(b, "%s%s", i ? ", " : "", a->names[i]);
}

/* ---- lifetime --------------------------------------------------------------------- */

static void free_act(struct act *a)
{
    for (size_t i = 0; i < a->n_servers; i++)
        free(a->servers[i].host);
    for (size_t i = 0; i < a->n_fence_rdata; i++)
        free(a->fence_rdata[i]);
    free(a->fence_rdata);
    free(a->jobs);
    free(a->ans);
    tsig_key_wipe(&a->key);
    free(a);
}

static void maybe_free(struct act *a)
{
    if (!a->releasing || a->pending > 0)
        return;
    struct rb_exec *x = a->x;
    x->state = NULL;
    free_act(a);
    rb_exec_released(x);
}

/* A callback owed to us has come. Returns false when the action is over
 * (the caller must not continue). */
static bool owed_arrived(struct act *a)
{
    a->pending--;
    if (a->stopped || a->releasing) {
        maybe_free(a);
        return false;
    }
    return true;
}

static void finish(struct act *a, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void finish(struct act *a, int status, const char *fmt, ...)
{
    char detail[DETAIL_CAP + 32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    a->stopped = true;
    a->phase = PH_NONE;
    rb_exec_done(a->x, status, "%s", detail);
}

static void stop_inflight(struct act *a)
{
    for (size_t i = 0; i < a->n_jobs; i++) {
        if (a->jobs[i].q)
            dns_query_cancel(a->jobs[i].q);
    }
    if (a->upd)
        dns_update_cancel(a->upd);
    for (size_t i = 0; i < MAX_SERVERS + 1; i++) {
        if (a->reads[i])
            dns_update_cancel(a->reads[i]);
    }
    if (a->timer_open)
        uv_timer_stop(&a->timer);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct act *a = h->data;
    a->pending--;
    maybe_free(a);
}

static void on_dns_closed(void *arg)
{
    struct act *a = arg;
    a->pending--;
    maybe_free(a);
}

static void act_cancel(struct rb_exec *x)
{
    struct act *a = x->state;
    if (!a)
        return;
    a->stopped = true;
    stop_inflight(a);
}

static void act_release(struct rb_exec *x)
{
    struct act *a = x->state;
    if (!a) {
        rb_exec_released(x);
        return;
    }
    a->stopped = true;
    a->releasing = true;
    stop_inflight(a);
    if (a->timer_open) {
        a->timer_open = false;
        a->pending++;
        uv_close((uv_handle_t *)&a->timer, on_timer_closed);
    }
    if (a->own_dns && a->dns) {
        a->pending++;
        dns_client_close(a->dns, on_dns_closed, a);
        a->dns = NULL;
    }
    maybe_free(a);
}

/* Common start of check, run and ready. NULL when done was already called. */
static struct act *start(struct rb_exec *x, enum rb_op op)
{
    char why[DETAIL_CAP];
    struct act *a = calloc(1, sizeof *a);
    if (!a) {
        rb_exec_done(x, -ENOMEM, "out of memory");
        return NULL;
    }
    a->x = x;
    a->op = op;
    a->fence_epoch = -1;
    a->prev_epoch = -1;
    x->state = a;
    uv_timer_init(x->env->loop, &a->timer);
    a->timer.data = a;
    a->timer_open = true;
    a->t0 = uv_now(x->env->loop);
    int rc = configure(a, why, sizeof why);
    if (rc == 0) {
        a->dns = x->env->dns;
        if (!a->dns) {
            rc = dns_client_new(x->env->loop, &a->dns);
            a->own_dns = rc == 0;
            if (rc < 0)
                snprintf(why, sizeof why, "cannot start a DNS client: %s", strerror(-rc));
        }
    }
    if (rc < 0) {
        finish(a, rc, "%s", why);
        return NULL;
    }
    return a;
}

/* ---- the survey: what every server answers ------------------------------------- */

static void survey_done(struct act *a);
static void next_jobs(struct act *a);

static int cmp_addr(const void *p, const void *q)
{
    return memcmp(p, q, 16);
}

/* Whether the records of `type` in res are exactly the site's addresses. */
static bool addrs_match(const struct act *a, const struct dns_result *res, uint16_t type,
                        struct answer *an)
{
    int fam = type == DNS_T_A ? AF_INET : AF_INET6;
    unsigned char got[DNS_MAX_RECORDS][16], want[MAX_ADDRS][16];
    size_t n_got = 0, n_want = 0;
    bool other = false;
    struct buf seen;
    buf_init(&seen, sizeof an->seen - 1);
    memset(got, 0, sizeof got);
    memset(want, 0, sizeof want);
    for (size_t i = 0; i < res->n_records; i++) {
        const struct dns_record *r = &res->records[i];
        if (r->type != type) {
            other = true; /* a CNAME, for one */
            buf_printf(&seen, "%s%s %s", seen.len ? " " : "", dns_type_name(r->type), r->value);
            continue;
        }
        if (inet_pton(fam, r->value, got[n_got]) != 1)
            other = true;
        else
            n_got++;
        if (r->ttl > an->ttl)
            an->ttl = r->ttl;
        buf_printf(&seen, "%s%s", seen.len ? " " : "", r->value);
    }
    for (size_t i = 0; i < a->n_addrs; i++) {
        if (a->addrs[i].family == fam)
            memcpy(want[n_want++], a->addrs[i].bin, 16);
    }
    snprintf(an->seen, sizeof an->seen, "%s", seen.data ? seen.data : "nothing");
    buf_free(&seen);
    if (other || n_got != n_want)
        return false;
    qsort(got, n_got, 16, cmp_addr);
    qsort(want, n_want, 16, cmp_addr);
    for (size_t i = 0; i + 1 < n_got; i++) {
        if (memcmp(got[i], got[i + 1], 16) == 0)
            return false;
    }
    return memcmp(got, want, n_got * 16) == 0;
}

/* "epoch=N" -> N, or -2. */
static int64_t parse_epoch(const char *v)
{
    if (strncmp(v, "epoch=", 6) != 0 || v[6] < '0' || v[6] > '9' || strlen(v + 6) > 18)
        return -2;
    char *end;
    long long n = strtoll(v + 6, &end, 10);
    return *end ? -2 : (int64_t)n;
}

static void fence_answer(const struct act *a, const struct dns_result *res, struct answer *an)
{
    char want[40];
    size_t n = 0;
    bool exact = false;
    an->epoch = -1;
    snprintf(want, sizeof want, "epoch=%" PRId64, run_epoch(a->x));
    an->seen[0] = '\0';
    for (size_t i = 0; i < res->n_records; i++) {
        const struct dns_record *r = &res->records[i];
        if (r->type != DNS_T_TXT)
            continue;
        int64_t e = parse_epoch(r->value);
        if (e == -2 || an->epoch == -2)
            an->epoch = -2;
        else if (e > an->epoch)
            an->epoch = e;
        exact = strcmp(r->value, want) == 0;
        size_t used = strlen(an->seen);
        snprintf(an->seen + used, sizeof an->seen - used, "%s\"%s\"", n ? " " : "", r->value);
        n++;
    }
    if (n == 0)
        snprintf(an->seen, sizeof an->seen, "no TXT record");
    an->match = n == 1 && exact;
}

static void on_answer(struct dns_query *q, const struct dns_result *res, void *arg)
{
    (void)q;
    struct job *j = arg;
    struct act *a = j->a;
    j->q = NULL;
    a->inflight--;
    if (!owed_arrived(a))
        return;
    struct answer *an = &a->ans[j->idx];
    const struct question *qu = &a->qs[j->idx % a->n_q];
    memset(an, 0, sizeof *an);
    if (res->result < 0 && res->result != -ENOENT) {
        an->err = res->result;
        snprintf(an->seen, sizeof an->seen, "%s", res->detail);
    } else if (qu->type == DNS_T_TXT) {
        fence_answer(a, res, an);
    } else {
        an->match = addrs_match(a, res, qu->type, an);
    }
    a->jobs_done++;
    if (a->jobs_done == a->n_jobs)
        survey_done(a);
    else
        next_jobs(a);
}

static void next_jobs(struct act *a)
{
    while (!a->stopped && a->next_job < a->n_jobs && a->inflight < MAX_INFLIGHT) {
        struct job *j = &a->jobs[a->next_job];
        const struct server *sv = &a->servers[j->idx / a->n_q];
        const struct question *qu = &a->qs[j->idx % a->n_q];
        struct dns_query_opts o = {
            .server = sv->host,
            .port = sv->port,
            .name = qu->name,
            .type = qu->type,
            .timeout_ms = a->timeout_ms,
            .tries = 2,
            .local_addr = a->local[0] ? a->local : NULL,
            .no_recurse = 1,
        };
        a->next_job++;
        int rc = dns_query_start(a->dns, &o, on_answer, j, &j->q);
        if (rc < 0) {
            struct answer *an = &a->ans[j->idx];
            memset(an, 0, sizeof *an);
            an->err = rc;
            snprintf(an->seen, sizeof an->seen, "cannot query: %s", strerror(-rc));
            j->q = NULL;
            a->jobs_done++;
            continue;
        }
        a->pending++;
        a->inflight++;
    }
    if (!a->stopped && a->jobs_done == a->n_jobs && a->inflight == 0)
        survey_done(a);
}

static void survey(struct act *a)
{
    a->n_jobs = a->n_servers * a->n_q;
    if (!a->jobs) {
        a->jobs = calloc(a->n_jobs, sizeof *a->jobs);
        a->ans = calloc(a->n_jobs, sizeof *a->ans);
        if (!a->jobs || !a->ans) {
            finish(a, -ENOMEM, "out of memory");
            return;
        }
    }
    for (size_t i = 0; i < a->n_jobs; i++)
        a->jobs[i] = (struct job){ a, i, NULL };
    a->next_job = 0;
    a->jobs_done = 0;
    a->rounds++;
    next_jobs(a);
}

struct verdict {
    size_t mismatched; /* servers */
    size_t unknown;    /* servers that could not be asked */
    int first_err;
    int64_t max_epoch; /* on any server */
    uint32_t old_ttl;  /* highest TTL among records that are not what we want */
};

/* Sums up the survey; writes the differences (or the errors) into b. */
static struct verdict judge(struct act *a, struct buf *b)
{
    struct verdict v = { 0, 0, 0, -1, 0 };
    for (size_t s = 0; s < a->n_servers; s++) {
        bool bad = false, unk = false;
        for (size_t k = 0; k < a->n_q; k++) {
            const struct answer *an = &a->ans[s * a->n_q + k];
            const struct question *qu = &a->qs[k];
            if (qu->type == DNS_T_TXT && an->err == 0 && an->epoch > v.max_epoch)
                v.max_epoch = an->epoch;
            if (an->err < 0) {
                if (!unk && !v.first_err)
                    v.first_err = an->err;
                unk = true;
                buf_printf(b, "%s%s: %s %s: %s", b->len ? "; " : "", a->servers[s].label, qu->name,
                           dns_type_name(qu->type), an->seen);
                continue;
            }
            if (an->match)
                continue;
            bad = true;
            if (qu->type != DNS_T_TXT && an->ttl > v.old_ttl)
                v.old_ttl = an->ttl;
            if (qu->type == DNS_T_TXT)
                buf_printf(b, "%s%s: fence %s holds %s (want \"epoch=%" PRId64 "\")",
                           b->len ? "; " : "", a->servers[s].label, qu->name, an->seen,
                           run_epoch(a->x));
            else
                buf_printf(b, "%s%s: %s %s is %s", b->len ? "; " : "", a->servers[s].label,
                           qu->name, dns_type_name(qu->type), an->seen);
        }
        v.mismatched += bad;
        v.unknown += unk && !bad;
    }
    return v;
}

static void verified_list(const struct act *a, struct buf *b, json_t *arr)
{
    for (size_t s = 0; s < a->n_servers; s++) {
        buf_printf(b, "%s%s", s ? ", " : "", a->servers[s].label);
        if (arr)
            json_array_append_new(arr, json_string(a->servers[s].label));
    }
}

static void report(struct act *a, bool already)
{
    struct rb_exec *x = a->x;
    struct buf names, addrs, servers;
    buf_init(&names, 200);
    buf_init(&addrs, 200);
    buf_init(&servers, 200);
    name_list(a, &names);
    addr_list(a, &addrs);
    json_t *verified = json_array();
    verified_list(a, &servers, verified);
    json_t *jn = json_array(), *ja = json_array();
    for (size_t i = 0; i < a->n_names; i++)
        json_array_append_new(jn, json_string(a->names[i]));
    for (size_t i = 0; i < a->n_addrs; i++)
        json_array_append_new(ja, json_string(a->addrs[i].text));
    uint64_t now = uv_now(x->env->loop);
    json_object_set_new(x->result, "names", jn);
    json_object_set_new(x->result, "addresses", ja);
    json_object_set_new(x->result, "site", json_string(a->site));
    json_object_set_new(x->result, "epoch", json_integer(run_epoch(x)));
    json_object_set_new(x->result, "previous_epoch",
                        a->prev_epoch >= 0 ? json_integer(a->prev_epoch) : json_null());
    json_object_set_new(x->result, "servers_verified", verified);
    json_object_set_new(x->result, "already_done", json_boolean(already));
    json_object_set_new(x->result, "fence_rereads", json_integer(a->reread ? 1 : 0));
    json_object_set_new(x->result, "old_ttl_s", json_integer(a->old_ttl));
    json_object_set_new(x->result, "clients_follow_within_s", json_integer(a->old_ttl));
    if (!already) {
        json_object_set_new(x->result, "update_over", json_string(a->over_tcp ? "tcp" : "udp"));
        json_object_set_new(x->result, "verify_ms",
                            json_integer((json_int_t)(now - a->updated_at)));
    }
    char prev[32], follow[120];
    if (a->prev_epoch >= 0)
        snprintf(prev, sizeof prev, "%" PRId64, a->prev_epoch);
    else
        snprintf(prev, sizeof prev, "(none)");
    if (a->old_ttl)
        snprintf(follow, sizeof follow, "old records' TTL %u s: clients follow within %u s",
                 a->old_ttl, a->old_ttl);
    else
        snprintf(follow, sizeof follow, "no old address records were served");
    if (already)
        finish(a, 0,
               "already done: %s point at %s (%s) and the fence holds epoch=%" PRId64 " on %s",
               names.data, addrs.data, a->site, run_epoch(x), servers.data);
    else
        finish(a, 0,
               "%s -> %s (%s), epoch %s -> %" PRId64 "; verified on %s after %" PRIu64 " ms; %s",
               names.data, addrs.data, a->site, prev, run_epoch(x), servers.data,
               now - a->updated_at, follow);
    buf_free(&names);
    buf_free(&addrs);
    buf_free(&servers);
}

/* ---- run: read the fence, update, verify ------------------------------------------ */

static void read_fence(struct act *a);
static void send_update(struct act *a);

static void on_poll_timer(uv_timer_t *t)
{
    struct act *a = t->data;
    if (a->stopped)
        return;
    survey(a);
}

static void after_verify(struct act *a)
{
    struct buf b;
    buf_init(&b, DETAIL_CAP - 120);
    struct verdict v = judge(a, &b);
    uint64_t now = uv_now(a->x->env->loop);
    if (v.mismatched == 0 && v.unknown == 0) {
        buf_free(&b);
        report(a, false);
        return;
    }
    if (v.max_epoch > run_epoch(a->x)) {
        finish(a, -ESTALE,
               "a newer decision (epoch %" PRId64 ") changed DNS after this run's "
               "update (epoch %" PRId64 ")",
               v.max_epoch, run_epoch(a->x));
    } else if (now + POLL_MS >= a->deadline) {
        finish(a, v.mismatched ? -ETIMEDOUT : v.first_err,
               "updated on %s, but not every server answers the new values after %" PRIu64
               " ms: %s",
               a->servers[0].label, now - a->updated_at, b.data ? b.data : "");
    } else {
        uv_timer_start(&a->timer, on_poll_timer, POLL_MS, 0);
    }
    buf_free(&b);
}

static void after_first_survey(struct act *a)
{
    struct buf b;
    buf_init(&b, DETAIL_CAP);
    struct verdict v = judge(a, &b);
    buf_free(&b);
    a->old_ttl = v.old_ttl;
    if (v.mismatched == 0 && v.unknown == 0) {
        report(a, true);
        return;
    }
    read_fence(a);
}

static void survey_done(struct act *a)
{
    if (a->stopped)
        return;
    if (a->op == RB_OP_CHECK) {
        struct buf b, names, addrs, servers;
        buf_init(&b, DETAIL_CAP);
        struct verdict v = judge(a, &b);
        if (v.mismatched) {
            finish(a, 0, "%s", b.data);
        } else if (v.unknown) {
            finish(a, v.first_err ? v.first_err : -EIO, "cannot tell: %s", b.data);
        } else {
            buf_init(&names, 200);
            buf_init(&addrs, 200);
            buf_init(&servers, 200);
            name_list(a, &names);
            addr_list(a, &addrs);
            verified_list(a, &servers, NULL);
            finish(a, 1, "%s answer %s for %s; fence epoch=%" PRId64, servers.data, addrs.data,
                   names.data, run_epoch(a->x));
            buf_free(&names);
            buf_free(&addrs);
            buf_free(&servers);
        }
        buf_free(&b);
        return;
    }
    if (a->phase == PH_SURVEY)
        after_first_survey(a);
    else
        after_verify(a);
}

static struct dns_update_server primary(const struct act *a, uint32_t timeout_ms)
{
    return (struct dns_update_server){
        .server = a->servers[0].host,
        .port = a->servers[0].port,
        .local_addr = a->local[0] ? a->local : NULL,
        .key = &a->key,
        .timeout_ms = timeout_ms,
    };
}

/* The fence's TXT records as read: rdata in presentation form. Returns the
 * highest epoch, -1 when absent, -2 when a value is not "epoch=N". */
static int64_t take_fence(struct act *a, const struct dns_update_result *res, char *seen,
                          size_t seen_len)
{
    int64_t epoch = -1;
    for (size_t i = 0; i < a->n_fence_rdata; i++)
        free(a->fence_rdata[i]);
    free(a->fence_rdata);
    a->fence_rdata = NULL;
    a->n_fence_rdata = 0;
    seen[0] = '\0';
    if (res->result == -ENOENT)
        return -1;
    a->fence_rdata = calloc(res->n_records + 1, sizeof *a->fence_rdata);
    if (!a->fence_rdata)
        return -2;
    for (size_t i = 0; i < res->n_records; i++) {
        const struct dns_rr_text *r = &res->records[i];
        if (r->type != DNS_T_TXT)
            continue;
        size_t used = strlen(seen);
        snprintf(seen + used, seen_len - used, "%s%s", used ? " " : "", r->rdata);
        a->fence_rdata[a->n_fence_rdata++] = strdup(r->rdata);
        /* One string, "epoch=N", quoted: anything else is not ours. */
        size_t l = strlen(r->rdata);
        char v[64];
        int64_t e = -2;
        if (l >= 3 && l < sizeof v + 2 && r->rdata[0] == '"' && r->rdata[l - 1] == '"') {
            memcpy(v, r->rdata + 1, l - 2);
            v[l - 2] = '\0';
            e = strchr(v, '"') ? -2 : parse_epoch(v);
        }
        if (e == -2 || epoch == -2)
            epoch = -2;
        else if (e > epoch)
            epoch = e;
    }
    if (res->truncated)
        epoch = -2;
    return epoch;
}

static void on_fence(struct dns_update *u, const struct dns_update_result *res, void *arg)
{
    (void)u;
    struct act *a = arg;
    a->reads[0] = NULL;
    if (!owed_arrived(a))
        return;
    if (res->result < 0 && res->result != -ENOENT) {
        finish(a, res->result, "cannot read the fence record %s: %s", a->fence, res->detail);
        return;
    }
    char seen[200];
    int64_t cur = take_fence(a, res, seen, sizeof seen);
    int64_t ours = run_epoch(a->x);
    if (cur == -2) {
        finish(a, -EPROTO,
               "the fence record %s on %s holds %s, not \"epoch=N\": triad does not "
               "overwrite what it cannot compare (fix or delete it by hand)",
               a->fence, a->servers[0].label, seen);
        return;
    }
    if (cur > ours) {
        finish(a, -ESTALE,
               "a newer decision (epoch %" PRId64 ") already changed DNS; this run "
               "(epoch %" PRId64 ") is stale",
               cur, ours);
        return;
    }
    a->fence_epoch = cur;
    a->prev_epoch = cur; /* what our compare-and-swap replaces */
    send_update(a);
}

static void read_fence(struct act *a)
{
    char why[DETAIL_CAP];
    /* Only now: a run with nothing to do does not need the key. */
    if (!a->key.name[0]) {
        int rc = load_key(a, why, sizeof why);
        if (rc < 0) {
            finish(a, rc, "%s", why);
            return;
        }
    }
    a->phase = PH_READ;
    struct dns_update_server srv = primary(a, a->timeout_ms);
    int rc =
        dns_update_query(a->x->env->loop, &srv, a->fence, DNS_T_TXT, on_fence, a, &a->reads[0]);
    if (rc < 0) {
        finish(a, rc, "cannot read the fence record %s: %s", a->fence, strerror(-rc));
        return;
    }
    a->pending++;
}

static void on_updated(struct dns_update *u, const struct dns_update_result *res, void *arg)
{
    (void)u;
    struct act *a = arg;
    a->upd = NULL;
    if (!owed_arrived(a))
        return;
    if (res->result == -ESTALE) {
        if (a->reread) {
            finish(a, -ESTALE,
                   "the fence record %s changed again between our read and our "
                   "update: another decision is writing DNS (%s)",
                   a->fence, res->detail);
            return;
        }
        /* Someone wrote between our read and our update: look again. */
        log_ev(LOG_WARN, NULL, "dns.update: fence changed under us, reading it again",
               { "fence", a->fence }, { "detail", res->detail });
        a->reread = true;
        read_fence(a);
        return;
    }
    if (res->result < 0) {
        finish(a, res->result, "%s", res->detail);
        return;
    }
    a->over_tcp = res->tcp;
    a->updated_at = uv_now(a->x->env->loop);
    log_ev(LOG_INFO, "+dns-update", "DNS updated", { "site", a->site }, { "fence", a->fence },
           { "server", a->servers[0].label });
    a->phase = PH_WAIT;
    survey(a);
}

static void send_update(struct act *a)
{
    char fence_value[48];
    size_t n_changes = 0, cap = a->n_names * (2 + a->n_addrs) + 2;
    struct dns_change *ch = calloc(cap, sizeof *ch);
    if (!ch) {
        finish(a, -ENOMEM, "out of memory");
        return;
    }
    snprintf(fence_value, sizeof fence_value, "\"epoch=%" PRId64 "\"", run_epoch(a->x));
    for (size_t i = 0; i < a->n_names; i++) {
        ch[n_changes++] =
            (struct dns_change){ DNS_CHANGE_DELETE_RRSET, a->names[i], DNS_T_A, 0, NULL };
        ch[n_changes++] =
            (struct dns_change){ DNS_CHANGE_DELETE_RRSET, a->names[i], DNS_T_AAAA, 0, NULL };
        for (size_t k = 0; k < a->n_addrs; k++)
            ch[n_changes++] =
                (struct dns_change){ DNS_CHANGE_ADD, a->names[i],
                                     a->addrs[k].family == AF_INET ? DNS_T_A : DNS_T_AAAA, a->ttl_s,
                                     a->addrs[k].text };
    }
    ch[n_changes++] = (struct dns_change){ DNS_CHANGE_DELETE_RRSET, a->fence, DNS_T_TXT, 0, NULL };
    ch[n_changes++] =
        (struct dns_change){ DNS_CHANGE_ADD, a->fence, DNS_T_TXT, a->ttl_s, fence_value };
    struct dns_prereq pre = { a->fence_epoch < 0 ? DNS_PREREQ_RRSET_ABSENT
                                                 : DNS_PREREQ_RRSET_EQUALS,
                              a->fence, DNS_T_TXT, (const char *const *)a->fence_rdata,
                              a->fence_epoch < 0 ? 0 : a->n_fence_rdata };
    struct dns_update_msg msg = { a->zone, &pre, 1, ch, n_changes };
    struct dns_update_server srv = primary(a, a->timeout_ms);
    a->phase = PH_UPDATE;
    int rc = dns_update_send(a->x->env->loop, &srv, &msg, on_updated, a, &a->upd);
    free(ch);
    if (rc < 0) {
        finish(a, rc, "cannot build the update for zone %s: %s (see the log)", a->zone,
               strerror(-rc));
        return;
    }
    a->pending++;
}

/* ---- the operations ---------------------------------------------------------------- */

static void act_describe(struct rb_exec *x, struct buf *out)
{
    json_t *dns = json_object_get(x->ctx, "dns");
    const char *site = json_string_value(json_object_get(x->params, "site"));
    json_t *names = json_object_get(x->params, "names");
    if (!names)
        names = json_object_get(dns, "names");
    json_t *addrs = json_object_get(
        json_object_get(json_object_get(x->ctx, "sites"), site ? site : ""), "public_addresses");
    size_t i;
    json_t *v;
    buf_printf(out, "point ");
    if (json_is_string(names))
        buf_printf(out, "%s", json_string_value(names));
    json_array_foreach(names, i, v)
    {
        buf_printf(out, "%s%s", i ? ", " : "", json_is_string(v) ? json_string_value(v) : "?");
    }
    buf_printf(out, " at ");
    json_array_foreach(addrs, i, v)
    {
        buf_printf(out, "%s%s", i ? ", " : "", json_is_string(v) ? json_string_value(v) : "?");
    }
    const char *fence = json_string_value(json_object_get(dns, "fence_record"));
    buf_printf(out, " (%s), epoch %" PRId64 " (TXT %s)", site ? site : "?", run_epoch(x),
               fence ? fence : "?");
}

static void act_check(struct rb_exec *x)
{
    struct act *a = start(x, RB_OP_CHECK);
    if (!a)
        return;
    a->phase = PH_SURVEY;
    survey(a);
}

static void act_run(struct rb_exec *x)
{
    struct act *a = start(x, RB_OP_RUN);
    if (!a)
        return;
    /* Verification polls until shortly before the step's own timeout, so
     * that what is still wrong is reported rather than a bare "timed out". */
    int64_t budget = x->step && x->step->timeout_ms > 0 ? x->step->timeout_ms : 60000;
    int64_t margin = budget / 10 < 2000 ? budget / 10 : 2000;
    a->deadline = a->t0 + (uint64_t)(budget - margin);
    a->phase = PH_SURVEY;
    survey(a);
}

static void ready_conclude(struct act *a)
{
    if (a->ready_err < 0) {
        finish(a, a->ready_err, "%s", a->ready_detail);
        return;
    }
    struct buf servers;
    buf_init(&servers, 200);
    verified_list(a, &servers, NULL);
    json_object_set_new(a->x->result, "fence_epoch",
                        a->fence_epoch >= 0 ? json_integer(a->fence_epoch) : json_null());
    json_object_set_new(a->x->result, "key", json_string(a->key.name));
    if (a->fence_epoch >= 0)
        finish(a, 0, "TSIG key '%s' accepted by %s; fence %s holds epoch=%" PRId64, a->key.name,
               servers.data, a->fence, a->fence_epoch);
    else
        finish(a, 0, "TSIG key '%s' accepted by %s; fence %s does not exist yet", a->key.name,
               servers.data, a->fence);
    buf_free(&servers);
}

static void ready_one_done(struct act *a)
{
    if (--a->ready_left == 0)
        ready_conclude(a);
}

static void ready_fail(struct act *a, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void ready_fail(struct act *a, int err, const char *fmt, ...)
{
    if (a->ready_err < 0)
        return; /* the first failure is the one reported */
    a->ready_err = err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->ready_detail, sizeof a->ready_detail, fmt, ap);
    va_end(ap);
}

static void on_ready_soa(struct dns_update *u, const struct dns_update_result *res, void *arg)
{
    struct act *a = arg;
    size_t i;
    for (i = 1; i <= a->n_servers && a->reads[i] != u; i++)
        ;
    if (i <= a->n_servers)
        a->reads[i] = NULL;
    if (!owed_arrived(a))
        return;
    if (res->result < 0)
        ready_fail(a, res->result, "%s", res->detail);
    ready_one_done(a);
}

static void on_ready_fence(struct dns_update *u, const struct dns_update_result *res, void *arg)
{
    (void)u;
    struct act *a = arg;
    a->reads[0] = NULL;
    if (!owed_arrived(a))
        return;
    char seen[200];
    if (res->result < 0 && res->result != -ENOENT) {
        ready_fail(a, res->result, "cannot read the fence record %s: %s", a->fence, res->detail);
    } else {
        a->fence_epoch = take_fence(a, res, seen, sizeof seen);
        if (a->fence_epoch == -2)
            ready_fail(a, -EPROTO, "the fence record %s holds %s, not \"epoch=N\"", a->fence, seen);
    }
    ready_one_done(a);
}

static void act_ready(struct rb_exec *x)
{
    char why[DETAIL_CAP];
    struct act *a = start(x, RB_OP_READY);
    if (!a)
        return;
    int rc = load_key(a, why, sizeof why);
    if (rc < 0) {
        finish(a, rc, "%s", why);
        return;
    }
    a->phase = PH_READY;
    a->ready_left = a->n_servers + 1;
    for (size_t i = 0; i < a->n_servers; i++) {
        struct dns_update_server srv = primary(a, a->timeout_ms);
        srv.server = a->servers[i].host;
        srv.port = a->servers[i].port;
        rc = dns_update_query(x->env->loop, &srv, a->zone, DNS_T_SOA, on_ready_soa, a,
                              &a->reads[i + 1]);
        if (rc < 0) {
            ready_fail(a, rc, "cannot ask %s: %s", a->servers[i].label, strerror(-rc));
            a->ready_left--;
        } else {
            a->pending++;
        }
    }
    struct dns_update_server srv = primary(a, a->timeout_ms);
    rc = dns_update_query(x->env->loop, &srv, a->fence, DNS_T_TXT, on_ready_fence, a, &a->reads[0]);
    if (rc < 0) {
        ready_fail(a, rc, "cannot read the fence record %s: %s", a->fence, strerror(-rc));
        a->ready_left--;
    } else {
        a->pending++;
    }
    /* Every start failed: nothing will call back. */
    if (a->ready_left == 0)
        ready_conclude(a);
}

static void validate(const struct rb_validate_ctx *v)
{
    json_t *dns = json_object_get(v->ctx, "dns");
    if (!json_is_object(dns)) {
        rb_param_error(v, NULL, "dns.update needs a 'dns' section in the configuration");
        return;
    }
    if (!json_is_string(json_object_get(dns, "tsig_key_file")))
        rb_param_error(v, NULL, "dns.update needs dns.tsig_key_file in the configuration");
    json_t *site = act_need_site(v, "site");
    if (site && json_array_size(json_object_get(site, "public_addresses")) == 0)
        rb_param_error(v, "site", "site '%s' has no public_addresses to publish",
                       json_string_value(json_object_get(v->params, "site")));
}

const struct rb_action_ops rb_action_dns_update = {
    .name = "dns.update",
    .summary = "point the public names at a site and verify every server",
    .params = params,
    .default_timeout_ms = 60000,
    .validate = validate,
    .describe = act_describe,
    .check = act_check,
    .run = act_run,
    .ready = act_ready,
    .cancel = act_cancel,
    .release = act_release,
};
