/* Kubernetes API client: credentials (explicit, kubeconfig, in-cluster),
 * apps/v1 requests and their results, and the scale-and-wait operation. */
#include "lib/k8s_client.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/diag.h"
#include "lib/fsutil.h"
#include "lib/http_client.h"
#include "lib/log.h"
#include "lib/yaml_doc.h"

#define TOKEN_MAX     (16 * 1024) /* a service account JWT is ~1 kB */
#define PEM_FILE_MAX  (1024 * 1024)
#define NS_FILE_MAX   256
#define MAX_CONFLICTS 3 /* re-reads after a 409 on the annotation */

struct k8s_client {
    int refs; /* the owner, plus each running k8s_scale */
    uv_loop_t *loop;
    struct http_client *http;
    char *server;     /* base URL, no trailing slash (the TLS name when connect_to) */
    char *connect_to; /* host:port when the kubeconfig names a tls-server-name */
    char *ca_file;
    char *ca_pem;
    size_t ca_pem_len;
    char *cert_file;
    char *cert_pem;
    size_t cert_pem_len;
    char *key_file;
    char *key_pem;
    size_t key_pem_len;
    char *token; /* a kubeconfig's literal token */
    char *token_file;
    bool insecure;
    char *namespace_;
    uint32_t timeout_ms;
    size_t max_body;
    char err[K8S_DETAIL_MAX];
};

struct k8s_request {
    struct http_request *http;
    k8s_done_cb cb;
    void *arg;
    enum k8s_kind kind;
    enum k8s_shape shape;
    char what[K8S_NAME_MAX + 128]; /* "GET statefulsets ess/x", for details */
};

/* ---- small helpers ---- */

static void wipe_free(char *p, size_t len)
{
    if (p) {
        explicit_bzero(p, len);
        free(p);
    }
}

