/* sparse.c -- dense layers over the nonzeros of their input: AVX-512, AVX2+FMA and portable kernels. */
#include "sparse.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define SP_HAVE_X86 1
#include <immintrin.h>
#define SP_TARGET __attribute__((target("avx512f")))
#define SP2_TARGET __attribute__((target("avx2,fma")))
#define SP_INLINE static inline __attribute__((always_inline))
#else
#define SP_HAVE_X86 0
#endif

/* Columns per register block: 8 AVX-512 vectors of 16 floats. */
#define SP_COLS 128

static const char *const isa_names[] = {"portable", "avx2", "avx512"};

const char *sp_isa_name(sp_isa isa) { return (unsigned)isa <= SP_ISA_AVX512 ? isa_names[isa] : "unknown"; }

int sp_isa_supported(sp_isa isa) {
    if (isa == SP_ISA_PORTABLE) return 1;
#if SP_HAVE_X86
    /* __builtin_cpu_supports also checks that the OS saves the AVX/AVX-512 state. */
    __builtin_cpu_init();
    if (isa == SP_ISA_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == SP_ISA_AVX512) return __builtin_cpu_supports("avx512f");
#endif
    return 0;
}

sp_isa sp_isa_best(void) {
    return sp_isa_supported(SP_ISA_AVX512) ? SP_ISA_AVX512 : sp_isa_supported(SP_ISA_AVX2) ? SP_ISA_AVX2
                                                                                        : SP_ISA_PORTABLE;
}

/* The version in use, -1 until decided. Atomic: the first kernel calls may
 * come from several threads at once (the daemon's workers), each deciding the
 * same thing. */
static _Atomic int cur_isa = -1;

int sp_isa_use(sp_isa isa) {
    if ((unsigned)isa > SP_ISA_AVX512 || !sp_isa_supported(isa)) return -1;
    atomic_store_explicit(&cur_isa, (int)isa, memory_order_relaxed);
    return 0;
}

sp_isa sp_isa_current(void) {
    int isa = atomic_load_explicit(&cur_isa, memory_order_relaxed);
    if (isa < 0) {
        isa = (int)sp_isa_best();
        atomic_store_explicit(&cur_isa, isa, memory_order_relaxed);
    }
    return (sp_isa)isa;
}

static size_t mask_words(int n) { return (size_t)(n + 31) / 32; }

int sp_batch_init(sp_batch *b, int max_n, int max_k) {
    sp_isa_current(); /* decide here, before any thread runs a kernel */
    memset(b, 0, sizeof *b);
    b->max_n = max_n;
    b->max_k = max_k;
    b->mask = calloc(mask_words(max_n) * (size_t)max_k + 16, sizeof(uint32_t));
    return b->mask ? 0 : -1;
}

void sp_batch_free(sp_batch *b) {
    free(b->mask);
    memset(b, 0, sizeof *b);
}

/* ==== Portable kernels ==== */

static void build_c(sp_batch *b, const float *const *x) {
    int n = b->n, k = b->k;
    memset(b->mask, 0, sizeof(uint32_t) * (size_t)b->words * k);
    for (int s = 0; s < n; s++) {
        const float *xs = x[s];
        uint32_t *mask = b->mask + (size_t)(s / 32) * k, bit = 1u << (s % 32);
        for (int p = 0; p < k; p++)
            if (xs[p] != 0.0f) mask[p] |= bit;
    }
}

static void forward_c(const float *const *x, int k, const float *wt, int ldw, const float *bias, float *z,
                      int ldz, int relu, int r0, int r1, int c0, int c1) {
    for (int r = r0; r < r1; r++) {
        const float *xr = x[r];
        float *zr = z + (size_t)r * ldz;
        memcpy(zr + c0, bias + c0, sizeof(float) * (size_t)(c1 - c0));
        for (int p = 0; p < k; p++) {
            if (xr[p] == 0.0f) continue;
            const float *w = wt + (size_t)p * ldw;
            for (int c = c0; c < c1; c++) zr[c] += xr[p] * w[c];
        }
        if (relu)
            for (int c = c0; c < c1; c++) zr[c] = zr[c] > 0.0f ? zr[c] : 0.0f;
    }
}

