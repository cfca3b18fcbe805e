/* srv_input.h -- an image route's body (PNG, JPEG, multipart, JSON pixels or base64) brought to a model's input. */
#ifndef LOUPE_SRV_INPUT_H
#define LOUPE_SRV_INPUT_H

#include <stddef.h>
#include <stdint.h>

#include "reg.h"
#include "srv_http.h"

typedef struct {
    float *x;          /* [channels*height*width] the model's input: (pixel - mean) / std */
    float *pixels;     /* [height*width] gray in [0,1] after any inversion (overlays) */
    int width, height;
    int inverted;      /* 1 when the image was inverted */
    double decode_ms;  /* decoding and preprocessing */
} srv_input;

/* Read r's body as an image for model m, honouring ?invert=. Returns 0 and
 * fills in (free with srv_input_free), or -1 after answering r with the error. */
int srv_input_read(srv_req *r, const reg_model *m, srv_input *in);
void srv_input_free(srv_input *in);

/* Decode standard or URL-safe base64, ignoring whitespace; padding optional.
 * Returns a malloc'd buffer and its length, or NULL on a bad character,
 * a bad length or allocation failure (*bad = 1 for the first two). */
unsigned char *srv_base64_decode(const char *s, size_t n, size_t *out_len, int *bad);

#endif
