/* oikyo's native CPU kernels for decoding steps (float32; see cpu_kernels.py).
 *
 * Decoding multiplies a few rows (one token per sequence) by every weight matrix of the model at
 * every step. The weights come from memory, not cache, so these kernels are about streaming them
 * at the memory's speed: each matrix is read once, in memory order, with software prefetches
 * PREFETCH floats ahead (the hardware prefetcher alone falls behind once each cache line also
 * carries several rows' arithmetic).
 *
 * 1. The base product of a linear layer, for a few rows:
 *
 *    oikyo_pack_panels(w, n, k, panels)   once per layer: w (n, k), row-major like nn.Linear's
 *        weight, into panels of PANEL output columns: panel p holds w[p*PANEL .. +PANEL, :]
 *        transposed, (k, PANEL) contiguous; the last panel is padded with zeros.
 *    oikyo_linear_rows(x, m, k, panels, n, bias, out, threads)   out (m, n) = x (m, k) @ w.T (+ bias)
 *        Panel by panel, ROWS rows at a time: for each k, one broadcast of x[i, k] per row and two
 *        vector multiply-adds into the row's PANEL accumulators, which stay in registers for the
 *        whole panel. Each panel comes from memory once; further row blocks find it in the cache.
 *        Built with -fopenmp, the panels are shared among ``threads`` OpenMP threads (each writes
 *        its own output columns); cpu_kernels.py builds it so only where the OpenMP runtime is the
 *        one torch already loaded (libgomp), so the kernel and torch's operators share one team.
 *    oikyo_threaded()   1 when built with OpenMP (the threads argument is honoured), else 0.
 *    oikyo_pack_panels_half(w, n, k, panels), oikyo_linear_rows_half(x, m, k, panels, n, bias, out,
 *        threads)   the same with the panels in IEEE half precision (uint16, rounded to nearest even):
 *        half the bytes to stream, each vector of weights widened to float32 (F16C's vcvtph2ps) before
 *        the same float32 multiply-adds. Only where the build has F16C (oikyo_half() is 1); elsewhere
 *        they do nothing.
 *
 * 2. The LoRA terms of a batch whose rows use one adapter, several or none:
 *
 *    oikyo_lora_add(x, in, out, out_features, a_cat, bt_cat, n_groups, groups, scales,
 *                   token_index, low)
 *    x:      (tokens, in) float32, contiguous
 *    out:    (tokens, out) float32, contiguous: the layer's output, to which the LoRA terms are added
 *    a_cat:  (R, in)      every loaded adapter's lora_A, stacked
 *    bt_cat: (R, out)     every loaded adapter's lora_B transposed, stacked the same way
 *    groups: (n_groups, 4) int64: start, end (the adapter's rows of a_cat / bt_cat), first, count
 *            (its tokens are token_index[first .. first + count))
 *    scales: (n_groups,)  the adapter's scaling (lora_alpha / r, or / sqrt(r) with rsLoRA)
 *    low:    scratch of at least max(count * (end - start)) floats
 *    For each adapter in use: low[i, j] = scale * dot(x[token_i], a_cat[start + j]), then
 *    out[token_i] += sum_j low[i, j] * bt_cat[start + j]: each adapter's matrices are read once,
 *    only for the tokens that use them.
 *
 * 3. The attention of a decoding step (one query token per sequence), over the slot KV cache:
 *
 *    oikyo_decode_attention(q, n, kv_heads, group, dim, keys, values, capacity, lengths, max_len,
 *                           scale, scores, out, threads)
 *    q, out:        (n, kv_heads, group, dim): the query heads, grouped by the key/value head they
 *                   share (grouped-query attention: group = query heads / kv_heads)
 *    keys, values:  (slots, kv_heads, capacity, dim), the cache buffers; row b reads slot b's
 *                   first lengths[b] columns (its own tokens; later columns hold stale keys)
 *    scores:        scratch of n * kv_heads * group * max_len floats, max_len >= every lengths[b]
 *    out[b, h, g] = softmax(scale * q[b, h, g] . keys[b, h, :len]) @ values[b, h, :len]
 *    Each (row, kv head) reads its keys and values once for all the group's query heads, on
 *    ``threads`` OpenMP threads. Scores, softmax and sums in float32, as PyTorch's math.
 *
 * 4. The small parts of a decoding step between its products (one thread: a few rows each):
 *
 *    oikyo_add_rms_norm(h, delta, rows, dim, weight, eps, out)
 *        h (rows, dim) += delta (when not NULL), in place: the residual stream; then
 *        out = h / sqrt(mean(h^2) + eps) * weight, the RMS norm of transformers' Llama-family models.
 *    oikyo_rope_cache(q, k, v, n, heads, kv_heads, dim, cos, sin, slots, positions, keys, values,
 *                     capacity)
 *        Rotary position embedding (the rotate-half form) of n tokens: q (n, heads, dim) rotated in
 *        place; k (n, kv_heads, dim) rotated and v (n, kv_heads, dim) copied into the cache buffers
 *        (slots, kv_heads, capacity, dim) at column positions[b] of slot slots[b]. cos, sin: (n, dim).
 *
 * Plain C99 plus GCC/Clang vector types (lowered to whatever SIMD the CPU has, AVX-512 to NEON, or
 * to scalar code) and __builtin_prefetch; no Python or torch headers. The omp simd loops need
 * -fopenmp-simd only; the base product's parallel loop needs -fopenmp (without it, one thread).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define PREFETCH 1024 /* floats (4 KiB) ahead; measured best of 256 / 1024 / 4096 on the test machine */

