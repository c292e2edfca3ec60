from __future__ import annotations

import shutil
from pathlib import Path

import pydantic
import pytest
import torch

from model_store.catalog import Catalog, StyleStore
from model_store.shipped import open_catalog
from stylenet.config import TILE_MEGAPIXELS
from stylenet.export import load_generator_bytes, psnr
from stylenet.fast import JohnsonEngine
from stylenet.imageio import image_to_tensor, load_image, resize_max
from stylenet.tiling import tile_threshold
from tests.conftest import ASSET_PHOTOS
from worker.cache import GeneratorCache
from worker.settings import WorkerSettings


def _copy_style(src_store: Path, dst_store: Path, new_id: str) -> None:
    src = src_store / "tiny" / "1"
    manifest = (src / "manifest.json").read_text().replace('"id": "tiny"', f'"id": "{new_id}"')
    (dst_store / new_id / "1").mkdir(parents=True)
    for f in src.iterdir():
        shutil.copy(f, dst_store / new_id / "1" / f.name)
    (dst_store / new_id / "1" / "manifest.json").write_text(manifest)


def test_lru_eviction_and_hits(tmp_path: Path, tiny_store: Path) -> None:
    for name in ["a", "b", "c"]:
        _copy_style(tiny_store, tmp_path, name)
    loads: list[str] = []
    cache = GeneratorCache(
        Catalog([StyleStore(tmp_path)]), torch.device("cpu"), capacity=2, on_load=lambda r, s: loads.append(r)
    )
    a1, _ = cache.get("a")
    a2, _ = cache.get("a@1")
    assert a1 is a2 and loads == ["a@1"]
    cache.get("b")
    cache.get("a")  # a is now the most recent
    cache.get("c")  # evicts b
    assert cache.keys() == [("a", 1), ("c", 1)]
    cache.get("b")
    assert loads == ["a@1", "b@1", "c@1", "b@1"]


def test_new_version_is_picked_up_without_restart(tmp_path: Path, tiny_store: Path) -> None:
    store = StyleStore(tmp_path)
    shutil.copytree(tiny_store / "tiny", tmp_path / "tiny")
    cache = GeneratorCache(Catalog([store]), torch.device("cpu"))
    _, first = cache.get("tiny")
    resolved = store.get("tiny", 1)
    store.publish(resolved.manifest, {"generator.ts": resolved.artifact_path, "preview.jpg": b"x"})
    _, second = cache.get("tiny")
    assert (first.manifest.version, second.manifest.version) == (1, 2)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(cache.get("tiny@1")[0](x), cache.get("tiny@2")[0](x))


def test_a_style_deleted_and_trained_again_is_loaded_afresh(tmp_path: Path, tiny_store: Path) -> None:
    """Deleting a style and publishing another under its id gives version 1 again: the cache
    must serve the new generator, not the deleted one it holds under the same id@version."""
    from model_store.manifest import StyleManifest
    from stylenet.config import GeneratorConfig
    from stylenet.export import ARTIFACT_FILE, export_generator
    from stylenet.generator import build_generator

    store = StyleStore(tmp_path / "store")
    shutil.copytree(tiny_store / "tiny", tmp_path / "store" / "tiny")
    loads: list[str] = []
    cache = GeneratorCache(Catalog([store]), torch.device("cpu"), on_load=lambda r, s: loads.append(r))
    x = torch.rand(1, 3, 16, 16)
    old, _ = cache.get("tiny")
    assert cache.get("tiny")[0] is old  # a hit while nothing changes
    with torch.no_grad():
        before = old(x)
    assert store.delete("tiny") == [1]
    cfg = GeneratorConfig(width=0.25, residual_blocks=1)
    torch.manual_seed(1)  # other weights than the deleted style's
    export_generator(build_generator(cfg).eval(), tmp_path / ARTIFACT_FILE)
    manifest = StyleManifest(id="tiny", generator=cfg.to_dict(), norm=cfg.norm)
    store.publish(manifest, {ARTIFACT_FILE: tmp_path / ARTIFACT_FILE, "preview.jpg": b"x"})
    new, resolved = cache.get("tiny")
    assert resolved.manifest.version == 1 and loads == ["tiny@1", "tiny@1"]
    assert new is not old and cache.keys() == [("tiny", 1)]
    with torch.no_grad():
        assert (new(x) - before).abs().max() > 1e-3
        torch.testing.assert_close(new(x), load_generator_bytes(resolved.read_artifact())(x), atol=0.05, rtol=0)


