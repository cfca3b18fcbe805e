/* srv_training.h -- GET /v1/training: the trainings in progress, from the status files trainers write in the store. */
#ifndef LOUPE_SRV_TRAINING_H
#define LOUPE_SRV_TRAINING_H

#include <jansson.h>

#include "srv_http.h"

/* Status files live in <store>/.training/<name>.json: a hidden folder, so the
 * registry and --watch never look at it (training/train_vgg.py --status). */
#define SRV_TRAINING_DIR ".training"

/* A status file's age past which its trainer is taken for dead (it rewrites
 * the file every few seconds and removes it when it ends). */
#define SRV_TRAINING_STALE_S 600.0

/* GET /v1/training: {"trainings": [{name, phase, epoch, epochs, progress,
 * eta_seconds, elapsed_seconds, updated_seconds_ago}]}, sorted by name; an
 * empty list when the store has no .training folder. */
void srv_h_training(srv_req *r);

/* One status file's document as the route's entry, checked field by field
 * (pure, for tests): name a string of 1..255 printable ASCII characters;
 * phase "training", "testing" or "exporting"; epoch an integer >= 0; epochs an
 * integer >= 1 or null; progress a number in [0,1]; eta_seconds a number >= 0
 * or null; started and updated Unix times (seconds). now is the current Unix
 * time: eta_seconds is brought forward by the file's age and elapsed_seconds
 * counted from started. Returns a new object, or NULL when a field is missing
 * or wrong, the file is older than SRV_TRAINING_STALE_S, or out of memory. */
json_t *srv_training_entry(const json_t *status, double now);

#endif
