/* fuzz_img.c -- libFuzzer target for the img decoders: img_decode, then img_to_gray on success.
 *
 * Build and run (clang only; the seed corpus is written by the unit test):
 *   CC=clang cmake -S . -B build-fuzz -DLOUPE_FUZZ=ON -DLOUPE_WITH_TORCH=OFF
 *   cmake --build build-fuzz -j2 --target fuzz_img test_img
 *   build-fuzz/core/test_img --write-corpus build-fuzz/img-corpus
 *   build-fuzz/core/fuzz_img -max_total_time=60 -rss_limit_mb=2048 build-fuzz/img-corpus
 * img.c is compiled into this target with FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION,
 * which makes libpng ignore CRCs so the fuzzer can reach the image data. */
#include "img.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A smaller pixel limit than the daemon's keeps each run fast; the
     * limit logic itself is the same. */
    img_limits lim = img_default_limits();
    img_image im;
    char err[256];
    float out[28 * 28];
    int inverted;

    lim.max_pixels = 4u * 1000u * 1000u;
    if (img_decode(data, size, &lim, &im, err, sizeof err) == 0) {
        img_to_gray(&im, 28, 28, IMG_INVERT_AUTO, out, &inverted);
        img_free(&im);
    }
    return 0;
}
