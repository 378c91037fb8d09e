/* A small Kubernetes API client on lib/http_client: Deployments and
 * StatefulSets (apps/v1), their `scale` subresource, annotations, and a
 * "scale and wait for ready replicas" operation.
 *
 * Credentials, in one of three forms (k8s_config):
 *   (a) server + ca_file + token_file and/or client certificate and key files;
 *   (b) a kubeconfig file: its current-context or a named one; clusters with
 *       server, certificate-authority(-data), tls-server-name; users with
 *       token, tokenFile, client-certificate(-data), client-key(-data).
 *       Relative paths are relative to the kubeconfig's directory, as
 *       kubectl has it. insecure-skip-tls-verify is refused unless
 *       allow_insecure; exec and auth-provider plugins, basic auth and
 *       proxy-url are refused (-ENOTSUP);
 *   (c) the in-cluster service account: $KUBERNETES_SERVICE_HOST/PORT and
 *       token, ca.crt, namespace under the service account directory.
 * Token files are read again at every request (service account tokens
 * rotate). Secrets are never logged nor put in a detail.
 *
 * Every call returns 0 or a negative errno; once it returned 0 its callback
 * runs exactly once, from a loop callback. Synchronous failures are
 * described by k8s_client_error(). API errors map to:
 *   401 -EACCES  403 -EPERM  404 -ENOENT  409 -EAGAIN (Conflict: stale
 *   resourceVersion) or -EEXIST (AlreadyExists)  400/415/422 -EINVAL
 *   429 -EBUSY  5xx -EREMOTEIO  other -EPROTO  a 2xx that is not the JSON
 *   expected -EBADMSG
 * with the v1 Status message in the detail ("deployments.apps \"x\" not
 * found (HTTP 404)"); transport errors are http_client's (-ETIMEDOUT,
 * -ECONNREFUSED, -EKEYREJECTED, -EPROTO, -EMSGSIZE for a response over the
 * cap, ...).
 *
 * Zero-valued counts are omitted by the API server, so a missing
 * status.replicas / readyReplicas / availableReplicas is 0, and a missing
 * spec.replicas is 0 in a Scale; in a Deployment or StatefulSet it is the
 * server's default, 1.
 */
#ifndef TRIAD_K8S_CLIENT_H
#define TRIAD_K8S_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#define K8S_DEFAULT_TIMEOUT_MS 10000
#define K8S_DEFAULT_MAX_BODY   (4u << 20)
#define K8S_SA_DIR             "/var/run/secrets/kubernetes.io/serviceaccount"
#define K8S_DETAIL_MAX         512
#define K8S_NAME_MAX           253
#define K8S_DEFAULT_SCALE_MS   300000
#define K8S_DEFAULT_POLL_MS    500

struct http_client;
struct k8s_client;
struct k8s_request;
struct k8s_scale;

enum k8s_kind { K8S_DEPLOYMENT, K8S_STATEFULSET };

struct k8s_config {
    /* (a) explicit */
    const char *server; /* https://host[:port][/prefix] */
    const char *ca_file;
    const char *token_file;
    const char *client_cert_file;
    const char *client_key_file;
    /* (b) kubeconfig */
    const char *kubeconfig;
    const char *context; /* NULL: its current-context */
    /* (c) in-cluster */
    bool in_cluster;
    const char *sa_dir;       /* NULL: K8S_SA_DIR */
    const char *service_host; /* NULL: $KUBERNETES_SERVICE_HOST */
    const char *service_port; /* NULL: $KUBERNETES_SERVICE_PORT */

    bool allow_insecure; /* accept a kubeconfig's insecure-skip-tls-verify */
    uint32_t timeout_ms; /* each request; 0: K8S_DEFAULT_TIMEOUT_MS */
    size_t max_body;     /* each response; 0: K8S_DEFAULT_MAX_BODY */
};

/* Reads the credentials (the kubeconfig or service account files; token
 * files are read again at each request). 0 or a negative errno with the
 * reason in err. The http client (on the same loop) is borrowed and must
 * outlive the client. */
