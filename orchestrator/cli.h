/* The command-line interface: the command table, option parsing shared by
 * every command, --help texts and exit codes. */
#ifndef TRIAD_CLI_H
#define TRIAD_CLI_H

/* Exit codes, one per failure class, so systemd's restart policy and
 * scripts can tell them apart. */
enum triad_exit {
    EXIT_OK = 0,
    EXIT_CONFIG = 1,          /* bad configuration or runbook */
    EXIT_NOT_IMPLEMENTED = 2, /* a command whose machinery is not built yet; also usage */
    EXIT_PEER = 3,            /* cannot reach the daemon or its peers */
    EXIT_POSTGRES = 4,        /* PostgreSQL error */
    EXIT_FAILED = 5,          /* the operation ran and failed (a run, a probe) */
    EXIT_FATAL = 6,           /* internal error; do not retry blindly */
};

int cli_main(int argc, char **argv);

#endif
