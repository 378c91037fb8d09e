/* Helpers shared by lib/tls.c and lib/tls_stream.c (see tls_util.h). */
#include "lib/tls_util.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <uv.h>

const char *tls_util_ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r)
        snprintf(buf, len, "%s", r);
    else if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "unknown TLS error");
    ERR_clear_error();
    return buf;
}

int tls_util_parse_addr(const char *host, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (host == NULL || port < 0 || port > 65535)
        return -EINVAL;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return -EINVAL;
}

void tls_util_format_addr(const struct sockaddr_storage *ss, char *out, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        uv_ip6_name(a, ip, sizeof ip);
        snprintf(out, len, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        uv_ip4_name(a, ip, sizeof ip);
        snprintf(out, len, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
    }
}

/* Certificate names go into logs: keep printable ASCII only. */
static void copy_printable(char *out, size_t len, const unsigned char *s, int n)
{
    size_t j = 0;
    for (int i = 0; i < n && j + 1 < len; i++)
        out[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    out[j] = '\0';
}

void tls_util_cert_name(X509 *cert, char *out, size_t len)
{
    out[0] = '\0';
    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type == GEN_DNS) {
            copy_printable(out, len, ASN1_STRING_get0_data(g->d.dNSName),
                           ASN1_STRING_length(g->d.dNSName));
            break;
        }
    }
    GENERAL_NAMES_free(sans);
    if (out[0])
        return;
    X509_NAME *subj = X509_get_subject_name(cert);
    int i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (i < 0)
        return;
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i)));
    if (n >= 0)
        copy_printable(out, len, utf8, n);
    OPENSSL_free(utf8);
}

int tls_util_subject_cn(X509 *cert, char *out, size_t len)
{
    int result = -ENOENT;
    unsigned char *utf8 = NULL;
    out[0] = '\0';
    X509_NAME *subj = X509_get_subject_name(cert);
    int i = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
    if (i < 0)
        goto out;
    int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i)));
    result = -EINVAL;
    if (n <= 0 || (size_t)n >= len)
        goto out;
    for (int k = 0; k < n; k++) {
        if (utf8[k] < 0x20 || utf8[k] >= 0x7f)
            goto out;
    }
    memcpy(out, utf8, (size_t)n);
    out[n] = '\0';
    result = 0;
out:
    OPENSSL_free(utf8);
    return result;
}

int tls_util_no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

void tls_util_ignore_sigpipe(void)
{
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
    }
}

void tls_util_send_alert(BIO *wbio, uv_stream_t *stream)
{
    char buf[1024];
    size_t n = BIO_ctrl_pending(wbio);
    if (n == 0 || n > sizeof buf)
        return;
    int got = BIO_read(wbio, buf, (int)n);
    if (got <= 0)
        return;
    uv_buf_t b = uv_buf_init(buf, (unsigned)got);
    (void)uv_try_write(stream, &b, 1);
}

void tls_util_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int tls_util_use_cert_key(SSL_CTX *sc, const char *cert_file, const char *key_file, char *err,
                          size_t errlen)
{
    char why[256];
    SSL_CTX_set_default_passwd_cb(sc, tls_util_no_passphrase);
    if (!SSL_CTX_use_certificate_chain_file(sc, cert_file)) {
        tls_util_set_err(err, errlen, "cannot load certificate file %s: %s", cert_file,
                         tls_util_ssl_reason(why, sizeof why));
        return -EINVAL;
    }
    if (!SSL_CTX_use_PrivateKey_file(sc, key_file, SSL_FILETYPE_PEM)) {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
            tls_util_set_err(err, errlen, "key file %s does not belong to certificate %s", key_file,
                             cert_file);
            ERR_clear_error();
        } else {
            tls_util_set_err(err, errlen, "cannot load key file %s: %s", key_file,
                             tls_util_ssl_reason(why, sizeof why));
        }
        return -EINVAL;
    }
    if (!SSL_CTX_check_private_key(sc)) {
        tls_util_set_err(err, errlen, "key file %s does not belong to certificate %s: %s", key_file,
                         cert_file, tls_util_ssl_reason(why, sizeof why));
        return -EINVAL;
    }
    return 0;
}
