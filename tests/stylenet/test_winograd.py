"""Winograd F(2x2, 3x3) .. F(8x8, 3x3), F(3x3, 2x2), F(7x7, 2x2), F(4x4, 5x5) and F(6x6, 5x5): the same
convolution as the direct one, any side, in the engine."""

from __future__ import annotations

import dataclasses
from typing import cast

import pytest
import torch
import torch.nn.functional as F

from stylenet import fast, native, winograd
from stylenet.config import GeneratorConfig
from stylenet.fast import Conv, JohnsonEngine
from stylenet.generator import build_generator
from stylenet.johnson import JohnsonBody
from stylenet.tiling import tiled_forward

CL = torch.channels_last


@pytest.mark.parametrize("alg", winograd.ALGORITHMS, ids=lambda a: f"F{a.m}")
def test_the_transforms_compute_the_convolution_of_one_tile(alg: winograd.Algorithm) -> None:
    """One (m + 2)² tile, in float64: A^T [(G g G^T) * (B^T d B)] A == its m x m valid convolution."""
    torch.manual_seed(0)
    g, d = torch.randn(1, 1, 3, 3, dtype=torch.float64), torch.randn(1, 1, alg.n, alg.n, dtype=torch.float64)
    bt, gt, at = (torch.tensor(t, dtype=torch.float64) for t in (alg.bt, alg.g, alg.at))
    tile = at @ ((gt @ g[0, 0] @ gt.T) * (bt @ d[0, 0] @ bt.T)) @ at.T
    assert torch.allclose(tile, F.conv2d(d, g)[0, 0], atol=1e-12)
    u = winograd.transformed_kernel(g, alg)  # float32, laid out for the products
    assert u.shape == (alg.n**2, 1, 1) and torch.allclose(u.double().reshape(alg.n, alg.n), gt @ g[0, 0] @ gt.T)


@pytest.mark.parametrize(
    "alg",
    [winograd.F3R2, winograd.F4R5, winograd.F6, winograd.F7R2, winograd.F8, winograd.F6R5],
    ids=["F3R2", "F4R5", "F6", "F7R2", "F8", "F6R5"],
)
def test_the_fused_only_algorithms_compute_one_tile(alg: winograd.Algorithm) -> None:
    """The same identity for the algorithms the fused native convolution runs alone (float64):
    their matrices are right."""
    torch.manual_seed(1)
    g, d = torch.randn(1, 1, alg.r, alg.r, dtype=torch.float64), torch.randn(1, 1, alg.n, alg.n, dtype=torch.float64)
    bt, gt, at = (torch.tensor(t, dtype=torch.float64) for t in (alg.bt, alg.g, alg.at))
    tile = at @ ((gt @ g[0, 0] @ gt.T) * (bt @ d[0, 0] @ bt.T)) @ at.T
    assert torch.allclose(tile, F.conv2d(d, g)[0, 0], atol=1e-10)