static int errf(char *err, size_t len, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int errf(char *err, size_t len, int code, const char *fmt, ...)
{
    if (err && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, len, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* snprintf for messages that may be cut short on purpose. */
static void fmtbuf(char *out, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fmtbuf(char *out, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, len, fmt, ap);
    va_end(ap);
}

static char *dupstr(const char *s)
{
    return s ? strdup(s) : NULL;
}

const char *k8s_kind_name(enum k8s_kind k)
{
    return k == K8S_STATEFULSET ? "StatefulSet" : "Deployment";
}

const char *k8s_kind_resource(enum k8s_kind k)
{
    return k == K8S_STATEFULSET ? "statefulsets" : "deployments";
}

int k8s_kind_parse(const char *s, enum k8s_kind *out)
{
    static const char *const dep[] = { "Deployment", "deployment", "deployments", "deploy", NULL };
    static const char *const sts[] = { "StatefulSet", "statefulset", "statefulsets", "sts", NULL };
    for (size_t i = 0; s && dep[i]; i++) {
        if (strcmp(s, dep[i]) == 0) {
            *out = K8S_DEPLOYMENT;
            return 0;
        }
    }
    for (size_t i = 0; s && sts[i]; i++) {
        if (strcmp(s, sts[i]) == 0) {
            *out = K8S_STATEFULSET;
            return 0;
        }
    }
    return -EINVAL;
}

/* DNS-1123 subdomain (object names) or label (namespaces): also what keeps
 * a name from changing the request path. */
static bool valid_name(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && !(ch == '-' || (ch == '.' && max > 63)))
            return false;
        if (!alnum && (i == 0 || i == n - 1))
            return false;
    }
    return true;
}

/* Reads a small file whole. */
static int read_file(const char *path, size_t max, struct buf *b)
{
    buf_init(b, max);
    int rc = fsutil_read(path, b);
    if (rc < 0)
        buf_free(b);
    return rc;
}

static void trim(struct buf *b)
{
    while (b->len && (unsigned char)b->data[b->len - 1] <= ' ')
        b->data[--b->len] = '\0';
}

/* A token file's content; the caller wipes and frees *out. Every copy
 * of the token made on the way is wiped. */
static int read_token(const char *path, char **out, char *err, size_t len)
{
    struct buf b;
    int result = 0;
    *out = NULL;
    buf_init(&b, TOKEN_MAX);
    int rc = fsutil_read(path, &b);
    if (rc < 0) {
        result = errf(err, len, rc, "cannot read token file %s: %s", path,
                      rc == -EMSGSIZE ? "larger than 16 kB" : strerror(-rc));
        goto out;
    }
    trim(&b);
    const char *tok = b.data ? b.data : "";
    while (*tok && (unsigned char)*tok <= ' ')
        tok++;
    if (!*tok || strpbrk(tok, "\r\n")) {
        result = errf(err, len, -EINVAL, "token file %s is empty or has several lines", path);
        goto out;
    }
    if (!(*out = strdup(tok)))
        result = -ENOMEM;
out:
    if (b.data)
        explicit_bzero(b.data, b.alloc);
    buf_free(&b);
    return result;
}

static int b64decode(const char *in, char **out, size_t *outlen)
{
    size_t n = strlen(in);
    unsigned char *o = malloc(n / 4 * 3 + 4);
    if (!o)
        return -ENOMEM;
    EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
    int l1 = 0, l2 = 0;
    int ok = ctx != NULL;
    if (ok) {
        EVP_DecodeInit(ctx);
        ok = EVP_DecodeUpdate(ctx, o, &l1, (const unsigned char *)in, (int)n) >= 0 &&
             EVP_DecodeFinal(ctx, o + l1, &l2) == 1;
    }
    EVP_ENCODE_CTX_free(ctx);
    if (!ok || l1 + l2 == 0) {
        free(o);
        return -EINVAL;
    }
    o[l1 + l2] = '\0';
    *out = (char *)o;
    *outlen = (size_t)(l1 + l2);
    return 0;
}

/* ---- kubeconfig ---- */

static const char *yscalar(struct ynode *map, const char *key)
{
    struct ynode *n = ynode_get(map, key);
    if (!n || n->type != YNODE_SCALAR || ynode_is_null(n))
        return NULL;
    return n->str;
}

/* The `inner` map of the entry named `name` in the sequence `list`
 * (kubeconfig's clusters / users / contexts shape). */
static struct ynode *named_entry(struct ynode *root, const char *list, const char *inner,
                                 const char *name)
{
    struct ynode *seq = ynode_get(root, list);
    if (!seq || seq->type != YNODE_SEQ)
        return NULL;
    for (size_t i = 0; i < seq->n; i++) {
        struct ynode *it = seq->items[i];
        if (it->type != YNODE_MAP)
            continue;
        const char *n = yscalar(it, "name");
        if (n && strcmp(n, name) == 0) {
            struct ynode *m = ynode_get(it, inner);
            return m && m->type == YNODE_MAP ? m : it;
        }
    }
    return NULL;
}

/* kubectl resolves relative paths against the kubeconfig's directory. */
static char *resolve_path(const char *kubeconfig, const char *p)
{
    if (p[0] == '/')
        return strdup(p);
    const char *slash = strrchr(kubeconfig, '/');
    size_t dl = slash ? (size_t)(slash - kubeconfig) : 1;
    const char *dir = slash ? kubeconfig : ".";
    size_t n = dl + strlen(p) + 2;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%.*s/%s", (int)dl, dir, p);
    return out;
}

static int pem_from(const char *kc, struct ynode *map, const char *file_key, const char *data_key,
                    char **file, char **pem, size_t *pem_len, char *err, size_t len)
{
    const char *data = yscalar(map, data_key);
    const char *path = yscalar(map, file_key);
    if (data) { /* client-go: the data field wins over the file */
        if (b64decode(data, pem, pem_len) < 0)
            return errf(err, len, -EINVAL, "kubeconfig %s: '%s' is not valid base64", kc, data_key);
        return 0;
    }
    if (path) {
        *file = resolve_path(kc, path);
        if (!*file)
            return -ENOMEM;
    }
    return 0;
}

static bool ytrue(struct ynode *map, const char *key)
{
    const char *v = yscalar(map, key);
    return v && (strcmp(v, "true") == 0 || strcmp(v, "True") == 0 || strcmp(v, "TRUE") == 0);
}

/* Depth is bounded by the YAML reader (YDOC_MAX_DEPTH). */
static void wipe_node(struct ynode *n)
{
    if (!n)
        return;
    if (n->type == YNODE_SCALAR && n->str)
        explicit_bzero(n->str, n->len);
    for (size_t i = 0; n->type == YNODE_SEQ && i < n->n; i++)
        wipe_node(n->items[i]);
    for (size_t i = 0; n->type == YNODE_MAP && i < n->n; i++) {
        wipe_node(n->pairs[i].key);
        wipe_node(n->pairs[i].value);
    }
}

static int load_kubeconfig(struct k8s_client *c, const struct k8s_config *cfg, char *err,
                           size_t len)
{
    const char *kc = cfg->kubeconfig;
    struct diag d;
    struct ydoc doc;
    int result = 0;
    memset(&doc, 0, sizeof doc);
    diag_init(&d);
    if (ydoc_load(&doc, kc, &d) < 0) {
        const struct diag_item *it = d.n ? &d.items[0] : NULL;
        result = errf(err, len, -EINVAL, "kubeconfig %s:%d:%d: %s", kc, it ? it->line : 0,
                      it ? it->col : 0, it ? it->msg : "cannot be read");
        goto out;
    }
    struct ynode *root = doc.root;
    if (!root || root->type != YNODE_MAP) {
        result = errf(err, len, -EINVAL, "kubeconfig %s: not a kubeconfig (no mapping)", kc);
        goto out;
    }
    const char *ctx_name = cfg->context ? cfg->context : yscalar(root, "current-context");
    if (!ctx_name) {
        result = errf(err, len, -EINVAL, "kubeconfig %s: no current-context and none chosen", kc);
        goto out;
    }
    struct ynode *ctx = named_entry(root, "contexts", "context", ctx_name);
    if (!ctx) {
        result = errf(err, len, -ENOENT, "kubeconfig %s: no context named '%s'", kc, ctx_name);
        goto out;
    }
    const char *cluster_name = yscalar(ctx, "cluster");
    const char *user_name = yscalar(ctx, "user");
    struct ynode *cl = cluster_name ? named_entry(root, "clusters", "cluster", cluster_name) : NULL;
    if (!cl) {
        result = errf(err, len, -ENOENT, "kubeconfig %s: context '%s' names no known cluster", kc,
                      ctx_name);
        goto out;
    }
    struct ynode *user = NULL;
    if (user_name && !(user = named_entry(root, "users", "user", user_name))) {
        result = errf(err, len, -ENOENT, "kubeconfig %s: context '%s' names unknown user '%s'", kc,
                      ctx_name, user_name);
        goto out;
    }
    const char *ns = yscalar(ctx, "namespace");
    if (ns && !(c->namespace_ = strdup(ns))) {
        result = -ENOMEM;
        goto out;
    }

    /* The cluster. */
    const char *server = yscalar(cl, "server");
    if (!server || strncmp(server, "https://", 8) != 0) {
        result = errf(err, len, -EINVAL, "kubeconfig %s: cluster '%s' needs an https:// server", kc,
                      cluster_name);
        goto out;
    }
    if (yscalar(cl, "proxy-url")) {
        result = errf(err, len, -ENOTSUP, "kubeconfig %s: cluster '%s': proxy-url is not supported",
                      kc, cluster_name);
        goto out;
    }
    if (ytrue(cl, "insecure-skip-tls-verify")) {
        if (!cfg->allow_insecure) {
            result = errf(err, len, -EPERM,
                          "kubeconfig %s: cluster '%s' has insecure-skip-tls-verify: refused "
                          "(the API server would not be authenticated)",
                          kc, cluster_name);
            goto out;
        }
        c->insecure = true;
        log_warn("k8s: %s: TLS verification of %s is off (insecure-skip-tls-verify)", kc, server);
    }
    result = pem_from(kc, cl, "certificate-authority", "certificate-authority-data", &c->ca_file,
                      &c->ca_pem, &c->ca_pem_len, err, len);
    if (result < 0)
        goto out;
    const char *tls_name = yscalar(cl, "tls-server-name");
    if (tls_name) {
        /* Connect to the server's address, name the TLS server tls_name. */
        const char *auth = server + 8;
        size_t alen = strcspn(auth, "/");
        const char *rest = auth + alen;
        const char *colon = memrchr(auth, ':', alen);
        const char *close = memchr(auth, ']', alen);
        bool has_port = colon && (!close || colon > close);
        char hp[300], base[600];
        snprintf(hp, sizeof hp, "%.*s%s", (int)alen, auth, has_port ? "" : ":443");
        const char *port = has_port ? colon + 1 : "443";
        int plen = has_port ? (int)(auth + alen - port) : 3;
        snprintf(base, sizeof base, "https://%s:%.*s%s", tls_name, plen, port, rest);
        c->connect_to = strdup(hp);
        c->server = strdup(base);
    } else {
        c->server = strdup(server);
    }
    if (!c->server || (tls_name && !c->connect_to)) {
        result = -ENOMEM;
        goto out;
    }

    /* The user. */
    if (user) {
        static const char *const unsupported[] = { "exec", "auth-provider", "username", "password",
                                                   NULL };
        for (size_t i = 0; unsupported[i]; i++) {
            if (ynode_get(user, unsupported[i])) {
                result = errf(err, len, -ENOTSUP,
                              "kubeconfig %s: user '%s': '%s' is not supported (use a token, "
                              "a token file or a client certificate)",
                              kc, user_name, unsupported[i]);
                goto out;
            }
        }
        const char *tf = yscalar(user, "tokenFile");
        const char *tok = yscalar(user, "token");
        if (tf) { /* client-go: the file wins, and is read again */
            if (!(c->token_file = resolve_path(kc, tf))) {
                result = -ENOMEM;
                goto out;
            }
        } else if (tok && !(c->token = strdup(tok))) {
            result = -ENOMEM;
            goto out;
        }
        result = pem_from(kc, user, "client-certificate", "client-certificate-data", &c->cert_file,
                          &c->cert_pem, &c->cert_pem_len, err, len);
        if (result < 0)
            goto out;
        result = pem_from(kc, user, "client-key", "client-key-data", &c->key_file, &c->key_pem,
                          &c->key_pem_len, err, len);
        if (result < 0)
            goto out;
        bool cert = c->cert_file || c->cert_pem, key = c->key_file || c->key_pem;
        if (cert != key) {
            result = errf(err, len, -EINVAL,
                          "kubeconfig %s: user '%s' needs both a client certificate and key", kc,
                          user_name);
            goto out;
        }
    }
out:
    /* The document holds secrets (token, key data): wipe before freeing. */
    wipe_node(doc.root);
    ydoc_free(&doc);
    diag_free(&d);
    return result;
}

/* ---- in-cluster and explicit ---- */

static int load_in_cluster(struct k8s_client *c, const struct k8s_config *cfg, char *err,
                           size_t len)
{
    const char *dir = cfg->sa_dir ? cfg->sa_dir : K8S_SA_DIR;
    const char *host = cfg->service_host ? cfg->service_host : getenv("KUBERNETES_SERVICE_HOST");
    const char *port = cfg->service_port ? cfg->service_port : getenv("KUBERNETES_SERVICE_PORT");
    if (!host || !*host || !port || !*port)
        return errf(err, len, -ENOENT,
                    "in-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not "
                    "set (not running in a pod?)");
    char url[512], path[512];
    bool v6 = strchr(host, ':') != NULL;
    snprintf(url, sizeof url, "https://%s%s%s:%s", v6 ? "[" : "", host, v6 ? "]" : "", port);
    c->server = strdup(url);
    snprintf(path, sizeof path, "%s/token", dir);
    c->token_file = strdup(path);
    snprintf(path, sizeof path, "%s/ca.crt", dir);
    c->ca_file = strdup(path);
    if (!c->server || !c->token_file || !c->ca_file)
        return -ENOMEM;
    if (access(c->ca_file, R_OK) < 0)
        return errf(err, len, -errno, "in-cluster: cannot read %s: %s", c->ca_file,
                    strerror(errno));
    snprintf(path, sizeof path, "%s/namespace", dir);
    struct buf b;
    if (read_file(path, NS_FILE_MAX, &b) == 0) {
        trim(&b);
        if (b.len)
            c->namespace_ = buf_steal(&b);
        buf_free(&b);
    }
    return 0;
}

static int load_explicit(struct k8s_client *c, const struct k8s_config *cfg, char *err, size_t len)
{
    if (strncmp(cfg->server, "https://", 8) != 0)
        return errf(err, len, -EINVAL, "server must be an https:// URL: %s", cfg->server);
    if ((cfg->client_cert_file == NULL) != (cfg->client_key_file == NULL))
        return errf(err, len, -EINVAL, "client certificate and key go together");
    c->server = dupstr(cfg->server);
    c->ca_file = dupstr(cfg->ca_file);
    c->token_file = dupstr(cfg->token_file);
    c->cert_file = dupstr(cfg->client_cert_file);
    c->key_file = dupstr(cfg->client_key_file);
    if (!c->server || (cfg->ca_file && !c->ca_file) || (cfg->token_file && !c->token_file) ||
        (cfg->client_cert_file && (!c->cert_file || !c->key_file)))
        return -ENOMEM;
    return 0;
}

static void client_release(struct k8s_client *c)
{
    if (!c || --c->refs > 0)
        return;
    free(c->server);
    free(c->connect_to);
    free(c->ca_file);
    free(c->ca_pem);
    free(c->cert_file);
    free(c->cert_pem);
    free(c->key_file);
    wipe_free(c->key_pem, c->key_pem_len);
    wipe_free(c->token, c->token ? strlen(c->token) : 0);
    free(c->token_file);
    free(c->namespace_);
    free(c);
}

int k8s_client_new(uv_loop_t *loop, struct http_client *http, const struct k8s_config *cfg,
                   struct k8s_client **out, char *err, size_t errlen)
{
    int result;
    struct k8s_client *c = NULL;
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (!loop || !http || !cfg)
        return errf(err, errlen, -EINVAL, "no loop, http client or configuration");
    int ways = (cfg->server != NULL) + (cfg->kubeconfig != NULL) + (cfg->in_cluster ? 1 : 0);
    if (ways != 1)
        return errf(err, errlen, -EINVAL,
                    "give exactly one of a server, a kubeconfig or in-cluster credentials");
    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->refs = 1;
    c->loop = loop;
    c->http = http;
    c->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : K8S_DEFAULT_TIMEOUT_MS;
    c->max_body = cfg->max_body ? cfg->max_body : K8S_DEFAULT_MAX_BODY;
    if (cfg->kubeconfig)
        result = load_kubeconfig(c, cfg, err, errlen);
    else if (cfg->in_cluster)
        result = load_in_cluster(c, cfg, err, errlen);
    else
        result = load_explicit(c, cfg, err, errlen);
    if (result < 0)
        goto out;
    /* Strip trailing slashes: paths are appended. */
    size_t n = strlen(c->server);
    while (n > 8 && c->server[n - 1] == '/')
        c->server[--n] = '\0';
    /* A token file that cannot be read now is a configuration error. */
    if (c->token_file) {
        char *tok = NULL;
        result = read_token(c->token_file, &tok, err, errlen);
        if (tok)
            wipe_free(tok, strlen(tok));
        if (result < 0)
            goto out;
    }
    if (!c->namespace_ && !(c->namespace_ = strdup("default"))) {
        result = -ENOMEM;
        goto out;
    }
out:
    if (result < 0) {
        if (result == -ENOMEM && err && errlen && !err[0])
            errf(err, errlen, result, "out of memory");
        client_release(c);
        return result;
    }
    *out = c;
    return 0;
}

void k8s_client_free(struct k8s_client *c)
{
    client_release(c);
}

const char *k8s_client_error(const struct k8s_client *c)
{
    return c->err;
}

const char *k8s_client_server(const struct k8s_client *c)
{
    return c->server;
}

const char *k8s_client_namespace(const struct k8s_client *c)
{
    return c->namespace_;
}

/* ---- results ---- */

static int64_t jint(json_t *o, const char *a, const char *b, int64_t dflt)
{
    json_t *v = json_object_get(o, a);
    if (b)
        v = json_object_get(v, b);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

static int clamp_int(int64_t v)
{
    return v < 0 ? 0 : v > 1000000 ? 1000000 : (int)v;
}

static const char *jstr(json_t *o, const char *a, const char *b)
{
    json_t *v = json_object_get(o, a);
    if (b)
        v = json_object_get(v, b);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int parse_object(json_t *o, enum k8s_kind kind, bool scale, struct k8s_object *obj)
{
    memset(obj, 0, sizeof *obj);
    const char *name = jstr(o, "metadata", "name");
    if (!json_is_object(o) || !name)
        return -EBADMSG;
    const char *k = jstr(o, "kind", NULL);
    obj->kind = kind;
    if (k && !scale)
        k8s_kind_parse(k, &obj->kind);
    obj->name = name;
    obj->namespace_ = jstr(o, "metadata", "namespace");
    if (!obj->namespace_)
        obj->namespace_ = "";
    obj->resource_version = jstr(o, "metadata", "resourceVersion");
    if (!obj->resource_version)
        obj->resource_version = "";
    obj->generation = jint(o, "metadata", "generation", 0);
    obj->observed_generation = jint(o, "status", "observedGeneration", -1);
    obj->spec_replicas = clamp_int(jint(o, "spec", "replicas", scale ? 0 : 1));
    obj->replicas = clamp_int(jint(o, "status", "replicas", 0));
    obj->ready_replicas = clamp_int(jint(o, "status", "readyReplicas", 0));
    obj->available_replicas = clamp_int(jint(o, "status", "availableReplicas", 0));
    obj->json = o;
    return 0;
}

static int map_status(long http, const char *reason)
{
    switch (http) {
    case 400:
    case 415:
    case 422:
        return -EINVAL;
    case 401:
        return -EACCES;
    case 403:
        return -EPERM;
    case 404:
        return -ENOENT;
    case 409:
        return reason && strcmp(reason, "AlreadyExists") == 0 ? -EEXIST : -EAGAIN;
    case 429:
        return -EBUSY;
    default:
        return http >= 500 && http <= 599 ? -EREMOTEIO : -EPROTO;
    }
}

/* A non-JSON error body, made printable and short. */
static void text_excerpt(const char *body, size_t len, char *out, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < len && k + 1 < max && k < 120; i++) {
        unsigned char ch = (unsigned char)body[i];
        out[k++] = ch < ' ' || ch == 0x7f ? ' ' : (char)ch;
    }
    while (k && out[k - 1] == ' ')
        k--;
    out[k] = '\0';
}

void k8s_response_parse(struct k8s_response *p, enum k8s_shape shape, enum k8s_kind kind,
                        const char *what, long http_status, const char *body, size_t len)
{
    struct k8s_result *out = &p->result;
    memset(p, 0, sizeof *p);
    out->reason = "";
    out->detail = p->detail;
    out->http_status = http_status;
    if (len)
        p->body = json_loadb(body, len, 0, NULL);
    out->body = p->body;
    if (http_status < 200 || http_status > 299) {
        const char *reason = jstr(p->body, "reason", NULL);
        const char *msg = jstr(p->body, "message", NULL);
        char excerpt[128];
        if (!msg) {
            text_excerpt(body, len, excerpt, sizeof excerpt);
            msg = excerpt[0] ? excerpt : "no message";
        }
        out->reason = reason ? reason : "";
        out->status = map_status(http_status, reason);
        fmtbuf(p->detail, sizeof p->detail, "%s: %s (HTTP %ld)", what, msg, http_status);
        return;
    }
    if (shape != K8S_SHAPE_RAW && !json_is_object(p->body)) {
        out->status = -EBADMSG;
        fmtbuf(p->detail, sizeof p->detail, "%s: HTTP %ld but the response is not a JSON object",
               what, http_status);
        return;
    }
    fmtbuf(p->detail, sizeof p->detail, "%s: HTTP %ld", what, http_status);
    switch (shape) {
    case K8S_SHAPE_OBJECT:
    case K8S_SHAPE_SCALE:
        if (parse_object(p->body, kind, shape == K8S_SHAPE_SCALE, &p->one) < 0) {
            out->status = -EBADMSG;
            fmtbuf(p->detail, sizeof p->detail, "%s: the response has no metadata.name", what);
            break;
        }
        out->objects = &p->one;
        out->n_objects = 1;
        break;
    case K8S_SHAPE_LIST: {
        json_t *items = json_object_get(p->body, "items");
        size_t n = json_array_size(items);
        if (!json_is_array(items) && !json_is_null(items) && items) {
            out->status = -EBADMSG;
            fmtbuf(p->detail, sizeof p->detail, "%s: 'items' is not a list", what);
            break;
        }
        if (n && !(p->many = calloc(n, sizeof *p->many))) {
            out->status = -ENOMEM;
            fmtbuf(p->detail, sizeof p->detail, "%s: out of memory", what);
            break;
        }
        for (size_t i = 0; i < n; i++) {
            if (parse_object(json_array_get(items, i), kind, false, &p->many[i]) < 0) {
                out->status = -EBADMSG;
                fmtbuf(p->detail, sizeof p->detail, "%s: item %zu has no metadata.name", what, i);
                break;
            }
        }
        if (out->status == 0) {
            out->objects = p->many;
            out->n_objects = n;
        }
        break;
    }
    case K8S_SHAPE_RAW:
        break;
    }
}

void k8s_response_free(struct k8s_response *p)
{
    json_decref(p->body);
    free(p->many);
    memset(p, 0, sizeof *p);
}

static void on_http(struct http_request *hr, const struct http_response *res, void *arg)
{
    (void)hr;
    struct k8s_request *r = arg;
    struct k8s_response p;
    if (res->result < 0 && res->result != -EREMOTEIO) {
        memset(&p, 0, sizeof p);
        p.result.status = res->result;
        p.result.reason = "";
        p.result.detail = p.detail;
        fmtbuf(p.detail, sizeof p.detail, "%s: %s", r->what, res->detail);
    } else {
        k8s_response_parse(&p, r->shape, r->kind, r->what, res->status, res->body, res->body_len);
    }
    r->cb(r, &p.result, r->arg);
    k8s_response_free(&p);
    free(r);
}

/* ---- requests ---- */

static void percent_encode(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            buf_append(b, s, 1);
        } else {
            char e[3] = { '%', hex[ch >> 4], hex[ch & 15] };
            buf_append(b, e, 3);
        }
    }
}

