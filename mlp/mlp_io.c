/* mlp_io.c -- safetensors writer and a validating reader for MLP weights.
 *
 * Format: u64 little-endian header length N, N bytes of JSON, then the data
 * section. The JSON maps tensor names to {"dtype", "shape", "data_offsets"}
 * (offsets relative to the data section) plus an optional "__metadata__"
 * object of strings. The reader trusts nothing: it parses the header with a
 * strict parser of its own (this module knows no JSON library), checks every
 * field and offset, and only then copies bytes. */
#define _POSIX_C_SOURCE 200809L
#include "mlp_io.h"
#include "errbuf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader copies it as is"
#endif

#define MAX_TENSORS (2 * MLP_MAX_LAYERS)
#define MAX_DIMS 8
#define MAX_NAME 128
#define MAX_FILE ((size_t)1 << 31)

/* ==== Writing ==== */

/* Append to a fixed buffer; returns -1 once it would overflow. */
typedef struct {
    char *p;
    size_t len, cap;
} sbuf;

static int sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len) return -1;
    b->len += (size_t)n;
    return 0;
}

int mlp_save(const mlp *net, const char *path, char *err, size_t errlen) {
    int L = mlp_n_layers(net);
    size_t cap = 256 + (size_t)L * 256;
    char *json = malloc(cap + 8);
    char *tmp = NULL;
    FILE *f = NULL;
    if (!json) { errbuf_set(err, errlen, "out of memory writing %s", path); return -1; }
    sbuf b = {json, 0, cap};
    size_t off = 0;
    int rc = sb_printf(&b, "{\"__metadata__\":{\"format\":\"pt\",\"activation\":\"%s\"}",
                       mlp_act_name(mlp_activation(net)));
    for (int i = 0; i < L && !rc; i++) {
        size_t in = (size_t)mlp_size(net, i), out = (size_t)mlp_size(net, i + 1);
        rc |= sb_printf(&b, ",\"layers.%d.weight\":{\"dtype\":\"F32\",\"shape\":[%zu,%zu],"
                        "\"data_offsets\":[%zu,%zu]}", i, out, in, off, off + 4 * in * out);
        off += 4 * in * out;
        rc |= sb_printf(&b, ",\"layers.%d.bias\":{\"dtype\":\"F32\",\"shape\":[%zu],"
                        "\"data_offsets\":[%zu,%zu]}", i, out, off, off + 4 * out);
        off += 4 * out;
    }
    rc |= sb_printf(&b, "}");
    /* Pad with spaces so the data section starts 8-byte aligned, as the reference writer does. */
    while (!rc && b.len % 8) rc |= sb_printf(&b, " ");
    if (rc) { errbuf_set(err, errlen, "header for %s does not fit", path); goto fail; }

    size_t plen = strlen(path);
    tmp = malloc(plen + 16);
    if (!tmp) { errbuf_set(err, errlen, "out of memory writing %s", path); goto fail; }
    snprintf(tmp, plen + 16, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f) { errbuf_set(err, errlen, "cannot create %s: %s", tmp, strerror(errno)); goto fail; }
    uint8_t hdr[8];
    uint64_t n = b.len;
    for (int i = 0; i < 8; i++) hdr[i] = (uint8_t)(n >> (8 * i));
    int ok = fwrite(hdr, 1, 8, f) == 8 && fwrite(json, 1, b.len, f) == b.len;
    for (int i = 0; i < L && ok; i++) {
        size_t in = (size_t)mlp_size(net, i), out = (size_t)mlp_size(net, i + 1);
        ok = fwrite(mlp_weight_c(net, i), 4, in * out, f) == in * out &&
             fwrite(mlp_bias_c(net, i), 4, out, f) == out;
    }
    ok = ok && fflush(f) == 0;
    if (fclose(f) != 0) ok = 0;
    f = NULL;
    if (!ok) { errbuf_set(err, errlen, "cannot write %s: %s", tmp, strerror(errno)); goto fail; }
    if (rename(tmp, path) != 0) {
        errbuf_set(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        goto fail;
    }
    free(tmp);
    free(json);
    return 0;
fail:
    if (f) fclose(f);
    if (tmp) remove(tmp);
    free(tmp);
    free(json);
    return -1;
}

/* ==== A strict parser for the safetensors header ==== */

typedef struct {
    char name[MAX_NAME];
    char dtype[16];
    int ndim;
    uint64_t shape[MAX_DIMS];
    uint64_t begin, end;
    int has_dtype, has_shape, has_offsets;
} tensor_info;

typedef struct {
    const char *start, *p, *end;
    char *err;
    size_t errlen;
    tensor_info t[MAX_TENSORS];
    int n;
    char activation[256];
} parser;

static void skip_ws(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int expect(parser *ps, char c) {
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != c) {
        errbuf_set(ps->err, ps->errlen, "invalid header JSON: expected '%c' at header byte %ld", c,
                (long)(ps->p - ps->start));
        return -1;
    }
    ps->p++;
    return 0;
}

/* Parse a JSON string into out (NUL-terminated, truncation is an error).
 * Escapes are decoded; \u escapes outside ASCII become '?'. */
static int parse_string(parser *ps, char *out, size_t cap) {
    if (expect(ps, '"')) return -1;
    size_t n = 0;
    while (ps->p < ps->end && *ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p++;
        if (c < 0x20) { errbuf_set(ps->err, ps->errlen, "invalid header JSON: control character in a string"); return -1; }
        if (c == '\\') {
            if (ps->p >= ps->end) break;
            char e = *ps->p++;
            switch (e) {
            case '"': case '\\': case '/': c = (unsigned char)e; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u': {
                unsigned v = 0;
                for (int i = 0; i < 4; i++) {
                    if (ps->p >= ps->end) goto bad_escape;
                    char h = *ps->p++;
                    v <<= 4;
                    if (h >= '0' && h <= '9') v |= (unsigned)(h - '0');
                    else if (h >= 'a' && h <= 'f') v |= (unsigned)(h - 'a' + 10);
                    else if (h >= 'A' && h <= 'F') v |= (unsigned)(h - 'A' + 10);
                    else goto bad_escape;
                }
                c = v < 0x80 ? (unsigned char)v : '?';
                break;
            }
            default:
            bad_escape:
                errbuf_set(ps->err, ps->errlen, "invalid header JSON: bad escape in a string");
                return -1;
            }
        }
        if (n + 1 >= cap) { errbuf_set(ps->err, ps->errlen, "header string longer than %zu bytes", cap - 1); return -1; }
        out[n++] = (char)c;
    }
    if (ps->p >= ps->end) { errbuf_set(ps->err, ps->errlen, "invalid header JSON: unterminated string"); return -1; }
    ps->p++;
    out[n] = '\0';
    return 0;
}

