/* Test helper: throwaway PostgreSQL 15 server and a silent TCP listener
 * (see pgtmp.h). Blocking by design: it runs between loop runs. */
#include "pgtmp.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
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

#define PG_BINDIR     "/usr/lib/postgresql/15/bin"
#define DIR_PREFIX    "triad-pgtmp."
#define START_WAIT_MS 15000
#define STOP_WAIT_MS  10000

static void why(struct pgtmp *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void why(struct pgtmp *t, const char *fmt, ...)
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

/* Between fork and exec: only async-signal-safe calls. Descriptors of the
 * test (libpq sockets, the loop) must not leak into children, or a socket
 * we close would stay open there. */
static void close_fds_from(int lowfd)
{
    if (close_range((unsigned)lowfd, ~0U, 0) == 0)
        return;
    for (int fd = lowfd; fd < 1024; fd++)
        close(fd);
}

int pgtmp_available(char *w, size_t len)
{
    if (geteuid() != 0) {
        snprintf(w, len, "not running as root: cannot run initdb/postgres as the postgres user");
        return 0;
    }
    if (access(PG_BINDIR "/postgres", X_OK) != 0 || access(PG_BINDIR "/initdb", X_OK) != 0) {
        snprintf(w, len, "PostgreSQL 15 binaries missing in %s (package postgresql-15)", PG_BINDIR);
        return 0;
    }
    return 1;
}

/* Run argv as postgres; output to the log file. With pdeath the child dies
 * with us. Returns the pid or -1. */
static pid_t spawn_as_postgres(struct pgtmp *t, char *const argv[], int pdeath)
{
    int out = open(t->logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out < 0) {
        why(t, "open %s: %s", t->logfile, strerror(errno));
        return -1;
    }
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
        if (setgroups(0, NULL) != 0 || setgid(t->gid) != 0 || setuid(t->uid) != 0)
            _exit(126);
        /* After setuid: a credential change clears the death signal. */
        if (pdeath && (prctl(PR_SET_PDEATHSIG, SIGQUIT) != 0 || getppid() != parent))
            _exit(125);
        if (chdir(t->dir) != 0)
            _exit(124);
        execv(argv[0], argv);
        _exit(127);
    }
    close(out);
    return pid;
}

static int wait_exit(pid_t pid, long timeout_ms, int *status)
{
    long end = now_ms() + timeout_ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
        if (now_ms() > end)
            return -1;
        sleep_ms(10);
    }
}

static void log_tail(struct pgtmp *t, char *out, size_t len)
{
    out[0] = '\0';
    FILE *f = fopen(t->logfile, "r");
    if (!f)
        return;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = n > 400 ? buf + n - 400 : buf;
    size_t pl = strlen(p);
    if (pl >= len)
        pl = len - 1;
    memcpy(out, p, pl);
    out[pl] = '\0';
}

