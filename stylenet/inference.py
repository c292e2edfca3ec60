"""Stylizing one photo with a loaded generator: the path shared by the CLI and the worker."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn

from stylenet.cudagraph import GraphedEngine
from stylenet.fast import JohnsonEngine, UlyanovEngine
from stylenet.imageio import image_bytes, image_to_tensor, resize_max, tensor_to_image
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


def bytes_engine(generator: nn.Module) -> JohnsonEngine | UlyanovEngine | None:
    """The engine that runs ``generator`` untiled from bytes to bytes (``forward_bytes``), if any:
    not a CUDA-graphed one, whose captured graphs take float input."""
    return generator if isinstance(generator, (JohnsonEngine, UlyanovEngine)) else None


#: Batches with more pixels than this (1024², images x height x width) run one at a time per
#: process, however many threads stylize (``INSTYLE_STYLIZE_THREADS``): peak memory stays that of
#: one large image, and at that size the work around the generator is too small a share of the
#: time for overlapping it to pay. Smaller images run concurrently.
EXCLUSIVE_PIXELS = 1024 * 1024
_exclusive = threading.Lock()


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


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
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
    w, h = photos[0].size
    tiled = tiled_engine(generator, h * w, tile_pixels)
    engine = tiled or bytes_engine(generator)
    if engine is not None and not any(preserve_color):
        # The photos go in and come out as bytes. Tiled, they are converted a band at a time (at
        # 8192² the float32 photo and picture would take 805 MB each: stylenet.tiling._Photo);
        # untiled, the engine reads them into its first buffer and writes its last as bytes.
        one = len(photos) == 1  # no stacked copy of a lone photo
        pixels = image_bytes(photos[0])[None] if one else torch.stack([image_bytes(p) for p in photos])  # (B, H, W, 3)
        start = time.perf_counter()
        with _turn(pixels.shape[0] * h * w):
            result = tiled_forward(engine, pixels, progress=progress) if tiled else engine.forward_bytes(pixels).cpu()
        if timings is not None:
            _synchronize(engine.device)
            timings["model_s"] = time.perf_counter() - start
        return [Image.fromarray(result[k].numpy(), "RGB") for k in range(len(photos))]
    x = torch.stack([image_to_tensor(p) for p in photos]).to(device)  # (B, 3, H, W)
    start = time.perf_counter()
    y = run_generator(generator, x, tile_pixels, progress)  # the engine's dtype; tensor_to_image clamps
    if timings is not None:
        _synchronize(y.device)
        timings["model_s"] = time.perf_counter() - start
    out = []
    for k, keep in enumerate(preserve_color):
        yk = y[k : k + 1]
        if keep:
            yk = preserve_colors(yk.float().clamp(0, 1), x[k : k + 1].float())
        out.append(tensor_to_image(yk.cpu()))
    return out


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
