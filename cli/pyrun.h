/* pyrun.h -- `loupe train-vgg` and `loupe reproduce`: the Python trainers with a Python that has torch. */
#ifndef LOUPE_PYRUN_H
#define LOUPE_PYRUN_H

/* Each replaces the process with the trainer (training/train_vgg.py, training/reproduce.py)
 * run by LOUPE_PYTHON, /usr/bin/python3 or the python3 on PATH, the first that imports torch,
 * with the rest of argv. Returns only on failure: 2 when there is no such Python or no
 * trainers (a message on stderr says which), 1 when the exec failed. */
int train_vgg_main(int argc, char **argv);
int reproduce_main(int argc, char **argv);

#endif
