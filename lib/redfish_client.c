/* Redfish client: credentials, the two calls a power fence needs, and the
 * mapping of Redfish errors. */
#include "lib/redfish_client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/http_client.h"

#define CREDENTIALS_MAX 4096

struct redfish_client {
    struct http_client *http;
    char *url; /* no trailing slash */
    char *credentials_file;
    char *ca_file;
    uint32_t timeout_ms;
    size_t max_body;
    char err[REDFISH_DETAIL_MAX];
};

struct redfish_request {
    struct http_request *http;
    redfish_done_cb cb;
    void *arg;
    bool get;
    char *system; /* for the default reset target */
    char what[192];
};

static void fmtbuf(char *out, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fmtbuf(char *out, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, len, fmt, ap);
    va_end(ap);
}

/* "user:password" from the file, trimmed; the caller wipes it. */
static int read_credentials(const char *path, struct buf *b, char *err, size_t len)
{
    buf_init(b, CREDENTIALS_MAX);
    int rc = fsutil_read(path, b);
    if (rc < 0) {
        buf_free(b);
        fmtbuf(err, len, "cannot read credentials file %s: %s", path,
               rc == -EMSGSIZE ? "too large" : strerror(-rc));
        return rc;
    }
    while (b->len && (unsigned char)b->data[b->len - 1] <= ' ')
        b->data[--b->len] = '\0';
    const char *colon = b->len ? strchr(b->data, ':') : NULL;
    if (!colon || colon == b->data || strpbrk(b->data, "\r\n")) {
        explicit_bzero(b->data, b->alloc);
        buf_free(b);
        fmtbuf(err, len, "credentials file %s must hold one line user:password", path);
        return -EINVAL;
    }
    return 0;
}

static void wipe(struct buf *b)
{
    if (b->data)
        explicit_bzero(b->data, b->alloc);
    buf_free(b);
}

void redfish_client_free(struct redfish_client *c)
{
    if (!c)
        return;
    free(c->url);
    free(c->credentials_file);
    free(c->ca_file);
    free(c);
}

int redfish_client_new(struct http_client *http, const struct redfish_config *cfg,
                       struct redfish_client **out, char *err, size_t errlen)
{
    int result = 0;
    struct redfish_client *c = NULL;
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (!http || !cfg || !cfg->url || !cfg->credentials_file) {
        fmtbuf(err, errlen, "a Redfish client needs a URL and a credentials file");
        return -EINVAL;
    }
    if (strncmp(cfg->url, "https://", 8) != 0) {
        /* Basic auth in clear text would give the BMC password away. */
        fmtbuf(err, errlen, "a Redfish URL must be https://: %s", cfg->url);
        return -EINVAL;
    }
    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->http = http;
    c->url = strdup(cfg->url);
    c->credentials_file = strdup(cfg->credentials_file);
    c->ca_file = cfg->ca_file ? strdup(cfg->ca_file) : NULL;
    c->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : REDFISH_DEFAULT_TIMEOUT_MS;
    c->max_body = cfg->max_body ? cfg->max_body : REDFISH_DEFAULT_MAX_BODY;
    if (!c->url || !c->credentials_file || (cfg->ca_file && !c->ca_file)) {
        result = -ENOMEM;
        goto out;
    }
    size_t n = strlen(c->url);
    while (n > 8 && c->url[n - 1] == '/')
        c->url[--n] = '\0';
    struct buf cred;
    result = read_credentials(c->credentials_file, &cred, err, errlen);
    if (result == 0)
        wipe(&cred);
out:
    if (result < 0) {
        redfish_client_free(c);
        return result;
    }
    *out = c;
    return 0;
}

const char *redfish_client_error(const struct redfish_client *c)
{
    return c->err;
}

/* ---- results ---- */

static int map_status(long http)
{
    switch (http) {
    case 400:
        return -EINVAL;
    case 401:
        return -EACCES;
    case 403:
        return -EPERM;
    case 404:
        return -ENOENT;
    case 405:
        return -EOPNOTSUPP;
    case 409:
        return -EBUSY;
    default:
        return http >= 500 && http <= 599 ? -EREMOTEIO : -EPROTO;
    }
}

/* The most specific message a Redfish error carries. */
static const char *error_message(json_t *body)
{
    json_t *e = json_object_get(body, "error");
    json_t *info = json_array_get(json_object_get(e, "@Message.ExtendedInfo"), 0);
    const char *m = json_string_value(json_object_get(info, "Message"));
    if (!m)
        m = json_string_value(json_object_get(e, "message"));
    return m;
}

