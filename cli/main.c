/* main.c -- the `loupe` command: dispatches to the subcommands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas_env.h"
#include "mlp.h"
#include "probe.h"
#include "pyrun.h"
#include "train_cli.h"
#include "version.h"
#ifdef LOUPE_HAVE_SERVER
#include "srv_cli.h"
#include "offline.h"
#endif

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} subcommand;

static const subcommand subcommands[] = {
    {"train-mlp", train_mlp_main, "train a from-scratch MLP on Fashion-MNIST into a model folder"},
    {"eval", eval_main, "recompute metrics.json of a model folder on the test set"},
    {"split", split_main, "print the train/validation/test indices of a data split as JSON"},
    {"train-vgg", train_vgg_main, "fine-tune a VGG on Fashion-MNIST (training/train_vgg.py with a Python that has torch)"},
    {"reproduce", reproduce_main, "run the seed report's experiments into reports/ (training/reproduce.py)"},
    {"sanity-check", sanity_check_main,
     "explanation methods under cascading randomisation, as Adebayo et al. 2018 (training/sanity_check.py)"},
    {"probe", probe_main, "GET a URL once, exit 0 on a 2xx answer (health checks without curl)"},
#ifdef LOUPE_HAVE_SERVER
    {"serve", srv_serve_main, "serve the model store over HTTP"},
    {"predict", cli_predict_main, "classify an image file with a model folder (JSON as the API)"},
    {"saliency", cli_saliency_main, "saliency map of an image file (PNG or JSON as the API)"},
    {"visualize", cli_visualize_main, "filter or class visualization as a PNG strip (or JSON)"},
    {"explain", cli_explain_main, "attribution map of an image by a method (gradient, gradcam, ...; PNG or JSON)"},
#endif
};
#define N_SUBCOMMANDS (sizeof subcommands / sizeof subcommands[0])

/* `loupe --version`: the version, what this build serves, and the MLP kernels
 * this process uses on this CPU (LOUPE_MLP_KERNELS or the automatic choice). */
static int version(void) {
    printf("loupe %s\n", LOUPE_VERSION);
#if defined(LOUPE_HAVE_TORCH)
    printf("build: with libtorch (TorchScript CNNs and MLPs)\n");
#else
    printf("build: without libtorch (MLPs only)\n");
#endif
    printf("mlp kernels: %s (%s; this CPU runs", mlp_kernels_name(mlp_kernels_current()),
           getenv("LOUPE_MLP_KERNELS") && *getenv("LOUPE_MLP_KERNELS") ? "LOUPE_MLP_KERNELS" : "automatic");
    for (int k = MLP_KERNELS_AVX512; k >= MLP_KERNELS_DENSE; k--)
        if (mlp_kernels_supported((mlp_kernels)k)) printf(" %s", mlp_kernels_name((mlp_kernels)k));
    printf(")\nblas: OpenBLAS %s\n", blas_env_kernel());
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: loupe <command> [options]   (loupe <command> --help for its options)\n"
               "       loupe --version\n\ncommands:\n");
    for (size_t i = 0; i < N_SUBCOMMANDS; i++)
        fprintf(f, "  %-12s %s\n", subcommands[i].name, subcommands[i].help);
}

int main(int argc, char **argv) {
    /* Before any BLAS call: may re-exec this process with a kernel choice. */
    blas_env_setup(argv);
    /* Before any thread trains or serves an MLP: LOUPE_MLP_KERNELS. */
    char err[256];
    if (mlp_kernels_from_env(err, sizeof err)) {
        fprintf(stderr, "loupe: %s\n", err);
        return 2;
    }

    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) return version();
    for (size_t i = 0; i < N_SUBCOMMANDS; i++)
        if (!strcmp(argv[1], subcommands[i].name))
            return subcommands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "loupe: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
