"""Tiled inference reproduces the untiled engine: exact whole-image instance-norm statistics."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from stylenet import inference, tiling
from stylenet.buffers import BufferPool
from stylenet.config import GeneratorConfig
from stylenet.export import psnr
from stylenet.fast import CL, Conv, UlyanovEngine, cpu_has_native_bf16, optimize
from stylenet.imageio import image_to_tensor, tensor_to_image, to_bytes
from stylenet.inference import stylize_image
from stylenet.tiling import tiled_forward, tiled_pyramid
from tests.stylenet.test_fast import _photo, _random, _trained


@pytest.mark.parametrize(("size", "band"), [((8, 8), 1), ((70, 45), 2), ((101, 64), 3), ((96, 130), 64)])
@pytest.mark.parametrize("padding", ["reflect", "zero"])
def test_tiled_equals_untiled_in_fp32(size: tuple[int, int], band: int, padding: str) -> None:
    cfg = GeneratorConfig(width=0.25, residual_blocks=2, padding=padding)  # type: ignore[arg-type]
    engine = optimize(_random(cfg), cfg, precision="fp32")
    x = torch.rand(2, 3, *size)
    untiled = engine(x)
    tiled = tiled_forward(engine, x, band=band)
    assert tiled.shape == untiled.shape
    assert float((tiled - untiled).abs().max()) < 1e-4


def test_tiled_johnson_keeps_its_whole_image_buffers_in_the_arena(small_arena: BufferPool) -> None:
    """The features and the residual blocks' second buffer are placed in the arena (then the
    bands over the second's pages), and the pass gives the arena's pages back once done."""
    cfg = GeneratorConfig(width=0.25, residual_blocks=2)
    engine = optimize(_random(cfg), cfg, precision="fp32")
    x = torch.rand(1, 3, 64, 96)
    untiled = engine(x)
    small_arena.min_bytes = 32 * 16 * 24 * 4  # the 1/4-resolution buffers, and larger
    whole: list[bool] = []  # whether the arena placed each (1, 32, 16, 24) request (no reference kept)
    take = small_arena.take

    def recording(shape, dtype, memory_format=CL):  # type: ignore[no-untyped-def]
        out = take(shape, dtype, memory_format)
        if tuple(shape) == (1, 32, 16, 24):
            whole.append(out is not None)
        return out

    small_arena.take = recording  # type: ignore[method-assign]
    tiled = tiled_forward(engine, x, band=4)
    assert float((tiled - untiled).abs().max()) < 1e-4
    assert whole == [True, True]  # the features and the second buffer
    assert small_arena.stats.trimmed > 0
    assert small_arena.in_use_bytes == 0 and small_arena.stats.high_water == 0


def test_naive_tiling_would_not_match() -> None:
    """The point of the exact statistics: tiles normalized on their own differ visibly."""
    ts, cfg = _trained()
    engine = optimize(ts, cfg, precision="fp32")
    x = _photo(128)
    whole = engine(x)
    h = x.shape[2] // 2
    naive = torch.cat([engine(x[:, :, :h]), engine(x[:, :, h:])], dim=2)
    assert psnr(naive, whole) < 30.0
    assert psnr(tiled_forward(engine, x, band=4), whole) > 80.0


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bfloat16")
def test_tiled_bf16_matches_untiled_on_a_real_photo() -> None:
    ts, cfg = _trained()
    engine = optimize(ts, cfg, precision="bf16")
    x = _photo(200, "skimage_astronaut.jpg")
    assert psnr(tiled_forward(engine, x, band=8), engine(x)) >= 40.0
    with torch.inference_mode():
        assert psnr(tiled_forward(engine, x, band=8), ts(x)) >= 40.0


def test_stylize_image_tiles_above_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    ts, cfg = _trained()
    engine = optimize(ts, cfg, precision="fp32")
    calls: list[tuple[int, ...]] = []

    def counting(e, x, band=32, progress=None):  # type: ignore[no-untyped-def]
        calls.append(tuple(x.shape))
        return tiling.tiled_forward(e, x, band=4, progress=progress)

    monkeypatch.setattr(inference, "tiled_forward", counting)
    photo = Image.new("RGB", (64, 48), (120, 80, 40))
    small = stylize_image(engine, photo, tile_pixels=64 * 48)  # not above: untiled
    assert calls == []
    big = stylize_image(engine, photo, tile_pixels=64 * 48 - 1)
    assert calls == [(1, 48, 64, 3)]  # tiled, the photo goes in as its bytes
    assert small.size == big.size == (64, 48)


def test_auto_tile_threshold_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from stylenet.config import TILE_MEGAPIXELS
    from stylenet.tiling import auto_tile_pixels, tile_threshold

    assert auto_tile_pixels("cpu") == int(TILE_MEGAPIXELS * 1_000_000)
    # a GPU tiles only what would not fit in half its memory: an 80 GB card never (up to 8192²),
    # a 16 GB card above ~27 MP (so 4096² untiled, 8192² tiled)
    for gb, tiles_4096, tiles_8192 in ((80, False, False), (16, False, True)):
        props = SimpleNamespace(total_memory=gb * 10**9)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _dev, props=props: props)
        limit = auto_tile_pixels("cuda")
        assert (limit < 4096**2, limit < 8192**2) == (tiles_4096, tiles_8192)
    assert tile_threshold(0.5, "cuda") == 500_000 and tile_threshold(None, "cuda") == limit


def _pyramid(padding: str = "reflect") -> UlyanovEngine:
    cfg = GeneratorConfig(arch="ulyanov", scales=3, channels_per_scale=4, padding=padding)  # type: ignore[arg-type]
    engine = optimize(_random(cfg), cfg, precision="fp32")
    assert isinstance(engine, UlyanovEngine)
    return engine


@pytest.mark.parametrize(
    ("size", "band", "stored_pixels"),
    [((64, 64), 4, 16), ((70, 45), 2, 1), ((101, 64), 6, 64), ((96, 130), 64, 100)],
)
@pytest.mark.parametrize("padding", ["reflect", "zero"])
@pytest.mark.parametrize("kept_bytes", [0, tiling.PYRAMID_KEPT_BYTES], ids=["recomputed", "kept"])
def test_tiled_pyramid_equals_untiled_in_fp32(
    size: tuple[int, int], band: int, stored_pixels: int, padding: str, kept_bytes: int
) -> None:
    """Ulyanov's generator: tiled stages (down to a single stored one) reproduce the whole image,
    odd sizes, batches and bands of 2 rows included, whether the tiled stages below the finest
    are computed anew for each pass of the stage above or kept once measured."""
    engine = _pyramid(padding)
    x = torch.rand(2, 3, *size)
    untiled = engine(x)
    tiled = tiled_pyramid(engine, x, band=band, stored_pixels=stored_pixels, kept_bytes=kept_bytes)
    assert tiled.shape == untiled.shape
    assert float((tiled - untiled).abs().max()) < 1e-4


@pytest.mark.parametrize("as_bytes", [False, True], ids=["float", "bytes"])
def test_bands_wholly_below_the_photo_read_its_last_row(as_bytes: bool) -> None:
    """Five scales pad a 50-row photo to 64: bands of 4 from row 52 on lay wholly in the padding,
    and reading them failed ("Expected 3D or 4D ... got [1, 3, 0, 40]")."""
    cfg = GeneratorConfig(arch="ulyanov", scales=5, channels_per_scale=4)  # type: ignore[arg-type]
    engine = optimize(_random(cfg), cfg, precision="fp32")
    x = torch.rand(1, 3, 50, 40)
    if as_bytes:
        x = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    untiled = engine(x) if not as_bytes else None
    tiled = tiled_pyramid(engine, x, band=4, stored_pixels=16)
    if untiled is not None:
        assert float((tiled - untiled).abs().max()) < 1e-4
    else:
        assert tiled.shape == x.shape


def test_kept_stages_are_the_finer_ones_that_fit_and_save_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _pyramid()  # 3 scales, 4 channels each: stage s outputs 4 (s + 1) channels
    x = torch.rand(1, 3, 64, 64)
    pyramid = engine.prepare(x)  # 16², 32², 64²
    middle = 4 * 2 * 32 * 32 * 4  # stage 1's output in float32 bytes
    assert tiling._kept_stages(engine, pyramid, {1}, middle) == {1}
    assert tiling._kept_stages(engine, pyramid, {1}, middle - 1) == set()
    assert tiling._kept_stages(engine, pyramid, {0, 1}, middle) == {1}  # the finer first
    calls: list[int] = []
    stage = engine.stage

    def counted(s: int, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(s)
        return stage(s, *args, **kwargs)

    monkeypatch.setattr(engine, "stage", counted)
    runs, counts = {}, {}
    for kept_bytes in (0, middle):
        calls.clear()
        runs[kept_bytes] = tiled_pyramid(engine, x, band=8, stored_pixels=16 * 16, kept_bytes=kept_bytes)
        counts[kept_bytes] = {s: calls.count(s) for s in (1, 2)}
    assert counts[middle][1] == 9 * 2  # stage 1 kept: its 8 norm passes and the keeping one, 2 bands each
    assert counts[0][1] > 2 * counts[middle][1]  # not kept: computed anew in stage 2's passes too
    assert counts[0][2] == counts[middle][2]
    # the same values; bit-equal where MKL runs AVX-512, but its AVX2 products (an AMD CPU, or
    # MKL_ENABLE_INSTRUCTIONS=AVX2) round by the bands' extent: 3.6e-7 apart
    # (float32 rounding: Winograd's tiles start where each band does, kept or recomputed)
    torch.testing.assert_close(runs[0], runs[middle], rtol=0, atol=2e-5)


def test_naive_tiling_of_the_pyramid_would_not_match() -> None:
    engine = _pyramid()
    x = _photo(128)
    whole = engine(x)
    naive = torch.cat([engine(x[:, :, :64]), engine(x[:, :, 64:])], dim=2)
    assert psnr(naive, whole) < 30.0
    assert psnr(tiled_pyramid(engine, x, band=8, stored_pixels=1), whole) > 80.0


def test_stylize_image_tiles_a_pyramid_above_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _pyramid()
    calls: list[int] = []
    original = tiling.tiled_pyramid

    def counting(e, x, band=32, stored_pixels=tiling.PYRAMID_STORED_PIXELS, progress=None):  # type: ignore[no-untyped-def]
        calls.append(band)
        return original(e, x, band=8, stored_pixels=16, progress=progress)

    monkeypatch.setattr(tiling, "tiled_pyramid", counting)
    photo = tensor_to_image(_photo(64)[0])  # 64 x 43
    small = stylize_image(engine, photo, tile_pixels=64 * 43)
    assert calls == []
    big = stylize_image(engine, photo, tile_pixels=64 * 43 - 1)
    assert calls == [64]  # 2x the Johnson band's rows, at the finest scale
    assert psnr(image_to_tensor(big), image_to_tensor(small)) > 45.0  # equal but for 8-bit rounding


def _johnson() -> torch.nn.Module:
    cfg = GeneratorConfig(width=0.25, residual_blocks=2)
    return optimize(_random(cfg), cfg, precision="fp32")


@pytest.mark.parametrize(
    "run",
    [
        lambda x, progress: tiled_forward(_johnson(), x, band=4, progress=progress),
        lambda x, progress: tiled_pyramid(_pyramid(), x, band=8, stored_pixels=64, progress=progress),
    ],
    ids=["johnson", "ulyanov"],
)
def test_a_tiled_pass_reports_its_progress_band_by_band(run) -> None:  # type: ignore[no-untyped-def]
    reports: list[float] = []
    out = run(torch.rand(1, 3, 64, 48), reports.append)
    assert out.shape == (1, 3, 64, 48)
    assert len(reports) > 20  # every band of every pass
    assert all(0 < a < b for a, b in itertools.pairwise(reports))  # strictly increasing
    assert reports[-1] == 1.0  # the count of bands was right: it ends exactly at the end


def test_progress_can_stop_a_tiled_pass() -> None:
    class Stop(Exception):
        pass

    seen: list[float] = []

    def stop_halfway(done: float) -> None:
        seen.append(done)
        if done >= 0.5:
            raise Stop

    with pytest.raises(Stop):
        tiled_forward(_johnson(), torch.rand(1, 3, 64, 48), band=4, progress=stop_halfway)
    assert 0.5 <= seen[-1] < 0.6  # it stopped where it was told to, not at the end


def test_an_untiled_image_reports_no_progress() -> None:
    reports: list[float] = []
    stylize_image(_johnson(), Image.new("RGB", (32, 24)), tile_pixels=32 * 24, progress=reports.append)
    assert reports == []
    stylize_image(_johnson(), Image.new("RGB", (32, 24)), tile_pixels=32 * 24 - 1, progress=reports.append)
    assert reports[-1] == 1.0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("size", [(64, 48), (37, 61), (5, 9)])
def test_bytes_in_bytes_out_equals_the_float_pass_converted(precision: str, size: tuple[int, int]) -> None:
    """The tiled pass on uint8 pixels, converted a band at a time, gives exactly the bytes of the
    float pass's output: the same values reach the engine, the same rounding leaves it."""
    if precision == "bf16" and not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bfloat16")
    cfg = GeneratorConfig(width=0.25, residual_blocks=2)
    johnson = optimize(_random(cfg), cfg, precision=precision)
    pixels = torch.randint(0, 256, (2, *size, 3), dtype=torch.uint8)
    floats = pixels.permute(0, 3, 1, 2).float() / 255
    for engine, run in [
        (johnson, lambda e, x: tiled_forward(e, x, band=2)),
        (_pyramid(), lambda e, x: tiled_pyramid(e, x, band=4, stored_pixels=16)),
    ]:
        as_bytes = run(engine, pixels)
        assert as_bytes.dtype == torch.uint8 and as_bytes.shape == pixels.shape
        assert torch.equal(as_bytes, to_bytes(run(engine, floats)))


