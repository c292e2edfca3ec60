/* Winograd's input and output transforms for channels-last float32 maps, F(2x2, 3x3), F(4x4, 3x3),
 * F(6x6, 3x3), F(8x8, 3x3), F(3x3, 2x2), F(7x7, 2x2), F(4x4, 5x5) and F(6x6, 5x5), and the whole
 * convolution with them (instyle_winograd_conv, at the end: the products by a register-blocked
 * kernel of our own, a few tiles per thread at a time); stylenet/winograd.py calls the convolution,
 * or (F(2x2) and F(4x4) only) the transforms with torch's bmm between them.
 *
 * The transforms are sums of a few terms per tile; done with torch ops they are a few hundred
 * passes over memory per band of tiles, and took more time than the products. Here each tile is
 * read once and its n x n transformed values written once, a block of channels at a time (the
 * channels are contiguous in a channels-last map, so the inner loops are vector loops).
 *
 * Layouts (element strides; the channel stride is 1 everywhere):
 *   src:  the padded input, pixel (y, x) channel c at src[y * sy + x * sx + c]
 *   u:    transformed tiles, (n * n, tiles, c_in): u[(n k + l) * tiles * c_in + t * c_in + c]
 *   m:    the products, (n * n, tiles, c_out), laid out as u
 *   dst:  the output, pixel (y, x) channel c at dst[y * dy + x * dx + c]
 * A band holds `rows` x `cols` tiles, tile t = r * cols + q covering output pixels
 * (mm * r + i, mm * q + j) and input pixels (mm * r + i, mm * q + j) for i, j < n.
 */
#include <omp.h>
#include <stddef.h>
#include <stdlib.h>

#define CB 64 /* channels per block: a tile's n x n x CB intermediates stay in L1 */
/* The n = 10 transforms' block with AVX-512 (F(8x8, 3x3), F(6x6, 5x5)): the input transform's 10 x
 * 10 x 64 intermediates (25.6 KB) left too little of a 32 KB L1 beside the tile's input rows, and
 * 32 channels ran it 30 % faster on the Zen 4 (one thread); their output transforms take the same
 * block. With AVX2, 32 was slower (docs/performance.md, "Prefetched input tiles"). */
#if defined(__AVX512F__)
#define CB_N10 32
#else
#define CB_N10 CB
#endif

typedef long idx;

/* ---- the 1D transforms: o[0 .. n) (B^T) or o[0 .. m) (A^T) of the n values p[0], p[s], .. p[(n - 1) s] */

/* F(2x2, 3x3), points 0, 1, -1 and infinity */
#define BT_F2(o, p, s)              \
    o[0] = (p)[0] - (p)[2 * (s)];   \
    o[1] = (p)[s] + (p)[2 * (s)];   \
    o[2] = (p)[2 * (s)] - (p)[s];   \
    o[3] = (p)[s] - (p)[3 * (s)];
#define AT_F2(o, p, s)                         \
    o[0] = (p)[0] + (p)[s] + (p)[2 * (s)];     \
    o[1] = (p)[s] - (p)[2 * (s)] - (p)[3 * (s)];

/* F(3x3, 2x2), the same points: the upsampling's 2x2 convolutions */
#define BT_F3R2(o, p, s)            \
    o[0] = (p)[0] - (p)[2 * (s)];   \
    o[1] = (p)[s] + (p)[2 * (s)];   \
    o[2] = (p)[2 * (s)] - (p)[s];   \
    o[3] = (p)[3 * (s)] - (p)[s];
#define AT_F3R2(o, p, s)                       \
    o[0] = (p)[0] + (p)[s] + (p)[2 * (s)];     \
    o[1] = (p)[s] - (p)[2 * (s)];              \
    o[2] = (p)[s] + (p)[2 * (s)] + (p)[3 * (s)];

/* F(4x4, 3x3), points 0, 1, -1, 2, -2 and infinity */
#define BT_F4(o, p, s)                                                                                  \
    {                                                                                                   \
        float d0 = (p)[0], d1 = (p)[s], d2 = (p)[2 * (s)], d3 = (p)[3 * (s)], d4 = (p)[4 * (s)];        \
        float d5 = (p)[5 * (s)];                                                                        \
        o[0] = 4.0f * d0 - 5.0f * d2 + d4;                                                              \
        o[1] = -4.0f * (d1 + d2) + d3 + d4;                                                             \
        o[2] = 4.0f * (d1 - d2) - d3 + d4;                                                              \
        o[3] = 2.0f * (d3 - d1) - d2 + d4;                                                              \
        o[4] = 2.0f * (d1 - d3) - d2 + d4;                                                              \
        o[5] = 4.0f * d1 - 5.0f * d3 + d5;                                                              \
    }
