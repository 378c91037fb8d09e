/* BIND key files: a capped read with a permission check, a small tokenizer
 * for the named.conf syntax they use (words, quoted strings, { } ;, and the
 * three comment styles), and the key's validation. Every buffer that held
 * the secret is wiped before it is released. */
#include "lib/tsig_key.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOKEN_MAX 1024

enum tok { T_EOF, T_WORD, T_STRING, T_LBRACE, T_RBRACE, T_SEMI, T_ERROR };

struct lexer {
    const char *p, *end;
    int line;
    enum tok kind;
    int tok_line;
    char text[TOKEN_MAX + 1];
    const char *error; /* why T_ERROR */
};

static void set_detail(char *detail, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_detail(char *detail, size_t len, const char *fmt, ...)
{
    if (!detail || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, len, fmt, ap);
    va_end(ap);
}

/* Copies a string known to fit (checked by the caller); truncates if not. */
static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void skip_space_and_comments(struct lexer *lx)
{
    while (lx->p < lx->end) {
        char c = *lx->p;
        if (c == '\n') {
            lx->line++;
            lx->p++;
        } else if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
            lx->p++;
        } else if (c == '#' || (c == '/' && lx->p + 1 < lx->end && lx->p[1] == '/')) {
            while (lx->p < lx->end && *lx->p != '\n')
                lx->p++;
        } else if (c == '/' && lx->p + 1 < lx->end && lx->p[1] == '*') {
            lx->p += 2;
            while (lx->p + 1 < lx->end && !(lx->p[0] == '*' && lx->p[1] == '/')) {
                if (*lx->p == '\n')
                    lx->line++;
                lx->p++;
            }
            lx->p = lx->p + 1 < lx->end ? lx->p + 2 : lx->end;
        } else {
            return;
        }
    }
}

static bool is_word_char(char c)
{
    return c != '{' && c != '}' && c != ';' && c != '"' && c != ' ' && c != '\t' && c != '\n' &&
           c != '\r' && c != '\f' && c != '\v' && c != '#' && (unsigned char)c >= 0x20 &&
           (unsigned char)c != 0x7f;
}

static enum tok next(struct lexer *lx)
{
    size_t n = 0;
    skip_space_and_comments(lx);
    lx->tok_line = lx->line;
    lx->text[0] = '\0';
    if (lx->p >= lx->end)
        return lx->kind = T_EOF;
    char c = *lx->p;
    if (c == '{' || c == '}' || c == ';') {
        lx->p++;
        lx->text[0] = c;
        lx->text[1] = '\0';
        return lx->kind = c == '{' ? T_LBRACE : c == '}' ? T_RBRACE : T_SEMI;
    }
    if (c == '"') {
        lx->p++;
        while (lx->p < lx->end && *lx->p != '"') {
            char ch = *lx->p++;
            if (ch == '\\' && lx->p < lx->end)
                ch = *lx->p++;
            if (ch == '\n')
                lx->line++;
            if (ch == '\0') {
                lx->error = "a NUL byte inside a quoted string";
                return lx->kind = T_ERROR;
            }
            if (n >= TOKEN_MAX) {
                lx->error = "a quoted string longer than 1024 characters";
                return lx->kind = T_ERROR;
            }
            lx->text[n++] = ch;
        }
        if (lx->p >= lx->end) {
            lx->error = "a quoted string that never ends";
            return lx->kind = T_ERROR;
        }
        lx->p++;
        lx->text[n] = '\0';
        return lx->kind = T_STRING;
    }
    if (!is_word_char(c)) {
        lx->error = "an unexpected control or binary byte";
        return lx->kind = T_ERROR;
    }
    while (lx->p < lx->end && is_word_char(*lx->p)) {
        /* A '/' starts a comment only as "//" or "/ *". */
        if (*lx->p == '/' && lx->p + 1 < lx->end && (lx->p[1] == '/' || lx->p[1] == '*'))
            break;
        if (n >= TOKEN_MAX) {
            lx->error = "a word longer than 1024 characters";
            return lx->kind = T_ERROR;
        }
        lx->text[n++] = *lx->p++;
    }
    lx->text[n] = '\0';
    return lx->kind = T_WORD;
}

