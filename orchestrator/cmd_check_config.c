/* `triad check-config`: validate the configuration and its runbooks,
 * printing every error as FILE:LINE:COLUMN: message. */
#include <stdio.h>
#include <stdlib.h>

#include "orchestrator/cli.h"
#include "orchestrator/config.h"

int cmd_check_config(const struct cli_args *a)
{
    struct config cfg;
    struct diag d;
    struct config_load_opts opts = { .no_file_checks = cli_flag(a, "no-file-checks") };
    diag_init(&d);
    int r = config_load(&cfg, a->config, &opts, &d);
    int result = EXIT_OK;
    if (r < 0) {
        diag_print(&d, stderr);
        fprintf(stderr, "%s: %zu error%s\n", a->config, diag_count(&d),
                diag_count(&d) == 1 ? "" : "s");
        result = EXIT_CONFIG;
    } else if (cli_flag(a, "dump")) {
        json_t *j = config_to_json(&cfg);
        char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(j);
    } else {
        printf("%s: ok (cluster %s, site %s, %zu sites, %zu probes, %zu runbooks%s)\n", a->config,
               cfg.cluster, cfg.site, cfg.n_sites, cfg.n_probes, cfg.n_runbooks,
               opts.no_file_checks ? "; file checks skipped" : "");
    }
    config_free(&cfg);
    diag_free(&d);
    return result;
}
