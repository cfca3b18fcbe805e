"""A training's progress in a small JSON file that `loupe serve` reads.

GET /v1/training (server/srv_training.c) lists the files of <store>/.training/:
a hidden folder, so the registry and --watch never look at it. The file is
replaced in one rename (never seen half-written), rewritten at most every few
seconds, and removed when the training ends, however it ends; a file the daemon
finds untouched for 10 minutes is taken for a dead trainer's and left out.
"""

import json
import math
import os
import time


class Status:
    """The status file of one training (``path``), rank 0 only.

    ``update`` takes the schedule's progress in [0, 1] (steps done over steps,
    or time spent over the budget, whichever is further along) and estimates
    the time left from the time spent so far, plus ``tail_s``: the final test
    evaluation and the export, which the caller estimates from its validation
    passes.
    """

    def __init__(self, path, name, epochs, every=2.0, timed=False):
        self.path = path
        self.name = name
        self.epochs = epochs  # planned; None: the clock alone ends it
        self.timed = timed  # a time budget may end it before self.epochs
        self.every = every
        self.started = time.time()
        self.last = 0.0
        self.tail_s = 0.0
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def update(self, epoch, progress, phase="training", force=False,
                epochs_done=None):
        """``epochs_done``: epochs done so far, fractional; with a time
        budget the number of epochs it will reach is estimated from it."""
        now = time.time()
        if not force and now - self.last < self.every:
            return
        self.last = now
        spent = now - self.started
        eta = None
        if phase == "training" and progress > 0.01:
            eta = spent * (1.0 - progress) / progress + self.tail_s
        elif phase != "training":
            eta = self.tail_s
        epochs = self.epochs
        if self.timed and epochs_done is not None and progress > 0.05:
            est = max(epoch, math.ceil(epochs_done / progress - 0.05))
            epochs = min(est, epochs) if epochs else est
        elif phase != "training":
            epochs = epoch
        doc = {"name": self.name, "phase": phase, "epoch": epoch,
               "epochs": epochs, "progress": round(min(max(progress, 0.0), 1.0), 4),
               "eta_seconds": None if eta is None else round(eta, 1),
               "started": self.started, "updated": now, "pid": os.getpid()}
        tmp = os.path.join(os.path.dirname(self.path),
                           ".%s.tmp-%d" % (os.path.basename(self.path), os.getpid()))
        try:
            with open(tmp, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, self.path)
        except OSError:
            pass  # progress is a courtesy: a full disk must not end the training

    def close(self):
        """Remove the file: the training ended (written, failed or killed)."""
        try:
            os.remove(self.path)
        except OSError:
            pass