/* The vector type is the CPU's own width (wider GCC vectors than the hardware's are split into slow
 * code), and ROWS rows x 2 vectors of accumulators plus the two weight vectors fit its registers
 * (32 with AVX-512, 16 with AVX2 or SSE). The AVX-512 and AVX2 forms were measured faster than
 * oneDNN (cpu_kernels.py uses the base product with them); the 4-lane form is correct but unmeasured.
 * With AVX2, 6 rows (12 accumulators, 2 weight vectors and the broadcast: 15 of the 16 registers)
 * against 4, weights from memory, 2 threads, an AVX2-only AMD EPYC: 71 against 58 GFLOP/s at 8 rows,
 * 115 against 86 at 32, 120 against 92 at 48 (an earlier, noisier AVX2 host had measured 6 or 8 rows
 * the same as 4). */
#if defined(__AVX512F__)
#define LANES 16
#define ROWS 8
#elif defined(__AVX__)
#define LANES 8
#define ROWS 6
#else
#define LANES 4
#define ROWS 4
#endif
#define PANEL (2 * LANES)

typedef float vec __attribute__((vector_size(LANES * 4)));

static inline vec load_vec(const float *p)
{
    vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Half-precision panels: F16C widens 8 halves (AVX2) or 16 (AVX-512) into one float32 vector. */
#if defined(__F16C__) && LANES >= 8
#include <immintrin.h>
#define HALF 1
static inline vec load_half(const uint16_t *p)
{
#if LANES == 16
    const __m512 wide = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
#else
    const __m256 wide = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
#endif
    vec v;
    memcpy(&v, &wide, sizeof v);
    return v;
}
#else
#define HALF 0
static inline vec load_half(const uint16_t *p)
{
    (void)p;
    return (vec){0};
}
#endif

int64_t oikyo_half(void)
{
    return HALF;
}

/* Floats per vector and output columns per panel, for the Python side. */
int64_t oikyo_vector_lanes(void)
{
    return LANES;
}

int64_t oikyo_panel_width(void)
{
    return PANEL;
}

void oikyo_pack_panels(const float *w, int64_t n, int64_t k, float *panels)
{
    const int64_t count = (n + PANEL - 1) / PANEL;
    for (int64_t p = 0; p < count; p++)
        for (int64_t c = 0; c < k; c++)
            for (int64_t q = 0; q < PANEL; q++) {
                const int64_t j = p * PANEL + q;
                panels[(p * k + c) * PANEL + q] = j < n ? w[j * k + c] : 0.0f;
            }
}

void oikyo_pack_panels_half(const float *w, int64_t n, int64_t k, uint16_t *panels)
{
#if HALF
    const int64_t count = (n + PANEL - 1) / PANEL;
    for (int64_t p = 0; p < count; p++)
        for (int64_t c = 0; c < k; c++)
            for (int64_t q = 0; q < PANEL; q++) {
                const int64_t j = p * PANEL + q;
                panels[(p * k + c) * PANEL + q] = _cvtss_sh(j < n ? w[j * k + c] : 0.0f, _MM_FROUND_TO_NEAREST_INT);
            }
#else
    (void)w, (void)n, (void)k, (void)panels;
#endif
}

/* One panel (output columns first .. first + width) for M rows, M a compile-time constant at each
 * call so that the accumulators are registers.
 * ``half``, also a constant at each call: the panel holds halves (uint16), widened as they are loaded. */
static inline __attribute__((always_inline)) void panel_rows(const int M, const int half, const float *x, int64_t k,
                                                             const void *panel, const float *bias,
                                                             float *out, int64_t n, int64_t first,
                                                             int64_t width)
{
    vec lo[ROWS], hi[ROWS];
    for (int i = 0; i < M; i++)
        lo[i] = hi[i] = (vec){0};
    for (int64_t c = 0; c < k; c++) {
        vec w_lo, w_hi;
        if (half) { /* PREFETCH floats' worth of bytes ahead: the same distance in bytes */
            const uint16_t *w = (const uint16_t *)panel + c * PANEL;
            for (int line = 0; line < PANEL; line += 32)
                __builtin_prefetch(w + 2 * PREFETCH + line, 0, 3);
            w_lo = load_half(w), w_hi = load_half(w + LANES);
        } else {
            const float *w = (const float *)panel + c * PANEL;
            for (int line = 0; line < PANEL; line += 16) /* one prefetch per 64-byte cache line */
                __builtin_prefetch(w + PREFETCH + line, 0, 3);
            w_lo = load_vec(w), w_hi = load_vec(w + LANES);
        }
        for (int i = 0; i < M; i++) {
            const float xi = x[i * k + c];
            lo[i] += xi * w_lo;
            hi[i] += xi * w_hi;
        }
    }
    for (int i = 0; i < M; i++) {
        float sums[PANEL];
        memcpy(sums, &lo[i], sizeof lo[i]);
        memcpy(sums + LANES, &hi[i], sizeof hi[i]);
        float *o = out + i * n + first;
        for (int64_t q = 0; q < width; q++)
            o[q] = bias ? sums[q] + bias[first + q] : sums[q];
    }
}

/* Panels outermost: each panel comes from memory once, and row blocks after the first find it in
 * the cache (a panel is k * PANEL floats: 72 KiB at k = 576). */
int64_t oikyo_threaded(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

static inline __attribute__((always_inline)) void linear_rows(const int half, const float *x, int64_t m, int64_t k,
                                                              const void *panels, int64_t n, const float *bias,
                                                              float *out, int64_t threads)
{
    const int64_t count = (n + PANEL - 1) / PANEL;
    (void)threads;
    /* Static chunks: neighbouring panels (adjacent memory) on one thread. Small layers stay on one. */
#pragma omp parallel for schedule(static) num_threads((int)threads) if(threads > 1 && count >= 8)
    for (int64_t p = 0; p < count; p++) {
        const char *panel = (const char *)panels + p * k * PANEL * (half ? 2 : 4);
        const int64_t first = p * PANEL, width = n - first < PANEL ? n - first : PANEL;
        for (int64_t r = 0; r < m; r += ROWS) {
            const float *xr = x + r * k;
            float *o = out + r * n;
            switch (m - r < ROWS ? m - r : ROWS) {
            case 1: panel_rows(1, half, xr, k, panel, bias, o, n, first, width); break;
            case 2: panel_rows(2, half, xr, k, panel, bias, o, n, first, width); break;
            case 3: panel_rows(3, half, xr, k, panel, bias, o, n, first, width); break;
#if ROWS > 4
            case 4: panel_rows(4, half, xr, k, panel, bias, o, n, first, width); break;
            case 5: panel_rows(5, half, xr, k, panel, bias, o, n, first, width); break;
#endif
#if ROWS > 6
            case 6: panel_rows(6, half, xr, k, panel, bias, o, n, first, width); break;
            case 7: panel_rows(7, half, xr, k, panel, bias, o, n, first, width); break;
#endif
            default: panel_rows(ROWS, half, xr, k, panel, bias, o, n, first, width); break;
            }
        }
    }
}

void oikyo_linear_rows(const float *x, int64_t m, int64_t k, const float *panels, int64_t n,
                       const float *bias, float *out, int64_t threads)
{
    linear_rows(0, x, m, k, panels, n, bias, out, threads);
}

void oikyo_linear_rows_half(const float *x, int64_t m, int64_t k, const uint16_t *panels, int64_t n,
                            const float *bias, float *out, int64_t threads)
{
#if HALF
    linear_rows(1, x, m, k, panels, n, bias, out, threads);
#else
    (void)x, (void)m, (void)k, (void)panels, (void)n, (void)bias, (void)out, (void)threads;
#endif
}

void oikyo_lora_add(const float *x, int64_t in_features, float *out, int64_t out_features,
                    const float *a_cat, const float *bt_cat, int64_t n_groups,
                    const int64_t *groups, const float *scales, const int64_t *token_index,
                    float *low)
{
    for (int64_t g = 0; g < n_groups; g++) {
        const int64_t start = groups[4 * g], rank = groups[4 * g + 1] - start;
        const int64_t *rows = token_index + groups[4 * g + 2];
        const int64_t count = groups[4 * g + 3];
        const float scale = scales[g];
        for (int64_t j = 0; j < rank; j++) {
            const float *a = a_cat + (start + j) * in_features;
            for (int64_t k = 0; k < in_features; k += 16)
                __builtin_prefetch(a + PREFETCH + k, 0, 3);
            for (int64_t i = 0; i < count; i++) {
                const float *xi = x + rows[i] * in_features;
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int64_t k = 0; k < in_features; k++)
                    acc += xi[k] * a[k];
                low[i * rank + j] = acc * scale;
            }
        }
        for (int64_t j = 0; j < rank; j++) {
            const float *b = bt_cat + (start + j) * out_features;
            for (int64_t n = 0; n < out_features; n += 16)
                __builtin_prefetch(b + PREFETCH + n, 0, 3);
            for (int64_t i = 0; i < count; i++) {
                float *o = out + rows[i] * out_features;
                const float l = low[i * rank + j];
#pragma omp simd
                for (int64_t n = 0; n < out_features; n++)
                    o[n] += l * b[n];
            }
        }
    }
}

void oikyo_decode_attention(const float *q, int64_t n, int64_t kv_heads, int64_t group, int64_t dim,
                            const float *keys, const float *values, int64_t capacity,
                            const int64_t *lengths, int64_t max_len, float scale, float *scores,
                            float *out, int64_t threads)
{
    const int64_t units = n * kv_heads;
    (void)threads;
#pragma omp parallel for schedule(static) num_threads((int)threads) if(threads > 1 && units > 1)
    for (int64_t u = 0; u < units; u++) {
        const int64_t b = u / kv_heads, len = lengths[b];
        const float *k = keys + u * capacity * dim, *v = values + u * capacity * dim;
        const float *qu = q + u * group * dim;
        float *s = scores + u * group * max_len, *o = out + u * group * dim;
        for (int64_t t = 0; t < len; t++) { /* the scores: each key read once for the group */
            const float *kt = k + t * dim;
            for (int64_t g = 0; g < group; g++) {
                const float *qg = qu + g * dim;
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int64_t i = 0; i < dim; i++)
                    acc += qg[i] * kt[i];
                s[g * max_len + t] = acc * scale;
            }
        }
        for (int64_t g = 0; g < group; g++) { /* softmax, normalized in place */
            float *sg = s + g * max_len, top = sg[0], total = 0.0f;
            for (int64_t t = 1; t < len; t++)
                top = sg[t] > top ? sg[t] : top;
            for (int64_t t = 0; t < len; t++) {
                sg[t] = expf(sg[t] - top);
                total += sg[t];
            }
            const float inverse = 1.0f / total;
            for (int64_t t = 0; t < len; t++)
                sg[t] *= inverse;
        }
        memset(o, 0, (size_t)(group * dim) * sizeof(float));
        for (int64_t t = 0; t < len; t++) { /* the weighted values: each value read once */
            const float *vt = v + t * dim;
            for (int64_t g = 0; g < group; g++) {
                const float p = s[g * max_len + t];
                float *og = o + g * dim;
#pragma omp simd
                for (int64_t i = 0; i < dim; i++)
                    og[i] += p * vt[i];
            }
        }
    }
}