def test_the_tiled_pyramids_input_levels_are_prepares_without_the_finest_in_float() -> None:
    engine = _pyramid()
    x = torch.rand(2, 3, 70, 45)
    reference = engine.prepare(x)
    levels = tiling._input_pyramid(engine, tiling._Photo(x, engine.device), stored_pixels=16)
    assert isinstance(levels[-1], tiling._Rows)  # the finest level is read band by band
    for ours, theirs in zip(levels[:-1], reference[:-1], strict=True):
        assert torch.equal(ours, theirs)  # pooled band by band: the same means
    assert torch.equal(levels[-1][:, :, 8:24], reference[-1][:, :, 8:24])
    assert torch.equal(levels[-1][:, :, 60:72], reference[-1][:, :, 60:72])  # the padded bottom rows


def test_stylize_batch_runs_engines_bytes_to_bytes_untiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Untiled, without preserve_color, a Johnson or Ulyanov engine reads the decoded bytes and
    writes bytes (``forward_bytes``): the picture the float path gave, and no float photo.

    The float reference runs the same batch of two: oneDNN may block a batch of one and a batch
    of two differently, and the sums' order then moves a value across a rounding boundary now
    and then (one grey level at one or two pixels of most random photos on a Zen 4 EPYC)."""
    cfg = GeneratorConfig(width=0.25, residual_blocks=2)
    photos = [Image.fromarray(torch.randint(0, 256, (37, 61, 3), dtype=torch.uint8).numpy()) for _ in range(2)]
    for engine in (optimize(_random(cfg), cfg, precision="fp32"), _pyramid()):
        with torch.inference_mode():
            y = engine(torch.stack([image_to_tensor(p) for p in photos]))
        expected = [tensor_to_image(y[k : k + 1]) for k in range(len(photos))]
        monkeypatch.setattr(inference, "bytes_to_float", None)  # the float path would fail
        got = inference.stylize_batch(engine, photos, [False, False])
        monkeypatch.undo()
        assert [g.tobytes() for g in got] == [e.tobytes() for e in expected]
        kept = inference.stylize_batch(engine, photos[:1], [True])  # preserve_color: the float path
        assert kept[0].size == photos[0].size


def test_stylize_pixels_float_path_is_the_image_path() -> None:
    """A generator that only takes floats (here a plain module) gets the float photo
    ``image_to_tensor`` gives, and its output comes back as the bytes ``tensor_to_image`` shows;
    a photo that keeps its colours does too."""
    torch.manual_seed(0)
    generator = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Sigmoid()).eval()
    pixels = torch.randint(0, 256, (2, 19, 23, 3), dtype=torch.uint8)
    photos = [Image.fromarray(pixels[k].numpy()) for k in range(2)]
    with torch.inference_mode():
        expected = [np.asarray(tensor_to_image(generator(image_to_tensor(p)[None]))) for p in photos]
    got = inference.stylize_pixels(generator, pixels, [False, False])
    assert got.dtype == torch.uint8 and got.shape == pixels.shape
    for k in range(2):
        np.testing.assert_array_equal(got[k].numpy(), expected[k])
    kept = inference.stylize_pixels(generator, pixels[:1], [True])
    assert kept.shape == (1, 19, 23, 3)
    np.testing.assert_array_equal(
        kept[0].numpy(), np.asarray(inference.stylize_batch(generator, photos[:1], [True])[0])
    )


@pytest.mark.parametrize(
    "run",
    [
        lambda x: tiled_forward(_johnson(), x, band=4),
        lambda x: tiled_pyramid(_pyramid(), x, band=8, stored_pixels=64),
    ],
    ids=["johnson", "ulyanov"],
)
def test_a_tiled_pass_leaves_no_reference_cycle(run) -> None:  # type: ignore[no-untyped-def]
    """Everything a tiled pass built is freed when it returns, not when the cyclic garbage
    collector next runs: a closure calling itself once kept a 4096² pass's 1.7 GB alive into
    the next pass."""
    import gc

    x = torch.rand(1, 3, 64, 48)
    run(x)
    gc.collect()
    gc.disable()
    try:
        run(x)
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert unreachable == 0


@pytest.mark.parametrize("mode", ["reflect", "replicate", "zero"])
@pytest.mark.parametrize(("height", "band", "pad"), [(37, 8, 1), (37, 1, 1), (9, 4, 2), (5, 32, 1), (8, 2, 2)])
def test_a_convolution_over_its_input_equals_the_banded_one(mode: str, height: int, band: int, pad: int) -> None:
    """The residual blocks' second convolution writes each band over the rows it read, one
    band late: the same values as convolving the untouched input band by band."""
    torch.manual_seed(height + band)
    k = 2 * pad + 1
    conv = Conv(torch.randn(6, 6, k, k).contiguous(memory_format=CL), None, 1, pad)
    src = torch.randn(2, 6, height, 11).contiguous(memory_format=CL)
    expected = torch.cat([rows for _, _, rows in tiling._tiled_conv(src, conv, mode, band)], dim=2)
    written = list(tiling._tiled_conv_over(src, conv, mode, band))
    assert written == tiling._bands(height, band)
    torch.testing.assert_close(src, expected, rtol=0, atol=0)


def test_a_convolution_over_its_input_needs_bands_as_tall_as_its_halo() -> None:
    conv = Conv(torch.randn(4, 4, 5, 5).contiguous(memory_format=CL), None, 1, 2)
    with pytest.raises(ValueError, match="halo"):
        list(tiling._tiled_conv_over(torch.randn(1, 4, 9, 9), conv, "reflect", 1))
