/* offline.c -- `loupe predict`, `loupe saliency`, `loupe visualize`: the API's operations on a model folder, no daemon. */
#include "clock.h"
#include "offline.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "lt.h"
#include "core_reg.h"
#include "core_ops.h"
#include "core_input.h"

#define MAX_ARGS 24
#define MAX_IMAGE_FILE (256u << 20)

/* One subcommand: its operation and the flags it takes (each the API's query key). */
typedef struct {
    const char *name;
    core_op op;
    const char *usage;
    const char *const *flags; /* "flag=key": --flag VALUE sets key; "flag=key:value": --flag alone sets key */
} offline_cmd;

static const char *const predict_flags[] = {"top-k=top_k", "invert=invert", "json=format:json", NULL};
static const char *const saliency_flags[] = {"target=target", "scale=scale", "overlay=overlay:1", "invert=invert",
                                             "json=format:json", NULL};
static const char *const visualize_flags[] = {"layer=layer", "filter=filter", "class=class", "l2=l2",
                                              "iterations=iterations", "every=every", "lr=lr", "seed=seed",
                                              "scale=scale", "invert=invert", "json=format:json", NULL};
static const char *const explain_flags[] = {"method=method", "target=target", "samples=samples", "noise=noise",
                                            "seed=seed", "steps=steps", "baseline=baseline", "layer=layer",
                                            "window=window", "stride=stride", "scale=scale", "overlay=overlay:1",
                                            "invert=invert", "json=format:json", NULL};

static const offline_cmd cmds[] = {
    {"predict", CORE_OP_PREDICT,
     "usage: loupe predict MODEL_DIR IMAGE [--top-k K] [--invert auto|true|false] [--out FILE]\n\n"
     "Classify IMAGE (PNG or JPEG) with the model folder MODEL_DIR (an MLP or a TorchScript CNN);\n"
     "writes the JSON of POST /v1/models/{m}/predict to FILE or stdout.\n",
     predict_flags},
    {"saliency", CORE_OP_SALIENCY,
     "usage: loupe saliency MODEL_DIR IMAGE [--target T] [--scale N] [--overlay] [--invert auto|true|false]\n"
     "                      [--out FILE.png | --json [--out FILE.json]]\n\n"
     "Vanilla-backprop saliency of IMAGE for class T (index or name; default the predicted class):\n"
     "the PNG heatmap or the JSON of POST /v1/models/{m}/saliency.\n",
     saliency_flags},
    {"visualize", CORE_OP_FILTERS,
     "usage: loupe visualize MODEL_DIR (--layer L --filter F | --class C [--l2 X]) [--image IMG]\n"
     "                       [--iterations N] [--every K] [--lr R] [--seed S] [--scale N]\n"
     "                       --out STRIP.png | --json [--out FILE.json]\n\n"
     "Activation maximisation of filter F of convolution L of a CNN's `features`, or class model\n"
     "visualisation of class C (index or name; a CNN or an MLP: the image raises C's score, with an L2\n"
     "penalty X on it, default 0.01), from a seeded random image (or from IMG): a PNG strip of the frames\n"
     "or the JSON of /v1/models/{m}/filters/{l}/{f} or /v1/models/{m}/classes/{c}/visualize.\n"
     "Defaults: 30 iterations, a frame every 5, lr 0.1, seed 0; at most 200 iterations.\n",
     visualize_flags},
    {"explain", CORE_OP_EXPLAIN,
     "usage: loupe explain MODEL_DIR IMAGE [--method M] [--target T] [--samples N] [--noise S] [--seed S]\n"
     "                     [--steps N] [--baseline black|zero] [--layer L] [--window N] [--stride N]\n"
     "                     [--scale N] [--overlay] [--invert auto|true|false]\n"
     "                     [--out FILE.png | --json [--out FILE.json]]\n\n"
     "Attribution of IMAGE's class T (default the predicted class) by method M: gradient (default),\n"
     "input_x_gradient, smoothgrad, integrated_gradients, guided_backprop, gradcam, guided_gradcam,\n"
     "occlusion. Writes the PNG heatmap or the JSON of POST /v1/models/{m}/explain (docs/api.md).\n",
     explain_flags},
};

typedef struct {
    const char *key[MAX_ARGS];
    const char *val[MAX_ARGS];
    int n;
} arg_set;

static const char *arg_get(void *ctx, const char *key) {
    arg_set *a = ctx;
    for (int i = 0; i < a->n; i++)
        if (!strcmp(a->key[i], key)) return a->val[i];
    return NULL;
}

