"""Tiled inference with exact instance-norm statistics: any resolution in bounded memory.

Instance normalization needs each channel's mean and variance over the *whole* image, so
running the generator on tiles independently changes the picture (every tile gets its own
contrast). ``tiled_forward`` reproduces the untiled ``JohnsonEngine`` output instead:

1. **Encoder** (full -> 1/4 resolution): horizontal bands of the input, each with a 16-px halo
   (more than the encoder's receptive-field radius), are run up to norm layer k, and the
   band's own rows of that layer's activation are merged into exact whole-image moments
   (Chan et al.'s parallel mean/variance). With layers 0..k-1 already known this repeats for
   k = 0, 1, 2, then a last pass writes the normalized encoder output into a 1/4-resolution
   buffer (N, 128, H/4, W/4).
2. **Residual blocks** (1/4 resolution): each 3x3 convolution runs band by band over the
   buffer (1-row halo), its moments accumulate, then the band-wise normalization.
3. **Decoder** (1/4 -> full resolution): bands with a 4-row halo at 1/4 resolution, two
   statistics passes (one per decoder norm), then the output pass.

Only two 1/4-resolution buffers of the compute dtype live at once (the features and one
convolution's output): 4096x4096 in bfloat16 needs 2 x 256 MB. Everything else is one band:
given the photo as bytes (uint8, as the worker does), each band is converted to float as it is
read and each output band rounded to bytes as it is written (``_Photo``). The result equals the
untiled output up to floating-point summation order. A pass tells an optional ``Progress``
callback how much of its work is done after every band, and stops if the callback raises.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from stylenet import buffers
from stylenet.config import TILE_MEGAPIXELS, release_free_heap
from stylenet.fast import (
    CL,
    Conv,
    JohnsonEngine,
    Moments,
    ShiftedPhases,
    StatsPolicy,
    UlyanovEngine,
    band_moments,
    constant_source,
    normalize,
    pad_cl,
)
from stylenet.imageio import bytes_to_float, to_bytes

#: GPU memory per pixel of an untiled fp16 Johnson forward pass with its CUDA graph: 1190 MB
#: peak at 2048² on an H100 (benchmarks/results/inference-cuda.json), rounded up.
CUDA_BYTES_PER_PIXEL = 300
#: Share of a GPU's memory one untiled image may take before the worker tiles it.
CUDA_MEMORY_SHARE = 0.5


def auto_tile_pixels(device: torch.device | str) -> int:
    """Pixels per image above which ``device`` runs tiled: ``TILE_MEGAPIXELS`` on a CPU, where
    tiling also keeps activations in cache; on a GPU, whatever fits in half its memory (an
    80 GB H100 never needs to tile, a 16 GB card tiles above ~27 MP)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        total = torch.cuda.get_device_properties(dev).total_memory
        return int(total * CUDA_MEMORY_SHARE / CUDA_BYTES_PER_PIXEL)
    return int(TILE_MEGAPIXELS * 1_000_000)


def tile_threshold(megapixels: float | None, device: torch.device | str) -> int:
    """The tiling threshold in pixels: ``megapixels`` when set, else ``auto_tile_pixels``."""
    return auto_tile_pixels(device) if megapixels is None else int(megapixels * 1_000_000)


#: Told the fraction of a tiled pass done, in (0, 1], after each band (the last call gives 1.0).
Progress = Callable[[float], None]


class _Steps:
    """Adds up the work of the bands a tiled pass has run (each band its pass's ``weight``) out
    of ``total`` and tells ``progress``."""

    def __init__(self, total: float, progress: Progress | None) -> None:
        self.total = max(total, 1e-12)
        self.done = 0.0
        self.progress = progress

    def tick(self, weight: float = 1.0) -> None:
        self.done += weight
        if self.progress is not None:
            fraction = self.done / self.total
            self.progress(1.0 if fraction > 1 - 1e-9 else fraction)  # summation order aside


