"""The fast inference engine: the worker's way to run an instance-norm generator.

``optimize(model, cfg)`` turns a loaded generator (eager or the TorchScript artifact; only its
weights are read) into an engine that computes the same function faster:

* **precision per device** (``resolve_precision``): bfloat16 convolutions on CPUs with native
  bf16 (oneDNN uses AVX512-BF16/AMX there), float16 on CUDA, float32 elsewhere or when forced.
  Normalization statistics are always accumulated in float32, and the output is float32.
* **channels-last** activations throughout, so oneDNN never reorders.
* **padding written once**: each normalization's ReLU writes straight into the interior of the
  next convolution's padded buffer and only the border strips are filled (the eager module
  makes a separate reflection-padded copy of every activation, its costliest memory pass).
* **no convolution bias before instance norm**: the mean subtraction cancels it exactly.
* **sub-pixel upsampling** (Johnson decoder): nearest x2 upsampling followed by a padded 3x3
  convolution equals one 3x3 convolution on the *low*-resolution map (replicate-padded by 1)
  with four phase kernels, interleaved. The 4x larger upsampled map and its padded copy are
  never materialized. Each phase kernel is zero outside a 2x2 corner of its window, so on the
  CPU the four run as one 2x2 convolution whose output holds each phase shifted by one pixel
  or none, read where it lies (``phase_taps``, ``ShiftedPhases``): 4 multiply-adds where 9 were.
* **the output 9x9 convolution on the space-to-depth map** (CPU): 32 -> 3 channels at full
  resolution run as a 5x5 convolution, 128 -> 12 channels, on the last decoder stage's four
  phases, then one depth-to-space copy; the full-resolution map is never interleaved.
* **Winograd's algorithms** in float32 on AVX2 and AVX-512 CPUs (``stylenet.winograd``, each
  whole convolution in C where the native kernels build, ``stylenet.native``): the residual
  blocks' 3x3 convolutions by F(8x8, 3x3) or F(6x6, 3x3), the upsampling's 2x2 ones by F(7x7,
  2x2) or F(3x3, 2x2), and both 9x9 ones as 5x5 convolutions on space-to-depth maps by F(6x6,
  5x5) or F(4x4, 5x5): 3-6x fewer multiplications where bf16 is not native. In a bf16 engine on
  a CPU without AMX, whose bf16 products are only ~2x its float32 ones, the residual blocks run
  in float32 that way (``float32_residuals``).
* **bytes in, bytes out** (``forward_bytes``): the decoded photo is copied into the first
  convolution's padded buffer and the output convolution's channels become bytes before the
  depth-to-space copy, so no float photo or picture is built; large buffers come from an arena
  kept from pass to pass (``stylenet.buffers``).

``JohnsonEngine`` implements all of it and exposes its normalization statistics, so that
``stylenet.tiling`` can run it over bands of an image with the exact, whole-image statistics.
Other generators (Ulyanov's, or non-instance norms) get ``GenericEngine``: the eager module
with its convolutions in the fast precision, channels-last, and float32 statistics.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from stylenet import buffers, native, winograd
from stylenet.config import PRECISIONS, GeneratorConfig
from stylenet.cudagraph import wrap_for_device
from stylenet.export import load_generator_bytes, psnr
from stylenet.generator import build_generator
from stylenet.imageio import bytes_to_float, to_bytes
from stylenet.johnson import JOHNSON_MULTIPLE, JohnsonBody, ResidualBlock, Upsample2x
from stylenet.layers import PaddedConv, to_image_range
from stylenet.ulyanov import LEAKY_SLOPE, PyramidStage, UlyanovBody

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_NAMES = {v: k for k, v in _DTYPES.items()}
CL = torch.channels_last
log = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 convolutions natively (AVX512-BF16 / AMX) on this CPU.

    oneDNN alone is not enough to ask: it reports bf16 support on every AVX-512 CPU, where it
    emulates bf16 arithmetic (Skylake-X, Cascade Lake, Ice Lake). There a bf16 pass runs slower
    than float32 (Ice Lake Xeon, 2026-12-07: Johnson's generator at 512² 1304 ms in emulated
    bf16, about half ONNX Runtime's speed), so the CPU must also have the instructions.
    """
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    return cpu_has_bf16_instructions()