static int start(struct k8s_client *c, const char *method, const char *path, json_t *body,
                 const char *ctype, enum k8s_shape shape, enum k8s_kind kind, const char *what,
                 k8s_done_cb cb, void *arg, struct k8s_request **out)
{
    int result = 0;
    struct k8s_request *r = NULL;
    char *token = NULL, *payload = NULL;
    struct buf url;
    char ctype_hdr[128];
    const char *headers[2];
    size_t nh = 0;
    buf_init(&url, 8192);
    if (out)
        *out = NULL;
    c->err[0] = '\0';
    if (!cb) {
        result = errf(c->err, sizeof c->err, -EINVAL, "no callback");
        goto out;
    }
    r = calloc(1, sizeof *r);
    if (!r) {
        result = -ENOMEM;
        goto out;
    }
    r->cb = cb;
    r->arg = arg;
    r->kind = kind;
    r->shape = shape;
    snprintf(r->what, sizeof r->what, "%s", what);
    if (buf_append_str(&url, c->server) < 0 || buf_append_str(&url, path) < 0) {
        result = errf(c->err, sizeof c->err, -EINVAL, "%s: URL too long", what);
        goto out;
    }
    headers[nh++] = "Accept: application/json";
    if (body) {
        payload = json_dumps(body, JSON_COMPACT);
        if (!payload) {
            result = -ENOMEM;
            goto out;
        }
        if (!ctype)
            ctype =
                strcmp(method, "PATCH") == 0 ? "application/merge-patch+json" : "application/json";
        snprintf(ctype_hdr, sizeof ctype_hdr, "Content-Type: %s", ctype);
        headers[nh++] = ctype_hdr;
    }
    if (c->token_file) {
        result = read_token(c->token_file, &token, c->err, sizeof c->err);
        if (result < 0)
            goto out;
    }
    struct http_request_opts o = {
        .method = method,
        .url = url.data,
        .headers = headers,
        .n_headers = nh,
        .body = payload,
        .body_len = payload ? strlen(payload) : 0,
        .timeout_ms = c->timeout_ms,
        .max_body = c->max_body,
        .ca_file = c->ca_pem ? NULL : c->ca_file,
        .ca_pem = c->ca_pem,
        .ca_pem_len = c->ca_pem_len,
        .insecure = c->insecure,
        .client_cert = c->cert_pem ? NULL : c->cert_file,
        .client_key = c->key_pem ? NULL : c->key_file,
        .client_cert_pem = c->cert_pem,
        .client_cert_pem_len = c->cert_pem_len,
        .client_key_pem = c->key_pem,
        .client_key_pem_len = c->key_pem_len,
        .bearer_token = token ? token : c->token,
        .connect_to = c->connect_to,
    };
    result = http_request_start(c->http, &o, on_http, r, &r->http);
    if (result < 0)
        errf(c->err, sizeof c->err, result, "%s: cannot start the request: %s", what,
             strerror(-result));
out:
    if (token)
        wipe_free(token, strlen(token));
    free(payload);
    buf_free(&url);
    if (result < 0) {
        if (!c->err[0])
            errf(c->err, sizeof c->err, result, "%s: %s", what, strerror(-result));
        free(r);
        return result;
    }
    if (out)
        *out = r;
    return 0;
}

