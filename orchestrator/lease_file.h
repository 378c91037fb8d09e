/* The primary's lease across a restart of its daemon (state_dir/lease).
 *
 * A primary whose daemon restarts has no lease in memory, and without one
 * it would fence itself (read-only PostgreSQL, ESS scaled to 0) until the
 * peers answer again: a routine restart would cost an outage. The lease it
 * held was granted by a majority that promised not to count it over before
 * its end, so it may keep it until then. The file records that end on
 * CLOCK_BOOTTIME with the kernel's boot id: only a restart within the same
 * boot can use it (after a reboot the end is unknowable and the daemon
 * fences at start, as before). Written without fsync on every renewal: a
 * process crash keeps it, a power cut changes the boot id anyway. */
#ifndef TRIAD_LEASE_FILE_H
#define TRIAD_LEASE_FILE_H

#include <stdint.h>

/* Records that the lease of the primary of primary_epoch lasts remaining_ms
 * more (0 or less: no lease). 0 or a negative errno. */
int lease_file_save(const char *path, int64_t primary_epoch, int64_t remaining_ms);
/* What is left of a saved lease for primary_epoch, in ms; 0 when there is
 * none (no file, another boot, another epoch, expired, unreadable). */
int64_t lease_file_load(const char *path, int64_t primary_epoch);

#endif
