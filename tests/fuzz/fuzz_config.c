/* Fuzz target: the configuration reader (orchestrator/config.c on
 * lib/yaml_doc), as `triad check-config` and the daemon run it: the input
 * is written to a file and loaded without file checks or runbooks, and the
 * diagnostics are printed.
 *
 * Invariants: config_load returns 0 exactly when it reported no problem;
 * every diagnostic has a message and a position that is not negative; and a
 * configuration it accepts is one the daemon can run on - every lookup the
 * daemon makes finds what it needs, the quorum state machine initialises on
 * it, and it renders as the JSON context runbooks resolve against. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "orchestrator/config.h"
#include "orchestrator/quorum.h"

static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init();
    devnull = fopen("/dev/null", "w");
    return 0;
}

static void send_nothing(struct quorum *q, int site, json_t *msg)
{
    (void)q;
    (void)site;
    (void)msg;
}

static void check_valid(const struct config *cfg)
{
    FUZZ_CHECK(cfg->n_sites >= 3 && cfg->n_sites <= CFG_MAX_SITES, "%zu sites", cfg->n_sites);
    FUZZ_CHECK(config_self(cfg) != NULL, "this site '%s' is not among the sites", cfg->site);
    FUZZ_CHECK(config_primary(cfg) != NULL, "no primary site");
    for (size_t i = 0; i < cfg->n_sites; i++) {
        const struct cfg_site *s = &cfg->sites[i];
        FUZZ_CHECK(s->name && config_site(cfg, s->name) == s, "site %zu cannot be looked up", i);
        for (size_t k = 0; k < s->n_fence; k++)
            FUZZ_CHECK(config_fence(cfg, s->fence[k]), "site %s: fence '%s' is not defined",
                       s->name, s->fence[k]);
        for (size_t k = 0; k < s->n_self_fence; k++)
            FUZZ_CHECK(config_fence(cfg, s->self_fence[k]),
                       "site %s: self_fence '%s' is not defined", s->name, s->self_fence[k]);
    }
    for (size_t i = 0; i < cfg->n_probes; i++)
        FUZZ_CHECK(config_site(cfg, cfg->probes[i].site), "probe %zu: unknown site", i);
    for (size_t i = 0; i < cfg->n_fences; i++)
        FUZZ_CHECK(config_site(cfg, cfg->fences[i].site), "fence %zu: unknown site", i);
    for (size_t i = 0; i < cfg->pg.n_groups; i++) {
        for (size_t k = 0; k < cfg->pg.groups[i].n_clusters; k++)
            FUZZ_CHECK(config_pg_cluster(cfg, cfg->pg.groups[i].clusters[k]),
                       "group %s: unknown cluster", cfg->pg.groups[i].name);
    }
    if (cfg->failover.target)
        FUZZ_CHECK(config_site(cfg, cfg->failover.target), "failover target unknown");

    static const struct quorum_io io = { send_nothing, NULL, NULL, NULL, NULL, NULL, NULL };
    struct quorum q;
    FUZZ_CHECK(quorum_init(&q, cfg, &io, NULL, 1000, 1) == 0,
               "quorum_init refuses an accepted configuration");
    quorum_tick(&q, 1000);

    json_t *j = config_to_json(cfg);
    FUZZ_CHECK(j != NULL, "config_to_json failed on an accepted configuration");
    char *text = json_dumps(j, JSON_COMPACT);
    FUZZ_CHECK(text != NULL, "config_to_json gave a document that does not serialise");
    free(text);
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[600];
    fuzz_write_file("triad.yaml", data, size, path, sizeof path);
    struct config cfg;
    struct diag d;
    diag_init(&d);
    struct config_load_opts o = { .no_file_checks = true, .skip_runbooks = true };
    int r = config_load(&cfg, path, &o, &d);
    FUZZ_CHECK(r == 0 || r == -1, "config_load returned %d", r);
    FUZZ_CHECK((r == 0) == (diag_count(&d) == 0), "config_load returned %d with %zu problems", r,
               diag_count(&d));
    for (size_t i = 0; i < d.n; i++)
        FUZZ_CHECK(d.items[i].msg && d.items[i].file && d.items[i].line >= 0 && d.items[i].col >= 0,
                   "diagnostic %zu is malformed", i);
    diag_print(&d, devnull);
    if (r == 0)
        check_valid(&cfg);
    config_free(&cfg);
    diag_free(&d);
    return 0;
}
