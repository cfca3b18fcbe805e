/* pyrun.c -- `loupe train-vgg`, `loupe reproduce` and `loupe sanity-check`: Python scripts, run with a Python that has torch. */
#define _DEFAULT_SOURCE /* setenv, access under -std=c11 */
#include "pyrun.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "paths.h"

#ifndef LOUPE_TRAINING_DIR
#define LOUPE_TRAINING_DIR ""
#endif

/* The folder of the Python trainers: the install prefix's share/loupe/training when
 * this binary runs from one, else the source tree's. Returns 0, or -1 (no trainers). */
static int training_dir(char *out, size_t outlen) {
    struct stat st;
    if (!paths_installed_dir("training", out, outlen)) return 0;
    if (LOUPE_TRAINING_DIR[0] && !stat(LOUPE_TRAINING_DIR, &st) && S_ISDIR(st.st_mode)) {
        snprintf(out, outlen, "%s", LOUPE_TRAINING_DIR);
        return 0;
    }
    return -1;
}

/* 1 when `py -c "import torch, torchvision"` succeeds (quietly). */
static int has_torch(const char *py) {
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        execlp(py, py, "-c", "import torch, torchvision", (char *)NULL);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return 0;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* The Python to run the trainers with: LOUPE_PYTHON as given; else Debian's
 * /usr/bin/python3, else the python3 first on PATH, whichever imports torch
 * (the python3 first on PATH may be another interpreter without it). NULL when none does. */
static const char *find_python(void) {
    const char *env = getenv("LOUPE_PYTHON");
    if (env && *env) return env;
    static const char *const candidates[] = {"/usr/bin/python3", "python3"};
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++)
        if (has_torch(candidates[i])) return candidates[i];
    return NULL;
}

/* exec python script args...; extra (may be NULL) goes right after the script. Returns only on failure. */
static int run(const char *cmd, const char *script_name, const char *extra_flag, const char *extra_value, int argc,
               char **argv) {
    char dir[PATH_MAX], script[PATH_MAX + 32];
    if (training_dir(dir, sizeof dir)) {
        fprintf(stderr,
                "loupe %s: this installation has no Python trainers (no share/loupe/training beside its bin/, "
                "and the source tree it was built from is gone); use an image or install with them\n",
                cmd);
        return 2;
    }
    snprintf(script, sizeof script, "%s/%s", dir, script_name);
    if (access(script, R_OK)) {
        fprintf(stderr, "loupe %s: %s: %s\n", cmd, script, strerror(errno));
        return 2;
    }
    const char *py = find_python();
    if (!py) {
        fprintf(stderr,
                "loupe %s: no Python with torch and torchvision: install Debian's python3-torch and "
                "python3-torchvision (scripts/install-deps.sh does), or set LOUPE_PYTHON to an interpreter that "
                "has them\n",
                cmd);
        return 2;
    }
    char **args = calloc((size_t)argc + 6, sizeof *args);
    if (!args) {
        fprintf(stderr, "loupe %s: out of memory\n", cmd);
        return 1;
    }
    int k = 0;
    args[k++] = (char *)py;
    args[k++] = script;
    if (extra_flag) {
        args[k++] = (char *)extra_flag;
        args[k++] = (char *)extra_value;
    }
    for (int i = 1; i < argc; i++) args[k++] = argv[i];
    args[k] = NULL;
    execvp(py, args);
    fprintf(stderr, "loupe %s: cannot run %s: %s\n", cmd, py, strerror(errno));
    free(args);
    return 1;
}

int train_vgg_main(int argc, char **argv) {
    return run("train-vgg", "train_vgg.py", NULL, NULL, argc, argv);
}

/* run() for a script that runs loupe itself: told `--loupe <this very binary>` unless argv has --loupe. */
static int run_with_self(const char *cmd, const char *script_name, int argc, char **argv) {
    static char self[PATH_MAX];
    if (paths_self_exe(self, sizeof self)) snprintf(self, sizeof self, "loupe");
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--loupe") || !strncmp(argv[i], "--loupe=", 8))
            return run(cmd, script_name, NULL, NULL, argc, argv);
    return run(cmd, script_name, "--loupe", self, argc, argv);
}

int reproduce_main(int argc, char **argv) {
    /* reproduce.py runs `loupe train-mlp` and `loupe split`. */
    return run_with_self("reproduce", "reproduce.py", argc, argv);
}

int sanity_check_main(int argc, char **argv) {
    /* sanity_check.py serves the randomised models with `loupe serve`. */
    return run_with_self("sanity-check", "sanity_check.py", argc, argv);
}
