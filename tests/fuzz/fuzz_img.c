/* fuzz_img.c -- libFuzzer target: PNG and JPEG decoding (img_decode, img_probe) and preprocessing to a model's input.
 *
 * The input is an image file as a client uploads it. Its last byte (an IEND
 * CRC or a JPEG EOI, which the decoders do not need) picks the model
 * geometry (area 28x28, pad to 32x32, resize and crop) and the inversion, so
 * one corpus reaches every path of core_input_decode: img_decode, img_to_gray
 * at the source size, then place(). img.c is built with
 * FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION (LOUPE_FUZZ), which makes libpng
 * ignore CRCs so the fuzzer can reach the image data. */
#include "fuzz_common.h"
#include "fuzz_model.h"

#include "core_input.h"
#include "img.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!size) return 0;
    uint8_t sel = data[size - 1];
    core_model m;
    fuzz_model_init(&m, sel % 3);
    img_invert inv = (sel / 3) % 3 == 0 ? IMG_INVERT_AUTO : (sel / 3) % 3 == 1 ? IMG_INVERT_TRUE : IMG_INVERT_FALSE;

    uint32_t w, h;
    (void)img_probe(data, size, &w, &h);

    /* A smaller pixel limit than the daemon's keeps each run fast; the limit
     * logic itself is the same. */
    img_limits lim = img_default_limits();
    lim.max_pixels = 4u * 1000u * 1000u;
    core_input in;
    core_err_kind kind;
    char msg[256];
    if (core_input_alloc(&m, &in)) return 0;
    if (!core_input_decode(&m, &lim, data, size, inv, &in, &kind, msg, sizeof msg)) {
        core_input_normalise(&m, &in);
        /* Preprocessing keeps gray values in [0,1], whatever the image. */
        for (int i = 0; i < m.width * m.height; i++)
            if (!(in.pixels[i] >= 0.0f && in.pixels[i] <= 1.0f)) __builtin_trap();
    }
    core_input_free(&in);
    return 0;
}