static int object_path(struct k8s_client *c, enum k8s_kind kind, const char **ns, const char *name,
                       const char *sub, char *path, size_t plen)
{
    if (!*ns)
        *ns = c->namespace_;
    if (!valid_name(*ns, 63))
        return errf(c->err, sizeof c->err, -EINVAL, "invalid namespace '%s'", *ns);
    if (name && !valid_name(name, K8S_NAME_MAX))
        return errf(c->err, sizeof c->err, -EINVAL, "invalid %s name '%s'", k8s_kind_name(kind),
                    name);
    snprintf(path, plen, "/apis/apps/v1/namespaces/%s/%s%s%s%s", *ns, k8s_kind_resource(kind),
             name ? "/" : "", name ? name : "", sub ? sub : "");
    return 0;
}

int k8s_get(struct k8s_client *c, enum k8s_kind kind, const char *ns, const char *name,
            k8s_done_cb cb, void *arg, struct k8s_request **out)
{
    char path[512], what[K8S_NAME_MAX + 128];
    if (!name)
        return errf(c->err, sizeof c->err, -EINVAL, "no name");
    int rc = object_path(c, kind, &ns, name, NULL, path, sizeof path);
    if (rc < 0)
        return rc;
    snprintf(what, sizeof what, "GET %s %s/%s", k8s_kind_resource(kind), ns, name);
    return start(c, "GET", path, NULL, NULL, K8S_SHAPE_OBJECT, kind, what, cb, arg, out);
}

