/* The decoder layer's small float32 operators, fused, for the q4 / q8 modes (models/native_layers.py): a layer's
 * norms, rotary embedding and cache writes, decode attention and SwiGLU gate, each one C call over all the
 * step's rows instead of some fifty torch operators a layer, whose dispatch cost more than the arithmetic
 * when one or a few sequences decode.
 *
 * Bitwise determinism, as in qdot.c: every output element is computed by the same float operations in the same
 * order whatever the number of rows, the other rows, the thread count or the instruction set. The code is plain
 * C (the compiler vectorizes it across independent lanes, never by reassociating a sum: -ffp-contract=off and
 * no fast-math), sums run over fixed lanes of LANES then a fixed tree, and threads split the work by whole rows
 * (or whole (row, kv head) pairs), each computed as if alone. So the scalar and vector builds give the same
 * bits (tests/models/test_native_layers.py compares them), and a sequence's answer does not depend on its
 * neighbours (batch invariance).
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"

#define LANES 8  /* a sum's lanes (8 float32: one AVX2 vector; 16 took twice as long to reduce) */
#define PARALLEL_WORK (1 << 16)  /* less work than this (multiply-adds) runs on the calling thread */
#define TASKS_PER_THREAD 4  /* decode attention splits a kv head's query heads into tasks below this many a thread */

/* sum of a[i] * b[i]: LANES partial sums, i taken in order within a lane, then a fixed pairwise tree */
static inline float dot(const float *a, const float *b, int64_t n) {
    float acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += a[i + j] * b[i + j];
    for (int j = 0; i + j < n; j++) acc[j] += a[i + j] * b[i + j];
    for (int w = LANES / 2; w; w /= 2)
        for (int j = 0; j < w; j++) acc[j] += acc[j + w];
    return acc[0];
}

/* e^x for x <= 88 (larger inputs give e^88; inputs below -87.3 give about 1e-38, not 0), about 2 ulp: x = n ln2 + r, |r| <= ln2 / 2,
 * e^r by a degree-6 polynomial, 2^n into the exponent bits. Branch free, so loops over it vectorize, and the
 * same operations in any build (no libm call whose vector and scalar versions could differ). */
static inline float exp_f32(float x) {
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.0f ? 88.0f : x;
    const float shifter = 12582912.0f;  /* 1.5 * 2^23: adding it rounds to an integer, to nearest even */
    float n = (x * 1.44269504f + shifter) - shifter;
    float r = x - n * 0.693145752f;  /* ln2 in two parts (Cody and Waite) */
    r = r - n * 1.42860677e-6f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &e, 4);
    return p * scale;
}

/* Per row of x (rows, dim): if h, x += h first (in place: the residual stream); then
 * y = w * (x * (1 / sqrt(mean(x^2) + eps))). */
void genq_add_rms_norm(float *x, const float *h, int64_t rows, int64_t dim, const float *w, float eps, float *y) {
#pragma omp parallel for schedule(static) if (rows * dim >= PARALLEL_WORK)
    for (int64_t r = 0; r < rows; r++) {
        float *xr = x + r * dim, *yr = y + r * dim;
        if (h)
            for (int64_t i = 0; i < dim; i++) xr[i] = xr[i] + h[r * dim + i];
        const float inv = 1.0f / sqrtf(dot(xr, xr, dim) / (float)dim + eps);
        for (int64_t i = 0; i < dim; i++) yr[i] = w[i] * (xr[i] * inv);
    }
}

/* gate_up (rows, 2 * inter), gate then up per row -> out (rows, inter) = silu(gate) * up, silu(g) = g / (1 + e^-g) */
void genq_silu_mul(const float *gate_up, int64_t rows, int64_t inter, float *out) {
#pragma omp parallel for schedule(static) if (rows * inter >= PARALLEL_WORK)
    for (int64_t r = 0; r < rows; r++) {
        const float *g = gate_up + r * 2 * inter, *u = g + inter;
        float *o = out + r * inter;
        for (int64_t i = 0; i < inter; i++) o[i] = g[i] / (1.0f + exp_f32(-g[i])) * u[i];
    }
}

/* The KV cache's rows (one position of one kv head): bfloat16, 2 hd bytes; or 8-bit (q8, models/kv_int8.py): hd
 * int8 codes, then the row's float32 scale = max |x| / 127, code = x / scale rounded half to even (0 when the
 * scale is 0), read back as code * scale: the torch functions' float32 operations, so the same bytes. */
static inline int64_t kv_row_bytes(int64_t hd, int q8) { return q8 ? hd + 4 : 2 * hd; }

