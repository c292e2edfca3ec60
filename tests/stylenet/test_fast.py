"""The fast inference engine computes the same function as the eager generator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import pytest
import torch
import torch.nn.functional as F

from stylenet import fast, winograd
from stylenet.config import GeneratorConfig
from stylenet.export import load_generator, psnr
from stylenet.fast import (
    GenericEngine,
    JohnsonEngine,
    Moments,
    NormParams,
    ShiftedPhases,
    UlyanovEngine,
    channel_moments,
    depth_to_space,
    fill_border,
    fill_border_packed,
    load_engine,
    normalize,
    optimize,
    pad_cl,
    phase_kernels,
    phase_taps,
    probe_image,
    resolve_precision,
    space_to_depth_kernel,
)
from stylenet.generator import build_generator
from stylenet.imageio import image_to_tensor, load_image, resize_max, to_bytes
from stylenet.johnson import JohnsonBody
from stylenet.tiling import tiled_forward
from tests.conftest import ASSET_PHOTOS, REPO

SHIPPED = REPO / "model_store" / "shipped" / "starry-night" / "1"
SHIPPED_ULYANOV = REPO / "model_store" / "shipped" / "starry-night-ulyanov" / "1"
BF16 = fast.cpu_has_native_bf16()


def _trained(folder: Path = SHIPPED) -> tuple[torch.nn.Module, GeneratorConfig]:
    cfg = GeneratorConfig.from_dict(json.loads((folder / "manifest.json").read_text())["generator"])
    return load_generator(folder / "generator.ts"), cfg


def _random(cfg: GeneratorConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_generator(cfg).eval()
    with torch.no_grad():  # non-trivial affine parameters, so the norms matter
        for m in model.modules():
            if isinstance(m, torch.nn.InstanceNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


def _photo(long_side: int, name: str = "skimage_chelsea.jpg") -> torch.Tensor:
    return image_to_tensor(resize_max(load_image(ASSET_PHOTOS / name), long_side)).unsqueeze(0)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "zero"])
@pytest.mark.parametrize("pad", [1, 4])
def test_fill_border_matches_f_pad(mode: str, pad: int) -> None:
    x = torch.rand(2, 3, 9, 11)
    buf = torch.zeros(2, 3, 9 + 2 * pad, 11 + 2 * pad)
    buf[:, :, pad:-pad, pad:-pad] = x
    expected = F.pad(x, (pad,) * 4, mode="constant" if mode == "zero" else mode)
    assert torch.equal(fill_border(buf, pad, mode), expected)


@pytest.mark.parametrize("padding", ["reflect", "replicate", "zero"])
def test_phase_kernels_equal_upsample_then_conv(padding: str) -> None:
    """3x3 conv on the nearest-x2-upsampled map == phase conv on the low-res map, interleaved."""
    torch.manual_seed(0)
    x = torch.randn(1, 5, 7, 6, dtype=torch.float64)
    w = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    up = F.interpolate(x, scale_factor=2.0, mode="nearest")
    ref = F.conv2d(F.pad(up, (1, 1, 1, 1), mode="constant" if padding == "zero" else padding), w)
    low = F.pad(x, (1, 1, 1, 1), mode="constant" if padding == "zero" else "replicate")
    phases = F.conv2d(low, phase_kernels(w))  # (1, 4 * 4, 7, 6), channel (2 a + b) * 4 + c
    got = phases.unflatten(1, (2, 2, 4)).permute(0, 3, 4, 1, 5, 2).reshape(1, 4, 14, 12)
    assert torch.allclose(got, ref, atol=1e-10)


def test_phase_taps_give_the_phase_kernels_output_shifted() -> None:
    """The 2x2 convolution of the four phases' taps holds the 3x3 phase kernels' output, each
    phase shifted by its (a, b); its moments over any rows are those of the phases' rows."""
    torch.manual_seed(0)
    low = torch.randn(2, 5, 11, 8, dtype=torch.float64) * 2 + 1  # a low-res map padded by 1
    w = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    ref = F.conv2d(low, phase_kernels(w))  # (2, 16, 9, 6): phase (a, b) of channel c at (2 a + b) 4 + c
    taps = phase_taps(w)
    assert taps.shape == (16, 5, 2, 2)
    shifted = ShiftedPhases(F.conv2d(low, taps).float().contiguous(memory_format=torch.channels_last))
    assert shifted.data.shape == (2, 16, 10, 7) and shifted.channels == 4
    for a in range(2):
        for b in range(2):
            g = slice((2 * a + b) * 4, (2 * a + b + 1) * 4)
            assert torch.allclose(shifted.phase(a, b).double(), ref[:, g], atol=1e-5)
    upsampled = ref.unflatten(1, (2, 2, 4)).permute(0, 3, 4, 1, 5, 2).reshape(2, 4, 18, 12)  # interleaved
    for rows in [slice(None), slice(0, 3), slice(3, 9), slice(8, 9)]:
        got, want = shifted.moments(rows), Moments.of(upsampled[:, :, fast._scaled(rows, 2)].float())
        assert got.count == want.count and got.mean.shape == (2, 4)
        torch.testing.assert_close(got.mean, want.mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.var, want.var, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("padding", ["reflect", "replicate", "zero"])
def test_shifted_phases_change_nothing(padding: str) -> None:
    # the CPU default against the 3x3 phase kernels (the GPU one): untiled, tiled and in bytes
    cfg = GeneratorConfig(width=0.25, residual_blocks=2, padding=padding)  # type: ignore[arg-type]
    body, cpu = cast(JohnsonBody, _random(cfg).body), torch.device("cpu")
    plain = JohnsonEngine(body, padding, torch.float32, cpu, shifted_phases=False)
    shifted = JohnsonEngine(body, padding, torch.float32, cpu)
    assert shifted.shifted_phases and not plain.shifted_phases
    assert shifted.dec[0].weight.shape[2:] == (2, 2) and plain.dec[0].weight.shape[2:] == (3, 3)
    x = torch.rand(2, 3, 37, 53)
    pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    with torch.inference_mode():
        ref = plain(x)
        assert torch.allclose(shifted(x), ref, atol=1e-5)
        assert torch.allclose(tiled_forward(shifted, x, band=8), ref, atol=1e-4)
        bf16 = JohnsonEngine(body, padding, torch.bfloat16, cpu, shifted_phases=False)
        assert psnr(JohnsonEngine(body, padding, torch.bfloat16, cpu)(x), bf16(x)) > 45  # the same up to rounding
        diff = shifted.forward_bytes(pixels).int() - plain.forward_bytes(pixels).int()
        assert int(diff.abs().max()) <= 1  # a sum in another order may round the other way


def _space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """(N, C, 2h, 2w) -> (N, 4 C, h, w), channel (2 a + b) C + c = pixel (2 i + a, 2 j + b)."""
    return F.pixel_unshuffle(x, 2).unflatten(1, (x.shape[1], 4)).transpose(1, 2).flatten(1, 2)


@pytest.mark.parametrize("k", [3, 9])
def test_space_to_depth_kernel_equals_the_full_convolution(k: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 14 + k - 1, 10 + k - 1, dtype=torch.float64)  # an even-sided padded input
    w, b = torch.randn(3, 5, k, k, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    x = F.pad(x, (0, (k - 1) % 2, 0, (k - 1) % 2))  # k = 9: 22x18 even, k = 3: 16x12 even
    ref = F.conv2d(x, w, b)
    got = depth_to_space(F.conv2d(_space_to_depth(x), space_to_depth_kernel(w), b.repeat(4))).permute(0, 3, 1, 2)
    assert got.shape[-2] >= ref.shape[-2]
    assert torch.allclose(got[..., : ref.shape[-2], : ref.shape[-1]], ref, atol=1e-10)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "zero"])
