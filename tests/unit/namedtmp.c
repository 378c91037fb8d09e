/* Test helper: throwaway BIND 9 and a TCP-only relay (see namedtmp.h).
 * Blocking by design: it runs between loop runs. */
#include "namedtmp.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NAMED         "/usr/sbin/named"
#define DIR_PREFIX    "triad-namedtmp."
#define START_WAIT_MS 15000

static void why(struct namedtmp *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void why(struct namedtmp *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->why, sizeof t->why, fmt, ap);
    va_end(ap);
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void close_fds_from(int lowfd)
{
    if (close_range((unsigned)lowfd, ~0U, 0) == 0)
        return;
    for (int fd = lowfd; fd < 1024; fd++)
        close(fd);
}

int namedtmp_available(char *w, size_t len)
{
    if (access(NAMED, X_OK) != 0) {
        snprintf(w, len, "%s missing (package bind9)", NAMED);
        return 0;
    }
    if (geteuid() == 0 && !getpwnam("bind")) {
        snprintf(w, len, "running as root but there is no 'bind' user to run named as");
        return 0;
    }
    return 1;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

static void rm_tree(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Directories of runs that died before their teardown. */
static void sweep_stale(void)
{
    DIR *d = opendir("/tmp");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, DIR_PREFIX, strlen(DIR_PREFIX)) != 0)
            continue;
        char *end = NULL;
        long pid = strtol(e->d_name + strlen(DIR_PREFIX), &end, 10);
        if (pid <= 0 || !end || *end != '.')
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char path[512];
        snprintf(path, sizeof path, "/tmp/%s", e->d_name);
        rm_tree(path);
    }
    closedir(d);
}

/* A port on 127.0.0.1 free for both TCP and UDP right now. */
static int free_port(void)
{
    for (int attempt = 0; attempt < 50; attempt++) {
        int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t al = sizeof a;
        int port = -1;
        if (t >= 0 && u >= 0 && bind(t, (struct sockaddr *)&a, sizeof a) == 0 &&
            getsockname(t, (struct sockaddr *)&a, &al) == 0 &&
            bind(u, (struct sockaddr *)&a, sizeof a) == 0)
            port = ntohs(a.sin_port);
        if (t >= 0)
            close(t);
        if (u >= 0)
            close(u);
        if (port > 0)
            return port;
    }
    return -1;
}

static int write_file(struct namedtmp *t, const char *path, mode_t mode, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        why(t, "open %s: %s", path, strerror(errno));
        return -1;
    }
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    close(fd);
    if (w != (ssize_t)len) {
        why(t, "write %s failed", path);
        return -1;
    }
    if (chmod(path, mode) != 0) {
        why(t, "chmod %s: %s", path, strerror(errno));
        return -1;
    }
    struct passwd *pw = geteuid() == 0 ? getpwnam("bind") : NULL;
    if (pw && chown(path, pw->pw_uid, pw->pw_gid) != 0) {
        why(t, "chown %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* A key statement with a fresh 32-byte secret, as tsig-keygen writes it. */
static int make_key(struct namedtmp *t, const char *name, char *out, size_t len)
{
    unsigned char raw[32];
    unsigned char b64[64];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        why(t, "RAND_bytes failed");
        return -1;
    }
    EVP_EncodeBlock(b64, raw, sizeof raw);
    snprintf(out, len, "key \"%s\" {\n\talgorithm hmac-sha256;\n\tsecret \"%s\";\n};\n", name,
             (const char *)b64);
    return 0;
}

static int log_has(struct namedtmp *t, const char *what)
{
    FILE *f = fopen(t->logfile, "r");
    char line[1024];
    int found = 0;
    if (!f)
        return 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, what) != NULL;
    fclose(f);
    return found;
}

static void log_tail(struct namedtmp *t, char *out, size_t len)
{
    out[0] = '\0';
    FILE *f = fopen(t->logfile, "r");
    if (!f)
        return;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = n > 600 ? buf + n - 600 : buf;
    size_t pl = strlen(p);
    if (pl >= len)
        pl = len - 1;
    memcpy(out, p, pl);
    out[pl] = '\0';
}

/* A UDP query for the zone's SOA: 1 when named answers it with authority,
 * and a TCP connection to the port is accepted. */
