/* The command table, option parsing shared by every command, and help. */
#include "orchestrator/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/suggest.h"
#include "orchestrator/config.h"

static const struct cli_opt no_opts[] = { { NULL, 0, NULL, NULL } };

static const struct cli_opt daemon_opts[] = {
    { "user", 0, "USER[:GROUP]",
      "started as root: become USER once the listeners are bound (see below)" },
    { NULL, 0, NULL, NULL },
};

static const struct cli_opt check_config_opts[] = {
    { "no-file-checks", 0, NULL,
      "skip the checks of referenced files (existence, permissions, certificates)" },
    { "dump", 0, NULL, "print the resolved configuration (with defaults) as JSON" },
    { NULL, 0, NULL, NULL },
};

static const struct cli_opt json_opts[] = {
    { "json", 0, NULL, "print JSON instead of a table" },
    { NULL, 0, NULL, NULL },
};

static const struct cli_opt probe_opts[] = {
    { "json", 0, NULL, "print JSON instead of a table" },
    { "once", 0, NULL, "run every probe once and exit (default: repeat until interrupted)" },
    { NULL, 0, NULL, NULL },
};

static const struct cli_opt plan_opts[] = {
    { "fsm", 0, NULL, "print the step state machine instead of a plan" },
    { "json", 0, NULL, "print JSON" },
    { "dot", 0, NULL, "print graphviz (with --fsm)" },
    { "to", 0, "SITE", "target site (default failover.target)" },
    { "from", 0, "SITE", "site the run moves away from (default: see below)" },
    { "epoch", 0, "N", "the run's epoch (default: see below)" },
    { NULL, 0, NULL, NULL },
};

static const struct cli_opt to_opts[] = {
    { "to", 0, "SITE", "the site to move the primary to" },
    { "runbook", 0, "NAME", "runbook to run (default: the command's stock runbook)" },
    { NULL, 0, NULL, NULL },
};

static const struct cli_opt deny_opts[] = {
    { "reason", 0, "TEXT", "why the step is denied (recorded in the journal)" },
    { NULL, 0, NULL, NULL },
};

static const struct cli_opt drill_opts[] = {
    { "dry-run", 0, NULL, "plan the drill and print it; inject nothing" },
    { "yes", 0, NULL, "approve every gate automatically (game days in the lab)" },
    { NULL, 0, NULL, NULL },
};

static const struct cli_opt report_opts[] = {
    { "format", 0, "md|html|json", "output format (default md)" },
    { "output", 'o', "FILE", "write to FILE instead of standard output" },
    { NULL, 0, NULL, NULL },
};

