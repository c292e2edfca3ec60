"""LRU cache of loaded TorchScript generators, keyed by style id and version (and checked
against the artifact's checksum, so that a style deleted and trained again under the same
id@version is loaded afresh)."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from model_store.catalog import Catalog, ResolvedStyle
from model_store.exceptions import ArtifactCorrupt
from stylenet.exceptions import InvalidArtifact
from stylenet.fast import load_engine

log = logging.getLogger(__name__)

LoadListener = Callable[[str, float], None]
#: Called on every lookup with True for a cache hit, False for a miss.
LookupListener = Callable[[bool], None]


class GeneratorCache:
    """Holds up to ``capacity`` generators on ``device``, each as its fast engine.

    A loaded TorchScript artifact becomes a ``stylenet.fast`` engine at ``precision`` (checked
    against the float32 model when loaded); if that fails, the artifact itself serves.

    ``get("id")`` resolves the latest version each time (a directory listing), so a newly
    published version is picked up without a restart; ``get("id@N")`` pins one. Each entry
    remembers the manifest it was loaded from: a style deleted and published again gets its
    version numbers from 1 again, and the same id@version with another artifact (its sha256,
    its creation time) is a miss, loaded afresh in place of the old one.
    """

    def __init__(
        self,
        catalog: Catalog,
        device: torch.device,
        capacity: int = 8,
        on_load: LoadListener | None = None,
        on_lookup: LookupListener | None = None,
        precision: str = "auto",
    ):
        self.catalog = catalog
        self.device = device
        self.precision = precision
        self.capacity = capacity
        self.on_load = on_load
        self.on_lookup = on_lookup
        self._models: OrderedDict[tuple[str, int], tuple[tuple[str, str], nn.Module]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._models)

    def keys(self) -> list[tuple[str, int]]:
        return list(self._models)

    def get(self, style_ref: str) -> tuple[nn.Module, ResolvedStyle]:
        resolved = self.catalog.resolve(style_ref)
        key = (resolved.manifest.id, resolved.manifest.version)
        stamp = (resolved.manifest.artifact.sha256, resolved.manifest.created_at.isoformat())
        model = None
        with self._lock:
            entry = self._models.get(key)
            if entry is not None and entry[0] == stamp:
                model = entry[1]
                self._models.move_to_end(key)
            elif entry is not None:
                del self._models[key]
                log.info("%s was published again with another generator: loading it afresh", resolved.manifest.ref)
        if self.on_lookup is not None:
            self.on_lookup(model is not None)
        if model is not None:
            return model, resolved
        start = time.perf_counter()
        manifest = resolved.manifest
        artifact = resolved.read_artifact()  # ArtifactCorrupt when it does not match its manifest
        try:
            model = load_engine(artifact, manifest.generator, self.device, self.precision, manifest.ref)
        except torch.cuda.OutOfMemoryError:
            raise
        except (InvalidArtifact, RuntimeError, ValueError, EOFError) as exc:  # matches its sha256, does not load
            raise ArtifactCorrupt(f"{manifest.ref}: the generator does not load: {exc}") from exc
        seconds = time.perf_counter() - start
        log.info("loaded %s on %s in %.2f s", resolved.manifest.ref, self.device, seconds)
        if self.on_load is not None:
            self.on_load(resolved.manifest.ref, seconds)
        with self._lock:
            self._models[key] = (stamp, model)
            self._models.move_to_end(key)
            while len(self._models) > self.capacity:
                evicted, _ = self._models.popitem(last=False)
                log.info("evicted %s@%d from the generator cache", *evicted)
        return model, resolved

    def warm(self, style_refs: list[str]) -> None:
        for ref in style_refs:
            self.get(ref)
