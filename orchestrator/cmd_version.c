/* `triad version`: triad's version and the versions of the libraries it runs
 * with (as loaded at run time, not as compiled against). */
#include <ares.h>
#include <curl/curl.h>
#include <jansson.h>
#include <ldns/ldns.h>
#include <libpq-fe.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <uv.h>
#include <yaml.h>

#include "orchestrator/cli.h"

int cmd_version(const struct cli_args *a)
{
    (void)a;
    int pq = PQlibVersion();
    printf("triad %s\n", TRIAD_VERSION);
    printf("libuv %s\n", uv_version_string());
    printf("libpq %d.%d\n", pq / 10000, pq % 10000);
    printf("libcurl %s\n", curl_version_info(CURLVERSION_NOW)->version);
    printf("c-ares %s\n", ares_version(NULL));
    printf("OpenSSL %s\n", OpenSSL_version(OPENSSL_VERSION_STRING));
    printf("libyaml %s\n", yaml_get_version_string());
    printf("jansson %s\n", jansson_version_str());
    printf("ldns %s\n", ldns_version());
    printf("libmicrohttpd %s\n", MHD_get_version());
    return EXIT_OK;
}
