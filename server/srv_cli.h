/* srv_cli.h -- `loupe serve`: the daemon's entry point. */
#ifndef LOUPE_SRV_CLI_H
#define LOUPE_SRV_CLI_H

/* Run the daemon until SIGTERM/SIGINT, then drain. argv[0] is "serve".
 * Returns the process exit status: 0 after a clean drain, 2 on bad usage,
 * 1 when it cannot start. */
int srv_serve_main(int argc, char **argv);

#endif