/* Parse --flag VALUE per cmd->flags into args; MODEL_DIR, IMAGE, --out, --image, --torch-threads apart.
 * Returns 0 or -1 after a message on stderr. */
static int parse_args(const offline_cmd *cmd, int argc, char **argv, arg_set *args, char **keybuf, const char **pos,
                      int *npos, const char **out, const char **image, int *threads) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2)) {
            if (*npos == 2) {
                fprintf(stderr, "loupe %s: unexpected argument '%s'\n", cmd->name, a);
                return -1;
            }
            pos[(*npos)++] = a;
            continue;
        }
        const char *name = a + 2;
        int takes_value = 1;
        const char *key = NULL, *fixed = NULL;
        size_t kl = 0;
        for (const char *const *fl = cmd->flags; *fl; fl++) {
            const char *eq = strchr(*fl, '=');
            if (strlen(name) == (size_t)(eq - *fl) && !strncmp(*fl, name, (size_t)(eq - *fl))) {
                key = eq + 1;
                const char *colon = strchr(key, ':');
                kl = colon ? (size_t)(colon - key) : strlen(key);
                if (colon) {
                    fixed = colon + 1;
                    takes_value = 0;
                }
            }
        }
        int special = !strcmp(name, "out") || !strcmp(name, "torch-threads") ||
                      (cmd->op == CORE_OP_FILTERS && !strcmp(name, "image"));
        if (!key && !special) {
            fprintf(stderr, "loupe %s: unknown option '%s'\n%s", cmd->name, a, cmd->usage);
            return -1;
        }
        const char *v = fixed;
        if (takes_value) {
            if (i + 1 >= argc) {
                fprintf(stderr, "loupe %s: option %s needs a value\n", cmd->name, a);
                return -1;
            }
            v = argv[++i];
        }
        if (special) {
            if (!strcmp(name, "out")) *out = v;
            else if (!strcmp(name, "image")) *image = v;
            else *threads = atoi(v);
            continue;
        }
        if (args->n == MAX_ARGS) {
            fprintf(stderr, "loupe %s: too many options\n", cmd->name);
            return -1;
        }
        char *k = malloc(kl + 1);
        if (!k) return -1;
        memcpy(k, key, kl);
        k[kl] = 0;
        keybuf[args->n] = k;
        args->key[args->n] = k;
        args->val[args->n++] = v;
    }
    return 0;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    unsigned char *b = malloc(cap);
    while (b) {
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        if (cap >= MAX_IMAGE_FILE) {
            free(b);
            b = NULL;
            errno = EFBIG;
            break;
        }
        unsigned char *nb = realloc(b, cap * 2);
        if (!nb) free(b);
        b = nb;
        cap *= 2;
    }
    if (b && ferror(f)) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = n;
    return b;
}

static int write_out(const char *path, const core_out *out) {
    FILE *f = path && strcmp(path, "-") ? fopen(path, "wb") : stdout;
    if (!f) return -1;
    int ok = fwrite(out->body, 1, out->len, f) == out->len;
    if (f == stdout && !strcmp(out->content_type, "application/json")) ok = ok && fputc('\n', f) != EOF;
    if (f != stdout) ok = !fclose(f) && ok;
    else ok = !fflush(f) && ok;
    return ok ? 0 : -1;
}

/* The folder's name: its last path component. */
static const char *base_name(const char *dir, char *buf, size_t len) {
    snprintf(buf, len, "%s", dir);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    const char *s = strrchr(buf, '/');
    return s ? s + 1 : buf;
}

