/* Test helper: makes CA and leaf certificates in a temporary directory
 * (see testcerts.h). */
#include "testcerts.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static long serial_next = 1;

const char *testcerts_path(char *out, size_t len, const char *dir, const char *file)
{
    snprintf(out, len, "%s/%s", dir, file);
    return out;
}

int testcerts_dir(char *dir, size_t len)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, len, "%s/triad-certs-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    return mkdtemp(dir) ? 0 : -1;
}

void testcerts_rmdir(const char *dir)
{
    char path[512];
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        unlink(testcerts_path(path, sizeof path, dir, e->d_name));
    }
    closedir(d);
    rmdir(dir);
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ex == NULL)
        return -1;
    int ok = X509_add_ext(cert, ex, -1);
    X509_EXTENSION_free(ex);
    return ok ? 0 : -1;
}

static int write_pem(const char *dir, const char *file, X509 *cert, EVP_PKEY *key)
{
    char path[512];
    int ok;
    testcerts_path(path, sizeof path, dir, file);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, key ? 0600 : 0644);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        return -1;
    }
    if (key)
        ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    else
        ok = PEM_write_X509(f, cert);
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* Issues a certificate for key, signed by issuer_key; issuer NULL makes it
 * self-signed (a CA). */
static int issue(const char *dir, const char *name, const char *cn, const char *san, X509 *issuer,
                 EVP_PKEY *issuer_key)
{
    char file[256], dns[300];
    int result = -1;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    if (key == NULL || x == NULL)
        goto out;
    if (!X509_set_version(x, 2) || !ASN1_INTEGER_set(X509_get_serialNumber(x), serial_next++) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), 86400) || !X509_set_pubkey(x, key))
        goto out;
    X509_NAME *subj = X509_get_subject_name(x);
    if (!X509_NAME_add_entry_by_txt(subj, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0))
        goto out;
    if (!X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : subj))
        goto out;
    if (issuer == NULL) {
        if (add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") < 0 ||
            add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
            add_ext(x, x, NID_subject_key_identifier, "hash") < 0)
            goto out;
    } else {
        if (add_ext(x, issuer, NID_basic_constraints, "CA:FALSE") < 0 ||
            add_ext(x, issuer, NID_key_usage, "critical,digitalSignature") < 0 ||
            add_ext(x, issuer, NID_ext_key_usage, "serverAuth,clientAuth") < 0)
            goto out;
        snprintf(dns, sizeof dns, "DNS:%s", san ? san : "");
        if (san && add_ext(x, issuer, NID_subject_alt_name, dns) < 0)
            goto out;
    }
    if (!X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()))
        goto out;
    snprintf(file, sizeof file, issuer ? "%s.pem" : "%s-ca.pem", name);
    if (write_pem(dir, file, x, NULL) < 0)
        goto out;
    snprintf(file, sizeof file, issuer ? "%s.key" : "%s-ca.key", name);
    if (write_pem(dir, file, NULL, key) < 0)
        goto out;
    result = 0;
out:
    X509_free(x);
    EVP_PKEY_free(key);
    return result;
}

int testcerts_ca(const char *dir, const char *ca)
{
    return issue(dir, ca, ca, NULL, NULL, NULL);
}

int testcerts_leaf(const char *dir, const char *ca, const char *name, const char *cn,
                   const char *san)
{
    char path[512];
    int result = -1;
    X509 *cacert = NULL;
    EVP_PKEY *cakey = NULL;
    FILE *f;

    snprintf(path, sizeof path, "%s/%s-ca.pem", dir, ca);
    if ((f = fopen(path, "r")) == NULL)
        goto out;
    cacert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    snprintf(path, sizeof path, "%s/%s-ca.key", dir, ca);
    if ((f = fopen(path, "r")) == NULL)
        goto out;
    cakey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (cacert == NULL || cakey == NULL)
        goto out;
    result = issue(dir, name, cn, san, cacert, cakey);
out:
    X509_free(cacert);
    EVP_PKEY_free(cakey);
    return result;
}
