/* genq's CPU kernels for weight-only 4-bit and 8-bit layers with int8 activations (models/quant/native/).
 *
 * The recipe is llama.cpp's (Q4_1 / Q8_0 weights against Q8_1 activations): a layer's weights are held in
 * blocks of 32 along K, each with its own float scale d (and, for 4-bit, an offset m), so that
 * w = d * q + m; every row of activations is quantized to int8 in the same blocks of 32 (xq, scale dx,
 * float sum sx); a block's dot product is the exact integer sum of q * xq, then
 *     out[r, c] = sum_b fma(isum_b, d_b * dx_b)  +  sum_b fma(m_b, sx_b)        (4-bit)
 *     out[r, c] = sum_b fma(isum_b, d_b * dx_b)                                  (8-bit)
 * each sum taken over the blocks in order, in float32.
 *
 * Bitwise determinism: integer sums are exact, and every float operation above happens in the same order
 * for one output element whatever M (the rows), the other rows, the thread count or the instruction set:
 * the AVX2, AVX-VNNI and portable scalar paths give the same bits (tests/models/test_native_quant.py builds
 * both and compares). So a layer is row independent (models/invariant_ops.project: batch invariance).
 *
 * Layouts (N a multiple of 8, K of 32; g = N / 8 groups of 8 output columns, nb = K / 32 blocks):
 *   4-bit codes (g, nb, 4, 32) uint8: in vector i (0..3), byte 4c + t holds column c's code of weight
 *     4i + t in its low nibble and of weight 16 + 4i + t in its high nibble (codes 0..15);
 *   8-bit codes (g, nb, 8, 32) int8: in vector i (0..7), byte 4c + t is column c's code of weight 4i + t
 *     (codes -127..127);
 *   d, m (g, nb, 8) float16 (as in the GGUF's own Q4_1 / Q8_0 blocks): column c's scale and offset of block b.
 * so that one 32-byte load holds 4 consecutive weights of 8 columns, met by one broadcast 4 bytes of xq.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && !defined(GENQ_SCALAR)
#include <immintrin.h>
#define GENQ_AVX2 1
#endif

#if defined(GENQ_AVX2) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define GENQ_AVX512 1
#endif

int genq_qdot_isa(void) {
#if defined(GENQ_AVX512)
    return 3;
#elif defined(GENQ_AVX2) && defined(__AVXVNNI__)
    return 2;
#elif defined(GENQ_AVX2)
    return 1;
#else
    return 0;
#endif
}

static inline float half_to_float(uint16_t h) {  /* exact */
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1fu) {
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp) {
        u = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man) {  /* subnormal: normalize */
        int e = -1;
        uint32_t m = man;
        do { e++; m <<= 1; } while (!(m & 0x400u));
        u = sign | ((uint32_t)(112 - e) << 23) | ((m & 0x3ffu) << 13);
    } else {
        u = sign;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* One row of K activations (float32 or bfloat16) to int8 blocks: xq, dx (scale), sx (float sum), xs (int sum).
 * The float sum is taken in one order on every path: lane l (0..7) adds v[l], v[l + 8], v[l + 16], v[l + 24];
 * then t_l = s_l + s_(l+4), then (t_0 + t_2) + (t_1 + t_3). Rounding to int8 is to nearest, ties to even. */
#ifdef GENQ_AVX2
static inline __m256 load8(const void *x, int x_bf16, int64_t at) {
    if (x_bf16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)x + at))), 16));
    return _mm256_loadu_ps((const float *)x + at);
}

