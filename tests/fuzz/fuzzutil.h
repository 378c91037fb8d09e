/* Shared by the libFuzzer harnesses (tests/fuzz/fuzz_*.c): the entry
 * points' prototypes, logs sent to /dev/null (still formatted: hostile
 * strings pass through the log escaping too), a scratch directory removed
 * at exit, and the valid configuration of the unit tests. Harnesses run
 * from the repository root (tests/fuzz/run.sh does). */
#ifndef TRIAD_FUZZUTIL_H
#define TRIAD_FUZZUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;

#define FUZZ_VALID_CONFIG "tests/fixtures/config/valid.yaml"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Once, from LLVMFuzzerInitialize. */
void fuzz_init(void);
/* The scratch directory (exists until exit). */
const char *fuzz_dir(void);
/* Writes data to `name` in the scratch directory, replacing it; the path
 * goes to path. Aborts when it cannot (a harness failure, not a finding). */
void fuzz_write_file(const char *name, const void *data, size_t len, char *path, size_t pathlen);
/* FUZZ_VALID_CONFIG loaded without file checks or runbooks, as `site`
 * (NULL: as written); aborts when it does not load. */
void fuzz_valid_config(struct config *cfg, const char *site);

/* A harness invariant that does not hold: a finding. Prints and aborts, so
 * libFuzzer saves the input. */
void fuzz_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
#define FUZZ_CHECK(cond, ...)                           \
    do {                                                \
        if (!(cond))                                    \
            fuzz_fail(__FILE__, __LINE__, __VA_ARGS__); \
    } while (0)

#endif
