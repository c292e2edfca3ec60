"""CUDA-graph replay of the engine.

The tests marked ``gpu`` need a CUDA device and are deselected by default (``pytest -m gpu``
runs them on a GPU machine); the others check, on any machine, that the wrapper stays out of
the way where it cannot help.
"""

from __future__ import annotations

import json

import pytest
import torch

from stylenet.config import GeneratorConfig
from stylenet.cudagraph import GraphedEngine, wrap_for_device
from stylenet.export import load_generator, psnr
from stylenet.fast import JohnsonEngine, eager_from, load_engine, optimize
from stylenet.imageio import image_to_tensor, load_image, resize_max
from stylenet.inference import run_generator, stylize_image, tiled_engine
from stylenet.tiling import tiled_forward
from tests.conftest import ASSET_PHOTOS, REPO

SHIPPED = REPO / "model_store" / "shipped" / "starry-night" / "1"
gpu = pytest.mark.gpu


def _shipped() -> tuple[torch.nn.Module, GeneratorConfig]:
    cfg = GeneratorConfig.from_dict(json.loads((SHIPPED / "manifest.json").read_text())["generator"])
    return load_generator(SHIPPED / "generator.ts"), cfg


def _photo(long_side: int) -> torch.Tensor:
    img = resize_max(load_image(ASSET_PHOTOS / "skimage_astronaut.jpg"), long_side)
    return image_to_tensor(img).unsqueeze(0)


def test_wrap_for_device_leaves_cpu_engines_alone() -> None:
    model, cfg = _shipped()
    engine = optimize(model, cfg, "cpu", "fp32")
    assert wrap_for_device(engine, "cpu") is engine
    assert isinstance(load_engine((SHIPPED / "generator.ts").read_bytes(), cfg.to_dict(), "cpu"), JohnsonEngine)


def test_graphed_engine_runs_cpu_tensors_directly_and_tiles_through_the_wrapper() -> None:
    model, cfg = _shipped()
    engine = optimize(model, cfg, "cpu", "fp32")
    graphed = GraphedEngine(engine)
    x = _photo(64)
    assert torch.equal(graphed(x), engine(x)) and graphed.captures == 0
    assert graphed.precision == "fp32" and graphed.arch == "johnson"
    # run_generator sees through the wrapper: above the threshold the engine runs tiled
    assert tiled_engine(graphed, 64 * 64, 1000) is engine and tiled_engine(graphed, 64 * 64, 0) is engine
    assert tiled_engine(graphed, 900, 1000) is None and tiled_engine(graphed, 64 * 64, None) is None
    tiled = run_generator(graphed, x, tile_pixels=1000)
    assert torch.allclose(tiled, tiled_forward(engine, x), atol=1e-6)


# ------------------------------------------------------------------------------ on a GPU


@gpu
def test_fp16_engine_on_cuda_matches_strict_fp32_eager() -> None:
    model, cfg = _shipped()
    engine = optimize(model, cfg, "cuda")
    assert engine.precision == "fp16" and engine.probe_psnr_db >= 40
    x = _photo(1024).cuda()
    eager = eager_from(model, cfg).cuda()
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.inference_mode():
            ref = eager(x)
    finally:
        torch.backends.cudnn.allow_tf32 = True
    assert psnr(engine(x).cpu(), ref.cpu()) >= 40


@gpu
def test_graph_replay_equals_the_engine_and_captures_each_shape_once() -> None:
    model, cfg = _shipped()
    engine = optimize(model, cfg, "cuda")
    graphed = GraphedEngine(engine, max_graphs=2)
    shapes = [(1, 3, 96, 128), (2, 3, 64, 64), (1, 3, 96, 128), (1, 3, 40, 72), (2, 3, 64, 64)]
    for shape in shapes:
        x = torch.rand(shape, device="cuda")
        y = graphed(x)
        assert y.shape == shape and torch.isfinite(y).all()
        assert torch.allclose(y, engine(x), atol=2e-3)
        x.fill_(0.5)  # the replayed output is a copy: later inputs do not change it
        assert not torch.allclose(graphed(x), y)
    # (1,3,96,128) captured once and replayed; (2,3,64,64) evicted by (1,3,40,72), so recaptured
    assert graphed.captures == 4 and len(graphed.graphs) == 2


@gpu
def test_worker_path_on_cuda_graphs_small_images_and_tiles_large_ones() -> None:
    data = (SHIPPED / "generator.ts").read_bytes()
    _, cfg = _shipped()
    engine = load_engine(data, cfg.to_dict(), "cuda")
    assert isinstance(engine, GraphedEngine) and isinstance(engine.engine, JohnsonEngine)
    photo = load_image(ASSET_PHOTOS / "skimage_astronaut.jpg")
    timings: dict[str, float] = {}
    out = stylize_image(engine, photo, 256, device="cuda", timings=timings)
    assert out.size == (256, 256) and timings["model_s"] > 0 and engine.captures == 1
    x = _photo(512).cuda()
    tiled = run_generator(engine, x, tile_pixels=100_000)  # tiled, bypassing the graphs
    assert engine.captures == 1
    assert psnr(tiled.cpu(), engine(x).cpu()) >= 40


@gpu
def test_a_tiled_photo_on_cuda_goes_in_and_out_as_bytes() -> None:
    """The worker's tiled path on a GPU: CPU bytes in, each band moved to the device and back."""
    from stylenet.imageio import image_bytes, to_bytes

    _, cfg = _shipped()
    engine = load_engine((SHIPPED / "generator.ts").read_bytes(), cfg.to_dict(), "cuda")
    inner = engine.engine if isinstance(engine, GraphedEngine) else engine
    photo = resize_max(load_image(ASSET_PHOTOS / "skimage_astronaut.jpg"), 300)
    pixels = image_bytes(photo)[None]
    as_bytes = tiled_forward(inner, pixels)
    assert as_bytes.device.type == "cpu" and as_bytes.shape == pixels.shape
    floats = image_to_tensor(photo).unsqueeze(0).cuda()
    assert torch.equal(as_bytes, to_bytes(tiled_forward(inner, floats)).cpu())
    out = stylize_image(engine, photo, None, device="cuda", tile_pixels=10_000)  # the same path, tiled
    assert torch.equal(image_bytes(out), as_bytes[0])