static const struct cli_cmd commands[] = {
    { "daemon", "", "run this site's daemon (probes, quorum, runbooks, API)",
      "Runs in the foreground until SIGTERM or SIGINT: probes every site, keeps\n"
      "the TLS links to the other daemons, takes part in the quorum (ODOWN,\n"
      "epochs, votes, the primary's lease, self-fencing) and serves the control\n"
      "API on api.socket; the quorum's leader runs the runbooks. SIGHUP reads\n"
      "the configuration again: log, failover, approvals, operators, runbooks,\n"
      "notifications and probes apply without a restart (once no run is in\n"
      "progress); a change to anything else is refused with the list of the\n"
      "settings that need a restart, and the running configuration is kept.\n"
      "Logs go to standard error, one event per line (logfmt or JSON).\n"
      "\n"
      "The daemon needs no privilege (unless a listener's port is below 1024).\n"
      "Started as root with --user, it hands its state_dir and control socket\n"
      "to USER, then gives root up for good once its listeners are bound and\n"
      "its TLS keys read; what it reads later (the configuration on SIGHUP,\n"
      "runbooks, password, credential and TSIG key files) must be readable by\n"
      "USER.",
      daemon_opts, 0, 0, cmd_daemon },
    { "check-config", "", "validate the configuration and its runbooks",
      "Reads the configuration and every runbook it names, checks every value,\n"
      "cross-reference and referenced file, and prints every error as\n"
      "FILE:LINE:COLUMN: message. Exit status 1 when anything is wrong.",
      check_config_opts, 0, 0, cmd_check_config },
    { "status", "", "show quorum, sites, probes and the active run",
      "Asks the local daemon over its control socket (api.socket) and prints the\n"
      "epoch, leader, primary site, quorum, each site's state and probes, and\n"
      "the active run.",
      json_opts, 0, 0, cmd_status },
    { "probe", "", "run the probes without a daemon and print their results",
      "Runs every configured probe against its target and prints a table\n"
      "(site, probe, state, latency, detail), or with --json a document\n"
      "{\"probes\": [...]}. Without --once, prints each result as it comes until\n"
      "interrupted. With --once the exit status is 0 when every probe is up and\n"
      "5 otherwise.",
      probe_opts, 0, 0, cmd_probe },
    { "plan", "[RUNBOOK]", "show what a runbook would do (a dry run)",
      "Resolves every parameter and runs every action's non-destructive checks.\n"
      "When the local daemon answers and its last decision moved the primary to\n"
      "the --to site, the plan replays that decision (its from site and epoch):\n"
      "after a failover, every step whose outcome holds shows as skipped.\n"
      "Otherwise it plans a new run from the current primary, epoch 0.\n"
      "With --fsm, prints the step state machine (--json or --dot).",
      plan_opts, 0, 1, cmd_plan },
    { "failover", "", "start an unplanned failover (--to SITE)",
      "Asks the local daemon to stand for election and, once a majority has\n"
      "recorded the decision, run the failover runbook (failover.runbook) from\n"
      "the current primary to SITE. Its gates wait for `triad approve`.",
      to_opts, 0, 0, cmd_failover },
    { "switchover", "", "start a planned switchover with no data loss (--to SITE)",
      "Like failover, with the switchover runbook (planned, zero data loss);\n"
      "`--runbook failback` returns the primary to a site that was lost.",
      to_opts, 0, 0, cmd_switchover },
    { "approve", "RUN STEP", "approve a step waiting at its gate",
      "Shows the gate's prompt and records your identity (the Unix user on the\n"
      "control socket, mapped to an operator), the time and what was shown.\n"
      "With approvals.required: 2, two different operators must approve.",
      no_opts, 2, 2, cmd_approve },
    { "deny", "RUN STEP", "deny a step waiting at its gate (--reason TEXT)",
      "The step fails: the run stops, or continues, per the step's on_failure.", deny_opts, 2, 2,
      cmd_deny },
    { "abort", "RUN", "abort a run",
      "Cancels the action in flight and ends the run as aborted (journaled).", no_opts, 1, 1,
      cmd_abort },
    { "ack", "", "acknowledge the last run and lift the anti-flapping block",
      "After a run, automatic runs are blocked for failover.block_period; this\n"
      "lifts the block on every reachable site.",
      no_opts, 0, 0, cmd_ack },
    { "console", "", "interactive view of the active run, prompting at each gate",
      "Shows the active run's plan and progress and the sites' probes, refreshed\n"
      "every second, and asks y/N at each gate (answered as you, recorded).\n"
      "Needs a terminal; q quits.",
      no_opts, 0, 0, cmd_console },
    { "drill", "SCENARIO", "run a game-day drill and measure RTO and RPO",
      "Scenarios: dc1-loss (the primary site is killed), dc1-isolation (cut off),\n"
      "switchover, failback. The fault is injected by drill.hook (the lab's\n"
      "script, or an operator's); the drill follows the run the daemons start,\n"
      "approves its gates with --yes, waits until writes succeed through the\n"
      "public name, and writes the measurements and an HTML report under\n"
      "state_dir. Run it against a daemon that survives the fault (e.g. DC2's).\n"
      "Exit status 0 when the run completed, service came back and no\n"
      "acknowledged write was lost.",
      drill_opts, 1, 1, cmd_drill },
    { "report", "RUN", "render a run's journal as a report",
      "Markdown for tickets, one self-contained HTML file with the timeline as\n"
      "SVG, or JSON. Reads this site's copy of the journal in state_dir (no\n"
      "daemon needed); RUN may be `last`. A drill's measurements (RTO, writes\n"
      "lost) are included when the run was a drill.",
      report_opts, 1, 1, cmd_report },
    { "version", "", "print the versions of triad and its libraries", "", no_opts, 0, 0,
      cmd_version },
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void print_usage(FILE *out)
{
    fprintf(out, "usage: triad <command> [options]\n\n"
                 "triad watches PostgreSQL, Synapse, the ingress and DNS from each of three\n"
                 "datacenters and runs failovers of Element Server Suite when a majority\n"
                 "agrees that the primary datacenter is lost.\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) {
        fprintf(out, "  %-13s %s%s\n", commands[i].name, commands[i].summary,
                commands[i].run == cmd_not_implemented ? " (not implemented yet)" : "");
    }
    fprintf(out,
            "\noptions for every command:\n"
            "  -c, --config FILE  configuration (default " CFG_DEFAULT_PATH ", or $TRIAD_CONFIG)\n"
            "  -h, --help         help for the command\n\n"
            "`triad COMMAND --help` describes a command.\n");
}

/* "-x, --name ARG" or "    --name ARG" (long only), aligned. */
static void opt_left(const struct cli_opt *o, char *out, size_t len)
{
    char sh[8] = "    ";
    if (o->short_name)
        snprintf(sh, sizeof sh, "-%c, ", o->short_name);
    snprintf(out, len, "%s--%s%s%s", sh, o->name, o->arg ? " " : "", o->arg ? o->arg : "");
}

static void print_cmd_help(const struct cli_cmd *c, FILE *out)
{
    fprintf(out, "usage: triad %s [options]%s%s\n\n%s\n", c->name, *c->args ? " " : "", c->args,
            c->summary);
    if (c->run == cmd_not_implemented)
        fprintf(out, "(not implemented yet: the command exits with status 2)\n");
    if (*c->help)
        fprintf(out, "\n%s\n", c->help);
    fprintf(out,
            "\noptions:\n  %-24s configuration (default " CFG_DEFAULT_PATH ", or $TRIAD_CONFIG)\n",
            "-c, --config FILE");
    for (size_t i = 0; c->opts[i].name; i++) {
        char left[64];
        opt_left(&c->opts[i], left, sizeof left);
        fprintf(out, "  %-24s %s\n", left, c->opts[i].help);
    }
    fprintf(out, "  %-24s this help\n", "-h, --help");
}

/* ---- the manual page, from the same table (`triad --man`) ---- */

/* Text for roff: backslashes doubled, a leading dot or quote made inert,
 * `code` in bold, hyphens in options made minus signs. */
static void roff_text(FILE *out, const char *s)
{
    bool bold = false, line_start = true;
    for (; *s; s++) {
        if (line_start && (*s == '.' || *s == '\''))
            fputs("\\&", out);
        line_start = *s == '\n';
        if (*s == '\\')
            fputs("\\e", out);
        else if (*s == '`') {
            fputs(bold ? "\\fR" : "\\fB", out);
            bold = !bold;
        } else if (*s == '-')
            fputs("\\-", out);
        else
            fputc(*s, out);
    }
    if (bold)
        fputs("\\fR", out);
}

static void man_option(FILE *out, const char *left, const char *help)
{
    fputs(".TP\n.B ", out);
    roff_text(out, left);
    fputc('\n', out);
    roff_text(out, help);
    fputc('\n', out);
}

static void print_man(FILE *out)
{
    fprintf(out,
            ".\\\" Generated by `triad --man` from the command table of orchestrator/cli.c.\n"
            ".TH TRIAD 1 \"\" \"triad %s\" \"User Commands\"\n"
            ".SH NAME\ntriad \\- cross-datacenter failover for Element Server Suite\n"
            ".SH SYNOPSIS\n.B triad\n.I command\n[options] [arguments]\n"
            ".SH DESCRIPTION\n",
            TRIAD_VERSION);
    roff_text(out, "triad watches PostgreSQL, Synapse, the ingress and DNS from each of three\n"
                   "datacenters and runs failovers of Element Server Suite when a majority\n"
                   "agrees that the primary datacenter is lost. One `triad daemon` runs in\n"
                   "each datacenter; the other commands talk to the local daemon through\n"
                   "its control socket, or work on the configuration and the journals.\n");
    fputs(".SH COMMANDS\n", out);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        const struct cli_cmd *c = &commands[i];
        fprintf(out, ".SS \"%s%s%s\"\n", c->name, *c->args ? " " : "", c->args);
        roff_text(out, c->summary);
        fputs(".\n", out);
        if (*c->help) {
            fputs(".PP\n", out);
            roff_text(out, c->help);
            fputc('\n', out);
        }
        if (c->opts[0].name) {
            fputs(".PP\nOptions:\n.RS\n", out);
            for (size_t k = 0; c->opts[k].name; k++) {
                char left[64];
                opt_left(&c->opts[k], left, sizeof left);
                man_option(out, left, c->opts[k].help);
            }
            fputs(".RE\n", out);
        }
    }
    fputs(".SH OPTIONS FOR EVERY COMMAND\n", out);
    man_option(out, "-c, --config FILE",
               "the configuration (default " CFG_DEFAULT_PATH ", or $TRIAD_CONFIG)");
    man_option(out, "-h, --help", "help for the command");
    fputs(".SH EXIT STATUS\n", out);
    static const char *const codes[][2] = {
        { "0", "success" },
        { "1", "bad configuration or runbook" },
        { "2", "bad command line" },
        { "3", "the daemon or its peers cannot be reached" },
        { "4", "a PostgreSQL error" },
        { "5", "the operation ran and failed (a run, a probe, a drill)" },
        { "6", "an internal error; do not retry blindly" },
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        man_option(out, codes[i][0], codes[i][1]);
    fputs(".SH ENVIRONMENT\n", out);
    man_option(out, "TRIAD_CONFIG", "the configuration file when -c is not given");
    fputs(".SH FILES\n", out);
    man_option(out, CFG_DEFAULT_PATH, "the configuration of this site; see triad.yaml(5)");
    fputs(".SH SEE ALSO\n.BR triad.yaml (5)\n", out);
}

static const struct cli_cmd *find_cmd(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    }
    return NULL;
}