static inline void kv_store(uint8_t *row, const float *x, int64_t hd, int q8) {
    if (!q8) {
        uint16_t *h = (uint16_t *)row;
        for (int64_t i = 0; i < hd; i++) h[i] = float_to_bf16(x[i]);
        return;
    }
    float amax = 0.f;
    for (int64_t i = 0; i < hd; i++) {
        const float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    const float scale = amax / 127.0f, divisor = scale > 0.f ? scale : 1.0f;
    const float shifter = 12582912.0f;  /* 1.5 * 2^23: adding it rounds to an integer, to nearest even */
    int8_t *codes = (int8_t *)row;
    for (int64_t i = 0; i < hd; i++) codes[i] = (int8_t)((x[i] / divisor + shifter) - shifter);
    memcpy(row + hd, &scale, 4);
}

static inline void kv_load(const uint8_t *row, int64_t hd, int q8, float *out) {
    if (!q8) {
        const uint16_t *h = (const uint16_t *)row;
        for (int64_t i = 0; i < hd; i++) out[i] = bf16_to_float(h[i]);
        return;
    }
    float scale;
    memcpy(&scale, row + hd, 4);
    const int8_t *codes = (const int8_t *)row;
    for (int64_t i = 0; i < hd; i++) out[i] = (float)codes[i] * scale;
}

/* The torch layers' cache writes and reads (models/llama.py, for the default mode's bfloat16 network with the C
 * decode attention): the same kv_store / kv_load, in one call where the torch ops of models/kv_int8.py take a dozen.
 * genq_kv_store: rows (rows, kv_heads, hd) of x, row r at x + r * stride elements (float32, or bfloat16 when
 * x_bf16), into the layer's cache (kv_heads, positions, row) at write_index[r]. genq_kv_gather: the layer's
 * blocks blocks[0..n) in order, per kv head, into out (kv_heads, n * block, hd), float32 or bfloat16 (out_bf16,
 * rounded as torch's .to(bfloat16)). Return 0, or -1 for a head_dim over KV_MAX_HD. */
#define KV_MAX_HD 1024

int genq_kv_store(const void *x, int x_bf16, int64_t rows, int64_t stride, int64_t kv_heads, int64_t hd,
                  const int64_t *write_index, uint8_t *layer, int64_t positions, int q8) {
    if (hd > KV_MAX_HD) return -1;
    const int64_t rb = kv_row_bytes(hd, q8);
#pragma omp parallel for schedule(static) if (rows * kv_heads * hd >= PARALLEL_WORK)
    for (int64_t r = 0; r < rows; r++) {
        float row[KV_MAX_HD];
        for (int64_t h = 0; h < kv_heads; h++) {
            const int64_t at = r * stride + h * hd;
            if (x_bf16)
                for (int64_t i = 0; i < hd; i++) row[i] = bf16_to_float(((const uint16_t *)x)[at + i]);
            else
                memcpy(row, (const float *)x + at, (size_t)hd * sizeof(float));
            kv_store(layer + (h * positions + write_index[r]) * rb, row, hd, q8);
        }
    }
    return 0;
}

int genq_kv_gather(const uint8_t *layer, int64_t kv_heads, int64_t positions, int64_t hd, int q8,
                   const int64_t *blocks, int64_t n, int64_t block, void *out, int out_bf16) {
    if (hd > KV_MAX_HD) return -1;
    const int64_t rb = kv_row_bytes(hd, q8), length = n * block;
#pragma omp parallel for schedule(static) if (kv_heads * length * hd >= PARALLEL_WORK)
    for (int64_t t = 0; t < kv_heads * n; t++) {
        const int64_t h = t / n, j = t % n;
        float row[KV_MAX_HD];
        for (int64_t p = 0; p < block; p++) {
            const int64_t o = (h * length + j * block + p) * hd;
            kv_load(layer + (h * positions + blocks[j] * block + p) * rb, hd, q8, row);
            if (out_bf16)
                for (int64_t i = 0; i < hd; i++) ((uint16_t *)out)[o + i] = float_to_bf16(row[i]);
            else
                memcpy((float *)out + o, row, (size_t)hd * sizeof(float));
        }
    }
    return 0;
}

/* x (hd) rotated by cos, sin (halves as rotate_half: x * cos + (-x2, x1) * sin) into o */
static inline void rotate(const float *x, const float *c, const float *s, int64_t hd, float *o) {
    const int64_t half = hd / 2;
    for (int64_t i = 0; i < half; i++) {
        o[i] = x[i] * c[i] + (-x[i + half]) * s[i];
        o[i + half] = x[i + half] * c[i + half] + x[i] * s[i + half];
    }
}

/* Rows of qkv (rows, (heads + 2 kv_heads) hd), q then k then v heads: q's and k's heads rotated by their row's
 * cos, sin (rows, hd); q into q_out (rows, heads, hd); k and v stored (bfloat16, or 8-bit when q8: kv_store) into
 * the layer's cache k_layer, v_layer (kv_heads, positions, row) at the row's flat index. Returns 0, or -1 without
 * scratch memory. */
int genq_rope_write(const float *qkv, int64_t rows, int64_t heads, int64_t kv_heads, int64_t hd, const float *cos,
                    const float *sin, const int64_t *write_index, uint8_t *k_layer, uint8_t *v_layer,
                    int64_t positions, int q8, float *q_out) {
    const int64_t width = (heads + 2 * kv_heads) * hd, rb = kv_row_bytes(hd, q8);
    float *rotated = malloc((size_t)(rows * hd) * sizeof(float));
    if (!rotated) return -1;
#pragma omp parallel for schedule(static) if (rows * width >= PARALLEL_WORK)
    for (int64_t r = 0; r < rows; r++) {
        const float *row = qkv + r * width, *c = cos + r * hd, *s = sin + r * hd;
        float *k = rotated + r * hd;
        for (int64_t h = 0; h < heads; h++) rotate(row + h * hd, c, s, hd, q_out + (r * heads + h) * hd);
        for (int64_t h = 0; h < kv_heads; h++) {
            const int64_t at = (h * positions + write_index[r]) * rb;
            rotate(row + (heads + h) * hd, c, s, hd, k);
            kv_store(k_layer + at, k, hd, q8);
            kv_store(v_layer + at, row + (heads + kv_heads + h) * hd, hd, q8);
        }
    }
    free(rotated);
    return 0;
}

/* Attention of one decode query per row: q (rows, heads, hd); row r sees positions [lo, pos[r]] of its keys,
 * lo = max(0, pos[r] - window + 1) (window 0: none), position p held in block tables[r * width + p / block] at
 * offset p % block of k_layer, v_layer (kv_heads, n_blocks * block, row): bfloat16 rows, or 8-bit when q8
 * (kv_load). out (rows, heads, hd).
 * Per query head: scores q . k * scale, softmax (max, e^(s - max) summed in order), then the weighted values
 * summed over the keys in order. A task is a row's query heads [g0, g1) of one kv head, which share each key
 * they read: all of the kv head's when there are tasks enough for the threads, else one (a lone row's few kv
 * heads would leave a thread idle); a head's result is the same either way. Returns 0, or -1 without scratch
 * memory. */
static void attend_heads(const float *q, int64_t hd, const uint8_t *kbase, const uint8_t *vbase, int q8,
                         int64_t block, const int64_t *table, int64_t lo, int64_t n, float scale, int64_t g0,
                         int64_t g1, float *scores, float *out) {
    const int64_t count = g1 - g0, rb = kv_row_bytes(hd, q8);
    float *row = scores + count * n;  /* one key or value widened to float32, shared by the heads */
    for (int64_t j = 0; j < n; j++) {
        const int64_t at = lo + j;
        kv_load(kbase + (table[at / block] * block + at % block) * rb, hd, q8, row);
        for (int64_t g = 0; g < count; g++) scores[g * n + j] = dot(q + (g0 + g) * hd, row, hd) * scale;
    }
    for (int64_t g = 0; g < count; g++) {
        float *s = scores + g * n, m = s[0], sum = 0.f;
        for (int64_t j = 1; j < n; j++) m = s[j] > m ? s[j] : m;
        for (int64_t j = 0; j < n; j++) s[j] = exp_f32(s[j] - m);
        for (int64_t j = 0; j < n; j++) sum += s[j];
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j < n; j++) s[j] = s[j] * inv;
    }
    memset(out + g0 * hd, 0, (size_t)(count * hd) * sizeof(float));
    for (int64_t j = 0; j < n; j++) {
        const int64_t at = lo + j;
        kv_load(vbase + (table[at / block] * block + at % block) * rb, hd, q8, row);
        for (int64_t g = 0; g < count; g++) {
            const float wgt = scores[g * n + j];
            float *og = out + (g0 + g) * hd;
            for (int64_t i = 0; i < hd; i++) og[i] = og[i] + wgt * row[i];
        }
    }
}

