/* srv_static.h -- static files under --static (at /) and --docs (at /docs/), with no way out of either folder. */
#ifndef LOUPE_SRV_STATIC_H
#define LOUPE_SRV_STATIC_H

#include <stddef.h>
#include <sys/stat.h>

#include "srv_http.h"

/* Resolve a decoded request path to a regular file inside the static (or, for
 * /docs/..., the docs) folder. Segments that are empty or start with '.', and
 * anything whose real path (symlinks resolved) leaves the folder, are refused.
 * Returns 0 with the real path in out and its stat in st (each when non-NULL), or -1. */
int srv_static_resolve(const srv_ctx *ctx, const char *path, char *out, size_t outlen, struct stat *st);

/* Open real, a path that a resolution checked and found to be seen, and only
 * that file: O_NOFOLLOW refuses a last component swapped for a symlink since,
 * O_NONBLOCK keeps a FIFO swapped in from blocking the thread, and the opened
 * file must be a regular file with seen's device and inode. Returns the fd
 * with its fstat in st, or -1 (errno ENOENT when it is another file now). */
int srv_open_resolved(const char *real, const struct stat *seen, struct stat *st);

/* Answer r with the file its path names (404 when there is none). */
void srv_static_serve(srv_req *r);

/* Content type by file extension; "application/octet-stream" when unknown. */
const char *srv_static_content_type(const char *path);

#endif