const char *cli_get(const struct cli_args *a, const char *name)
{
    for (size_t i = 0; a->opts && a->opts[i].name; i++) {
        if (strcmp(a->opts[i].name, name) == 0)
            return a->values[i];
    }
    return NULL;
}

bool cli_flag(const struct cli_args *a, const char *name)
{
    return cli_get(a, name) != NULL;
}

/* Parses the arguments after the command name. Returns 0, 1 for --help,
 * or -1 after printing an error. */
static int parse_args(const struct cli_cmd *c, int argc, char **argv, struct cli_args *a)
{
    memset(a, 0, sizeof *a);
    a->opts = c->opts;
    const char *env = getenv("TRIAD_CONFIG");
    a->config = env && *env ? env : CFG_DEFAULT_PATH;
    bool only_positional = false;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (only_positional || arg[0] != '-' || arg[1] == '\0') {
            if (a->n_positional >= CLI_MAX_POSITIONAL || a->n_positional >= c->max_args) {
                fprintf(stderr, "triad %s: unexpected argument '%s'\n", c->name, arg);
                return -1;
            }
            a->positional[a->n_positional++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_positional = true;
            continue;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)
            return 1;
        /* --name=value, --name value, -x value */
        char name[64];
        const char *inline_val = NULL;
        const struct cli_opt *o = NULL;
        size_t idx = 0;
        if (arg[1] == '-') {
            const char *eq = strchr(arg + 2, '=');
            size_t n = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
            if (n >= sizeof name)
                n = sizeof name - 1;
            memcpy(name, arg + 2, n);
            name[n] = '\0';
            inline_val = eq ? eq + 1 : NULL;
        } else {
            if (arg[2] != '\0')
                inline_val = arg + 2;
            name[0] = '\0';
        }
        bool is_config =
            (arg[1] == '-' && strcmp(name, "config") == 0) || (arg[1] != '-' && arg[1] == 'c');
        if (!is_config) {
            for (idx = 0; c->opts[idx].name; idx++) {
                if ((arg[1] == '-' && strcmp(c->opts[idx].name, name) == 0) ||
                    (arg[1] != '-' && c->opts[idx].short_name == arg[1])) {
                    o = &c->opts[idx];
                    break;
                }
            }
            if (!o) {
                const char *names[CLI_MAX_OPTS + 2];
                size_t k = 0;
                for (; k < CLI_MAX_OPTS && c->opts[k].name; k++)
                    names[k] = c->opts[k].name;
                names[k++] = "config";
                names[k++] = "help";
                const char *s = arg[1] == '-' ? suggest_closest(name, names, k) : NULL;
                fprintf(stderr, "triad %s: unknown option '%s'%s%s%s\n", c->name, arg,
                        s ? " (did you mean '--" : "", s ? s : "", s ? "'?)" : "");
                return -1;
            }
        }
        bool takes_arg = is_config || o->arg;
        const char *val = "1";
        if (takes_arg) {
            if (inline_val)
                val = inline_val;
            else if (i + 1 < argc)
                val = argv[++i];
            else {
                fprintf(stderr, "triad %s: option '%s' needs a value\n", c->name, arg);
                return -1;
            }
        } else if (inline_val) {
            fprintf(stderr, "triad %s: option '%s' takes no value\n", c->name, arg);
            return -1;
        }
        if (is_config) {
            a->config = val;
            a->config_given = true;
        } else {
            a->values[idx] = val;
        }
    }
    if (a->n_positional < c->min_args) {
        fprintf(stderr, "triad %s: missing argument%s: usage: triad %s %s\n", c->name,
                c->min_args - a->n_positional > 1 ? "s" : "", c->name, c->args);
        return -1;
    }
    return 0;
}

