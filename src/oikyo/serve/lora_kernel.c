/* Each token's own LoRA term, for a batch whose rows use one adapter, several or none (see
 * lora_kernel.py).
 *
 * x:      (tokens, in) float32, contiguous
 * out:    (tokens, out) float32, contiguous: the layer's output, to which the LoRA terms are added
 * a_cat:  (R, in)      every loaded adapter's lora_A, stacked
 * bt_cat: (R, out)     every loaded adapter's lora_B transposed, stacked the same way
 * groups: (n_groups, 4) int64: start, end (the adapter's rows of a_cat / bt_cat), first, count
 *         (its tokens are token_index[first .. first + count))
 * scales: (n_groups,)  the adapter's scaling (lora_alpha / r, or / sqrt(r) with rsLoRA)
 * low:    scratch of at least max(count * (end - start)) floats
 *
 * For each adapter in use: low[i, j] = scale * dot(x[token_i], a_cat[start + j]), then
 * out[token_i] += sum_j low[i, j] * bt_cat[start + j]. Each adapter's matrices are read once, in
 * memory order, and only for the tokens that use them. Plain C99 over float pointers; the loops over
 * in / out are written so the compiler vectorizes them (omp simd, enabled by -fopenmp-simd, which
 * brings no OpenMP runtime).
 */
#include <stdint.h>

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