#define AT_F4(o, p, s)                                                                                  \
    {                                                                                                   \
        float s0 = (p)[0], s1 = (p)[s], s2 = (p)[2 * (s)], s3 = (p)[3 * (s)], s4 = (p)[4 * (s)];        \
        float s5 = (p)[5 * (s)];                                                                        \
        o[0] = s0 + s1 + s2 + s3 + s4;                                                                  \
        o[1] = s1 - s2 + 2.0f * (s3 - s4);                                                              \
        o[2] = s1 + s2 + 4.0f * (s3 + s4);                                                              \
        o[3] = s1 - s2 + 8.0f * (s3 - s4) + s5;                                                         \
    }

/* B^T's rows i and i + 1 for a pair of points +-a, from their shared even and odd parts */
#define PAIR(o, i, e, q) o[i] = (e) + (q), o[(i) + 1] = (e) - (q);

/* n = 8, points 0, 1, -1, 2, -2, 1/2, -1/2 and infinity: F(4x4, 5x5), F(6x6, 3x3), F(7x7, 2x2). B^T:
 * (1, 0, -21/4, 0, 21/4, 0, -1, 0), (0, 1, 1, -17/4, -17/4, 1, 1, 0), (0, -1, 1, 17/4, -17/4, -1,
 * 1, 0), (0, 2, 4, -5/2, -5, 1/2, 1, 0), (0, -2, 4, 5/2, -5, -1/2, 1, 0), (0, 1/2, 1/4, -5/2, -5/4,
 * 2, 1, 0), (0, -1/2, 1/4, 5/2, -5/4, -2, 1, 0), (0, -1, 0, 21/4, 0, -21/4, 0, 1) (stylenet/winograd.py
 * F4R5.bt), each pair of rows from a shared even and odd part. A^T, its first M = 4, 6 or 7 rows:
 * (1, 1, 1, 1, 1, 1, 1, 0), (0, 1, -1, 1/2, -1/2, 2, -2, 0), (0, 1, 1, 1/4, 1/4, 4, 4, 0), (0, 1,
 * -1, 1/8, -1/8, 8, -8, 0), (0, 1, 1, 1/16, 1/16, 16, 16, 0), (0, 1, -1, 1/32, -1/32, 32, -32, 0),
 * (0, 1, 1, 1/64, 1/64, 64, 64, 0), the last row's last entry 1 (F4R5.at, F6.at, F7R2.at). */
#define BT_N8(o, p, s)                                                                                  \
    {                                                                                                   \
        float d0 = (p)[0], d1 = (p)[s], d2 = (p)[2 * (s)], d3 = (p)[3 * (s)], d4 = (p)[4 * (s)];        \
        float d5 = (p)[5 * (s)], d6 = (p)[6 * (s)], d7 = (p)[7 * (s)];                                  \
        float e1 = d2 + d6 - 4.25f * d4, q1 = d1 + d5 - 4.25f * d3;                                     \
        float e2 = 4.0f * d2 + d6 - 5.0f * d4, q2 = 2.0f * d1 + 0.5f * d5 - 2.5f * d3;                  \
        float e3 = 0.25f * d2 + d6 - 1.25f * d4, q3 = 0.5f * d1 + 2.0f * d5 - 2.5f * d3;                \
        o[0] = d0 - d6 + 5.25f * (d4 - d2);                                                             \
        PAIR(o, 1, e1, q1) PAIR(o, 3, e2, q2) PAIR(o, 5, e3, q3)                                        \
        o[7] = d7 - d1 + 5.25f * (d3 - d5);                                                             \
    }
#define AT_N8(M, o, p, s)                                                                               \
    {                                                                                                   \
        float a1 = (p)[s] + (p)[2 * (s)], b1 = (p)[s] - (p)[2 * (s)];                                   \
        float a2 = (p)[3 * (s)] + (p)[4 * (s)], b2 = (p)[3 * (s)] - (p)[4 * (s)];                       \
        float a3 = (p)[5 * (s)] + (p)[6 * (s)], b3 = (p)[5 * (s)] - (p)[6 * (s)];                       \
        o[0] = (p)[0] + a1 + a2 + a3;                                                                   \
        o[1] = b1 + 0.5f * b2 + 2.0f * b3;                                                              \
        o[2] = a1 + 0.25f * a2 + 4.0f * a3;                                                             \
        o[3] = b1 + 0.125f * b2 + 8.0f * b3;                                                            \
        if (M >= 6) {                                                                                   \
            o[4] = a1 + 0.0625f * a2 + 16.0f * a3;                                                      \
            o[5] = b1 + 0.03125f * b2 + 32.0f * b3;                                                     \
        }                                                                                               \
        if (M == 7)                                                                                     \
            o[6] = a1 + 0.015625f * a2 + 64.0f * a3;                                                    \
        o[M - 1] += (p)[7 * (s)];                                                                       \
    }
