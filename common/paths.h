/* paths.h -- where an installed `loupe` finds its data: <prefix>/share/loupe beside <prefix>/bin. */
#ifndef LOUPE_PATHS_H
#define LOUPE_PATHS_H

#include <stddef.h>

/* The installed copy of a data folder ("static", "docs", "training"): <prefix>/share/loupe/<sub>
 * when the running binary is <prefix>/bin/loupe (found through /proc/self/exe) and that folder
 * exists. Returns 0 with the path in out, or -1 (out = "") when the binary does not run from an
 * install prefix (e.g. from the build tree), /proc is not mounted, or the path is too long. */
int paths_installed_dir(const char *sub, char *out, size_t outlen);

/* The running binary's own path (/proc/self/exe) into out. Returns 0, or -1 (out = ""). */
int paths_self_exe(char *out, size_t outlen);

#endif
