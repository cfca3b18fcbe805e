/* offline.h -- the offline subcommands: what the image routes do, on a model folder and a file. */
#ifndef LOUPE_CLI_OFFLINE_H
#define LOUPE_CLI_OFFLINE_H

/* `loupe predict|saliency|visualize ...` (argv[0] is the subcommand). They
 * write the same JSON or PNG as the routes. Return the exit status: 0, 2 for
 * bad usage or a bad parameter, 1 for a model or file that cannot be used. */
int cli_predict_main(int argc, char **argv);
int cli_saliency_main(int argc, char **argv);
int cli_visualize_main(int argc, char **argv);
int cli_explain_main(int argc, char **argv);

#endif