/* n = 10, points 0, +-1/2, +-3/4, +-5/4, +-5/2 and infinity: F(8x8, 3x3) and F(6x6, 5x5)
 * (stylenet/winograd.py F8 and F6R5, whose matrices toom_cook derives; of the sets of four
 * symmetric pairs tried, one of the most accurate in float32 whose powers are exact). Each B^T row
 * but the first and last is a polynomial's coefficients, the pair +-a sharing their even (e) and
 * odd (q) parts; A^T's row i is the points' i-th powers, the last row's last entry 1. */
#define BT_N10(o, p, s)                                                                                 \
    {                                                                                                   \
        float d0 = (p)[0], d1 = (p)[s], d2 = (p)[2 * (s)], d3 = (p)[3 * (s)], d4 = (p)[4 * (s)];        \
        float d5 = (p)[5 * (s)], d6 = (p)[6 * (s)], d7 = (p)[7 * (s)], d8 = (p)[8 * (s)];               \
        float d9 = (p)[9 * (s)];                                                                        \
        float e1 = -5.4931640625f * d2 + 14.16015625f * d4 - 8.375f * d6 + d8;                          \
        float q1 = -2.74658203125f * d1 + 7.080078125f * d3 - 4.1875f * d5 + 0.5f * d7;                 \
        float e2 = -2.44140625f * d2 + 11.71875f * d4 - 8.0625f * d6 + d8;                              \
        float q2 = -1.8310546875f * d1 + 8.7890625f * d3 - 6.046875f * d5 + 0.75f * d7;                 \
        float e3 = -0.87890625f * d2 + 5.21875f * d4 - 7.0625f * d6 + d8;                               \
        float q3 = -1.0986328125f * d1 + 6.5234375f * d3 - 8.828125f * d5 + 1.25f * d7;                 \
        float e4 = -0.2197265625f * d2 + 1.41015625f * d4 - 2.375f * d6 + d8;                           \
        float q4 = -0.54931640625f * d1 + 3.525390625f * d3 - 5.9375f * d5 + 2.5f * d7;                 \
        o[0] = 1.373291015625f * d0 - 9.033203125f * d2 + 16.25390625f * d4 - 8.625f * d6 + d8;         \
        PAIR(o, 1, e1, q1) PAIR(o, 3, e2, q2) PAIR(o, 5, e3, q3) PAIR(o, 7, e4, q4)                     \
        o[9] = 1.373291015625f * d1 - 9.033203125f * d3 + 16.25390625f * d5 - 8.625f * d7 + d9;         \
    }
#define AT_N10(M, o, p, s)                                                                              \
    {                                                                                                   \
        float a1 = (p)[s] + (p)[2 * (s)], b1 = (p)[s] - (p)[2 * (s)];                                   \
        float a2 = (p)[3 * (s)] + (p)[4 * (s)], b2 = (p)[3 * (s)] - (p)[4 * (s)];                       \
        float a3 = (p)[5 * (s)] + (p)[6 * (s)], b3 = (p)[5 * (s)] - (p)[6 * (s)];                       \
        float a4 = (p)[7 * (s)] + (p)[8 * (s)], b4 = (p)[7 * (s)] - (p)[8 * (s)];                       \
        o[0] = (p)[0] + a1 + a2 + a3 + a4;                                                              \
        o[1] = 0.5f * b1 + 0.75f * b2 + 1.25f * b3 + 2.5f * b4;                                         \
        o[2] = 0.25f * a1 + 0.5625f * a2 + 1.5625f * a3 + 6.25f * a4;                                   \
        o[3] = 0.125f * b1 + 0.421875f * b2 + 1.953125f * b3 + 15.625f * b4;                            \
        o[4] = 0.0625f * a1 + 0.31640625f * a2 + 2.44140625f * a3 + 39.0625f * a4;                      \
        o[5] = 0.03125f * b1 + 0.2373046875f * b2 + 3.0517578125f * b3 + 97.65625f * b4;                \
        if (M == 8) {                                                                                   \
            o[6] = 0.015625f * a1 + 0.177978515625f * a2 + 3.814697265625f * a3 + 244.140625f * a4;     \
            o[7] = 0.0078125f * b1 + 0.13348388671875f * b2 + 4.76837158203125f * b3                    \
                   + 610.3515625f * b4;                                                                 \
        }                                                                                               \
        o[M - 1] += (p)[9 * (s)];                                                                       \
    }