static void weight_grad_c(const sp_batch *b, const float *const *x, const float *d, int ldd, float *wt, int ldw,
                          float alpha, int set, int p0, int p1, int c0, int c1) {
    int k = b->k, c1pad = (c1 + 15) & ~15;
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
                    float v = x[s][p];
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

#if SP_HAVE_X86

SP_TARGET static void build_avx512(sp_batch *b, const float *const *x) {
    int n = b->n, k = b->k, chunks = (k + 15) / 16;
    for (int c = 0; c < chunks; c++) {
        int left = k - c * 16;
        __mmask16 lm = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        for (int w = 0; w < b->words; w++) {
            __m512i bits = _mm512_setzero_si512();
            int s1 = 32 * w + 32 < n ? 32 * w + 32 : n;
            for (int s = 32 * w; s < s1; s++) {
                __m512 v = _mm512_maskz_loadu_ps(lm, x[s] + c * 16);
                __mmask16 m = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
                bits = _mm512_mask_or_epi32(bits, m, bits, _mm512_set1_epi32((int)(1u << (s - 32 * w))));
            }
            _mm512_mask_storeu_epi32(b->mask + (size_t)w * k + c * 16, lm, bits);
        }
    }
}

/* The lanes of x[0..15] (those in lm) that are not 0. */
SP_TARGET static inline __mmask16 nonzero16(const float *x, __mmask16 lm) {
    return _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(lm, x), _mm512_setzero_ps(), _CMP_NEQ_UQ);
}

/* Rows r and r + 1 together, over NV vectors of columns from c (the last one
 * masked by tail when MASKED): each row of wt loaded serves both, for every
 * input that is nonzero in either (a row where it is 0 adds an exact 0). Two
 * images share most of their nonzero pixels, so this loads wt about a third
 * less often than one row at a time, for a few more multiplications. Each
 * pair's sums stay in registers from the bias to the end: z is written once
 * (a pass over the inputs in blocks, rereading z each block, ran no faster,
 * and with two threads writing the two halves of the same rows of z, slower). */
SP_TARGET SP_INLINE void forward_block(const float *const *x, int k, const float *wt, int ldw, const float *bias,
                                       float *z, int ldz, int relu, int r0, int r1, int c,
                                       const int NV, const int MASKED, __mmask16 tail) {
    const __mmask16 full = (__mmask16)0xffff;
    for (int r = r0; r < r1; r += 2) {
        int two = r + 1 < r1;
        const float *xa = x[r], *xb = two ? x[r + 1] : xa;
        float *za = z + (size_t)r * ldz + c, *zb = za + ldz;
        __m512 a[8], bb[8];
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) {
            a[v] = _mm512_maskz_loadu_ps(MASKED && v == NV - 1 ? tail : full, bias + c + 16 * v);
            bb[v] = a[v];
        }
        for (int p16 = 0; p16 < k; p16 += 16) {
            __mmask16 lm = k - p16 >= 16 ? full : (__mmask16)((1u << (k - p16)) - 1);
            if (two) {
                uint32_t m = (uint32_t)(nonzero16(xa + p16, lm) | nonzero16(xb + p16, lm));
                while (m) {
                    int p = p16 + __builtin_ctz(m);
                    m &= m - 1;
                    __m512 x0 = _mm512_set1_ps(xa[p]), x1 = _mm512_set1_ps(xb[p]);
                    const float *w = wt + (size_t)p * ldw + c;
#pragma GCC unroll 8
                    for (int v = 0; v < NV; v++) {
                        __m512 wv = _mm512_loadu_ps(w + 16 * v);
                        a[v] = _mm512_fmadd_ps(x0, wv, a[v]);
                        bb[v] = _mm512_fmadd_ps(x1, wv, bb[v]);
                    }
                }
            } else {
                uint32_t m = nonzero16(xa + p16, lm);
                while (m) {
                    int p = p16 + __builtin_ctz(m);
                    m &= m - 1;
                    __m512 x0 = _mm512_set1_ps(xa[p]);
                    const float *w = wt + (size_t)p * ldw + c;
#pragma GCC unroll 8
                    for (int v = 0; v < NV; v++) a[v] = _mm512_fmadd_ps(x0, _mm512_loadu_ps(w + 16 * v), a[v]);
                }
            }
        }
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) {
            __mmask16 mv = MASKED && v == NV - 1 ? tail : full;
            if (relu) {
                a[v] = _mm512_max_ps(a[v], _mm512_setzero_ps());
                bb[v] = _mm512_max_ps(bb[v], _mm512_setzero_ps());
            }
            _mm512_mask_storeu_ps(za + 16 * v, mv, a[v]);
            if (two) _mm512_mask_storeu_ps(zb + 16 * v, mv, bb[v]);
        }
    }
}

