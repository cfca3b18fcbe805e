/* errbuf.h -- write a one-sentence error message into a caller-supplied buffer. */
#ifndef LOUPE_ERRBUF_H
#define LOUPE_ERRBUF_H

#include <stddef.h>

/* printf into err (errlen bytes, always NUL-terminated, truncated if long).
 * Does nothing when err is NULL or errlen is 0. */
void errbuf_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
