/* utf8.h -- make a C string valid UTF-8 in place, for JSON that must carry what a client sent. */
#ifndef LOUPE_UTF8_H
#define LOUPE_UTF8_H

#include <stddef.h>

/* Replace each byte of s that does not belong to a well-formed UTF-8 sequence
 * (stray continuation bytes, overlong forms, surrogates, code points past
 * U+10FFFF, a sequence cut short, by the buffer's end or otherwise) with '?',
 * in place; valid text is left as it is. Returns how many bytes were replaced. */
size_t utf8_sanitize(char *s);

/* Length (1 to 4) of the well-formed UTF-8 sequence s starts, or 0 when it
 * starts none (a NUL is a sequence of 1). */
int utf8_seq_len(const char *s);

#endif