def _johnson_costs(engine: JohnsonEngine) -> tuple[list[float], list[float], list[float], float]:
    """Multiply-adds per 1/4-resolution pixel of each convolution of ``engine``: encoder,
    residual (each block's two), decoder stages, output. They weigh a tiled pass's bands, so
    that its progress runs about even in time (the full-resolution 9x9 convolutions of the
    first and last passes cost many times a residual block's)."""

    def macs(conv: Conv) -> float:
        return float(conv.weight.numel())  # out x in x k x k: per output pixel

    enc, scale = [], math.prod(conv.stride for conv in engine.enc)
    for conv in engine.enc:
        scale //= conv.stride
        enc.append(macs(conv) * scale * scale)  # output pixels per 1/4-resolution pixel
    res = [macs(conv) for block in engine.res for conv in block]
    dec = [macs(conv) * 4**i for i, conv in enumerate(engine.dec)]  # stage i runs at 2^i x 1/4
    out = macs(engine.out_packed) * 4 ** len(engine.dec) / 4 if engine.out_packed else macs(engine.out) * 16
    return enc, res, dec, out


#: Halo of an encoder band in input pixels (a multiple of 4, larger than the receptive field).
ENCODER_HALO = 16
#: Halo of a decoder band in 1/4-resolution rows.
DECODER_HALO = 4


class _Collected(Exception):
    """Raised by the statistics policy once the band's moments of the target layer are in."""


class _Passes:
    """The statistics policy of one tiled pass: known layers use whole-image moments; the
    target layer's band moments are merged into ``found`` and the pass stops there."""

    def __init__(self, known: dict[int, Moments], target: int | None) -> None:
        self.known = known
        self.target = target
        self.found: Moments | None = None

    def __call__(self, layer: int, y: torch.Tensor | ShiftedPhases, rows: slice) -> Moments | None:
        if layer in self.known:
            return self.known[layer]
        if layer != self.target:
            raise RuntimeError(f"norm layer {layer} reached before its statistics are known")
        band = band_moments(y, rows)
        self.found = band if self.found is None else self.found.merge(band)
        raise _Collected


def _bands(rows: int, band: int) -> list[tuple[int, int]]:
    return [(r, min(rows, r + band)) for r in range(0, rows, band)]


def _tiled_conv(src: torch.Tensor, conv: Conv, mode: str, band: int) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``conv(pad(src))`` (stride 1) band by band: yields (r0, r1, output rows r0..r1), in the
    convolution's dtype (each band converted to it as it is padded: a bf16 engine's float32
    residual blocks, ``stylenet.fast.float32_residuals``, over its bf16 whole-image buffers)."""
    h = src.shape[2]
    p = conv.pad
    for r0, r1 in _bands(h, band):
        c0, c1 = max(0, r0 - p), min(h, r1 + p)
        out = conv(pad_cl(src[:, :, c0:c1], p, mode, conv.weight.dtype))
        yield r0, r1, out[:, :, r0 - c0 : r1 - c0]


def _tiled_conv_over(src: torch.Tensor, conv: Conv, mode: str, band: int) -> Iterator[tuple[int, int]]:
    """``_tiled_conv`` written over ``src`` itself: yields (r0, r1) once output rows r0..r1 are
    in ``src[:, :, r0:r1]``. A band's output is written after the next band is computed, which
    reads the last ``conv.pad`` rows of it as its halo; the band after that starts ``band``
    rows later, past them. So no second full-size buffer, and the values are ``_tiled_conv``'s."""
    if conv.pad > band:
        raise ValueError(f"a band of {band} rows is narrower than the {conv.pad}-row halo")
    done: tuple[int, int, torch.Tensor] | None = None  # computed, not yet written
    for computed in itertools.chain(_tiled_conv(src, conv, mode, band), [None]):
        if done is not None:
            r0, r1, rows = done
            src[:, :, r0:r1] = rows
            yield r0, r1
        done = computed


def _ticking(parts: Iterator[torch.Tensor], steps: _Steps, weight: float) -> Iterator[torch.Tensor]:
    for part in parts:
        yield part
        steps.tick(weight)


def _merged(parts: Iterator[torch.Tensor]) -> Moments:
    total: Moments | None = None
    for part in parts:
        m = Moments.of(part)
        total = m if total is None else total.merge(m)
    assert total is not None
    return total