/* Add alpha * acc to a row of wt (or store acc, with set). */
SP_TARGET SP_INLINE void put_row(float *w, const __m512 *acc, __m512 va, int set, const int NV) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++)
        _mm512_storeu_ps(w + 16 * v, set ? acc[v] : _mm512_fmadd_ps(va, acc[v], _mm512_loadu_ps(w + 16 * v)));
}

/* Inputs p and p + 1 together: neighbouring pixels are mostly nonzero in the
 * same images, so each row of d loaded serves both (a row where one of them is
 * 0 adds an exact 0 to that one's sum). A last unpaired input goes alone. */
SP_TARGET SP_INLINE void weight_grad_block(const sp_batch *b, const float *const *x, const float *d, int ldd,
                                           float *wt, int ldw, float alpha, int set, int p0, int p1, int c,
                                           const int NV, const int MASKED, __mmask16 tail) {
    const int k = b->k, words = b->words;
    const __m512 va = _mm512_set1_ps(alpha);
    for (int p = p0; p < p1; p += 2) {
        const int two = p + 1 < p1;
        __m512 acc0[8], acc1[8];
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) acc0[v] = acc1[v] = _mm512_setzero_ps();
        uint32_t any0 = 0, any1 = 0;
        for (int w = 0; w < words; w++) {
            const uint32_t *mw = b->mask + (size_t)w * k + p;
            uint32_t m0 = mw[0], m1 = two ? mw[1] : 0, m = m0 | m1;
            any0 |= m0;
            any1 |= m1;
            const float *const *xw = x + 32 * w;
            const float *dw = d + (size_t)(32 * w) * ldd + c;
            if (two) {
                while (m) {
                    int s = __builtin_ctz(m);
                    m &= m - 1;
                    const float *xs = xw[s] + p, *ds = dw + (size_t)s * ldd;
                    __m512 x0 = _mm512_set1_ps(xs[0]), x1 = _mm512_set1_ps(xs[1]);
#pragma GCC unroll 8
                    for (int v = 0; v < NV; v++) {
                        __m512 dv = MASKED && v == NV - 1 ? _mm512_maskz_loadu_ps(tail, ds + 16 * v) : _mm512_loadu_ps(ds + 16 * v);
                        acc0[v] = _mm512_fmadd_ps(x0, dv, acc0[v]);
                        acc1[v] = _mm512_fmadd_ps(x1, dv, acc1[v]);
                    }
                }
            } else {
                while (m) {
                    int s = __builtin_ctz(m);
                    m &= m - 1;
                    const float *ds = dw + (size_t)s * ldd;
                    __m512 x0 = _mm512_set1_ps(xw[s][p]);
#pragma GCC unroll 8
                    for (int v = 0; v < NV; v++) {
                        __m512 dv = MASKED && v == NV - 1 ? _mm512_maskz_loadu_ps(tail, ds + 16 * v) : _mm512_loadu_ps(ds + 16 * v);
                        acc0[v] = _mm512_fmadd_ps(x0, dv, acc0[v]);
                    }
                }
            }
        }
        float *w0 = wt + (size_t)p * ldw + c;
        if (set || any0) put_row(w0, acc0, va, set, NV);
        if (two && (set || any1)) put_row(w0 + ldw, acc1, va, set, NV);
    }
}

/* CALL(NV, MASKED) with NV a constant from 1 to 8. */
#define SP_DISPATCH_NV(nv, CALL, MASKED)                                                           \
    switch (nv) {                                                                                  \
    case 1: CALL(1, MASKED); break;                                                                \
    case 2: CALL(2, MASKED); break;                                                                \
    case 3: CALL(3, MASKED); break;                                                                \
    case 4: CALL(4, MASKED); break;                                                                \
    case 5: CALL(5, MASKED); break;                                                                \
    case 6: CALL(6, MASKED); break;                                                                \
    case 7: CALL(7, MASKED); break;                                                                \
    default: CALL(8, MASKED); break;                                                               \
    }