void oikyo_add_rms_norm(float *h, const float *delta, int64_t rows, int64_t dim, const float *weight,
                        float eps, float *out)
{
    for (int64_t r = 0; r < rows; r++) {
        float *hr = h + r * dim, *o = out + r * dim, squares = 0.0f;
        if (delta) {
            const float *dr = delta + r * dim;
#pragma omp simd reduction(+ : squares)
            for (int64_t i = 0; i < dim; i++) {
                const float value = hr[i] + dr[i];
                hr[i] = value;
                squares += value * value;
            }
        } else {
#pragma omp simd reduction(+ : squares)
            for (int64_t i = 0; i < dim; i++)
                squares += hr[i] * hr[i];
        }
        const float scale = 1.0f / sqrtf(squares / (float)dim + eps);
#pragma omp simd
        for (int64_t i = 0; i < dim; i++)
            o[i] = hr[i] * scale * weight[i];
    }
}

/* y = x * cos + rotate_half(x) * sin, rotate_half(x) = (-x[half:], x[:half]); y may be x. */
static inline void rotate(const float *x, float *y, const float *c, const float *s, int64_t half)
{
#pragma omp simd
    for (int64_t i = 0; i < half; i++) {
        const float a = x[i], b = x[i + half];
        y[i] = a * c[i] - b * s[i];
        y[i + half] = b * c[i + half] + a * s[i + half];
    }
}

void oikyo_rope_cache(float *q, const float *k, const float *v, int64_t n, int64_t heads, int64_t kv_heads,
                      int64_t dim, const float *cos, const float *sin, const int64_t *slots,
                      const int64_t *positions, float *keys, float *values, int64_t capacity)
{
    const int64_t half = dim / 2;
    for (int64_t b = 0; b < n; b++) {
        const float *c = cos + b * dim, *s = sin + b * dim;
        for (int64_t h = 0; h < heads; h++) {
            float *qh = q + (b * heads + h) * dim;
            rotate(qh, qh, c, s, half);
        }
        for (int64_t h = 0; h < kv_heads; h++) {
            const int64_t source = (b * kv_heads + h) * dim;
            const int64_t target = ((slots[b] * kv_heads + h) * capacity + positions[b]) * dim;
            rotate(k + source, keys + target, c, s, half);
            memcpy(values + target, v + source, (size_t)dim * sizeof(float));
        }
    }
}