def _measure(layers: range, known: dict[int, Moments], run_pass: Callable[[_Passes], None]) -> None:
    """One pass over the bands per norm layer in ``layers``, in order, each adding its moments to ``known``."""
    for layer in layers:
        policy = _Passes(known, layer)
        run_pass(policy)
        assert policy.found is not None
        known[layer] = policy.found


def tiled_forward(
    engine: JohnsonEngine | UlyanovEngine, x: torch.Tensor, band: int = 32, progress: Progress | None = None
) -> torch.Tensor:
    """``engine(x)`` computed in bands: ``band`` rows at 1/4 resolution for Johnson's generator,
    ``2 * band`` rows of the finest scale for Ulyanov's. ``x``: float (N, 3, H, W) in [0, 1],
    and the result float32 alike; or uint8 (N, H, W, 3) pixels, and the result uint8 pixels,
    converted a band at a time (``_Photo``: a fraction of the memory). ``progress`` is
    told the share of the pass's work done after each band (a tiled pass of a large photo takes
    a minute on a CPU), and may raise to abandon the pass."""
    release_free_heap()  # what decoding the photo freed would sit beside the pass's buffers
    try:
        if isinstance(engine, UlyanovEngine):
            return tiled_pyramid(engine, x, band=2 * band, progress=progress)
        return _tiled_johnson(engine, x, band, progress)
    finally:
        # the arena's pages the pass let go (a whole-image buffer is 512 MB at 4096² in float32)
        # back to the system: a tiled pass is rare and long, faulting them in again ~0.5 % of it
        buffers.trim()


class _Photo:
    """The photo a tiled pass reads and the picture it writes, a band at a time: float
    (N, 3, H, W) in [0, 1] in and out, or the decoded bytes, uint8 (N, H, W, 3), in and out. At
    8192² a float32 copy of the photo is 805 MB and so is the output: as bytes, each is 201 MB,
    and only a band is ever in float."""

    def __init__(self, x: torch.Tensor, device: torch.device) -> None:
        self.x = x
        self.as_bytes = x.dtype == torch.uint8
        self.n = x.shape[0]
        self.h, self.w = (x.shape[1], x.shape[2]) if self.as_bytes else (x.shape[2], x.shape[3])
        self.device = device
        #: The output, once ``output`` has made the buffer its writer fills.
        self.result: torch.Tensor | None = None

    def rows(self, r0: int, r1: int, height: int, width: int) -> torch.Tensor:
        """Rows [r0, r1) as float (N, 3, r1 - r0, width) on the device, the last row and column
        repeated beyond the photo's edges (padded to ``height`` x ``width`` as a whole)."""
        start = min(r0, self.h - 1)  # a band wholly below the photo (padded to a multiple): its last row
        stop = max(min(r1, self.h), start + 1)
        part = self.x[:, start:stop] if self.as_bytes else self.x[:, :, start:stop]
        part = part.to(self.device)
        if self.as_bytes:
            part = bytes_to_float(part)
        if r1 - r0 != stop - start or width > self.w:
            part = F.pad(part, (0, width - self.w, 0, (r1 - r0) - (stop - start)), mode="replicate")
        return part

    def output(self, height: int, width: int) -> Callable[[int, int, torch.Tensor], None]:
        """A writer of output rows [r0, r1) (float (N, 3, r1 - r0, width)) into ``self.result``."""
        if not self.as_bytes:
            out = torch.empty((self.n, 3, height, width), dtype=torch.float32, device=self.device)
            self.result = out[:, :, : self.h, : self.w]

            def write(r0: int, r1: int, rgb: torch.Tensor) -> None:
                out[:, :, r0:r1] = rgb

            return write
        out8 = torch.empty((self.n, self.h, self.w, 3), dtype=torch.uint8)
        self.result = out8

        def write_bytes(r0: int, r1: int, rgb: torch.Tensor) -> None:
            stop = min(r1, self.h)
            if stop > r0:
                out8[:, r0:stop] = to_bytes(rgb[:, :, : stop - r0, : self.w]).cpu()

        return write_bytes


