/* Test helper: a throwaway CA and certificates, made with the OpenSSL 3
 * API in a temporary directory, for suites that need real TLS peers.
 *
 * Files: <dir>/<ca>-ca.pem and <ca>-ca.key for a CA, <dir>/<name>.pem and
 * <name>.key for a leaf. Keys are P-256 (fast to make, also under
 * valgrind); certificates are valid from an hour ago for a day.
 */
#ifndef TRIAD_TESTCERTS_H
#define TRIAD_TESTCERTS_H

#include <stddef.h>

/* Creates a fresh directory under $TMPDIR (or /tmp); 0 or -1. */
int testcerts_dir(char *dir, size_t len);

/* A self-signed CA whose subject is CN=<ca>. */
int testcerts_ca(const char *dir, const char *ca);

/* A leaf signed by <ca>: subject CN=<cn>, a subjectAltName DNS:<san> unless
 * san is NULL, usable for both TLS server and client authentication. */
int testcerts_leaf(const char *dir, const char *ca, const char *name, const char *cn,
                   const char *san);

/* <dir>/<file> into out. Returns out. */
const char *testcerts_path(char *out, size_t len, const char *dir, const char *file);

/* Removes every file in dir, then dir. */
void testcerts_rmdir(const char *dir);

#endif
