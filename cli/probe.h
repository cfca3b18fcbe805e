/* probe.h -- `loupe probe URL`: one HTTP GET, exit status from the answer's status. */
#ifndef LOUPE_PROBE_H
#define LOUPE_PROBE_H

/* Returns the process exit status: 0 on a 2xx answer, 1 on another status or
 * no answer within --timeout, 2 on a bad command line. */
int probe_main(int argc, char **argv);

#endif