int k8s_client_new(uv_loop_t *loop, struct http_client *http, const struct k8s_config *cfg,
                   struct k8s_client **out, char *err, size_t errlen);
/* Requests already started still complete; a running k8s_scale keeps the
 * client alive until it finishes. */
void k8s_client_free(struct k8s_client *c);
/* The reason for the last synchronous failure of a call on c. */
const char *k8s_client_error(const struct k8s_client *c);
/* The API server's base URL, and the namespace used when a call passes
 * NULL (the context's, the service account's, or "default"). */
const char *k8s_client_server(const struct k8s_client *c);
const char *k8s_client_namespace(const struct k8s_client *c);

const char *k8s_kind_name(enum k8s_kind k);     /* "Deployment" */
const char *k8s_kind_resource(enum k8s_kind k); /* "deployments" */
/* "Deployment"/"deployment"/"deployments"/"deploy", same for StatefulSet
 * ("sts"); 0 or -EINVAL. */
int k8s_kind_parse(const char *s, enum k8s_kind *out);

/* ---- single requests ---- */

struct k8s_object {
    enum k8s_kind kind;
    const char *name;
    const char *namespace_;
    const char *resource_version;
    int64_t generation;
    int64_t observed_generation; /* -1 when the controller has not reported */
    int spec_replicas;
    int replicas; /* status.replicas */
    int ready_replicas;
    int available_replicas;
    json_t *json; /* the whole object (borrowed, valid during the callback) */
};

struct k8s_result {
    int status;         /* 0 or a negative errno (see above) */
    long http_status;   /* 0 when no response */
    const char *reason; /* the Status reason ("NotFound"), or "" */
    const char *detail;
    json_t *body; /* parsed response or NULL (borrowed) */
    /* get, get_scale, set_scale, annotate: one; list: every item. */
    const struct k8s_object *objects;
    size_t n_objects;
};

typedef void (*k8s_done_cb)(struct k8s_request *req, const struct k8s_result *r, void *arg);

/* namespace NULL: k8s_client_namespace(). *out (may be NULL) is for
 * k8s_request_cancel and valid until the callback returns. */
int k8s_get(struct k8s_client *c, enum k8s_kind kind, const char *ns, const char *name,
            k8s_done_cb cb, void *arg, struct k8s_request **out);
/* selector: a label selector ("app=x,tier in (a,b)"), NULL for all. */
int k8s_list(struct k8s_client *c, enum k8s_kind kind, const char *ns, const char *selector,
             k8s_done_cb cb, void *arg, struct k8s_request **out);
/* The autoscaling/v1 Scale: spec_replicas and replicas are filled. */
int k8s_get_scale(struct k8s_client *c, enum k8s_kind kind, const char *ns, const char *name,
                  k8s_done_cb cb, void *arg, struct k8s_request **out);
/* PATCH (merge) of the Scale's spec.replicas. */
int k8s_set_scale(struct k8s_client *c, enum k8s_kind kind, const char *ns, const char *name,
                  int replicas, k8s_done_cb cb, void *arg, struct k8s_request **out);
/* PATCH (merge) of metadata.annotations: keys[i] is set to values[i], or
 * removed when values[i] is NULL. resource_version, when set, is a
 * precondition (-EAGAIN when the object changed since). */
int k8s_annotate(struct k8s_client *c, enum k8s_kind kind, const char *ns, const char *name,
                 const char *const *keys, const char *const *values, size_t n,
                 const char *resource_version, k8s_done_cb cb, void *arg, struct k8s_request **out);
/* Any other call: method, a path below the server ("/api/v1/namespaces"),
 * an optional JSON body (sent as content_type, default
 * application/merge-patch+json for PATCH, application/json otherwise). */
int k8s_raw(struct k8s_client *c, const char *method, const char *path, json_t *body,
            const char *content_type, k8s_done_cb cb, void *arg, struct k8s_request **out);
/* The callback runs with -ECANCELED (on the next loop iteration). */
void k8s_request_cancel(struct k8s_request *req);

