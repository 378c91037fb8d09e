/* Fuzz target: the runbook reader (runbooks/runbook.c on lib/yaml_doc), as
 * config_load and `triad plan` run it: the input is written to a file and
 * loaded against the context of the unit tests' valid configuration (sites
 * dc1 primary, dc2 standby, dc3 witness), then every step's parameters are
 * resolved for a real run dc1 -> dc2, as the engine does before each step.
 *
 * Invariants: rb_load returns 0 exactly when it reported no problem, and
 * then every step has an id (unique), a known action and at most
 * RB_MAX_PARAMS parameters, and resolves without error for the run it was
 * validated for, to parameters that serialise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "orchestrator/config.h"
#include "runbooks/runbook.h"

static struct config cfg;
static json_t *config_ctx;
static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init();
    fuzz_valid_config(&cfg, NULL);
    config_ctx = config_to_json(&cfg);
    devnull = fopen("/dev/null", "w");
    return 0;
}

static void check_loaded(const struct runbook *rb)
{
    FUZZ_CHECK(rb->name && rb->n_steps > 0 && rb->n_steps <= RB_MAX_STEPS, "%zu steps",
               rb->n_steps);
    json_t *run = rb_context(config_ctx, "r-1", 7, "dc1", "dc2", rb->name);
    FUZZ_CHECK(run != NULL, "rb_context failed");
    for (size_t i = 0; i < rb->n_steps; i++) {
        const struct rb_step *s = &rb->steps[i];
        FUZZ_CHECK(s->id && s->action && s->action_name, "step %zu is incomplete", i);
        FUZZ_CHECK(s->n_params <= RB_MAX_PARAMS, "step %s has %zu parameters", s->id, s->n_params);
        for (size_t k = 0; k < i; k++)
            FUZZ_CHECK(strcmp(rb->steps[k].id, s->id) != 0, "step id %s twice", s->id);
        struct diag d;
        diag_init(&d);
        json_t *p = rb_resolve_params(s, run, &d);
        FUZZ_CHECK(p != NULL && diag_count(&d) == 0,
                   "step %s was validated but does not resolve for dc1 -> dc2", s->id);
        char *text = json_dumps(p, JSON_COMPACT);
        FUZZ_CHECK(text != NULL, "step %s: resolved parameters do not serialise", s->id);
        free(text);
        json_decref(p);
        diag_free(&d);
    }
    json_decref(run);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[600];
    fuzz_write_file("runbook.yaml", data, size, path, sizeof path);
    struct diag d;
    diag_init(&d);
    struct runbook *rb = NULL;
    int r = rb_load(path, config_ctx, &rb, &d);
    FUZZ_CHECK(r == 0 || r == -1, "rb_load returned %d", r);
    FUZZ_CHECK((r == 0) == (diag_count(&d) == 0), "rb_load returned %d with %zu problems", r,
               diag_count(&d));
    FUZZ_CHECK((r == 0) == (rb != NULL), "rb_load returned %d and runbook %p", r, (void *)rb);
    for (size_t i = 0; i < d.n; i++)
        FUZZ_CHECK(d.items[i].msg && d.items[i].file && d.items[i].line >= 0 && d.items[i].col >= 0,
                   "diagnostic %zu is malformed", i);
    diag_print(&d, devnull);
    if (rb)
        check_loaded(rb);
    rb_free(rb);
    diag_free(&d);
    return 0;
}
