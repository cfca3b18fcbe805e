/* fuzz_body.c -- libFuzzer target: image route request bodies by content type (core_input.c).
 *
 * Input: byte 0 picks the content type (and whether the body came as a
 * multipart `image` field), byte 1 the model geometry and ?invert=, the rest
 * is the body. Reaches JSON {"pixels": ...} (flat and rows), JSON {"image":
 * base64} and data: URLs, the sniffing of untyped bodies, the media-type
 * checks, PNG/JPEG through the decoders, the connection thread's header probe
 * (core_input_pixels) and core_base64_decode on its own. */
#include "fuzz_common.h"
#include "fuzz_model.h"

#include "core_input.h"
#include "img.h"

static const char *const content_types[] = {
    "application/json",
    "application/json; charset=utf-8",
    "application/vnd.loupe+json",
    NULL,
    "application/octet-stream",
    "application/x-www-form-urlencoded",
    "image/png",
    "image/jpeg",
    "text/plain",
    "image/png;x", /* media_is boundaries */
    "application/+json",
};
#define N_TYPES (sizeof content_types / sizeof content_types[0])

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    unsigned sel = data[0], opt = data[1];
    data += 2;
    size -= 2;
    /* One selector in 16 exercises base64 alone (the whole rest is the text). */
    if (sel % 16 == 15) {
        size_t n = 0;
        int bad = 0;
        unsigned char *b = core_base64_decode((const char *)data, size, &n, &bad);
        if (b && n > size / 4 * 3 + 3) __builtin_trap();
        if (!b && !bad) return 0; /* out of memory */
        free(b);
        return 0;
    }
    int multipart = sel / 16 % 4 == 3;
    const char *ct = multipart ? "multipart/form-data; boundary=x" : content_types[sel % N_TYPES];
    core_model m;
    fuzz_model_init(&m, opt % 3);
    img_invert inv = (opt / 3) % 3 == 0 ? IMG_INVERT_AUTO : (opt / 3) % 3 == 1 ? IMG_INVERT_TRUE : IMG_INVERT_FALSE;

    (void)core_input_pixels(ct, multipart, data, size);

    img_limits lim = img_default_limits();
    lim.max_pixels = 4u * 1000u * 1000u;
    core_input in;
    core_fail f;
    if (!core_input_from_body(&m, &lim, ct, multipart, data, size, inv, &in, &f)) {
        for (int i = 0; i < m.width * m.height; i++)
            if (!(in.pixels[i] >= 0.0f && in.pixels[i] <= 1.0f)) __builtin_trap();
        core_input_free(&in);
    } else if (!f.msg[0]) {
        __builtin_trap(); /* every refusal says why */
    }
    return 0;
}