/* ---- responses ---- */

/* What a call expects of a 2xx body: one object (get, annotate), a Scale
 * (get_scale, set_scale), a list (list), anything (raw). */
enum k8s_shape { K8S_SHAPE_OBJECT, K8S_SHAPE_SCALE, K8S_SHAPE_LIST, K8S_SHAPE_RAW };

/* A response (HTTP status and body, as the transport delivered it) read
 * into the result a call's callback gets: every call goes through it, and it
 * is exposed for tests and fuzzing - what an API server sends is untrusted
 * input. `what` ("GET deployments ess/x") starts the detail. result's
 * pointers refer to the struct: valid until k8s_response_free(). */
struct k8s_response {
    struct k8s_result result;
    /* private */
    json_t *body;
    struct k8s_object one;
    struct k8s_object *many;
    char detail[K8S_DETAIL_MAX];
};
void k8s_response_parse(struct k8s_response *r, enum k8s_shape shape, enum k8s_kind kind,
                        const char *what, long http_status, const char *body, size_t len);
void k8s_response_free(struct k8s_response *r);

/* ---- scale and wait ---- */

struct k8s_scale_target {
    enum k8s_kind kind;
    const char *name;     /* one object, or */
    const char *selector; /* every object it matches (at least one must) */
    int replicas;
};

struct k8s_scale_opts {
    const char *namespace_; /* NULL: k8s_client_namespace() */
    const struct k8s_scale_target *targets;
    size_t n_targets;
    uint32_t timeout_ms; /* the whole operation; 0: K8S_DEFAULT_SCALE_MS */
    uint32_t poll_ms;    /* 0: K8S_DEFAULT_POLL_MS */
    bool no_scale;       /* only wait for the state (a check or a verify) */
    bool no_wait;        /* set the replicas and return */
    /* An annotation written on every object before it is scaled (the
     * failover epoch). With monotonic, an object that already carries a
     * larger integer value is not touched and the operation fails with
     * -ESTALE: a stale writer never overrides a newer one. */
    const char *annotation;
    const char *annotation_value;
    bool annotation_monotonic;
};

struct k8s_scale_item {
    enum k8s_kind kind;
    char name[K8S_NAME_MAX + 1];
    int want;       /* replicas asked for */
    int spec;       /* last seen spec.replicas */
    int ready;      /* last seen status.readyReplicas */
    int replicas;   /* last seen status.replicas (pods, terminating ones too) */
    bool scaled;    /* spec.replicas was changed (false: it already was `want`) */
    bool annotated; /* the annotation was written (false: it already had it) */
    bool done;      /* spec, ready (and for 0, pods) at want, seen by the controller */
};

/* status 0 or a negative errno: -ETIMEDOUT (not ready in time: the detail
 * lists what is missing), -ENOENT (a name or selector found nothing),
 * -ESTALE (annotation), -ECANCELED, or a request's error. items are the
 * objects resolved so far (NULL when n is 0). */
typedef void (*k8s_scale_cb)(struct k8s_scale *s, int status, const char *detail,
                             const struct k8s_scale_item *items, size_t n, void *arg);

/* Resolves the targets, writes the annotation, sets the replicas where they
 * differ, then polls every poll_ms until every object is done: readyReplicas
 * == spec.replicas == want, observedGeneration caught up, and when want is
 * 0, no pods left (status.replicas 0). `progress` (may be NULL) runs after
 * each poll; `done` exactly once, from a loop callback. */
int k8s_scale_start(struct k8s_client *c, const struct k8s_scale_opts *o, k8s_scale_cb progress,
                    k8s_scale_cb done, void *arg, struct k8s_scale **out);
/* done runs with -ECANCELED once the requests in flight are stopped. */
void k8s_scale_cancel(struct k8s_scale *s);

/* "StatefulSet ess/x 1/0 ready, ..." of the items not done (all when none
 * is missing), for messages. */
void k8s_scale_describe(const struct k8s_scale_item *items, size_t n, const char *ns, char *out,
                        size_t len);

#endif