#define AT_F8(o, p, s) AT_N10(8, o, p, s)
#define AT_F6R5(o, p, s) AT_N10(6, o, p, s)

#define AT_F4R5(o, p, s) AT_N8(4, o, p, s)
#define AT_F6(o, p, s) AT_N8(6, o, p, s)
#define AT_F7R2(o, p, s) AT_N8(7, o, p, s)

/* ---- a tile's transforms: n x n inputs -> B^T d B, m x m outputs <- A^T M A ---- */

/* NAME(src, sy, sx, c_in, u, plane): u[(N k + l) plane + c] := (B^T d B)[k][l] for channel c of the
 * N x N tile whose top-left pixel is src (strides sy, sx), the 1D transform BT applied to the
 * rows, then to the columns, a block of BLOCK channels at a time. Every loop over a block's channels
 * is marked `omp simd`: GCC left the second pass (N strided output streams) scalar without it. */
#define INPUT_TILE(NAME, N, BT, BLOCK)                                                                    \
    static void NAME(const float *restrict src, idx sy, idx sx, idx c_in, float *restrict u, idx plane)   \
    {                                                                                                     \
        float tmp[N][N][BLOCK];                                                                           \
        for (idx c0 = 0; c0 < c_in; c0 += BLOCK) {                                                        \
            idx cb = c_in - c0 < BLOCK ? c_in - c0 : BLOCK;                                               \
            for (int i = 0; i < N; i++) { /* d B: each input row of the tile */                           \
                const float *restrict row = src + i * sy + c0;                                            \
                _Pragma("omp simd") for (idx c = 0; c < cb; c++) {                                        \
                    float r[N];                                                                           \
                    BT(r, row + c, sx)                                                                    \
                    for (int q = 0; q < N; q++)                                                           \
                        tmp[i][q][c] = r[q];                                                              \
                }                                                                                         \
            }                                                                                             \
            for (int l = 0; l < N; l++) { /* B^T (d B): each column */                                    \
                float *restrict out = u + l * plane + c0;                                                 \
                _Pragma("omp simd") for (idx c = 0; c < cb; c++) {                                        \
                    float r[N];                                                                           \
                    BT(r, &tmp[0][l][c], N * BLOCK)                                                       \
                    for (int q = 0; q < N; q++)                                                           \
                        out[q * N * plane + c] = r[q];                                                    \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
    }

/* NAME(m, plane, c_out, dst, dy, dx): dst's M x M pixels from (dst, strides dy, dx) := A^T M A for
 * channel c of the tile's products m[(N k + l) plane + c]. */
#define OUTPUT_TILE(NAME, N, M, AT, BLOCK)                                                               \
    static void NAME(const float *restrict m, idx plane, idx c_out, float *restrict dst, idx dy, idx dx) \
    {                                                                                                    \
        float tmp[N][M][BLOCK];                                                                          \
        for (idx c0 = 0; c0 < c_out; c0 += BLOCK) {                                                      \
            idx cb = c_out - c0 < BLOCK ? c_out - c0 : BLOCK;                                            \
            for (int k = 0; k < N; k++) { /* M A: each row of tile positions */                          \
                const float *restrict row = m + N * k * plane + c0;                                      \
                _Pragma("omp simd") for (idx c = 0; c < cb; c++) {                                       \
                    float s[M];                                                                          \
                    AT(s, row + c, plane)                                                                \
                    for (int q = 0; q < M; q++)                                                          \
                        tmp[k][q][c] = s[q];                                                             \
                }                                                                                        \
            }                                                                                            \
            for (int j = 0; j < M; j++) { /* A^T (M A): each output column of the tile */                \
                float *restrict out = dst + j * dx + c0;                                                 \
                _Pragma("omp simd") for (idx c = 0; c < cb; c++) {                                       \
                    float y[M];                                                                          \
                    AT(y, &tmp[0][j][c], M * BLOCK)                                                      \
                    for (int q = 0; q < M; q++)                                                          \
                        out[q * dy + c] = y[q];                                                          \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    }

INPUT_TILE(f2_input_tile, 4, BT_F2, CB)
OUTPUT_TILE(f2_output_tile, 4, 2, AT_F2, CB)
INPUT_TILE(f3r2_input_tile, 4, BT_F3R2, CB)
OUTPUT_TILE(f3r2_output_tile, 4, 3, AT_F3R2, CB)
INPUT_TILE(f4_input_tile, 6, BT_F4, CB)
OUTPUT_TILE(f4_output_tile, 6, 4, AT_F4, CB)
INPUT_TILE(f8_input_tile, 8, BT_N8, CB)
OUTPUT_TILE(f8_output_tile4, 8, 4, AT_F4R5, CB)
OUTPUT_TILE(f8_output_tile6, 8, 6, AT_F6, CB)
OUTPUT_TILE(f8_output_tile7, 8, 7, AT_F7R2, CB)
INPUT_TILE(f10_input_tile, 10, BT_N10, CB_N10)
OUTPUT_TILE(f10_output_tile8, 10, 8, AT_F8, CB_N10)
OUTPUT_TILE(f10_output_tile6, 10, 6, AT_F6R5, CB_N10)

/* ---- entry points: a band of rows x cols tiles, its tiles split among OpenMP's threads ---- */

/* u := B^T d B for every tile of the band whose top-left input pixel is src. */
int instyle_winograd_input(int mm, const float *src, idx sy, idx sx, idx c_in, idx rows, idx cols, float *u)
{
    if (mm != 2 && mm != 4)
        return -1;
    idx tiles = rows * cols, plane = tiles * c_in;
#pragma omp parallel for schedule(static)
    for (idx t = 0; t < tiles; t++) {
        const float *s = src + (t / cols) * mm * sy + (t % cols) * mm * sx;
        if (mm == 4)
            f4_input_tile(s, sy, sx, c_in, u + t * c_in, plane);
        else
            f2_input_tile(s, sy, sx, c_in, u + t * c_in, plane);
    }
    return 0;
}

/* dst := A^T M A for every tile of the band whose top-left output pixel is dst. */
int instyle_winograd_output(int mm, const float *m, idx c_out, idx rows, idx cols, float *dst, idx dy, idx dx)
{
    if (mm != 2 && mm != 4)
        return -1;
    idx tiles = rows * cols, plane = tiles * c_out;
#pragma omp parallel for schedule(static)
    for (idx t = 0; t < tiles; t++) {
        float *d = dst + (t / cols) * mm * dy + (t % cols) * mm * dx;
        if (mm == 4)
            f4_output_tile(m + t * c_out, plane, c_out, d, dy, dx);
        else
            f2_output_tile(m + t * c_out, plane, c_out, d, dy, dx);
    }
    return 0;
}

/* ---- the whole convolution, fused: transforms and products per small group of tiles ---- */

/* Above, a band's transformed tiles and their products make a round trip through memory
 * between the calls (and torch's bmm splits its work among the threads by plane, the transforms
 * by tile). Here each thread takes a group of `group` tiles at a time: transforms them into its
 * own buffer, multiplies each of the n² planes by that plane's (C_in, C_out) kernel with the
 * register-blocked product below, and transforms the products out, all in its own cache. */

#if defined(__AVX512F__)
#define VL 16
#define MR 12 /* rows (tiles) of a product block: 2 MR accumulators + 3 operands fit 32 registers */
#else
#define VL 8 /* AVX2 (or SSE: GCC splits the vectors) */
#define MR 6 /* 2 MR accumulators + 3 operands fit 16 registers */
#endif
#define NR (2 * VL) /* a product block's columns (output channels) */
#define PLANE_SKEW 16

typedef float vfloat __attribute__((vector_size(VL * sizeof(float)), aligned(sizeof(float))));

/* c[MR x NR] := a[MR x k] b[k x NR] (row strides lda, NR: a packed panel, ldc); the accumulators
 * in registers. */
static inline void product_block(idx k, const float *restrict a, idx lda, const float *restrict b, float *restrict c,
                                 idx ldc)
{
    vfloat acc0[MR], acc1[MR];
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++)
        acc0[r] = acc1[r] = (vfloat){0};
    for (idx i = 0; i < k; i++) {
        vfloat b0 = *(const vfloat *)(b + i * NR), b1 = *(const vfloat *)(b + i * NR + VL);
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            float ar = a[r * lda + i];
            acc0[r] += ar * b0;
            acc1[r] += ar * b1;
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
        *(vfloat *)(c + r * ldc) = acc0[r];
        *(vfloat *)(c + r * ldc + VL) = acc1[r];
    }
}

/* The same for a last panel of one vector (VL columns, rows still NR apart): 2 MR rows of it at a
 * time, as many accumulators as above. */
static inline void product_block_narrow(idx k, const float *restrict a, idx lda, const float *restrict b,
                                        float *restrict c, idx ldc)
{
    vfloat acc[2 * MR];
#pragma GCC unroll 32
    for (int r = 0; r < 2 * MR; r++)
        acc[r] = (vfloat){0};
    for (idx i = 0; i < k; i++) {
        vfloat b0 = *(const vfloat *)(b + i * NR);
#pragma GCC unroll 32
        for (int r = 0; r < 2 * MR; r++)
            acc[r] += a[r * lda + i] * b0;
    }
#pragma GCC unroll 32
    for (int r = 0; r < 2 * MR; r++)
        *(vfloat *)(c + r * ldc) = acc[r];
}

/* The output channels a product block covers, the columns of a packed kernel's panel: the fused
 * convolution's kc is a multiple of VL (instyle_winograd_kernel_columns), and runs fastest as a
 * multiple of NR. */
int instyle_winograd_block_channels(void) { return NR; }
int instyle_winograd_kernel_columns(void) { return VL; }

/* The tile's transforms for F(mm x mm, r x r). */
typedef void (*input_tile_fn)(const float *restrict, idx, idx, idx, float *restrict, idx);
typedef void (*output_tile_fn)(const float *restrict, idx, idx, float *restrict, idx, idx);

static int tile_transforms(int mm, int r, input_tile_fn *in, output_tile_fn *out)
{
    if (mm == 2 && r == 3)
        *in = f2_input_tile, *out = f2_output_tile;
    else if (mm == 4 && r == 3)
        *in = f4_input_tile, *out = f4_output_tile;
    else if (mm == 6 && r == 3)
        *in = f8_input_tile, *out = f8_output_tile6;
    else if (mm == 3 && r == 2)
        *in = f3r2_input_tile, *out = f3r2_output_tile;
    else if (mm == 4 && r == 5)
        *in = f8_input_tile, *out = f8_output_tile4;
    else if (mm == 7 && r == 2)
        *in = f8_input_tile, *out = f8_output_tile7;
    else if (mm == 8 && r == 3)
        *in = f10_input_tile, *out = f10_output_tile8;
    else if (mm == 6 && r == 5)
        *in = f10_input_tile, *out = f10_output_tile6;
    else
        return -1;
    return 0;
}

/* One fused convolution's arguments and the shapes derived from them. */
struct conv {
    int mm, r;
    const float *src, *kernel, *bias;
    float *dst;
    idx sy, sx, c_in, h, w, kc, c_out, dy, dx;
    input_tile_fn input_tile;
    output_tile_fn output_tile;
    idx n, nn, cols, tiles; /* n = mm + r - 1 tile positions per side, tiles in all */
    idx parts, cp, ty, tx;  /* the output's parts (one, or the four phases), their channels, a tile's strides */
    idx padded, us, ms;     /* a group's rows in whole product blocks, the planes' strides */
};

/* The input pixels of the tile PREFETCH_AHEAD tiles after tile t (if a whole one), asked for
 * into the L2 cache, a line at a time: the input transform had waited on them, one row of the tile
 * after another, the hardware prefetchers following none of its n short runs per row far enough
 * (F(6x6, 5x5) on 128 channels at 512², the transform alone 26.9 -> 15.0 ms with blocks of 32;
 * docs/performance.md, "Prefetched input tiles"). */
#define PREFETCH_AHEAD 3
static void prefetch_tile(const struct conv *c, idx t)
{
    idx next = t + PREFETCH_AHEAD;
    if (next >= c->tiles)
        return;
    idx y0 = next / c->cols * c->mm, x0 = next % c->cols * c->mm;
    if (y0 + c->mm > c->h || x0 + c->mm > c->w)
        return;
    /* (the fields read into locals first: read through c in the loops, the convolution ran 4-7 % slower) */
    const char *s = (const char *)(c->src + y0 * c->sy + x0 * c->sx);
    idx n = c->n, bytes = c->c_in * (idx)sizeof(float), row = c->sy * (idx)sizeof(float);
    idx pixel = c->sx * (idx)sizeof(float);
    for (idx i = 0; i < n; i++)
        for (idx j = 0; j < n; j++)
            for (idx k = 0; k < bytes; k += 64)
                __builtin_prefetch(s + i * row + j * pixel + k, 0, 2);
}

/* Tile t0 + t's inputs into row t of u (partial tiles gathered, zero past the map). */
static void tile_input(const struct conv *c, idx t0, idx t, float *u, float *edge_in)
{
    idx n = c->n, c_in = c->c_in, y0 = (t0 + t) / c->cols * c->mm, x0 = (t0 + t) % c->cols * c->mm;
    const float *s = c->src + y0 * c->sy + x0 * c->sx;
    prefetch_tile(c, t0 + t);
    if (y0 + c->mm <= c->h && x0 + c->mm <= c->w) {
        c->input_tile(s, c->sy, c->sx, c_in, u + t * c_in, c->us);
        return;
    }
    idx vy = c->h + c->r - 1 - y0, vx = c->w + c->r - 1 - x0;
    for (idx i = 0; i < n; i++)
        for (idx j = 0; j < n; j++)
            for (idx k = 0; k < c_in; k++)
                edge_in[(i * n + j) * c_in + k] = i < vy && j < vx ? s[i * c->sy + j * c->sx + k] : 0.0f;
    c->input_tile(edge_in, n * c_in, c_in, c_in, u + t * c_in, c->us);
}

/* The products of plane p for the group's `count` tiles: m_p := u_p kernel_p, the kernel's plane
 * packed in panels of NR columns (each C_in x NR, contiguous: the rows a product block reads one
 * after another, where with the rows of all kc columns 512 bytes apart the Zen 1 EPYC's hardware
 * prefetch stopped at every 4 KB page, and every panel but the cache's first eighth collided in
 * the L1's sets; F(6x6, 3x3) at 128 channels, 256²: 94 -> 74 ms), the last of them holding only
 * one vector of columns where kc is an odd number of vectors. */
static void plane_products(const struct conv *c, idx p, idx count, const float *u, float *m)
{
    idx c_in = c->c_in, kc = c->kc, wide = kc / NR * NR, panels = (kc + NR - 1) / NR;
    const float *up = u + p * c->us, *kp = c->kernel + p * panels * c_in * NR;
    float *mp = m + p * c->ms;
    for (idx j = 0; j < wide; j += NR) /* a panel of the kernel stays in L1 */
        for (idx row = 0; row < count; row += MR)
            product_block(c_in, up + row * c_in, c_in, kp + j * c_in, mp + row * kc + j, kc);
    if (wide < kc) /* one vector of columns left */
        for (idx row = 0; row < count; row += 2 * MR)
            product_block_narrow(c_in, up + row * c_in, c_in, kp + wide * c_in, mp + row * kc + wide, kc);
}

/* Tile t0 + t's outputs from row t of m, plus the bias; with acc, their sums and squares. */
static void tile_output(const struct conv *c, idx t0, idx t, const float *m, float *edge_out, double *acc)
{
    idx mm = c->mm, cp = c->cp, ty = c->ty, tx = c->tx;
    idx y0 = (t0 + t) / c->cols * mm, x0 = (t0 + t) % c->cols * mm;
    idx vy = c->h - y0 < mm ? c->h - y0 : mm, vx = c->w - x0 < mm ? c->w - x0 : mm; /* valid outputs */
    for (idx q = 0; q < c->parts; q++) {
        float *d = c->dst + y0 * ty + x0 * tx + (q / 2) * c->dy + (q % 2) * c->dx;
        const float *mt = m + t * c->kc + q * cp, *b = c->bias == NULL ? NULL : c->bias + q * cp;
        if (vy == mm && vx == mm) {
            c->output_tile(mt, c->ms, cp, d, ty, tx);
            if (b != NULL)
                for (idx i = 0; i < mm; i++)
                    for (idx j = 0; j < mm; j++)
                        for (idx k = 0; k < cp; k++)
                            d[i * ty + j * tx + k] += b[k];
        } else {
            c->output_tile(mt, c->ms, cp, edge_out, mm * cp, cp);
            for (idx i = 0; i < vy; i++)
                for (idx j = 0; j < vx; j++)
                    for (idx k = 0; k < cp; k++)
                        d[i * ty + j * tx + k] = edge_out[(i * mm + j) * cp + k] + (b == NULL ? 0.0f : b[k]);
        }
        if (acc != NULL) { /* the outputs just written, into float64 sums and squares */
            double *restrict sum = acc + q * cp, *restrict squares = acc + c->c_out + q * cp;
            for (idx i = 0; i < vy; i++)
                for (idx j = 0; j < vx; j++)
#pragma omp simd
                    for (idx k = 0; k < cp; k++) {
                        double v = d[i * ty + j * tx + k];
                        sum[k] += v;
                        squares[k] += v * v;
                    }
        }
    }
}

/* Rows count .. padded of every plane of u zeroed (a last, smaller group's rows past its tiles). */
static void zero_rows(const struct conv *c, idx count, float *u)
{
    for (idx p = 0; p < c->nn; p++)
        for (idx k = count * c->c_in; k < c->padded * c->c_in; k++)
            u[p * c->us + k] = 0.0f;
}

/* dst := the unpadded r x r convolution of src, h x w outputs (src: h + r - 1 rows of w + r - 1
 * pixels), by F(mm x mm, r x r): F(2x2, 3x3), F(4x4, 3x3), F(6x6, 3x3), F(8x8, 3x3), F(3x3, 2x2),
 * F(4x4, 5x5), F(6x6, 5x5) or F(7x7, 2x2), with kernel (below), plus bias (c_out; NULL: none).
 * Sides that are not multiples of mm end in partial tiles: their inputs gathered into a
 * zero-padded tile, their outputs made in a scratch tile and the valid ones copied out. With
 * `phases`, the output is a 2x2 space-to-depth map written out to full resolution: its channel
 * q C + c at (y, x), C = c_out / 4, is dst's channel c at pixel (2 y + q / 2, 2 x + q % 2) (dy, dx:
 * dst's strides). With `stats` (2 c_out doubles, zero), it receives each output channel's sum over
 * the map and its sum of squares (in float64, from the outputs as written; with phases, per
 * channel q C + c of the space-to-depth map): an instance norm's statistics without another pass
 * over the map.
 *
 * kernel: (n², panels, C_in, NR) float32, the transformed kernel (n = mm + r - 1) with kc columns,
 * the first c_out of them the output channels and the rest zero, its planes packed in panels of NR
 * columns (the last panel's columns past kc zero and never read); kc a multiple of VL.
 *
 * Each thread takes `group` tiles at a time (see above).
 *
 * Returns 0; -1 for another (mm, r), -2 for kc not a multiple of VL or smaller than c_out (or
 * c_out not a multiple of 4 with phases), -3 when out of memory. */
int instyle_winograd_conv(int mm, int r, const float *src, idx sy, idx sx, idx c_in, idx h, idx w,
                          const float *kernel, idx kc, idx c_out, const float *bias, float *dst, idx dy, idx dx,
                          idx group, int phases, double *stats)
{
    struct conv c = {.mm = mm, .r = r, .src = src, .kernel = kernel, .bias = bias, .dst = dst};
    if (tile_transforms(mm, r, &c.input_tile, &c.output_tile))
        return -1;
    if (kc % VL || kc < c_out || group < 1 || (phases && c_out % 4))
        return -2;
    c.sy = sy, c.sx = sx, c.c_in = c_in, c.h = h, c.w = w, c.kc = kc, c.c_out = c_out, c.dy = dy, c.dx = dx;
    c.parts = phases ? 4 : 1, c.cp = c_out / c.parts, c.ty = phases ? 2 * dy : dy, c.tx = phases ? 2 * dx : dx;
    c.n = mm + r - 1, c.nn = c.n * c.n, c.cols = (w + mm - 1) / mm, c.tiles = (h + mm - 1) / mm * c.cols;
    if (c.tiles == 0)
        return 0;
    /* as many groups for every thread, of at most `group` tiles (256 tiles on 2 threads: 12 x 22,
     * not 6 and 5 groups of 24) */
    idx threads = omp_get_max_threads(), groups = (c.tiles + group - 1) / group;
    groups = (groups + threads - 1) / threads * threads;
    idx per = (c.tiles + groups - 1) / groups;
    groups = (c.tiles + per - 1) / per;
    c.padded = (per + 2 * MR - 1) / (2 * MR) * (2 * MR); /* a group's rows, in whole product blocks */
    /* the planes' strides, a cache line more than they hold: at a multiple of 4 KB all the
     * transforms' n² streams fell into one set of the L1 cache */
    c.us = c.padded * c_in + PLANE_SKEW, c.ms = c.padded * kc + PLANE_SKEW;
    int failed = 0;
#pragma omp parallel
    {
        /* this thread's transformed tiles and products (rows past a group's last tile are zero),
         * a partial tile's inputs and outputs, its share of the statistics */
        float *u = calloc((size_t)(c.nn * c.us), sizeof(float));
        float *m = malloc((size_t)(c.nn * c.ms) * sizeof(float));
        float *edge_in = malloc((size_t)(c.nn * c_in) * sizeof(float));
        float *edge_out = malloc((size_t)(mm * mm * c.cp) * sizeof(float));
        double *acc = stats == NULL ? NULL : calloc((size_t)(2 * c_out), sizeof(double));
        int ok = u != NULL && m != NULL && edge_in != NULL && edge_out != NULL && (stats == NULL || acc != NULL);
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (idx g = 0; g < groups; g++) {
            if (!ok)
                continue;
            idx t0 = g * per, count = c.tiles - t0 < per ? c.tiles - t0 : per;
            if (count < per) /* the last group: its unused rows zeroed again */
                zero_rows(&c, count, u);
            for (idx t = 0; t < count; t++)
                tile_input(&c, t0, t, u, edge_in);
            for (idx p = 0; p < c.nn; p++)
                plane_products(&c, p, count, u, m);
            for (idx t = 0; t < count; t++)
                tile_output(&c, t0, t, m, edge_out, acc);
        }
        free(u);
        free(m);
        free(edge_in);
        free(edge_out);
        if (acc != NULL) {
#pragma omp critical
            for (idx k = 0; k < 2 * c_out; k++)
                stats[k] += acc[k];
            free(acc);
        }
    }
    return failed ? -3 : 0;
}
