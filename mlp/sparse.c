/* sparse.c -- dense layers over the nonzeros of their input: AVX-512 kernels and portable ones. */
#include "sparse.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define SP_HAVE_AVX512 1
#include <immintrin.h>
#define SP_TARGET __attribute__((target("avx512f")))
#define SP_INLINE static inline __attribute__((always_inline))
#else
#define SP_HAVE_AVX512 0
#endif

/* Columns per register block: 8 AVX-512 vectors of 16 floats. */
#define SP_COLS 128

static int use_avx512 = -1; /* -1: not decided yet */

int sp_use_avx512(int on) {
#if SP_HAVE_AVX512
    __builtin_cpu_init();
    use_avx512 = on && __builtin_cpu_supports("avx512f");
#else
    (void)on;
    use_avx512 = 0;
#endif
    return use_avx512;
}

static int avx512(void) {
    if (use_avx512 < 0) sp_use_avx512(1);
    return use_avx512;
}

static size_t mask_words(int n) { return (size_t)(n + 31) / 32; }

int sp_batch_init(sp_batch *b, int max_n, int max_k) {
    memset(b, 0, sizeof *b);
    b->max_n = max_n;
    b->max_k = max_k;
    int nblk = (max_k + SP_BLOCK - 1) / SP_BLOCK;
    /* Each row's nonzeros get max_k + 16 slots: the AVX-512 build stores 16 at a time. */
    size_t nz = (size_t)max_n * (max_k + 16);
    b->start = malloc(sizeof(int) * (size_t)max_n * (nblk + 1));
    b->off = malloc(sizeof(int) * nz);
    b->val = malloc(sizeof(float) * nz);
    b->mask = calloc(mask_words(max_n) * (size_t)max_k + 16, sizeof(uint32_t));
    b->cur = malloc(sizeof(int) * (size_t)max_n);
    if (!b->start || !b->off || !b->val || !b->mask || !b->cur) {
        sp_batch_free(b);
        return -1;
    }
    return 0;
}

void sp_batch_free(sp_batch *b) {
    free(b->start);
    free(b->off);
    free(b->val);
    free(b->mask);
    free(b->cur);
    memset(b, 0, sizeof *b);
}

static void begin_build(sp_batch *b, int n, int k, int ldw) {
    b->n = n;
    b->k = k;
    b->ldw = ldw;
    b->nblk = (k + SP_BLOCK - 1) / SP_BLOCK;
    b->words = (int)mask_words(n);
    for (int s = 0; s < n; s++) b->cur[s] = s * (k + 16);
}

static int *block_start(const sp_batch *b, int s, int blk) {
    return b->start + (size_t)s * (b->nblk + 1) + blk;
}

/* ==== Portable kernels ==== */

static void build_c(sp_batch *b, const float *x) {
    int n = b->n, k = b->k;
    memset(b->mask, 0, sizeof(uint32_t) * (size_t)b->words * k);
    for (int s = 0; s < n; s++) {
        const float *xs = x + (size_t)s * k;
        uint32_t *mask = b->mask + (size_t)(s / 32) * k, bit = 1u << (s % 32);
        int cur = b->cur[s];
        for (int p = 0; p < k; p++) {
            if (p % SP_BLOCK == 0) *block_start(b, s, p / SP_BLOCK) = cur;
            if (xs[p] != 0.0f) {
                b->off[cur] = p * b->ldw;
                b->val[cur++] = xs[p];
                mask[p] |= bit;
            }
        }
        *block_start(b, s, b->nblk) = cur;
    }
}

static void forward_c(const sp_batch *b, const float *wt, const float *bias, float *z, int ldz,
                      int relu, int r0, int r1, int c0, int c1) {
    for (int r = r0; r < r1; r++) {
        float *zr = z + (size_t)r * ldz;
        memcpy(zr + c0, bias + c0, sizeof(float) * (size_t)(c1 - c0));
        for (int e = *block_start(b, r, 0); e < *block_start(b, r, b->nblk); e++) {
            const float *w = wt + b->off[e];
            float v = b->val[e];
            for (int c = c0; c < c1; c++) zr[c] += v * w[c];
        }
        if (relu)
            for (int c = c0; c < c1; c++) zr[c] = zr[c] > 0.0f ? zr[c] : 0.0f;
    }
}

