/* `triad daemon`: run this site's daemon in the foreground. */
#include "orchestrator/cli.h"
#include "orchestrator/daemon.h"

int cmd_daemon(const struct cli_args *a)
{
    return daemon_run(a->config, cli_get(a, "user"));
}
