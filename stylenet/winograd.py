"""Winograd convolution, F(2x2, 3x3), F(4x4, 3x3), F(6x6, 3x3) and F(8x8, 3x3), for float32 CPUs: 16
products per 2x2 outputs, 36 per 4x4, 64 per 6x6 or 100 per 8x8, where a direct 3x3 convolution
takes 36, 144, 324 or 576 (Lavin & Gray, *Fast Algorithms for Convolutional Neural Networks*, 2015).

On a CPU without native bfloat16 the Johnson engine runs in float32, and its residual blocks'
3x3 128-channel convolutions (60 % of the generator's multiply-adds) already run near the CPU's
float32 peak. Fewer multiplications is the only way further. Each (m + 2)² input tile d
(stride m) is transformed to B^T d B, multiplied per tile position with the transformed kernel
G g G^T ((m + 2)² products of (tiles x C_in) @ (C_in x C_out)), and transformed back, A^T M A,
to its m² outputs. The transforms are sums of a few terms, but each is a pass over memory: run
over the whole map they cost more than the products save (F(2x2) on a 256² map: 283 ms against
124 for oneDNN's direct convolution, Zen 3). Run over bands of tiles that stay in cache, they
cost less. On 2 cores of a Zen 3 EPYC, 128 -> 128 channels (``benchmarks/winograd.py``, best
times): a 128² map 26.9 ms direct, 21.0 ms F(2x2), 17.1 ms F(4x4); 256² 142 / 95 / 70 ms; 64²
7.4 / 6.4 / 10.3 ms (F(4x4)'s ~250 small torch calls per band cost more than it saves there);
32² 2.6 / 3.7 / 6.5 ms. Hence ``choose``.

Torch's sums are the fallback. Where a C compiler is found, the transforms run natively
(``stylenet.native``: each tile read once and written once, a band's n² products in one
``bmm``): 128² 9.1 ms with F(4x4) against 15.8 with the sums and 23.1 direct, and F(4x4) is
then the fastest from an 8² map up (the AMX Xeon under the three AVX2 caps,
``benchmarks/winograd.py``; docs/performance.md). F(2x2) then never runs.

The fused native convolution (the whole convolution in C, a few tiles per thread at a time)
ends maps whose sides are not multiples of m in partial tiles, so it runs every map whole; with
it the residual blocks take F(6x6, 3x3) from 40² maps (64 products per 36 outputs; 22.6 against
27.6 ms for F(4x4) on a 256² map, Zen 4, float32), and F(8x8, 3x3) from 32² maps of 64 channels
or more wherever it makes fewer products by a margin (100 per 64 outputs, the sides of 64², 128²
and 256² maps in whole tiles; a 128² map 5.0 against 6.1 ms, 256² 22.0 against 23.2, Zen 4). It also runs
F(3x3, 2x2), and from 100² maps F(7x7, 2x2), for the upsampling's 2x2 convolutions, and F(4x4,
5x5), from 96² maps F(6x6, 5x5), for the Johnson net's two 9x9 convolutions, each as a 5x5
convolution on a 2x2 space-to-depth map (``packed_conv2d`` for the first; docs/performance.md).

Float32 difference from the direct convolution (a unit-variance input, 128 channels): ~7e-6
for F(2x2), ~5e-5 for F(4x4), whose transforms have coefficients up to 8 and kernel ones
down to 1/24, ~9e-5 for F(6x6) (coefficients up to 32), and ~6e-4 for F(8x8) (up to 610 in A^T;
root mean square ~3e-5 against ~4e-6 for F(6x6): its points were picked for it, ``F8``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F

from stylenet import native

Matrix = tuple[tuple[float, ...], ...]

#: Tiles per group of the fused native convolution (``native.Kernels.winograd_conv``), unless an
#: algorithm says otherwise (``Algorithm.group_tiles``): each thread's n² transformed tiles and
#: products, 2 x 36 x 24 x 128 floats (0.9 MB) for F(4x4) at 128 channels, in its L2 cache. 24 and
#: 36 took the same time, 12 and 96 longer (Ice Lake Xeon, AVX-512 and AVX2 code alike). At most:
#: the C evens the groups out among the threads.
NATIVE_GROUP_TILES = 24


@dataclass(frozen=True)
class Algorithm:
    """F(m x m, r x r), r = 3 but for ``F3R2``: input transform B^T (n x n, n = m + r - 1),
    kernel transform G (n x r), output transform A^T (m x n), and the smallest output (pixels)
    it runs on, below which the next smaller algorithm, or the direct convolution, is faster."""

    m: int
    bt: Matrix
    g: Matrix
    at: Matrix
    min_pixels: int
    #: The same with the native transforms (``stylenet.native``), far cheaper than torch's sums.
    min_pixels_native: int
    r: int = 3
    #: tiles per group where the fused native convolution runs it
    group_tiles: int = NATIVE_GROUP_TILES

    @property
    def n(self) -> int:
        return self.m + self.r - 1


F2 = Algorithm(
    2,
    bt=((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
    g=((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1)),
    at=((1, 1, 1, 0), (0, 1, -1, -1)),
    min_pixels=40 * 40,
    min_pixels_native=8 * 8,
)
# points 0, 1, -1, 2, -2 and infinity
F4 = Algorithm(
    4,
    bt=(
        (4, 0, -5, 0, 1, 0),
        (0, -4, -4, 1, 1, 0),
        (0, 4, -4, -1, 1, 0),
        (0, -2, -1, 2, 1, 0),
        (0, 2, -1, -2, 1, 0),
        (0, 4, 0, -5, 0, 1),
    ),
    g=(
        (1 / 4, 0, 0),
        (-1 / 6, -1 / 6, -1 / 6),
        (-1 / 6, 1 / 6, -1 / 6),
        (1 / 24, 1 / 12, 1 / 6),
        (1 / 24, -1 / 12, 1 / 6),
        (0, 0, 1),
    ),
    at=((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
    min_pixels=80 * 80,
    min_pixels_native=8 * 8,
)
ALGORITHMS = (F4, F2)  # largest first
# F(3x3, 2x2), points 0, 1, -1 and infinity: the Johnson decoder's upsampling convolutions, 2x2
# since their phases' taps were gathered (``stylenet.fast.phase_taps``); 16 products per 9
# outputs where the direct convolution takes 36. Native and fused only (no torch sums).
F3R2 = Algorithm(
    3,
    bt=((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, -1, 0, 1)),
    g=((1, 0), (0.5, 0.5), (0.5, -0.5), (0, 1)),
    at=((1, 1, 1, 0), (0, 1, -1, 0), (0, 1, 1, 1)),
    min_pixels=0,  # (no torch path)
    min_pixels_native=6 * 6,
    r=2,
)
# F(4x4, 5x5), points 0, 1, -1, 2, -2, 1/2, -1/2 and infinity (B^T is F(6x6, 3x3)'s): the Johnson
# engine's packed output convolution (its 9x9 one as a 5x5 on the 2x2 space-to-depth map,
# ``stylenet.fast.space_to_depth_kernel``, 128 -> 12 channels); 64 products per 16 outputs where
# the direct convolution takes 400. Native and fused only.
F4R5 = Algorithm(
    4,
    bt=(
        (1, 0, -21 / 4, 0, 21 / 4, 0, -1, 0),
        (0, 1, 1, -17 / 4, -17 / 4, 1, 1, 0),
        (0, -1, 1, 17 / 4, -17 / 4, -1, 1, 0),
        (0, 2, 4, -5 / 2, -5, 1 / 2, 1, 0),
        (0, -2, 4, 5 / 2, -5, -1 / 2, 1, 0),
        (0, 1 / 2, 1 / 4, -5 / 2, -5 / 4, 2, 1, 0),
        (0, -1 / 2, 1 / 4, 5 / 2, -5 / 4, -2, 1, 0),
        (0, -1, 0, 21 / 4, 0, -21 / 4, 0, 1),
    ),
    g=(
        (1, 0, 0, 0, 0),
        (-2 / 9, -2 / 9, -2 / 9, -2 / 9, -2 / 9),
        (-2 / 9, 2 / 9, -2 / 9, 2 / 9, -2 / 9),
        (32 / 45, 16 / 45, 8 / 45, 4 / 45, 2 / 45),
        (32 / 45, -16 / 45, 8 / 45, -4 / 45, 2 / 45),
        (1 / 90, 1 / 45, 2 / 45, 4 / 45, 8 / 45),
        (1 / 90, -1 / 45, 2 / 45, -4 / 45, 8 / 45),
        (0, 0, 0, 0, 1),
    ),
    at=(
        (1, 1, 1, 1, 1, 1, 1, 0),
        (0, 1, -1, 1 / 2, -1 / 2, 2, -2, 0),
        (0, 1, 1, 1 / 4, 1 / 4, 4, 4, 0),
        (0, 1, -1, 1 / 8, -1 / 8, 8, -8, 1),
    ),
    min_pixels=0,  # (no torch path)
    min_pixels_native=8 * 8,
    r=5,
)
# F(6x6, 3x3), the same points and B^T: 64 products per 36 outputs where F(4x4, 3x3) takes 81 (36 per
# 16). Native and fused only.
F6 = Algorithm(
    6,
    bt=F4R5.bt,
    g=(*(row[:3] for row in F4R5.g[:-1]), (0, 0, 1)),
    at=(
        (1, 1, 1, 1, 1, 1, 1, 0),
        (0, 1, -1, 1 / 2, -1 / 2, 2, -2, 0),
        (0, 1, 1, 1 / 4, 1 / 4, 4, 4, 0),
        (0, 1, -1, 1 / 8, -1 / 8, 8, -8, 0),
        (0, 1, 1, 1 / 16, 1 / 16, 16, 16, 0),
        (0, 1, -1, 1 / 32, -1 / 32, 32, -32, 1),
    ),
    min_pixels=0,  # (no torch path)
    min_pixels_native=40 * 40,  # (32²: 0.52 ms against F(4x4)'s 0.44; 48²: 0.79 against 0.86)
)
# F(7x7, 2x2), the same points and B^T again: 64 products per 49 outputs where F(3x3, 2x2) takes
# 16 per 9. Native and fused only.
F7R2 = Algorithm(
    7,
    bt=F4R5.bt,
    g=(*(row[:2] for row in F4R5.g[:-1]), (0, 1)),
    at=(
        *F6.at[:-1],
        (0, 1, -1, 1 / 32, -1 / 32, 32, -32, 0),
        (0, 1, 1, 1 / 64, 1 / 64, 64, 64, 1),
    ),
    min_pixels=0,  # (no torch path)
    min_pixels_native=100 * 100,  # (65²: 3.1 against F(3x3, 2x2)'s 2.8 ms; 129²: 9.8 against 10.6)
    r=2,
)


def toom_cook(m: int, r: int, points: Sequence[Fraction]) -> tuple[Matrix, Matrix, Matrix]:
    """Winograd's F(m, r) by the Toom-Cook construction on ``points`` (m + r - 2 distinct finite
    points; the last one is infinity), exact in rationals: (B^T, G, A^T) with A^T's row i the
    points' i-th powers, G's row j the kernel evaluated at point j over the product of its
    differences to the others, and B^T's row j the coefficients of the polynomial whose roots are
    the other points (for infinity's row, all of them)."""
    n, points = m + r - 1, list(points)
    if len(points) != n - 1 or len(set(points)) != n - 1:
        raise ValueError(f"F({m}, {r}) needs {n - 1} distinct points, got {points}")

    def poly(roots: Sequence[Fraction]) -> list[Fraction]:  # coefficients, lowest power first
        c = [Fraction(1)]
        for a in roots:
            c = [Fraction(0), *c]
            for t in range(len(c) - 1):
                c[t] -= a * c[t + 1]
        return c

    at = [[a**i for a in points] + [Fraction(int(i == m - 1))] for i in range(m)]
    g = []
    for j, a in enumerate(points):
        scale = Fraction(1)
        for b in points[:j] + points[j + 1 :]:
            scale *= a - b
        g.append([a**k / scale for k in range(r)])
    g.append([Fraction(int(k == r - 1)) for k in range(r)])
    bt = [[*poly(points[:j] + points[j + 1 :]), Fraction(0)] for j in range(n - 1)] + [poly(points)]

    def floats(rows: list[list[Fraction]]) -> Matrix:
        return tuple(tuple(float(x) for x in row) for row in rows)

    return floats(bt), floats(g), floats(at)


# F(8x8, 3x3), points 0, +-1/2, +-3/4, +-5/4, +-5/2 and infinity (``toom_cook``): 100 products per 64
# outputs where F(6x6, 3x3) takes 64 per 36 (1.56 against 1.78 per output), and 128² and 256² maps
# in whole tiles. The points: of the sets of four symmetric pairs tried (0, 1/4 .. 5/2), among the
# most accurate in float32 (the usual 0, +-1, +-2, +-1/2, +-3 differ ~8x more from the direct
# convolution), their powers exact in binary (``N10_POINTS``, F6R5's too). Native and fused only.
N10_POINTS = (Fraction(0), *(s * Fraction(a, b) for a, b in ((1, 2), (3, 4), (5, 4), (5, 2)) for s in (1, -1)))
F8 = Algorithm(
    8,
    *toom_cook(8, 3, N10_POINTS),
    min_pixels=0,  # (no torch path)
    min_pixels_native=32 * 32,  # (24²: 0.42 against F(4x4)'s 0.30 ms; 32²: 0.43 against 0.56)
    # 2 x 100 x 12 x 128 floats (1.2 MB) of transformed tiles and products per thread at 128
    # channels: 12 tiles took 5-15 % less time than 24 (a 128² map 5.0 against 5.6 ms, 256² 22.0
    # against 22.5; Zen 4 EPYC, AVX-512 and AVX2 code alike)
    group_tiles=12,
)

# F(6x6, 5x5) on the same points (the same B^T): 100 products per 36 outputs where F(4x4, 5x5) takes
# 64 per 16 (2.8 against 4 per output), for the Johnson engine's two 9x9 convolutions run as 5x5
# ones on space-to-depth maps. Native and fused only.
F6R5 = Algorithm(
    6,
    *toom_cook(6, 5, N10_POINTS),
    min_pixels=0,  # (no torch path)
    # (64²: 0.57 / 0.77 ms against F(4x4, 5x5)'s 0.53 / 0.73 for the first / output convolution's
    # maps, AVX2 code; 96²: 0.87 / 1.23 against 1.07 / 1.33; 512²: 30 / 42 against 36 / 47; Zen 4 EPYC)
    min_pixels_native=96 * 96,
    r=5,
)

#: Tiles per band: a band's working set (its input rows, transformed tiles, products and
#: half-transformed outputs) stays within the CPU's cache.
BAND_TILES = 1024
#: The same for the native transforms, whose band holds all n² transformed tiles and products.
NATIVE_BAND_TILES = 512


def tile_products(alg: Algorithm, h: int, w: int) -> int:
    """The products per input and output channel of ``alg`` over an h x w output in whole tiles."""
    return alg.n**2 * -(-h // alg.m) * -(-w // alg.m)


#: ``F8`` where its products are at most this share of ``F6``'s: its tile's transforms cost ~10 %
#: more per product (130² maps: 0.93 of F(6x6)'s products, the same time; 100²: 0.91, 3.8
#: against 3.9 ms; Zen 4 EPYC).
F8_PRODUCTS_SHARE = 0.92
#: ... and where both C_in and C_out are at least this: with fewer channels the transforms weigh
#: more than the products, and F(8x8)'s cost more per output than F(6x6)'s (48 -> 48 channels
#: onto 512², Ulyanov's finest scale: 23.3 against 18.4 ms; 8 -> 8: 2.5 against 1.8; 64 -> 64
#: onto 128²: 1.44 against 1.61; Zen 4 EPYC).
F8_MIN_CHANNELS = 64


def choose(
    pixels: int,
    with_native: bool | None = None,
    fused: bool = False,
    size: tuple[int, int] | None = None,
    channels: int = 128,
) -> Algorithm | None:
    """The algorithm for an output of ``pixels`` pixels (``size``: its sides, by default a square)
    of a convolution whose narrower side has ``channels`` (the smaller of C_in and C_out; by
    default the Johnson residual blocks' 128), or None: the direct convolution. ``with_native``:
    whether the native transforms run (default: whether they are available). ``fused``: whether
    the fused native convolution runs it (``conv2d(fused=True)``): then, from ``F8``'s size (32²)
    up, ``F8`` where it makes at most ``F8_PRODUCTS_SHARE`` of ``F6``'s products
    (``tile_products``; as on 64², 128² and 256² maps, whose sides it tiles whole) and both channel
    counts are at least ``F8_MIN_CHANNELS``, else ``F6`` from its size (40²) up."""
    kernels = native.library() if with_native is not False else None
    if fused and kernels is not None and pixels >= min(F6.min_pixels_native, F8.min_pixels_native):
        h, w = size or (math.isqrt(pixels), math.isqrt(pixels))
        wide = channels >= F8_MIN_CHANNELS
        if wide and tile_products(F8, h, w) <= F8_PRODUCTS_SHARE * tile_products(F6, h, w):
            return F8
        if pixels >= F6.min_pixels_native:
            return F6
    if with_native is None:
        with_native = kernels is not None
    return next((a for a in ALGORITHMS if pixels >= (a.min_pixels_native if with_native else a.min_pixels)), None)


def choose_2x2(pixels: int, c_out: int, with_native: bool | None = None) -> Algorithm | None:
    """``F7R2``, or below its size ``F3R2``, for a 2x2 convolution of ``c_out`` outputs onto
    ``pixels`` pixels where the fused native kernels run it (C_out a multiple of their block of
    output channels), else None."""
    kernels = native.library() if with_native is not False else None
    if kernels is None or c_out % kernels.conv_block_channels or pixels < F3R2.min_pixels_native:
        return None
    return F7R2 if pixels >= F7R2.min_pixels_native else F3R2


def choose_5x5(pixels: int, with_native: bool | None = None) -> Algorithm | None:
    """``F6R5``, or below its size ``F4R5``, for a 5x5 convolution onto ``pixels`` pixels where the
    fused native kernels run, else None."""
    kernels = native.library() if with_native is not False else None
    if kernels is None or pixels < F4R5.min_pixels_native:
        return None
    return F6R5 if pixels >= F6R5.min_pixels_native else F4R5


def choose_9x9(pixels: int, with_native: bool | None = None) -> Algorithm | None:
    """``choose_5x5`` for a 9x9 convolution onto ``pixels`` pixels, run as a 5x5 one on the 2x2
    space-to-depth map (``packed_conv2d``), where the fused native kernels run, else None."""
    return choose_5x5(pixels // 4, with_native)


def applies(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the Johnson engine runs its residual convolutions this way by default: float32 on
    a CPU whose widest vector unit torch dispatches to is AVX2 (faster even with torch's sums),
    or AVX-512 with the native transforms (the AMX Xeon in float32, 512²: 283 -> 210 ms a pass;
    CPUs with native bf16 run bf16 by default, faster still, and oneDNN's direct convolutions)."""
    if device.type != "cpu" or dtype != torch.float32:
        return False
    capability = torch.backends.cpu.get_cpu_capability()
    return capability == "AVX2" or (capability.startswith("AVX512") and native.library() is not None)


def transformed_kernel(weight: torch.Tensor, alg: Algorithm) -> torch.Tensor:
    """(C_out, C_in, r, r) kernel -> (n², C_in, C_out) float32: G g G^T for each tile position
    (n k + l), transposed for the products. Computed in float64."""
    g = torch.tensor(alg.g, dtype=torch.float64)
    u = torch.einsum("ki,oqij,lj->klqo", g, weight.detach().double().cpu(), g)
    return u.reshape(alg.n**2, weight.shape[1], weight.shape[0]).float().contiguous()


def fused_kernel(weight: torch.Tensor, alg: Algorithm) -> torch.Tensor:
    """``transformed_kernel`` as the fused native kernels take it, packed in panels of output
    channels (``native.Kernels.pack_kernel``; as it is without them)."""
    kernels = native.library()
    u = transformed_kernel(weight, alg)
    return u if kernels is None else kernels.pack_kernel(u)


@functools.cache
def _terms(row: tuple[float, ...]) -> tuple[tuple[int, float], ...]:
    """A transform row's nonzero (index, coefficient) terms, a unit one first (each row has one)."""
    terms = sorted(((i, c) for i, c in enumerate(row) if c), key=lambda t: t[1] != 1)
    if terms[0][1] != 1 or len(terms) < 2:
        raise ValueError(f"a transform row needs a unit coefficient and another term: {row}")
    return tuple(terms)


def _combine(srcs: Sequence[torch.Tensor], row: tuple[float, ...], out: torch.Tensor) -> None:
    """``out`` := sum of ``row[i] * srcs[i]``: one add, then one in-place add per further term
    (the terms' order is worked out once per row: this runs ~250 times per band)."""
    (i0, _), (i1, c1), *rest = _terms(row)
    torch.add(srcs[i0], srcs[i1], alpha=c1, out=out)
    for i, c in rest:
        out.add_(srcs[i], alpha=c)


def conv3x3(
    x: torch.Tensor,
    kernel: torch.Tensor,
    out: torch.Tensor,
    alg: Algorithm = F4,
    band_tiles: int | None = None,
    use_native: bool | None = None,
    fused: bool | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``out`` (1, C_out, H, W), H and W multiples of ``alg.m`` := the unpadded 3x3 convolution
    of ``x`` (1, C_in, H + 2, W + 2) float32, with ``kernel`` (``transformed_kernel(w, alg)``);
    for ``F3R2`` / ``F4R5`` the 2x2 / 5x5 convolution of ``x`` (1, C_in, H + r - 1, W + r - 1),
    fused native only, plus ``bias`` if given. The fused native convolution packs ``kernel``'s
    first C_out columns on each call (``native.Kernels.pack_kernel``; ``conv2d`` takes the packed
    ``fused_kernel``). Both channels-last, or views of channels-last tensors whose pixels are
    runs of channels (crops of them). The tiles go ``band_tiles`` (``NATIVE_BAND_TILES`` with
    the native transforms, else ``BAND_TILES``) at a time. ``use_native``: the native transforms
    (``stylenet.native``) or torch's sums; by default the native ones where available. With
    them, ``fused`` (by default wherever C_out is a multiple of the kernel's block of output
    channels) runs the whole convolution in C, ``alg.group_tiles`` tiles at a time per thread
    (``native.Kernels.winograd_conv``), else the products go to torch's ``bmm`` band by band."""
    _, c_in, hp, wp = x.shape
    h, w, c_out, m, n = hp - alg.r + 1, wp - alg.r + 1, out.shape[1], alg.m, alg.n
    if h % m or w % m or out.shape[2:] != (h, w) or kernel.shape[2] < c_out:
        raise ValueError(f"conv3x3 needs sides in multiples of {m} and a ({c_out}, {h}, {w}) output, got {out.shape}")
    if bias is not None and alg.r == 3:
        raise ValueError("conv3x3 adds no bias")
    src = x.permute(0, 2, 3, 1)[0]  # (H + 2, W + 2, C_in)
    dst = out.permute(0, 2, 3, 1)[0]  # (H, W, C_out)
    rows, cols = h // m, w // m  # tiles
    kernels = native.library() if use_native is not False else None
    if use_native and kernels is None:
        raise native.NativeError("the native kernels are unavailable (see the log)")
    if alg.r != 3:
        if kernels is None or fused is False:
            raise ValueError(f"F({m}x{m}, {alg.r}x{alg.r}) runs fused in the native kernels only")
        packed = kernels.pack_kernel(kernel[:, :, :c_out])
        kernels.winograd_conv(m, src, packed, dst, band_tiles or alg.group_tiles, r=alg.r, bias=bias)
        return out
    if kernels is not None and src.stride(2) == 1 and dst.stride(2) == 1:
        if fused is None:
            fused = c_out % kernels.conv_block_channels == 0
        if fused:
            packed = kernels.pack_kernel(kernel[:, :, :c_out])
            kernels.winograd_conv(m, src, packed, dst, band_tiles or alg.group_tiles)
            return out
        _native_bands(kernels, src, dst, kernel, alg, rows, cols, band_tiles or NATIVE_BAND_TILES)
        return out
    band = max(1, min(rows, (band_tiles or BAND_TILES) // cols))
    ct = torch.empty(n, m * band + 2, cols, c_in)  # column-transformed input rows
    ut = torch.empty(band, cols, c_in)  # the tiles transformed for one tile position
    mt = torch.empty(n, band * cols, c_out)  # the products of one row of tile positions
    st = torch.empty(n, m, band, cols, c_out)  # half the output transform (over l)
    for t0 in range(0, rows, band):
        b = min(band, rows - t0)
        rows_in = src[m * t0 : m * t0 + m * b + 2]
        d = [rows_in[:, j : j + m * cols : m] for j in range(n)]  # input columns m t + j
        c = ct[:, : m * b + 2]
        for j in range(n):  # d B over the columns first: the strided reads once
            _combine(d, alg.bt[j], c[j])
        u, prods, s = ut[:b], mt[:, : b * cols], st[:, :, :b]
        tile_rows = [[c[j, i : i + m * b : m] for i in range(n)] for j in range(n)]  # rows m t + i
        by_l = prods.view(n, b, cols, c_out).unbind()
        for k in range(n):  # a row k of tile positions at a time, its products kept
            for j in range(n):  # (B^T (d B))_kj over whole rows of tiles, then its product
                _combine(tile_rows[j], alg.bt[k], u)
                torch.mm(u.view(b * cols, c_in), kernel[n * k + j], out=prods[j])
            for j in range(m):  # (M A)_kj: over l
                _combine(by_l, alg.at[j], s[k, j])
        y = dst[m * t0 : m * t0 + m * b]
        for j in range(m):  # A^T (M A), over k, into output pixels (m t + i, m t' + j)
            for i in range(m):
                _combine(s[:, j].unbind(), alg.at[i], y[i::m, j::m])
    return out


def _native_bands(
    kernels: native.Kernels,
    src: torch.Tensor,
    dst: torch.Tensor,
    kernel: torch.Tensor,
    alg: Algorithm,
    rows: int,
    cols: int,
    band_tiles: int,
) -> None:
    """``conv3x3`` with the native transforms: per band, all its tiles transformed in one call,
    the n² products in one ``bmm``, and all its outputs in one call."""
    m, nn, c_in, c_out = alg.m, alg.n**2, src.shape[2], dst.shape[2]
    band = max(1, min(rows, band_tiles // cols))
    u_flat = torch.empty(nn * band * cols * c_in)
    prods_flat = torch.empty(nn * band * cols * c_out)
    for t0 in range(0, rows, band):
        b = min(band, rows - t0)
        u = u_flat[: nn * b * cols * c_in].view(nn, b * cols, c_in)
        prods = prods_flat[: nn * b * cols * c_out].view(nn, b * cols, c_out)
        kernels.winograd_input(m, src[m * t0 :], u, b, cols)
        torch.bmm(u, kernel, out=prods)
        kernels.winograd_output(m, prods, dst[m * t0 :], b, cols)


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """(N, C, 2 h, 2 w) -> (N, 4 C, h, w) channels-last, a copy: channel (2 a + b) C + c at (i, j)
    holds channel c at (2 i + a, 2 j + b) (the layout of ``stylenet.fast.space_to_depth_kernel``)."""
    n, c, h2, w2 = x.shape
    phases = x.permute(0, 2, 3, 1).reshape(n, h2 // 2, 2, w2 // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
    return phases.reshape(n, h2 // 2, w2 // 2, 4 * c).permute(0, 3, 1, 2)


def packed_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    kernel: torch.Tensor,
    alg: Algorithm,
    out: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``out`` := ``F.conv2d(x, weight, bias)`` for a padded float32 channels-last ``x`` (N, C_in,
    H + k - 1, W + k - 1) and a k x k ``weight``, k = 2 r - 1 (9x9 by ``F4R5`` or ``F6R5``): over the part
    of each image whose sides are even (all of it in the engine), as the r x r convolution of its
    2x2 space-to-depth map (``space_to_depth``; 4 C_in channels) by Winograd's F(m x m, r x r)
    in C, ``kernel`` the ``fused_kernel`` of ``stylenet.fast.space_to_depth_kernel(weight)``, its
    output (4 C_out phase-major channels) written out to full resolution as it is made; the last
    row and column beyond that part by the direct convolution. The 9x9 first convolution of the
    Johnson net on RGB: 64 products per 64 outputs and input channel where it takes 81 x 64
    (``F4R5``; ``F6R5``: 100 per 144)."""
    kernels = native.library()
    if kernels is None:
        raise native.NativeError("the native kernels are unavailable (see the log)")
    _, _, h, w = out.shape
    k = weight.shape[2]
    if k != 2 * alg.r - 1:
        raise ValueError(f"packed_conv2d runs a {2 * alg.r - 1}x{2 * alg.r - 1} convolution by {alg}, got {k}x{k}")
    he, we = h // 2 * 2, w // 2 * 2  # full-resolution rows and columns by Winograd: the even part
    phase_bias = None if bias is None else bias.float().repeat(4)  # (phase-major, as the outputs)
    for i in range(x.shape[0]):
        xi, oi = x[i : i + 1], out[i : i + 1]
        if he and we:
            src = space_to_depth(xi[:, :, : he + k - 1, : we + k - 1]).permute(0, 2, 3, 1)[0]
            dst = oi[0, :, :he, :we].permute(1, 2, 0)
            kernels.winograd_conv(alg.m, src, kernel, dst, alg.group_tiles, r=alg.r, bias=phase_bias, phases=True)
        if he < h:
            oi[:, :, he:].copy_(F.conv2d(xi[:, :, he:], weight, bias))
        if we < w and he:
            oi[:, :, :he, we:].copy_(F.conv2d(xi[:, :, : he + k - 1, we:], weight, bias))
    return out


def self_check(kernels: native.Kernels) -> float:
    """The largest difference between the native transforms and torch's sums, both algorithms,
    on a random map with odd channel counts (``python -m stylenet.native`` prints it); raises
    ``native.NativeError`` if it is not float32 rounding."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 67, 26, 26, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(70, 67, 3, 3, generator=gen) / 25
    worst = 0.0
    with torch.inference_mode():
        for alg in ALGORITHMS:
            kernel = transformed_kernel(weight, alg)
            outs = [torch.empty(1, 70, 24, 24).contiguous(memory_format=torch.channels_last) for _ in range(2)]
            conv3x3(x, kernel, outs[0], alg, use_native=False)
            src, dst = x.permute(0, 2, 3, 1)[0], outs[1].permute(0, 2, 3, 1)[0]
            _native_bands(kernels, src, dst, kernel, alg, 24 // alg.m, 24 // alg.m, band_tiles=24)
            worst = max(worst, (outs[0] - outs[1]).abs().max().item())
    if not worst < 1e-3:
        raise native.NativeError(f"the native transforms differ from torch's by {worst}")
    return worst


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    kernel: torch.Tensor,
    alg: Algorithm,
    out: torch.Tensor,
    use_native: bool | None = None,
    fused: bool | None = None,
    bias: torch.Tensor | None = None,
    stats: torch.Tensor | None = None,
) -> torch.Tensor:
    """``out`` := ``F.conv2d(x, weight, bias)`` for a padded float32 channels-last ``x`` (N, C_in,
    H + r - 1, W + r - 1) and an r x r ``weight`` (``kernel``: its ``transformed_kernel`` for
    ``alg``, ``fused_kernel`` for the fused native kernels). Those run the whole image, their last
    tiles partial where a side is not a multiple of ``alg.m``; otherwise Winograd runs over the
    largest part of each image whose sides are multiples of ``alg.m``, the direct convolution
    over the last rows and columns beyond it. ``use_native``, ``bias``: as for ``conv3x3``;
    ``fused``: True runs the fused native convolution for any C_out (``kernel`` from
    ``fused_kernel``), None where C_out is a multiple of its block of outputs, False never.
    ``stats``: a zeroed (N, 2, C_out) float64 tensor that receives each image's per-channel sums
    and sums of squares of ``out`` where the fused convolution runs (``ValueError`` elsewhere)."""
    kernels = native.library() if use_native is not False else None
    whole_blocks = out.shape[1] % kernels.conv_block_channels == 0 if kernels is not None else False
    if kernels is not None and (alg.r != 3 or fused or (fused is None and whole_blocks)):
        for i in range(x.shape[0]):
            src, dst = x[i].permute(1, 2, 0), out[i].permute(1, 2, 0)
            image_stats = None if stats is None else stats[i]
            kernels.winograd_conv(alg.m, src, kernel, dst, alg.group_tiles, r=alg.r, bias=bias, stats=image_stats)
        return out
    if stats is not None:
        raise ValueError("only the fused native convolution measures its output")
    _, _, h, w = out.shape
    he, we, k = h // alg.m * alg.m, w // alg.m * alg.m, alg.r - 1
    for i in range(x.shape[0]):
        xi, oi = x[i : i + 1], out[i : i + 1]
        if he and we:  # views: conv3x3 reads and writes strided rows
            crop_in, crop_out = xi[:, :, : he + k, : we + k], oi[:, :, :he, :we]
            conv3x3(crop_in, kernel, crop_out, alg, use_native=use_native, fused=fused, bias=bias)
        if he < h:
            oi[:, :, he:].copy_(F.conv2d(xi[:, :, he:], weight, bias))
        if we < w and he:
            oi[:, :, :he, we:].copy_(F.conv2d(xi[:, :, : he + k, we:], weight, bias))
    return out
