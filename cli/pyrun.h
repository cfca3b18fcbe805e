/* pyrun.h -- `loupe train-vgg`, `loupe reproduce` and `loupe sanity-check`: Python scripts with a Python that has torch. */
#ifndef LOUPE_PYRUN_H
#define LOUPE_PYRUN_H

/* Each replaces the process with its script (training/train_vgg.py, training/reproduce.py,
 * training/sanity_check.py) run by LOUPE_PYTHON, /usr/bin/python3 or the python3 on PATH, the
 * first that imports torch, with the rest of argv; reproduce.py and sanity_check.py are also
 * told `--loupe` this binary unless argv says --loupe. Returns only on failure: 2 when there is
 * no such Python or no scripts (a message on stderr says which), 1 when the exec failed. */
int train_vgg_main(int argc, char **argv);
int reproduce_main(int argc, char **argv);
int sanity_check_main(int argc, char **argv);

#endif