void redfish_response_parse(struct redfish_response *p, bool get_system, const char *system,
                            const char *what, long http_status, const char *body, size_t len)
{
    struct redfish_result *out = &p->result;
    memset(p, 0, sizeof *p);
    out->detail = p->detail;
    out->http_status = http_status;
    if (len)
        p->body = json_loadb(body, len, 0, NULL);
    if (http_status < 200 || http_status > 299) {
        const char *m = error_message(p->body);
        out->status = map_status(http_status);
        fmtbuf(p->detail, sizeof p->detail, "%s: %s (HTTP %ld)", what, m ? m : "no message",
               http_status);
        return;
    }
    fmtbuf(p->detail, sizeof p->detail, "%s: HTTP %ld", what, http_status);
    if (!get_system)
        return;
    if (!json_is_object(p->body)) {
        out->status = -EBADMSG;
        fmtbuf(p->detail, sizeof p->detail, "%s: the response is not a JSON object", what);
        return;
    }
    struct redfish_system *sys = &p->sys;
    sys->json = p->body;
    sys->power_state = json_string_value(json_object_get(p->body, "PowerState"));
    if (!sys->power_state)
        sys->power_state = "";
    json_t *reset = json_object_get(json_object_get(p->body, "Actions"), "#ComputerSystem.Reset");
    sys->reset_target = json_string_value(json_object_get(reset, "target"));
    if (!sys->reset_target || sys->reset_target[0] != '/') {
        fmtbuf(p->target, sizeof p->target, "%s/Actions/ComputerSystem.Reset", system);
        sys->reset_target = p->target;
    }
    out->system = sys;
}

void redfish_response_free(struct redfish_response *p)
{
    json_decref(p->body);
    memset(p, 0, sizeof *p);
}

static void on_http(struct http_request *hr, const struct http_response *res, void *arg)
{
    (void)hr;
    struct redfish_request *r = arg;
    struct redfish_response p;
    if (res->result < 0 && res->result != -EREMOTEIO) {
        memset(&p, 0, sizeof p);
        p.result.status = res->result;
        p.result.detail = p.detail;
        fmtbuf(p.detail, sizeof p.detail, "%s: %s", r->what, res->detail);
    } else {
        redfish_response_parse(&p, r->get, r->system, r->what, res->status, res->body,
                               res->body_len);
    }
    r->cb(r, &p.result, r->arg);
    redfish_response_free(&p);
    free(r->system);
    free(r);
}

/* ---- requests ---- */

static bool valid_path(const char *p)
{
    return p && strncmp(p, "/redfish/", 9) == 0 && strlen(p) < 400 && !strpbrk(p, " \r\n?#");
}

static int start(struct redfish_client *c, bool get, const char *path, const char *body,
                 redfish_done_cb cb, void *arg, struct redfish_request **out)
{
    int result;
    struct redfish_request *r = NULL;
    struct buf cred, url;
    memset(&cred, 0, sizeof cred);
    buf_init(&url, 1024);
    if (out)
        *out = NULL;
    c->err[0] = '\0';
    if (!cb || !valid_path(path)) {
        fmtbuf(c->err, sizeof c->err, "a Redfish path starts with /redfish/ and has no spaces");
        result = -EINVAL;
        goto out;
    }
    r = calloc(1, sizeof *r);
    if (!r || !(r->system = strdup(path))) {
        result = -ENOMEM;
        goto out;
    }
    r->cb = cb;
    r->arg = arg;
    r->get = get;
    fmtbuf(r->what, sizeof r->what, "%s %s", get ? "GET" : "POST", path);
    if (buf_append_str(&url, c->url) < 0 || buf_append_str(&url, path) < 0) {
        result = -EINVAL;
        goto out;
    }
    result = read_credentials(c->credentials_file, &cred, c->err, sizeof c->err);
    if (result < 0)
        goto out;
    const char *headers[] = { "Accept: application/json", "OData-Version: 4.0",
                              "Content-Type: application/json" };
    struct http_request_opts o = {
        .method = get ? "GET" : "POST",
        .url = url.data,
        .headers = headers,
        .n_headers = body ? 3 : 2,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .timeout_ms = c->timeout_ms,
        .max_body = c->max_body,
        .ca_file = c->ca_file,
        .basic_auth = cred.data,
    };
    result = http_request_start(c->http, &o, on_http, r, &r->http);
    if (result < 0)
        fmtbuf(c->err, sizeof c->err, "%s: cannot start the request: %s", r->what,
               strerror(-result));
out:
    wipe(&cred);
    buf_free(&url);
    if (result < 0) {
        if (!c->err[0])
            fmtbuf(c->err, sizeof c->err, "%s", strerror(-result));
        if (r)
            free(r->system);
        free(r);
        return result;
    }
    if (out)
        *out = r;
    return 0;
}

int redfish_get_system(struct redfish_client *c, const char *system, redfish_done_cb cb, void *arg,
                       struct redfish_request **out)
{
    return start(c, true, system, NULL, cb, arg, out);
}

int redfish_reset(struct redfish_client *c, const char *target, const char *reset_type,
                  redfish_done_cb cb, void *arg, struct redfish_request **out)
{
    char body[96];
    if (!reset_type || !*reset_type || strlen(reset_type) > 40 ||
        strpbrk(reset_type, "\"\\ \r\n")) {
        fmtbuf(c->err, sizeof c->err, "invalid ResetType");
        return -EINVAL;
    }
    snprintf(body, sizeof body, "{\"ResetType\":\"%s\"}", reset_type);
    return start(c, false, target, body, cb, arg, out);
}

void redfish_request_cancel(struct redfish_request *req)
{
    if (req)
        http_request_cancel(req->http);
}