static void weight_grad_c(const sp_batch *b, const float *x, const float *d, int ldd, float *wt,
                          float alpha, int set, int p0, int p1, int c0, int c1) {
    int k = b->k, ldw = b->ldw, c1pad = (c1 + 15) & ~15;
    float g[SP_COLS];
    for (int p = p0; p < p1; p++) {
        for (int cb = c0; cb < c1; cb += SP_COLS) {
            int ce = cb + SP_COLS < c1 ? cb + SP_COLS : c1;
            int any = 0;
            memset(g, 0, sizeof g);
            for (int w = 0; w < b->words; w++) {
                uint32_t m = b->mask[(size_t)w * k + p];
                any |= m != 0;
                for (int bit = 0; m; bit++, m >>= 1) {
                    if (!(m & 1u)) continue;
                    int s = 32 * w + bit;
                    float v = x[(size_t)s * k + p];
                    const float *ds = d + (size_t)s * ldd;
                    for (int c = cb; c < ce; c++) g[c - cb] += v * ds[c];
                }
            }
            float *wr = wt + (size_t)p * ldw;
            if (set) {
                int cpad = ce == c1 ? c1pad : ce;
                for (int c = cb; c < cpad; c++) wr[c] = c < ce ? g[c - cb] : 0.0f;
            } else if (any) {
                for (int c = cb; c < ce; c++) wr[c] += alpha * g[c - cb];
            }
        }
    }
}

/* ==== AVX-512 kernels ==== */

#if SP_HAVE_AVX512

SP_TARGET static void build_avx512(sp_batch *b, const float *x) {
    int n = b->n, k = b->k, chunks = (k + 15) / 16;
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i step = _mm512_set1_epi32(b->ldw);
    for (int c = 0; c < chunks; c++) {
        if ((c * 16) % SP_BLOCK == 0)
            for (int s = 0; s < n; s++) *block_start(b, s, c * 16 / SP_BLOCK) = b->cur[s];
        int left = k - c * 16;
        __mmask16 lm = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        __m512i offs = _mm512_mullo_epi32(_mm512_add_epi32(iota, _mm512_set1_epi32(c * 16)), step);
        for (int w = 0; w < b->words; w++) {
            __m512i bits = _mm512_setzero_si512();
            int s1 = 32 * w + 32 < n ? 32 * w + 32 : n;
            for (int s = 32 * w; s < s1; s++) {
                __m512 v = _mm512_maskz_loadu_ps(lm, x + (size_t)s * k + c * 16);
                __mmask16 m = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
                bits = _mm512_mask_or_epi32(bits, m, bits, _mm512_set1_epi32((int)(1u << (s - 32 * w))));
                int cur = b->cur[s];
                _mm512_storeu_si512(b->off + cur, _mm512_maskz_compress_epi32(m, offs));
                _mm512_storeu_ps(b->val + cur, _mm512_maskz_compress_ps(m, v));
                b->cur[s] = cur + __builtin_popcount(m);
            }
            _mm512_mask_storeu_epi32(b->mask + (size_t)w * k + c * 16, lm, bits);
        }
    }
    for (int s = 0; s < n; s++) *block_start(b, s, b->nblk) = b->cur[s];
}

/* NV vectors of columns from c; the last one masked by tail. */
SP_TARGET SP_INLINE void forward_block(const sp_batch *b, const float *wt, const float *bias,
                                       float *z, int ldz, int relu, int r0, int r1, int c,
                                       const int NV, __mmask16 tail) {
    for (int blk = 0; blk < b->nblk; blk++) {
        int last = blk == b->nblk - 1;
        for (int r = r0; r < r1; r++) {
            float *zr = z + (size_t)r * ldz + c;
            const float *src = blk == 0 ? bias + c : zr;
            __m512 acc[8];
            for (int v = 0; v < NV; v++)
                acc[v] = _mm512_maskz_loadu_ps(v == NV - 1 ? tail : (__mmask16)0xffff, src + 16 * v);
            const int *st = block_start(b, r, blk);
            for (int e = st[0]; e < st[1]; e++) {
                __m512 xv = _mm512_set1_ps(b->val[e]);
                const float *w = wt + b->off[e] + c;
                for (int v = 0; v < NV; v++) acc[v] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w + 16 * v), acc[v]);
            }
            if (relu && last)
                for (int v = 0; v < NV; v++) acc[v] = _mm512_max_ps(acc[v], _mm512_setzero_ps());
            for (int v = 0; v < NV; v++)
                _mm512_mask_storeu_ps(zr + 16 * v, v == NV - 1 ? tail : (__mmask16)0xffff, acc[v]);
        }
    }
}

