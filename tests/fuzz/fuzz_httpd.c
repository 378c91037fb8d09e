/* Fuzz target: the control API's request path (lib/httpd on GNU
 * libmicrohttpd), through httpd_fuzz_feed(): the input is the raw byte
 * stream of one client connection, half-closed after the last byte; every
 * complete request is answered 200.
 *
 * Invariants: whatever the server wrote starts with an HTTP status line;
 * a request the handler saw has a method (its target may be anything MHD
 * accepts, even "x" or "http://h/p": the router matches exact paths); and the
 * first answer is the handler's 200 whenever the handler got a request
 * (the server answers an error itself only for requests it refuses). */
#include <string.h>

#include "fuzzutil.h"
#include "lib/httpd.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct httpd_fuzz_seen seen;
    int r = httpd_fuzz_feed(data, size, &seen);
    FUZZ_CHECK(r == 0, "httpd_fuzz_feed could not set up: %d", r);
    FUZZ_CHECK(seen.requests >= 0, "requests %d", seen.requests);
    if (seen.response_len > 0)
        FUZZ_CHECK(seen.status >= 100 && seen.status <= 599,
                   "the server wrote %zu bytes that do not start with a status line",
                   seen.response_len);
    if (seen.requests > 0) {
        FUZZ_CHECK(seen.method[0] != '\0', "a request without a method");
        FUZZ_CHECK(seen.status == 200 || seen.status == 0,
                   "the handler answered 200 but the client read %d", seen.status);
    }
    return 0;
}