static void quantize_row(const void *x, int x_bf16, int64_t k, int8_t *xq, float *dx, float *sx, int32_t *xs) {
    const __m256 sign = _mm256_set1_ps(-0.f);
    for (int64_t b = 0; b < k / 32; b++) {
        __m256 v[4], amax = _mm256_setzero_ps(), sum;
        for (int i = 0; i < 4; i++) {
            v[i] = load8(x, x_bf16, b * 32 + 8 * i);
            amax = _mm256_max_ps(_mm256_andnot_ps(sign, v[i]), amax);  /* a NaN is passed over, as below */
        }
        sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(v[0], v[1]), v[2]), v[3]);
        __m128 t = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
        __m128 a = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        a = _mm_max_ps(a, _mm_movehl_ps(a, a));
        a = _mm_max_ss(a, _mm_movehdup_ps(a));
        float tt[4];
        _mm_storeu_ps(tt, t);
        const float m = _mm_cvtss_f32(a), d = m / 127.f, id = d > 0.f ? 1.f / d : 0.f;
        const __m256 idv = _mm256_set1_ps(id);
        const __m256i lim = _mm256_set1_epi32(127), nlim = _mm256_set1_epi32(-127);
        __m256i q[4];
        for (int i = 0; i < 4; i++)
            q[i] = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v[i], idv)), lim), nlim);
        __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        packed = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(xq + b * 32), packed);
        __m256i qs = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        int32_t qq[8], is = 0;
        _mm256_storeu_si256((__m256i *)qq, qs);
        for (int l = 0; l < 8; l++) is += qq[l];
        dx[b] = d;
        sx[b] = (tt[0] + tt[2]) + (tt[1] + tt[3]);
        xs[b] = is;
    }
}
#else
static void quantize_row(const void *x, int x_bf16, int64_t k, int8_t *xq, float *dx, float *sx, int32_t *xs) {
    float v[32];
    for (int64_t b = 0; b < k / 32; b++) {
        for (int j = 0; j < 32; j++)
            v[j] = x_bf16 ? bf16_to_float(((const uint16_t *)x)[b * 32 + j]) : ((const float *)x)[b * 32 + j];
        float amax = 0.f, lane[8], t[4];
        for (int j = 0; j < 32; j++) {
            float a = fabsf(v[j]);
            amax = a > amax ? a : amax;
        }
        for (int l = 0; l < 8; l++) lane[l] = ((v[l] + v[l + 8]) + v[l + 16]) + v[l + 24];
        for (int l = 0; l < 4; l++) t[l] = lane[l] + lane[l + 4];
        const float d = amax / 127.f, id = d > 0.f ? 1.f / d : 0.f;
        int32_t is = 0;
        for (int j = 0; j < 32; j++) {
            int32_t q = (int32_t)lrintf(v[j] * id);
            q = q > 127 ? 127 : (q < -127 ? -127 : q);
            xq[b * 32 + j] = (int8_t)q;
            is += q;
        }
        dx[b] = d;
        sx[b] = (t[0] + t[2]) + (t[1] + t[3]);
        xs[b] = is;
    }
}
#endif

/* The exact integer dot products of one block of 8 columns with one row's block: isum[c]. */
#ifdef GENQ_AVX2
static inline __m256i block_dot4(const __m256i w[8], const int32_t *xb) {
#ifdef __AVXVNNI__
    __m256i s = _mm256_setzero_si256();
    for (int i = 0; i < 8; i++) s = _mm256_dpbusd_avx_epi32(s, w[i], _mm256_set1_epi32(xb[i]));
    return s;
#else
    /* u8 codes 0..15 times int8 -127..127: a pair sums to at most 3810, eight of them to 30480 (int16) */
    __m256i s16 = _mm256_maddubs_epi16(w[0], _mm256_set1_epi32(xb[0]));
    for (int i = 1; i < 8; i++) s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(w[i], _mm256_set1_epi32(xb[i])));
    return _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
#endif
}