/* What was found, for messages: never the text of a quoted string, which may
 * be the secret. */
static const char *found(const struct lexer *lx)
{
    switch (lx->kind) {
    case T_EOF:
        return "the end of the file";
    case T_STRING:
        return "a quoted string";
    case T_LBRACE:
        return "'{'";
    case T_RBRACE:
        return "'}'";
    case T_SEMI:
        return "';'";
    case T_ERROR:
        return lx->error;
    case T_WORD:
        break;
    }
    return "a word";
}

static bool same_name(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la && a[la - 1] == '.')
        la--;
    if (lb && b[lb - 1] == '.')
        lb--;
    return la == lb && strncasecmp(a, b, la) == 0;
}

static bool b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/' || c == '=';
}

/* Copies the secret without whitespace and checks it decodes. */
static int take_secret(const char *text, struct tsig_key *k, const char *origin, char *detail,
                       size_t dlen)
{
    size_t n = 0;
    int result = 0;
    unsigned char raw[TSIG_KEY_SECRET_MAX];
    for (const char *p = text; *p; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            continue;
        if (!b64_char(*p) || n >= TSIG_KEY_SECRET_MAX) {
            set_detail(detail, dlen, "%s: the secret of key '%s' is not valid base64", origin,
                       k->name);
            result = -EINVAL;
            goto out;
        }
        k->secret[n++] = *p;
    }
    k->secret[n] = '\0';
    /* EVP_DecodeBlock counts the padding as data: take it off. */
    int got = n && n % 4 == 0 ? EVP_DecodeBlock(raw, (const unsigned char *)k->secret, (int)n) : -1;
    if (got >= 0) {
        size_t pad = k->secret[n - 1] == '=' ? (k->secret[n - 2] == '=' ? 2 : 1) : 0;
        for (size_t i = 0; i + pad < n; i++) {
            if (k->secret[i] == '=')
                got = -1; /* padding only at the end */
        }
        if (got >= 0)
            got -= (int)pad;
    }
    if (got < 0) {
        set_detail(detail, dlen, "%s: the secret of key '%s' is not valid base64", origin, k->name);
        result = -EINVAL;
        goto out;
    }
    if (got < TSIG_KEY_MIN_BYTES) {
        set_detail(detail, dlen,
                   "%s: the secret of key '%s' is only %d bytes; make a proper one with "
                   "tsig-keygen -a hmac-sha256 %s",
                   origin, k->name, got, k->name);
        result = -EINVAL;
        goto out;
    }
    k->secret_bytes = (size_t)got;
out:
    explicit_bzero(raw, sizeof raw);
    if (result < 0)
        explicit_bzero(k->secret, sizeof k->secret);
    return result;
}

struct parsed {
    char name[TSIG_KEY_NAME_MAX + 1];
    char algorithm[64];
    bool has_algorithm, has_secret;
    int line;
};

/* One `key NAME { ... };` statement, the `key` word already read. The
 * secret goes straight to `secret` (when keep is true), else is dropped. */
