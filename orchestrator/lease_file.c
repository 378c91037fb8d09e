/* The primary's lease across a restart of its daemon: see lease_file.h. */
#include "orchestrator/lease_file.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/fsutil.h"

#define BOOT_ID_PATH   "/proc/sys/kernel/random/boot_id"
#define LEASE_FILE_MAX 512

static int boot_id(char out[40])
{
    FILE *f = fopen(BOOT_ID_PATH, "re");
    if (!f)
        return -1;
    char line[64];
    int r = fgets(line, sizeof line, f) ? 0 : -1;
    fclose(f);
    if (r < 0)
        return -1;
    line[strcspn(line, "\n")] = '\0';
    if (strlen(line) < 8 || strlen(line) > 39)
        return -1;
    memcpy(out, line, strlen(line) + 1);
    return 0;
}

static int64_t boottime_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_BOOTTIME, &ts) < 0)
        return -1;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int lease_file_save(const char *path, int64_t primary_epoch, int64_t remaining_ms)
{
    char id[40];
    int64_t now = boottime_ms();
    if (boot_id(id) < 0 || now < 0)
        return -ENOTSUP;
    if (remaining_ms < 0)
        remaining_ms = 0;
    char text[LEASE_FILE_MAX];
    int n =
        snprintf(text, sizeof text,
                 "{\"boot_id\": \"%s\", \"primary_epoch\": %lld, \"until_boottime_ms\": %lld}\n",
                 id, (long long)primary_epoch, (long long)(now + remaining_ms));
    if (n < 0 || (size_t)n >= sizeof text)
        return -EOVERFLOW;
    return fsutil_replace(path, text, (size_t)n, 0600);
}

int64_t lease_file_load(const char *path, int64_t primary_epoch)
{
    char id[40];
    int64_t now = boottime_ms();
    if (boot_id(id) < 0 || now < 0)
        return 0;
    struct buf b;
    buf_init(&b, LEASE_FILE_MAX);
    int64_t left = 0;
    if (fsutil_read(path, &b) == 0) {
        json_t *j = json_loadb(b.data, b.len, 0, NULL);
        const char *fid = json_string_value(json_object_get(j, "boot_id"));
        json_t *ep = json_object_get(j, "primary_epoch");
        json_t *until = json_object_get(j, "until_boottime_ms");
        if (fid && strcmp(fid, id) == 0 && json_is_integer(ep) &&
            json_integer_value(ep) == primary_epoch && json_is_integer(until) &&
            json_integer_value(until) > now)
            left = (int64_t)json_integer_value(until) - now;
        json_decref(j);
    }
    buf_free(&b);
    return left;
}
