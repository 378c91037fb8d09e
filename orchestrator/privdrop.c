/* Giving up root after binding: see privdrop.h. */
#include "orchestrator/privdrop.h"

#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int privdrop_resolve(const char *spec, struct privdrop *pd, char *err, size_t errlen)
{
    memset(pd, 0, sizeof *pd);
    if (geteuid() != 0) {
        snprintf(err, errlen, "--user needs the daemon to be started as root");
        return -1;
    }
    const char *colon = strchr(spec, ':');
    size_t ulen = colon ? (size_t)(colon - spec) : strlen(spec);
    if (ulen == 0 || ulen >= sizeof pd->user ||
        (colon && (!colon[1] || strlen(colon + 1) >= sizeof pd->group))) {
        snprintf(err, errlen, "--user: expected USER or USER:GROUP, not '%s'", spec);
        return -1;
    }
    memcpy(pd->user, spec, ulen);
    pd->user[ulen] = '\0';
    if (colon)
        snprintf(pd->group, sizeof pd->group, "%s", colon + 1);
    errno = 0;
    const struct passwd *pw = getpwnam(pd->user);
    if (!pw) {
        snprintf(err, errlen, "--user: no user '%s'%s%s", pd->user, errno ? ": " : "",
                 errno ? strerror(errno) : "");
        return -1;
    }
    if (pw->pw_uid == 0) {
        snprintf(err, errlen, "--user: '%s' is root; nothing would be given up", pd->user);
        return -1;
    }
    pd->uid = pw->pw_uid;
    pd->gid = pw->pw_gid;
    if (pd->group[0]) {
        errno = 0;
        const struct group *gr = getgrnam(pd->group);
        if (!gr) {
            snprintf(err, errlen, "--user: no group '%s'", pd->group);
            return -1;
        }
        pd->gid = gr->gr_gid;
    }
    return 0;
}

/* nftw has no argument for its callback. */
static uid_t chown_uid;
static gid_t chown_gid;
static int chown_err;

static int chown_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (lchown(path, chown_uid, chown_gid) < 0 && !chown_err)
        chown_err = errno;
    return 0;
}

int privdrop_apply(const struct privdrop *pd, const char *state_dir, const char *socket, char *err,
                   size_t errlen)
{
    chown_uid = pd->uid;
    chown_gid = pd->gid;
    chown_err = 0;
    if (nftw(state_dir, chown_one, 16, FTW_PHYS) < 0 || chown_err) {
        snprintf(err, errlen, "cannot hand %s to %s: %s", state_dir, pd->user,
                 strerror(chown_err ? chown_err : errno));
        return -1;
    }
    if (socket && socket[0] && lchown(socket, pd->uid, pd->gid) < 0) {
        snprintf(err, errlen, "cannot hand %s to %s: %s", socket, pd->user, strerror(errno));
        return -1;
    }
    int r = pd->group[0] ? setgroups(1, &pd->gid) : initgroups(pd->user, pd->gid);
    if (r < 0 || setgid(pd->gid) < 0 || setuid(pd->uid) < 0) {
        snprintf(err, errlen, "cannot become %s: %s", pd->user, strerror(errno));
        return -1;
    }
    if (setuid(0) == 0 || geteuid() == 0 || getegid() == 0) {
        snprintf(err, errlen, "root could be regained after switching to %s", pd->user);
        return -1;
    }
    return 0;
}