static int answers(struct namedtmp *t)
{
    unsigned char q[300] = { 0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 }, r[512];
    size_t n = 12;
    const char *p = t->zone;
    while (*p && n < sizeof q - 70) {
        const char *dot = strchr(p, '.');
        size_t l = dot ? (size_t)(dot - p) : strlen(p);
        if (l == 0 || l > 63)
            return 0;
        q[n++] = (unsigned char)l;
        memcpy(q + n, p, l);
        n += l;
        p += l + (dot ? 1 : 0);
    }
    q[n++] = 0;
    q[n++] = 0;
    q[n++] = 6; /* SOA */
    q[n++] = 0;
    q[n++] = 1; /* IN */
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)t->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int ok = 0;
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (u >= 0 && connect(u, (struct sockaddr *)&a, sizeof a) == 0 &&
        send(u, q, n, 0) == (ssize_t)n) {
        struct pollfd pf = { u, POLLIN, 0 };
        if (poll(&pf, 1, 200) == 1) {
            ssize_t got = recv(u, r, sizeof r, 0);
            /* id, QR and AA set, rcode NOERROR */
            ok = got >= 12 && r[0] == 0x12 && r[1] == 0x34 && (r[2] & 0x84) == 0x84 &&
                 (r[3] & 0x0f) == 0;
        }
    }
    if (u >= 0)
        close(u);
    if (!ok)
        return 0;
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ok = c >= 0 && connect(c, (struct sockaddr *)&a, sizeof a) == 0;
    if (c >= 0)
        close(c);
    return ok;
}

static pid_t spawn_named(struct namedtmp *t)
{
    int out = open(t->logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out < 0) {
        why(t, "open %s: %s", t->logfile, strerror(errno));
        return -1;
    }
    struct passwd *pw = geteuid() == 0 ? getpwnam("bind") : NULL;
    uid_t uid = pw ? pw->pw_uid : 0;
    gid_t gid = pw ? pw->pw_gid : 0;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        why(t, "fork: %s", strerror(errno));
        close(out);
        return -1;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(out, 1);
        dup2(out, 2);
        close_fds_from(3);
        if (pw && (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0))
            _exit(126);
        /* After setuid: a credential change clears the death signal. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(125);
        if (chdir(t->dir) != 0)
            _exit(124);
        execl(NAMED, "named", "-g", "-c", t->conf, (char *)NULL);
        _exit(127);
    }
    close(out);
    return pid;
}

int namedtmp_start(struct namedtmp *t, const char *zone, const char *records)
{
    char key[512], ro_key[512], path[400];
    char *conf = NULL, *zonetext = NULL;
    int result = -1;
    memset(t, 0, sizeof *t);
    if (!namedtmp_available(t->why, sizeof t->why))
        return -1;
    sweep_stale();
    snprintf(t->zone, sizeof t->zone, "%s", zone);
    snprintf(t->dir, sizeof t->dir, "/tmp/" DIR_PREFIX "%ld.XXXXXX", (long)getpid());
    if (!mkdtemp(t->dir)) {
        why(t, "mkdtemp: %s", strerror(errno));
        t->dir[0] = '\0';
        return -1;
    }
    struct passwd *pw = geteuid() == 0 ? getpwnam("bind") : NULL;
    if (pw && chown(t->dir, pw->pw_uid, pw->pw_gid) != 0) {
        why(t, "chown %s: %s", t->dir, strerror(errno));
        return -1;
    }
    snprintf(t->conf, sizeof t->conf, "%s/named.conf", t->dir);
    snprintf(t->logfile, sizeof t->logfile, "%s/named.log", t->dir);
    snprintf(t->keyfile, sizeof t->keyfile, "%s/tsig.key", t->dir);
    snprintf(t->ro_keyfile, sizeof t->ro_keyfile, "%s/readonly.key", t->dir);
    t->port = free_port();
    if (t->port <= 0) {
        why(t, "no free port");
        return -1;
    }
    if (make_key(t, NAMEDTMP_KEY, key, sizeof key) ||
        make_key(t, NAMEDTMP_RO_KEY, ro_key, sizeof ro_key))
        return -1;
    if (write_file(t, t->keyfile, 0600, key) || write_file(t, t->ro_keyfile, 0600, ro_key))
        goto out;
    size_t clen = 4096;
    conf = malloc(clen);
    zonetext = malloc(strlen(records ? records : "") + 1024);
    if (!conf || !zonetext) {
        why(t, "out of memory");
        goto out;
    }
    snprintf(conf, clen,
             "include \"%s\";\n"
             "include \"%s\";\n"
             "options {\n"
             "    directory \"%s\";\n"
             "    pid-file none;\n"
             "    session-keyfile none;\n"
             "    managed-keys-directory \"%s\";\n"
             "    listen-on port %d { 127.0.0.1; };\n"
             "    listen-on-v6 { none; };\n"
             "    recursion no;\n"
             "    allow-query { any; };\n"
             "    allow-transfer { none; };\n"
             "    dnssec-validation no;\n"
             "    notify no;\n"
             "};\n"
             "controls { };\n"
             "zone \"%s\" {\n"
             "    type primary;\n"
             "    file \"zone.db\";\n"
             "    update-policy { grant %s zonesub ANY; };\n"
             "};\n"
             "zone \"" NAMEDTMP_BOUND_ZONE "\" {\n"
             "    type primary;\n"
             "    file \"bound.db\";\n"
             "    allow-query { " NAMEDTMP_BOUND_SOURCE "; };\n"
             "    update-policy { grant %s zonesub ANY; };\n"
             "};\n",
             t->keyfile, t->ro_keyfile, t->dir, t->dir, t->port, zone, NAMEDTMP_KEY, NAMEDTMP_KEY);
    if (write_file(t, t->conf, 0644, conf))
        goto out;
    snprintf(zonetext, strlen(records ? records : "") + 1024,
             "$TTL 5\n"
             "@ IN SOA ns.%s. hostmaster.%s. 1 60 30 600 5\n"
             "@ IN NS ns\n"
             "ns IN A 127.0.0.1\n"
             "%s\n",
             zone, zone, records ? records : "");
    snprintf(path, sizeof path, "%s/zone.db", t->dir);
    if (write_file(t, path, 0644, zonetext))
        goto out;
    snprintf(path, sizeof path, "%s/bound.db", t->dir);
    if (write_file(t, path, 0644,
                   "$TTL 5\n"
                   "@ IN SOA ns." NAMEDTMP_BOUND_ZONE ". hostmaster." NAMEDTMP_BOUND_ZONE
                   ". 1 60 30 600 5\n"
                   "@ IN NS ns\n"
                   "ns IN A 127.0.0.1\n"
                   "matrix 5 IN A 127.0.1.10\n"
                   "_triad.matrix 5 IN TXT \"epoch=0\"\n"))
        goto out;
    t->pid = spawn_named(t);
    if (t->pid <= 0) {
        t->pid = 0;
        goto out;
    }
    long end = now_ms() + START_WAIT_MS;
    for (;;) {
        /* named -g says "running" once every zone is loaded; its sockets
         * may take a moment longer. */
        if (log_has(t, " running\n") && answers(t)) {
            result = 0;
            break;
        }
        int st;
        if (waitpid(t->pid, &st, WNOHANG) == t->pid) {
            char tail[700];
            t->pid = 0;
            log_tail(t, tail, sizeof tail);
            why(t, "named exited during startup (status 0x%x): %s", st, tail);
            break;
        }
        if (now_ms() > end) {
            why(t, "named did not load its zones within %d ms", START_WAIT_MS);
            break;
        }
        sleep_ms(10);
    }
