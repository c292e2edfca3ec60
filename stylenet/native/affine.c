/* Per-channel affine map and activation in one pass over a channels-last map, float32 or bf16:
 *
 *     out[y, x, c] (+)= act(in[y, x, c] * scale[c] + shift[c]),   act(v) = v < 0 ? slope * v : v
 *
 * (slope 1: none, 0: ReLU, else a leaky ReLU; "+=" with accumulate). An instance norm with its
 * statistics known is such a map (scale = weight / sqrt(var + eps), shift = bias - mean * scale);
 * torch runs it, the activation and a residual add as separate passes, each a read and a write of
 * the whole map. Pixel (y, x) channel c is at in[y * iy + x * ix + c] (out likewise): views such
 * as the interior of a padded buffer are written in place. bf16 values are widened to float32 and
 * the result rounded to nearest even once (or kept in float32).
 */
#include <stdint.h>
#include <string.h>

typedef long idx;

/* Both sides computed, then one select: so that the loops below vectorize on AVX2 too (written
 * "v < 0 ? slope * v : v", GCC left them scalar for -march=znver3, 5x slower). A NaN stays NaN. */
static inline float act(float v, float slope)
{
    float neg = slope * v;
    return v < 0.0f ? neg : v;
}

static inline float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u); /* to nearest, ties to even */
    uint32_t quiet = u | 0x400000u;                     /* a NaN stays a (quiet) NaN */
    return (uint16_t)(((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded) >> 16);
}

#define F32_LOAD(v) (v)
#define F32_STORE(v) (v)

/* NAME(in, iy, ix, out, oy, ox, h, w, c, scale, shift, slope, accumulate) from elements of type TI
 * to elements of type TO, widened by LOADI / LOADO and narrowed by STORE. A pixel's channels are
 * one vector loop; in place (in == out, element for element: one type) it reads and writes through
 * one pointer, so that the loop still vectorizes (two pointers that may alias would send GCC to its
 * scalar version). bf16 in, float32 out: a bf16 encoder feeding float32 residual blocks. */
#define AFFINE_ACT(NAME, TI, TO, LOADI, LOADO, STORE)                                                      \
    int NAME(const TI *in, idx iy, idx ix, TO *out, idx oy, idx ox, idx h, idx w, idx c, const float *scale, \
             const float *shift, float slope, int accumulate)                                               \
    {                                                                                                       \
        _Pragma("omp parallel for schedule(static)") for (idx y = 0; y < h; y++)                            \
        {                                                                                                   \
            for (idx x = 0; x < w; x++) {                                                                   \
                TO *d = out + y * oy + x * ox;                                                              \
                const TI *s = in + y * iy + x * ix;                                                         \
                if ((const void *)s == (const void *)d) {                                                   \
                    TO *restrict p = d;                                                                     \
                    for (idx k = 0; k < c; k++) {                                                           \
                        float v = act(LOADO(p[k]) * scale[k] + shift[k], slope);                            \
                        p[k] = STORE(accumulate ? LOADO(p[k]) + v : v);                                     \
                    }                                                                                       \
                } else {                                                                                    \
                    const TI *restrict a = s;                                                               \
                    TO *restrict b = d;                                                                     \
                    if (accumulate)                                                                         \
                        for (idx k = 0; k < c; k++)                                                         \
                            b[k] = STORE(LOADO(b[k]) + act(LOADI(a[k]) * scale[k] + shift[k], slope));      \
                    else                                                                                    \
                        for (idx k = 0; k < c; k++)                                                         \
                            b[k] = STORE(act(LOADI(a[k]) * scale[k] + shift[k], slope));                    \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
        return 0;                                                                                           \
    }

AFFINE_ACT(instyle_affine_act_f32, float, float, F32_LOAD, F32_LOAD, F32_STORE)
AFFINE_ACT(instyle_affine_act_bf16, uint16_t, uint16_t, bf16_to_f32, bf16_to_f32, f32_to_bf16)
AFFINE_ACT(instyle_affine_act_bf16_f32, uint16_t, float, bf16_to_f32, F32_LOAD, F32_STORE)

/* The four phases of a decoder stage in one pass: NAME(in, iy, ix, h, w, c, out, oy, ox, pa, pb,
 * scale, shift, slope) writes, for every low-resolution pixel (i, j) and phase (a, b),
 *
 *     out[i * oy + j * ox + a * pa + b * pb + k] = act(in[(i + a) * iy + (j + b) * ix + (2 a + b) c + k] * scale[k] + shift[k])
 *
 * for k < c: the phases of the upsampling's 2x2 convolution (``ShiftedPhases``: phase (a, b)
 * shifted by (a, b), phase-major channels) normalized and activated, written interleaved (pa, pb:
 * the full-resolution map's row and pixel strides) or side by side in a space-to-depth map (pa =
 * 2 c, pb = c), pixel by pixel. Four calls, one per phase, each reading a quarter of every source
 * pixel and writing a quarter of every destination pixel, took 2.4x the time of one contiguous pass
 * over as many bytes (Zen 4, float32, 1024²: the last stage 20.8 ms against 8.8; this 14.0). */
#define PHASES_AFFINE_ACT(NAME, TI, TO, LOADI, STORE)                                                     \
    int NAME(const TI *in, idx iy, idx ix, idx h, idx w, idx c, TO *out, idx oy, idx ox, idx pa, idx pb,  \
             const float *scale, const float *shift, float slope)                                          \
    {                                                                                                      \
        _Pragma("omp parallel for schedule(static)") for (idx i = 0; i < h; i++)                           \
        {                                                                                                  \
            for (idx j = 0; j < w; j++)                                                                    \
                for (idx a = 0; a < 2; a++)                                                                \
                    for (idx b = 0; b < 2; b++) {                                                          \
                        const TI *restrict s = in + (i + a) * iy + (j + b) * ix + (2 * a + b) * c;         \
                        TO *restrict d = out + i * oy + j * ox + a * pa + b * pb;                          \
                        for (idx k = 0; k < c; k++)                                                        \
                            d[k] = STORE(act(LOADI(s[k]) * scale[k] + shift[k], slope));                   \
                    }                                                                                      \
        }                                                                                                  \
        return 0;                                                                                          \
    }

PHASES_AFFINE_ACT(instyle_phases_affine_act_f32, float, float, F32_LOAD, F32_STORE)
PHASES_AFFINE_ACT(instyle_phases_affine_act_bf16, uint16_t, uint16_t, bf16_to_f32, f32_to_bf16)