static inline __m256i block_dot8(const __m256i w[8], const int32_t *xb, int32_t xsum) {
#ifdef __AVXVNNI__
    /* (w + 128) as u8 against int8, less 128 times the row's block sum: exact */
    __m256i s = _mm256_setzero_si256();
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    for (int i = 0; i < 8; i++) s = _mm256_dpbusd_avx_epi32(s, _mm256_xor_si256(w[i], flip), _mm256_set1_epi32(xb[i]));
    return _mm256_sub_epi32(s, _mm256_set1_epi32(128 * xsum));
#else
    /* |w| as u8 against x with w's sign: a pair sums to at most 32258 (int16), then to int32 per vector */
    (void)xsum;
    __m256i s = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int i = 0; i < 8; i++) {
        __m256i x = _mm256_set1_epi32(xb[i]);
        s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w[i]), _mm256_sign_epi8(x, w[i])), ones));
    }
    return s;
#endif
}
#endif

#define ROWS 4  /* rows sharing one unpacking of a block's weights */
#define PARALLEL_MACS (1 << 17)  /* smaller products run on the calling thread */
#ifndef PREFETCH_BYTES
#define PREFETCH_BYTES 4096  /* how far ahead of the block being multiplied its successors' codes are fetched */
#endif

/* `width` results of one row into out (float32 or bfloat16) from element `at` on. */
static void store(void *out, int out_bf16, int64_t at, const float *res, int width) {
    for (int c = 0; c < width; c++) {
        if (out_bf16) ((uint16_t *)out)[at + c] = float_to_bf16(res[c]);
        else ((float *)out)[at + c] = res[c];
    }
}

static void gemm_group(int bits, const int8_t *xq, const float *dx, const float *sx, const int32_t *xs,
                       int64_t m, int64_t k, const uint8_t *codes, const uint16_t *d, const uint16_t *mn, int64_t n,
                       int64_t g, void *out, int out_bf16) {
    const int64_t nb = k / 32, block_bytes = bits == 4 ? 128 : 256;
    for (int64_t r0 = 0; r0 < m; r0 += ROWS) {
        const int rows = m - r0 < ROWS ? (int)(m - r0) : ROWS;
        float res[ROWS][8];
#ifdef GENQ_AVX2
        __m256 acc[ROWS], accm[ROWS];
        for (int r = 0; r < ROWS; r++) acc[r] = accm[r] = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *w = codes + (g * nb + b) * block_bytes;
            _mm_prefetch((const char *)w + PREFETCH_BYTES, _MM_HINT_T0);
            _mm_prefetch((const char *)w + PREFETCH_BYTES + 64, _MM_HINT_T0);
            if (bits == 8) {
                _mm_prefetch((const char *)w + PREFETCH_BYTES + 128, _MM_HINT_T0);
                _mm_prefetch((const char *)w + PREFETCH_BYTES + 192, _MM_HINT_T0);
            }
            __m256i wv[8];
            if (bits == 4) {
                const __m256i low = _mm256_set1_epi8(0x0F);
                for (int i = 0; i < 4; i++) {
                    __m256i v = _mm256_loadu_si256((const __m256i *)(w + 32 * i));
                    wv[i] = _mm256_and_si256(v, low);
                    wv[i + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                }
            } else {
                for (int i = 0; i < 8; i++) wv[i] = _mm256_loadu_si256((const __m256i *)(w + 32 * i));
            }
            const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(d + (g * nb + b) * 8)));
            for (int r = 0; r < rows; r++) {
                const int64_t rr = r0 + r;
                int32_t xb[8];  /* the block's 32 codes as 8 groups of 4 (memcpy: no aliasing of the int8 array) */
                memcpy(xb, xq + rr * k + b * 32, 32);
                __m256i s = bits == 4 ? block_dot4(wv, xb) : block_dot8(wv, xb, xs[rr * nb + b]);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dv, _mm256_set1_ps(dx[rr * nb + b])), acc[r]);
                if (bits == 4)
                    accm[r] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(mn + (g * nb + b) * 8))),
                                             _mm256_set1_ps(sx[rr * nb + b]), accm[r]);
            }
        }
        for (int r = 0; r < rows; r++) _mm256_storeu_ps(res[r], _mm256_add_ps(acc[r], accm[r]));