@pytest.mark.parametrize("pad", [2, 4])
def test_fill_border_packed_matches_f_pad(mode: str, pad: int) -> None:
    x = torch.rand(2, 3, 10, 12)
    full = F.pad(x, (pad,) * 4, mode="constant" if mode == "zero" else mode)
    buf = _space_to_depth(F.pad(x, (pad,) * 4, value=float("nan"))).contiguous(memory_format=torch.channels_last)
    assert torch.equal(fill_border_packed(buf, pad, mode), _space_to_depth(full))


def test_moments_merge_exactly() -> None:
    y = torch.randn(2, 6, 20, 9) * 3 + 5
    whole = Moments.of(y)
    parts = Moments.of(y[:, :, :7]).merge(Moments.of(y[:, :, 7:13])).merge(Moments.of(y[:, :, 13:]))
    assert parts.count == whole.count == 180
    assert torch.allclose(parts.mean, y.mean(dim=(2, 3)), atol=1e-5)
    assert torch.allclose(parts.var, y.var(dim=(2, 3), correction=0), rtol=1e-4)


@pytest.mark.parametrize("channels", [8, 128])
def test_moments_of_a_bf16_map_are_float32_exact(channels: int) -> None:
    """A tiled bf16 pass normalizes with the moments of its bands: they are the float32
    statistics of the bf16 values, not statistics rounded to bf16."""
    torch.manual_seed(1)
    y = (torch.randn(2, channels, 33, 40) * 3 + 7).bfloat16().contiguous(memory_format=torch.channels_last)
    moments, ref = Moments.of(y), y.double()
    assert moments.mean.dtype == moments.m2.dtype == torch.float32
    assert torch.allclose(moments.mean.double(), ref.mean(dim=(2, 3)), rtol=1e-6, atol=1e-6)
    assert torch.allclose(moments.var.double(), ref.var(dim=(2, 3), correction=0), rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels", [1, 3, 8, 16, 32, 48, 128])
@pytest.mark.parametrize("size", [(24, 40), (7, 9), (1, 2), (5, 2)])
@pytest.mark.parametrize("with_native", [True, False])
def test_channel_moments_measure_each_channel(
    channels: int, size: tuple[int, int], dtype: torch.dtype, with_native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured on the map's memory seen as more channels (every k-th pixel of a channel in
    one), merged back: each channel's own mean and biased variance, in float32 for a bf16 map
    too, and nothing written; by the native kernel or, without it, torch's."""
    if not with_native:
        monkeypatch.setattr(fast, "_native_moments", lambda y: None)
    torch.manual_seed(channels)
    y = (torch.randn(1, channels, *size) * 3 + 5).to(dtype).contiguous(memory_format=torch.channels_last)
    before = y.clone()
    mean, var = channel_moments(y)
    assert mean.shape == var.shape == (channels,) and mean.dtype == var.dtype == torch.float32
    ref = y.double()
    assert torch.allclose(mean.double(), ref.mean(dim=(0, 2, 3)), rtol=1e-6, atol=1e-6)
    assert torch.allclose(var.double(), ref.var(dim=(0, 2, 3), correction=0), rtol=1e-5, atol=1e-6)
    assert torch.equal(y, before)
    # so the engines' normalization is the eager one's, within float32 (bf16) rounding
    params = NormParams(torch.rand(channels) + 0.5, torch.randn(channels), 1e-5)
    eager = F.batch_norm(y, None, None, params.weight, params.bias, True, 0.0, params.eps)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(normalize(y, params), eager, rtol=tol, atol=tol)
    torch.testing.assert_close(Moments.of(y).var[0], var)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("given", [False, True])
def test_normalize_in_place_is_bit_equal(dtype: torch.dtype, batch: int, given: bool) -> None:
    """The engines normalize conv outputs in place: same values as F.batch_norm, no new buffer."""
    torch.manual_seed(0)
    y = (torch.randn(batch, 16, 24, 40) * 3 + 1).to(dtype).contiguous(memory_format=torch.channels_last)
    params = NormParams(torch.rand(16) + 0.5, torch.randn(16), 1e-5)
    stats = Moments.of(y.float() + 0.5) if given else None  # someone else's statistics (tiling)
    # a map of 16 channels is measured apart, then normalized with its statistics
    measured = [None if given else channel_moments(y[i : i + 1]) for i in range(batch)]
    expected = torch.cat([
        F.batch_norm(y[i : i + 1], *m, params.weight, params.bias, False, 0.0, params.eps) if m is not None else
        F.batch_norm(
            y[i : i + 1], None if stats is None else stats.mean[i], None if stats is None else stats.var[i],
            params.weight, params.bias, stats is None, 0.0, params.eps,
        )
        for i, m in enumerate(measured)
    ])  # fmt: skip
    copied = normalize(y, params, stats)
    assert copied.data_ptr() != y.data_ptr() and torch.equal(copied, expected)
    result = normalize(y, params, stats, inplace=True)
    assert result.data_ptr() == y.data_ptr() and result.dtype == dtype
    assert torch.equal(result, expected)


@pytest.mark.parametrize("size", [(8, 8), (37, 53), (64, 96)])
@pytest.mark.parametrize("padding", ["reflect", "replicate", "zero"])
def test_johnson_engine_fp32_matches_eager(size: tuple[int, int], padding: str) -> None:
    cfg = GeneratorConfig(width=0.25, residual_blocks=2, padding=padding)  # type: ignore[arg-type]
    model = _random(cfg)
    engine = optimize(model, cfg, precision="fp32")
    assert isinstance(engine, JohnsonEngine)
    x = torch.rand(2, 3, *size)
    with torch.inference_mode():
        ref = model(x)
        got = engine(x)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert float((got - ref).abs().max()) < 1e-4


@pytest.mark.parametrize("padding", ["reflect", "zero"])
def test_zero_padded_rgb_channels_change_nothing(padding: str) -> None:
    # the CUDA layout (8 RGB channels for tensor-core 9x9 convolutions), checked on the CPU
    cfg = GeneratorConfig(width=0.25, residual_blocks=2, padding=padding)  # type: ignore[arg-type]
    model = _random(cfg)
    body, cpu = cast(JohnsonBody, model.body), torch.device("cpu")
    plain = JohnsonEngine(body, padding, torch.float32, cpu, packed_output=False)
    padded = JohnsonEngine(body, padding, torch.float32, cpu, rgb_channels=8, packed_output=False)
    assert plain.rgb_channels == 3 and padded.enc[0].weight.shape[1] == 8 and padded.out.weight.shape[0] == 8
    x = torch.rand(2, 3, 37, 53)
    with torch.inference_mode():
        assert torch.allclose(padded(x), plain(x), atol=1e-6)
        assert torch.allclose(tiled_forward(padded, x, band=16), plain(x), atol=1e-4)


@pytest.mark.parametrize("size", [(8, 8), (37, 53)])
@pytest.mark.parametrize("padding", ["reflect", "replicate", "zero"])
@pytest.mark.parametrize(("rgb_channels", "packed_rgb"), [(3, 3), (3, 4), (8, None)])
def test_packed_output_convolution_changes_nothing(
    size: tuple[int, int], padding: str, rgb_channels: int, packed_rgb: int | None
) -> None:
    # the output 9x9 convolution as a 5x5 one on the decoder's phases (the CPU default), with
    # 12 outputs (RGB per phase), 16 (a zero channel each: float32 on AVX2), and in the CUDA
    # layout (8 RGB channels in, 16 outputs)
    cfg = GeneratorConfig(width=0.25, residual_blocks=2, padding=padding)  # type: ignore[arg-type]
    body, cpu = cast(JohnsonBody, _random(cfg).body), torch.device("cpu")
    plain = JohnsonEngine(body, padding, torch.float32, cpu, packed_output=False)
    packed = JohnsonEngine(
        body, padding, torch.float32, cpu, rgb_channels=rgb_channels, packed_output=True, packed_rgb=packed_rgb
    )
    assert packed.out_packed is not None and plain.out_packed is None
    outputs = 12 if (packed_rgb or 4) == 3 else 16
    assert packed.out_packed.weight.shape[:2] == (outputs, 4 * plain.out.weight.shape[1])
    x = torch.rand(2, 3, *size)
    with torch.inference_mode():
        ref = plain(x)
        assert torch.allclose(packed(x), ref, atol=1e-5)
        assert torch.allclose(tiled_forward(packed, x, band=8), ref, atol=1e-4)


def test_the_packed_output_has_16_channels_where_they_are_faster() -> None:
    cfg = GeneratorConfig(width=0.25, residual_blocks=1)
    body, cpu = cast(JohnsonBody, _random(cfg).body), torch.device("cpu")
    avx2 = torch.backends.cpu.get_cpu_capability() == "AVX2"  # float32 on it: oneDNN's 16-output kernel
    direct = JohnsonEngine(body, "reflect", torch.float32, cpu, winograd_ends=False)
    assert direct.packed_rgb == (4 if avx2 else 3)
    # ... but Winograd's products (with the native kernels) take 12 outputs in 16 columns anyway
    ends = JohnsonEngine(body, "reflect", torch.float32, cpu, winograd_ends=True)
    assert ends.packed_rgb == (4 if avx2 and not ends.winograd_ends else 3)
    assert JohnsonEngine(body, "reflect", torch.bfloat16, cpu).packed_rgb == 3
    assert JohnsonEngine(body, "reflect", torch.float32, cpu, rgb_channels=8).packed_rgb == 4  # CUDA's layout
    with pytest.raises(ValueError, match="packed_rgb"):
        JohnsonEngine(body, "reflect", torch.float32, cpu, packed_rgb=8)


def test_depth_to_space_is_a_pixel_shuffle_of_phase_major_channels() -> None:
    y = torch.randn(2, 12, 5, 7).contiguous(memory_format=torch.channels_last)
    channel_major = y.unflatten(1, (4, 3)).transpose(1, 2).flatten(1, 2)  # (o, a, b): pixel_shuffle's order
    got = depth_to_space(y)
    assert got.shape == (2, 10, 14, 3) and got.is_contiguous()
    assert torch.equal(got, F.pixel_shuffle(channel_major, 2).permute(0, 2, 3, 1))


def _as_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1], as ``image_to_tensor``."""
    return pixels.permute(0, 3, 1, 2).float().div(255.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("padding", ["reflect", "zero"])
def test_prepare_bytes_is_bit_equal_to_prepare_then_pad(dtype: torch.dtype, padding: str) -> None:
    cfg = GeneratorConfig(width=0.25, residual_blocks=1, padding=padding)  # type: ignore[arg-type]
    engine = JohnsonEngine(cast(JohnsonBody, _random(cfg).body), padding, dtype, torch.device("cpu"))
    pixels = torch.arange(16 * 48 * 3).remainder(256).to(torch.uint8).reshape(1, 16, 48, 3)
    for crop in [(16, 48), (13, 46)]:  # every byte value; sides padded to x4 or not
        part = pixels[:, : crop[0], : crop[1]]
        ref = pad_cl(engine.prepare(_as_float(part)), engine.enc[0].pad, padding)
        got = engine.prepare_bytes(part)
        assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(got, ref)


@pytest.mark.parametrize("size", [(8, 8), (37, 53)])
@pytest.mark.parametrize("padding", ["reflect", "replicate", "zero"])
@pytest.mark.parametrize(
    ("rgb_channels", "packed", "packed_rgb"), [(3, True, 3), (3, True, 4), (3, False, None), (8, True, None)]
)
def test_johnson_bytes_in_bytes_out_is_bit_equal(
    size: tuple[int, int], padding: str, rgb_channels: int, packed: bool, packed_rgb: int | None
) -> None:
    cfg = GeneratorConfig(width=0.25, residual_blocks=2, padding=padding)  # type: ignore[arg-type]
    body = cast(JohnsonBody, _random(cfg).body)
    engine = JohnsonEngine(
        body, padding, torch.float32, torch.device("cpu"), rgb_channels, packed, packed_rgb=packed_rgb
    )
    pixels = (torch.rand(2, *size, 3) * 256).to(torch.uint8)
    got = engine.forward_bytes(pixels)
    assert got.dtype == torch.uint8 and got.shape == pixels.shape and got.is_contiguous()
    with torch.inference_mode():
        assert torch.equal(got, to_bytes(engine(_as_float(pixels))))


def test_bytes_in_bytes_out_of_the_shipped_styles_is_bit_equal() -> None:
    pixels = to_bytes(_photo(97))  # odd sides: padded to the engines' multiples
    for folder in (SHIPPED, SHIPPED_ULYANOV):
        ts, cfg = _trained(folder)
        for precision in ["fp32"] + (["bf16"] if BF16 else []):
            engine = optimize(ts, cfg, precision=precision)
            with torch.inference_mode():
                assert torch.equal(engine.forward_bytes(pixels), to_bytes(engine(_as_float(pixels))))


def test_the_output_convolution_is_packed_by_default_on_cpus() -> None:
    cfg = GeneratorConfig(width=0.25, residual_blocks=2)
    engine = optimize(_random(cfg), cfg, precision="fp32")
    assert isinstance(engine, JohnsonEngine) and engine.out_packed is not None


def test_johnson_engine_on_the_torchscript_artifact_of_a_shipped_style() -> None:
    ts, cfg = _trained()
    x = _photo(160)
    with torch.inference_mode():
        ref = ts(x)
        assert float((optimize(ts, cfg, precision="fp32")(x) - ref).abs().max()) < 1e-4
        if BF16:
            engine = optimize(ts, cfg)
            assert engine.precision == "bf16"
            assert psnr(engine(x), ref) >= 40.0


def test_ulyanov_engine_on_the_torchscript_artifact_of_the_shipped_texture_network() -> None:
    """The shipped Ulyanov style: its engine reproduces the artifact in fp32, and in bf16 (where
    the CPU has it) passes the load-time probe's 40 dB, as an untrained Ulyanov net does not."""
    ts, cfg = _trained(SHIPPED_ULYANOV)
    assert cfg.arch == "ulyanov" and cfg.norm == "instance"
    x = _photo(160)
    with torch.inference_mode():
        ref = ts(x)
        engine = optimize(ts, cfg, precision="fp32")
        assert isinstance(engine, UlyanovEngine)
        assert float((engine(x) - ref).abs().max()) < 1e-4
        if BF16:
            engine = optimize(ts, cfg)
            assert engine.precision == "bf16"
            assert psnr(engine(x), ref) >= 40.0


