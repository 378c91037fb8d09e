/* Fuzz target: reading a Kubernetes API server's responses
 * (lib/k8s_client.c, k8s_response_parse: what every call does with the
 * status and body the transport delivered).
 *
 * Input: a control byte (bits 0-1: the shape the call expects - object,
 * Scale, list, raw; bit 2: Deployment or StatefulSet), a byte choosing the
 * HTTP status from a table, then the body.
 *
 * Invariants: the result is 0 or one of the documented errors, and 0 only
 * for a 2xx; every object delivered has a name, a namespace and a
 * resourceVersion (maybe empty) and replica counts within [0, 10^6]; a
 * successful object or Scale call delivers exactly one object; the detail
 * names the call. */
#include <errno.h>
#include <string.h>

#include "fuzzutil.h"
#include "lib/k8s_client.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init();
    return 0;
}

static bool counts_ok(int v)
{
    return v >= 0 && v <= 1000000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const long statuses[] = { 200, 201, 202, 204, 299, 400, 401, 403, 404, 409,
                                     415, 422, 429, 500, 503, 599, 100, 302, 600, -1 };
    if (size < 2)
        return 0;
    enum k8s_shape shape = (enum k8s_shape)(data[0] & 3);
    enum k8s_kind kind = data[0] & 4 ? K8S_STATEFULSET : K8S_DEPLOYMENT;
    long http = statuses[data[1] % (sizeof statuses / sizeof statuses[0])];
    struct k8s_response p;
    k8s_response_parse(&p, shape, kind, "GET deployments ess/x", http, (const char *)data + 2,
                       size - 2);
    const struct k8s_result *r = &p.result;
    static const int allowed[] = { 0,       -EINVAL, -EACCES,    -EPERM,  -ENOENT, -EAGAIN,
                                   -EEXIST, -EBUSY,  -EREMOTEIO, -EPROTO, -EBADMSG };
    bool known = false;
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        known = known || r->status == allowed[i];
    FUZZ_CHECK(known, "status %d", r->status);
    FUZZ_CHECK(r->status != 0 || (http >= 200 && http <= 299), "status 0 for HTTP %ld", http);
    FUZZ_CHECK(r->http_status == http, "http_status %ld, not %ld", r->http_status, http);
    FUZZ_CHECK(r->reason != NULL && r->detail != NULL, "no reason or detail");
    FUZZ_CHECK(strncmp(r->detail, "GET deployments ess/x: ", 23) == 0, "detail '%s'", r->detail);
    FUZZ_CHECK(r->n_objects == 0 || r->objects != NULL, "%zu objects, none given", r->n_objects);
    if (r->status == 0 && (shape == K8S_SHAPE_OBJECT || shape == K8S_SHAPE_SCALE))
        FUZZ_CHECK(r->n_objects == 1, "a successful get delivered %zu objects", r->n_objects);
    for (size_t i = 0; i < r->n_objects; i++) {
        const struct k8s_object *o = &r->objects[i];
        FUZZ_CHECK(o->name && o->namespace_ && o->resource_version && o->json,
                   "object %zu lacks a string", i);
        FUZZ_CHECK(o->kind == K8S_DEPLOYMENT || o->kind == K8S_STATEFULSET, "kind %d",
                   (int)o->kind);
        FUZZ_CHECK(counts_ok(o->spec_replicas) && counts_ok(o->replicas) &&
                       counts_ok(o->ready_replicas) && counts_ok(o->available_replicas),
                   "object %zu: replica counts out of range", i);
    }
    k8s_response_free(&p);
    return 0;
}
