"""Stylizing one photo with a loaded generator: the path shared by the CLI and the worker."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn

from stylenet.cudagraph import GraphedEngine
from stylenet.fast import JohnsonEngine, UlyanovEngine
from stylenet.imageio import bytes_to_float, image_bytes, resize_max, to_bytes
from stylenet.tiling import Progress, tiled_forward


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> YIQ (luminance Y, chrominance I/Q)."""
    m = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    return torch.einsum("ij,njhw->nihw", m, x)


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    m = x.new_tensor([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]])
    return torch.einsum("ij,njhw->nihw", m, x)


def preserve_colors(stylized: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """Luminance-only transfer (Gatys et al. 2016): stylized Y with the photo's I/Q."""
    s, p = rgb_to_yiq(stylized), rgb_to_yiq(photo)
    return yiq_to_rgb(torch.cat([s[:, :1], p[:, 1:]], dim=1)).clamp(0, 1)


def tiled_engine(generator: nn.Module, pixels: int, tile_pixels: int | None) -> JohnsonEngine | UlyanovEngine | None:
    """The engine ``run_generator`` runs tiled for images of ``pixels`` pixels, else ``None``."""
    engine = generator.engine if isinstance(generator, GraphedEngine) else generator
    if tile_pixels is not None and isinstance(engine, (JohnsonEngine, UlyanovEngine)) and pixels > tile_pixels:
        return engine
    return None


#: Batches with more pixels than this (1024², images x height x width) run one at a time per
#: process, however many threads stylize (``INSTYLE_STYLIZE_THREADS``), and across the embedded
#: mode's stylize processes (``share_exclusive_lock``): peak memory stays that of
#: one large image, and at that size the work around the generator is too small a share of the
#: time for overlapping it to pay. Smaller images run concurrently.
EXCLUSIVE_PIXELS = 1024 * 1024
_exclusive: contextlib.AbstractContextManager[Any] = threading.Lock()


def share_exclusive_lock(lock: contextlib.AbstractContextManager[Any]) -> None:
    """Make large batches wait for ``lock`` instead of this process's own: one shared with other
    processes (the embedded mode's stylize processes, ``worker.processes``)."""
    global _exclusive
    _exclusive = lock


def runs_exclusive(pixels: int) -> bool:
    """Whether a batch of ``pixels`` pixels in all waits for the others (``EXCLUSIVE_PIXELS``)."""
    return pixels > EXCLUSIVE_PIXELS


def run_generator(
    generator: nn.Module, x: torch.Tensor, tile_pixels: int | None = None, progress: Progress | None = None
) -> torch.Tensor:
    """``generator(x)``; a Johnson or Ulyanov engine given more than ``tile_pixels`` pixels per image runs
    tiled with exact instance-norm statistics (``stylenet.tiling``), in bounded memory, telling
    ``progress`` how far it got. Batches over ``EXCLUSIVE_PIXELS`` wait for each other."""
    engine = tiled_engine(generator, x.shape[-2] * x.shape[-1], tile_pixels)
    with _turn(x.shape[0] * x.shape[-2] * x.shape[-1]):
        return generator(x) if engine is None else tiled_forward(engine, x, progress=progress)


def _turn(pixels: int) -> contextlib.AbstractContextManager[Any]:
    """Held while a batch of ``pixels`` pixels runs: the process-wide lock over
    ``EXCLUSIVE_PIXELS``, nothing below."""
    return _exclusive if runs_exclusive(pixels) else contextlib.nullcontext()


#: A pass over decoded photos, uint8 (B, H, W, 3) in and out (on the CPU), told ``Progress``.
BytesPass = Callable[[torch.Tensor, "Progress | None"], torch.Tensor]


def bytes_pass(generator: nn.Module, pixels: int, tile_pixels: int | None) -> BytesPass | None:
    """How ``generator`` runs photos of ``pixels`` pixels each from their bytes to bytes, if it
    can: a Johnson or Ulyanov engine, tiled above ``tile_pixels`` (converted a band at a time:
    at 8192² the float32 photo and picture would take 805 MB each, ``stylenet.tiling._Photo``),
    untiled through ``forward_bytes`` unless CUDA-graphed (captured graphs take float input).
    ``None``: float input only (``run_generator``). Batches over ``EXCLUSIVE_PIXELS`` wait for
    each other, as there."""
    tiled = tiled_engine(generator, pixels, tile_pixels)
    untiled = generator if tiled is None and isinstance(generator, (JohnsonEngine, UlyanovEngine)) else None
    if tiled is None and untiled is None:
        return None

    def run(photos: torch.Tensor, progress: Progress | None = None) -> torch.Tensor:
        with _turn(photos.shape[0] * pixels):
            if tiled is not None:
                return tiled_forward(tiled, photos, progress=progress)
            assert untiled is not None
            return untiled.forward_bytes(photos).cpu()

    return run


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stylize_batch(
    generator: nn.Module,
    photos: Sequence[Image.Image],
    preserve_color: Sequence[bool],
    device: str | torch.device = "cpu",
    tile_pixels: int | None = None,
    timings: dict[str, float] | None = None,
    progress: Progress | None = None,
) -> list[Image.Image]:
    """Run photos of one size through ``generator`` as one batch; one RGB image per photo.

    ``preserve_color[k]`` keeps photo k's colours. ``timings``, when given, receives
    ``model_s``: the generator's own seconds for the whole batch (device synced). ``progress``:
    told how far a tiled pass got (``stylenet.tiling.tiled_forward``); not called untiled.
    """
    one = len(photos) == 1  # no stacked copy of a lone photo
    pixels = image_bytes(photos[0])[None] if one else torch.stack([image_bytes(p) for p in photos])
    out = stylize_pixels(generator, pixels, preserve_color, device, tile_pixels, timings, progress)
    return [Image.fromarray(out[k].numpy(), "RGB") for k in range(len(photos))]


@torch.inference_mode()
def stylize_pixels(
    generator: nn.Module,
    pixels: torch.Tensor,
    preserve_color: Sequence[bool],
    device: str | torch.device = "cpu",
    tile_pixels: int | None = None,
    timings: dict[str, float] | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """``stylize_batch`` on decoded photos, uint8 (B, H, W, 3) in and out (on the CPU).

    A Johnson or Ulyanov engine runs them from bytes to bytes (``bytes_pass``) unless a photo
    keeps its colours; any other generator gets the same float32 photos ``image_to_tensor``
    gives, and its output becomes the bytes ``tensor_to_image`` would show.
    """
    h, w = pixels.shape[1:3]
    run_bytes = bytes_pass(generator, h * w, tile_pixels)
    if run_bytes is not None and not any(preserve_color):
        start = time.perf_counter()
        result = run_bytes(pixels, progress)  # on the CPU: the device is done with it
        if timings is not None:
            timings["model_s"] = time.perf_counter() - start
        return result
    x = bytes_to_float(pixels).contiguous().to(device)  # (B, 3, H, W)
    start = time.perf_counter()
    y = run_generator(generator, x, tile_pixels, progress)  # the engine's dtype; to_bytes clamps
    if timings is not None:
        _synchronize(y.device)
        timings["model_s"] = time.perf_counter() - start
    out = []
    for k, keep in enumerate(preserve_color):
        yk = y[k]
        if keep:
            yk = preserve_colors(yk[None].float().clamp(0, 1), x[k : k + 1].float())[0]
        out.append(to_bytes(yk.cpu()))
    return out[0][None] if len(out) == 1 else torch.stack(out)


def stylize_image(
    generator: nn.Module,
    photo: Image.Image,
    max_size: int | None = None,
    preserve_color: bool = False,
    device: str | torch.device = "cpu",
    tile_pixels: int | None = None,
    timings: dict[str, float] | None = None,
    progress: Progress | None = None,
) -> Image.Image:
    """Downscale ``photo`` to ``max_size`` (long side), run ``generator``, return an RGB image.

    ``timings``, when given, receives ``model_s``: the generator's own seconds (device synced);
    ``progress`` as in ``stylize_batch``.
    """
    small = resize_max(photo, max_size)
    return stylize_batch(generator, [small], [preserve_color], device, tile_pixels, timings, progress)[0]