@pytest.mark.parametrize(("norm", "noise"), [("batch", 0), ("instance", 2)])
def test_generic_engine_fp32_matches_eager_for_ulyanov(norm: str, noise: int) -> None:
    cfg = GeneratorConfig(arch="ulyanov", norm=norm, scales=3, channels_per_scale=4, noise_channels=noise)  # type: ignore[arg-type]
    model = _random(cfg)
    engine = optimize(model, cfg, precision="fp32")
    assert isinstance(engine, GenericEngine)
    x = torch.rand(1, 3, 40, 52)
    with torch.inference_mode():
        torch.manual_seed(5)  # the same noise channels for both, where there are any
        fast = engine(x)
        torch.manual_seed(5)
        assert float((fast - model(x)).abs().max()) < 1e-4


def test_auto_precision_falls_back_to_fp32_when_the_probe_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = GeneratorConfig(width=0.25, residual_blocks=1)
    model = _random(cfg)
    monkeypatch.setattr(fast, "resolve_precision", lambda precision, device: torch.bfloat16)
    monkeypatch.setattr(fast, "MIN_PSNR_DB", 1e9)  # nothing in bf16 passes this
    engine = optimize(model, cfg, precision="auto")
    assert engine.precision == "fp32" and engine.dtype == torch.float32
    # a forced precision is kept as asked
    assert optimize(model, cfg, precision="bf16").precision == "bf16"


