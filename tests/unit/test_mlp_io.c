/* test_mlp_io.c -- safetensors round trip and one case per corrupted-file fault. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "mlp.h"
#include "mlp_io.h"

static mlp *make_net(void) {
    int sizes[] = {5, 4, 3};
    mlp *net = mlp_new(2, sizes, MLP_ACT_TANH, NULL, 0);
    mlp_init_weights(net, MLP_INIT_NORMAL, 3);
    for (int i = 0; i < 4; i++) mlp_bias(net, 0)[i] = 0.25f * i;
    return net;
}

/* Build a file: u64 header length, the header text, then data_len bytes of data. */
static unsigned char *build(const char *header, uint64_t declared_len, size_t data_len, size_t *len) {
    size_t h = strlen(header);
    *len = 8 + h + data_len;
    unsigned char *b = calloc(1, *len);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(declared_len >> (8 * i));
    memcpy(b + 8, header, h);
    for (size_t i = 0; i < data_len; i++) b[8 + h + i] = (unsigned char)(i * 7);
    return b;
}

/* Load a handmade file and expect failure with a message containing `want`. */
static void expect_fault(const char *header, long declared, size_t data_len, const char *want) {
    size_t len;
    unsigned char *b = build(header, declared < 0 ? strlen(header) : (uint64_t)declared, data_len, &len);
    char err[MLP_ERR_LEN] = "";
    mlp *net = mlp_load_buffer(b, len, MLP_ACT_RELU, 0, err, sizeof err);
    CHECK_MSG(net == NULL, "accepted: %s", header);
    CHECK_CONTAINS(err, want);
    mlp_free(net);
    free(b);
}

#define W0 "\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"
#define B0 "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]}"

static void test_round_trip(void) {
    mlp *net = make_net();
    char path[] = "/tmp/loupe-test-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    char err[MLP_ERR_LEN];
    CHECK_MSG(mlp_save(net, path, err, sizeof err) == 0, "%s", err);
    mlp *back = mlp_load(path, MLP_ACT_RELU, 1, err, sizeof err);
    CHECK_MSG(back != NULL, "%s", err);
    if (back) {
        CHECK(mlp_activation(back) == MLP_ACT_TANH); /* from the file's metadata */
        CHECK(mlp_n_layers(back) == 2 && mlp_size(back, 0) == 5 && mlp_size(back, 2) == 3);
        CHECK(memcmp(mlp_weight(back, 0), mlp_weight(net, 0), 20 * sizeof(float)) == 0);
        CHECK(memcmp(mlp_bias(back, 0), mlp_bias(net, 0), 4 * sizeof(float)) == 0);
        CHECK(memcmp(mlp_weight(back, 1), mlp_weight(net, 1), 12 * sizeof(float)) == 0);
    }
    mlp_free(back);
    back = mlp_load(path, MLP_ACT_RELU, 0, err, sizeof err);
    CHECK(back && mlp_activation(back) == MLP_ACT_RELU); /* the caller's choice wins */
    mlp_free(back);
    /* The data section starts 8-byte aligned. */
    FILE *f = fopen(path, "rb");
    unsigned char h[8];
    CHECK(fread(h, 1, 8, f) == 8);
    fclose(f);
    CHECK(h[0] % 8 == 0);
    unlink(path);
    mlp_free(net);
}

static void test_minimal_valid_file(void) {
    size_t len;
    unsigned char *b = build("{" W0 "," B0 "}", strlen("{" W0 "," B0 "}"), 32, &len);
    char err[MLP_ERR_LEN] = "";
    mlp *net = mlp_load_buffer(b, len, MLP_ACT_RELU, 1, err, sizeof err);
    CHECK_MSG(net != NULL, "%s", err);
    CHECK(net && mlp_n_inputs(net) == 3 && mlp_n_outputs(net) == 2);
    mlp_free(net);
    free(b);
}

