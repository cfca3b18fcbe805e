/* img.h -- bounded image decoding (PNG, JPEG), preprocessing to a model's input, PNG encoding and heatmaps. */
#ifndef LOUPE_IMG_H
#define LOUPE_IMG_H

#include <stddef.h>
#include <stdint.h>

/* Why a decode or encode failed; the server maps each kind to one HTTP status. */
typedef enum {
    IMG_OK = 0,
    IMG_ERR_EMPTY = -1,       /* no bytes (400) */
    IMG_ERR_FORMAT = -2,      /* not a PNG or JPEG by its signature (415) */
    IMG_ERR_CORRUPT = -3,     /* truncated or corrupted data (400) */
    IMG_ERR_DIMENSIONS = -4,  /* width or height of zero (400) */
    IMG_ERR_TOO_LARGE = -5,   /* header says more pixels than allowed (413) */
    IMG_ERR_NOMEM = -6,       /* allocation failed (500) */
    IMG_ERR_ARG = -7          /* bad argument from the caller (500) */
} img_status;

/* A short stable name for a status ("ok", "empty", "format", "corrupt",
 * "dimensions", "too_large", "nomem", "arg"; "unknown" otherwise), for logs and
 * error slugs. The string is static. */
const char *img_status_name(int status);

/* Limits checked before any pixel buffer is allocated. */
typedef struct {
    uint64_t max_pixels;      /* width * height from the header; default 40,000,000 */
} img_limits;

/* The default limits (max_pixels 40,000,000). */
img_limits img_default_limits(void);

/* A decoded image: 8-bit, 1 (gray) or 3 (RGB) channels, row-major, interleaved.
 * Plain data; free pixels with img_free. */
typedef struct {
    int width, height, channels;
    uint8_t *pixels;          /* [height, width, channels] */
} img_image;

/* Free im->pixels and zero *im. Accepts NULL and an already freed image. */
void img_free(img_image *im);

/* Decode PNG or JPEG from memory; the format is chosen from the signature.
 * PNG: any colour type and bit depth (16-bit is scaled to 8), palette, tRNS,
 *   interlaced. Alpha is composited over black (a transparent pixel becomes 0,
 *   the background of Fashion-MNIST); gray and gray+alpha give 1 channel,
 *   everything else 3. Ancillary chunks other than tRNS are ignored (no gamma
 *   or ICC handling). A file may end after its last image row without IEND.
 * JPEG: baseline or progressive (at most 500 scans), gray gives 1 channel, YCbCr
 *   and RGB give 3, CMYK/YCCK (taken as Adobe's inverted CMYK) give 3. Any
 *   libjpeg warning (truncated or corrupt data) fails the decode.
 * The pixel count from the header is checked against lim (NULL: defaults)
 * before any pixel buffer is allocated; decode time is bounded by it and by
 * the input size. On success returns 0 and *out owns its pixels (img_free).
 * On failure returns a negative img_status, leaves *out zeroed, and writes one
 * sentence into err (may be NULL when errlen is 0). */
int img_decode(const uint8_t *buf, size_t len, const img_limits *lim,
               img_image *out, char *err, size_t errlen);

/* The width and height a PNG or JPEG header declares, read without decoding
 * (PNG: IHDR; JPEG: the first SOFn marker within buf). Returns 0, or -1 when
 * buf is neither or its header is not (yet) in buf. */
int img_probe(const uint8_t *buf, size_t len, uint32_t *width, uint32_t *height);

typedef enum { IMG_INVERT_AUTO, IMG_INVERT_TRUE, IMG_INVERT_FALSE } img_invert;

/* Bring any decoded image to a w x h grayscale float image in [0,1]:
 * luminance (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B; channels 2 and 4 are
 * taken as gray+alpha and RGBA and composited over black), area-averaging
 * resize (an exact box filter with fractional coverage, for down- and
 * up-scaling; aspect not kept: the whole image maps onto the output), then
 * inversion per `inv`. Auto inverts when the mean of the border pixels of the
 * resized image (its outermost rows and columns) is above 0.5, i.e. when the
 * background is light. *inverted (may be NULL) reports what was done.
 * Returns 0, IMG_ERR_ARG for a bad image or size, or IMG_ERR_NOMEM; out is
 * owned by the caller and left unspecified on failure. */
int img_to_gray(const img_image *im, int w, int h, img_invert inv,
                float *out /* [h, w] */, int *inverted);

/* Encode 8-bit pixels [height, width, channels] as PNG into a malloc'd buffer
 * (*png, *png_len), owned by the caller (free()). channels: 1 gray, 2 gray+alpha,
 * 3 RGB, 4 RGBA. Returns 0, IMG_ERR_ARG or IMG_ERR_NOMEM; on failure *png is
 * NULL and *png_len 0. */
int img_encode_png(const uint8_t *pixels, int width, int height, int channels,
                   uint8_t **png, size_t *png_len);

/* Map v in [0,1] to an RGB colour of a perceptual colormap (viridis-like: dark
 * purple at 0 through blue and green to yellow at 1; luminance rises with v).
 * v is clamped; NaN maps like 0. */
void img_colormap(float v, uint8_t rgb[3]);

/* Heatmap of a [h, w] map in [0,1] as RGB [h*scale, w*scale, 3], nearest-neighbour
 * enlarged by scale (>= 1). When base (a [h, w] gray image in [0,1]) is given, the
 * heatmap is blended over it with weight alpha in [0,1]:
 * out = alpha * colour + (1 - alpha) * gray. Without base, alpha is ignored.
 * Values are clamped. rgb is the caller's buffer; with a NULL map or rgb, a size
 * below 1 or a product that overflows, nothing is written. */
void img_heatmap(const float *map, const float *base, int w, int h, int scale,
                 float alpha, uint8_t *rgb);

#endif
