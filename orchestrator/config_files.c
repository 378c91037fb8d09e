/* Checks of files referenced by the configuration. */
#include "orchestrator/config_files.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/yaml_read.h"

char *config_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

char *config_resolve_path(const char *dir, const char *path)
{
    if (path[0] == '/' || !dir)
        return strdup(path);
    size_t n = strlen(dir) + strlen(path) + 2;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s/%s", dir, path);
    return out;
}

/* A certificate chain's first certificate is ours and must be valid now;
 * a CA bundle (the system store has a few expired roots) needs at least one
 * certificate valid now, since OpenSSL ignores the others. */
static void check_cert(struct diag *d, const struct ynode *at, const char *path, bool bundle)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        yread_error(d, at, "cannot read certificate file %s: %s", path, strerror(errno));
        return;
    }
    int count = 0, valid = 0;
    time_t now = time(NULL);
    X509 *x;
    while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
        count++;
        bool expired = X509_cmp_time(X509_get0_notAfter(x), &now) < 0;
        bool early = !expired && X509_cmp_time(X509_get0_notBefore(x), &now) > 0;
        if (!expired && !early)
            valid++;
        else if (!bundle)
            yread_error(d, at, "certificate %d in %s %s", count, path,
                        expired ? "has expired" : "is not valid yet");
        X509_free(x);
        if (count >= 1000)
            break;
    }
    ERR_clear_error();
    fclose(f);
    if (count == 0)
        yread_error(d, at, "%s holds no PEM certificate", path);
    else if (bundle && valid == 0)
        yread_error(d, at, "every certificate in %s has expired or is not valid yet", path);
}

void config_check_file(struct diag *d, const struct ynode *at, const char *path,
                       enum cfg_file_kind kind)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        yread_error(d, at, "%s: %s", path, strerror(errno));
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        yread_error(d, at, "%s is not a regular file", path);
        return;
    }
    if (kind == CFG_FILE_SECRET && (st.st_mode & (S_IROTH | S_IWOTH))) {
        yread_error(d, at,
                    "%s holds a secret but is accessible by everyone (mode %04o); "
                    "run: chmod o-rwx %s",
                    path, (unsigned)(st.st_mode & 07777), path);
        return;
    }
    if (access(path, R_OK) < 0) {
        yread_error(d, at, "%s is not readable by this user: %s", path, strerror(errno));
        return;
    }
    if (kind == CFG_FILE_CERT || kind == CFG_FILE_CA)
        check_cert(d, at, path, kind == CFG_FILE_CA);
}

void config_check_key_pair(struct diag *d, const struct ynode *at, const char *cert_file,
                           const char *key_file)
{
    FILE *cf = fopen(cert_file, "r");
    FILE *kf = fopen(key_file, "r");
    X509 *x = cf ? PEM_read_X509(cf, NULL, NULL, NULL) : NULL;
    EVP_PKEY *k = kf ? PEM_read_PrivateKey(kf, NULL, NULL, NULL) : NULL;
    if (cf && kf && !k)
        yread_error(d, at, "%s holds no PEM private key (or it is encrypted)", key_file);
    if (x && k && X509_check_private_key(x, k) != 1)
        yread_error(d, at, "the key in %s does not belong to the certificate in %s", key_file,
                    cert_file);
    X509_free(x);
    EVP_PKEY_free(k);
    ERR_clear_error();
    if (cf)
        fclose(cf);
    if (kf)
        fclose(kf);
}

char *config_read_secret(const char *path, size_t max, const char **why)
{
    char *result = NULL;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0) {
        *why = "cannot open the secret file";
        goto out;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        *why = "the secret file is not a regular file";
        goto out;
    }
    if (st.st_mode & (S_IROTH | S_IWOTH)) {
        *why = "the secret file is accessible by everyone";
        goto out;
    }
    buf = calloc(1, max + 2);
    if (!buf) {
        *why = "out of memory";
        goto out;
    }
    size_t len = 0;
    while (len < max + 1) {
        ssize_t r = read(fd, buf + len, max + 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    char *nl = memchr(buf, '\n', len);
    if (nl)
        len = (size_t)(nl - buf);
    if (len > max) {
        *why = "the secret is too long";
        goto out;
    }
    while (len && buf[len - 1] == '\r')
        len--;
    buf[len] = '\0';
    if (len == 0) {
        *why = "the secret file is empty";
        goto out;
    }
    result = strndup(buf, len);
out:
    if (buf) {
        explicit_bzero(buf, max + 2);
        free(buf);
    }
    if (fd >= 0)
        close(fd);
    return result;
}