/* A non-negative integer below 2^53 (larger offsets cannot be real). */
static int parse_uint(parser *ps, uint64_t *out) {
    skip_ws(ps);
    uint64_t v = 0;
    const char *start = ps->p;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        v = v * 10 + (uint64_t)(*ps->p++ - '0');
        if (v >= (1ull << 53)) { errbuf_set(ps->err, ps->errlen, "header number too large"); return -1; }
    }
    if (ps->p == start) { errbuf_set(ps->err, ps->errlen, "invalid header JSON: expected a non-negative integer"); return -1; }
    if (ps->p - start > 1 && *start == '0') { errbuf_set(ps->err, ps->errlen, "invalid header JSON: leading zero"); return -1; }
    if (ps->p < ps->end && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E')) {
        errbuf_set(ps->err, ps->errlen, "header numbers must be integers");
        return -1;
    }
    *out = v;
    return 0;
}

/* [u, u, ...] into out (at most cap values); *n gets the count. */
static int parse_uint_array(parser *ps, uint64_t *out, int cap, int *n) {
    if (expect(ps, '[')) return -1;
    *n = 0;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') { ps->p++; return 0; }
    for (;;) {
        if (*n >= cap) { errbuf_set(ps->err, ps->errlen, "header array has more than %d entries", cap); return -1; }
        if (parse_uint(ps, &out[(*n)++])) return -1;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
        return expect(ps, ']');
    }
}

