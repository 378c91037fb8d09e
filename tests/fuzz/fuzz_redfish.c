/* Fuzz target: reading a BMC's Redfish responses (lib/redfish_client.c,
 * redfish_response_parse: what both calls do with the status and body the
 * transport delivered).
 *
 * Input: a control byte (bit 0: the response to a ComputerSystem GET, else
 * to a Reset POST), a byte choosing the HTTP status from a table, then the
 * body.
 *
 * Invariants: the result is 0 only for a 2xx; a successful GET delivers the
 * system, with a power state (maybe empty) and a Reset target that is an
 * absolute path; the detail names the call. */
#include <errno.h>
#include <string.h>

#include "fuzzutil.h"
#include "lib/redfish_client.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const long statuses[] = { 200, 202, 204, 299, 400, 401, 403, 404,
                                     405, 409, 500, 503, 100, 302, 600, -1 };
    if (size < 2)
        return 0;
    bool get = data[0] & 1;
    long http = statuses[data[1] % (sizeof statuses / sizeof statuses[0])];
    struct redfish_response p;
    redfish_response_parse(&p, get, "/redfish/v1/Systems/1", "GET /redfish/v1/Systems/1", http,
                           (const char *)data + 2, size - 2);
    const struct redfish_result *r = &p.result;
    FUZZ_CHECK(r->status <= 0, "status %d", r->status);
    FUZZ_CHECK(r->status != 0 || (http >= 200 && http <= 299), "status 0 for HTTP %ld", http);
    FUZZ_CHECK(r->detail && strncmp(r->detail, "GET /redfish/v1/Systems/1: ", 27) == 0,
               "detail '%s'", r->detail ? r->detail : "(null)");
    if (get && r->status == 0) {
        FUZZ_CHECK(r->system != NULL, "a successful GET without the system");
        FUZZ_CHECK(r->system->power_state != NULL, "no power state");
        FUZZ_CHECK(r->system->reset_target && r->system->reset_target[0] == '/',
                   "reset target '%s'", r->system->reset_target ? r->system->reset_target : "");
        FUZZ_CHECK(r->system->json != NULL, "no JSON");
    } else {
        FUZZ_CHECK(r->system == NULL, "a system without a successful GET");
    }
    redfish_response_free(&p);
    return 0;
}
