/* utf8.c -- make a C string valid UTF-8 in place. */
#include "utf8.h"

/* Length of the well-formed sequence at s (1 to 4), or 0 if s starts none. */
static int seq_len(const unsigned char *s) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int n;
    unsigned lo = 0x80, hi = 0xbf; /* the allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) lo = 0xa0;      /* no overlong forms */
        else if (c == 0xed) hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) lo = 0x90;      /* no overlong forms */
        else if (c == 0xf4) hi = 0x8f; /* nothing past U+10FFFF */
    } else return 0;
    if (s[1] < lo || s[1] > hi) return 0; /* a NUL ends the check here too */
    for (int i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return n;
}

int utf8_seq_len(const char *s) { return seq_len((const unsigned char *)s); }

size_t utf8_sanitize(char *s) {
    size_t replaced = 0;
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        int n = seq_len(p);
        if (n) {
            p += n;
        } else {
            *p++ = '?';
            replaced++;
        }
    }
    return replaced;
}