int genq_decode_attention(const float *q, int64_t rows, int64_t heads, int64_t kv_heads, int64_t hd,
                          const uint8_t *k_layer, const uint8_t *v_layer, int q8, int64_t n_blocks, int64_t block,
                          const int64_t *tables, int64_t width, const int64_t *pos, int64_t window, float scale,
                          float *out) {
    const int64_t group = heads / kv_heads, positions = n_blocks * block, head_bytes = positions * kv_row_bytes(hd, q8);
    const int64_t per_task = rows * kv_heads >= TASKS_PER_THREAD * omp_get_max_threads() ? group : 1;
    const int64_t tasks = rows * heads / per_task;
    int64_t longest = 0, work = 0;
    for (int64_t r = 0; r < rows; r++) {
        longest = pos[r] + 1 > longest ? pos[r] + 1 : longest;
        work += (pos[r] + 1) * heads * hd * 2;
    }
    int failed = 0;
#pragma omp parallel if (work >= PARALLEL_WORK)
    {
        float *scores = malloc((size_t)(per_task * longest + hd) * sizeof(float));
        if (!scores) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; t++) {
            if (!scores) continue;
            const int64_t r = t / (heads / per_task), head = t % (heads / per_task) * per_task, kh = head / group;
            const int64_t p = pos[r], lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
            attend_heads(q + (r * heads + kh * group) * hd, hd, k_layer + kh * head_bytes,
                         v_layer + kh * head_bytes, q8, block, tables + r * width, lo, p + 1 - lo, scale,
                         head - kh * group, head - kh * group + per_task, scores, out + (r * heads + kh * group) * hd);
        }
        free(scores);
    }
    return failed ? -1 : 0;
}

