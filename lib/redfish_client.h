/* A small Redfish client on lib/http_client, for power fencing through a
 * BMC: read a ComputerSystem (its PowerState and the target of its Reset
 * action) and POST ComputerSystem.Reset.
 *
 * HTTPS only, with basic auth from a credentials file holding
 * "user:password", read again at every request (a rotated password is used
 * at once) and never logged nor put in a detail. A CA file, when given, is
 * the only trust anchor (BMCs usually have a private CA).
 *
 * Every call returns 0 or a negative errno (the reason in
 * redfish_client_error()); once it returned 0 its callback runs exactly
 * once, from a loop callback. HTTP errors map to 400 -EINVAL, 401 -EACCES,
 * 403 -EPERM, 404 -ENOENT, 405 -EOPNOTSUPP, 409 -EBUSY, 5xx -EREMOTEIO,
 * other -EPROTO, with the Redfish message in the detail (the first
 * @Message.ExtendedInfo Message, else error.message); transport errors are
 * http_client's.
 */
#ifndef TRIAD_REDFISH_CLIENT_H
#define TRIAD_REDFISH_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#define REDFISH_DEFAULT_TIMEOUT_MS 10000
#define REDFISH_DEFAULT_MAX_BODY   (1024 * 1024)
#define REDFISH_DETAIL_MAX         512
#define REDFISH_DEFAULT_SYSTEM     "/redfish/v1/Systems/1"

struct http_client;
struct redfish_client;
struct redfish_request;

struct redfish_config {
    const char *url;              /* https://bmc[:port] */
    const char *credentials_file; /* "user:password" */
    const char *ca_file;          /* NULL: the system store */
    uint32_t timeout_ms;          /* each request; 0: REDFISH_DEFAULT_TIMEOUT_MS */
    size_t max_body;              /* 0: REDFISH_DEFAULT_MAX_BODY */
};

struct redfish_system {
    const char *power_state;  /* "On", "Off", "PoweringOn", "PoweringOff", ... "" when absent */
    const char *reset_target; /* the Reset action's target (or <system>/Actions/...) */
    json_t *json;             /* the whole resource (borrowed) */
};

struct redfish_result {
    int status;
    long http_status; /* 0 when no response */
    const char *detail;
    const struct redfish_system *system; /* redfish_get_system only, on success */
};

typedef void (*redfish_done_cb)(struct redfish_request *req, const struct redfish_result *r,
                                void *arg);

/* A response (HTTP status and body, as the transport delivered it) read
 * into the result a call's callback gets - for redfish_get_system
 * (get_system, with the system's path for the default Reset target) or
 * redfish_reset. Every call goes through it; exposed for tests and fuzzing,
 * as what a BMC sends is untrusted input. `what` starts the detail.
 * result's pointers refer to the struct: valid until
 * redfish_response_free(). */
struct redfish_response {
    struct redfish_result result;
    /* private */
    json_t *body;
    struct redfish_system sys;
    char detail[REDFISH_DETAIL_MAX];
    char target[512];
};
void redfish_response_parse(struct redfish_response *r, bool get_system, const char *system,
                            const char *what, long http_status, const char *body, size_t len);
void redfish_response_free(struct redfish_response *r);

/* 0 or a negative errno with the reason in err (a URL that is not https, an
 * unreadable or malformed credentials file). The http client is borrowed. */
int redfish_client_new(struct http_client *http, const struct redfish_config *cfg,
                       struct redfish_client **out, char *err, size_t errlen);
/* Requests already started still complete. */
void redfish_client_free(struct redfish_client *c);
const char *redfish_client_error(const struct redfish_client *c);

/* GET a ComputerSystem (system: a path such as REDFISH_DEFAULT_SYSTEM). */
int redfish_get_system(struct redfish_client *c, const char *system, redfish_done_cb cb, void *arg,
                       struct redfish_request **out);
/* POST {"ResetType": reset_type} to a Reset action target ("ForceOff",
 * "On", "GracefulShutdown", ...). 200, 202 and 204 are success. */
int redfish_reset(struct redfish_client *c, const char *target, const char *reset_type,
                  redfish_done_cb cb, void *arg, struct redfish_request **out);
/* The callback runs with -ECANCELED (on the next loop iteration). */
void redfish_request_cancel(struct redfish_request *req);

#endif