def _cpu_flags() -> list[str]:
    """This CPU's flags as /proc/cpuinfo lists them ([] where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []


def cpu_has_bf16_instructions() -> bool:
    """AVX512-BF16 or AMX-BF16 on this CPU (torch's cpuinfo; /proc/cpuinfo where torch lacks it)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        flags = _cpu_flags()
        return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_amx() -> bool:
    """AMX tiles on this CPU: bf16 matrix products many times its vector units' (the AMX Xeon)."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return "amx_tile" in _cpu_flags()


def float32_residuals(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a bf16 Johnson engine runs its residual blocks in float32, by Winograd's F(8x8, 3x3)
    or F(6x6, 3x3) in C (F(4x4, 3x3) when this was measured), rather than by oneDNN's direct bf16
    convolutions: on a CPU with AVX512-BF16 but no AMX, where bf16 products are only twice as fast
    as float32 ones and Winograd's need 2.25 times (F(6x6): 2.8 times) fewer. Zen 4 EPYC, 2026-12-07, the
    ten residual convolutions of a 512² pass: 113 ms in bf16, 84 ms in float32; the whole pass
    194 -> 167 ms (docs/performance.md). With AMX, bf16 direct is far faster (the AMX Xeon's
    whole 512² pass takes ~65 ms)."""
    return (
        device.type == "cpu"
        and dtype == torch.bfloat16
        and winograd.applies(device, torch.float32)
        and native.library() is not None
        and not cpu_has_amx()
    )


def prepare_device(device: torch.device | str) -> None:
    """Process-wide settings for serving on ``device``: on CUDA, cuDNN autotuning (the same
    convolution shapes repeat, so picking the fastest algorithm per shape once pays)."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


def resolve_precision(precision: str, device: torch.device | str) -> torch.dtype:
    """The compute dtype for ``precision`` on ``device``; ``auto`` picks the fastest accurate one."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    dev = torch.device(device)
    if precision != "auto":
        dtype = _DTYPES[precision]
        if dev.type == "cpu" and dtype == torch.float16:
            raise ValueError("fp16 is for CUDA devices; use bf16 or fp32 on CPU")
        return dtype
    if dev.type == "cuda":
        return torch.float16
    if dev.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


# --------------------------------------------------------------------------------------------
# Padding into preallocated buffers


def new_padded(
    like: torch.Tensor, channels: int, h: int, w: int, pad: int, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """An uninitialized channels-last (N, channels, h + 2 pad, w + 2 pad) buffer of ``like``'s
    dtype or ``dtype`` (pooled when large: ``stylenet.buffers``)."""
    shape = (like.shape[0], channels, h + 2 * pad, w + 2 * pad)
    return buffers.empty(shape, dtype or like.dtype, like.device)


def interior(buf: torch.Tensor, pad: int) -> torch.Tensor:
    return buf if pad == 0 else buf[:, :, pad:-pad, pad:-pad]


def fill_border(buf: torch.Tensor, pad: int, mode: str) -> torch.Tensor:
    """Fill the ``pad``-wide border of ``buf`` from its interior, like ``F.pad(mode=...)``."""
    if pad == 0:
        return buf
    p = pad
    h, w = buf.shape[-2] - 2 * p, buf.shape[-1] - 2 * p
    rows = slice(p, p + h)
    if mode == "reflect":
        if p >= h or p >= w:
            raise ValueError(f"reflection padding {p} needs sides > {p}, got {h}x{w}")
        buf[:, :, rows, :p] = buf[:, :, rows, p + 1 : 2 * p + 1].flip(-1)
        buf[:, :, rows, p + w :] = buf[:, :, rows, w - 1 : w - 1 + p].flip(-1)
        buf[:, :, :p, :] = buf[:, :, p + 1 : 2 * p + 1, :].flip(-2)
        buf[:, :, p + h :, :] = buf[:, :, h - 1 : h - 1 + p, :].flip(-2)
    elif mode == "replicate":
        buf[:, :, rows, :p] = buf[:, :, rows, p : p + 1]
        buf[:, :, rows, p + w :] = buf[:, :, rows, p + w - 1 : p + w]
        buf[:, :, :p, :] = buf[:, :, p : p + 1, :]
        buf[:, :, p + h :, :] = buf[:, :, p + h - 1 : p + h, :]
    elif mode == "zero":
        buf[:, :, rows, :p] = 0
        buf[:, :, rows, p + w :] = 0
        buf[:, :, :p, :] = 0
        buf[:, :, p + h :, :] = 0
    else:
        raise ValueError(f"unknown padding {mode!r}")
    return buf


def pad_cl(x: torch.Tensor, pad: int, mode: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``F.pad(x, [pad] * 4, mode)`` into a channels-last buffer (a copy even when ``pad`` is 0),
    converted to ``dtype`` on the way when given."""
    buf = new_padded(x, x.shape[1], x.shape[2], x.shape[3], pad, dtype)
    interior(buf, pad).copy_(x)
    return fill_border(buf, pad, mode)


def _source_index(r: int, n: int, mode: str) -> int | None:
    """The index in [0, n) that ``F.pad(mode=...)`` copies to index ``r`` (``None``: a zero)."""
    if 0 <= r < n:
        return r
    if mode == "zero":
        return None
    if mode == "replicate":
        return min(max(r, 0), n - 1)
    if mode == "reflect":
        return -r if r < 0 else 2 * (n - 1) - r
    raise ValueError(f"unknown padding {mode!r}")


def fill_border_packed(buf: torch.Tensor, pad: int, mode: str) -> torch.Tensor:
    """``fill_border`` of a map kept as its 2x2 space-to-depth (channel ``(2 a + b) C + c`` at
    (i, j) holds pixel (2 i + a, 2 j + b)): ``buf`` is (N, 4 C, h + pad, w + pad), and its
    ``pad / 2``-wide packed border is filled as the ``pad``-wide border of the full map would be."""
    if pad % 2:
        raise ValueError(f"a packed border needs an even padding, got {pad}")
    q = pad // 2
    h, w = buf.shape[-2] - pad, buf.shape[-1] - pad
    if mode == "reflect" and (pad >= 2 * h or pad >= 2 * w):
        raise ValueError(f"reflection padding {pad} needs sides > {pad}, got {2 * h}x{2 * w}")
    by_phase = buf.unflatten(1, (2, 2, buf.shape[1] // 4))  # (N, a, b, C, rows, cols)
    cols = slice(q, q + w)
    for i in (*range(-q, 0), *range(h, h + q)):
        for a in range(2):
            src = _source_index(2 * i + a, 2 * h, mode)
            dst = by_phase[:, a, :, :, q + i, cols]
            dst.zero_() if src is None else dst.copy_(by_phase[:, src % 2, :, :, q + src // 2, cols])
    for j in (*range(-q, 0), *range(w, w + q)):
        for b in range(2):
            src = _source_index(2 * j + b, 2 * w, mode)
            dst = by_phase[:, :, b, :, :, q + j]
            dst.zero_() if src is None else dst.copy_(by_phase[:, :, src % 2, :, :, q + src // 2])
    return buf


# --------------------------------------------------------------------------------------------
# Instance-norm statistics, always float32


#: Statistics of a map of few channels are measured on a view of it with this many channels
#: (``channel_moments``).
STATS_CHANNELS = 64


def _grouped_stats(y: torch.Tensor) -> bool:
    """Whether ``channel_moments`` measures ``y``: a float32 or bf16 channels-last CPU image."""
    return y.dtype in (torch.float32, torch.bfloat16) and y.device.type == "cpu" and y.is_contiguous(memory_format=CL)


def _native_moments(y: torch.Tensor) -> native.Kernels | None:
    """The native kernels, if they measure ``y``: a float32 or bf16 CPU image whose channels are
    contiguous (a channels-last map or a view of one: rows, crops)."""
    if y.dtype not in (torch.float32, torch.bfloat16) or y.device.type != "cpu" or y.shape[0] != 1:
        return None
    if (y.shape[1] > 1 and y.stride(1) != 1) or y.shape[2] * y.shape[3] == 0:
        return None
    return native.library()


def channel_moments(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance per channel, (C,) float32, of one float32 or bf16 channels-last
    CPU image ``y`` (1, C, H, W), without writing anything of its size.

    With the native kernels (``stylenet.native``, ``moments.c``) one read of the map, float64
    sums, and any view whose channels are contiguous is measured where it lies: 1.2-2x faster
    than torch's batch-norm statistics below and ~30x more precise (float32 128 x 128² map: 0.38
    against 0.67 ms, relative error 2e-7 against 8e-6; Ice Lake Xeon, 2 threads).

    Else a bf16 map is measured by torch's batch-norm statistics kernel, which accumulates in
    float32: given float32 running buffers it also returns its statistics in float32 (without
    them, rounded to bf16: 3 significant digits). 5-7x faster than measuring a float32 copy of
    the map (a 32-channel 512² map: 2.1 against 15.7 ms, one core of the AMX Xeon), as precise
    (tested).

    Either kernel is slower per element with few channels (torch's ~9x with 8 channels than
    with 16 or more: an 8-channel 512² map 8.4 ms measured and normalized in one batch-norm call,
    against 0.9 ms this way and normalized after, Zen 3 EPYC; the native one 2.4x in bf16). So a
    contiguous map of C channels, C dividing ``STATS_CHANNELS``, is measured as its own memory
    seen as G = C k channels: the (H W, C) pixels are also (H W / k, G), whose channel g holds
    channel g mod C of every k-th pixel from the (g div C)-th. The k equal-count groups of a
    channel merge exactly (Chan et al.).
    """
    c, pixels = y.shape[1], y.shape[2] * y.shape[3]
    kernels = _native_moments(y)
    k = STATS_CHANNELS // c if c < STATS_CHANNELS and STATS_CHANNELS % c == 0 else 1
    while pixels % k:
        k //= 2  # a power of two, as c divides STATS_CHANNELS
    if kernels is not None:
        hwc = y[0].permute(1, 2, 0)
        if k > 1 and y.is_contiguous(memory_format=CL):
            rows = math.gcd(pixels // k, 4096)  # rows to share among the threads
            hwc = hwc.reshape(rows, pixels // k // rows, c * k)
        else:
            k = 1
        mean, var = kernels.moments(hwc)
    else:
        if not _grouped_stats(y):
            raise ValueError("channel_moments measures a float32 or bf16 channels-last CPU image")
        view = y.permute(0, 2, 3, 1).view(1, pixels // k, c * k).permute(0, 2, 1).unsqueeze(-1)
        running = (torch.zeros(c * k), torch.ones(c * k))  # float32: the statistics come back in float32
        mean, var = torch.batch_norm_update_stats(view, *running, 1.0)
    if k == 1:
        return mean, var
    groups = mean.view(k, c)
    mean = groups.mean(0)
    return mean, var.view(k, c).mean(0) + (groups - mean).square().mean(0)


@dataclass
class Moments:
    """Per-(image, channel) count, mean and sum of squared deviations; merges exactly (Chan)."""

    count: int
    mean: torch.Tensor  # (N, C) float32
    m2: torch.Tensor  # (N, C) float32

    @staticmethod
    def of(y: torch.Tensor, eps: float = 1e-5) -> Moments:
        """Moments of ``y`` (N, C, H, W) per image and channel, accumulated in float32."""
        n = y.shape[0]
        means, m2s = [], []
        for i in range(n):
            yi = y[i : i + 1]
            in_place = _native_moments(yi) is not None  # measured where it lies
            if not in_place:
                yi = yi.contiguous(memory_format=CL)
            if in_place or _grouped_stats(yi):
                # measures only (no normalized copy is written), in float32 for a bf16 map too:
                # statistics rounded to bf16 left tiled bf16 passes at 50 dB from the untiled
                # one instead of 56 (a random Johnson net, 96²)
                mean, var = channel_moments(yi)
            else:
                # channels-last input makes the CPU kernel accumulate in float32
                _, mean, invstd = torch._native_batch_norm_legit(yi, None, None, True, 0.0, eps)
                mean = mean.float()
                var = (invstd.double().pow(-2) - eps).clamp_min(0).float()
            means.append(mean)
            m2s.append(var * (y.shape[2] * y.shape[3]))
        return Moments(y.shape[2] * y.shape[3], torch.stack(means), torch.stack(m2s))

    @staticmethod
    def from_sums(sums: torch.Tensor, count: int) -> Moments:
        """Moments of ``count`` pixels from their float64 (N, 2, C) per-channel sums and sums of
        squares (``Conv.measured``)."""
        mean = sums[:, 0] / count
        var = (sums[:, 1] / count - mean.square()).clamp_min(0)
        return Moments(count, mean.float(), (var * count).float())

    def merge(self, other: Moments) -> Moments:
        if self.count == 0:
            return other
        total = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / total)
        m2 = self.m2 + other.m2 + delta.pow(2) * (self.count * other.count / total)
        return Moments(total, mean, m2)

    def without(self, part: Moments) -> Moments:
        """The moments of the rest once ``part``, a subset of the pixels measured, is taken out
        (``merge`` undone, in float64)."""
        rest = self.count - part.count
        mean, part_mean = self.mean.double(), part.mean.double()
        rest_mean = (mean * self.count - part_mean * part.count) / rest
        m2 = self.m2.double() - part.m2.double() - (part_mean - rest_mean).square() * (part.count * rest / self.count)
        return Moments(rest, rest_mean.float(), m2.clamp_min(0).float())

    def channels(self, index: slice) -> Moments:
        return Moments(self.count, self.mean[:, index], self.m2[:, index])

    def repeat(self, times: int) -> Moments:
        """The moments of ``times`` copies of the channels side by side (channel k C + c is c)."""
        return Moments(self.count, self.mean.repeat(1, times), self.m2.repeat(1, times))

    @property
    def var(self) -> torch.Tensor:
        return self.m2 / self.count


@dataclass
class NormParams:
    weight: torch.Tensor  # (C,) float32
    bias: torch.Tensor  # (C,) float32
    eps: float

    @staticmethod
    def of(module: nn.Module) -> NormParams:
        if not isinstance(module, nn.InstanceNorm2d) or module.track_running_stats or not module.affine:
            raise TypeError(f"expected an affine InstanceNorm2d without running stats, got {module}")
        return NormParams(module.weight.detach().float(), module.bias.detach().float(), float(module.eps))

    def affine(self, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel (scale, shift) this norm is, given one image's mean and variance: the
        native kernels' ``affine_act`` arguments."""
        scale = self.weight * torch.rsqrt(var + self.eps)
        return scale, self.bias - mean * scale


@dataclass
class ShiftedPhases:
    """The output of ``phase_taps``' convolution, (N, 4 C, h + 1, w + 1) channels-last: phase
    (a, b) of upsampled channel c at low-res pixel (i, j) is channel (2 a + b) C + c at
    (i + a, j + b). The rest (a row and a column per phase) is not part of the layer."""

    data: torch.Tensor
    #: the whole output's moments, when the convolution measured them (``Conv.measured``)
    measured: Moments | None = None

    @property
    def channels(self) -> int:
        return self.data.shape[1] // 4

    def phase(self, a: int, b: int) -> torch.Tensor:
        """Phase (a, b), (N, C, h, w): the upsampled layer's pixels (2 i + a, 2 j + b)."""
        _, _, h1, w1 = self.data.shape
        c = self.channels
        return self.data[:, (2 * a + b) * c : (2 * a + b + 1) * c, a : a + h1 - 1, b : b + w1 - 1]

    def moments(self, rows: slice = slice(None)) -> Moments:
        """(N, C) moments of the upsampled layer's rows 2 ``rows`` (low-res rows ``rows`` of
        every phase), measured on the map in one pass without copying it: the rows' region of
        all four phases, less each phase's extra row and column (a few pixels, measured apart)."""
        _, _, h1, w1 = self.data.shape
        c, (r0, r1, _) = self.channels, rows.indices(h1 - 1)
        whole = r0 == 0 and r1 == h1 - 1
        # rows r0 .. r1 of every phase's window
        region = self.measured if whole and self.measured is not None else Moments.of(self.data[:, :, r0 : r1 + 1])
        total: Moments | None = None
        for a in range(2):
            for b in range(2):
                group = slice((2 * a + b) * c, (2 * a + b + 1) * c)
                extra = r1 if a == 0 else r0  # the region's row that is not this phase's
                col = w1 - 1 if b == 0 else 0  # nor is this column, in the phase's rows
                part = region.channels(group).without(Moments.of(self.data[:, group, extra : extra + 1]))
                part = part.without(Moments.of(self.data[:, group, r0 + a : r1 + a, col : col + 1]))
                total = part if total is None else total.merge(part)
        assert total is not None
        return total


def band_moments(y: torch.Tensor | ShiftedPhases, rows: slice) -> Moments:
    """The moments of rows ``rows`` of a pre-norm activation (what a tiled pass measures)."""
    return y.moments(rows) if isinstance(y, ShiftedPhases) else Moments.of(y[:, :, rows])


#: ``normalize`` measures maps of fewer channels apart (``channel_moments``): float32, 16
#: channels gain 20 % that way (Zen 3), 32 and more none; bf16 (AMX Xeon, one core / two), 8
#: channels 2.41 -> 1.68 / 1.38 -> 0.94 ms at 512², 16 channels 2.88 -> 2.45 / 1.40 -> 1.39 ms,
#: 32 none.
GROUPED_NORM_CHANNELS = 32


def normalize(y: torch.Tensor, params: NormParams, stats: Moments | None = None, inplace: bool = False) -> torch.Tensor:
    """Instance-normalize ``y`` with its own statistics, or with ``stats`` (float32 math, y's dtype out).

    One batch-norm call per image: with ``training=True`` it measures and normalizes in one go,
    except for CPU maps of fewer than ``GROUPED_NORM_CHANNELS`` channels, measured first
    (``channel_moments``, faster there) and normalized with those statistics.
    ``inplace``: the result overwrites ``y`` (a conv output nothing else reads), so no fresh
    full-size buffer is allocated -- and faulted in by the kernel page by page, which at high
    resolution costs more than the normalization itself. Same values (batch norm's CPU kernels
    read each element before writing it; tested bit-equal to ``F.batch_norm``).
    """
    out = y if inplace else torch.empty_like(y, memory_format=CL)
    saved_mean, saved_invstd = (y.new_empty((0,), dtype=torch.float32) for _ in range(2))  # unused
    grouped = stats is None and y.shape[1] < GROUPED_NORM_CHANNELS and _grouped_stats(y)
    for i in range(y.shape[0]):
        yi = y[i : i + 1]
        mean: torch.Tensor | None
        var: torch.Tensor | None
        if grouped:  # measured apart, then normalized with the statistics (channel_moments)
            mean, var = channel_moments(yi)
        else:  # with training=True, one call measures and normalizes
            mean, var = (None, None) if stats is None else (stats.mean[i], stats.var[i])
        torch.ops.aten.native_batch_norm.out(
            yi, params.weight, params.bias, mean, var, mean is None, 0.0, params.eps,
            out=out[i : i + 1], save_mean=saved_mean, save_invstd=saved_invstd,
        )  # fmt: skip
    return out


def native_norm(y: torch.Tensor) -> native.Kernels | None:
    """The native kernels, if they normalize ``y`` (a float32 or bf16 channels-last CPU map)."""
    return native.library() if _grouped_stats(y) else None


def norm_into(
    kernels: native.Kernels,
    y: torch.Tensor,
    params: NormParams,
    stats: Moments | None,
    out: torch.Tensor,
    slope: float = 1.0,
    accumulate: bool = False,
) -> None:
    """``out`` (+)= act(instance norm of ``y``) in one pass per image (``native.Kernels.affine_act``),
    act a leaky ReLU of ``slope`` (0: ReLU, 1: none), with ``stats`` or ``y``'s own statistics
    (``channel_moments``: measured without writing). ``out`` may be ``y``.

    Torch takes a pass for the norm and another for the activation or the residual add, each a
    read and a write of the map: 32 channels at 512², float32, 2 threads, 11.5 -> 7.5 ms with the
    ReLU into a padded buffer; 128 at 128² 1.37 -> 1.10 ms (bf16: 6.1 -> 4.0, 1.0 -> 0.9 ms).
    The values are the norm's to float32 rounding (bf16: rounded once, not after each pass)."""
    for i in range(y.shape[0]):
        mean, var = channel_moments(y[i : i + 1]) if stats is None else (stats.mean[i], stats.var[i])
        scale, shift = params.affine(mean, var)
        kernels.affine_act(y[i].permute(1, 2, 0), out[i].permute(1, 2, 0), scale, shift, slope, accumulate)


def norm_act_padded(
    y: torch.Tensor,
    params: NormParams,
    stats: Moments | None,
    act_into: Callable[[torch.Tensor, torch.Tensor], object],
    pad: int,
    mode: str,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """norm -> activation of a conv output, written straight into the interior of the next
    convolution's ``pad``-padded buffer (border filled as ``mode``) of ``y``'s dtype or ``dtype``;
    ``y`` is overwritten. Unpadded (``pad`` 0) and in ``y``'s dtype, the activation is applied in
    place: ``y`` is the result. With the native kernels, norm and activation are one pass
    (``norm_into``; bf16 in, float32 out too)."""
    slope = ACTIVATION_SLOPES.get(act_into)
    in_place = pad == 0 and dtype in (None, y.dtype)
    if slope is not None and (kernels := native_norm(y)) is not None:
        if in_place:
            norm_into(kernels, y, params, stats, y, slope)
            return y
        buf = new_padded(y, y.shape[1], y.shape[2], y.shape[3], pad, dtype)
        norm_into(kernels, y, params, stats, interior(buf, pad), slope)
        return fill_border(buf, pad, mode)
    normed = normalize(y, params, stats, inplace=True)
    if in_place:  # no fresh full-size copy (a 1x1 convolution's output, before a join)
        act_into(normed, normed)
        return normed
    buf = new_padded(y, y.shape[1], y.shape[2], y.shape[3], pad, dtype)
    if buf.dtype == normed.dtype:
        act_into(normed, interior(buf, pad))
    else:  # (torch's activations write their input's dtype: in place, then converted as copied)
        act_into(normed, normed)
        interior(buf, pad).copy_(normed)
    return fill_border(buf, pad, mode)


def _relu_into(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, min=0, out=out)


def _leaky_relu_into(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return torch._C._nn.leaky_relu(x, LEAKY_SLOPE, out=out)


#: The activations ``norm_into`` applies itself, by the slope of their negative part.
ACTIVATION_SLOPES: dict[Callable[[torch.Tensor, torch.Tensor], object], float] = {
    _relu_into: 0.0,
    _leaky_relu_into: LEAKY_SLOPE,
}


# --------------------------------------------------------------------------------------------
def padded_sides(h: int, w: int, multiple: int) -> tuple[int, int]:
    """(h, w) padded up to multiples of ``multiple``, and to at least twice it: what an engine's
    ``prepare`` pads an image to (replicating its last row and column)."""
    return h + max(-h % multiple, 2 * multiple - h), w + max(-w % multiple, 2 * multiple - w)


# Johnson et al.'s residual generator


@dataclass
class Conv:
    weight: torch.Tensor  # (out, in, k, k), compute dtype, channels-last
    bias: torch.Tensor | None
    stride: int
    pad: int
    #: run by Winograd's algorithms where they are faster (``stylenet.winograd``; a 3x3 (no bias),
    #: 2x2, 5x5 or 9x9 stride-1 float32 CPU convolution), with the kernels they transformed so far
    winograd: dict[int, torch.Tensor] | None = None
    #: Winograd's transforms in C (``stylenet.native``) or as torch's sums; None: C where it built
    native: bool | None = None
    #: with them, the whole convolution in C (any number of outputs) or, False, the products by
    #: torch's bmm; None: in C where the native kernels built
    fused: bool | None = None

    def __call__(self, padded: torch.Tensor) -> torch.Tensor:
        return self.measured(padded, measure=False)[0]

    def measured(self, padded: torch.Tensor, measure: bool = True) -> tuple[torch.Tensor, Moments | None]:
        """The convolution's output and, where the fused native Winograd convolution runs it and
        ``measure`` is set, its per-(image, channel) moments, summed in float64 as the C kernel
        writes the outputs (one pass over the map less for the norm after it); else None."""
        n, _, h, w = padded.shape
        k, kernels = self.weight.shape[2], self.winograd
        pixels = (h - k + 1) * (w - k + 1)
        alg: winograd.Algorithm | None = None
        fused = self.native is not False and self.fused is not False and native.library() is not None
        if kernels is not None and k == 3:
            size, channels = (h - k + 1, w - k + 1), min(self.weight.shape[:2])
            alg = winograd.choose(pixels, self.native, fused, size, channels)
        elif kernels is not None and k == 2:
            alg = winograd.choose_2x2(pixels, self.weight.shape[0], self.native)
        elif kernels is not None and k == 5:
            alg = winograd.choose_5x5(pixels, self.native)
        elif kernels is not None and k == 9:
            alg = winograd.choose_9x9(pixels, self.native)
        if kernels is None or alg is None or self.stride != 1:
            return conv2d(padded, self.weight, self.bias, self.stride), None
        kernel = kernels.get(alg.m)
        if kernel is None:  # (two threads may both make it: the same tensor)
            weight = space_to_depth_kernel(self.weight.float()) if k == 9 else self.weight
            fit = winograd.fused_kernel if fused else winograd.transformed_kernel
            kernel = kernels[alg.m] = fit(weight, alg)
        out = buffers.empty((n, self.weight.shape[0], h - k + 1, w - k + 1), padded.dtype, padded.device)
        if k == 9:  # as a 5x5 convolution on the space-to-depth map
            return winograd.packed_conv2d(padded, self.weight, kernel, alg, out, bias=self.bias), None
        sums = torch.zeros(n, 2, out.shape[1], dtype=torch.float64) if measure and fused else None
        winograd.conv2d(
            padded, self.weight, kernel, alg, out, use_native=self.native, fused=fused, bias=self.bias, stats=sums
        )
        return out, None if sums is None else Moments.from_sums(sums, out.shape[2] * out.shape[3])


#: oneDNN's "convolution, then add into a given tensor" (what inductor fuses residual adds with)
_conv_add_: Any = None
if torch.backends.mkldnn.is_available():
    _conv_add_ = getattr(torch.ops.mkldnn, "_convolution_pointwise_", None)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride)``, unpadded; on the CPU, a large output goes into a
    pooled buffer (``stylenet.buffers``) instead of a fresh one that the kernel faults in.

    torch's convolution has no ``out=`` of its own, but oneDNN's fused "convolution, then add
    to a given tensor" does: the output is added to a zeroed pooled buffer, in place. Where
    torch would run oneDNN itself (always in bf16; in float32 for any input of more than 20480
    values or a batch of more than one, so for every output large enough to be pooled), the
    values are the same (tested bit-equal). Zeroing 64 MB takes ~2 ms on 2 cores; faulting it
    in afresh took ~11 ms of system time on the Zen 4 EPYC VM.
    """
    pool = buffers.pool() if x.device.type == "cpu" and _conv_add_ is not None else None
    if pool is not None and x.is_contiguous(memory_format=CL):
        n, _, h, w = x.shape
        out_ch, _, kh, kw = weight.shape
        out = pool.take((n, out_ch, (h - kh) // stride + 1, (w - kw) // stride + 1), x.dtype)
        if out is not None:  # (padding, stride, dilation, groups, the add, alpha, no unary op)
            attrs: tuple[Any, ...] = ([0, 0], [stride, stride], [1, 1], 1, "add", None, None, [], None)
            return _conv_add_.binary(out.zero_(), x, weight, bias, *attrs)
    return F.conv2d(x, weight, bias, stride)


def _conv(module: nn.Module, dtype: torch.dtype, device: torch.device, keep_bias: bool) -> Conv:
    if isinstance(module, PaddedConv):
        conv = module[1]
        pad = int(cast(nn.ReflectionPad2d, module[0]).padding[0])
    else:
        conv, pad = module, 0
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"expected a convolution, got {conv}")
    weight = conv.weight.detach().to(device, dtype).contiguous(memory_format=CL)
    bias = conv.bias.detach().to(device, dtype) if keep_bias and conv.bias is not None else None
    return Conv(weight, bias, int(conv.stride[0]), pad)


#: Channels the RGB input and output of the Johnson engine are zero-padded to on CUDA.
CUDA_RGB_CHANNELS = 8


def _zero_pad_dim(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """``t`` with dimension ``dim`` zero-padded to ``size`` (channels-last kept for 4-d)."""
    shape = list(t.shape)
    shape[dim] = size
    out = t.new_zeros(shape)
    out.narrow(dim, 0, t.shape[dim]).copy_(t)
    return out.contiguous(memory_format=CL) if out.dim() == 4 else out


def _part(module: nn.Module, index: int) -> nn.Module:
    return cast(nn.Sequential, module)[index]


def phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, 3, 3) kernel of "nearest x2 upsample, then 3x3 conv" -> (4 out, in, 3, 3) on low-res.

    Output pixel (2i + a, 2j + b) of the upsampled convolution only sees low-res rows
    {i - 1, i} (a = 0) or {i, i + 1} (a = 1), with the kernel taps that land on the same
    low-res pixel summed. Channel ``(2 a + b) out + c`` of the result holds phase (a, b) of
    channel c (phase-major, so that in channels-last memory each pixel's phases are runs of
    ``out`` channels).
    """
    # taps[a][r] = kernel rows (of 3) that fall on padded low-res row r for phase a
    taps = ([[0], [1, 2], []], [[], [0, 1], [2]])
    out_ch, in_ch = weight.shape[:2]
    phases = weight.new_zeros(2, 2, out_ch, in_ch, 3, 3)
    for a in range(2):
        for b in range(2):
            for r in range(3):
                for s in range(3):
                    for dy in taps[a][r]:
                        for dx in taps[b][s]:
                            phases[a, b, :, :, r, s] += weight[:, :, dy, dx]
    return phases.reshape(out_ch * 4, in_ch, 3, 3)


def phase_taps(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, 3, 3) kernel of "nearest x2 upsample, then 3x3 conv" -> (4 out, in, 2, 2): the
    four phases' taps alone, for one unpadded 2x2 convolution of the low-res map padded by 1.

    Phase (a, b) of ``phase_kernels`` is zero outside rows a .. a + 1 and columns b .. b + 1 of
    its 3x3 window: its 2x2 convolution's output at (i + a, j + b) is phase (a, b) at (i, j), so
    the (h + 1, w + 1) output holds each phase shifted by (a, b) (``ShiftedPhases``).
    4 multiply-adds per input channel and low-res output where the 3x3 kernels take 9.
    """
    out_ch, in_ch = weight.shape[:2]
    phases = phase_kernels(weight).view(2, 2, out_ch, in_ch, 3, 3)
    taps = [phases[a, b, :, :, a : a + 2, b : b + 2] for a in range(2) for b in range(2)]
    return torch.cat(taps).contiguous()


def space_to_depth_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(O, C, k, k) kernel of an unpadded stride-1 convolution, k odd -> (4 O, 4 C, (k+1)/2, (k+1)/2).

    The result, run on the input's 2x2 space-to-depth map (channel ``(2 a + b) C + c`` at (i, j)
    holds channel c at (2 i + a, 2 j + b): the layout of the decoder's phases), gives output
    phase (a, b) of channel o in channel ``(2 a + b) O + o``, phase-major like its input
    (``depth_to_space`` reads it: in channels-last memory each output pixel's channels and
    its right neighbour's are adjacent, so the shuffle copies runs of 2 O values): output pixel
    (2 i + a, 2 j + b) reads input rows 2 i + a + dy, dy < k, which are phase ``(a + dy) % 2``
    of packed row ``i + (a + dy) // 2``. The same weights, rearranged, with zeros elsewhere.
    """
    out_ch, in_ch, k, _ = weight.shape
    taps = (k + 1) // 2
    packed = weight.new_zeros(2, 2, out_ch, 2, 2, in_ch, taps, taps)  # (a, b, o, a_in, b_in, c, ky, kx)
    for a in range(2):
        for b in range(2):
            for a_in in range(2):
                for b_in in range(2):
                    for ky in range(taps):
                        dy = 2 * ky + a_in - a
                        for kx in range(taps):
                            dx = 2 * kx + b_in - b
                            if 0 <= dy < k and 0 <= dx < k:
                                packed[a, b, :, a_in, b_in, :, ky, kx] = weight[:, :, dy, dx]
    return packed.reshape(4 * out_ch, 4 * in_ch, taps, taps)


def depth_to_space(y: torch.Tensor) -> torch.Tensor:
    """(N, 4 O, h, w) with phase-major channels (``space_to_depth_kernel``'s output) ->
    (N, 2 h, 2 w, O), contiguous: output pixel (2 i + a, 2 j + b) is channels (2 a + b) O + o
    at (i, j). One copy of runs of 2 O values from channels-last memory, 5x faster than
    ``F.pixel_shuffle`` (1.5 -> 0.3 ms for 12 channels at 256², one core, float or bytes)."""
    n, c4, h, w = y.shape
    o = c4 // 4
    phases = y.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, o)  # (n, i, j, a, b, o); a view if channels-last
    return phases.permute(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, o)


#: The statistics policy of a forward pass: given a norm layer's index, its pre-norm activation
#: and the rows of it that belong to the current band, return the Moments to normalize with, or
#: ``None`` for the activation's own.
StatsPolicy = Callable[[int, "torch.Tensor | ShiftedPhases", slice], "Moments | None"]
_ALL = slice(None)


def own_stats(_layer: int, _y: torch.Tensor | ShiftedPhases, _rows: slice) -> Moments | None:
    return None


def _scaled(rows: slice, scale: int) -> slice:
    return rows if rows.start is None else slice(rows.start * scale, rows.stop * scale)


def rgb_bytes(y: torch.Tensor) -> torch.Tensor:
    """The output convolution's result, any float dtype and layout -> uint8 of the same shape:
    ``to_bytes(to_image_range(y.float()))``'s bytes, in place in one float32 copy, unreordered.
    Bit-equal: (tanh + 1) * 0.5 * 255 is (tanh + 1) * 127.5, the halving being exact."""
    t = y.float() if y.dtype != torch.float32 else y.clone()
    return torch.tanh_(t).add_(1.0).mul_(127.5).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)


class JohnsonEngine(nn.Module):
    """The Johnson generator rewritten for inference speed (see the module docstring).

    Norm layers are numbered in execution order: 0-2 encoder, 3 .. 3 + 2 B - 1 residual
    blocks (two each), then the two decoder stages.
    """

    arch = "johnson"
    precision = "fp32"
    probe_psnr_db = 0.0

    def __init__(
        self,
        body: JohnsonBody,
        padding: str,
        dtype: torch.dtype,
        device: torch.device,
        rgb_channels: int | None = None,
        packed_output: bool | None = None,
        shifted_phases: bool | None = None,
        winograd_residuals: bool | None = None,
        packed_rgb: int | None = None,
        native_transforms: bool | None = None,
        fused_winograd: bool | None = None,
        winograd_upsampling: bool | None = None,
        residual_dtype: torch.dtype | None = None,
        winograd_ends: bool | None = None,
    ) -> None:
        super().__init__()
        self.dtype = dtype
        self.device = device
        # The residual blocks' dtype: the engine's, or float32 for a bf16 engine on a CPU whose
        # float32 Winograd convolutions beat its bf16 direct ones (``float32_residuals``:
        # AVX512-BF16 without AMX). The encoder's last norm writes the stream in this dtype, the
        # decoder's padded input converts it back.
        if residual_dtype is None:
            residual_dtype = torch.float32 if float32_residuals(device, dtype) else dtype
        self.res_dtype = residual_dtype
        # The RGB ends (3 input channels of the first convolution, 3 outputs of the last) are
        # zero-padded to `rgb_channels`: on CUDA, 8 fp16 channels (16 bytes) let cuDNN use its
        # tensor-core kernels for these two 9x9 convolutions, which took a third of the GPU time.
        self.rgb_channels = rgb_channels or (CUDA_RGB_CHANNELS if device.type == "cuda" else 3)
        self.padding = padding
        # padding of the low-res map that equals `padding` of its nearest x2 upsampling (width 1)
        self.low_padding = "zero" if padding == "zero" else "replicate"
        self.enc = [_conv(_part(stage, 0), dtype, device, keep_bias=False) for stage in body.encoder]
        self.norms = [NormParams.of(_part(stage, 1)) for stage in body.encoder]
        self.res: list[tuple[Conv, Conv]] = []
        for block in body.residuals:
            block = cast(ResidualBlock, block)
            first, second = _part(block.body, 0), _part(block.body, 1)
            conv_a, conv_b = (_conv(c, residual_dtype, device, False) for c in (_part(first, 0), second))
            self.res.append((conv_a, conv_b))
            self.norms += [NormParams.of(_part(first, 1)), NormParams.of(_part(block.body, 2))]
        # The residual blocks' 3x3 convolutions by Winograd's F(8x8, 3x3), F(6x6, 3x3), F(4x4,
        # 3x3) or F(2x2, 3x3) (``winograd.choose``) where they were measured faster: float32 on an
        # AVX2 CPU, or on an AVX-512 one with the transforms in C (``stylenet.winograd``, ``stylenet.native``;
        # ``native_transforms``: True / False forces C / torch's sums; ``fused_winograd``: False
        # keeps torch's bmm for the products between the C transforms instead of the fused C
        # convolution).
        if winograd_residuals is None:
            winograd_residuals = winograd.applies(device, residual_dtype)
        self.winograd_residuals = winograd_residuals
        if self.winograd_residuals:
            if residual_dtype != torch.float32 or device.type != "cpu":
                raise ValueError("Winograd residual convolutions run in float32 on a CPU")
            for conv in (c for block in self.res for c in block):
                if conv.weight.shape[2:] != (3, 3) or conv.stride != 1 or conv.bias is not None:
                    raise TypeError("Winograd residual convolutions need 3x3, stride 1, no bias")
                conv.winograd, conv.native, conv.fused = {}, native_transforms, fused_winograd
        res_pads = {first.pad for first, _ in self.res}
        if len(res_pads) > 1:
            raise TypeError("the fast Johnson engine needs residual blocks of one padding")
        self.res_pad = res_pads.pop() if res_pads else 0  # the residual stream's padded buffer
        # The upsampling convolutions as 2x2 convolutions of the four phases' taps (4 of the 3x3
        # phase kernels' 9 multiply-adds; each phase comes shifted by a pixel or none, and is
        # read where it is: ``ShiftedPhases``). CPUs only by default: not yet measured on a GPU
        # (benchmarks/cuda_variants.py has the variant).
        self.shifted_phases = device.type == "cpu" if shifted_phases is None else shifted_phases
        kernels = phase_taps if self.shifted_phases else phase_kernels
        self.dec: list[Conv] = []
        for stage in list(body.decoder)[:2]:
            up = _part(stage, 0)
            if not isinstance(up, Upsample2x):
                raise TypeError("the fast Johnson engine needs nearest upsampling (upsample='nearest')")
            conv = _conv(up.conv, torch.float32, device, keep_bias=False)
            weight = kernels(conv.weight.float()).to(dtype).contiguous(memory_format=CL)
            self.dec.append(Conv(weight, None, 1, 1))
            self.norms.append(NormParams.of(_part(stage, 1)))
        # ... and those 2x2 convolutions by Winograd's F(3x3, 2x2) or, from 100² maps, F(7x7, 2x2),
        # fused in C, where the residual blocks run Winograd's algorithms with the native kernels
        # (``winograd.choose_2x2``).
        if winograd_upsampling is None:
            winograd_upsampling = self.winograd_residuals and native_transforms is not False and dtype == torch.float32
        self.winograd_upsampling = bool(winograd_upsampling and self.shifted_phases and native.library() is not None)
        if self.winograd_upsampling:
            if dtype != torch.float32 or device.type != "cpu":
                raise ValueError("Winograd upsampling convolutions run in float32 on a CPU")
            for conv in self.dec:
                conv.winograd, conv.native = {}, True
        # the decoder's norms over the four phases' channels side by side (``ShiftedPhases``)
        self.phase_norms = [NormParams(p.weight.repeat(4), p.bias.repeat(4), p.eps) for p in self.norms[-2:]]
        self.out = _conv(_part(body.decoder, 2), dtype, device, keep_bias=True)
        # The output 9x9 convolution (32 -> 3 channels) as a 5x5 convolution on the 2x2
        # space-to-depth map (128 -> 12 channels): the same weights, rearranged, and 3x faster
        # in oneDNN, where 3 output channels leave the vector units mostly idle. CPUs only by
        # default: not yet measured on a GPU (benchmarks/cuda_variants.py has the variant).
        packed_output = device.type == "cpu" if packed_output is None else packed_output
        self.out_packed: Conv | None = None
        if packed_output and self.out.pad % 2:
            raise ValueError(f"a packed output convolution needs an even padding, got {self.out.pad}")
        # ... and that 5x5 convolution, and the first 9x9 one as a 5x5 convolution on its input's
        # space-to-depth map (``winograd.packed_conv2d``), by Winograd's F(4x4, 5x5) or, from 96²
        # maps, F(6x6, 5x5), fused in C, where the upsampling runs Winograd's F(3x3, 2x2): 64
        # products per 16 outputs (100 per 36) where the 5x5 takes 400 (``winograd.F4R5``,
        # ``F6R5``; in float32 on the Zen 4 EPYC at 512², by F(4x4, 5x5), the output convolution
        # 32 -> 11 ms, the first one 21 -> 10 ms).
        if winograd_ends is None:
            winograd_ends = self.winograd_upsampling
        self.winograd_ends = bool(winograd_ends and packed_output and native.library() is not None)
        if self.winograd_ends and (dtype != torch.float32 or device.type != "cpu"):
            raise ValueError("Winograd's 9x9 convolutions run in float32 on a CPU")
        # Its outputs per phase: RGB, or RGB and a zero channel (16 in all). On CUDA the layout of
        # 32-byte fp16 rows; in float32 on an AVX2 CPU oneDNN's kernel for 16 outputs (two
        # 8-wide vectors) beats the one for 12: 512² 47 -> 31 ms alone (benchmarks/cpu_variants.py).
        # With AVX-512 both take the same time, and the extra channel costs the output passes;
        # Winograd's products take 12 outputs in 16 columns anyway.
        if packed_rgb is None:
            avx2_fp32 = (
                device.type == "cpu" and dtype == torch.float32 and torch.backends.cpu.get_cpu_capability() == "AVX2"
            )
            packed_rgb = 4 if self.rgb_channels > 3 or (avx2_fp32 and not self.winograd_ends) else 3
        if packed_rgb not in (3, 4):
            raise ValueError(f"packed_rgb is 3 or 4, got {packed_rgb}")
        self.packed_rgb = packed_rgb
        if packed_output:
            weight = _zero_pad_dim(self.out.weight, 0, packed_rgb) if packed_rgb > 3 else self.out.weight
            bias = self.out.bias
            if bias is not None and packed_rgb > 3:
                bias = _zero_pad_dim(bias, 0, packed_rgb)
            packed_bias = None if bias is None else bias.repeat(4)  # phase-major, as the weights
            self.out_packed = Conv(space_to_depth_kernel(weight).contiguous(memory_format=CL), packed_bias, 1, 0)
            if self.winograd_ends:
                self.out_packed.winograd, self.out_packed.native = {}, True
        if self.winograd_ends and self.enc[0].stride == 1 and self.enc[0].weight.shape[2] == 9:
            self.enc[0].winograd, self.enc[0].native = {}, True
        if self.rgb_channels > 3:
            self.enc[0].weight = _zero_pad_dim(self.enc[0].weight, 1, self.rgb_channels)
            self.out.weight = _zero_pad_dim(self.out.weight, 0, self.rgb_channels)
            if self.out.bias is not None:
                self.out.bias = _zero_pad_dim(self.out.bias, 0, self.rgb_channels)
        self.norms = [NormParams(p.weight.to(device), p.bias.to(device), p.eps) for p in self.norms]
        self.phase_norms = [NormParams(p.weight.to(device), p.bias.to(device), p.eps) for p in self.phase_norms]

    @property
    def n_norms(self) -> int:
        return len(self.norms)

    @property
    def residual_precision(self) -> str:
        """The residual blocks' precision name ("fp32" where a bf16 engine runs them in float32)."""
        return _NAMES[self.res_dtype]

    @staticmethod
    def padded_size(h: int, w: int) -> tuple[int, int]:
        """The sides ``prepare`` pads an (h, w) image to: multiples of 4, at least 8."""
        return padded_sides(h, w, JOHNSON_MULTIPLE)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Float (N, 3, H, W) in [0, 1] -> the compute dtype, channels-last, sides padded to x4
        (replicating the last row and column)."""
        h, w = x.shape[-2:]
        hp, wp = self.padded_size(h, w)
        if hp > h or wp > w:
            x = F.pad(x, (0, wp - w, 0, hp - h), mode="replicate")
        if self.rgb_channels > x.shape[1]:
            x = F.pad(x, (0, 0, 0, 0, 0, self.rgb_channels - x.shape[1]))  # zero channels
        return x.to(self.device, self.dtype).contiguous(memory_format=CL)

    def prepare_bytes(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels, uint8 (N, H, W, 3) -> the first convolution's padded input: the values
        ``pad_cl(prepare(x), ...)`` gives for the photo x in [0, 1], written as a copy into the
        buffer and a division there, instead of four passes (reorder, to float, to the compute
        dtype, padded copy)."""
        n, h, w, _ = pixels.shape
        hp, wp = self.padded_size(h, w)
        pad = self.enc[0].pad
        shape = (n, self.rgb_channels, hp + 2 * pad, wp + 2 * pad)
        buf = buffers.empty(shape, self.dtype, self.device)
        inner = interior(buf, pad)
        # (the bytes are exact in the compute dtype: a copy, then the division in float32, once
        # rounded; 6x faster than one division writing the strided interior from the bytes)
        inner[:, :3, :h, :w].copy_(pixels.to(self.device).permute(0, 3, 1, 2)).div_(255.0)
        if wp > w:  # replicate the last column, then the last row, as prepare's F.pad
            inner[:, :3, :h, w:] = inner[:, :3, :h, w - 1 : w]
        if hp > h:
            inner[:, :3, h:] = inner[:, :3, h - 1 : h]
        if self.rgb_channels > 3:
            inner[:, 3:] = 0
        return fill_border(buf, pad, self.padding)

    def _norm_relu_into(
        self,
        y: torch.Tensor,
        layer: int,
        stats: StatsPolicy,
        rows: slice,
        pad: int,
        mode: str,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        return norm_act_padded(y, self.norms[layer], stats(layer, y, rows), _relu_into, pad, mode, dtype)

    def encode(
        self, x: torch.Tensor, stats: StatsPolicy = own_stats, rows: slice = slice(None), out_pad: int = 0
    ) -> torch.Tensor:
        """Prepared input -> the encoder's output (N, 128, H/4, W/4). ``rows``: band rows at H/4.
        ``out_pad``: the output comes padded by that much (``self.padding``), interior first."""
        return self.encode_padded(pad_cl(x, self.enc[0].pad, self.padding), stats, rows, out_pad)

    def encode_padded(
        self, y: torch.Tensor, stats: StatsPolicy = own_stats, rows: slice = slice(None), out_pad: int = 0
    ) -> torch.Tensor:
        """``encode`` of an input already padded for the first convolution (``prepare_bytes``)."""
        for i, conv in enumerate(self.enc):
            last = i + 1 == len(self.enc)
            nxt = out_pad if last else self.enc[i + 1].pad
            dtype = self.res_dtype if last else None  # the residual stream's
            y = self._norm_relu_into(
                conv(y), i, stats, _scaled(rows, 2 ** (len(self.enc) - 1 - i)), nxt, self.padding, dtype
            )
        return y

    def decode(
        self, x: torch.Tensor, stats: StatsPolicy = own_stats, rows: slice = slice(None), as_bytes: bool = False
    ) -> torch.Tensor:
        """(N, 128, h, w) -> float32 RGB (N, 3, 4h, 4w) in [0, 1]. ``rows``: band rows at h.
        ``as_bytes``: uint8 pixels (N, 4h, 4w, 3) instead, the bytes ``to_bytes`` makes of it."""
        first = len(self.enc) + 2 * len(self.res)
        y = pad_cl(x, 1, self.low_padding, self.dtype)  # (from the residual stream's dtype)
        del x  # each input is let go as soon as it is read: the next buffer may take its place
        for i, conv in enumerate(self.dec):
            layer = first + i
            if self.shifted_phases:
                shifted = ShiftedPhases(*conv.measured(y))
                del y
                y = self._shifted_stage(shifted, i, stats(layer, shifted, _scaled(rows, 2**i)), as_bytes)
                if i == len(self.dec) - 1 and self.out_packed is not None:
                    return y
                continue
            phases = conv(y)  # (N, 4 C, h, w), channels-last: phase (a, b) of channel c at (2 a + b) C + c
            del y
            n, c4, h, w = phases.shape
            c = c4 // 4
            # The same memory seen as (N, C, h, 4 w) channels-last -- width runs over (w, a, b) --
            # holds every pixel of the upsampled channel c: one batch-norm call measures and
            # normalizes the whole upsampled layer without interleaving it first.
            flat = phases.permute(0, 2, 3, 1).reshape(n, h, 4 * w, c).permute(0, 3, 1, 2)
            normed = normalize(flat, self.norms[layer], stats(layer, flat, _scaled(rows, 2**i)), inplace=True)
            last = i == len(self.dec) - 1
            if last and self.out_packed is not None:
                packed = normed.permute(0, 2, 3, 1).reshape(n, h, w, c4).permute(0, 3, 1, 2)
                return self._packed_output(packed, as_bytes)
            pad, mode = (self.out.pad, self.padding) if last else (1, self.low_padding)
            y = new_padded(phases, c, 2 * h, 2 * w, pad)
            dst = interior(y, pad).unflatten(2, (h, 2)).unflatten(4, (w, 2))  # (N, C, h, a, w, b)
            src = normed.unflatten(3, (w, 2, 2)).permute(0, 1, 2, 4, 3, 5)  # (N, C, h, a, w, b)
            _relu_into(src, dst)  # ReLU while interleaving: runs of 2 C contiguous values
            fill_border(y, pad, mode)
        rgb = to_image_range(self.out(y)[:, :3].float())
        return to_bytes(rgb) if as_bytes else rgb

    def _shifted_stage(self, shifted: ShiftedPhases, i: int, stats: Moments | None, as_bytes: bool) -> torch.Tensor:
        """Decoder stage ``i`` from its convolution's shifted phases: each phase's norm and ReLU
        (with ``stats``, or their own moments) written where the next convolution reads it:
        interleaved into the padded upsampled map, or, before a packed output convolution, into
        its padded space-to-depth map (whose result this returns)."""
        data = shifted.data
        moments = shifted.moments() if stats is None else stats
        c, h, w = shifted.channels, data.shape[2] - 1, data.shape[3] - 1
        if i == len(self.dec) - 1 and self.out_packed is not None:
            buf = new_padded(data, 4 * c, h, w, self.out.pad // 2)
            packed = interior(buf, self.out.pad // 2)
            self._phases_norm_relu(shifted, i, moments, lambda a, b: packed[:, (2 * a + b) * c : (2 * a + b + 1) * c])
            return self._packed_output_of(buf, as_bytes)
        pad, mode = (self.out.pad, self.padding) if i == len(self.dec) - 1 else (1, self.low_padding)
        y = new_padded(data, c, 2 * h, 2 * w, pad)
        dst = interior(y, pad).unflatten(2, (h, 2)).unflatten(4, (w, 2))  # (N, C, h, a, w, b)
        self._phases_norm_relu(shifted, i, moments, lambda a, b: dst[:, :, :, a, :, b])
        return fill_border(y, pad, mode)

    def _phases_norm_relu(
        self,
        shifted: ShiftedPhases,
        i: int,
        moments: Moments,
        into: Callable[[int, int], torch.Tensor],
    ) -> None:
        """ReLU(norm(phase (a, b))) into ``into(a, b)`` (an (N, C, h, w) view) for the four phases
        of decoder stage ``i``. With the native kernels, one pass for the four phases from the
        convolution's output (``native.Kernels.phases_affine_act``: at 1024² in float32 on the Zen
        4 the two stages 20.8 + 8.9 ms as four passes each, one per phase, 14.0 + 6.2 ms so); else
        the whole map normalized in place (its extra pixels too), then a ReLU per phase."""
        kernels = native_norm(shifted.data)
        if kernels is None:
            normalize(shifted.data, self.phase_norms[i], moments.repeat(4), inplace=True)
            for a in range(2):
                for b in range(2):
                    _relu_into(shifted.phase(a, b), into(a, b))
            return
        base, size = into(0, 0), shifted.data.element_size()
        offsets = ((into(1, 0).data_ptr() - base.data_ptr()) // size, (into(0, 1).data_ptr() - base.data_ptr()) // size)
        params = self.norms[len(self.norms) - len(self.dec) + i]  # the stage's own norm (C channels)
        for n in range(shifted.data.shape[0]):
            scale, shift = params.affine(moments.mean[n], moments.var[n])
            src, dst = shifted.data[n].permute(1, 2, 0), base[n].permute(1, 2, 0)
            kernels.phases_affine_act(src, dst, offsets, scale, shift, 0.0)

    def _packed_output(self, phases: torch.Tensor, as_bytes: bool = False) -> torch.Tensor:
        """The normalized last decoder stage as its 2x2 space-to-depth map -> float32 RGB: ReLU
        into a padded packed buffer, then ``_packed_output_of``."""
        _, c4, h, w = phases.shape
        buf = new_padded(phases, c4, h, w, self.out.pad // 2)
        _relu_into(phases, interior(buf, self.out.pad // 2))
        return self._packed_output_of(buf, as_bytes)

    def _packed_output_of(self, buf: torch.Tensor, as_bytes: bool = False) -> torch.Tensor:
        """The last decoder stage's activations in the interior of ``buf``, a padded 2x2
        space-to-depth map (phase-major channels) -> its border as the full map's, then
        ``out_packed`` and a pixel shuffle to float32 RGB. The full-resolution map is never
        interleaved. ``as_bytes``: uint8 pixels (N, H, W, 3), made before the shuffle
        (``rgb_bytes``)."""
        assert self.out_packed is not None
        fill_border_packed(buf, self.out.pad, self.padding)
        y = self.out_packed(buf)
        if as_bytes:
            return depth_to_space(rgb_bytes(y))[..., :3]
        return depth_to_space(to_image_range(y.float()))[..., :3].permute(0, 3, 1, 2)

    def residuals_in_place(self, stream: torch.Tensor) -> torch.Tensor:
        """All residual blocks, untiled, on ``stream``: the encoder's output padded by the blocks'
        padding (``encode(out_pad=self.res_pad)``), updated in place; returns its interior.

        Each block is ``x + norm(conv(relu(norm(conv(x)))))``. Three fresh full-size tensors fewer
        per block than computing that out of place (a padded copy of x, the padded ReLU buffer,
        the sum): at 1024² each is a 32 MB allocation that the kernel faults in page by page on
        its first write, which costs more than the pass that writes it.
        """
        pad = self.res_pad
        scratch: torch.Tensor | None = None
        for block, (first, second) in enumerate(self.res):
            layer = len(self.enc) + 2 * block
            t, t_moments = first.measured(stream)  # (measured by the Winograd kernel, or None)
            if scratch is None:
                scratch = new_padded(t, t.shape[1], t.shape[2], t.shape[3], second.pad)
            kernels = native_norm(t)  # one pass for norm and ReLU, and for norm and add
            if kernels is not None:
                norm_into(kernels, t, self.norms[layer], t_moments, interior(scratch, second.pad), slope=0.0)
            else:
                _relu_into(normalize(t, self.norms[layer], t_moments, inplace=True), interior(scratch, second.pad))
            u, u_moments = second.measured(fill_border(scratch, second.pad, self.padding))
            if kernels is not None:
                norm_into(kernels, u, self.norms[layer + 1], u_moments, interior(stream, pad), accumulate=True)
            else:
                interior(stream, pad).add_(normalize(u, self.norms[layer + 1], u_moments, inplace=True))
            fill_border(stream, pad, self.padding)
        return interior(stream, pad)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float (N, 3, H, W) in [0, 1] -> float32 (N, 3, H, W) in [0, 1], untiled."""
        h, w = x.shape[-2:]
        # no name holds the residual stream here: decode lets it go as soon as it has read it
        y = self.decode(self.residuals_in_place(self.encode(self.prepare(x), out_pad=self.res_pad)))
        return y[:, :, :h, :w]

    @torch.inference_mode()
    def forward_bytes(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels, uint8 (N, H, W, 3) -> the stylized pixels, uint8 (N, H, W, 3), untiled: the
        bytes ``to_bytes(forward(x))`` gives for x the photo in [0, 1] (tested equal), without
        the float photo and picture and their conversions (~4 of 66 ms at 512² on one core)."""
        h, w = pixels.shape[1:3]
        # no name holds the residual stream here: decode lets it go as soon as it has read it
        y = self.decode(
            self.residuals_in_place(self.encode_padded(self.prepare_bytes(pixels), out_pad=self.res_pad)), as_bytes=True
        )
        return y[:, :h, :w].contiguous()


# --------------------------------------------------------------------------------------------
# Ulyanov et al.'s multi-scale generator


def _halved(rows: slice) -> slice:
    """Band rows at half resolution (exact for the even rows tiling collects statistics on)."""
    return rows if rows.start is None else slice(rows.start // 2, -(-rows.stop // 2))


def constant_source(t: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: t


class UlyanovEngine(nn.Module):
    """Ulyanov's instance-norm pyramid generator rewritten for inference speed.

    What it changes against the eager module (the same function; tested equal in float32):

    * each norm's leaky ReLU writes straight into the interior of the next convolution's
      padded buffer (no padded copies), and no convolution bias precedes an instance norm;
    * the join of two scales, ``merge(cat(norm(upsample(coarse)), norm(fine)))``, builds no
      upsampled map and no concatenation: the coarse map is normalized at *its* resolution
      (nearest x2 upsampling repeats each value four times, so mean and variance are the
      same) and upsampled straight into the first channels of the merge convolution's padded
      buffer, the normalized fine features into the rest;
    * the input pyramid is pooled once, each scale from the next finer one, in float32.

    Stage s (coarsest first, 1/2^(K-1-s) of the input) owns norm layers ``base[s] + 0..2``
    (its scale block), and for s >= 1 ``+3`` (fine), ``+4`` (coarse), ``+5..7`` (merge):
    the statistics policy sees them in that order, so ``stylenet.tiling`` can run a stage
    over bands with exact whole-image statistics.
    """

    arch = "ulyanov"
    precision = "fp32"
    probe_psnr_db = 0.0

    def __init__(self, body: UlyanovBody, padding: str, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.dtype = dtype
        self.device = device
        self.padding = padding
        self.multiple = body.coarsest_pool
        self.norms: list[NormParams] = []
        self.base: list[int] = []
        self.scale_blocks: list[list[Conv]] = []
        self.merges: list[list[Conv]] = []
        stages: list[tuple[nn.Module, PyramidStage | None]] = [(body.coarsest, None)]
        stages += [(stage.scale_block, stage) for stage in cast(list[PyramidStage], list(body.stages))]
        for block, stage in stages:
            self.base.append(len(self.norms))
            self.scale_blocks.append(self._block(block))
            if stage is not None:
                self.norms += [NormParams.of(stage.norm_fine), NormParams.of(stage.norm_coarse)]
                self.merges.append(self._block(stage.merge))
        self.to_rgb = _conv(body.to_rgb, dtype, device, keep_bias=True)
        self.norms = [NormParams(p.weight.to(device), p.bias.to(device), p.eps) for p in self.norms]

    def _block(self, block: nn.Module) -> list[Conv]:
        """conv3x3-norm-act, conv3x3-norm-act, conv1x1-norm-act: its convolutions; norms appended.
        The 3x3 ones by Winograd's algorithms in the fused native kernels (F(6x6, 3x3) from 40²;
        their channels are too few for F(8x8, 3x3), ``winograd.F8_MIN_CHANNELS``) where the Johnson
        engine's residual blocks take Winograd's (``winograd.applies``: float32 on a CPU): 3.6x
        faster than oneDNN's direct convolution for the finest scale's 48 -> 48 channels at 512²
        (17.8 against 63.5 ms, Zen 4). Not the first convolution of a scale's RGB (3 input
        channels: 2.1 against 1.3 ms at 512²), nor with torch's sums for transforms (not measured
        on such narrow maps)."""
        convs = [_conv(_part(block, i), self.dtype, self.device, keep_bias=False) for i in (0, 3, 6)]
        self.norms += [NormParams.of(_part(block, i)) for i in (1, 4, 7)]
        if winograd.applies(self.device, self.dtype) and native.library() is not None:
            for conv in convs:
                if conv.weight.shape[2:] == (3, 3) and conv.stride == 1 and conv.weight.shape[1] >= 8:
                    conv.winograd, conv.native = {}, True
        return convs

    @property
    def scales(self) -> int:
        return len(self.scale_blocks)

    def stage_norms(self, s: int) -> range:
        """The norm layers of stage ``s``, in the order a forward pass reaches them."""
        return range(self.base[s], self.base[s + 1] if s + 1 < self.scales else len(self.norms))

    def prepare(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Float (N, 3, H, W) in [0, 1] -> the float32 input pyramid, coarsest first, sides
        replicate-padded to a multiple of 2^(K-1) (and at least twice it), channels-last."""
        h, w = x.shape[-2:]
        hp, wp = self.padded_size(h, w)
        if hp > h or wp > w:
            x = F.pad(x, (0, wp - w, 0, hp - h), mode="replicate")
        pyramid = [x.to(self.device, torch.float32).contiguous(memory_format=CL)]
        for _ in range(self.scales - 1):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2))
        return pyramid[::-1]

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        """The sides ``prepare`` pads an (h, w) image to: multiples of 2^(K-1), at least twice it."""
        return padded_sides(h, w, self.multiple)

    def _norm_act_into(self, y: torch.Tensor, layer: int, stats: StatsPolicy, rows: slice, pad: int) -> torch.Tensor:
        return norm_act_padded(y, self.norms[layer], stats(layer, y, rows), _leaky_relu_into, pad, self.padding)

    def _run_block(
        self, x: torch.Tensor, convs: list[Conv], first: int, stats: StatsPolicy, rows: slice
    ) -> torch.Tensor:
        """A padded input through one conv block -> its activated output (unpadded). Each
        input is let go as soon as its convolution has read it, before the next buffer is made
        (so a caller hands the block its input without keeping a name for it)."""
        for i, conv in enumerate(convs):
            y = conv(x)
            del x
            x = self._norm_act_into(y, first + i, stats, rows, convs[i + 1].pad if i + 1 < len(convs) else 0)
            del y
        return x

    def stage(
        self,
        s: int,
        image: torch.Tensor,
        coarse: Callable[[], torch.Tensor] | None = None,
        stats: StatsPolicy = own_stats,
        rows: slice = _ALL,
    ) -> torch.Tensor:
        """Stage ``s`` on ``image`` (the float32 pyramid level, or a band of it) and ``coarse()``
        (stage s - 1's output over the same rows at half resolution; asked for only once the
        scale block is done) -> its output (N, C_s, h, w). ``rows``: the band's own rows."""
        convs = self.scale_blocks[s]
        fine = self._run_block(
            pad_cl(image.to(self.dtype), convs[0].pad, self.padding), convs, self.base[s], stats, rows
        )
        if s == 0:
            return fine
        assert coarse is not None
        layer = self.base[s] + 3
        fine = normalize(fine, self.norms[layer], stats(layer, fine, rows), inplace=True)
        low = coarse()  # (N, C, h / 2, w / 2)
        low = normalize(low, self.norms[layer + 1], stats(layer + 1, low, _halved(rows)))
        parts = [low, fine]
        del low, fine  # the join below is left holding them, and lets them go once it is built
        return self._run_block(self._join(parts, self.merges[s - 1][0].pad), self.merges[s - 1], layer + 2, stats, rows)

    def _join(self, parts: list[torch.Tensor], pad: int) -> torch.Tensor:
        """[normalized coarse (N, C, h, w), normalized fine (N, F, 2 h, 2 w)] -> the merge
        block's ``pad``-padded input: the coarse map nearest-upsampled into its first C channels,
        the fine map in the rest. Empties ``parts``."""
        low, fine = parts
        parts.clear()
        n, c, h, w = low.shape
        buf = new_padded(fine, c + fine.shape[1], 2 * h, 2 * w, pad)
        joined = interior(buf, pad)
        joined[:, c:] = fine
        up = joined[:, :c].unflatten(2, (h, 2)).unflatten(4, (w, 2))  # (N, C, h, 2, w, 2)
        up.copy_(low[:, :, :, None, :, None].expand(n, c, h, 2, w, 2))
        return fill_border(buf, pad, self.padding)

    def rgb(self, y: torch.Tensor) -> torch.Tensor:
        """The finest stage's output -> float32 RGB in [0, 1]."""
        return to_image_range(self.to_rgb(y).float())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Float (N, 3, H, W) in [0, 1] -> the finest stage's output, untiled. Each pyramid level
        and each stage's output is let go once the next stage has read it."""
        levels = self.prepare(x)[::-1]  # finest first, so that pop() hands out the coarsest
        del x
        y: torch.Tensor | None = None
        for s in range(self.scales):
            y = self.stage(s, levels.pop(), None if y is None else constant_source(y))
        assert y is not None
        return y

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float (N, 3, H, W) in [0, 1] -> float32 (N, 3, H, W) in [0, 1], untiled."""
        h, w = x.shape[-2:]
        return self.rgb(self.features(x))[:, :, :h, :w]

    @torch.inference_mode()
    def forward_bytes(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels, uint8 (N, H, W, 3) -> the stylized pixels, uint8 (N, H, W, 3), untiled: the
        bytes ``to_bytes(forward(x))`` gives (tested equal), the output convolution's result made
        bytes in one float32 copy (``rgb_bytes``) instead of the float picture and its passes."""
        h, w = pixels.shape[1:3]
        out = rgb_bytes(self.to_rgb(self.features(bytes_to_float(pixels.to(self.device)))))  # (N, 3, H', W')
        return out[:, :, :h, :w].permute(0, 2, 3, 1).contiguous()


# --------------------------------------------------------------------------------------------
# Everything else: the eager module, converted


class _Pad(nn.Module):
    def __init__(self, pad: int, mode: str) -> None:
        super().__init__()
        self.pad, self.mode = pad, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pad_cl(x, self.pad, self.mode)


_PAD_MODES: dict[type, str] = {nn.ReflectionPad2d: "reflect", nn.ReplicationPad2d: "replicate", nn.ZeroPad2d: "zero"}


def _fast_replacement(module: nn.Module) -> nn.Module | None:
    if isinstance(module, nn.InstanceNorm2d) and not module.track_running_stats and module.affine:
        return _StatsInstanceNorm(module)
    mode = _PAD_MODES.get(type(module))
    if mode is not None:
        pads = set(cast(tuple[int, ...], module.padding))
        if len(pads) == 1:
            return _Pad(pads.pop(), mode)
    return None


class _StatsInstanceNorm(nn.Module):
    def __init__(self, norm: nn.InstanceNorm2d) -> None:
        super().__init__()
        self.params = NormParams.of(norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.params)


class GenericEngine(nn.Module):
    """Any generator: the eager module in the compute dtype, channels-last, float32 IN statistics."""

    precision = "fp32"
    probe_psnr_db = 0.0

    def __init__(self, model: nn.Module, arch: str, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.arch = arch
        self.dtype = dtype
        self.device = device
        model = copy.deepcopy(model).to(device).eval()
        for parent in list(model.modules()):
            for attr, child in list(parent.named_children()):
                fast = _fast_replacement(child)
                if fast is not None:
                    setattr(parent, attr, fast)
        # normalization parameters stay float32; everything else runs in the compute dtype
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                module.to(dtype)
            elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)) and dtype != torch.float32:
                module.to(torch.float32)
        self.model = model.to(memory_format=CL)  # type: ignore[call-overload]

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x.to(self.device, self.dtype).contiguous(memory_format=CL))
        return y.float()


Engine = JohnsonEngine | UlyanovEngine | GenericEngine


def eager_from(model: nn.Module, cfg: GeneratorConfig) -> nn.Module:
    """The eager generator for ``cfg`` carrying ``model``'s weights (``model`` may be TorchScript)."""
    eager = build_generator(cfg).eval()
    eager.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    return eager


#: An engine in reduced precision must match the float32 eager model at least this well on the
#: probe image, or ``optimize`` falls back to float32.
MIN_PSNR_DB = 40.0
PROBE_SIZE = (96, 128)


def probe_image(h: int = PROBE_SIZE[0], w: int = PROBE_SIZE[1]) -> torch.Tensor:
    """A deterministic photo-like (1, 3, h, w) test image: smooth gradients, edges and texture."""
    g = torch.Generator().manual_seed(1607)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([xx, yy, 1 - 0.5 * (xx + yy)])
    edges = ((xx * 5).floor() + (yy * 3).floor()).remainder(2) * 0.3
    texture = F.avg_pool2d(torch.rand(1, 3, h, w, generator=g), 3, 1, 1)[0] * 0.3
    return (0.6 * base + edges + texture).clamp(0, 1).unsqueeze(0)


def _build(eager: nn.Module, cfg: GeneratorConfig, dtype: torch.dtype, dev: torch.device) -> Engine:
    if cfg.arch == "johnson" and cfg.norm == "instance" and cfg.upsample == "nearest":
        return JohnsonEngine(cast(JohnsonBody, eager.body), cfg.padding, dtype, dev)
    if cfg.arch == "ulyanov" and cfg.norm == "instance" and cfg.noise_channels == 0:
        return UlyanovEngine(cast(UlyanovBody, eager.body), cfg.padding, dtype, dev)
    return GenericEngine(eager, cfg.arch, dtype, dev)


def optimize(
    model: nn.Module, cfg: GeneratorConfig, device: torch.device | str = "cpu", precision: str = "auto"
) -> Engine:
    """The fastest engine for ``model`` (only its weights are read) on ``device``.

    ``precision="auto"`` picks the device's fast dtype (``resolve_precision``) and then checks
    it: the engine's output on ``probe_image()`` must reach ``MIN_PSNR_DB`` against ``model``'s
    own (the artifact itself, when it is one: an engine built from a ``cfg`` that does not
    describe it, a padding or upsampling having no weights, fails the check in any precision),
    else the engine is rebuilt in float32. ``engine.precision`` and ``engine.probe_psnr_db``
    record the outcome.
    """
    dev = torch.device(device)
    dtype = resolve_precision(precision, dev)
    eager = eager_from(model, cfg).to(dev)
    engine = _build(eager, cfg, dtype, dev)
    with torch.inference_mode():
        probe = probe_image().to(dev)
        home = next((p.device for p in model.parameters()), dev)  # where the caller keeps it
        reference = model(probe.to(home)).float().to(dev)
        quality = psnr(engine(probe), reference)
        if quality < MIN_PSNR_DB and precision == "auto" and dtype != torch.float32:
            log.warning("%s engine in %s: %.1f dB on the probe; using float32", cfg.arch, dtype, quality)
            engine = _build(eager, cfg, torch.float32, dev)
            quality = psnr(engine(probe), reference)
    engine.precision = _NAMES[engine.dtype]
    engine.probe_psnr_db = round(quality, 2)
    return engine


def load_engine(
    artifact: bytes,
    generator: dict[str, Any],
    device: torch.device | str = "cpu",
    precision: str = "auto",
    name: str = "",
    cuda_graphs: bool = True,
) -> nn.Module:
    """An exported artifact (bytes) with its manifest's generator config -> its fast engine.

    On CUDA devices the engine is wrapped in ``stylenet.cudagraph.GraphedEngine`` (each input
    shape captured once, then replayed) unless ``cuda_graphs`` is false. Should the artifact
    not fit the fast path (an unknown layout), the loaded TorchScript module itself is
    returned, so serving never depends on the optimization.
    """
    module = load_generator_bytes(artifact, device)
    try:
        cfg = GeneratorConfig.from_dict(dict(generator))
        engine = optimize(module, cfg, device, precision)  # checked against the artifact's own output
    except (ValueError, TypeError, RuntimeError, KeyError) as exc:
        log.warning("%s: no fast engine (%s); running the artifact as is", name, exc)
        return module
    if engine.probe_psnr_db < MIN_PSNR_DB:  # the manifest's config describes another network
        log.warning(
            "%s: the engine built from the manifest's generator config differs from the artifact (%.1f dB on the "
            "probe): running the artifact as is",
            name,
            engine.probe_psnr_db,
        )
        return module
    residuals = getattr(engine, "residual_precision", engine.precision)  # (``float32_residuals``)
    log.info(
        "%s: %s engine in %s%s (%.1f dB vs float32 on the probe)",
        name,
        cfg.arch,
        engine.precision,
        f", residual blocks in {residuals}" if residuals != engine.precision else "",
        engine.probe_psnr_db,
    )
    if not cuda_graphs:
        return engine
    return wrap_for_device(engine, device)