def test_worker_context_warms_configured_styles(tiny_store: Path) -> None:
    import fakeredis

    from instyle.protocol import MODEL_LOAD_KEY
    from worker.context import build_context
    from worker.settings import WorkerSettings

    redis = fakeredis.FakeRedis()
    ctx = build_context(WorkerSettings(store=tiny_store, warm_styles="tiny", device="cpu"), redis)  # type: ignore[arg-type]
    assert ctx.cache.keys() == [("tiny", 1)]
    assert float(redis.hget(MODEL_LOAD_KEY, "tiny@1")) > 0  # type: ignore[arg-type]


def test_cache_serves_fast_engines_at_the_configured_precision() -> None:
    catalog = open_catalog(None)
    fp32, _ = GeneratorCache(catalog, torch.device("cpu"), precision="fp32").get("starry-night")
    auto, resolved = GeneratorCache(catalog, torch.device("cpu")).get("starry-night")
    assert isinstance(fp32, JohnsonEngine) and fp32.precision == "fp32"
    assert isinstance(auto, JohnsonEngine) and auto.probe_psnr_db >= 40.0
    x = image_to_tensor(resize_max(load_image(ASSET_PHOTOS / "skimage_coffee.jpg"), 96)).unsqueeze(0)
    with torch.inference_mode():
        assert psnr(fp32(x), load_generator_bytes(resolved.read_artifact())(x)) > 80.0


def test_worker_settings_read_precision_and_tiling_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSTYLE_PRECISION", "fp32")
    monkeypatch.setenv("INSTYLE_TILE_MEGAPIXELS", "0.5")
    settings = WorkerSettings()
    assert settings.precision == "fp32" and tile_threshold(settings.tile_megapixels, "cpu") == 500_000
    monkeypatch.setenv("INSTYLE_TILE_MEGAPIXELS", "")  # what docker-compose.yml passes when unset
    assert tile_threshold(WorkerSettings().tile_megapixels, "cpu") == int(TILE_MEGAPIXELS * 1_000_000)
    monkeypatch.setenv("INSTYLE_PRECISION", "int8")
    with pytest.raises(pydantic.ValidationError):
        WorkerSettings()


def test_worker_context_sizes_the_buffer_arena(tiny_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fakeredis

    from stylenet import buffers
    from worker.context import build_context

    monkeypatch.setattr(buffers, "_pool", None)  # the process's arena is put back afterwards
    monkeypatch.setattr(buffers, "_configured", False)
    redis = fakeredis.FakeRedis()
    monkeypatch.setenv("INSTYLE_BUFFER_POOL_MB", "64")
    build_context(WorkerSettings(store=tiny_store, device="cpu"), redis)  # type: ignore[arg-type]
    pool = buffers.pool()
    assert pool is not None and pool.capacity == 64 << 20
    monkeypatch.setenv("INSTYLE_BUFFER_POOL_MB", "0")
    build_context(WorkerSettings(store=tiny_store, device="cpu"), redis)  # type: ignore[arg-type]
    assert buffers.pool() is None
    monkeypatch.setenv("INSTYLE_BUFFER_POOL_MB", "-5")
    with pytest.raises(pydantic.ValidationError):
        WorkerSettings()


def test_a_generator_that_matches_its_sha256_but_does_not_load_is_corrupt(tmp_path: Path, tiny_store: Path) -> None:
    """A truncated file re-hashed into its manifest failed the job as ``internal`` with torch's
    message; it is ``artifact_corrupt`` as any other damaged style."""
    import hashlib
    import json

    from model_store.exceptions import ArtifactCorrupt

    _copy_style(tiny_store, tmp_path, "broken")
    version = tmp_path / "broken" / "1"
    artifact = version / "generator.ts"
    artifact.write_bytes(artifact.read_bytes()[:1000])
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["artifact"]["sha256"] = hashlib.sha256(artifact.read_bytes()).hexdigest()
    (version / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactCorrupt, match="does not load"):
        GeneratorCache(Catalog([StyleStore(tmp_path)]), torch.device("cpu")).get("broken")
