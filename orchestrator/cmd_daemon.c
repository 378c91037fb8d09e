/* `triad daemon`: run this site's daemon in the foreground. */
#include <malloc.h>

#include "orchestrator/cli.h"
#include "orchestrator/daemon.h"

int cmd_daemon(const struct cli_args *a)
{
    /* A long-running process: large buffers (a /metrics answer for a
     * thousand probes is about a megabyte) always get their own mapping and
     * go back to the system when freed. glibc's default would raise the
     * threshold after the first such free and keep the next ones in the
     * heap for good. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    return daemon_run(a->config, cli_get(a, "user"));
}
