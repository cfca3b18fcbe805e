/* core_ops_util.h -- helpers the operations share inside core (core_ops.c, core_explain.c): option parsing, encoding. */
#ifndef LOUPE_CORE_OPS_UTIL_H
#define LOUPE_CORE_OPS_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core_ops.h"

/* Largest PNG an option may ask for, in pixels. */
#define CORE_MAX_PNG_PIXELS (16u << 20)

/* A non-negative decimal integer up to 1e6; -1 when s is not one. */
long core_parse_uint(const char *s);
/* "0/false/no" or absent: 0; "1/true/yes" or empty: 1; 0, or -1 for anything else. */
int core_parse_bool(const char *s, int *out);
/* A class by index ("3") or by name ("Sneaker", case-insensitive); -1 if neither. */
int core_parse_target(const core_model *m, const char *s);
/* format and scale into o; 0 or -1 with f (400). */
int core_parse_output(core_arg_fn arg, void *ctx, core_opts *o, core_fail *f);
/* A seed: a whole number in [0, 2^63-1] (echoed exactly as a JSON integer); 0 or -1 with f (400). */
int core_parse_seed(const char *s, uint64_t *out, core_fail *f);
/* The Adam settings of the filter route (iterations, every, lr, seed) into o->viz; 0 or -1 with f. */
int core_parse_viz(core_arg_fn arg, void *ctx, core_opts *o, core_fail *f);

/* doc as compact JSON into out (doc is released); 0 or -1 with f. */
int core_out_json(json_t *doc, core_out *out, core_fail *f);
/* rgb [h, w, 3] as a PNG into out; 0 or -1 with f. */
int core_out_png(const uint8_t *rgb, int w, int h, core_out *out, core_fail *f);
/* Pixels [C, h, w] in [0,1] into rgb [rows, stride] at (x0, y0), each a scale x scale block. */
void core_blit(const float *px, int c, int w, int h, int scale, uint8_t *rgb, size_t stride, int x0, int y0);
/* One image [C, h, w] in [0,1] as a base64 PNG enlarged by scale (malloc'd), or NULL. */
char *core_png_b64(const float *px, int c, int w, int h, int scale);
int core_argmax(const float *v, int n);
/* map [n] (non-negative) to [0,1] by its 99th percentile (the maximum when that is 0), clipped; returns the raw
 * value that maps to 1 (0 for an all-zero map), or -1 when out of memory. Non-finite values become 0. */
double core_normalise_p99(float *map, int n);
/* map [plane] = |attr [channels, plane]| summed over channels, normalised as core_normalise_p99 (its return). */
double core_abs_map(const float *attr, int channels, int plane, float *map);
/* v [h, w] as a JSON array of rows (-0 written as 0); NULL when out of memory. */
json_t *core_rows_json(const float *v, int h, int w);
/* The heatmap PNG of map [h, w] in [0,1] (over the input when o->overlay), enlarged by o->scale. */
int core_heatmap_png(const float *map, const core_opts *o, const core_input *in, int w, int h, core_out *out,
                     core_fail *f);

/* 0 when a strip of n frames of w x h enlarged by scale is small enough for a PNG, else -1 with f (400). */
int core_strip_check(int n, int w, int h, int scale, core_fail *f);
/* Frames [n, C, h, w] in [0,1] side by side as one PNG strip into out; 0 or -1 with f. */
int core_frames_png(const float *frames, int n, int c, int w, int h, int scale, core_out *out, core_fail *f);
/* The frames as [{"iteration": (i+1)*every, "png": base64}]; NULL when out of memory. */
json_t *core_frames_json(const float *frames, int n, int c, int w, int h, int scale, int every);

/* The explanation operations (core_explain.c). */
int core_explain_opts(const core_model *m, core_op op, const char *path_arg, core_arg_fn arg, void *ctx, core_opts *o,
                      core_fail *f);
int core_run_explain(const core_model *m, const core_opts *o, const core_input *in, double t0, core_out *out,
                     core_fail *f);
int core_run_classviz(const core_model *m, const core_opts *o, const core_input *in, double t0, core_out *out,
                      core_fail *f);

#endif
