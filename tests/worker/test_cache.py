from __future__ import annotations

import shutil
from pathlib import Path

import torch

from model_store.catalog import Catalog, StyleStore
from worker.cache import GeneratorCache


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


def test_worker_context_warms_configured_styles(tiny_store: Path) -> None:
    import fakeredis

    from instyle.protocol import MODEL_LOAD_KEY
    from worker.context import build_context
    from worker.settings import WorkerSettings

    redis = fakeredis.FakeRedis()
    ctx = build_context(WorkerSettings(store=tiny_store, warm_styles="tiny", device="cpu"), redis)  # type: ignore[arg-type]
    assert ctx.cache.keys() == [("tiny", 1)]
    assert float(redis.hget(MODEL_LOAD_KEY, "tiny@1")) > 0  # type: ignore[arg-type]