int k8s_list(struct k8s_client *c, enum k8s_kind kind, const char *ns, const char *selector,
             k8s_done_cb cb, void *arg, struct k8s_request **out)
{
    char path[512], what[K8S_NAME_MAX + 128];
    int rc = object_path(c, kind, &ns, NULL, NULL, path, sizeof path);
    if (rc < 0)
        return rc;
    if (selector && strlen(selector) > 2048)
        return errf(c->err, sizeof c->err, -EINVAL, "label selector too long");
    struct buf p;
    buf_init(&p, 8192);
    buf_append_str(&p, path);
    if (selector && *selector) {
        buf_append_str(&p, "?labelSelector=");
        percent_encode(&p, selector);
    }
    snprintf(what, sizeof what, "LIST %s in %s%s%.*s", k8s_kind_resource(kind), ns,
             selector ? " with " : "", 160, selector ? selector : "");
    rc = p.truncated
             ? -EINVAL
             : start(c, "GET", p.data, NULL, NULL, K8S_SHAPE_LIST, kind, what, cb, arg, out);
    buf_free(&p);
    return rc;
}

int k8s_get_scale(struct k8s_client *c, enum k8s_kind kind, const char *ns, const char *name,
                  k8s_done_cb cb, void *arg, struct k8s_request **out)
{
    char path[512], what[K8S_NAME_MAX + 128];
    if (!name)
        return errf(c->err, sizeof c->err, -EINVAL, "no name");
    int rc = object_path(c, kind, &ns, name, "/scale", path, sizeof path);
    if (rc < 0)
        return rc;
    snprintf(what, sizeof what, "GET %s %s/%s/scale", k8s_kind_resource(kind), ns, name);
    return start(c, "GET", path, NULL, NULL, K8S_SHAPE_SCALE, kind, what, cb, arg, out);
}

int k8s_set_scale(struct k8s_client *c, enum k8s_kind kind, const char *ns, const char *name,
                  int replicas, k8s_done_cb cb, void *arg, struct k8s_request **out)
{
    char path[512], what[K8S_NAME_MAX + 128];
    if (!name)
        return errf(c->err, sizeof c->err, -EINVAL, "no name");
    if (replicas < 0)
        return errf(c->err, sizeof c->err, -EINVAL, "replicas must be >= 0");
    int rc = object_path(c, kind, &ns, name, "/scale", path, sizeof path);
    if (rc < 0)
        return rc;
    snprintf(what, sizeof what, "PATCH %s %s/%s/scale replicas=%d", k8s_kind_resource(kind), ns,
             name, replicas);
    json_t *body = json_pack("{s:{s:i}}", "spec", "replicas", replicas);
    if (!body)
        return -ENOMEM;
    rc = start(c, "PATCH", path, body, "application/merge-patch+json", K8S_SHAPE_SCALE, kind, what,
               cb, arg, out);
    json_decref(body);
    return rc;
}

int k8s_annotate(struct k8s_client *c, enum k8s_kind kind, const char *ns, const char *name,
                 const char *const *keys, const char *const *values, size_t n,
                 const char *resource_version, k8s_done_cb cb, void *arg, struct k8s_request **out)
{
    char path[512], what[K8S_NAME_MAX + 128];
    if (!name || !keys || !values || !n)
        return errf(c->err, sizeof c->err, -EINVAL, "no name or no annotation");
    int rc = object_path(c, kind, &ns, name, NULL, path, sizeof path);
    if (rc < 0)
        return rc;
    json_t *ann = json_object();
    json_t *md = json_pack("{s:o}", "annotations", ann);
    json_t *body = json_pack("{s:o}", "metadata", md);
    if (!body)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!keys[i] || !*keys[i] || strlen(keys[i]) > 316) {
            json_decref(body);
            return errf(c->err, sizeof c->err, -EINVAL, "invalid annotation key");
        }
        json_object_set_new(ann, keys[i], values[i] ? json_string(values[i]) : json_null());
    }
    if (resource_version)
        json_object_set_new(md, "resourceVersion", json_string(resource_version));
    snprintf(what, sizeof what, "PATCH %s %s/%s annotations", k8s_kind_resource(kind), ns, name);
    rc = start(c, "PATCH", path, body, "application/merge-patch+json", K8S_SHAPE_OBJECT, kind, what,
               cb, arg, out);
    json_decref(body);
    return rc;
}