out:
    free(conf);
    free(zonetext);
    return result;
}

void namedtmp_destroy(struct namedtmp *t)
{
    if (t->pid > 0) {
        kill(t->pid, SIGTERM);
        long end = now_ms() + 5000;
        int st;
        while (waitpid(t->pid, &st, WNOHANG) == 0 && now_ms() < end)
            sleep_ms(10);
        if (kill(t->pid, 0) == 0) {
            kill(t->pid, SIGKILL);
            waitpid(t->pid, &st, 0);
        }
        t->pid = 0;
    }
    if (t->dir[0]) {
        rm_tree(t->dir);
        t->dir[0] = '\0';
    }
}

/* ---- TCP relay ---- */

static void relay_one(int c, int to_port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)to_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        if (s >= 0)
            close(s);
        return;
    }
    struct pollfd p[2] = { { c, POLLIN, 0 }, { s, POLLIN, 0 } };
    char buf[8192];
    for (;;) {
        if (poll(p, 2, 10000) <= 0)
            break;
        int done = 0;
        for (int i = 0; i < 2 && !done; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = read(p[i].fd, buf, sizeof buf);
            if (n <= 0 || write(p[1 - i].fd, buf, (size_t)n) != n)
                done = 1;
        }
        if (done)
            break;
    }
    close(s);
}

pid_t namedtmp_tcp_relay(int to_port, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int p = free_port();
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)p),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int one = 1;
    if (fd < 0 || p <= 0)
        goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0)
        goto fail;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        if (fd != 3) {
            dup2(fd, 3);
            fd = 3;
        }
        close_fds_from(4);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(1);
        for (;;) {
            int c = accept(fd, NULL, NULL);
            if (c < 0)
                continue;
            relay_one(c, to_port);
            close(c);
        }
    }
    close(fd);
    if (pid < 0)
        return -1;
    *port = p;
    return pid;
fail:
    if (fd >= 0)
        close(fd);
    return -1;
}

void namedtmp_kill(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}
