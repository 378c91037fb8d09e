/* Test helper: a throwaway PostgreSQL 15 server, and a TCP listener that
 * accepts and never speaks.
 *
 * The server runs as the `postgres` user (initdb refuses root) from
 * /usr/lib/postgresql/15/bin, in a fresh temporary directory, listening on
 * 127.0.0.1 on a free port and on a unix socket in that directory. The
 * postmaster is our direct child with a parent-death signal, so it dies
 * with the test process even on a crash; pgtmp_destroy stops it and removes
 * the directory, and pgtmp_init removes directories left by dead runs.
 *
 * Roles: `postgres` (superuser, trust) and `pwuser` (scram-sha-256 over
 * TCP, password PGTMP_PASSWORD).
 */
#ifndef TRIAD_TESTS_PGTMP_H
#define TRIAD_TESTS_PGTMP_H

#include <stddef.h>
#include <sys/types.h>

#define PGTMP_PASSWORD "Tr1ad-s3cret-pw"

struct pgtmp {
    char dir[256];     /* temporary directory, also the unix socket directory */
    char datadir[300]; /* dir/data */
    char logfile[300]; /* dir/server.log */
    int port;
    pid_t pid; /* postmaster, 0 when stopped */
    uid_t uid; /* of `postgres` */
    gid_t gid;
    char why[1024]; /* why the last call failed */
};

/* Whether the helper can run at all here (root, binaries present); when
 * not, *why says so. */
int pgtmp_available(char *why, size_t len);

/* Temp dir, initdb, configuration, start, roles. 0 or -1 with t->why. */
int pgtmp_init(struct pgtmp *t);
/* Start the (stopped) server again on the same port and wait until it
 * accepts connections. 0 or -1 with t->why. */
int pgtmp_start(struct pgtmp *t);
/* Signal the postmaster (SIGINT fast, SIGQUIT immediate shutdown) without
 * waiting; pgtmp_wait reaps it. */
int pgtmp_signal(struct pgtmp *t, int sig);
int pgtmp_wait(struct pgtmp *t);
/* Stop (immediate) if running and remove everything. Safe to call twice. */
void pgtmp_destroy(struct pgtmp *t);

/* Blocking helper connection over the unix socket as postgres: run sql and
 * copy the first column of the first row (or "" when none) into out. 0 or
 * -1 with t->why. Test code only: it blocks. */
int pgtmp_sql(struct pgtmp *t, const char *sql, char *out, size_t outlen);

/* A port on 127.0.0.1 that nothing listens on right now. */
int pgtmp_free_port(void);

/* Fork a process that listens on 127.0.0.1 (port in *port), accepts every
 * connection and never reads or writes. Returns its pid or -1. */
pid_t pgtmp_silent_listener(int *port);
/* SIGKILL and reap a helper process. */
void pgtmp_kill(pid_t pid);

#endif