int k8s_raw(struct k8s_client *c, const char *method, const char *path, json_t *body,
            const char *content_type, k8s_done_cb cb, void *arg, struct k8s_request **out)
{
    char what[K8S_NAME_MAX + 128];
    if (!method || !path || path[0] != '/' || strpbrk(path, " \r\n#"))
        return errf(c->err, sizeof c->err, -EINVAL, "a path starts with '/' and has no spaces");
    snprintf(what, sizeof what, "%s %.*s", method, 200, path);
    return start(c, method, path, body, content_type, K8S_SHAPE_RAW, K8S_DEPLOYMENT, what, cb, arg,
                 out);
}

void k8s_request_cancel(struct k8s_request *req)
{
    if (req)
        http_request_cancel(req->http);
}

/* ---- scale and wait ---- */

enum scale_phase { PH_RESOLVE, PH_ANNOTATE, PH_SCALE, PH_WAIT };

struct slot {
    struct k8s_scale *s;
    size_t idx;
    struct k8s_request *req;
    int conflicts;
};

struct item_state {
    struct slot slot;
    char *rv;  /* resourceVersion last seen */
    char *ann; /* the annotation's value last seen, or NULL */
    int64_t generation, observed;
};

struct k8s_scale {
    struct k8s_client *c;
    uv_timer_t deadline;
    uv_timer_t tick; /* the next poll, or the delivery of the result */
    int open_handles;
    k8s_scale_cb progress, done;
    void *arg;
    char *ns;
    struct k8s_scale_target *targets;
    struct slot *tslots;
    size_t n_targets;
    struct k8s_scale_item *items;
    struct item_state *st;
    size_t n_items;
    uint32_t timeout_ms, poll_ms;
    bool no_scale, no_wait, monotonic;
    char *annotation, *annotation_value;
    enum scale_phase phase;
    int pending;
    bool finishing, delivered;
    int status;
    char detail[K8S_DETAIL_MAX];
};

static void phase_next(struct k8s_scale *s);
static void on_tick_poll(uv_timer_t *t);

void k8s_scale_describe(const struct k8s_scale_item *items, size_t n, const char *ns, char *out,
                        size_t len)
{
    bool any_missing = false;
    size_t k = 0;
    if (!len)
        return;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        any_missing |= !items[i].done;
    for (size_t i = 0; i < n && k < len; i++) {
        const struct k8s_scale_item *it = &items[i];
        if (any_missing && it->done)
            continue;
        char one[K8S_NAME_MAX + 160];
        int m = snprintf(one, sizeof one, "%s %s/%s ready %d/%d", k8s_kind_name(it->kind),
                         ns ? ns : "", it->name, it->ready, it->want);
        if (it->spec != it->want)
            m += snprintf(one + m, sizeof one - (size_t)m, " (spec.replicas %d)", it->spec);
        else if (it->want == 0 && it->replicas)
            snprintf(one + m, sizeof one - (size_t)m, " (%d pod(s) left)", it->replicas);
        int w = snprintf(out + k, len - k, "%s%s", k ? ", " : "", one);
        if (w < 0 || (size_t)w >= len - k) {
            if (len > 4)
                memcpy(out + len - 4, "...", 4);
            return;
        }
        k += (size_t)w;
    }
}

static void on_scale_closed(uv_handle_t *h)
{
    struct k8s_scale *s = h->data;
    if (--s->open_handles > 0)
        return;
    for (size_t i = 0; i < s->n_targets; i++) {
        free((char *)s->targets[i].name);
        free((char *)s->targets[i].selector);
    }
    for (size_t i = 0; i < s->n_items; i++) {
        free(s->st[i].rv);
        free(s->st[i].ann);
    }
    free(s->targets);
    free(s->tslots);
    free(s->items);
    free(s->st);
    free(s->ns);
    free(s->annotation);
    free(s->annotation_value);
    client_release(s->c);
    free(s);
}

static void deliver(uv_timer_t *t)
{
    struct k8s_scale *s = t->data;
    if (s->delivered)
        return;
    s->delivered = true;
    s->done(s, s->status, s->detail, s->items, s->n_items, s->arg);
    s->open_handles = 2;
    uv_close((uv_handle_t *)&s->deadline, on_scale_closed);
    uv_close((uv_handle_t *)&s->tick, on_scale_closed);
}

static void maybe_deliver(struct k8s_scale *s)
{
    if (s->finishing && s->pending == 0)
        uv_timer_start(&s->tick, deliver, 0, 0);
}

static void finish(struct k8s_scale *s, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void finish(struct k8s_scale *s, int status, const char *fmt, ...)
{
    if (s->finishing)
        return;
    s->finishing = true;
    s->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->detail, sizeof s->detail, fmt, ap);
    va_end(ap);
    uv_timer_stop(&s->deadline);
    uv_timer_stop(&s->tick);
    for (size_t i = 0; i < s->n_targets; i++)
        k8s_request_cancel(s->tslots[i].req);
    for (size_t i = 0; s->st && i < s->n_items; i++)
        k8s_request_cancel(s->st[i].slot.req);
    maybe_deliver(s);
}

static void on_deadline(uv_timer_t *t)
{
    struct k8s_scale *s = t->data;
    char what[K8S_DETAIL_MAX - 64];
    k8s_scale_describe(s->items, s->n_items, s->ns, what, sizeof what);
    if (s->phase == PH_WAIT)
        finish(s, -ETIMEDOUT, "not ready after %u ms: %s", s->timeout_ms, what);
    else
        finish(s, -ETIMEDOUT, "timed out after %u ms before the replicas were set", s->timeout_ms);
}

/* A request of the current phase ended; true when the caller should go on
 * handling its result. */
static bool slot_done(struct slot *sl)
{
    struct k8s_scale *s = sl->s;
    sl->req = NULL;
    s->pending--;
    if (s->finishing) {
        maybe_deliver(s);
        return false;
    }
    return true;
}

static void phase_step_done(struct k8s_scale *s)
{
    if (!s->finishing && s->pending == 0)
        phase_next(s);
}

