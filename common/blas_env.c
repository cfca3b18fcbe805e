/* blas_env.c -- choose OpenBLAS's kernel from CPUID and re-exec once so it takes effect. */
#define _GNU_SOURCE
#include "blas_env.h"
#include "paths.h"

#include <cblas.h>
#include <limits.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

/* The marker stops a second re-exec whatever happens to OPENBLAS_CORETYPE. */
#define REEXEC_MARK "LOUPE_BLAS_REEXEC"

static const char *pick_coretype(void) {
    __builtin_cpu_init();
    /* __builtin_cpu_supports also checks that the OS saves the AVX/AVX-512 state. */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "Haswell";
    return NULL;
}

void blas_env_setup(char **argv) {
    if (getenv("OPENBLAS_CORETYPE") || getenv(REEXEC_MARK)) return;
    const char *core = pick_coretype();
    if (!core) return;
    /* Only worth a re-exec when OpenBLAS would not choose this kernel itself. */
    const char *now = openblas_get_corename();
    if (now && !strcasecmp(now, core)) return;
    setenv("OPENBLAS_CORETYPE", core, 1);
    setenv(REEXEC_MARK, "1", 1);
    /* The binary's real path, not /proc/self/exe: the process's name (ps, pkill) comes
     * from the path exec'd, and would read "exe". */
    char self[PATH_MAX];
    execv(paths_self_exe(self, sizeof self) ? "/proc/self/exe" : self, argv);
    /* Still here: the exec failed; run on with the kernel already loaded. */
}

const char *blas_env_kernel(void) {
    const char *name = openblas_get_corename();
    return name ? name : "unknown";
}

void blas_env_set_threads(int n) {
    openblas_set_num_threads(n < 1 ? blas_env_cores() : n);
}

int blas_env_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}