static int parse_tensor(parser *ps, tensor_info *t) {
    if (expect(ps, '{')) return -1;
    for (;;) {
        char key[32];
        if (parse_string(ps, key, sizeof key) || expect(ps, ':')) return -1;
        if (!strcmp(key, "dtype")) {
            if (parse_string(ps, t->dtype, sizeof t->dtype)) return -1;
            t->has_dtype = 1;
        } else if (!strcmp(key, "shape")) {
            if (parse_uint_array(ps, t->shape, MAX_DIMS, &t->ndim)) return -1;
            t->has_shape = 1;
        } else if (!strcmp(key, "data_offsets")) {
            uint64_t o[2];
            int n;
            if (parse_uint_array(ps, o, 2, &n)) return -1;
            if (n != 2) { errbuf_set(ps->err, ps->errlen, "tensor %s: data_offsets must have 2 entries", t->name); return -1; }
            t->begin = o[0];
            t->end = o[1];
            t->has_offsets = 1;
        } else {
            errbuf_set(ps->err, ps->errlen, "tensor %s: unknown field \"%s\"", t->name, key);
            return -1;
        }
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
        if (expect(ps, '}')) return -1;
        break;
    }
    if (!t->has_dtype || !t->has_shape || !t->has_offsets) {
        errbuf_set(ps->err, ps->errlen, "tensor %s lacks dtype, shape or data_offsets", t->name);
        return -1;
    }
    return 0;
}

static int parse_metadata(parser *ps) {
    if (expect(ps, '{')) return -1;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') { ps->p++; return 0; }
    for (;;) {
        char key[64], val[256];
        if (parse_string(ps, key, sizeof key) || expect(ps, ':') || parse_string(ps, val, sizeof val))
            return -1;
        if (!strcmp(key, "activation")) snprintf(ps->activation, sizeof ps->activation, "%s", val);
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
        return expect(ps, '}');
    }
}

static int parse_header(parser *ps) {
    if (expect(ps, '{')) return -1;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') { ps->p++; goto done; }
    for (;;) {
        char name[MAX_NAME];
        if (parse_string(ps, name, sizeof name) || expect(ps, ':')) return -1;
        if (!strcmp(name, "__metadata__")) {
            if (parse_metadata(ps)) return -1;
        } else {
            if (ps->n >= MAX_TENSORS) { errbuf_set(ps->err, ps->errlen, "more than %d tensors", MAX_TENSORS); return -1; }
            for (int i = 0; i < ps->n; i++)
                if (!strcmp(ps->t[i].name, name)) { errbuf_set(ps->err, ps->errlen, "tensor %s appears twice", name); return -1; }
            tensor_info *t = &ps->t[ps->n++];
            memset(t, 0, sizeof *t);
            snprintf(t->name, sizeof t->name, "%s", name);
            if (parse_tensor(ps, t)) return -1;
        }
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
        if (expect(ps, '}')) return -1;
        break;
    }
done:
    skip_ws(ps);
    if (ps->p != ps->end) { errbuf_set(ps->err, ps->errlen, "invalid header JSON: trailing bytes after the object"); return -1; }
    return 0;
}

/* ==== Reading ==== */

