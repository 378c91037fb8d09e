/* TSIG keys from BIND key files, as `tsig-keygen -a hmac-sha256 NAME` writes
 * them:
 *
 *   key "triad-key" {
 *           algorithm hmac-sha256;
 *           secret "base64...";
 *   };
 *
 * The file is read with a size cap and refused when anyone may read it
 * (mode o+r) or when it is not a regular file. Only hmac-sha256 is accepted:
 * the other algorithms BIND knows (hmac-md5, hmac-sha1, ...) are refused with
 * a message that says how to make a proper key. The secret is never logged
 * and never copied into a detail message; tsig_key_wipe() clears it.
 *
 * Reading blocks on the local disk for one small read: callers read the key
 * once per operation (so a rotated key is picked up), never per packet.
 */
#ifndef TRIAD_TSIG_KEY_H
#define TRIAD_TSIG_KEY_H

#include <stddef.h>

#define TSIG_KEY_FILE_MAX   16384 /* bytes: a key file is ~100 */
#define TSIG_KEY_NAME_MAX   253   /* a domain name in presentation form */
#define TSIG_KEY_SECRET_MAX 512   /* base64 characters (a 384-byte key) */
#define TSIG_KEY_MIN_BYTES  16    /* shorter secrets are refused */

struct tsig_key {
    char name[TSIG_KEY_NAME_MAX + 1]; /* "triad-key", as in the file */
    char algorithm[32];               /* always "hmac-sha256" */
    /* base64 with whitespace removed: what ldns' TSIG functions take.
     * Never log it. */
    char secret[TSIG_KEY_SECRET_MAX + 1];
    size_t secret_bytes; /* decoded length */
};

/* Reads the key called `name` from a BIND key file (name NULL: the file
 * must hold exactly one key). Returns 0, or with a reason in detail:
 *   -ENOENT    no such file          -EACCES  readable by others, or unreadable
 *   -EMSGSIZE  over TSIG_KEY_FILE_MAX -EINVAL  not a key file, key not found,
 *                                             bad secret
 *   -ENOTSUP   the key's algorithm is not hmac-sha256
 *   (or another negative errno from open/read) */
int tsig_key_load(const char *path, const char *name, struct tsig_key *out, char *detail,
                  size_t detail_len);

/* The same on text already in memory; `origin` names it in messages. */
int tsig_key_parse(const char *text, size_t len, const char *origin, const char *name,
                   struct tsig_key *out, char *detail, size_t detail_len);

/* Clears the secret (and everything else). */
void tsig_key_wipe(struct tsig_key *k);

#endif
