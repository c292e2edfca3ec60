"""The native kernels (``stylenet.native``): built once per machine and source, checked against
torch's path, and never required: without a compiler, or turned off, torch's ops run instead."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from stylenet import native, winograd

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_library() -> Iterator[None]:
    """``native.library()`` looked up again under this test's environment, and afterwards."""
    native.library.cache_clear()
    yield
    native.library.cache_clear()


def needs_compiler() -> None:
    if native.compiler() is None:
        pytest.skip("no C compiler here: the native kernels cannot be built (torch's ops run instead)")
    if not native.enabled():
        pytest.skip("native kernels off (INSTYLE_NATIVE): torch's ops run instead")


def test_built_once_per_key_into_the_cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needs_compiler()
    first = native.build(tmp_path)
    assert first.parent == tmp_path and first.name.startswith("libinstyle-") and first.suffix == ".so"
    built_at = first.stat().st_mtime_ns
    assert native.build(tmp_path) == first and first.stat().st_mtime_ns == built_at  # found, not rebuilt
    monkeypatch.setenv("INSTYLE_NATIVE_CFLAGS", "-O2")  # other flags, another library
    other = native.build(tmp_path)
    assert other != first and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, other.name])  # no temp files


def test_the_key_names_source_flags_compiler_and_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cc = "cc"
    key = native.build_key(cc, ["-O3"])
    assert native.build_key(cc, ["-O3"]) == key and native.build_key(cc, ["-O2"]) != key
    monkeypatch.setattr(native, "_cpu_identity", lambda: "flags : sse2")  # another CPU
    assert native.build_key(cc, ["-O3"]) != key


