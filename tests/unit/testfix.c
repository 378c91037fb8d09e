/* Test helper: starting and stopping the C fixtures. */
#include "testfix.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

void fixture_path(const char *name, char *out, size_t outsz)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(out, outsz, "build/fixtures/%s", name);
        return;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    snprintf(out, outsz, "%s/../fixtures/%s", exe, name);
}

pid_t fixture_start(const char *name, const char *const *args, int *port)
{
    char path[PATH_MAX + 64];
    fixture_path(name, path, sizeof path);
    const char *argv[16];
    size_t n = 0;
    argv[n++] = path;
    for (size_t i = 0; args && args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pfd[1], 1);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    char line[32];
    size_t len = 0;
    while (pid > 0 && len < sizeof line - 1) {
        struct pollfd p = { .fd = pfd[0], .events = POLLIN };
        if (poll(&p, 1, 10000) <= 0 || read(pfd[0], line + len, 1) != 1 || line[len] == '\n')
            break;
        len++;
    }
    line[len] = '\0';
    close(pfd[0]);
    *port = (int)strtol(line, NULL, 10);
    if (pid > 0 && *port <= 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

void fixture_stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}
