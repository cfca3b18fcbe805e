/* srv_input.h -- an image route's body (PNG, JPEG, multipart, JSON pixels or base64) brought to a model's input. */
#ifndef LOUPE_SRV_INPUT_H
#define LOUPE_SRV_INPUT_H

#include <stddef.h>
#include <stdint.h>

#include "reg.h"
#include "srv_http.h"

typedef struct {
    float *x;          /* [channels*height*width] the model's input: (pixel - mean) / std */
    float *pixels;     /* [height*width] gray in [0,1] at the model's input size, after any
                          inversion, padding or crop (overlays) */
    int width, height;
    int inverted;      /* 1 when the image was inverted */
    double decode_ms;  /* decoding and preprocessing */
} srv_input;

/* Read r's body as an image for model m, honouring ?invert=. Returns 0 and
 * fills in (free with srv_input_free), or -1 after answering r with the error. */
int srv_input_read(srv_req *r, const reg_model *m, srv_input *in);
void srv_input_free(srv_input *in);

/* The same without HTTP (the offline CLI): decode an encoded PNG/JPEG and
 * bring it to m's input as the routes do. `in` must come from
 * srv_input_alloc; srv_input_normalise then fills in->x. Returns 0, or -1
 * with the error's kind and a sentence in msg (in keeps its buffers). */
int srv_input_decode(const reg_model *m, const img_limits *lim, const unsigned char *buf, size_t len,
                     img_invert inv, srv_input *in, srv_err_kind *kind, char *msg, size_t msglen);
/* Zero *in and allocate its buffers for m; 0 or -1 (out of memory, nothing held). */
int srv_input_alloc(const reg_model *m, srv_input *in);
/* in->x from in->pixels: repeated to m's channels, (pixel - mean[c]) / std[c]. */
void srv_input_normalise(const reg_model *m, srv_input *in);

/* Decode standard or URL-safe base64, ignoring whitespace; padding optional.
 * Returns a malloc'd buffer and its length, or NULL on a bad character,
 * a bad length or allocation failure (*bad = 1 for the first two). */
unsigned char *srv_base64_decode(const char *s, size_t n, size_t *out_len, int *bad);

#endif