static int cmp_begin(const void *a, const void *b) {
    const tensor_info *x = *(tensor_info *const *)a, *y = *(tensor_info *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Layer index and role from "layers.<i>.weight" / "layers.<i>.bias"; -1 if neither. */
static int tensor_role(const char *name, int *layer, int *is_bias) {
    if (strncmp(name, "layers.", 7)) return -1;
    const char *p = name + 7;
    int i = 0, digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 4) { i = i * 10 + (*p++ - '0'); digits++; }
    if (!digits || (digits > 1 && name[7] == '0')) return -1;
    if (!strcmp(p, ".weight")) *is_bias = 0;
    else if (!strcmp(p, ".bias")) *is_bias = 1;
    else return -1;
    *layer = i;
    return 0;
}

mlp *mlp_load_buffer(const unsigned char *buf, size_t len, mlp_act act, int act_from_file,
                     char *err, size_t errlen) {
    if (len < 8) {
        errbuf_set(err, errlen, "file is %zu bytes, too short for the 8-byte header length", len);
        return NULL;
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)buf[i] << (8 * i);
    if (hlen < 2 || hlen > MLP_IO_MAX_HEADER) {
        errbuf_set(err, errlen, "header length %llu is outside 2..%u bytes", (unsigned long long)hlen,
                MLP_IO_MAX_HEADER);
        return NULL;
    }
    if (hlen > len - 8) {
        errbuf_set(err, errlen, "header length %llu runs past the end of the %zu-byte file (truncated?)",
                (unsigned long long)hlen, len);
        return NULL;
    }
    parser *ps = calloc(1, sizeof *ps);
    if (!ps) { errbuf_set(err, errlen, "out of memory reading the header"); return NULL; }
    ps->start = ps->p = (const char *)buf + 8;
    ps->end = ps->p + hlen;
    ps->err = err;
    ps->errlen = errlen;
    mlp *net = NULL;
    if (parse_header(ps)) goto fail;

    const unsigned char *data = buf + 8 + hlen;
    uint64_t data_len = len - 8 - hlen;
    tensor_info *w[MLP_MAX_LAYERS] = {0}, *bias[MLP_MAX_LAYERS] = {0};
    tensor_info *order[MAX_TENSORS];
    int L = 0;
    for (int i = 0; i < ps->n; i++) {
        tensor_info *t = &ps->t[i];
        int layer, is_bias;
        if (tensor_role(t->name, &layer, &is_bias) || layer >= MLP_MAX_LAYERS) {
            errbuf_set(err, errlen, "unexpected tensor \"%s\" (an MLP has layers.<i>.weight and layers.<i>.bias)", t->name);
            goto fail;
        }
        if (strcmp(t->dtype, "F32")) {
            errbuf_set(err, errlen, "tensor %s has dtype %s; only F32 is supported", t->name, t->dtype);
            goto fail;
        }
        if (t->ndim != (is_bias ? 1 : 2)) {
            errbuf_set(err, errlen, "tensor %s has %d dimensions, expected %d", t->name, t->ndim, is_bias ? 1 : 2);
            goto fail;
        }
        uint64_t count = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] == 0 || t->shape[d] > (1u << 20)) {
                errbuf_set(err, errlen, "tensor %s has dimension %llu; each must be 1 to %u", t->name,
                        (unsigned long long)t->shape[d], 1u << 20);
                goto fail;
            }
            count *= t->shape[d];
        }
        if (t->begin > t->end || t->end > data_len) {
            errbuf_set(err, errlen, "tensor %s: data_offsets [%llu, %llu] lie outside the %llu-byte data section",
                    t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                    (unsigned long long)data_len);
            goto fail;
        }
        if (t->end - t->begin != count * 4) {
            errbuf_set(err, errlen, "tensor %s: data_offsets span %llu bytes but its shape needs %llu",
                    t->name, (unsigned long long)(t->end - t->begin), (unsigned long long)(count * 4));
            goto fail;
        }
        if ((is_bias ? bias : w)[layer]) {
            errbuf_set(err, errlen, "tensor %s is given twice", t->name);
            goto fail;
        }
        (is_bias ? bias : w)[layer] = t;
        if (layer + 1 > L) L = layer + 1;
        order[i] = t;
    }
    if (L == 0) { errbuf_set(err, errlen, "the file holds no tensors"); goto fail; }

    /* Tensors must tile the data section exactly: no overlap, no gap, nothing after. */
    qsort(order, (size_t)ps->n, sizeof order[0], cmp_begin);
    uint64_t at = 0;
    for (int i = 0; i < ps->n; i++) {
        if (order[i]->begin < at) {
            errbuf_set(err, errlen, "tensors %s and %s overlap", order[i - 1]->name, order[i]->name);
            goto fail;
        }
        if (order[i]->begin > at) {
            errbuf_set(err, errlen, "gap of %llu bytes before tensor %s",
                    (unsigned long long)(order[i]->begin - at), order[i]->name);
            goto fail;
        }
        at = order[i]->end;
    }
    if (at != data_len) {
        errbuf_set(err, errlen, "%llu bytes after the last tensor", (unsigned long long)(data_len - at));
        goto fail;
    }

    int sizes[MLP_MAX_LAYERS + 1];
    for (int i = 0; i < L; i++) {
        if (!w[i] || !bias[i]) {
            errbuf_set(err, errlen, "layer %d lacks its %s", i, w[i] ? "bias" : "weight");
            goto fail;
        }
        int out = (int)w[i]->shape[0], in = (int)w[i]->shape[1];
        if ((int)bias[i]->shape[0] != out) {
            errbuf_set(err, errlen, "layers.%d.bias has %d entries but layers.%d.weight has %d rows", i,
                    (int)bias[i]->shape[0], i, out);
            goto fail;
        }
        if (i > 0 && in != sizes[i]) {
            errbuf_set(err, errlen, "layers.%d.weight takes %d inputs but layer %d gives %d", i, in, i - 1, sizes[i]);
            goto fail;
        }
        sizes[i] = in;
        sizes[i + 1] = out;
    }
    if (act_from_file && ps->activation[0] && mlp_act_parse(ps->activation, &act)) {
        errbuf_set(err, errlen, "unknown activation \"%s\" in the file's metadata", ps->activation);
        goto fail;
    }
    net = mlp_new(L, sizes, act, err, errlen);
    if (!net) goto fail;
    for (int i = 0; i < L; i++) {
        memcpy(mlp_weight(net, i), data + w[i]->begin, (size_t)(w[i]->end - w[i]->begin));
        memcpy(mlp_bias(net, i), data + bias[i]->begin, (size_t)(bias[i]->end - bias[i]->begin));
    }
    free(ps);
    return net;
