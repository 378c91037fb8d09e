/* `triad daemon --user USER[:GROUP]`: started as root, the daemon gives root
 * up once its listeners are bound and its TLS keys read, and runs as USER
 * (with USER's groups, or GROUP) from then on. Its state directory and
 * control socket are handed to USER first, so the daemon can go on
 * writing its state and remove its socket at exit. Anything it reads
 * later must be readable by USER: the configuration (SIGHUP), runbooks,
 * password and credential files, the TSIG key. Under systemd prefer
 * User= (examples/systemd/triad.service): the daemon never needs root. */
#ifndef TRIAD_PRIVDROP_H
#define TRIAD_PRIVDROP_H

#include <stddef.h>
#include <sys/types.h>

struct privdrop {
    uid_t uid;
    gid_t gid;
    char user[64];
    char group[64]; /* empty: USER's own groups */
};

/* Resolves USER[:GROUP]; needs root. 0, or -1 with a message in err. */
int privdrop_resolve(const char *spec, struct privdrop *pd, char *err, size_t errlen);
/* Hands state_dir (recursively) and the socket to the user, then switches
 * uid, gid and supplementary groups for good (checked: root cannot be
 * regained). 0, or -1 with a message in err (the process is then unfit to
 * go on). */
int privdrop_apply(const struct privdrop *pd, const char *state_dir, const char *socket, char *err,
                   size_t errlen);

#endif