static __mmask16 tail_mask(int cols) {
    int r = cols % 16;
    return r ? (__mmask16)((1u << r) - 1) : (__mmask16)0xffff;
}

/* Run a block kernel over columns [c0, c1) in blocks of SP_COLS: CALL(NV,
 * MASKED) sees the block's first column as c and its last vector's mask as
 * tail; the compiler gets a version for each width, unmasked and masked. */
#define SP_OVER_COLUMNS(c0, c1, CALL)                                                              \
    for (int c = (c0); c < (c1); c += SP_COLS) {                                                   \
        int cols_ = (c1) - c < SP_COLS ? (c1) - c : SP_COLS, nv_ = (cols_ + 15) / 16;              \
        __mmask16 tail = tail_mask(cols_);                                                         \
        if (tail == (__mmask16)0xffff) SP_DISPATCH_NV(nv_, CALL, 0)                                \
        else SP_DISPATCH_NV(nv_, CALL, 1)                                                          \
    }

SP_TARGET static void forward_avx512(const float *const *x, int k, const float *wt, int ldw, const float *bias,
                                     float *z, int ldz, int relu, int r0, int r1, int c0, int c1) {
#define SP_FWD(NV, MASKED) forward_block(x, k, wt, ldw, bias, z, ldz, relu, r0, r1, c, NV, MASKED, tail)
    SP_OVER_COLUMNS(c0, c1, SP_FWD)
#undef SP_FWD
}

SP_TARGET static void weight_grad_avx512(const sp_batch *b, const float *const *x, const float *d, int ldd,
                                         float *wt, int ldw, float alpha, int set, int p0, int p1, int c0,
                                         int c1) {
#define SP_WG(NV, MASKED) weight_grad_block(b, x, d, ldd, wt, ldw, alpha, set, p0, p1, c, NV, MASKED, tail)
    SP_OVER_COLUMNS(c0, c1, SP_WG)
#undef SP_WG
}

#endif /* SP_HAVE_X86 */

/* ==== AVX2+FMA kernels ==== */

/* The same sums as the AVX-512 kernels, in the same order (rows and inputs
 * paired the same way, one FMA per product), so the two give bit-identical
 * results; only the register blocks differ. AVX2 has 16 vector registers of 8
 * floats: a pair of rows (or inputs) over 6 vectors is 12 accumulators, the
 * two broadcast values and the loaded vector, with none left to spill. */
#if SP_HAVE_X86

/* Columns per register block of the AVX2 kernels: 6 vectors of 8 floats. */
#define SP2_COLS 48

SP2_TARGET static void build_avx2(sp_batch *b, const float *const *x) {
    int n = b->n, k = b->k, full = k & ~7;
    const __m256 zero = _mm256_setzero_ps();
    for (int w = 0; w < b->words; w++) {
        int s0 = 32 * w, s1 = s0 + 32 < n ? s0 + 32 : n;
        uint32_t *mw = b->mask + (size_t)w * k;
        for (int p = 0; p < full; p += 8) {
            __m256i bits = _mm256_setzero_si256();
            for (int s = s0; s < s1; s++) {
                __m256i nz = _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(x[s] + p), zero, _CMP_NEQ_UQ));
                bits = _mm256_or_si256(bits, _mm256_and_si256(nz, _mm256_set1_epi32((int)(1u << (s - s0)))));
            }
            _mm256_storeu_si256((__m256i *)(mw + p), bits);
        }
        for (int p = full; p < k; p++) {
            uint32_t m = 0;
            for (int s = s0; s < s1; s++) m |= (uint32_t)(x[s][p] != 0.0f) << (s - s0);
            mw[p] = m;
        }
    }
}

/* Bit i set when x[i] != 0, for the `left` (at most 16 counted) values from x. */
SP2_TARGET static inline uint32_t nonzero16_avx2(const float *x, int left) {
    if (left >= 16) {
        const __m256 zero = _mm256_setzero_ps();
        uint32_t lo = (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x), zero, _CMP_NEQ_UQ));
        uint32_t hi = (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + 8), zero, _CMP_NEQ_UQ));
        return lo | hi << 8;
    }
    uint32_t m = 0;
    for (int i = 0; i < left; i++) m |= (uint32_t)(x[i] != 0.0f) << i;
    return m;
}