#else
        (void)xs;  /* the portable path sums signed codes as they are */
        for (int r = 0; r < rows; r++) {
            const int64_t rr = r0 + r;
            for (int c = 0; c < 8; c++) {
                float acc = 0.f, accm = 0.f;
                for (int64_t b = 0; b < nb; b++) {
                    const uint8_t *w = codes + (g * nb + b) * block_bytes;
                    const int8_t *xb = xq + rr * k + b * 32;
                    int32_t s = 0;
                    for (int j = 0; j < 32; j++) {
                        int32_t q;
                        if (bits == 4) {
                            int hi = j >= 16, jj = j - 16 * hi;  /* weight jj of the low or high nibbles */
                            uint8_t byte = w[32 * (jj / 4) + 4 * c + jj % 4];
                            q = hi ? byte >> 4 : byte & 0x0F;
                        } else {
                            q = (int8_t)w[32 * (j / 4) + 4 * c + j % 4];
                        }
                        s += q * xb[j];
                    }
                    const float dd = half_to_float(d[(g * nb + b) * 8 + c]) * dx[rr * nb + b];
                    acc = fmaf((float)s, dd, acc);
                    if (bits == 4) accm = fmaf(half_to_float(mn[(g * nb + b) * 8 + c]), sx[rr * nb + b], accm);
                }
                res[r][c] = acc + accm;
            }
        }
#endif
        for (int r = 0; r < rows; r++) store(out, out_bf16, (r0 + r) * n + g * 8, res[r], 8);
    }
}

#ifdef GENQ_AVX512
/* Two groups (g, g + 1) at once, group g in the low 256 bits of each vector: the same operations on every
 * output element as gemm_group's AVX2 path (exact integer sums, then the same float32 fma order). */
static inline __m512i load_pair(const uint8_t *a, const uint8_t *b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a)),
                              _mm256_loadu_si256((const __m256i *)b), 1);
}

static inline __m512 load_pair_ph(const uint16_t *a, const uint16_t *b) {
    __m256i h = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)a)),
                                        _mm_loadu_si128((const __m128i *)b), 1);
    return _mm512_cvtph_ps(h);
}