static int run_as_postgres(struct pgtmp *t, char *const argv[])
{
    pid_t pid = spawn_as_postgres(t, argv, 1);
    int st = 0;
    if (pid < 0)
        return -1;
    if (wait_exit(pid, 60000, &st) != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        why(t, "%s did not finish", argv[0]);
        return -1;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char tail[512];
        log_tail(t, tail, sizeof tail);
        why(t, "%s failed (status 0x%x): %s", argv[0], st, tail);
        return -1;
    }
    return 0;
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

/* Directories of runs that died before their teardown (their server died
 * with them: parent-death signal). */
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

int pgtmp_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    int port = -1;
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int append_file(struct pgtmp *t, const char *path, const char *mode, const char *text)
{
    FILE *f = fopen(path, mode);
    if (!f) {
        why(t, "open %s: %s", path, strerror(errno));
        return -1;
    }
    fputs(text, f);
    if (fclose(f) != 0) {
        why(t, "write %s: %s", path, strerror(errno));
        return -1;
    }
    if (chown(path, t->uid, t->gid) != 0) {
        why(t, "chown %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int pgtmp_start(struct pgtmp *t)
{
    char *const argv[] = { PG_BINDIR "/postgres", "-D", t->datadir, NULL };
    char conninfo[512];
    if (t->pid > 0)
        return 0;
    t->pid = spawn_as_postgres(t, argv, 1);
    if (t->pid < 0) {
        t->pid = 0;
        return -1;
    }
    snprintf(conninfo, sizeof conninfo,
             "host=%s port=%d dbname=postgres user=postgres connect_timeout=2", t->dir, t->port);
    long end = now_ms() + START_WAIT_MS;
    for (;;) {
        if (PQping(conninfo) == PQPING_OK)
            return 0;
        int st;
        if (waitpid(t->pid, &st, WNOHANG) == t->pid) {
            char tail[512];
            t->pid = 0;
            log_tail(t, tail, sizeof tail);
            why(t, "postgres exited during startup (status 0x%x): %s", st, tail);
            return -1;
        }
        if (now_ms() > end) {
            why(t, "postgres did not accept connections within %d ms", START_WAIT_MS);
            pgtmp_signal(t, SIGQUIT);
            pgtmp_wait(t);
            return -1;
        }
        sleep_ms(20);
    }
}

int pgtmp_init(struct pgtmp *t)
{
    char conf[1024];
    char path[400];
    memset(t, 0, sizeof *t);
    if (!pgtmp_available(t->why, sizeof t->why))
        return -1;
    struct passwd *pw = getpwnam("postgres");
    if (!pw) {
        why(t, "no postgres user");
        return -1;
    }
    t->uid = pw->pw_uid;
    t->gid = pw->pw_gid;
    sweep_stale();
    snprintf(t->dir, sizeof t->dir, "/tmp/" DIR_PREFIX "%ld.XXXXXX", (long)getpid());
    if (!mkdtemp(t->dir)) {
        why(t, "mkdtemp: %s", strerror(errno));
        t->dir[0] = '\0';
        return -1;
    }
    if (chown(t->dir, t->uid, t->gid) != 0) {
        why(t, "chown %s: %s", t->dir, strerror(errno));
        return -1;
    }
    snprintf(t->datadir, sizeof t->datadir, "%s/data", t->dir);
    snprintf(t->logfile, sizeof t->logfile, "%s/server.log", t->dir);
    t->port = pgtmp_free_port();
    if (t->port <= 0) {
        why(t, "no free port");
        return -1;
    }
    char *const initdb[] = {
        PG_BINDIR "/initdb", "-D",        t->datadir, "-U", "postgres", "-A", "trust", "-E", "UTF8",
        "--locale=C",        "--no-sync", NULL
    };
    if (run_as_postgres(t, initdb) != 0)
        return -1;
    snprintf(conf, sizeof conf,
             "\n# pgtmp\n"
             "listen_addresses = '127.0.0.1'\n"
             "port = %d\n"
             "unix_socket_directories = '%s'\n"
             "max_connections = 30\n"
             "shared_buffers = 16MB\n"
             "fsync = off\n"
             "synchronous_commit = off\n"
             "full_page_writes = off\n"
             "password_encryption = 'scram-sha-256'\n"
             "log_min_messages = warning\n",
             t->port, t->dir);
    snprintf(path, sizeof path, "%s/postgresql.conf", t->datadir);
    if (append_file(t, path, "a", conf) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/pg_hba.conf", t->datadir);
    if (append_file(t, path, "w",
                    "local all all trust\n"
                    "host all pwuser 127.0.0.1/32 scram-sha-256\n"
                    "host all all 127.0.0.1/32 trust\n") != 0)
        return -1;
    if (pgtmp_start(t) != 0)
        return -1;
    char out[64];
    if (pgtmp_sql(t, "create role pwuser login password '" PGTMP_PASSWORD "'", out, sizeof out))
        return -1;
    return 0;
}

int pgtmp_signal(struct pgtmp *t, int sig)
{
    if (t->pid <= 0)
        return -1;
    return kill(t->pid, sig);
}

int pgtmp_wait(struct pgtmp *t)
{
    int st;
    if (t->pid <= 0)
        return 0;
    if (wait_exit(t->pid, STOP_WAIT_MS, &st) != 0) {
        kill(t->pid, SIGKILL);
        waitpid(t->pid, &st, 0);
        t->pid = 0;
        why(t, "postgres did not stop within %d ms; killed", STOP_WAIT_MS);
        return -1;
    }
    t->pid = 0;
    return 0;
}

void pgtmp_destroy(struct pgtmp *t)
{
    if (t->pid > 0) {
        pgtmp_signal(t, SIGQUIT);
        pgtmp_wait(t);
    }
    if (t->dir[0]) {
        rm_tree(t->dir);
        t->dir[0] = '\0';
    }
}

int pgtmp_sql(struct pgtmp *t, const char *sql, char *out, size_t outlen)
{
    char conninfo[512];
    int result = 0;
    snprintf(conninfo, sizeof conninfo,
             "host=%s port=%d dbname=postgres user=postgres connect_timeout=5", t->dir, t->port);
    PGconn *c = PQconnectdb(conninfo);
    PGresult *r = NULL;
    out[0] = '\0';
    if (PQstatus(c) != CONNECTION_OK) {
        why(t, "helper connection: %s", PQerrorMessage(c));
        result = -1;
        goto out;
    }
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
        why(t, "%s: %s", sql, PQresultErrorMessage(r));
        result = -1;
        goto out;
    }
    if (PQntuples(r) > 0 && PQnfields(r) > 0)
        snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
out:
    PQclear(r);
    PQfinish(c);
    return result;
}

pid_t pgtmp_silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
        close(fd);
        return -1;
    }
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
            /* Accept and hold: the peer sees an open connection that never
             * answers. */
            if (accept(fd, NULL, NULL) < 0 && errno != EINTR && errno != ECONNABORTED &&
                errno != EMFILE)
                _exit(2);
            if (errno == EMFILE)
                pause();
        }
    }
    close(fd);
    if (pid < 0)
        return -1;
    *port = ntohs(a.sin_port);
    return pid;
}

void pgtmp_kill(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}