static int parse_key(struct lexer *lx, struct parsed *pk, char *secret, size_t secret_len,
                     bool (*keep)(const char *name, void *arg), void *keep_arg, bool *kept,
                     const char *origin, char *detail, size_t dlen)
{
    pk->line = lx->tok_line;
    next(lx);
    if (lx->kind != T_STRING && lx->kind != T_WORD) {
        set_detail(detail, dlen, "%s:%d: expected the key's name after 'key', found %s", origin,
                   lx->tok_line, found(lx));
        return -EINVAL;
    }
    if (strlen(lx->text) == 0 || strlen(lx->text) > TSIG_KEY_NAME_MAX) {
        set_detail(detail, dlen, "%s:%d: the key's name must be 1 to %d characters", origin,
                   lx->tok_line, TSIG_KEY_NAME_MAX);
        return -EINVAL;
    }
    copy_str(pk->name, sizeof pk->name, lx->text);
    *kept = keep(pk->name, keep_arg);
    if (next(lx) != T_LBRACE) {
        set_detail(detail, dlen, "%s:%d: expected '{' after key \"%s\", found %s", origin,
                   lx->tok_line, pk->name, found(lx));
        return -EINVAL;
    }
    for (;;) {
        next(lx);
        if (lx->kind == T_RBRACE)
            break;
        if (lx->kind != T_WORD) {
            set_detail(detail, dlen,
                       "%s:%d: expected 'algorithm', 'secret' or '}' in key \"%s\", "
                       "found %s",
                       origin, lx->tok_line, pk->name, found(lx));
            return -EINVAL;
        }
        if (strcasecmp(lx->text, "algorithm") == 0) {
            next(lx);
            if ((lx->kind != T_WORD && lx->kind != T_STRING) ||
                strlen(lx->text) >= sizeof pk->algorithm) {
                set_detail(detail, dlen,
                           "%s:%d: expected an algorithm name in key \"%s\", found %s", origin,
                           lx->tok_line, pk->name, found(lx));
                return -EINVAL;
            }
            copy_str(pk->algorithm, sizeof pk->algorithm, lx->text);
            pk->has_algorithm = true;
        } else if (strcasecmp(lx->text, "secret") == 0) {
            next(lx);
            if (lx->kind != T_STRING) {
                set_detail(detail, dlen,
                           "%s:%d: expected the secret as a quoted string in key "
                           "\"%s\", found %s",
                           origin, lx->tok_line, pk->name, found(lx));
                return -EINVAL;
            }
            if (*kept)
                copy_str(secret, secret_len, lx->text);
            explicit_bzero(lx->text, sizeof lx->text);
            pk->has_secret = true;
        } else {
            set_detail(detail, dlen,
                       "%s:%d: unknown clause '%.64s' in key \"%s\" (a key has "
                       "'algorithm' and 'secret')",
                       origin, lx->tok_line, lx->text, pk->name);
            return -EINVAL;
        }
        if (next(lx) != T_SEMI) {
            set_detail(detail, dlen, "%s:%d: expected ';' in key \"%s\", found %s", origin,
                       lx->tok_line, pk->name, found(lx));
            return -EINVAL;
        }
    }
    if (next(lx) != T_SEMI) {
        set_detail(detail, dlen, "%s:%d: expected ';' after the '}' of key \"%s\", found %s",
                   origin, lx->tok_line, pk->name, found(lx));
        return -EINVAL;
    }
    if (!pk->has_algorithm || !pk->has_secret) {
        set_detail(detail, dlen, "%s:%d: key \"%s\" has no %s", origin, pk->line, pk->name,
                   pk->has_algorithm ? "secret" : "algorithm");
        return -EINVAL;
    }
    return 0;
}

struct want {
    const char *name;
    int n_keys;
    bool taken;
};

static bool keep_key(const char *name, void *arg)
{
    struct want *w = arg;
    w->n_keys++;
    if (w->taken)
        return false;
    return w->name ? same_name(name, w->name) : true;
}

