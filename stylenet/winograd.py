"""Winograd F(2x2, 3x3) convolution for float32 CPUs: 16 multiply-adds per 2x2 outputs where a
direct 3x3 convolution takes 36 (Lavin & Gray, *Fast Algorithms for Convolutional Neural
Networks*, 2015).

On a CPU without native bfloat16 the Johnson engine runs in float32, and its residual blocks'
3x3 128-channel convolutions (60 % of the generator's multiply-adds) already run near the CPU's
float32 peak. Fewer multiplications is the only way further. Each 4x4 input tile d (stride 2)
is transformed to B^T d B, multiplied per tile position with the transformed kernel G g G^T
(16 products of (tiles x C_in) @ (C_in x C_out)), and transformed back, A^T m A, to its 2x2
outputs. The transforms are additions and subtractions only, but each is a pass over memory:
run over the whole map they cost more than the products save (a 256² map: 283 ms against 124
for oneDNN's direct convolution, Zen 3). Run over bands of tile rows whose transformed tiles
stay in cache, they cost less (the same map: 95-99 ms).

The result equals the direct convolution up to float32 rounding (the transforms' coefficients
are 0, ±1 and ±1/2: exact).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Kernel transform G (4 x 3) of F(2, 3).
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
#: Transformed tiles per band: the band's working set (~50 bytes per tile and channel: input
#: rows, transformed tiles, products, half-transformed outputs) stays within a few MB of cache.
BAND_TILES = 1024


def transformed_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 3, 3) kernel -> (16, C_in, C_out) float32: G g G^T for each tile position
    (4 k + l), transposed for the products. Computed in float64."""
    g = torch.tensor(_G, dtype=torch.float64)
    u = torch.einsum("ki,oqij,lj->klqo", g, weight.detach().double().cpu(), g)
    return u.reshape(16, weight.shape[1], weight.shape[0]).float().contiguous()


def conv3x3(x: torch.Tensor, kernel: torch.Tensor, out: torch.Tensor, band_tiles: int | None = None) -> torch.Tensor:
    """``out`` (1, C_out, H, W), H and W even := the unpadded 3x3 convolution of ``x`` (1, C_in,
    H + 2, W + 2) float32, with ``kernel`` (``transformed_kernel``). Both channels-last, or
    views of channels-last tensors whose pixels are runs of channels (crops of them). The tiles
    go ``band_tiles`` (``BAND_TILES``) at a time."""
    _, c_in, hp, wp = x.shape
    h, w, c_out = hp - 2, wp - 2, kernel.shape[2]
    if h % 2 or w % 2 or out.shape != (1, c_out, h, w):
        raise ValueError(f"conv3x3 needs even sides and a ({c_out}, {h}, {w}) output, got {tuple(out.shape)}")
    src = x.permute(0, 2, 3, 1)[0]  # (H + 2, W + 2, C_in)
    dst = out.permute(0, 2, 3, 1)[0]  # (H, W, C_out)
    rows, cols = h // 2, w // 2  # tiles
    band = max(1, min(rows, (band_tiles or BAND_TILES) // cols))
    ct = torch.empty(4, 2 * band + 2, cols, c_in)  # column-transformed input rows
    ut = torch.empty(16, band, cols, c_in)  # transformed tiles, tile position 4 k + l first
    mt = torch.empty(16, band * cols, c_out)  # their products with the kernel
    st = torch.empty(4, 2, band, cols, c_out)  # half the output transform (over l)
    for t0 in range(0, rows, band):
        b = min(band, rows - t0)
        rows_in = src[2 * t0 : 2 * t0 + 2 * b + 2]
        d = [rows_in[:, j : j + 2 * cols : 2] for j in range(4)]  # input columns 2 t + j
        c = ct[:, : 2 * b + 2]
        # d B over the columns first (strided reads once): d0 - d2, d1 + d2, d2 - d1, d1 - d3
        torch.sub(d[0], d[2], out=c[0])
        torch.add(d[1], d[2], out=c[1])
        torch.sub(d[2], d[1], out=c[2])
        torch.sub(d[1], d[3], out=c[3])
        u = ut[:, :b]
        for j in range(4):  # B^T (d B): the same over rows 2 t + i, whole rows of tiles at a time
            r = [c[j, i : i + 2 * b : 2] for i in range(4)]
            torch.sub(r[0], r[2], out=u[j])
            torch.add(r[1], r[2], out=u[4 + j])
            torch.sub(r[2], r[1], out=u[8 + j])
            torch.sub(r[1], r[3], out=u[12 + j])
        m = mt[:, : b * cols]
        for p in range(16):
            torch.mm(u[p].reshape(b * cols, c_in), kernel[p], out=m[p])
        mk = m.view(4, 4, b, cols, c_out)
        s = st[:, :, :b]
        for k in range(4):  # m A: over l, [1, 1, 1, 0] and [0, 1, -1, -1]
            torch.add(mk[k, 1], mk[k, 2], out=s[k, 0]).add_(mk[k, 0])
            torch.sub(mk[k, 1], mk[k, 2], out=s[k, 1]).sub_(mk[k, 3])
        y = dst[2 * t0 : 2 * t0 + 2 * b]
        for j in range(2):  # A^T (m A): over k, into output pixels (2 t + i, 2 t' + j)
            torch.add(s[1, j], s[2, j], out=y[0::2, j::2]).add_(s[0, j])
            torch.sub(s[1, j], s[2, j], out=y[1::2, j::2]).sub_(s[3, j])
    return out


#: Output pixels below which a convolution runs direct: the transforms' ~60 small torch calls
#: per band cost more than they save on a small map.
MIN_PIXELS = 32 * 32


def applies(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the Johnson engine runs its residual convolutions this way by default: float32 on
    a CPU whose widest vector unit torch dispatches to is AVX2 (measured there; AVX-512 CPUs
    with native bf16 run bf16, and those without are unmeasured)."""
    return device.type == "cpu" and dtype == torch.float32 and torch.backends.cpu.get_cpu_capability() == "AVX2"


def conv2d(x: torch.Tensor, weight: torch.Tensor, kernel: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` := ``F.conv2d(x, weight)`` for a padded float32 channels-last ``x`` (N, C_in, H + 2,
    W + 2) and a 3x3 ``weight`` (``kernel``: its ``transformed_kernel``): Winograd over the even
    part of each image, the direct convolution over a last odd row and column."""
    _, _, h, w = out.shape
    he, we = h // 2 * 2, w // 2 * 2
    for i in range(x.shape[0]):
        xi, oi = x[i : i + 1], out[i : i + 1]
        if he and we:  # views: conv3x3 reads and writes strided rows
            conv3x3(xi[:, :, : he + 2, : we + 2], kernel, oi[:, :, :he, :we])
        if he < h:
            oi[:, :, he:].copy_(F.conv2d(xi[:, :, he:], weight))
        if we < w:
            oi[:, :, :he, we:].copy_(F.conv2d(xi[:, :, : he + 2, we:], weight))
    return out