static void test_faults(void) {
    /* Truncated: shorter than the length field; data cut short. */
    char err[MLP_ERR_LEN] = "";
    unsigned char tiny[4] = {1, 0, 0, 0};
    CHECK(mlp_load_buffer(tiny, 4, MLP_ACT_RELU, 0, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "too short");
    expect_fault("{" W0 "," B0 "}", -1, 20, "outside");
    /* Header length: zero, absurd, past the end. */
    expect_fault("{}", 0, 0, "header length");
    expect_fault("{}", (long)1 << 40, 0, "header length");
    expect_fault("{" W0 "}", 5000, 0, "runs past the end");
    /* Invalid JSON in several ways. */
    expect_fault("{\"layers.0.weight\":{\"dtype\":\"F32\",", -1, 0, "invalid header JSON");
    expect_fault("[1,2]", -1, 0, "invalid header JSON");
    expect_fault("{" W0 "," B0 "} x", -1, 32, "trailing");
    expect_fault("{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,2.5]}}", -1, 24, "integers");
    expect_fault("{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[-2,3],\"data_offsets\":[0,24]}}", -1, 24, "non-negative");
    /* Wrong dtype. */
    expect_fault("{\"layers.0.weight\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]}}", -1, 12, "dtype F16");
    /* Shape and offsets that disagree or escape the file. */
    expect_fault("{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}," B0 "}", -1, 28, "span");
    expect_fault("{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                 "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,900]}}", -1, 32, "outside");
    expect_fault("{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[30,6]}," B0 "}", -1, 32, "outside");
    expect_fault("{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3,1],\"data_offsets\":[0,24]}," B0 "}", -1, 32, "dimensions");
    expect_fault("{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]}}", -1, 0, "dimension 0");
    /* Overlapping tensors, a gap, trailing data. */
    expect_fault("{" W0 ",\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}", -1, 24, "overlap");
    expect_fault("{" W0 ",\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[28,36]}}", -1, 36, "gap");
    expect_fault("{" W0 "," B0 "}", -1, 40, "after the last tensor");
    /* Structure: missing bias, broken chain, strangers, duplicates, missing fields. */
    expect_fault("{" W0 "}", -1, 24, "lacks its bias");
    expect_fault("{" W0 "," B0 ",\"layers.1.weight\":{\"dtype\":\"F32\",\"shape\":[1,5],\"data_offsets\":[32,52]},"
                 "\"layers.1.bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[52,56]}}", -1, 56, "takes 5 inputs");
    expect_fault("{\"conv.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", -1, 8, "unexpected tensor");
    expect_fault("{" W0 "," W0 "}", -1, 24, "twice");
    expect_fault("{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3]}}", -1, 24, "lacks");
    expect_fault("{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24],\"x\":1}}", -1, 24, "unknown field");
    expect_fault("{}", -1, 0, "no tensors");
    /* Metadata naming an activation that does not exist, when the file is asked for it. */
    const char *h = "{\"__metadata__\":{\"activation\":\"swish\"}," W0 "," B0 "}";
    size_t len;
    unsigned char *b = build(h, strlen(h), 32, &len);
    CHECK(mlp_load_buffer(b, len, MLP_ACT_RELU, 1, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "swish");
    free(b);
}

static void test_missing_file(void) {
    char err[MLP_ERR_LEN] = "";
    CHECK(mlp_load("/nonexistent/weights.safetensors", MLP_ACT_RELU, 0, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "cannot open");
    CHECK(mlp_load("/tmp", MLP_ACT_RELU, 0, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "not a regular file");
    mlp *net = make_net();
    CHECK(mlp_save(net, "/nonexistent/dir/w.safetensors", err, sizeof err) == -1);
    CHECK_CONTAINS(err, "cannot create");
    mlp_free(net);
}

int main(void) {
    RUN(test_round_trip);
    RUN(test_minimal_valid_file);
    RUN(test_faults);
    RUN(test_missing_file);
    return check_report();
}