@torch.inference_mode()
def _tiled_johnson(
    engine: JohnsonEngine, x: torch.Tensor, band: int = 32, progress: Progress | None = None
) -> torch.Tensor:
    photo = _Photo(x, engine.device)
    n, hp, wp = photo.n, *engine.padded_size(photo.h, photo.w)
    h4, w4 = hp // 4, wp // 4
    known: dict[int, Moments] = {}
    n_enc, n_res = len(engine.enc), len(engine.res)
    # every pass below runs each band once, at the cost of the convolutions it runs: the
    # encoder up to norm k (k = 0 .. n_enc - 1, then all of it), each residual convolution, the
    # decoder up to norm k (then all of it and the output convolution)
    enc_cost, res_cost, dec_cost, out_cost = _johnson_costs(engine)
    enc_passes = [sum(enc_cost[: k + 1]) for k in range(n_enc)] + [sum(enc_cost)]
    dec_passes = [sum(dec_cost[: k + 1]) for k in range(len(dec_cost))] + [sum(dec_cost) + out_cost]
    per_band = sum(enc_passes) + sum(res_cost) + sum(dec_passes)
    steps = _Steps(per_band * len(_bands(h4, band)), progress)
    feats_shape = (n, engine.enc[-1].weight.shape[0], h4, w4)
    # the two 1/4-resolution buffers in the buffer arena (when it has room): placed below the
    # bands' buffers, then over them, so a pass faults in little more than it holds at once
    feats = buffers.empty(feats_shape, engine.dtype, engine.device)

    # 1. encoder: statistics passes for each norm, then the output pass into `feats`; each band
    #    of the photo is converted (and padded as `engine.prepare` pads the whole) as it is read
    def encoder_pass(policy: _Passes) -> None:
        for r0, r1 in _bands(h4, band):
            c0 = max(0, 4 * r0 - ENCODER_HALO)
            c1 = min(hp, 4 * r1 + ENCODER_HALO)
            rows = slice(r0 - c0 // 4, r1 - c0 // 4)
            try:
                out = engine.encode(engine.prepare(photo.rows(c0, c1, hp, wp)), policy, rows)
            except _Collected:
                continue
            finally:
                steps.tick(enc_passes[n_enc if policy.target is None else policy.target])
            feats[:, :, r0:r1] = out[:, :, rows]

    _measure(range(n_enc), known, encoder_pass)
    encoder_pass(_Passes(known, None))

    # 2. residual blocks at 1/4 resolution, one convolution at a time, each computed once. The
    #    first convolution's output goes to a second buffer (the second reads it with a halo);
    #    the second's is written over its own input as it goes (``_tiled_conv_over``), measured,
    #    then normalized and added to the features: only two buffers ever exist. (It used to be
    #    computed twice, once for its moments and once to add it: 4096² on the AMX Xeon, bf16,
    #    10.9-11.1 -> 10.1-10.7 s and 1339-1398 -> 1244-1270 MB peak RSS.) Both buffers are in the
    #    engine's dtype even where its residual convolutions run in float32: each band converted
    #    to float32 on its way in, each output band rounded back (half the memory in bf16).
    t = buffers.empty(feats_shape, engine.dtype, engine.device)
    for block, (first, second) in enumerate(engine.res):
        layer = n_enc + 2 * block
        for r0, r1, rows in _tiled_conv(feats, first, engine.padding, band):
            t[:, :, r0:r1] = rows
            steps.tick(res_cost[2 * block])
        moments = _merged(t[:, :, r0:r1] for r0, r1 in _bands(h4, band))
        for r0, r1 in _bands(h4, band):
            t[:, :, r0:r1] = normalize(t[:, :, r0:r1], engine.norms[layer], moments).clamp_(min=0)
        second_rows = (t[:, :, r0:r1] for r0, r1 in _tiled_conv_over(t, second, engine.padding, band))
        moments = _merged(_ticking(second_rows, steps, res_cost[2 * block + 1]))
        for r0, r1 in _bands(h4, band):
            feats[:, :, r0:r1] += normalize(t[:, :, r0:r1], engine.norms[layer + 1], moments)
    del t
    buffers.trim()  # t's pages: the decoder's bands need a fraction of them, its output picture none

    # 3. decoder: statistics passes for its two norms, then the output pass
    write = photo.output(hp, wp)
    first_dec = n_enc + 2 * n_res

    def decoder_pass(policy: _Passes) -> None:
        for r0, r1 in _bands(h4, band):
            c0, c1 = max(0, r0 - DECODER_HALO), min(h4, r1 + DECODER_HALO)
            rows = slice(r0 - c0, r1 - c0)
            try:
                rgb = engine.decode(feats[:, :, c0:c1], policy, rows)
            except _Collected:
                continue
            finally:
                steps.tick(dec_passes[len(dec_cost) if policy.target is None else policy.target - first_dec])
            write(4 * r0, 4 * r1, rgb[:, :, 4 * rows.start : 4 * rows.stop])

    _measure(range(first_dec, first_dec + len(engine.dec)), known, decoder_pass)
    decoder_pass(_Passes(known, None))
    assert photo.result is not None
    return photo.result


class _Rows:
    """The finest level of the input pyramid, read a band at a time from the photo (as
    ``engine.prepare`` would have padded it), never held whole in float32."""

    def __init__(self, photo: _Photo, height: int, width: int) -> None:
        self.photo = photo
        self.shape = (photo.n, 3, height, width)

    def __getitem__(self, index: tuple[slice, slice, slice]) -> torch.Tensor:
        """``level[:, :, r0:r1]``: the only indexing ``tiled_pyramid`` does."""
        assert index[0] == index[1] == slice(None), index
        rows = index[2]
        start, stop = rows.start or 0, self.shape[2] if rows.stop is None else rows.stop
        return self.photo.rows(start, stop, self.shape[2], self.shape[3]).contiguous(memory_format=CL)


def _runs_whole(stage: int, pixels: int, stored_pixels: int) -> bool:
    """Whether ``tiled_pyramid`` runs a stage of ``pixels`` pixels (batch included) whole and
    keeps its output, rather than in bands: the coarsest always, the others up to ``stored_pixels``."""
    return stage == 0 or pixels <= stored_pixels


def _input_pyramid(engine: UlyanovEngine, photo: _Photo, stored_pixels: int) -> list[Any]:
    """``engine.prepare``'s pyramid, but the finest level, when it is tiled, left in the photo
    (``_Rows``): the next level is pooled from it band by band (the same 2x2 means). At 8192²
    the finest level in float32 is 805 MB; the rest of the pyramid is a third of that."""
    hp, wp = engine.padded_size(photo.h, photo.w)
    if _runs_whole(engine.scales - 1, photo.n * hp * wp, stored_pixels):
        return engine.prepare(photo.rows(0, photo.h, photo.h, photo.w))
    finest = _Rows(photo, hp, wp)
    level = torch.empty((photo.n, 3, hp // 2, wp // 2), dtype=torch.float32, device=engine.device, memory_format=CL)
    for r0, r1 in _bands(hp, 256):  # even rows: each 2x2 mean is the one pooling the whole computes
        level[:, :, r0 // 2 : r1 // 2] = F.avg_pool2d(finest[:, :, r0:r1], 2)
    levels: list[Any] = [level]
    for _ in range(engine.scales - 2):
        levels.append(F.avg_pool2d(levels[-1], 2))
    return [*levels[::-1], finest]


def _pyramid_costs(engine: UlyanovEngine, tiled: set[int]) -> tuple[dict[int, list[float]], dict[int, float]]:
    """Multiply-adds per pixel of a band of each stage, for the pass that measures each of its
    norm layers (``engine.stage_norms(s)`` order), and for the whole stage: the scale block
    up to that norm; from the coarse input's norm on, also the stage below over the band's rows
    (a quarter of its pixels, computed anew when that stage is tiled too), then the merge block."""
    passes: dict[int, list[float]] = {}
    full: dict[int, float] = {}
    for s in range(engine.scales):
        block = [float(conv.weight.numel()) for conv in engine.scale_blocks[s]]
        own = [sum(block[: j + 1]) for j in range(len(block))]
        if s == 0:
            passes[s], full[s] = own, own[-1]
            continue
        merge = [float(conv.weight.numel()) for conv in engine.merges[s - 1]]
        below = full[s - 1] / 4 if s - 1 in tiled else 0.0
        joined = own[-1] + below
        passes[s] = own + [own[-1], joined] + [joined + sum(merge[: j + 1]) for j in range(len(merge))]
        full[s] = joined + sum(merge)
    return passes, full


def _kept_stages(engine: UlyanovEngine, pyramid: list[Any], candidates: set[int], budget: int) -> set[int]:
    """The tiled stages ``tiled_pyramid`` keeps: finer first, while their outputs fit ``budget`` bytes."""
    kept: set[int] = set()
    for s in sorted(candidates, reverse=True):
        n, _, h, w = pyramid[s].shape
        channels = engine.merges[s - 1][-1].weight.shape[0]  # stage 0 always runs whole
        nbytes = n * channels * h * w * engine.dtype.itemsize
        if nbytes <= budget:
            kept.add(s)
            budget -= nbytes
    return kept


def _keep(size: int, rows: int, make: Callable[[int, int], torch.Tensor], steps: _Steps, cost: float) -> torch.Tensor:
    """A stage's whole output (``size`` rows), written band by band by ``make(r0, r1)``, each
    band ticking ``cost`` off ``steps``."""
    out: torch.Tensor | None = None
    for r0, r1 in _bands(size, rows):
        y = make(r0, r1)
        if out is None:
            shape = (y.shape[0], y.shape[1], size, y.shape[3])
            out = torch.empty(shape, dtype=y.dtype, device=y.device, memory_format=CL)
        out[:, :, r0:r1] = y
        del y
        steps.tick(cost)
    assert out is not None
    return out


#: Halo of a pyramid stage's band, in that stage's rows: two 3x3 convolutions in the scale
#: block and two in the merge (the coarse input is exact, computed with its own halo). Even.
PYRAMID_HALO = 4
#: Pyramid stages of at most this many pixels per batch run untiled and keep their output.
#: With 64-row bands at the finest scale, a 4096² image peaked at 1353 MB RSS, against 1844 MB
#: with 1024² stored and 128-row bands, in the same time (fp32, AMX Xeon; docs/performance.md).
PYRAMID_STORED_PIXELS = 1 << 18
#: Tiled stages below the finest whose outputs take at most this many bytes in all (finer
#: stages first) are *kept*: once their statistics are known, one more pass over their bands
#: writes their output, which the stage above slices instead of computing those rows anew in
#: each of its passes. A 4096² float32 image keeps its 2048² and 1024² stages (640 + 128 MiB):
#: 71 -> 62 s, at 1744 MB peak RSS instead of 1100 (Zen 3 EPYC; docs/performance.md).
PYRAMID_KEPT_BYTES = 768 << 20


class _StageRows:
    """``tiled_pyramid``'s rows of a stage: ``(s, r0, r1, policy)`` -> stage s's output rows
    [r0, r1), exact given the statistics ``policy`` knows; sliced from a stored or kept stage,
    else computed with a ``PYRAMID_HALO`` from the input level and the stage below (recursively).

    A class, not a closure: a nested function calling itself holds itself, and with it the
    pyramid, the photo, the picture and the stored stages, in a reference cycle that only the
    cyclic garbage collector frees (1.7 GB at 4096², still there when a second pass peaked)."""

    def __init__(
        self, engine: UlyanovEngine, pyramid: list[Any], stored: dict[int, torch.Tensor], known: dict[int, Moments]
    ) -> None:
        self.engine, self.pyramid, self.stored, self.known = engine, pyramid, stored, known

    def __call__(self, s: int, r0: int, r1: int, policy: StatsPolicy) -> torch.Tensor:
        if s in self.stored:
            return self.stored[s][:, :, r0:r1]
        size = self.pyramid[s].shape[2]
        c0 = max(0, r0 - PYRAMID_HALO) // 2 * 2  # even, so the coarse rows are whole
        c1 = min(size, -(-(r1 + PYRAMID_HALO) // 2) * 2)
        known_only = _Passes(self.known, None)
        y = self.engine.stage(
            s,
            self.pyramid[s][:, :, c0:c1],
            None if s == 0 else (lambda: self(s - 1, c0 // 2, c1 // 2, known_only)),
            policy,
            slice(r0 - c0, r1 - c0),
        )
        return y[:, :, r0 - c0 : r1 - c0]


@torch.inference_mode()
def tiled_pyramid(
    engine: UlyanovEngine,
    x: torch.Tensor,
    band: int = 64,
    stored_pixels: int = PYRAMID_STORED_PIXELS,
    progress: Progress | None = None,
    kept_bytes: int = PYRAMID_KEPT_BYTES,
) -> torch.Tensor:
    """``engine(x)`` (Ulyanov's pyramid) with exact whole-image statistics in bounded memory.

    Coarse stages of at most ``stored_pixels`` pixels run whole and keep their output. Each
    finer stage runs over bands (``band`` rows at the finest scale, the same pixels per band at
    coarser ones) with a ``PYRAMID_HALO``: one pass per norm layer, in order, merges the bands'
    moments; a band asks the stage below for its rows, which a stored stage slices and a tiled
    one computes (recursively, with its statistics already known). Tiled stages whose outputs
    fit ``kept_bytes`` (``PYRAMID_KEPT_BYTES``) are written out once measured and sliced from
    then on. Nothing else of a tiled stage outlives its band, so memory is the input pyramid,
    the stored and kept stages and a few bands.
    ``progress``: as in ``tiled_forward``, each band weighted by the multiply-adds it runs
    (``_pyramid_costs``).
    """
    photo = _Photo(x, engine.device)
    pyramid = _input_pyramid(engine, photo, stored_pixels)  # float32 levels, coarsest first
    finest = len(pyramid) - 1
    known: dict[int, Moments] = {}
    stored: dict[int, torch.Tensor] = {}
    final_rows = max(2, band // 2 * 2)

    def band_rows(s: int) -> int | None:
        """Rows per band of stage s, or None for a stage that runs whole and is stored."""
        n, _, size, width = pyramid[s].shape
        if _runs_whole(s, n * size * width, stored_pixels):
            return None
        return max(2, min(size, band << (finest - s)) // 2 * 2)

    tiled = {s for s in range(len(pyramid)) if band_rows(s) is not None}
    kept = _kept_stages(engine, pyramid, tiled - {finest}, kept_bytes)
    pass_costs, full_cost = _pyramid_costs(engine, tiled - kept)
    final_cost = full_cost[finest] + float(engine.to_rgb.weight.numel())
    total = final_cost * len(_bands(pyramid[finest].shape[2], final_rows))
    for s in tiled:
        per_band = sum(pass_costs[s]) + (full_cost[s] if s in kept else 0.0)
        total += per_band * len(_bands(pyramid[s].shape[2], band_rows(s) or 1))
    steps = _Steps(total, progress)

    rows_of = _StageRows(engine, pyramid, stored, known)

    for s, level in enumerate(pyramid):
        size = level.shape[2]
        rows = band_rows(s)
        if rows is None:
            stored[s] = engine.stage(s, level, None if s == 0 else constant_source(stored[s - 1]))
            continue

        def stage_pass(policy: _Passes, s: int = s, size: int = size, rows: int = rows) -> None:
            for r0, r1 in _bands(size, rows):
                try:
                    rows_of(s, r0, r1, policy)
                except _Collected:
                    continue
                finally:
                    steps.tick(pass_costs[s][(policy.target or 0) - engine.base[s]])

        _measure(engine.stage_norms(s), known, stage_pass)
        if s in kept:
            whole_rows = functools.partial(rows_of, s, policy=_Passes(known, None))
            stored[s] = _keep(size, rows, whole_rows, steps, full_cost[s])

    size = pyramid[finest].shape[2]
    write = photo.output(size, pyramid[finest].shape[3])
    for r0, r1 in _bands(size, final_rows):
        write(r0, r1, engine.rgb(rows_of(finest, r0, r1, _Passes(known, None))))
        steps.tick(final_cost)
    assert photo.result is not None
    return photo.result