static int add_item(struct k8s_scale *s, const struct k8s_object *o, int want)
{
    for (size_t i = 0; i < s->n_items; i++) {
        if (s->items[i].kind == o->kind && strcmp(s->items[i].name, o->name) == 0) {
            if (s->items[i].want != want) {
                finish(s, -EINVAL, "%s %s/%s is asked for both %d and %d replicas",
                       k8s_kind_name(o->kind), s->ns, o->name, s->items[i].want, want);
                return -EINVAL;
            }
            return 0;
        }
    }
    struct k8s_scale_item *ni = realloc(s->items, (s->n_items + 1) * sizeof *ni);
    if (ni)
        s->items = ni;
    struct item_state *ns = realloc(s->st, (s->n_items + 1) * sizeof *ns);
    if (ns)
        s->st = ns;
    if (!ni || !ns) {
        finish(s, -ENOMEM, "out of memory");
        return -ENOMEM;
    }
    struct k8s_scale_item *it = &s->items[s->n_items];
    struct item_state *st = &s->st[s->n_items];
    memset(it, 0, sizeof *it);
    memset(st, 0, sizeof *st);
    it->kind = o->kind;
    snprintf(it->name, sizeof it->name, "%s", o->name);
    it->want = want;
    it->spec = o->spec_replicas;
    it->ready = o->ready_replicas;
    it->replicas = o->replicas;
    st->rv = strdup(o->resource_version);
    json_t *anns = json_object_get(json_object_get(o->json, "metadata"), "annotations");
    json_t *av = s->annotation ? json_object_get(anns, s->annotation) : NULL;
    st->ann = json_is_string(av) ? strdup(json_string_value(av)) : NULL;
    st->generation = o->generation;
    st->observed = o->observed_generation;
    s->n_items++;
    return 0;
}

static void on_resolved(struct k8s_request *req, const struct k8s_result *r, void *arg)
{
    (void)req;
    struct slot *sl = arg;
    struct k8s_scale *s = sl->s;
    if (!slot_done(sl))
        return;
    const struct k8s_scale_target *t = &s->targets[sl->idx];
    if (r->status < 0) {
        finish(s, r->status, "%s", r->detail);
        return;
    }
    if (t->selector && r->n_objects == 0) {
        finish(s, -ENOENT, "no %s in namespace %s matches %s", k8s_kind_name(t->kind), s->ns,
               t->selector);
        return;
    }
    for (size_t i = 0; i < r->n_objects; i++) {
        if (add_item(s, &r->objects[i], t->replicas) < 0)
            return;
    }
    phase_step_done(s);
}

static bool item_done(const struct k8s_scale_item *it, const struct item_state *st)
{
    if (it->spec != it->want || it->ready != it->want)
        return false;
    if (it->want == 0 && it->replicas != 0)
        return false;
    /* The controller must have seen the current spec. */
    return st->generation <= 0 || st->observed >= st->generation;
}

static void update_item(struct k8s_scale *s, size_t i, const struct k8s_object *o)
{
    struct k8s_scale_item *it = &s->items[i];
    struct item_state *st = &s->st[i];
    it->spec = o->spec_replicas;
    it->ready = o->ready_replicas;
    it->replicas = o->replicas;
    st->generation = o->generation;
    st->observed = o->observed_generation;
    if (o->resource_version[0]) {
        char *rv = strdup(o->resource_version);
        if (rv) {
            free(st->rv);
            st->rv = rv;
        }
    }
    json_t *anns = json_object_get(json_object_get(o->json, "metadata"), "annotations");
    json_t *av = s->annotation ? json_object_get(anns, s->annotation) : NULL;
    free(st->ann);
    st->ann = json_is_string(av) ? strdup(json_string_value(av)) : NULL;
    it->done = item_done(it, st);
}

static int annotate_item(struct k8s_scale *s, size_t i);

static void on_refetched(struct k8s_request *req, const struct k8s_result *r, void *arg)
{
    (void)req;
    struct slot *sl = arg;
    struct k8s_scale *s = sl->s;
    if (!slot_done(sl))
        return;
    if (r->status < 0) {
        finish(s, r->status, "%s", r->detail);
        return;
    }
    update_item(s, sl->idx, &r->objects[0]);
    if (annotate_item(s, sl->idx) == 0)
        phase_step_done(s);
}

static void on_annotated(struct k8s_request *req, const struct k8s_result *r, void *arg)
{
    (void)req;
    struct slot *sl = arg;
    struct k8s_scale *s = sl->s;
    if (!slot_done(sl))
        return;
    struct k8s_scale_item *it = &s->items[sl->idx];
    if (r->status == -EAGAIN && ++sl->conflicts <= MAX_CONFLICTS) {
        /* Someone else changed the object since we read it: read it again
         * and decide again (their change may be a newer annotation). */
        int rc = k8s_get(s->c, it->kind, s->ns, it->name, on_refetched, sl, &sl->req);
        if (rc < 0) {
            finish(s, rc, "%s", k8s_client_error(s->c));
            return;
        }
        s->pending++;
        return;
    }
    if (r->status < 0) {
        finish(s, r->status, "%s", r->detail);
        return;
    }
    it->annotated = true;
    update_item(s, sl->idx, &r->objects[0]);
    phase_step_done(s);
}

static bool parse_i64(const char *v, long long *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end)
        return false;
    *out = n;
    return true;
}

/* Starts the annotation of item i when needed: 0, or <0 after finish(). */
static int annotate_item(struct k8s_scale *s, size_t i)
{
    struct k8s_scale_item *it = &s->items[i];
    struct item_state *st = &s->st[i];
    if (st->ann && strcmp(st->ann, s->annotation_value) == 0)
        return 0;
    long long have, mine;
    if (s->monotonic && st->ann && parse_i64(st->ann, &have) &&
        parse_i64(s->annotation_value, &mine) && have > mine) {
        finish(s, -ESTALE, "%s %s/%s carries %s=%s, newer than %s: not touched",
               k8s_kind_name(it->kind), s->ns, it->name, s->annotation, st->ann,
               s->annotation_value);
        return -ESTALE;
    }
    const char *keys[] = { s->annotation };
    const char *values[] = { s->annotation_value };
    st->slot.s = s;
    st->slot.idx = i;
    int rc = k8s_annotate(s->c, it->kind, s->ns, it->name, keys, values, 1, st->rv, on_annotated,
                          &st->slot, &st->slot.req);
    if (rc < 0) {
        finish(s, rc, "%s", k8s_client_error(s->c));
        return rc;
    }
    s->pending++;
    return 0;
}

static void on_scaled(struct k8s_request *req, const struct k8s_result *r, void *arg)
{
    (void)req;
    struct slot *sl = arg;
    struct k8s_scale *s = sl->s;
    if (!slot_done(sl))
        return;
    if (r->status < 0) {
        finish(s, r->status, "%s", r->detail);
        return;
    }
    struct k8s_scale_item *it = &s->items[sl->idx];
    it->scaled = true;
    it->spec = r->objects[0].spec_replicas;
    phase_step_done(s);
}

static void on_polled(struct k8s_request *req, const struct k8s_result *r, void *arg)
{
    (void)req;
    struct slot *sl = arg;
    struct k8s_scale *s = sl->s;
    if (!slot_done(sl))
        return;
    if (r->status < 0) {
        /* Polling keeps going through transient errors until the deadline;
         * an object that disappeared, or lost credentials, do not heal. */
        if (r->status == -ENOENT || r->status == -EACCES || r->status == -EPERM) {
            finish(s, r->status, "%s", r->detail);
            return;
        }
        log_debug("k8s: poll: %s", r->detail);
    } else {
        update_item(s, sl->idx, &r->objects[0]);
    }
    if (s->pending > 0)
        return;
    if (s->progress)
        s->progress(s, 0, "", s->items, s->n_items, s->arg);
    if (s->finishing)
        return; /* cancelled from the progress callback */
    bool all = true;
    for (size_t i = 0; i < s->n_items; i++)
        all &= s->items[i].done;
    if (all) {
        char what[K8S_DETAIL_MAX - 32];
        k8s_scale_describe(s->items, s->n_items, s->ns, what, sizeof what);
        finish(s, 0, "%s", what);
        return;
    }
    uv_timer_start(&s->tick, on_tick_poll, s->poll_ms, 0);
}