@pytest.mark.parametrize(
    ("m", "r", "points"),
    [
        (2, 3, (0, 1, -1)),
        (4, 3, (0, 1, -1, 2, -2)),
        (3, 2, (0, 1, -1)),
        (2, 5, (0, 1, -1, 2, -2)),
        (5, 3, (0, 1, -1, 2, -2, 3)),
    ],
)
def test_toom_cook_makes_winograds_algorithm_from_any_points(m: int, r: int, points: tuple[int, ...]) -> None:
    """(B^T, G, A^T) from the points: A^T [(G g) * (B^T d)] is the valid 1D convolution of d by g,
    and the 2D tile's too (float64); repeated points or the wrong number refused."""
    from fractions import Fraction

    bt, g, at = (torch.tensor(t, dtype=torch.float64) for t in winograd.toom_cook(m, r, [Fraction(p) for p in points]))
    n = m + r - 1
    assert bt.shape == (n, n) and g.shape == (n, r) and at.shape == (m, n)
    torch.manual_seed(3)
    k, d = torch.randn(r, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    ref = F.conv1d(d.view(1, 1, n), k.view(1, 1, r)).flatten()
    torch.testing.assert_close(at @ ((g @ k) * (bt @ d)), ref, atol=1e-9, rtol=1e-9)
    k2, d2 = torch.randn(r, r, dtype=torch.float64), torch.randn(n, n, dtype=torch.float64)
    tile = at @ ((g @ k2 @ g.T) * (bt @ d2 @ bt.T)) @ at.T
    torch.testing.assert_close(tile, F.conv2d(d2.view(1, 1, n, n), k2.view(1, 1, r, r))[0, 0], atol=1e-9, rtol=1e-9)
    with pytest.raises(ValueError, match="distinct points"):
        winograd.toom_cook(m, r, [Fraction(0)] * (n - 1))
    with pytest.raises(ValueError, match="distinct points"):
        winograd.toom_cook(m, r, [Fraction(p) for p in range(n)])


def test_f8s_points_are_the_accurate_ones() -> None:
    """F(8x8, 3x3) on its points (0, +-1/2, +-3/4, +-5/4, +-5/2) in float32 differs from the direct
    convolution several times less than on the usual ones (0, +-1, +-2, +-1/2, +-3): the transforms
    and products in float32 on unit-variance tiles, 64 channels, against float64."""
    from fractions import Fraction

    usual = winograd.toom_cook(8, 3, [Fraction(p) for p in (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2), 3, -3)])
    torch.manual_seed(4)
    d = torch.randn(50, 64, 10, 10)
    weight = torch.randn(64, 64, 3, 3) / 24
    ref = F.conv2d(d.double(), weight.double())

    def rms_error(bt: winograd.Matrix, g: winograd.Matrix, at: winograd.Matrix) -> float:
        b, a = (torch.tensor(t) for t in (bt, at))
        gd = torch.tensor(g, dtype=torch.float64)
        u = torch.einsum("kr,ocrs,ls->klco", gd, weight.double(), gd).float()
        v = torch.einsum("ki,tcij,lj->tklc", b, d, b)
        y = torch.einsum("ik,tklo,jl->toij", a, torch.einsum("tklc,klco->tklo", v, u), a)
        return float((y.double() - ref).pow(2).mean().sqrt())

    ours = rms_error(winograd.F8.bt, winograd.F8.g, winograd.F8.at)
    assert ours < 1e-4 and ours * 4 < rms_error(*usual)


