/* Test helper: a throwaway BIND 9 (named) authoritative for one test zone,
 * with TSIG keys, and a TCP-only relay to it.
 *
 * named runs in the foreground (-g) from /usr/sbin/named in a fresh
 * temporary directory, listening on 127.0.0.1 on a free port (UDP and TCP).
 * As root it runs as the `bind` user (set before exec, so that the
 * parent-death signal survives: named -u would clear it); otherwise as us.
 * The directory is writable by named, which journals dynamic updates there.
 *
 * Keys (hmac-sha256, fresh random secrets):
 *   NAMEDTMP_KEY      may update anything in the zone (update-policy)
 *   NAMEDTMP_RO_KEY   known to the server, allowed nothing: updates REFUSED
 * Zone NAMEDTMP_BOUND_ZONE answers queries (and updates) only from
 * NAMEDTMP_BOUND_SOURCE, to test source address binding; it holds
 * matrix A 127.0.1.10 and _triad.matrix TXT "epoch=0".
 */
#ifndef TRIAD_TESTS_NAMEDTMP_H
#define TRIAD_TESTS_NAMEDTMP_H

#include <stddef.h>
#include <sys/types.h>

#define NAMEDTMP_KEY          "triad-key"
#define NAMEDTMP_RO_KEY       "readonly-key"
#define NAMEDTMP_BOUND_ZONE   "bound.test"
#define NAMEDTMP_BOUND_SOURCE "127.0.0.5"

struct namedtmp {
    char dir[256];
    char conf[300];
    char logfile[300];
    char keyfile[300];    /* NAMEDTMP_KEY only, mode 0600: what triad reads */
    char ro_keyfile[300]; /* NAMEDTMP_RO_KEY only, mode 0600 */
    char zone[128];
    int port;
    pid_t pid;
    char why[1024];
};

/* Whether named can run here; when not, why says so. */
int namedtmp_available(char *why, size_t len);

/* Writes the keys, named.conf and the zone (SOA, NS, ns A 127.0.0.1, then
 * `records`: zone-file lines, names relative to the zone), starts named and
 * waits until it has loaded the zone. 0 or -1 with t->why. */
int namedtmp_start(struct namedtmp *t, const char *zone, const char *records);
/* Stops named (SIGTERM, then SIGKILL) and removes the directory. */
void namedtmp_destroy(struct namedtmp *t);

/* A TCP relay: listens on 127.0.0.1 (port in *port; nothing listens on UDP
 * there) and pipes each connection to 127.0.0.1:to_port. Returns its pid or
 * -1; stop it with namedtmp_kill. */
pid_t namedtmp_tcp_relay(int to_port, int *port);
void namedtmp_kill(pid_t pid);

#endif