static void gemm_group_pair(int bits, const int8_t *xq, const float *dx, const float *sx, const int32_t *xs,
                            int64_t m, int64_t k, const uint8_t *codes, const uint16_t *d, const uint16_t *mn,
                            int64_t n, int64_t g, void *out, int out_bf16) {
    const int64_t nb = k / 32, block_bytes = bits == 4 ? 128 : 256;
    for (int64_t r0 = 0; r0 < m; r0 += ROWS) {
        const int rows = m - r0 < ROWS ? (int)(m - r0) : ROWS;
        float res[ROWS][16];
        __m512 acc[ROWS], accm[ROWS];
        for (int r = 0; r < ROWS; r++) acc[r] = accm[r] = _mm512_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *w0 = codes + (g * nb + b) * block_bytes, *w1 = codes + ((g + 1) * nb + b) * block_bytes;
            for (int64_t off = 0; off < block_bytes; off += 64) {
                _mm_prefetch((const char *)w0 + PREFETCH_BYTES + off, _MM_HINT_T0);
                _mm_prefetch((const char *)w1 + PREFETCH_BYTES + off, _MM_HINT_T0);
            }
            __m512i wv[8];
            if (bits == 4) {  /* low nibbles as they are, high nibbles times 16: their sum is divided exactly */
                const __m512i low = _mm512_set1_epi8(0x0F), high = _mm512_set1_epi8((char)0xF0);
                for (int i = 0; i < 4; i++) {
                    __m512i v = load_pair(w0 + 32 * i, w1 + 32 * i);
                    wv[i] = _mm512_and_si512(v, low);
                    wv[i + 4] = _mm512_and_si512(v, high);
                }
            } else {
                const __m512i flip = _mm512_set1_epi8((char)0x80);
                for (int i = 0; i < 8; i++) wv[i] = _mm512_xor_si512(load_pair(w0 + 32 * i, w1 + 32 * i), flip);
            }
            const __m512 dv = load_pair_ph(d + (g * nb + b) * 8, d + ((g + 1) * nb + b) * 8);
            const __m512 mv = bits == 4 ? load_pair_ph(mn + (g * nb + b) * 8, mn + ((g + 1) * nb + b) * 8)
                                        : _mm512_setzero_ps();
            for (int r = 0; r < rows; r++) {
                const int64_t rr = r0 + r;
                int32_t xb[8];  /* the block's 32 codes as 8 groups of 4 (memcpy: no aliasing of the int8 array) */
                memcpy(xb, xq + rr * k + b * 32, 32);
                __m512i s;
                if (bits == 4) {
                    __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
                    for (int i = 0; i < 4; i++) {
                        lo = _mm512_dpbusd_epi32(lo, wv[i], _mm512_set1_epi32(xb[i]));
                        hi = _mm512_dpbusd_epi32(hi, wv[i + 4], _mm512_set1_epi32(xb[i + 4]));
                    }
                    s = _mm512_add_epi32(lo, _mm512_srai_epi32(hi, 4));
                } else {
                    s = _mm512_setzero_si512();
                    for (int i = 0; i < 8; i++) s = _mm512_dpbusd_epi32(s, wv[i], _mm512_set1_epi32(xb[i]));
                    s = _mm512_sub_epi32(s, _mm512_set1_epi32(128 * xs[rr * nb + b]));
                }
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dv, _mm512_set1_ps(dx[rr * nb + b])), acc[r]);
                if (bits == 4) accm[r] = _mm512_fmadd_ps(mv, _mm512_set1_ps(sx[rr * nb + b]), accm[r]);
            }
        }
        for (int r = 0; r < rows; r++) _mm512_storeu_ps(res[r], _mm512_add_ps(acc[r], accm[r]));
        for (int r = 0; r < rows; r++) store(out, out_bf16, (r0 + r) * n + g * 8, res[r], 16);  /* g, g + 1 */
    }
}
#endif

/* out (M, N) = x (M, K) times the layer's weights (bits 4 or 8), in float32 or bfloat16 (out_bf16).
 * Returns 0, or -1 when the scratch memory cannot be had. */
int genq_qdot_linear(const void *x, int x_bf16, int64_t m, int64_t k, int bits, const uint8_t *codes,
                     const uint16_t *d, const uint16_t *mn, int64_t n, void *out, int out_bf16) {
    const int64_t nb = k / 32;
    int8_t *xq = malloc((size_t)(m * k) + (size_t)(m * nb) * 12 + 64);
    if (!xq) return -1;
    float *dx = (float *)(xq + ((m * k + 63) / 64) * 64), *sx = dx + m * nb;
    int32_t *xs = (int32_t *)(sx + m * nb);
    const size_t x_row = (size_t)k * (x_bf16 ? 2 : 4);
    for (int64_t r = 0; r < m; r++)
        quantize_row((const char *)x + r * x_row, x_bf16, k, xq + r * k, dx + r * nb, sx + r * nb, xs + r * nb);
    const int64_t groups = n / 8;
#ifdef GENQ_AVX512
    const int64_t pairs = groups / 2;
#pragma omp parallel for schedule(static) if (m * n * k >= PARALLEL_MACS)
    for (int64_t p = 0; p < pairs; p++)
        gemm_group_pair(bits, xq, dx, sx, xs, m, k, codes, d, mn, n, 2 * p, out, out_bf16);
    if (groups % 2)
        gemm_group(bits, xq, dx, sx, xs, m, k, codes, d, mn, n, groups - 1, out, out_bf16);
#else
#pragma omp parallel for schedule(static) if (m * n * k >= PARALLEL_MACS)
    for (int64_t g = 0; g < groups; g++)
        gemm_group(bits, xq, dx, sx, xs, m, k, codes, d, mn, n, g, out, out_bf16);
#endif
    free(xq);
    return 0;
}