def test_a_failing_compiler_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs_compiler()
    monkeypatch.setenv("INSTYLE_NATIVE_CFLAGS", "-O3 --no-such-flag")
    with pytest.raises(native.NativeError, match="no-such-flag"):
        native.build(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_without_a_compiler_torch_runs_instead(
    fresh_library: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setenv("CC", "no-such-compiler-here")
    monkeypatch.setenv("INSTYLE_NATIVE_DIR", str(tmp_path))  # nothing built there yet
    monkeypatch.setenv("INSTYLE_NATIVE", "1")  # (on, even in a run with them off: it is the fallback that is tested)
    assert native.compiler() is None
    with pytest.raises(native.NativeError, match="no C compiler"):
        native.build()
    with caplog.at_level(logging.WARNING, logger="stylenet.native"):
        assert native.library() is None
    assert "using torch's ops instead" in caplog.text
    _the_engine_runs_without_native()


def test_a_damaged_library_file_is_built_again(
    fresh_library: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    needs_compiler()
    monkeypatch.setenv("INSTYLE_NATIVE_DIR", str(tmp_path))
    path = native.build()
    path.write_bytes(b"not a shared library")  # e.g. a cache copied from elsewhere, or a full disk
    with caplog.at_level(logging.WARNING, logger="stylenet.native"):
        kernels = native.library()
    assert kernels is not None and kernels.path == path and "building them again" in caplog.text
    assert winograd.self_check(kernels) < 1e-4


def test_turned_off_by_the_environment(fresh_library: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSTYLE_NATIVE", "0")
    assert not native.enabled() and native.library() is None
    x = torch.randn(1, 4, 10, 10).contiguous(memory_format=torch.channels_last)
    kernel = winograd.transformed_kernel(torch.randn(3, 4, 3, 3), winograd.F4)
    out = torch.empty(1, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    with pytest.raises(native.NativeError, match="unavailable"):
        winograd.conv3x3(x, kernel, out, use_native=True)
    winograd.conv3x3(x, kernel, out)  # the default: torch's sums
    _the_engine_runs_without_native()


def _the_engine_runs_without_native() -> None:
    """Without the native kernels the thresholds are torch's sums' and the engine still runs."""
    assert winograd.choose(64 * 64) is winograd.F2 and winograd.choose(16 * 16) is None
    capability = torch.backends.cpu.get_cpu_capability()
    assert winograd.applies(torch.device("cpu"), torch.float32) == (capability == "AVX2")


def test_the_native_transforms_match_torchs_sums() -> None:
    needs_compiler()
    kernels = native.library()
    assert kernels is not None, "a compiler is here, so the library must build (see the log)"
    assert winograd.self_check(kernels) < 1e-4
    assert winograd.choose(8 * 8) is winograd.F4  # then the fastest from 8² up (docs/performance.md)
    capability = torch.backends.cpu.get_cpu_capability()
    expected = capability == "AVX2" or capability.startswith("AVX512")
    assert winograd.applies(torch.device("cpu"), torch.float32) == expected


def test_the_kernels_check_their_arguments() -> None:
    needs_compiler()
    kernels = native.library()
    assert kernels is not None
    src = torch.randn(1, 4, 10, 10).contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)[0]
    u = torch.empty(36, 4, 4)
    kernels.winograd_input(4, src, u, 2, 2)  # (10 x 10 input: 2 x 2 tiles of 6, stride 4)
    with pytest.raises(ValueError, match="channels contiguous"):
        kernels.winograd_input(4, torch.randn(10, 4, 10).transpose(1, 2), u, 2, 2)  # channel stride 10
    with pytest.raises(ValueError, match="float32"):
        kernels.winograd_input(4, src.double(), u, 2, 2)
    with pytest.raises(ValueError, match="too small"):
        kernels.winograd_input(4, src, torch.empty(36, 9, 4), 3, 3)
    with pytest.raises(ValueError, match="contiguous float32"):
        kernels.winograd_input(4, src, torch.empty(36, 4, 5), 2, 2)
    with pytest.raises(ValueError, match="no Winograd transform"):
        kernels.winograd_input(3, src, torch.empty(25, 4, 4), 2, 2)
    dst = torch.empty(8, 8, 3)
    kernels.winograd_output(4, torch.randn(36, 4, 3), dst, 2, 2)
    with pytest.raises(ValueError, match="too small"):
        kernels.winograd_output(4, torch.randn(36, 9, 3), dst, 3, 3)


@pytest.mark.parametrize(
    ("dtype", "src_dtype"),
    [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.float32, torch.bfloat16)],
    ids=["f32", "bf16", "bf16-to-f32"],
)
@pytest.mark.parametrize("slope", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("accumulate", [False, True])
def test_affine_act_is_the_map_rounded_once(
    dtype: torch.dtype, src_dtype: torch.dtype, slope: float, accumulate: bool
) -> None:
    """``dtype``: the destination's (bf16 in, float32 out: a bf16 encoder feeding float32
    residual blocks, ``stylenet.fast.float32_residuals``)."""
    needs_compiler()
    kernels = native.library()
    assert kernels is not None
    gen = torch.Generator().manual_seed(0)
    src = (torch.randn(7, 9, 37, generator=gen) * 4).to(src_dtype)  # 37 channels: a vector loop's tail too
    scale, shift = torch.rand(37, generator=gen) + 0.5, torch.randn(37, generator=gen)
    base = torch.zeros(9, 11, 37, dtype=dtype).normal_(generator=gen)
    border = torch.ones(9, 11, dtype=torch.bool)
    border[1:8, 1:10] = False
    before = base[border].clone()
    dst = base[1:8, 1:10]  # a padded buffer's interior: strided rows
    v = src.float() * scale + shift
    v = torch.where(v < 0, slope * v, v)
    if accumulate:
        v = dst.float() + v
    expected = v.to(dtype)  # float32 math, one rounding to nearest even
    kernels.affine_act(src, dst, scale, shift, slope, accumulate)
    # equal but for float32 rounding (the C may fuse a multiply-add), which bf16 rarely shows
    tolerance = {"rtol": 2**-8, "atol": 1e-6} if dtype == torch.bfloat16 else {"rtol": 1e-6, "atol": 1e-5}
    torch.testing.assert_close(dst, expected, **tolerance)
    if dtype == torch.bfloat16:
        assert (dst == expected).float().mean() > 0.99
    assert torch.equal(base[border], before)  # the border untouched


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("layout", ["interleaved", "space-to-depth"])
def test_phases_affine_act_writes_the_four_phases_in_one_pass(dtype: torch.dtype, layout: str) -> None:
    """An upsampling's shifted phases (phase (a, b) at (i + a, j + b), phase-major channels) each
    normalized, activated and written where the next convolution reads it: interleaved into the
    upsampled map's padded buffer, or side by side into a space-to-depth map; as four
    ``affine_act`` calls, one per phase, would write them; nothing outside the destinations."""
    needs_compiler()
    kernels = native.library()
    assert kernels is not None
    gen = torch.Generator().manual_seed(1)
    h, w, c = 5, 7, 19  # 19 channels: a vector loop's tail
    src = (torch.randn(h + 1, w + 1, 4 * c, generator=gen) * 3).to(dtype)
    scale, shift = torch.rand(c, generator=gen) + 0.5, torch.randn(c, generator=gen)

    def phase_views(buf: torch.Tensor) -> dict[tuple[int, int], torch.Tensor]:
        if layout == "interleaved":  # the upsampled map (2h, 2w) in a buffer padded by 1
            return {(a, b): buf[1:-1, 1:-1][a::2, b::2] for a in range(2) for b in range(2)}
        # a space-to-depth map (h, w, 4 C) in a buffer padded by 2
        return {(a, b): buf[2:-2, 2:-2, (2 * a + b) * c : (2 * a + b + 1) * c] for a in range(2) for b in range(2)}

    shape = (2 * h + 2, 2 * w + 2, c) if layout == "interleaved" else (h + 4, w + 4, 4 * c)
    buf = torch.full(shape, 7.0, dtype=dtype)
    expected = buf.clone()
    for (a, b), target in phase_views(expected).items():
        phase = src[a : a + h, b : b + w, (2 * a + b) * c : (2 * a + b + 1) * c]
        kernels.affine_act(phase, target, scale, shift, 0.0)
    views = phase_views(buf)
    base = views[0, 0]
    offsets = (
        (views[1, 0].data_ptr() - base.data_ptr()) // buf.element_size(),
        (views[0, 1].data_ptr() - base.data_ptr()) // buf.element_size(),
    )
    kernels.phases_affine_act(src, views[0, 0], offsets, scale, shift, 0.0)
    assert torch.equal(buf, expected)
    with pytest.raises(ValueError, match="four phases"):
        kernels.phases_affine_act(src[:-1], views[0, 0], offsets, scale, shift, 0.0)
    with pytest.raises(ValueError, match="dst must be"):
        kernels.phases_affine_act(src, views[0, 0].half(), offsets, scale, shift, 0.0)


def test_affine_act_in_place_keeps_nans_and_checks_its_arguments() -> None:
    needs_compiler()
    kernels = native.library()
    assert kernels is not None
    x = torch.tensor([[[1.0, -2.0, float("nan"), 0.5]]], dtype=torch.bfloat16)
    kernels.affine_act(x, x, torch.full((4,), 2.0), torch.zeros(4), 0.0)  # dst is src
    assert x[0, 0, :2].tolist() == [2.0, 0.0] and torch.isnan(x[0, 0, 2]) and x[0, 0, 3].item() == 1.0
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        kernels.affine_act(x.half(), x.half(), torch.ones(4), torch.zeros(4), 0.0)
    with pytest.raises(ValueError, match="dst must be a float32 CPU"):
        kernels.affine_act(x.float(), x, torch.ones(4), torch.zeros(4), 0.0)  # float32 to bf16: no
    with pytest.raises(ValueError, match="differ"):
        kernels.affine_act(x, x[:, :, :3].contiguous(), torch.ones(4), torch.zeros(4), 0.0)
    with pytest.raises(ValueError, match="scale and shift"):
        kernels.affine_act(x, x, torch.ones(3), torch.zeros(4), 0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels", [1, 8, 37, 128])
def test_moments_of_views_where_they_lie(dtype: torch.dtype, channels: int) -> None:
    """Mean and biased variance of a strided view (every other row of a crop, 150 pixels a row:
    more than one float32 run), equal to float64's, with a mean far from zero (the shift keeps
    the sum of squares from cancelling) and on 1 and 2 threads alike."""
    needs_compiler()
    kernels = native.library()
    assert kernels is not None
    gen = torch.Generator().manual_seed(channels)
    base = (torch.randn(21, 160, channels, generator=gen) * 0.5 + 300).to(dtype)
    view = base[1:20:2, 5:155]  # (10, 150, C), rows 2 apart
    ref = view.double()
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            mean, var = kernels.moments(view)
            assert mean.dtype == var.dtype == torch.float32 and mean.shape == var.shape == (channels,)
            torch.testing.assert_close(mean.double(), ref.mean((0, 1)), rtol=1e-7, atol=0)
            torch.testing.assert_close(var.double(), ref.var((0, 1), correction=0), rtol=1e-5, atol=0)
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="empty"):
        kernels.moments(base[:0])
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        kernels.moments(base.double())
    if channels > 1:  # one channel has no stride to check
        with pytest.raises(ValueError, match="channels contiguous"):
            kernels.moments(base.transpose(1, 2))


def test_the_command_builds_and_checks(tmp_path: Path) -> None:
    needs_compiler()
    env = {**os.environ, "INSTYLE_NATIVE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "stylenet.native"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    assert f"native kernels: {tmp_path}/libinstyle-" in done.stdout and "largest difference" in done.stdout
    off = subprocess.run(
        [sys.executable, "-m", "stylenet.native"], cwd=REPO, env={**env, "INSTYLE_NATIVE": "off"},
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert off.returncode == 0 and "off" in off.stdout
