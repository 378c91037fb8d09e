/* Checks of the files a configuration refers to: existence, permissions of
 * secrets (never world-readable), certificate validity and key/certificate
 * pairs. Skipped as a whole by `check-config --no-file-checks`. */
#ifndef TRIAD_CONFIG_FILES_H
#define TRIAD_CONFIG_FILES_H

#include "lib/diag.h"
#include "lib/yaml_doc.h"

enum cfg_file_kind {
    CFG_FILE_PLAIN,  /* must exist and be readable */
    CFG_FILE_CERT,   /* PEM certificate chain: the first (ours) currently valid */
    CFG_FILE_CA,     /* PEM CA bundle: at least one certificate currently valid */
    CFG_FILE_SECRET, /* must not be readable or writable by everyone */
};

/* `path` made absolute against `dir` (the config file's directory). */
char *config_resolve_path(const char *dir, const char *path);
char *config_dirname(const char *path);

void config_check_file(struct diag *d, const struct ynode *at, const char *path,
                       enum cfg_file_kind kind);
void config_check_key_pair(struct diag *d, const struct ynode *at, const char *cert_file,
                           const char *key_file);

/* Reads the first line of a secret file (trailing newline removed), capped
 * at `max` bytes, refusing a world-readable file. Returns a malloc'd string
 * or NULL with a reason in `why` (a static string). */
char *config_read_secret(const char *path, size_t max, const char **why);

#endif
