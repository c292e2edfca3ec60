/* Per-channel mean and biased variance of a channels-last map, float32 or bf16, in one read:
 * the statistics of an instance norm, measured without writing anything of the map's size.
 *
 * Pixel (y, x) channel c is at in[y * iy + x * ix + c], so views (a crop, the interior of a padded
 * buffer, every other row) are measured where they lie. Precision: each value is taken relative
 * to its channel's first value (a shift near the mean, so the sum of squares does not cancel),
 * summed in float32 over runs of at most RUN pixels, and the runs' sums added in float64.
 *
 * torch measures a channels-last map through its batch-norm statistics kernel at about a third
 * of the memory's speed (docs/performance.md, "The instance norm's statistics in C").
 */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef long idx;

#define RUN 64 /* pixels summed in float32 before the float64 accumulators take them */

static inline float bf16_value(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#define F32_VALUE(v) (v)

/* NAME(in, iy, ix, h, w, c, mean, var): mean[c], var[c] (float32) of the h x w pixels, h w > 0.
 * Each thread sums its rows into its own accumulators, added up after. Returns 0, or -1 when
 * out of memory. */
#define MOMENTS(NAME, T, LOAD)                                                                     \
    int NAME(const T *in, idx iy, idx ix, idx h, idx w, idx c, float *mean, float *var)             \
    {                                                                                               \
        int threads = omp_get_max_threads();                                                        \
        double *acc = calloc((size_t)threads * 2 * c, sizeof(double));                             \
        float *runs = malloc((size_t)threads * 2 * c * sizeof(float));                             \
        float *shift = malloc((size_t)c * sizeof(float));                                           \
        if (acc == NULL || runs == NULL || shift == NULL) {                                         \
            free(acc);                                                                              \
            free(runs);                                                                             \
            free(shift);                                                                            \
            return -1;                                                                              \
        }                                                                                           \
        for (idx k = 0; k < c; k++)                                                                 \
            shift[k] = LOAD(in[k]);                                                                 \
        _Pragma("omp parallel num_threads(threads)")                                                \
        {                                                                                           \
            int t = omp_get_thread_num();                                                           \
            double *restrict a = acc + (size_t)t * 2 * c;                                           \
            float *restrict s = runs + (size_t)t * 2 * c, *restrict q = s + c;                      \
            _Pragma("omp for schedule(static)") for (idx y = 0; y < h; y++)                         \
            {                                                                                       \
                for (idx x0 = 0; x0 < w; x0 += RUN) {                                               \
                    idx x1 = w - x0 < RUN ? w : x0 + RUN;                                           \
                    for (idx k = 0; k < c; k++)                                                     \
                        s[k] = q[k] = 0.0f;                                                         \
                    for (idx x = x0; x < x1; x++) {                                                 \
                        const T *restrict p = in + y * iy + x * ix;                                 \
                        for (idx k = 0; k < c; k++) {                                               \
                            float v = LOAD(p[k]) - shift[k];                                        \
                            s[k] += v;                                                              \
                            q[k] += v * v;                                                          \
                        }                                                                           \
                    }                                                                               \
                    for (idx k = 0; k < c; k++) {                                                   \
                        a[k] += s[k];                                                               \
                        a[c + k] += q[k];                                                           \
                    }                                                                               \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
        double n = (double)h * (double)w;                                                           \
        for (idx k = 0; k < c; k++) {                                                               \
            double sum = 0.0, squares = 0.0;                                                        \
            for (int t = 0; t < threads; t++) {                                                     \
                sum += acc[(size_t)t * 2 * c + k];                                                  \
                squares += acc[(size_t)t * 2 * c + c + k];                                          \
            }                                                                                       \
            double d = sum / n, v = squares / n - d * d;                                            \
            mean[k] = (float)(shift[k] + d);                                                        \
            var[k] = (float)(v > 0.0 ? v : 0.0);                                                    \
        }                                                                                           \
        free(acc);                                                                                  \
        free(runs);                                                                                 \
        free(shift);                                                                                \
        return 0;                                                                                   \
    }

MOMENTS(instyle_moments_f32, float, F32_VALUE)
MOMENTS(instyle_moments_bf16, uint16_t, bf16_value)