int tsig_key_parse(const char *text, size_t len, const char *origin, const char *name,
                   struct tsig_key *out, char *detail, size_t dlen)
{
    int result = 0;
    struct lexer *lx = calloc(1, sizeof *lx);
    char *secret = calloc(1, TOKEN_MAX + 1);
    struct parsed chosen = { 0 };
    struct want w = { name, 0, false };
    memset(out, 0, sizeof *out);
    if (!lx || !secret) {
        result = -ENOMEM;
        goto out;
    }
    lx->p = text;
    lx->end = text + len;
    lx->line = 1;
    while (next(lx) != T_EOF) {
        if (lx->kind != T_WORD || strcasecmp(lx->text, "key") != 0) {
            set_detail(detail, dlen,
                       "%s:%d: expected a key statement (key \"NAME\" { algorithm "
                       "hmac-sha256; secret \"...\"; };), found %s",
                       origin, lx->tok_line, found(lx));
            result = -EINVAL;
            goto out;
        }
        struct parsed pk = { 0 };
        bool kept = false;
        result =
            parse_key(lx, &pk, secret, TOKEN_MAX + 1, keep_key, &w, &kept, origin, detail, dlen);
        if (result < 0)
            goto out;
        if (kept) {
            chosen = pk;
            w.taken = true;
        }
    }
    if (w.n_keys == 0) {
        set_detail(detail, dlen, "%s: no key statement in the file", origin);
        result = -EINVAL;
        goto out;
    }
    if (!w.taken) {
        set_detail(detail, dlen, "%s: no key named \"%s\" in the file", origin, name);
        result = -EINVAL;
        goto out;
    }
    if (!name && w.n_keys > 1) {
        set_detail(detail, dlen, "%s: the file holds %d keys; say which one to use", origin,
                   w.n_keys);
        result = -EINVAL;
        goto out;
    }
    copy_str(out->name, sizeof out->name, chosen.name);
    if (strcasecmp(chosen.algorithm, "hmac-sha256") != 0 &&
        strcasecmp(chosen.algorithm, "hmac-sha256.") != 0) {
        set_detail(detail, dlen,
                   "%s: key \"%s\" uses %s; triad accepts only hmac-sha256 keys (make one with "
                   "tsig-keygen -a hmac-sha256 %s, and give it to the DNS server too)",
                   origin, chosen.name, chosen.algorithm, chosen.name);
        result = -ENOTSUP;
        goto out;
    }
    snprintf(out->algorithm, sizeof out->algorithm, "hmac-sha256");
    result = take_secret(secret, out, origin, detail, dlen);
out:
    if (lx)
        explicit_bzero(lx, sizeof *lx);
    if (secret)
        explicit_bzero(secret, TOKEN_MAX + 1);
    free(lx);
    free(secret);
    if (result < 0)
        tsig_key_wipe(out);
    return result;
}

int tsig_key_load(const char *path, const char *name, struct tsig_key *out, char *detail,
                  size_t dlen)
{
    int result = 0;
    char *text = NULL;
    size_t len = 0;
    struct stat st;
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        result = -errno;
        if (result == -ENOENT)
            set_detail(detail, dlen, "TSIG key file %s does not exist", path);
        else
            set_detail(detail, dlen, "cannot open TSIG key file %s: %s", path, strerror(errno));
        goto out;
    }
    /* fstat on the open file: the checked file is the file read. */
    if (fstat(fd, &st) < 0) {
        result = -errno;
        set_detail(detail, dlen, "cannot stat TSIG key file %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        result = -EINVAL;
        set_detail(detail, dlen, "TSIG key file %s is not a regular file", path);
        goto out;
    }
    if (st.st_mode & (S_IROTH | S_IWOTH)) {
        result = -EACCES;
        set_detail(detail, dlen,
                   "TSIG key file %s is %s by every user (mode %04o): refusing to use a key "
                   "others can %s; chmod o-rw %s",
                   path, st.st_mode & S_IROTH ? "readable" : "writable",
                   (unsigned)(st.st_mode & 07777), st.st_mode & S_IROTH ? "read" : "replace", path);
        goto out;
    }
    if (st.st_size > TSIG_KEY_FILE_MAX) {
        result = -EMSGSIZE;
        set_detail(detail, dlen, "TSIG key file %s is %lld bytes, more than a key file's %d", path,
                   (long long)st.st_size, TSIG_KEY_FILE_MAX);
        goto out;
    }
    text = malloc(TSIG_KEY_FILE_MAX + 1);
    if (!text) {
        result = -ENOMEM;
        goto out;
    }
    /* Read to the cap + 1: the file may have grown since fstat. */
    for (;;) {
        ssize_t r = read(fd, text + len, TSIG_KEY_FILE_MAX + 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            result = -errno;
            set_detail(detail, dlen, "cannot read TSIG key file %s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len > TSIG_KEY_FILE_MAX) {
            result = -EMSGSIZE;
            set_detail(detail, dlen, "TSIG key file %s is more than a key file's %d bytes", path,
                       TSIG_KEY_FILE_MAX);
            goto out;
        }
    }
    result = tsig_key_parse(text, len, path, name, out, detail, dlen);
out:
    if (fd >= 0)
        close(fd);
    if (text) {
        explicit_bzero(text, TSIG_KEY_FILE_MAX + 1);
        free(text);
    }
    return result;
}

void tsig_key_wipe(struct tsig_key *k)
{
    if (k)
        explicit_bzero(k, sizeof *k);
}
