/* fuzz_model.h -- core_model structs built in memory for the fuzz targets, as the registry fills them. */
#ifndef LOUPE_FUZZ_MODEL_H
#define LOUPE_FUZZ_MODEL_H

#include <string.h>

#include "core_reg.h"

/* The class names of the models below (Fashion-MNIST's). */
static const char *const fuzz_classes[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

/* The three input geometries model.json allows, as the registry would fill
 * them, without loading anything: 0 an MLP's 28x28 area average, 1 a CNN's
 * 28x28 padded to 32x32 (3 channels), 2 a CNN's resize to 36 and 32x32 crop. */
static inline void fuzz_model_init(core_model *m, int geometry) {
    memset(m, 0, sizeof *m);
    m->name = (char *)"fuzz";
    m->kind = (char *)(geometry ? "torchscript" : "mlp");
    m->n_classes = 10;
    m->classes = (char **)fuzz_classes;
    m->channels = geometry ? 3 : 1;
    m->width = m->height = geometry ? 32 : 28;
    m->src_w = m->src_h = 28;
    m->resize = geometry == 1 ? CORE_RESIZE_PAD : geometry == 2 ? CORE_RESIZE_CROP : CORE_RESIZE_AREA;
    m->resize_to = geometry == 2 ? 36 : 0;
    for (int c = 0; c < m->channels; c++) {
        m->mean_c[c] = 0.286f;
        m->std_c[c] = 0.353f;
    }
    m->mean = m->mean_c[0];
    m->std = m->std_c[0];
}

#endif