static void poll_round(struct k8s_scale *s)
{
    if (s->finishing)
        return;
    for (size_t i = 0; i < s->n_items; i++) {
        struct k8s_scale_item *it = &s->items[i];
        struct slot *sl = &s->st[i].slot;
        sl->s = s;
        sl->idx = i;
        int rc = k8s_get(s->c, it->kind, s->ns, it->name, on_polled, sl, &sl->req);
        if (rc < 0) {
            finish(s, rc, "%s", k8s_client_error(s->c));
            return;
        }
        s->pending++;
    }
}

static void on_tick_poll(uv_timer_t *t)
{
    poll_round(t->data);
}

static void phase_next(struct k8s_scale *s)
{
    switch (s->phase) {
    case PH_RESOLVE:
        s->phase = PH_ANNOTATE;
        if (s->annotation) {
            for (size_t i = 0; i < s->n_items; i++) {
                if (annotate_item(s, i) < 0)
                    return;
            }
            if (s->pending)
                return;
        }
        /* fall through */
    case PH_ANNOTATE:
        s->phase = PH_SCALE;
        if (!s->no_scale) {
            for (size_t i = 0; i < s->n_items; i++) {
                struct k8s_scale_item *it = &s->items[i];
                struct slot *sl = &s->st[i].slot;
                if (it->spec == it->want)
                    continue; /* already so: idempotent */
                sl->s = s;
                sl->idx = i;
                int rc = k8s_set_scale(s->c, it->kind, s->ns, it->name, it->want, on_scaled, sl,
                                       &sl->req);
                if (rc < 0) {
                    finish(s, rc, "%s", k8s_client_error(s->c));
                    return;
                }
                s->pending++;
            }
            if (s->pending)
                return;
        }
        /* fall through */
    case PH_SCALE:
        s->phase = PH_WAIT;
        if (s->no_wait) {
            char what[K8S_DETAIL_MAX - 32];
            for (size_t i = 0; i < s->n_items; i++)
                s->items[i].done = s->items[i].spec == s->items[i].want;
            k8s_scale_describe(s->items, s->n_items, s->ns, what, sizeof what);
            finish(s, 0, "replicas set (not waited for): %s", what);
            return;
        }
        uv_timer_start(&s->tick, on_tick_poll, 0, 0);
        return;
    case PH_WAIT:
        return;
    }
}

int k8s_scale_start(struct k8s_client *c, const struct k8s_scale_opts *o, k8s_scale_cb progress,
                    k8s_scale_cb done, void *arg, struct k8s_scale **out)
{
    int result = 0;
    struct k8s_scale *s = NULL;
    if (out)
        *out = NULL;
    if (!c || !o || !done)
        return -EINVAL;
    c->err[0] = '\0';
    const char *ns = o->namespace_ ? o->namespace_ : c->namespace_;
    if (!o->n_targets || !o->targets)
        return errf(c->err, sizeof c->err, -EINVAL, "nothing to scale");
    if (!valid_name(ns, 63))
        return errf(c->err, sizeof c->err, -EINVAL, "invalid namespace '%s'", ns);
    if ((o->annotation == NULL) != (o->annotation_value == NULL))
        return errf(c->err, sizeof c->err, -EINVAL, "an annotation needs a value");
    for (size_t i = 0; i < o->n_targets; i++) {
        const struct k8s_scale_target *t = &o->targets[i];
        if ((t->name == NULL) == (t->selector == NULL))
            return errf(c->err, sizeof c->err, -EINVAL,
                        "target %zu: give exactly one of a name or a selector", i);
        if (t->name && !valid_name(t->name, K8S_NAME_MAX))
            return errf(c->err, sizeof c->err, -EINVAL, "invalid name '%s'", t->name);
        if (t->replicas < 0)
            return errf(c->err, sizeof c->err, -EINVAL, "replicas must be >= 0");
    }
    s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->c = c;
    s->progress = progress;
    s->done = done;
    s->arg = arg;
    s->timeout_ms = o->timeout_ms ? o->timeout_ms : K8S_DEFAULT_SCALE_MS;
    s->poll_ms = o->poll_ms ? o->poll_ms : K8S_DEFAULT_POLL_MS;
    s->no_scale = o->no_scale;
    s->no_wait = o->no_wait;
    s->monotonic = o->annotation_monotonic;
    s->ns = strdup(ns);
    s->annotation = dupstr(o->annotation);
    s->annotation_value = dupstr(o->annotation_value);
    s->targets = calloc(o->n_targets, sizeof *s->targets);
    s->tslots = calloc(o->n_targets, sizeof *s->tslots);
    if (!s->ns || !s->targets || !s->tslots || (o->annotation && !s->annotation) ||
        (o->annotation_value && !s->annotation_value)) {
        result = -ENOMEM;
        goto out;
    }
    s->n_targets = o->n_targets;
    for (size_t i = 0; i < o->n_targets; i++) {
        s->targets[i] = o->targets[i];
        s->targets[i].name = dupstr(o->targets[i].name);
        s->targets[i].selector = dupstr(o->targets[i].selector);
        if ((o->targets[i].name && !s->targets[i].name) ||
            (o->targets[i].selector && !s->targets[i].selector)) {
            result = -ENOMEM;
            goto out;
        }
    }
out:
    if (result < 0) {
        for (size_t i = 0; s->targets && i < s->n_targets; i++) {
            free((char *)s->targets[i].name);
            free((char *)s->targets[i].selector);
        }
        free(s->targets);
        free(s->tslots);
        free(s->ns);
        free(s->annotation);
        free(s->annotation_value);
        free(s);
        return result;
    }
    c->refs++;
    uv_timer_init(c->loop, &s->deadline);
    uv_timer_init(c->loop, &s->tick);
    s->deadline.data = s;
    s->tick.data = s;
    uv_timer_start(&s->deadline, on_deadline, s->timeout_ms, 0);
    s->phase = PH_RESOLVE;
    for (size_t i = 0; i < s->n_targets; i++) {
        const struct k8s_scale_target *t = &s->targets[i];
        struct slot *sl = &s->tslots[i];
        sl->s = s;
        sl->idx = i;
        int rc = t->name ? k8s_get(c, t->kind, s->ns, t->name, on_resolved, sl, &sl->req)
                         : k8s_list(c, t->kind, s->ns, t->selector, on_resolved, sl, &sl->req);
        if (rc < 0) {
            /* Reported through the callback, like any later failure. */
            finish(s, rc, "%s", k8s_client_error(c));
            break;
        }
        s->pending++;
    }
    if (out)
        *out = s;
    return 0;
}

void k8s_scale_cancel(struct k8s_scale *s)
{
    if (s)
        finish(s, -ECANCELED, "cancelled");
}
