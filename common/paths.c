/* paths.c -- where an installed `loupe` finds its data. */
#define _DEFAULT_SOURCE /* readlink under -std=c11 */
#include "paths.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int paths_self_exe(char *out, size_t outlen) {
    if (!outlen) return -1;
    out[0] = 0;
    ssize_t n = readlink("/proc/self/exe", out, outlen - 1);
    if (n <= 0 || (size_t)n >= outlen - 1) {
        out[0] = 0;
        return -1;
    }
    out[n] = 0;
    return 0;
}

int paths_installed_dir(const char *sub, char *out, size_t outlen) {
    char exe[PATH_MAX];
    if (outlen) out[0] = 0;
    if (paths_self_exe(exe, sizeof exe)) return -1;
    char *slash = strrchr(exe, '/');
    if (!slash) return -1;
    *slash = 0; /* exe is now the binary's folder, <prefix>/bin when installed */
    int len = snprintf(out, outlen, "%s/../share/loupe/%s", exe, sub);
    struct stat st;
    if (len < 0 || (size_t)len >= outlen || stat(out, &st) || !S_ISDIR(st.st_mode)) {
        if (outlen) out[0] = 0;
        return -1;
    }
    return 0;
}
