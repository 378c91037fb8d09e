/* Helpers shared by the two TLS-over-libuv modules, lib/tls.c (framed peer
 * links) and lib/tls_stream.c (a TLS front for a plaintext stream server):
 * OpenSSL error text, numeric addresses, certificate names as they may be
 * shown in logs, and loading a certificate with its key. Not an API of its
 * own: anything here serves those two files. */
#ifndef TRIAD_TLS_UTIL_H
#define TRIAD_TLS_UTIL_H

#include <stddef.h>
#include <sys/socket.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <uv.h>

/* OpenSSL's reason for the oldest queued error into buf, then an empty
 * queue (it is per thread: a stale entry would blame the wrong call).
 * Returns buf. */
const char *tls_util_ssl_reason(char *buf, size_t len);
/* printf into err[errlen], when err is not NULL (the TLS modules' error
 * messages). */
void tls_util_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A numeric IPv4 or IPv6 address and a port (0..65535) into ss; -EINVAL
 * for anything else (names would need DNS, which could block). */
int tls_util_parse_addr(const char *host, int port, struct sockaddr_storage *ss);

/* "127.0.0.1:7400" or "[::1]:7400". */
void tls_util_format_addr(const struct sockaddr_storage *ss, char *out, size_t len);

/* The name a certificate is shown and known by: its first subjectAltName
 * DNS entry, else its CN (the precedence of X509_check_host), with bytes
 * outside printable ASCII replaced by '?'. "" when it has neither. */
void tls_util_cert_name(X509 *cert, char *out, size_t len);

/* The subject's first CN, only if it is 1..len-1 bytes of printable ASCII
 * (a name that would have to be altered to be shown is no identity): 0, or
 * -ENOENT (no CN) or -EINVAL (unprintable or too long), out then "". */
int tls_util_subject_cn(X509 *cert, char *out, size_t len);

/* A passphrase callback that gives none: an encrypted key is refused
 * rather than prompted for on the terminal, which would block the loop. */
int tls_util_no_passphrase(char *buf, int size, int rwflag, void *u);

/* Writes go to sockets with write(2): a peer that vanishes raises SIGPIPE.
 * Sets it to SIG_IGN if it is still SIG_DFL. */
void tls_util_ignore_sigpipe(void);

/* After a failed handshake OpenSSL has usually queued an alert in wbio
 * that tells the peer why; sends it if the socket takes it now
 * (uv_try_write refuses while earlier writes are queued), never waits. */
void tls_util_send_alert(BIO *wbio, uv_stream_t *stream);

/* Loads a PEM certificate chain and its unencrypted key into sc and checks
 * that they belong together. 0, or -EINVAL with err saying which file and
 * why (never key material). */
int tls_util_use_cert_key(SSL_CTX *sc, const char *cert_file, const char *key_file, char *err,
                          size_t errlen);

#endif
