"""Listing, resolving, publishing and deleting styles across stores (torch-free).

A ``Catalog`` stacks stores: the read-only shipped styles first, then the writable store
(``INSTYLE_STORE``). Versions are positive integers; ``latest`` is the highest version of an id
in any store, so retraining a shipped style publishes a new version in the writable store.

Publishing writes every file into a hidden temporary folder next to its destination and renames
it into place, so a reader never sees half a style; a crash leaves only a hidden folder, which
listing ignores and ``cleanup`` removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from model_store.exceptions import ArtifactCorrupt, StoreError, StyleExists, StyleNotFound, StyleReadOnly
from model_store.ids import STYLE_ID_RE, VERSION_RE, parse_style_ref, validate_style_id
from model_store.manifest import MANIFEST_FILE, StyleManifest

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"


@dataclass(frozen=True)
class ResolvedStyle:
    """One style version on disk."""

    path: Path
    manifest: StyleManifest
    read_only: bool

    @property
    def artifact_path(self) -> Path:
        return self.path / self.manifest.artifact.file

    def file(self, name: str) -> Path:
        """A file of this version by name (e.g. ``preview.jpg``); no path escapes allowed."""
        if "/" in name or "\\" in name or name.startswith("."):
            raise ArtifactCorrupt(f"invalid file name {name!r}")
        return self.path / name

    def read_artifact(self) -> bytes:
        """The generator file's bytes, verified against the manifest's sha256."""
        try:
            data = self.artifact_path.read_bytes()
        except OSError as exc:
            raise ArtifactCorrupt(f"{self.manifest.ref}: cannot read {self.artifact_path}: {exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.manifest.artifact.sha256:
            raise ArtifactCorrupt(
                f"{self.manifest.ref}: {self.artifact_path.name} sha256 {digest[:12]}... does not match "
                f"the manifest's {self.manifest.artifact.sha256[:12]}..."
            )
        return data


@dataclass(frozen=True)
class StyleSummary:
    id: str
    latest: ResolvedStyle
    versions: tuple[int, ...]


class StyleStore:
    """One folder of styles: ``<root>/<id>/<version>/manifest.json``."""

    def __init__(self, root: str | Path, read_only: bool = False) -> None:
        self.root = Path(root)
        self.read_only = read_only
        #: Parsed manifests by path, with the (mtime, size) they were read at: a version's manifest
        #: is written once, so a stylize job's pinned lookup costs one ``stat`` (``find``).
        self._manifests: dict[Path, tuple[tuple[int, int], ResolvedStyle]] = {}

    def __repr__(self) -> str:
        return f"StyleStore({str(self.root)!r}, read_only={self.read_only})"

    def style_ids(self) -> list[str]:
        """The ids with at least one version; other folders (hidden ones, a volume's
        ``lost+found``, anything whose name is not a style id) are not styles and are skipped."""
        if not self.root.is_dir():
            return []
        ids = []
        for entry in self.root.iterdir():
            if STYLE_ID_RE.fullmatch(entry.name) and entry.is_dir() and self.versions(entry.name):
                ids.append(entry.name)
        return sorted(ids)

    def versions(self, style_id: str) -> list[int]:
        folder = self.root / validate_style_id(style_id)
        if not folder.is_dir():
            return []
        return sorted(
            int(v.name) for v in folder.iterdir() if VERSION_RE.fullmatch(v.name) and (v / MANIFEST_FILE).is_file()
        )

    def get(self, style_id: str, version: int) -> ResolvedStyle:
        found = self.find(style_id, version)
        if found is None:
            raise StyleNotFound(f"style {style_id}@{version} not found")
        return found

    def find(self, style_id: str, version: int) -> ResolvedStyle | None:
        """``style_id@version`` in this store, or ``None`` where it has no such version."""
        path = self.root / validate_style_id(style_id) / str(version)
        manifest_path = path / MANIFEST_FILE
        try:
            st = manifest_path.stat()
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        seen = (st.st_mtime_ns, st.st_size)
        cached = self._manifests.get(manifest_path)
        if cached is not None and cached[0] == seen:
            return cached[1]
        try:
            manifest = StyleManifest.model_validate_json(manifest_path.read_bytes())
        except (OSError, ValidationError) as exc:
            raise ArtifactCorrupt(f"{manifest_path}: unreadable manifest: {exc}") from exc
        if manifest.id != style_id or manifest.version != version:
            raise ArtifactCorrupt(f"{manifest_path} describes {manifest.ref}, not {style_id}@{version}")
        resolved = ResolvedStyle(path=path, manifest=manifest, read_only=self.read_only)
        self._manifests[manifest_path] = (seen, resolved)
        return resolved

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def publish(
        self, manifest: StyleManifest, files: Mapping[str, bytes | Path], min_version: int = 1, first: bool = False
    ) -> ResolvedStyle:
        """Atomically add a new version of ``manifest.id`` holding ``files`` and the manifest.

        ``files`` must contain the artifact named by ``manifest.artifact.file``; its sha256 and
        size are written into the manifest here, from the bytes actually stored. ``first``: only
        as the style's first version (``min_version`` 1, none here), checked under the store's
        lock, else ``StyleExists``.
        """
        if self.read_only:
            raise StyleReadOnly(f"store {self.root} is read-only")
        style_id = validate_style_id(manifest.id)
        if manifest.artifact.file not in files:
            raise StoreError(f"publish: the artifact {manifest.artifact.file!r} is not among the files")
        folder = self.root / style_id
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            for name, content in files.items():
                if "/" in name or name.startswith(".") or name == MANIFEST_FILE:
                    raise StoreError(f"publish: invalid file name {name!r}")
                data = content.read_bytes() if isinstance(content, Path) else content
                _write_synced(tmp / name, data)
            artifact = (tmp / manifest.artifact.file).read_bytes()
            with self._lock():
                if first and (min_version > 1 or self.versions(style_id)):
                    raise StyleExists(f"style {style_id!r} exists (published meanwhile)")
                version = max([min_version - 1, *self.versions(style_id)]) + 1
                final = manifest.model_copy(
                    update={
                        "version": version,
                        "artifact": manifest.artifact.model_copy(
                            update={"sha256": hashlib.sha256(artifact).hexdigest(), "bytes": len(artifact)}
                        ),
                    }
                )
                _write_synced(tmp / MANIFEST_FILE, final.model_dump_json(indent=2).encode())
                os.rename(tmp, folder / str(version))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(folder)
        return self.get(style_id, version)

    def delete(self, style_id: str, version: int | None = None) -> list[int]:
        """Remove one version (or all) of a style; returns the versions removed."""
        if self.read_only:
            raise StyleReadOnly(f"style {style_id} is shipped with instyle and cannot be deleted")
        versions = self.versions(style_id)
        targets = versions if version is None else [v for v in versions if v == version]
        if not targets:
            raise StyleNotFound(f"style {style_id}{'' if version is None else f'@{version}'} not found")
        folder = self.root / style_id
        for v in targets:
            trash = folder / f"{TRASH_PREFIX}{uuid.uuid4().hex}"
            os.rename(folder / str(v), trash)  # disappears atomically, then is removed
            shutil.rmtree(trash, ignore_errors=True)
        if not self.versions(style_id):
            shutil.rmtree(folder, ignore_errors=True)
        return targets

    def cleanup(self) -> int:
        """Remove leftovers of interrupted publishes/deletes; returns how many were removed."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for style_dir in self.root.iterdir():  # not lost+found: root's, unreadable to others
            if not STYLE_ID_RE.fullmatch(style_dir.name) or not style_dir.is_dir():
                continue
            for entry in style_dir.iterdir():
                if entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
        return removed


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Catalog:
    """Read-only stores (shipped styles) stacked with at most one writable store."""

    def __init__(self, stores: list[StyleStore]) -> None:
        writable = [s for s in stores if not s.read_only]
        if len(writable) > 1:
            raise StoreError("a catalog takes at most one writable store")
        self.stores = stores
        self.writable = writable[0] if writable else None

    def _locations(self, style_id: str) -> list[tuple[int, StyleStore]]:
        return sorted((v, s) for s in self.stores for v in s.versions(style_id)) if self.stores else []

    def versions(self, style_id: str) -> list[int]:
        return [v for v, _ in self._locations(style_id)]

    def resolve(self, ref: str) -> ResolvedStyle:
        """``id`` (latest version) or ``id@version`` -> the style on disk."""
        style_id, version = parse_style_ref(ref)
        if version is not None:
            # pinned (every stylize job's ref): one stat per store, no listing; a version lives
            # in one store only (publish numbers versions across the catalog)
            for s in self.stores:
                found = s.find(style_id, version)
                if found is not None:
                    return found
        locations = self._locations(style_id)
        if not locations:
            raise StyleNotFound(f"unknown style {style_id!r}")
        if version is None:
            version, store = locations[-1]
        else:
            match = [s for v, s in locations if v == version]
            if not match:
                have = ", ".join(str(v) for v, _ in locations)
                raise StyleNotFound(f"style {style_id!r} has no version {version} (versions: {have})")
            store = match[0]
        return store.get(style_id, version)

    def styles(self) -> list[StyleSummary]:
        ids = sorted({i for s in self.stores for i in s.style_ids()})
        summaries = []
        for style_id in ids:
            try:
                latest = self.resolve(style_id)
            except StoreError:
                continue  # a broken style must not hide the others
            summaries.append(StyleSummary(id=style_id, latest=latest, versions=tuple(self.versions(style_id))))
        return summaries

    def publish(
        self, manifest: StyleManifest, files: Mapping[str, bytes | Path], replace: bool = True
    ) -> ResolvedStyle:
        """``manifest.id``'s next version, in the writable store; with ``replace=False`` only
        as its first (``StyleExists`` if it has versions in any store)."""
        if self.writable is None:
            raise StyleReadOnly("no writable style store configured (set INSTYLE_STORE)")
        existing = self.versions(manifest.id)
        min_version = (max(existing) + 1) if existing else 1  # over a shipped one: ``first`` refuses it
        return self.writable.publish(manifest, files, min_version=min_version, first=not replace)

    def delete(self, style_id: str, version: int | None = None) -> list[int]:
        if self.writable is None or not self.writable.versions(style_id):
            if self.versions(style_id):
                raise StyleReadOnly(f"style {style_id} is shipped with instyle and cannot be deleted")
            raise StyleNotFound(f"unknown style {style_id!r}")
        shipped_only = version not in self.writable.versions(style_id) and version in self.versions(style_id)
        if version is not None and shipped_only:
            raise StyleReadOnly(f"style {style_id}@{version} is shipped with instyle and cannot be deleted")
        return self.writable.delete(style_id, version)
