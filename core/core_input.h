/* core_input.h -- an image body (PNG, JPEG, JSON pixels or base64) brought to a model's input, with no HTTP in it. */
#ifndef LOUPE_CORE_INPUT_H
#define LOUPE_CORE_INPUT_H

#include <stddef.h>
#include <stdint.h>

#include "core_reg.h"
#include "core_err.h"
#include "img.h"

typedef struct {
    float *x;          /* [channels*height*width] the model's input: (pixel - mean) / std */
    float *pixels;     /* [height*width] gray in [0,1] at the model's input size, after any
                          inversion, padding or crop (overlays) */
    int width, height;
    int inverted;      /* 1 when the image was inverted */
    double decode_ms;  /* decoding and preprocessing */
} core_input;

/* `invert` as the API and the CLI take it: NULL or "auto", true/1/yes, false/0/no
 * (case-insensitive). Returns 0, or -1 with f (400) on anything else. */
int core_input_parse_invert(const char *v, img_invert *inv, core_fail *f);

/* A request body as an image for m: multipart (the `image` field's bytes),
 * JSON ({"pixels": ...} or {"image": base64}) by content type ct, PNG/JPEG,
 * or sniffed when ct says nothing useful. Returns 0 with in filled (free with
 * core_input_free), or -1 with f (in holds nothing). */
int core_input_from_body(const core_model *m, const img_limits *lim, const char *ct, int multipart,
                         const unsigned char *body, size_t len, img_invert inv, core_input *in, core_fail *f);
void core_input_free(core_input *in);

/* What decoding the body will cost, read from headers only: the pixel count
 * its PNG/JPEG header declares (also inside multipart, and inside a JSON
 * {"image": base64} of at most 64 KiB, parsed as the worker parses it);
 * UINT64_MAX for a larger JSON body, and for a PNG/JPEG whose header cannot
 * be read (fail closed); 0 when it declares nothing (JSON pixels, not an
 * image: cheap either way). Cheap enough for a connection thread. */
uint64_t core_input_pixels(const char *ct, int multipart, const unsigned char *body, size_t len);

/* Decode an encoded PNG/JPEG and
 * bring it to m's input as the routes do. `in` must come from
 * core_input_alloc; core_input_normalise then fills in->x. Returns 0, or -1
 * with the error's kind and a sentence in msg (in keeps its buffers). */
int core_input_decode(const core_model *m, const img_limits *lim, const unsigned char *buf, size_t len,
                     img_invert inv, core_input *in, core_err_kind *kind, char *msg, size_t msglen);
/* Zero *in and allocate its buffers for m; 0 or -1 (out of memory, nothing held). */
int core_input_alloc(const core_model *m, core_input *in);
/* in->x from in->pixels: repeated to m's channels, (pixel - mean[c]) / std[c]. */
void core_input_normalise(const core_model *m, core_input *in);

/* Decode standard or URL-safe base64, ignoring whitespace; padding optional.
 * Returns a malloc'd buffer and its length, or NULL on a bad character,
 * a bad length or allocation failure (*bad = 1 for the first two). */
unsigned char *core_base64_decode(const char *s, size_t n, size_t *out_len, int *bad);

#endif