SP_TARGET SP_INLINE void weight_grad_block(const sp_batch *b, const float *x, const float *d, int ldd,
                                           float *wt, float alpha, int set, int p0, int p1, int c,
                                           const int NV, __mmask16 tail) {
    int k = b->k;
    const __m512 va = _mm512_set1_ps(alpha);
    for (int p = p0; p < p1; p++) {
        __m512 acc[8];
        for (int v = 0; v < NV; v++) acc[v] = _mm512_setzero_ps();
        uint32_t any = 0;
        for (int w = 0; w < b->words; w++) {
            uint32_t m = b->mask[(size_t)w * k + p];
            any |= m;
            while (m) {
                int s = 32 * w + __builtin_ctz(m);
                m &= m - 1;
                __m512 xv = _mm512_set1_ps(x[(size_t)s * k + p]);
                const float *ds = d + (size_t)s * ldd + c;
                for (int v = 0; v < NV; v++)
                    acc[v] = _mm512_fmadd_ps(
                        xv, _mm512_maskz_loadu_ps(v == NV - 1 ? tail : (__mmask16)0xffff, ds + 16 * v), acc[v]);
            }
        }
        float *wr = wt + (size_t)p * b->ldw + c;
        if (set) {
            for (int v = 0; v < NV; v++) _mm512_storeu_ps(wr + 16 * v, acc[v]);
        } else if (any) {
            for (int v = 0; v < NV; v++)
                _mm512_storeu_ps(wr + 16 * v, _mm512_fmadd_ps(va, acc[v], _mm512_loadu_ps(wr + 16 * v)));
        }
    }
}

/* Instantiate a block kernel for 1..8 vectors. */
#define SP_DISPATCH_NV(nv, call)                                                                   \
    switch (nv) {                                                                                  \
    case 1: call(1); break;                                                                        \
    case 2: call(2); break;                                                                        \
    case 3: call(3); break;                                                                        \
    case 4: call(4); break;                                                                        \
    case 5: call(5); break;                                                                        \
    case 6: call(6); break;                                                                        \
    case 7: call(7); break;                                                                        \
    default: call(8); break;                                                                       \
    }

static __mmask16 tail_mask(int cols) {
    int r = cols % 16;
    return r ? (__mmask16)((1u << r) - 1) : (__mmask16)0xffff;
}

SP_TARGET static void forward_avx512(const sp_batch *b, const float *wt, const float *bias, float *z,
                                     int ldz, int relu, int r0, int r1, int c0, int c1) {
    for (int c = c0; c < c1; c += SP_COLS) {
        int cols = c1 - c < SP_COLS ? c1 - c : SP_COLS, nv = (cols + 15) / 16;
        __mmask16 tail = tail_mask(cols);
#define SP_FWD(NV) forward_block(b, wt, bias, z, ldz, relu, r0, r1, c, NV, tail)
        SP_DISPATCH_NV(nv, SP_FWD)
#undef SP_FWD
    }
}

SP_TARGET static void weight_grad_avx512(const sp_batch *b, const float *x, const float *d, int ldd,
                                         float *wt, float alpha, int set, int p0, int p1, int c0, int c1) {
    for (int c = c0; c < c1; c += SP_COLS) {
        int cols = c1 - c < SP_COLS ? c1 - c : SP_COLS, nv = (cols + 15) / 16;
        __mmask16 tail = tail_mask(cols);
#define SP_WG(NV) weight_grad_block(b, x, d, ldd, wt, alpha, set, p0, p1, c, NV, tail)
        SP_DISPATCH_NV(nv, SP_WG)
#undef SP_WG
    }
}

#endif /* SP_HAVE_AVX512 */

/* ==== Entry points ==== */

void sp_build(sp_batch *b, const float *x, int n, int k, int ldw) {
    begin_build(b, n, k, ldw);
#if SP_HAVE_AVX512
    if (avx512()) {
        build_avx512(b, x);
        return;
    }
#endif
    build_c(b, x);
}

void sp_forward(const sp_batch *b, const float *wt, const float *bias, float *z, int ldz,
                int relu, int r0, int r1, int c0, int c1) {
#if SP_HAVE_AVX512
    if (avx512()) {
        forward_avx512(b, wt, bias, z, ldz, relu, r0, r1, c0, c1);
        return;
    }
#endif
    forward_c(b, wt, bias, z, ldz, relu, r0, r1, c0, c1);
}

void sp_weight_grad(const sp_batch *b, const float *x, const float *d, int ldd, float *wt,
                    float alpha, int set, int p0, int p1, int c0, int c1) {
#if SP_HAVE_AVX512
    if (avx512()) {
        weight_grad_avx512(b, x, d, ldd, wt, alpha, set, p0, p1, c0, c1);
        return;
    }
#endif
    weight_grad_c(b, x, d, ldd, wt, alpha, set, p0, p1, c0, c1);
}

void sp_bias_grad(const float *d, int ldd, int n, float *bias, float alpha, int set, int c0, int c1) {
    float g[SP_COLS];
    for (int cb = c0; cb < c1; cb += SP_COLS) {
        int ce = cb + SP_COLS < c1 ? cb + SP_COLS : c1;
        memset(g, 0, sizeof g);
        for (int s = 0; s < n; s++)
            for (int c = cb; c < ce; c++) g[c - cb] += d[(size_t)s * ldd + c];
        for (int c = cb; c < ce; c++) bias[c] = set ? g[c - cb] : bias[c] + alpha * g[c - cb];
    }
}