int cmd_not_implemented(const struct cli_args *a)
{
    (void)a;
    /* The caller prints which command; see cli_main. */
    return EXIT_NOT_IMPLEMENTED;
}

int cli_main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "help") == 0) {
        if (argc > 2 && find_cmd(argv[2])) {
            print_cmd_help(find_cmd(argv[2]), stdout);
            return EXIT_OK;
        }
        print_usage(stdout);
        return EXIT_OK;
    }
    if (strcmp(name, "--man") == 0) {
        print_man(stdout);
        return EXIT_OK;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0)
        name = "version";
    const struct cli_cmd *c = find_cmd(name);
    if (!c) {
        const char *names[N_COMMANDS];
        for (size_t i = 0; i < N_COMMANDS; i++)
            names[i] = commands[i].name;
        const char *s = suggest_closest(name, names, N_COMMANDS);
        fprintf(stderr, "triad: unknown command '%s'%s%s%s; see `triad --help`\n", name,
                s ? " (did you mean '" : "", s ? s : "", s ? "'?)" : "");
        return EXIT_USAGE;
    }
    struct cli_args a;
    int r = parse_args(c, argc - 2, argv + 2, &a);
    if (r == 1) {
        print_cmd_help(c, stdout);
        return EXIT_OK;
    }
    if (r < 0)
        return EXIT_USAGE;
    if (c->run == cmd_not_implemented) {
        fprintf(stderr, "triad %s: not implemented yet in triad %s\n", c->name, TRIAD_VERSION);
        return EXIT_NOT_IMPLEMENTED;
    }
    return c->run(&a);
}
