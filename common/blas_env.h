/* blas_env.h -- pick a fast BLAS kernel the CPU can run, and set BLAS threads, before any math. */
#ifndef LOUPE_BLAS_ENV_H
#define LOUPE_BLAS_ENV_H

/* Call first thing in main(). OpenBLAS reads OPENBLAS_CORETYPE once, when it is
 * loaded, and on CPUs it does not know it falls back to a slow generic kernel
 * (Prescott); on others its pick is not the fastest for the MLP's small GEMMs
 * (on AMD Zen 4 Debian's 0.3.21 picks Cooperlake: 0.47 s an epoch against
 * SkylakeX's 0.41). When the variable is unset, this chooses SkylakeX (AVX-512
 * F/BW/DQ/VL usable by the OS) or Haswell (AVX2+FMA) from CPUID, sets it, and
 * re-executes the program once so the library loads with it. A user's own
 * OPENBLAS_CORETYPE is always kept. If the re-exec fails the program goes on
 * with the default kernel. Returns nothing; never exits. */
void blas_env_setup(char **argv);

/* The kernel name OpenBLAS is running with (e.g. "SkylakeX"). Static string. */
const char *blas_env_kernel(void);

/* Threads BLAS may use for one call; n < 1 means the number of cores. */
void blas_env_set_threads(int n);

/* Number of online cores (at least 1). */
int blas_env_cores(void);

#endif