/* Lanes below `cols` of the last vector of a block of `cols` columns: all when it is a multiple of 8. */
SP2_TARGET static inline __m256i tail_mask8(int cols) {
    int r = cols % 8 ? cols % 8 : 8;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Add alpha * acc to a row of wt (or store acc, with set). Whole vectors: the
 * lanes past the block's last column hold 0 and land in wt's padding. */
SP2_TARGET SP_INLINE void put_row2(float *w, const __m256 *acc, __m256 va, int set, const int NV) {
#pragma GCC unroll 6
    for (int v = 0; v < NV; v++)
        _mm256_storeu_ps(w + 8 * v, set ? acc[v] : _mm256_fmadd_ps(va, acc[v], _mm256_loadu_ps(w + 8 * v)));
}

/* Like weight_grad_block: inputs p and p + 1 together over NV vectors of columns from c. */
SP2_TARGET SP_INLINE void weight_grad_block2(const sp_batch *b, const float *const *x, const float *d, int ldd,
                                             float *wt, int ldw, float alpha, int set, int p0, int p1, int c,
                                             const int NV, const int MASKED, __m256i tail) {
    const int k = b->k, words = b->words;
    const __m256 va = _mm256_set1_ps(alpha);
    for (int p = p0; p < p1; p += 2) {
        const int two = p + 1 < p1;
        __m256 acc0[6], acc1[6];
#pragma GCC unroll 6
        for (int v = 0; v < NV; v++) acc0[v] = acc1[v] = _mm256_setzero_ps();
        uint32_t any0 = 0, any1 = 0;
        for (int w = 0; w < words; w++) {
            const uint32_t *mw = b->mask + (size_t)w * k + p;
            uint32_t m0 = mw[0], m1 = two ? mw[1] : 0, m = m0 | m1;
            any0 |= m0;
            any1 |= m1;
            const float *const *xw = x + 32 * w;
            const float *dw = d + (size_t)(32 * w) * ldd + c;
            if (two) {
                while (m) {
                    int s = __builtin_ctz(m);
                    m &= m - 1;
                    const float *xs = xw[s] + p, *ds = dw + (size_t)s * ldd;
                    __m256 x0 = _mm256_broadcast_ss(xs), x1 = _mm256_broadcast_ss(xs + 1);
#pragma GCC unroll 6
                    for (int v = 0; v < NV; v++) {
                        __m256 dv = MASKED && v == NV - 1 ? _mm256_maskload_ps(ds + 8 * v, tail)
                                                          : _mm256_loadu_ps(ds + 8 * v);
                        acc0[v] = _mm256_fmadd_ps(x0, dv, acc0[v]);
                        acc1[v] = _mm256_fmadd_ps(x1, dv, acc1[v]);
                    }
                }
            } else {
                while (m) {
                    int s = __builtin_ctz(m);
                    m &= m - 1;
                    const float *ds = dw + (size_t)s * ldd;
                    __m256 x0 = _mm256_broadcast_ss(xw[s] + p);
#pragma GCC unroll 6
                    for (int v = 0; v < NV; v++) {
                        __m256 dv = MASKED && v == NV - 1 ? _mm256_maskload_ps(ds + 8 * v, tail)
                                                          : _mm256_loadu_ps(ds + 8 * v);
                        acc0[v] = _mm256_fmadd_ps(x0, dv, acc0[v]);
                    }
                }
            }
        }
        float *w0 = wt + (size_t)p * ldw + c;
        if (set || any0) put_row2(w0, acc0, va, set, NV);
        if (two && (set || any1)) put_row2(w0 + ldw, acc1, va, set, NV);
    }
}

/* CALL(NV, MASKED) with NV a constant from 1 to 6. */
#define SP2_DISPATCH_NV(nv, CALL, MASKED)                                                          \
    switch (nv) {                                                                                  \
    case 1: CALL(1, MASKED); break;                                                                \
    case 2: CALL(2, MASKED); break;                                                                \
    case 3: CALL(3, MASKED); break;                                                                \
    case 4: CALL(4, MASKED); break;                                                                \
    case 5: CALL(5, MASKED); break;                                                                \
    default: CALL(6, MASKED); break;                                                               \
    }

/* Like SP_OVER_COLUMNS, in blocks of SP2_COLS columns. */
#define SP2_OVER_COLUMNS(c0, c1, CALL)                                                             \
    for (int c = (c0); c < (c1); c += SP2_COLS) {                                                  \
        int cols_ = (c1) - c < SP2_COLS ? (c1) - c : SP2_COLS, nv_ = (cols_ + 7) / 8;              \
        __m256i tail = tail_mask8(cols_);                                                          \
        if (cols_ % 8 == 0) SP2_DISPATCH_NV(nv_, CALL, 0)                                          \
        else SP2_DISPATCH_NV(nv_, CALL, 1)                                                         \
    }

/* Like forward_block: rows r and r + 1 of the group [g0, g1) together over NV
 * vectors of columns from c, for the chunk of inputs from p0 whose nonzero
 * masks (either row) are `masks`, built once for all the column blocks: at
 * half AVX-512's width a 128-column range is three blocks, and scanning the
 * rows for each made the pass about a fifth slower. The first chunk starts
 * from the bias, a later one from the sums the one before stored in z (a float
 * stored and loaded is the same float, so the sums are those of one pass); the
 * last applies relu. */
SP2_TARGET SP_INLINE void forward_mask2(const float *const *x, int p0, const uint32_t *masks, int words,
                                        const float *wt, int ldw, const float *bias, float *z, int ldz,
                                        int first, int relu, int g0, int g1, int c, const int NV,
                                        const int MASKED, __m256i tail) {
    for (int r = g0, q = 0; r < g1; r += 2, q++) {
        int two = r + 1 < g1;
        const float *xa = x[r] + p0, *xb = two ? x[r + 1] + p0 : xa;
        const uint32_t *mq = masks + (size_t)q * words;
        float *za = z + (size_t)r * ldz + c, *zb = za + ldz;
        __m256 a[6], bb[6];
        /* a row without a partner (zb is past the range) reads its own sums twice */
        const float *fa = first ? bias + c : za, *fb = first ? bias + c : two ? zb : za;
#pragma GCC unroll 6
        for (int v = 0; v < NV; v++) {
            int last = MASKED && v == NV - 1;
            a[v] = last ? _mm256_maskload_ps(fa + 8 * v, tail) : _mm256_loadu_ps(fa + 8 * v);
            bb[v] = last ? _mm256_maskload_ps(fb + 8 * v, tail) : _mm256_loadu_ps(fb + 8 * v);
        }
        for (int w = 0; w < words; w++) {
            uint32_t m = mq[w];
            while (m) {
                int p = 32 * w + __builtin_ctz(m);
                m &= m - 1;
                __m256 x0 = _mm256_broadcast_ss(xa + p), x1 = _mm256_broadcast_ss(xb + p);
                const float *wr = wt + (size_t)(p0 + p) * ldw + c;
#pragma GCC unroll 6
                for (int v = 0; v < NV; v++) {
                    __m256 wv = _mm256_loadu_ps(wr + 8 * v);
                    a[v] = _mm256_fmadd_ps(x0, wv, a[v]);
                    bb[v] = _mm256_fmadd_ps(x1, wv, bb[v]);
                }
            }
        }
#pragma GCC unroll 6
        for (int v = 0; v < NV; v++) {
            if (relu) {
                a[v] = _mm256_max_ps(a[v], _mm256_setzero_ps());
                bb[v] = _mm256_max_ps(bb[v], _mm256_setzero_ps());
            }
            if (MASKED && v == NV - 1) {
                _mm256_maskstore_ps(za + 8 * v, tail, a[v]);
                if (two) _mm256_maskstore_ps(zb + 8 * v, tail, bb[v]);
            } else {
                _mm256_storeu_ps(za + 8 * v, a[v]);
                if (two) _mm256_storeu_ps(zb + 8 * v, bb[v]);
            }
        }
    }
}

/* Inputs per chunk of forward_avx2's masks, and row pairs per group of masks:
 * 16 x 128 words, 8 KiB of stack. */
#define SP2_MASK_K 4096
#define SP2_GROUP 16

SP2_TARGET static void forward_avx2(const float *const *x, int k, const float *wt, int ldw, const float *bias,
                                    float *z, int ldz, int relu, int r0, int r1, int c0, int c1) {
    uint32_t masks[SP2_GROUP * (SP2_MASK_K / 32)];
    /* groups of row pairs from r0, so rows pair as the whole range does */
    for (int g0 = r0; g0 < r1; g0 += 2 * SP2_GROUP) {
        int g1 = g0 + 2 * SP2_GROUP < r1 ? g0 + 2 * SP2_GROUP : r1;
        for (int p0 = 0; p0 < k; p0 += SP2_MASK_K) {
            int kc = k - p0 < SP2_MASK_K ? k - p0 : SP2_MASK_K, words = (kc + 31) / 32;
            int first = p0 == 0, last_relu = relu && p0 + kc == k;
            for (int r = g0, q = 0; r < g1; r += 2, q++) {
                const float *xa = x[r] + p0, *xb = r + 1 < g1 ? x[r + 1] + p0 : xa;
                for (int w = 0; w < words; w++) {
                    int p = 32 * w;
                    masks[q * words + w] = (nonzero16_avx2(xa + p, kc - p) | nonzero16_avx2(xb + p, kc - p)) |
                                           (kc - p > 16 ? (nonzero16_avx2(xa + p + 16, kc - p - 16) |
                                                           nonzero16_avx2(xb + p + 16, kc - p - 16)) << 16 : 0);
                }
            }
#define SP2_FWM(NV, MASKED)                                                                        \
    forward_mask2(x, p0, masks, words, wt, ldw, bias, z, ldz, first, last_relu, g0, g1, c, NV, MASKED, tail)
            SP2_OVER_COLUMNS(c0, c1, SP2_FWM)
#undef SP2_FWM
        }
    }
}

SP2_TARGET static void weight_grad_avx2(const sp_batch *b, const float *const *x, const float *d, int ldd,
                                        float *wt, int ldw, float alpha, int set, int p0, int p1, int c0,
                                        int c1) {
#define SP2_WG(NV, MASKED) weight_grad_block2(b, x, d, ldd, wt, ldw, alpha, set, p0, p1, c, NV, MASKED, tail)
    SP2_OVER_COLUMNS(c0, c1, SP2_WG)
#undef SP2_WG
    /* The AVX-512 kernels' whole vectors fill the padding up to a multiple of
     * 16 columns; these stop at a multiple of 8: set the rest to 0 as they do. */
    int c8 = (c1 + 7) & ~7, c16 = (c1 + 15) & ~15;
    if (set && c8 < c16)
        for (int p = p0; p < p1; p++) memset(wt + (size_t)p * ldw + c8, 0, sizeof(float) * (size_t)(c16 - c8));
}

#endif /* SP_HAVE_X86 */

/* ==== Entry points ==== */

void sp_build(sp_batch *b, const float *const *x, int n, int k) {
    b->n = n;
    b->k = k;
    b->words = (int)mask_words(n);
    switch (sp_isa_current()) {
#if SP_HAVE_X86
    case SP_ISA_AVX512: build_avx512(b, x); return;
    case SP_ISA_AVX2: build_avx2(b, x); return;
#endif
    default: build_c(b, x); return;
    }
}

void sp_forward(const float *const *x, int k, const float *wt, int ldw, const float *bias, float *z, int ldz,
                int relu, int r0, int r1, int c0, int c1) {
    switch (sp_isa_current()) {
#if SP_HAVE_X86
    case SP_ISA_AVX512: forward_avx512(x, k, wt, ldw, bias, z, ldz, relu, r0, r1, c0, c1); return;
    case SP_ISA_AVX2: forward_avx2(x, k, wt, ldw, bias, z, ldz, relu, r0, r1, c0, c1); return;
#endif
    default: forward_c(x, k, wt, ldw, bias, z, ldz, relu, r0, r1, c0, c1); return;
    }
}

void sp_weight_grad(const sp_batch *b, const float *const *x, const float *d, int ldd, float *wt, int ldw,
                    float alpha, int set, int p0, int p1, int c0, int c1) {
    switch (sp_isa_current()) {
#if SP_HAVE_X86
    case SP_ISA_AVX512: weight_grad_avx512(b, x, d, ldd, wt, ldw, alpha, set, p0, p1, c0, c1); return;
    case SP_ISA_AVX2: weight_grad_avx2(b, x, d, ldd, wt, ldw, alpha, set, p0, p1, c0, c1); return;
#endif
    default: weight_grad_c(b, x, d, ldd, wt, ldw, alpha, set, p0, p1, c0, c1); return;
    }
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
