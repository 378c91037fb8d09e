/* The command-line interface: the command table, option parsing shared by
 * every command, --help texts and exit codes. */
#ifndef TRIAD_CLI_H
#define TRIAD_CLI_H

#include <stdbool.h>
#include <jansson.h>
#include <stddef.h>

/* Exit codes, one per failure class, so systemd's restart policy and
 * scripts can tell them apart. */
enum triad_exit {
    EXIT_OK = 0,
    EXIT_CONFIG = 1,   /* bad configuration or runbook */
    EXIT_USAGE = 2,    /* bad command line, or a command not built yet */
    EXIT_PEER = 3,     /* cannot reach the daemon or its peers */
    EXIT_POSTGRES = 4, /* PostgreSQL error */
    EXIT_FAILED = 5,   /* the operation ran and failed (a run, a probe) */
    EXIT_FATAL = 6,    /* internal error; do not retry blindly */
};
#define EXIT_NOT_IMPLEMENTED EXIT_USAGE

#define CLI_MAX_POSITIONAL 8
#define CLI_MAX_OPTS       16

/* An option a command accepts (besides -c/--config and -h/--help). */
struct cli_opt {
    const char *name; /* long name without dashes */
    char short_name;  /* 0 for none */
    const char *arg;  /* NULL for a flag, else the argument's placeholder */
    const char *help;
};

/* What the command line said. */
struct cli_args {
    const char *config; /* -c, $TRIAD_CONFIG or the default */
    bool config_given;
    const char *positional[CLI_MAX_POSITIONAL];
    size_t n_positional;
    const char *values[CLI_MAX_OPTS]; /* per cli_opt: argument, or "1" for a flag */
    const struct cli_opt *opts;
};

struct cli_cmd {
    const char *name;
    const char *args;    /* positional arguments, for the usage line */
    const char *summary; /* one line for `triad --help` */
    const char *help;    /* paragraphs for `triad CMD --help` */
    const struct cli_opt *opts;
    size_t min_args, max_args;
    int (*run)(const struct cli_args *a);
};

int cli_main(int argc, char **argv);

/* The value of option `name`, or NULL when not given. */
const char *cli_get(const struct cli_args *a, const char *name);
bool cli_flag(const struct cli_args *a, const char *name);

/* Commands (one file each). */
int cmd_version(const struct cli_args *a);
int cmd_check_config(const struct cli_args *a);
int cmd_probe(const struct cli_args *a);
int cmd_status(const struct cli_args *a);
int cmd_daemon(const struct cli_args *a);
int cmd_plan(const struct cli_args *a);
int cmd_failover(const struct cli_args *a);
int cmd_switchover(const struct cli_args *a);
int cmd_approve(const struct cli_args *a);
int cmd_deny(const struct cli_args *a);
int cmd_abort(const struct cli_args *a);
int cmd_ack(const struct cli_args *a);
int cmd_console(const struct cli_args *a);
int cmd_report(const struct cli_args *a);
int cmd_drill(const struct cli_args *a);
/* Shared by report and drill. */
int report_render(const char *state_dir, const char *run, const char *format, const char *output,
                  bool summary);
json_t *report_drill_data(const char *state_dir, const char *run);
int cmd_plan_runbook(const struct cli_args *a);
int cmd_not_implemented(const struct cli_args *a);

#endif
