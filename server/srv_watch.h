/* srv_watch.h -- `loupe serve --watch`: a cheap stamp of the model store that changes when a reload would load something new. */
#ifndef LOUPE_SRV_WATCH_H
#define LOUPE_SRV_WATCH_H

#include <stddef.h>
#include <stdint.h>

/* A 64-bit stamp of the store `dir`: for every folder whose name does not
 * start with '.' (core_reg_reload skips those: the writers' temporary folders,
 * the trainers' status files), its name and inode, and the name, size, inode
 * and modification time (ns) of each regular file directly in it (model.json,
 * the weights, metrics.json...). No file is opened or read: a folder replaced
 * by a rename, a file rewritten, added or removed, a folder added or removed
 * all change it (up to a 2^-64 collision). The entries are combined by a sum,
 * so readdir's order does not matter.
 * Returns 0 with *stamp set, or -1 with a message in err when dir cannot be
 * listed (*stamp untouched). A folder that vanishes mid-scan counts as absent. */
int srv_watch_stamp(const char *dir, uint64_t *stamp, char *err, size_t errlen);

#endif