def test_resolve_precision() -> None:
    assert resolve_precision("fp32", "cpu") == torch.float32
    assert resolve_precision("bf16", "cpu") == torch.bfloat16
    assert resolve_precision("auto", "cpu") == (torch.bfloat16 if BF16 else torch.float32)
    assert resolve_precision("auto", "cuda") == torch.float16
    with pytest.raises(ValueError, match="fp16 is for CUDA"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", "cpu")


@pytest.mark.parametrize(
    ("onednn", "avx512_bf16", "amx", "native"),
    [
        (True, False, False, False),  # Skylake-X / Cascade Lake / Ice Lake: oneDNN emulates bf16
        (True, True, False, True),  # Zen 4 / Zen 5 / Cooper Lake
        (True, True, True, True),  # Sapphire Rapids and later
        (False, True, True, False),  # oneDNN capped below AVX-512 (ONEDNN_MAX_CPU_ISA)
    ],
)
def test_native_bf16_needs_the_instructions_not_only_onednn(
    monkeypatch: pytest.MonkeyPatch, onednn: bool, avx512_bf16: bool, amx: bool, native: bool
) -> None:
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert fast.cpu_has_native_bf16() is native
    assert resolve_precision("auto", "cpu") == (torch.bfloat16 if native else torch.float32)
    # a bf16 engine's residual blocks in float32 Winograd where there is no AMX (and Winograd runs)
    cpu = torch.device("cpu")
    winograd_here = winograd.applies(cpu, torch.float32) and fast.native.library() is not None
    assert fast.float32_residuals(cpu, torch.bfloat16) is (winograd_here and not amx)
    assert not fast.float32_residuals(cpu, torch.float32)


@pytest.mark.parametrize("padding", ["reflect", "zero"])
def test_a_bf16_engine_with_float32_residual_blocks(padding: str) -> None:
    """bf16 encoder and decoder around float32 residual blocks (``residual_dtype``): the
    encoder's last norm writes the float32 stream, the decoder's padded input converts it
    back; as close to float32 as all-bf16 is or closer, bytes in and out and tiled alike."""
    cfg = GeneratorConfig(width=0.25, residual_blocks=2, padding=padding)  # type: ignore[arg-type]
    body = cast(JohnsonBody, _random(cfg).body)
    cpu = torch.device("cpu")
    mixed = JohnsonEngine(body, padding, torch.bfloat16, cpu, residual_dtype=torch.float32)
    plain = JohnsonEngine(body, padding, torch.bfloat16, cpu, residual_dtype=torch.bfloat16)
    assert mixed.res_dtype == mixed.res[0][0].weight.dtype == torch.float32
    assert plain.res_dtype == plain.res[0][0].weight.dtype == torch.bfloat16
    assert (mixed.residual_precision, plain.residual_precision) == ("fp32", "bf16")
    assert mixed.enc[0].weight.dtype == mixed.dec[0].weight.dtype == torch.bfloat16
    x = torch.rand(2, 3, 37, 53)
    with torch.inference_mode():
        ref = JohnsonEngine(body, padding, torch.float32, cpu)(x)
        stream = mixed.encode(mixed.prepare(x), out_pad=mixed.res_pad)
        assert stream.dtype == torch.float32
        got = mixed(x)
        assert got.dtype == torch.float32 and got.shape == x.shape
        assert psnr(got, ref) >= 40.0 and psnr(got, ref) >= psnr(plain(x), ref) - 1.0
        pixels = to_bytes(x)
        assert torch.equal(mixed.forward_bytes(pixels), to_bytes(mixed(_as_float(pixels))))
        assert psnr(tiled_forward(mixed, x, band=3), got) >= 50.0


def test_bf16_instructions_read_from_proc_cpuinfo_where_torch_cannot_say(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    cpuinfo = tmp_path / "cpuinfo"
    real_open = open

    def fake_open(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        return real_open(cpuinfo if path == "/proc/cpuinfo" else path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert not fast.cpu_has_bf16_instructions()
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert fast.cpu_has_bf16_instructions()


def test_load_engine_falls_back_to_the_artifact_when_the_config_does_not_fit() -> None:
    data = (SHIPPED / "generator.ts").read_bytes()
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    assert isinstance(load_engine(data, manifest["generator"]), JohnsonEngine)
    wrong = {**manifest["generator"], "residual_blocks": 2}  # weights do not fit: served as is
    module = load_engine(data, wrong)
    assert not isinstance(module, (JohnsonEngine, GenericEngine))
    assert module(probe_image()).shape == (1, 3, 96, 128)


def test_load_engine_runs_the_artifact_when_the_config_describes_another_network(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A padding or upsampling has no weights: a manifest saying "zero" for a reflect-padded
    artifact built another network (25 dB from the artifact), with the probe check passing."""
    data = (SHIPPED / "generator.ts").read_bytes()
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    assert manifest["generator"]["padding"] != "zero"
    module = load_engine(data, {**manifest["generator"], "padding": "zero"}, precision="fp32", name="x")
    assert not isinstance(module, (JohnsonEngine, GenericEngine))
    assert "differs from the artifact" in caplog.text


@pytest.mark.parametrize("data", [b"not a generator", b"PK\x03\x04" + b"\0" * 64])
def test_an_artifact_that_does_not_load_is_one_clear_error(data: bytes) -> None:
    from stylenet.exceptions import InvalidArtifact

    with pytest.raises(InvalidArtifact, match="not a loadable TorchScript generator") as caught:
        load_engine(data, {})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("size", [(40, 52), (64, 64), (70, 33)])
@pytest.mark.parametrize("padding", ["reflect", "replicate", "zero"])
def test_ulyanov_engine_fp32_matches_eager(size: tuple[int, int], padding: str) -> None:
    """Normalizing the coarse map before upsampling it, and pooling the pyramid level by level,
    change nothing beyond float32 rounding."""
    cfg = GeneratorConfig(arch="ulyanov", scales=3, channels_per_scale=4, padding=padding)  # type: ignore[arg-type]
    model = _random(cfg)
    engine = optimize(model, cfg, precision="fp32")
    assert isinstance(engine, UlyanovEngine)
    x = torch.rand(2, 3, *size)
    with torch.inference_mode():
        assert float((engine(x) - model(x)).abs().max()) < 1e-4