/* ---- All decoder layers of a decode-only step in one call (models/fused_layers.py): the same functions in the
 * same order as the per-operator path, so the same bits; only the calls from Python are saved. ---- */

int genq_qdot_linear(const void *x, int x_bf16, int64_t m, int64_t k, int bits, const uint8_t *codes,
                     const uint16_t *d, const uint16_t *mn, int64_t n, void *out, int out_bf16);

struct genq_projection {  /* a QdotLinear without bias: its codes, scales and offsets (qdot.c's layouts) */
    const uint8_t *codes;
    const uint16_t *scales, *offsets;
    int64_t out_features, in_features, bits;
};

struct genq_layer {
    const float *input_norm, *post_norm;  /* RMSNorm weights (hidden,) */
    struct genq_projection qkv, o, gate_up, down;
};

struct genq_decode_step {
    int64_t rows, hidden, heads, kv_heads, head_dim, inter, n_blocks, block, width, window, kv_q8;
    float eps, scale;
    const float *cos, *sin;  /* (rows, head_dim) */
    const int64_t *write_index, *tables, *positions;  /* (rows,), (rows, width), (rows,) */
    uint8_t *k_cache, *v_cache;  /* (layers, kv_heads, n_blocks * block, row): bfloat16 rows, or 8-bit (kv_q8) */
};

static int project_rows(const struct genq_projection *p, const float *x, int64_t rows, float *out) {
    return genq_qdot_linear(x, 0, rows, p->in_features, (int)p->bits, p->codes, p->scales, p->offsets,
                            p->out_features, out, 0);
}

/* x (rows, hidden): the residual stream, updated in place through every layer (the last layer's MLP output
 * added). Returns 0, or -1 without scratch memory. */
int genq_decode_layers(const struct genq_layer *layers, int64_t n_layers, const struct genq_decode_step *s, float *x) {
    const int64_t r = s->rows, qkv_width = (s->heads + 2 * s->kv_heads) * s->head_dim, q_width = s->heads * s->head_dim;
    const int q8 = (int)s->kv_q8;
    const int64_t layer_stride = s->kv_heads * s->n_blocks * s->block * kv_row_bytes(s->head_dim, q8);
    float *buf = malloc((size_t)(r * (2 * s->hidden + qkv_width + 2 * q_width + 3 * s->inter)) * sizeof(float));
    if (!buf) return -1;
    float *y = buf, *h = y + r * s->hidden, *qkv = h + r * s->hidden, *q = qkv + r * qkv_width;
    float *attn = q + r * q_width, *gate_up = attn + r * q_width, *act = gate_up + r * 2 * s->inter;
    int failed = 0;
    for (int64_t i = 0; i < n_layers && !failed; i++) {
        const struct genq_layer *l = layers + i;
        uint8_t *k_layer = s->k_cache + i * layer_stride, *v_layer = s->v_cache + i * layer_stride;
        genq_add_rms_norm(x, i ? h : NULL, r, s->hidden, l->input_norm, s->eps, y);
        failed |= project_rows(&l->qkv, y, r, qkv);
        failed |= genq_rope_write(qkv, r, s->heads, s->kv_heads, s->head_dim, s->cos, s->sin, s->write_index,
                                  k_layer, v_layer, s->n_blocks * s->block, q8, q);
        failed |= genq_decode_attention(q, r, s->heads, s->kv_heads, s->head_dim, k_layer, v_layer, q8, s->n_blocks,
                                        s->block, s->tables, s->width, s->positions, s->window, s->scale, attn);
        failed |= project_rows(&l->o, attn, r, h);
        genq_add_rms_norm(x, h, r, s->hidden, l->post_norm, s->eps, y);
        failed |= project_rows(&l->gate_up, y, r, gate_up);
        genq_silu_mul(gate_up, r, s->inter, act);
        failed |= project_rows(&l->down, act, r, h);
    }
    if (!failed && n_layers)
        for (int64_t j = 0; j < r * s->hidden; j++) x[j] = x[j] + h[j];
    free(buf);
    return failed ? -1 : 0;
}