fail:
    free(ps);
    return NULL;
}

mlp *mlp_load(const char *path, mlp_act act, int act_from_file, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) { errbuf_set(err, errlen, "cannot open %s: %s", path, strerror(errno)); return NULL; }
    unsigned char *buf = NULL;
    mlp *net = NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        errbuf_set(err, errlen, "%s is not a regular file", path);
        goto done;
    }
    if ((uint64_t)st.st_size > MAX_FILE) {
        errbuf_set(err, errlen, "%s is %lld bytes, more than the %zu an MLP may have", path,
                (long long)st.st_size, MAX_FILE);
        goto done;
    }
    size_t len = (size_t)st.st_size;
    buf = malloc(len ? len : 1);
    if (!buf) { errbuf_set(err, errlen, "out of memory reading %s", path); goto done; }
    if (fread(buf, 1, len, f) != len) {
        errbuf_set(err, errlen, "cannot read %s: %s", path, ferror(f) ? strerror(errno) : "short read");
        goto done;
    }
    char inner[MLP_ERR_LEN];
    net = mlp_load_buffer(buf, len, act, act_from_file, inner, sizeof inner);
    if (!net) errbuf_set(err, errlen, "%s: %s", path, inner);
done:
    free(buf);
    fclose(f);
    return net;
}
