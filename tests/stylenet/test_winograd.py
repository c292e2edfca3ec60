"""Winograd F(2x2, 3x3): the same convolution as oneDNN's direct one, any side, and in the engine."""

from __future__ import annotations

from typing import cast

import pytest
import torch
import torch.nn.functional as F

from stylenet import winograd
from stylenet.config import GeneratorConfig
from stylenet.fast import JohnsonEngine
from stylenet.generator import build_generator
from stylenet.johnson import JohnsonBody
from stylenet.tiling import tiled_forward

CL = torch.channels_last


def test_transformed_kernel_products_are_the_convolution_of_one_tile() -> None:
    """A single 4x4 tile: A^T [(G g G^T) * (B^T d B)] A == the 2x2 valid convolution of d by g."""
    torch.manual_seed(0)
    g, d = torch.randn(1, 1, 3, 3, dtype=torch.float64), torch.randn(1, 1, 4, 4, dtype=torch.float64)
    bt = torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float64)
    at = torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float64)
    u = winograd.transformed_kernel(g).double().reshape(4, 4)  # float32-rounded, exact for these
    ref = torch.nn.functional.conv2d(d, g)[0, 0]
    tile = at @ (u * (bt @ d[0, 0] @ bt.T)) @ at.T
    assert torch.allclose(tile, ref, atol=1e-5)


@pytest.mark.parametrize("size", [(8, 8), (10, 14), (9, 12), (12, 7), (11, 9), (1, 6), (6, 1)])
@pytest.mark.parametrize("band_tiles", [1, 14, 1024])
def test_conv2d_equals_the_direct_convolution(
    size: tuple[int, int], band_tiles: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every band split (one tile row per band, a short last band, one band), odd sides, a batch
    monkeypatch.setattr(winograd, "BAND_TILES", band_tiles)
    torch.manual_seed(0)
    h, w = size
    x = torch.randn(2, 6, h + 2, w + 2).contiguous(memory_format=CL)
    weight = torch.randn(5, 6, 3, 3).contiguous(memory_format=CL)
    out = torch.empty(2, 5, h, w, memory_format=CL)
    with torch.inference_mode():
        got = winograd.conv2d(x, weight, winograd.transformed_kernel(weight), out)
        ref = F.conv2d(x, weight)
    assert got is out
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-5)


def test_conv3x3_reads_and_writes_crops() -> None:
    # the even part of a larger map, read and written in place through views
    torch.manual_seed(1)
    x = torch.randn(1, 4, 12, 13).contiguous(memory_format=CL)
    weight = torch.randn(3, 4, 3, 3)
    out = torch.zeros(1, 3, 11, 11).contiguous(memory_format=CL)
    with torch.inference_mode():
        winograd.conv3x3(x[:, :, :10, :8], winograd.transformed_kernel(weight), out[:, :, :8, :6])
        torch.testing.assert_close(out[:, :, :8, :6], F.conv2d(x[:, :, :10, :8], weight), atol=2e-5, rtol=1e-5)
    assert float(out[:, :, 8:].abs().max()) == 0 and float(out[:, :, :, 6:].abs().max()) == 0
    with pytest.raises(ValueError, match="even sides"):
        winograd.conv3x3(x[:, :, :9, :8], winograd.transformed_kernel(weight), out[:, :, :7, :6])


@pytest.mark.parametrize("padding", ["reflect", "zero"])
def test_engine_residuals_by_winograd_change_nothing(padding: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(winograd, "MIN_PIXELS", 0)  # the test's small maps too
    cfg = GeneratorConfig(width=0.25, residual_blocks=2, padding=padding)  # type: ignore[arg-type]
    torch.manual_seed(0)
    body, cpu = cast(JohnsonBody, build_generator(cfg).eval().body), torch.device("cpu")
    direct = JohnsonEngine(body, padding, torch.float32, cpu, winograd_residuals=False)
    fast = JohnsonEngine(body, padding, torch.float32, cpu, winograd_residuals=True)
    assert fast.res[0][0].winograd is not None and direct.res[0][0].winograd is None
    x = torch.rand(2, 3, 37, 54)  # 1/4 resolution 10 x 14 and, tiled, bands of odd rows
    with torch.inference_mode():
        ref = direct(x)
        torch.testing.assert_close(fast(x), ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(tiled_forward(fast, x, band=5), ref, atol=1e-4, rtol=0)


def test_winograd_only_in_float32_on_a_cpu() -> None:
    body = cast(JohnsonBody, build_generator(GeneratorConfig(width=0.25, residual_blocks=1)).eval().body)
    with pytest.raises(ValueError, match="float32"):
        JohnsonEngine(body, "reflect", torch.bfloat16, torch.device("cpu"), winograd_residuals=True)
    assert not JohnsonEngine(body, "reflect", torch.bfloat16, torch.device("cpu")).winograd_residuals
    expected = torch.backends.cpu.get_cpu_capability() == "AVX2"
    assert JohnsonEngine(body, "reflect", torch.float32, torch.device("cpu")).winograd_residuals == expected
