/* train_cli.h -- the training subcommands of `loupe`. */
#ifndef LOUPE_TRAIN_CLI_H
#define LOUPE_TRAIN_CLI_H

/* `loupe train-mlp [options]`. Returns the process exit status: 0 done,
 * 1 failed, 2 bad usage, 3 stopped on divergence (model folder still written). */
int train_mlp_main(int argc, char **argv);

/* `loupe eval MODEL_DIR [options]`: recompute metrics.json on the test set. */
int eval_main(int argc, char **argv);

/* `loupe split`: print a split's indices as JSON. */
int split_main(int argc, char **argv);

#endif
