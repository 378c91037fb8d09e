/* Helpers shared by the fuzz harnesses (see fuzzutil.h). */
#include "fuzzutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/diag.h"
#include "lib/log.h"
#include "orchestrator/config.h"

static char scratch[512];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_scratch(void)
{
    if (scratch[0])
        nftw(scratch, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void fuzz_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s:%d: fuzz invariant violated: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

void fuzz_init(void)
{
    if (scratch[0])
        return;
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd >= 0)
        log_set_fd(fd);
    log_set_level(LOG_DEBUG);
    const char *tmp = getenv("TMPDIR");
    snprintf(scratch, sizeof scratch, "%s/triad-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(scratch)) {
        fprintf(stderr, "fuzz: cannot make a scratch directory: %s\n", strerror(errno));
        abort();
    }
    atexit(rm_scratch);
}

const char *fuzz_dir(void)
{
    return scratch;
}

void fuzz_write_file(const char *name, const void *data, size_t len, char *path, size_t pathlen)
{
    snprintf(path, pathlen, "%s/%s", scratch, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const char *p = data;
    while (fd >= 0 && len > 0) {
        ssize_t n = write(fd, p, len);
        if (n <= 0) {
            close(fd);
            fd = -1;
            break;
        }
        p += n;
        len -= (size_t)n;
    }
    if (fd < 0 || close(fd) < 0) {
        fprintf(stderr, "fuzz: cannot write %s: %s\n", path, strerror(errno));
        abort();
    }
}

void fuzz_valid_config(struct config *cfg, const char *site)
{
    struct diag d;
    diag_init(&d);
    struct config_load_opts o = { .no_file_checks = true, .skip_runbooks = true };
    if (config_load(cfg, FUZZ_VALID_CONFIG, &o, &d) < 0) {
        diag_print(&d, stderr);
        fprintf(stderr, "fuzz: %s does not load (run from the repository root)\n",
                FUZZ_VALID_CONFIG);
        abort();
    }
    diag_free(&d);
    if (site) {
        free(cfg->site);
        cfg->site = strdup(site);
    }
}