static int run_cmd(const offline_cmd *cmd, int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(cmd->usage, stdout);
        return 0;
    }
    arg_set args = {{0}, {0}, 0};
    char *keybuf[MAX_ARGS] = {0};
    const char *pos[2] = {0}, *out_path = NULL, *image = NULL;
    int npos = 0, threads = 1, rc = 2;
    core_model *m = NULL;
    unsigned char *bytes = NULL;
    core_input in = {0};
    core_out out = {0};
    core_fail f;
    if (parse_args(cmd, argc, argv, &args, keybuf, pos, &npos, &out_path, &image, &threads)) goto done;
    core_op op = cmd->op;
    if (op == CORE_OP_FILTERS && arg_get(&args, "class")) op = CORE_OP_CLASSVIZ;
    int want_pos = cmd->op == CORE_OP_FILTERS ? 1 : 2;
    if (npos != want_pos) {
        fprintf(stderr, "loupe %s: %s\n%s", cmd->name, npos < want_pos ? "missing arguments" : "too many arguments",
                cmd->usage);
        goto done;
    }
    if (op == CORE_OP_CLASSVIZ) {
        if (arg_get(&args, "layer") || arg_get(&args, "filter")) {
            fprintf(stderr, "loupe visualize: --class does not go with --layer or --filter\n%s", cmd->usage);
            goto done;
        }
    } else if (cmd->op == CORE_OP_FILTERS) {
        if (!arg_get(&args, "layer") || !arg_get(&args, "filter")) {
            fprintf(stderr, "loupe visualize: --layer and --filter (or --class) are required\n%s", cmd->usage);
            goto done;
        }
    } else {
        image = pos[1];
    }
    const char *fmt = arg_get(&args, "format");
    int as_json = fmt && !strcmp(fmt, "json");
    if (cmd->op != CORE_OP_PREDICT && !as_json && !out_path) {
        fprintf(stderr, "loupe %s: say where the PNG goes (--out FILE.png), or ask for --json\n", cmd->name);
        goto done;
    }
    rc = 1;
    /* One intra-op thread by default, as the daemon; LOUPE_TORCH_THREADS or --torch-threads to change. */
    const char *te = getenv("LOUPE_TORCH_THREADS");
    if (te && threads == 1) threads = atoi(te);
    char err[CORE_ERR_LEN];
    if (lt_set_threads(threads > 0 ? threads : 1, 1, err, sizeof err))
        fprintf(stderr, "loupe %s: libtorch threads: %s\n", cmd->name, err);

    char nbuf[4096];
    m = core_model_load(pos[0], base_name(pos[0], nbuf, sizeof nbuf), err, sizeof err);
    if (!m) {
        fprintf(stderr, "loupe %s: %s: %s\n", cmd->name, pos[0], err);
        goto done;
    }
    double t0 = clock_now();
    core_opts o;
    const char *path_arg = op == CORE_OP_CLASSVIZ ? arg_get(&args, "class") : arg_get(&args, "layer");
    if (core_opts_parse(m, op, path_arg, arg_get(&args, "filter"), arg_get, &args, &o, &f)) {
        fprintf(stderr, "loupe %s: %s\n", cmd->name, f.msg);
        rc = 2;
        goto done;
    }
    if (image) {
        img_invert inv;
        if (core_input_parse_invert(arg_get(&args, "invert"), &inv, &f)) {
            fprintf(stderr, "loupe %s: --%s\n", cmd->name, f.msg);
            rc = 2;
            goto done;
        }
        size_t len = 0;
        if (!(bytes = read_file(image, &len))) {
            fprintf(stderr, "loupe %s: %s: %s\n", cmd->name, image, strerror(errno));
            goto done;
        }
        /* The API's own parser: PNG, JPEG, or a JSON body ({"pixels"} or {"image"}), sniffed. */
        img_limits lim = img_default_limits();
        if (core_input_from_body(m, &lim, NULL, 0, bytes, len, inv, &in, &f)) {
            fprintf(stderr, "loupe %s: %s: %s\n", cmd->name, image, f.msg);
            goto done;
        }
    }
    if (core_op_run(m, op, &o, image ? &in : NULL, t0, &out, &f)) {
        fprintf(stderr, "loupe %s: %s\n", cmd->name, f.msg);
        rc = core_err_is_input(f.kind) ? 2 : 1;
        goto done;
    }
    if (write_out(out_path, &out)) {
        fprintf(stderr, "loupe %s: cannot write %s: %s\n", cmd->name, out_path ? out_path : "stdout", strerror(errno));
        goto done;
    }
    if (out_path && strcmp(out_path, "-")) fprintf(stderr, "wrote %s (%zu bytes)\n", out_path, out.len);
    rc = 0;
done:
    for (int i = 0; i < MAX_ARGS; i++) free(keybuf[i]);
    free(out.body);
    free(bytes);
    core_input_free(&in);
    core_model_release(m);
    return rc;
}

int cli_predict_main(int argc, char **argv) {
    return run_cmd(&cmds[0], argc, argv);
}

int cli_saliency_main(int argc, char **argv) {
    return run_cmd(&cmds[1], argc, argv);
}

int cli_visualize_main(int argc, char **argv) {
    return run_cmd(&cmds[2], argc, argv);
}

int cli_explain_main(int argc, char **argv) {
    return run_cmd(&cmds[3], argc, argv);
}