def test_choose_by_output_size() -> None:
    # with torch's sums for transforms (measured on the Zen 3) ...
    assert winograd.choose(128 * 128, False) is winograd.F4 and winograd.choose(64 * 64, False) is winograd.F2
    assert winograd.choose(16 * 16, False) is None
    # ... and with the native ones, F(4x4) from 8² (the AMX Xeon, with and without the AVX2 caps)
    assert winograd.choose(8 * 8, True) is winograd.F4 and winograd.choose(7 * 7, True) is None
    # ... and where the fused native convolution runs, F(8x8) from 32² where it makes fewer products
    # than F(6x6) by a margin (sides in whole tiles of 8), else F(6x6) from 40²
    if native.library() is not None:
        for side in (32, 40, 64, 128, 256):
            assert winograd.choose(side * side, None, True) is winograd.F8
        assert winograd.choose(66 * 66, None, True) is winograd.F6  # 81 tiles of 100 against 121 of 64
        assert winograd.choose(130 * 130, None, True) is winograd.F6  # 0.93 of F(6x6)'s products
        assert winograd.choose(64 * 72, None, True, (64, 72)) is winograd.F8  # 72 tiles of 100 against 132
        assert winograd.choose(64 * 72, None, True, (4, 64 * 72 // 4)) is winograd.F6  # a strip: 144 against 192
        assert winograd.choose(30 * 30, None, True) is winograd.F4
        assert winograd.choose(128 * 128, None, True, channels=64) is winograd.F8
        assert winograd.choose(128 * 128, None, True, channels=48) is winograd.F6  # narrow: F(6x6)
        assert winograd.choose(32 * 32, None, True, channels=48) is winograd.F4
        assert winograd.choose(128 * 128, None, False) is winograd.F4  # (torch's bmm between C transforms)
        assert winograd.choose(128 * 128, False, True) is winograd.F4  # torch's sums


def native_kernels() -> native.Kernels:
    """The native kernels, or the test skipped where none can be built or they are off."""
    kernels = native.library() if native.compiler() is not None and native.enabled() else None
    if kernels is None:
        pytest.skip("no C compiler, or the native kernels are off (INSTYLE_NATIVE)")
    return kernels


@pytest.fixture(params=[False, True], ids=["sums", "native"])
def use_native(request: pytest.FixtureRequest) -> bool:
    """Winograd's transforms as torch's sums, then native (skipped where no C compiler can build them)."""
    if request.param and (native.compiler() is None or not native.enabled()):
        pytest.skip("no C compiler, or the native kernels are off (INSTYLE_NATIVE): torch's sums only")
    return bool(request.param)


@pytest.mark.parametrize("alg", winograd.ALGORITHMS, ids=lambda a: f"F{a.m}")
@pytest.mark.parametrize("size", [(8, 8), (10, 14), (9, 12), (12, 7), (11, 9), (3, 6), (6, 1)])
@pytest.mark.parametrize("band_tiles", [1, 6, 1024])
def test_conv2d_equals_the_direct_convolution(
    alg: winograd.Algorithm, size: tuple[int, int], band_tiles: int, use_native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every band split (one tile row per band, a short last band, one band), sides that are not
    # multiples of m (their last rows and columns direct), a batch
    monkeypatch.setattr(winograd, "BAND_TILES", band_tiles)
    monkeypatch.setattr(winograd, "NATIVE_BAND_TILES", band_tiles)
    torch.manual_seed(0)
    h, w = size
    x = torch.randn(2, 6, h + 2, w + 2).contiguous(memory_format=CL)
    weight = torch.randn(5, 6, 3, 3).contiguous(memory_format=CL)
    out = torch.empty(2, 5, h, w).contiguous(memory_format=CL)
    with torch.inference_mode():
        got = winograd.conv2d(x, weight, winograd.transformed_kernel(weight, alg), alg, out, use_native)
        ref = F.conv2d(x, weight)
    assert got is out
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("alg", winograd.ALGORITHMS, ids=lambda a: f"F{a.m}")
@pytest.mark.parametrize("group", [1, 5, 24, 1000])
def test_the_fused_native_convolution_equals_the_direct_one(alg: winograd.Algorithm, group: int) -> None:
    """Transforms and products in C, a group of tiles per thread at a time (a short last group,
    a group larger than the map), 70 input channels (a block of 64 and a tail), two blocks of
    output channels, read and written through crops; the same values as the transforms in C
    with torch's bmm between them."""
    kernels = native_kernels()
    torch.manual_seed(2)
    c_out = 2 * kernels.conv_block_channels
    x = torch.randn(1, 70, 3 * alg.m + 5, 5 * alg.m + 3).contiguous(memory_format=CL)
    weight = torch.randn(c_out, 70, 3, 3) * 0.1
    kernel = winograd.transformed_kernel(weight, alg)
    out = torch.zeros(1, c_out, 3 * alg.m + 1, 5 * alg.m + 2).contiguous(memory_format=CL)
    crop_in, crop_out = x[:, :, : 3 * alg.m + 2, : 5 * alg.m + 2], out[:, :, : 3 * alg.m, : 5 * alg.m]
    with torch.inference_mode():
        winograd.conv3x3(crop_in, kernel, crop_out, alg, band_tiles=group, use_native=True, fused=True)
        torch.testing.assert_close(crop_out, F.conv2d(crop_in, weight), atol=1e-4, rtol=1e-5)
        banded = winograd.conv3x3(crop_in, kernel, torch.empty_like(crop_out), alg, use_native=True, fused=False)
    torch.testing.assert_close(crop_out, banded, atol=1e-4, rtol=1e-5)  # (no FMA in a baseline x86-64 build)
    assert float(out[:, :, 3 * alg.m :].abs().max()) == 0 and float(out[:, :, :, 5 * alg.m :].abs().max()) == 0
    with pytest.raises(ValueError, match="pack_kernel"):  # a transformed kernel not packed
        kernels.winograd_conv(alg.m, crop_in[0].permute(1, 2, 0), kernel[:, :, :5].contiguous(),
                              crop_out[0, :5].permute(1, 2, 0), group)  # fmt: skip


@pytest.mark.parametrize("alg", [*winograd.ALGORITHMS, winograd.F6, winograd.F8], ids=lambda a: f"F{a.m}")
@pytest.mark.parametrize("size", [(13, 17), (6, 6), (1, 9), (25, 3)])
def test_the_fused_convolution_ends_in_partial_tiles(alg: winograd.Algorithm, size: tuple[int, int]) -> None:
    """Sides that are not multiples of m: the fused C kernel's last tiles read a zero-padded copy of
    their inputs and write their valid outputs only (nothing past the map: a zeroed border around
    the output stays zero); a batch of two, 40 input channels, crops in and out."""
    kernels = native_kernels()
    torch.manual_seed(6)
    h, w = size
    c_out = kernels.conv_block_channels
    x = torch.randn(2, 40, h + 5, w + 4).contiguous(memory_format=CL)
    weight = torch.randn(c_out, 40, 3, 3) * 0.1
    out = torch.zeros(2, c_out, h + 2, w + 3).contiguous(memory_format=CL)
    crop_in, crop_out = x[:, :, : h + 2, : w + 2], out[:, :, 1 : h + 1, 2 : w + 2]
    with torch.inference_mode():
        winograd.conv2d(crop_in, weight, winograd.fused_kernel(weight, alg), alg, crop_out, use_native=True)
    atol = 1e-3 if alg is winograd.F8 else 2e-4  # (F(8x8)'s float32 error, ~6x F(6x6)'s; outputs ~2)
    torch.testing.assert_close(crop_out, F.conv2d(crop_in, weight), atol=atol, rtol=1e-5)
    crop_out.zero_()
    assert not out.any()  # nothing was written outside the crop


@pytest.mark.parametrize("alg", [winograd.F3R2, winograd.F7R2], ids=["F3R2", "F7R2"])
@pytest.mark.parametrize("size", [(9, 12), (10, 7), (4, 5), (2, 2), (103, 101)])
def test_the_2x2_convolution_by_f3r2_and_f7r2(alg: winograd.Algorithm, size: tuple[int, int]) -> None:
    """F(3x3, 2x2) and F(7x7, 2x2), the upsampling's 2x2 convolutions, in C: sides that are not
    multiples of m end in partial tiles (a map smaller than one tile is one), a batch of two; the
    Johnson engine's Conv dispatches a 2x2 kernel to F(3x3, 2x2) from 6², F(7x7, 2x2) from 100²
    (smaller maps direct)."""
    kernels = native_kernels()
    torch.manual_seed(3)
    c_out = kernels.conv_block_channels
    h, w = size
    x = torch.randn(2, 40, h + 1, w + 1).contiguous(memory_format=CL)
    weight = (torch.randn(c_out, 40, 2, 2) * 0.1).contiguous(memory_format=CL)  # outputs ~1
    out = torch.empty(2, c_out, h, w).contiguous(memory_format=CL)
    with torch.inference_mode():
        winograd.conv2d(x, weight, winograd.fused_kernel(weight, alg), alg, out)
        torch.testing.assert_close(out, F.conv2d(x, weight), atol=2e-4, rtol=1e-5)
        conv = Conv(weight, None, 1, 1, winograd={}, native=True)
        torch.testing.assert_close(conv(x), F.conv2d(x, weight), atol=2e-4, rtol=1e-5)
    pixels = h * w
    expected = (
        7 if pixels >= winograd.F7R2.min_pixels_native else 3 if pixels >= winograd.F3R2.min_pixels_native else None
    )
    assert set(conv.winograd or {}) == ({expected} if expected else set())
    assert winograd.choose_2x2(64, c_out + 1) is None  # outputs not in whole blocks: direct
    with pytest.raises(ValueError, match="fused in the native kernels only"):
        one_tile = torch.randn(1, 40, alg.n, alg.n).contiguous(memory_format=CL)
        kernel = winograd.transformed_kernel(weight, alg)
        winograd.conv3x3(
            one_tile, kernel, torch.empty(1, c_out, alg.m, alg.m).contiguous(memory_format=CL), alg, fused=False
        )


@pytest.mark.parametrize("alg", [winograd.F4R5, winograd.F6R5], ids=["F4R5", "F6R5"])
@pytest.mark.parametrize("size", [(9, 13), (16, 8), (4, 7), (3, 3), (100, 97)])
def test_f4r5_and_f6r5_compute_the_5x5_convolution_with_its_bias(
    alg: winograd.Algorithm, size: tuple[int, int]
) -> None:
    """F(4x4, 5x5) and F(6x6, 5x5), the packed output convolution's: 12 output channels (not a
    multiple of the native kernels' columns: the transformed kernel is zero-padded), a bias, 70
    input channels, sides that are not multiples of m (partial tiles, with the bias too), a batch
    of two; the engine's Conv dispatches to the one ``choose_5x5`` picks (direct below 8²)."""
    kernels = native_kernels()
    torch.manual_seed(4)
    h, w = size
    x = torch.randn(2, 70, h + 4, w + 4).contiguous(memory_format=CL)
    weight = (torch.randn(12, 70, 5, 5) * 0.05).contiguous(memory_format=CL)
    bias = torch.randn(12)
    kernel = winograd.fused_kernel(weight, alg)
    block, nn = kernels.conv_block_channels, alg.n**2  # packed in panels of a product block's columns
    assert kernel.shape == (nn, -(-12 // block), 70, block)
    columns = kernel.permute(0, 2, 1, 3).reshape(nn, 70, -1)
    assert torch.equal(columns[:, :, :12], winograd.transformed_kernel(weight, alg))
    assert not columns[:, :, 12:].any()
    out = torch.empty(2, 12, h, w).contiguous(memory_format=CL)
    ref = F.conv2d(x, weight, bias)
    picked = winograd.choose_5x5(h * w)

    def atol(a: winograd.Algorithm | None) -> float:  # (F(6x6, 5x5)'s float32 error ~5x F(4x4, 5x5)'s; outputs ~2)
        return 1e-3 if a is winograd.F6R5 else 2e-4

    with torch.inference_mode():
        winograd.conv2d(x, weight, kernel, alg, out, bias=bias)
        torch.testing.assert_close(out, ref, atol=atol(alg), rtol=1e-5)
        conv = Conv(weight, bias, 1, 0, winograd={}, native=True)
        torch.testing.assert_close(conv(x), ref, atol=atol(picked), rtol=1e-5)
    assert set(conv.winograd or {}) == ({picked.m} if picked else set())
    with pytest.raises(ValueError, match="pack_kernel"):  # the kernel as transformed, not packed
        kernels.winograd_conv(alg.m, x[0].permute(1, 2, 0), winograd.transformed_kernel(weight, alg),
                              out[0].permute(1, 2, 0), 24, r=5)  # fmt: skip
    with pytest.raises(ValueError, match="bias"):
        kernels.winograd_conv(alg.m, x[0].permute(1, 2, 0), kernel, out[0].permute(1, 2, 0), 24, r=5,
                              bias=torch.randn(11))  # fmt: skip


@pytest.mark.parametrize("size", [(16, 16), (20, 28), (34, 9), (10, 10), (201, 196)])
def test_a_9x9_convolution_by_f4r5_on_the_space_to_depth_map(size: tuple[int, int]) -> None:
    """The Johnson net's first convolution (3 -> 32 channels, 9x9, a bias here) as a 5x5 one on its
    input's 2x2 space-to-depth map by F(4x4, 5x5) (from 96² maps F(6x6, 5x5): the last size),
    written out to full resolution by the C kernel
    (``phases``): over the part whose sides are even, its last tiles partial, an odd last row or
    column direct (a map too small for the engine's Conv all direct); a batch of two."""
    native_kernels()
    torch.manual_seed(5)
    h, w = size
    x = torch.rand(2, 3, h + 8, w + 8).contiguous(memory_format=CL)
    weight = (torch.randn(32, 3, 9, 9) * 0.05).contiguous(memory_format=CL)
    bias = torch.randn(32)
    conv = Conv(weight, bias, 1, 4, winograd={}, native=True)
    with torch.inference_mode():
        got = conv(x)
    picked = winograd.choose_9x9(h * w)
    atol = 1e-4 if picked is winograd.F6R5 else 2e-5  # (outputs ~0.4)
    torch.testing.assert_close(got, F.conv2d(x, weight, bias), atol=atol, rtol=1e-5)
    assert set(conv.winograd or {}) == ({picked.m} if picked else set())
    assert (picked is winograd.F6R5) == (h * w >= 4 * 96 * 96)
    assert winograd.space_to_depth(x[:, :, :16, :16])[0, 3 * 3 + 1, 2, 5] == x[0, 1, 5, 11]  # phase (1, 1)
    with pytest.raises(ValueError, match="9x9"):
        winograd.packed_conv2d(x, weight[:, :, :7, :7], torch.empty(0), winograd.F4R5, torch.empty(2, 32, 2, 2))


def test_conv3x3_reads_and_writes_crops(use_native: bool) -> None:
    # the part of a larger map whose sides are multiples of m, read and written through views
    torch.manual_seed(1)
    x = torch.randn(1, 4, 12, 13).contiguous(memory_format=CL)
    weight = torch.randn(3, 4, 3, 3)
    out = torch.zeros(1, 3, 11, 11).contiguous(memory_format=CL)
    kernel = winograd.transformed_kernel(weight, winograd.F4)
    with torch.inference_mode():
        winograd.conv3x3(x[:, :, :10, :10], kernel, out[:, :, :8, :8], use_native=use_native)
        torch.testing.assert_close(out[:, :, :8, :8], F.conv2d(x[:, :, :10, :10], weight), atol=1e-4, rtol=1e-5)
    assert float(out[:, :, 8:].abs().max()) == 0 and float(out[:, :, :, 8:].abs().max()) == 0
    with pytest.raises(ValueError, match="multiples of 4"):
        winograd.conv3x3(x[:, :, :8, :10], kernel, out[:, :, :6, :8])


@pytest.mark.parametrize("padding", ["reflect", "zero"])
def test_engine_residuals_by_winograd_change_nothing(
    padding: str, use_native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = dataclasses.replace(winograd.F2, min_pixels=0, min_pixels_native=0)
    monkeypatch.setattr(winograd, "ALGORITHMS", (winograd.F4, small))
    cfg = GeneratorConfig(width=0.25, residual_blocks=2, padding=padding)  # type: ignore[arg-type]
    torch.manual_seed(0)
    body, cpu = cast(JohnsonBody, build_generator(cfg).eval().body), torch.device("cpu")
    direct = JohnsonEngine(body, padding, torch.float32, cpu, winograd_residuals=False)
    fast = JohnsonEngine(body, padding, torch.float32, cpu, winograd_residuals=True, native_transforms=use_native)
    assert fast.res[0][0].winograd == {} and direct.res[0][0].winograd is None
    x = torch.rand(2, 3, 37, 54)  # 1/4 resolution 10 x 14 and, tiled, bands of odd rows
    with torch.inference_mode():
        ref = direct(x)
        torch.testing.assert_close(fast(x), ref, atol=1e-5, rtol=0)
        # made on first use: torch's sums take F(2x2) on so small a map, the native ones F(4x4)
        assert set(fast.res[0][0].winograd) == ({4} if use_native else {2})
        torch.testing.assert_close(tiled_forward(fast, x, band=5), ref, atol=1e-4, rtol=0)
        # 1/4 resolution 84 x 82: with the native kernels F(6x6), fused, partial tiles at the edges;
        # with torch's sums F(4x4), its last rows and columns direct; tiled, bands of 24 rows
        x = torch.rand(1, 3, 336, 328)
        ref = direct(x)
        torch.testing.assert_close(fast(x), ref, atol=1e-4, rtol=0)
        assert (6 if use_native else 4) in fast.res[0][0].winograd
        torch.testing.assert_close(tiled_forward(fast, x, band=24), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("padding", ["reflect", "zero"])
def test_engine_residuals_by_f6_change_nothing(padding: str) -> None:
    """Residual blocks of 32 channels (a whole block of the fused kernel's outputs): F(6x6, 3x3)
    from 40² maps, partial tiles at the edges, untiled and in tiled bands, and the engine's 9x9
    convolutions by F(4x4, 5x5); the output as with oneDNN's direct convolutions."""
    block = native_kernels().conv_block_channels
    cfg = GeneratorConfig(width=block / 128, residual_blocks=1, padding=padding)  # type: ignore[arg-type]
    torch.manual_seed(0)
    body, cpu = cast(JohnsonBody, build_generator(cfg).eval().body), torch.device("cpu")
    direct = JohnsonEngine(body, padding, torch.float32, cpu, winograd_residuals=False, winograd_ends=False)
    fast = JohnsonEngine(body, padding, torch.float32, cpu, winograd_residuals=True, winograd_upsampling=True)
    x = torch.rand(1, 3, 204, 332)  # 1/4 resolution 51 x 83
    with torch.inference_mode():
        ref = direct(x)
        torch.testing.assert_close(fast(x), ref, atol=1e-4, rtol=0)
        assert set(fast.res[0][0].winograd or {}) == {6}
        torch.testing.assert_close(tiled_forward(fast, x, band=40), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("padding", ["reflect", "zero"])
def test_engine_residuals_by_f8_change_nothing(padding: str) -> None:
    """The same with maps F(8x8, 3x3) takes (1/4 resolution 47 x 88: 66 tiles of 100 products
    against F(6x6)'s 120 of 64; partial tiles on the last rows; 64 channels, F8_MIN_CHANNELS),
    untiled and in tiled bands."""
    native_kernels()
    cfg = GeneratorConfig(width=0.5, residual_blocks=1, padding=padding)  # type: ignore[arg-type]
    torch.manual_seed(0)
    body, cpu = cast(JohnsonBody, build_generator(cfg).eval().body), torch.device("cpu")
    direct = JohnsonEngine(body, padding, torch.float32, cpu, winograd_residuals=False, winograd_ends=False)
    fast = JohnsonEngine(body, padding, torch.float32, cpu, winograd_residuals=True, winograd_upsampling=True)
    x = torch.rand(1, 3, 188, 352)
    with torch.inference_mode():
        ref = direct(x)
        torch.testing.assert_close(fast(x), ref, atol=1e-4, rtol=0)
        assert set(fast.res[0][0].winograd or {}) == {8}
        torch.testing.assert_close(tiled_forward(fast, x, band=40), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("padding", ["reflect", "zero"])
def test_engine_output_by_winograd_changes_nothing(padding: str) -> None:
    """The two 9x9 convolutions (the first, and the output one packed) by F(4x4, 5x5), on larger
    maps F(6x6, 5x5): the engine's output as with oneDNN's direct ones (a side that is not a
    multiple of 16: partial tiles), the bytes path and a tiled pass too; they follow the
    upsampling's Winograd by default."""
    native_kernels()
    cfg = GeneratorConfig(width=0.25, residual_blocks=1, padding=padding)  # type: ignore[arg-type]
    torch.manual_seed(0)
    body, cpu = cast(JohnsonBody, build_generator(cfg).eval().body), torch.device("cpu")
    direct = JohnsonEngine(body, padding, torch.float32, cpu, winograd_ends=False)
    fast = JohnsonEngine(body, padding, torch.float32, cpu, winograd_upsampling=True, winograd_ends=True)
    assert fast.out_packed is not None and fast.out_packed.winograd == {} and direct.out_packed is not None
    assert direct.out_packed.winograd is None and direct.enc[0].winograd is None and fast.enc[0].winograd == {}
    default = JohnsonEngine(body, padding, torch.float32, cpu)
    assert default.winograd_ends == default.winograd_upsampling
    x = torch.rand(1, 3, 44, 68)  # packed output 22 x 34: its last tiles partial
    pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    with torch.inference_mode():
        ref = direct(x)
        torch.testing.assert_close(fast(x), ref, atol=1e-5, rtol=0)
        assert set(fast.out_packed.winograd) == {4} and set(fast.enc[0].winograd) == {4}
        assert (fast.forward_bytes(pixels).int() - direct.forward_bytes(pixels).int()).abs().max() <= 1
        torch.testing.assert_close(tiled_forward(fast, x, band=5), ref, atol=1e-4, rtol=0)
        # space-to-depth maps from 96² (100 x 106 here): F(6x6, 5x5), its last tiles partial
        x = torch.rand(1, 3, 200, 212)
        pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        ref = direct(x)
        torch.testing.assert_close(fast(x), ref, atol=1e-4, rtol=0)
        assert 6 in fast.out_packed.winograd and 6 in fast.enc[0].winograd
        assert (fast.forward_bytes(pixels).int() - direct.forward_bytes(pixels).int()).abs().max() <= 1
        torch.testing.assert_close(tiled_forward(fast, x, band=24), ref, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="float32"):
        JohnsonEngine(body, padding, torch.bfloat16, cpu, winograd_ends=True)


def test_winograd_only_in_float32_on_a_cpu() -> None:
    body = cast(JohnsonBody, build_generator(GeneratorConfig(width=0.25, residual_blocks=1)).eval().body)
    bf16 = torch.bfloat16
    with pytest.raises(ValueError, match="float32"):
        JohnsonEngine(body, "reflect", bf16, torch.device("cpu"), winograd_residuals=True, residual_dtype=bf16)
    assert not JohnsonEngine(body, "reflect", bf16, torch.device("cpu"), residual_dtype=bf16).winograd_residuals
    # a bf16 engine whose residual blocks run in float32 (no AMX here) runs them by Winograd
    mixed = JohnsonEngine(body, "reflect", bf16, torch.device("cpu"))
    assert mixed.winograd_residuals == fast.float32_residuals(torch.device("cpu"), bf16)
    assert not mixed.winograd_upsampling  # the decoder stays in bf16, direct
    capability = torch.backends.cpu.get_cpu_capability()  # AVX2, or AVX-512 with the native transforms
    expected = capability == "AVX2" or (capability.startswith("AVX512") and native.library() is not None)
    assert JohnsonEngine(body, "reflect", torch.float32, torch.device("cpu")).winograd_residuals == expected


@pytest.mark.parametrize("padding", ["reflect", "zero"])
def test_the_ulyanov_engine_runs_its_3x3_convolutions_by_winograd_in_float32(padding: str) -> None:
    """Ulyanov's pyramid in float32 on a CPU: its 3x3 convolutions of 8 input channels and more by
    Winograd in the fused native kernels (F(6x6) where the map is large enough, any number of
    outputs; none without the native kernels), not the RGB ones; the output as eager's, untiled
    and tiled."""
    cfg = GeneratorConfig(arch="ulyanov", scales=3, channels_per_scale=8, padding=padding)  # type: ignore[arg-type]
    torch.manual_seed(0)
    model = build_generator(cfg).eval()
    engine = fast.optimize(model, cfg, precision="fp32")
    assert isinstance(engine, fast.UlyanovEngine)
    convs = [c for block in engine.scale_blocks + engine.merges for c in block]
    expected = winograd.applies(torch.device("cpu"), torch.float32) and native.library() is not None
    for conv in convs:
        k, c_in = conv.weight.shape[2], conv.weight.shape[1]
        assert (conv.winograd is not None) == (expected and k == 3 and c_in >= 8)
    x = torch.rand(1, 3, 172, 196)
    with torch.inference_mode():
        ref = fast.eager_from(model, cfg)(x)
        torch.testing.assert_close(engine(x), ref, atol=1e-4, rtol=0)
        torch.testing.assert_close(tiled_forward(engine, x, band=24), ref, atol=1e-4, rtol=0)
    used = {m for conv in convs for m in (conv.winograd or {})}
    if expected:
        assert 6 in used and 8 not in used  # the finest scale's 172 x 196 maps; 8 channels: too few for F(8x8)


@pytest.mark.parametrize("k", [3, 2])
def test_the_fused_convolution_measures_what_it_writes(k: int) -> None:
    """``Conv.measured``: the per-(image, channel) moments the C kernel sums in float64 as it writes
    the outputs (partial tiles' valid outputs only) are the output's own, and the upsampling's
    phases measured from them as from the map; none unless the fused native convolution runs or
    when not asked for."""
    kernels = native_kernels()
    torch.manual_seed(7)
    # the 3x3 one with a one-vector block of outputs too; the upsampling's 2x2 takes whole blocks
    c_out = kernels.conv_block_channels + (8 if k == 3 else 0)
    x = torch.randn(2, 24, 61 + k - 1, 47 + k - 1).contiguous(memory_format=CL) + 3.0  # mean far from 0
    weight = (torch.randn(c_out, 24, k, k) * 0.1).contiguous(memory_format=CL)
    conv = Conv(weight, None, 1, 0, winograd={}, native=True)
    with torch.inference_mode():
        out, moments = conv.measured(x)
        assert moments is not None and moments.count == 61 * 47
        expected = fast.Moments.of(out)
        torch.testing.assert_close(moments.mean, expected.mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(moments.var, expected.var, rtol=1e-5, atol=1e-6)
        if k == 2:  # the upsampling's phases take the whole output's moments from it
            phases, measured = fast.ShiftedPhases(out), fast.ShiftedPhases(out, moments)
            torch.testing.assert_close(measured.moments().var, phases.moments().var, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(measured.moments().mean, phases.moments().mean, rtol=1e-6, atol=1e-6)
        assert conv.measured(x, measure=False)[1] is None
        direct = Conv(weight, None, 1, 0)
        assert direct.measured(x)[1] is None  # oneDNN's: measured by the norm itself
