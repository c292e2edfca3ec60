from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_store import (
    ArtifactCorrupt,
    Catalog,
    InvalidStyleId,
    StyleManifest,
    StyleNotFound,
    StyleReadOnly,
    StyleStore,
    parse_style_ref,
    validate_style_id,
)
from model_store.catalog import TMP_PREFIX
from model_store.manifest import MANIFEST_FORMAT_VERSION

ARTIFACT = b"\x00generator-bytes\x01" * 10


def _manifest(style_id: str = "starry") -> StyleManifest:
    return StyleManifest(
        id=style_id,
        generator={"arch": "johnson", "norm": "instance"},
        norm="instance",
        recipe={"iterations": 10},
        final_losses={"total": 1.5},
    )


def _files(payload: bytes = ARTIFACT) -> dict[str, bytes | Path]:
    return {"generator.ts": payload, "preview.jpg": b"jpeg"}


@pytest.mark.parametrize("good", ["a", "starry-night", "0abc", "x" * 63, "v2-1"])
def test_valid_slugs(good: str) -> None:
    assert validate_style_id(good) == good


@pytest.mark.parametrize("bad", ["", "../x", "Starry", "-x", "a_b", "a/b", "x" * 64, "a b", "a.b", "..", "é"])
def test_invalid_slugs(bad: str) -> None:
    with pytest.raises(InvalidStyleId):
        validate_style_id(bad)


def test_style_refs() -> None:
    assert parse_style_ref("starry") == ("starry", None)
    assert parse_style_ref("starry@3") == ("starry", 3)
    # Unicode digits pass str.isdigit(): "²" made int() raise (a 500), "١" read as version 1
    for bad in ["starry@0", "starry@x", "starry@", "../x@1", "starry@\u00b2", "starry@\u0661", "starry@1" + "0" * 9]:
        with pytest.raises(InvalidStyleId):
            parse_style_ref(bad)


def test_publish_versions_and_resolve(tmp_path: Path) -> None:
    store = StyleStore(tmp_path)
    first = store.publish(_manifest(), _files())
    second = store.publish(_manifest(), _files(b"other"))
    assert (first.manifest.version, second.manifest.version) == (1, 2)
    catalog = Catalog([store])
    assert catalog.resolve("starry").manifest.version == 2
    assert catalog.resolve("starry@1").read_artifact() == ARTIFACT
    m = catalog.resolve("starry@1").manifest
    assert m.format_version == MANIFEST_FORMAT_VERSION and m.artifact.bytes == len(ARTIFACT)
    assert len(m.artifact.sha256) == 64 and m.created_at.tzinfo is not None
    assert [s.id for s in catalog.styles()] == ["starry"] and catalog.styles()[0].versions == (1, 2)
    with pytest.raises(StyleNotFound, match="no version 7"):
        catalog.resolve("starry@7")
    with pytest.raises(StyleNotFound, match="unknown style"):
        catalog.resolve("nope")


def test_crash_mid_publish_leaves_no_visible_style(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StyleStore(tmp_path)

    def power_cut(src: object, dst: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "rename", power_cut)
    with pytest.raises(OSError, match="power cut"):
        store.publish(_manifest(), _files())
    monkeypatch.undo()
    assert store.style_ids() == [] and Catalog([store]).styles() == []
    assert not list((tmp_path / "starry").glob(f"{TMP_PREFIX}*"))  # the temp folder was removed


def test_half_written_folder_is_invisible_and_cleaned(tmp_path: Path) -> None:
    store = StyleStore(tmp_path)
    partial = tmp_path / "starry" / f"{TMP_PREFIX}abc"
    partial.mkdir(parents=True)
    (partial / "generator.ts").write_bytes(b"half")
    (tmp_path / "starry" / "1").mkdir()  # a version folder without a manifest
    assert store.style_ids() == []
    assert store.cleanup() == 1 and not partial.exists()


def test_folders_that_are_not_style_ids_are_skipped(tmp_path: Path) -> None:
    store = StyleStore(tmp_path)
    store.publish(_manifest(), _files())
    for name in ("lost+found", "Upper", "-dash", "a_b"):  # an ext4 volume's root has lost+found
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "1" / "manifest.json").write_text("{}")
    assert store.style_ids() == ["starry"]
    assert [s.id for s in Catalog([store]).styles()] == ["starry"]
    (tmp_path / "lost+found" / f"{TMP_PREFIX}x").mkdir()  # not ours: never entered (root's, 0700)
    assert store.cleanup() == 0 and (tmp_path / "lost+found" / f"{TMP_PREFIX}x").is_dir()


def test_corrupt_artifact_is_detected(tmp_path: Path) -> None:
    store = StyleStore(tmp_path)
    resolved = store.publish(_manifest(), _files())
    data = bytearray(resolved.artifact_path.read_bytes())
    data[3] ^= 0xFF
    resolved.artifact_path.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupt, match="sha256"):
        store.get("starry", 1).read_artifact()
    resolved.artifact_path.unlink()
    with pytest.raises(ArtifactCorrupt, match="cannot read"):
        store.get("starry", 1).read_artifact()


def test_corrupt_manifest_is_a_domain_error_and_does_not_hide_others(tmp_path: Path) -> None:
    store = StyleStore(tmp_path)
    store.publish(_manifest("good"), _files())
    bad = store.publish(_manifest("bad"), _files())
    (bad.path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactCorrupt, match="unreadable manifest"):
        store.get("bad", 1)
    assert [s.id for s in Catalog([store]).styles()] == ["good"]


def test_delete(tmp_path: Path) -> None:
    store = StyleStore(tmp_path)
    store.publish(_manifest(), _files())
    store.publish(_manifest(), _files())
    catalog = Catalog([store])
    assert catalog.delete("starry", 1) == [1]
    assert catalog.versions("starry") == [2]
    assert catalog.delete("starry") == [2]
    assert catalog.styles() == [] and not (tmp_path / "starry").exists()
    with pytest.raises(StyleNotFound):
        catalog.delete("starry")


def test_shipped_store_is_read_only_and_new_versions_continue(tmp_path: Path) -> None:
    shipped = StyleStore(tmp_path / "shipped")
    shipped.publish(_manifest(), _files())  # how the project writes its shipped styles
    shipped = StyleStore(tmp_path / "shipped", read_only=True)
    catalog = Catalog([shipped, StyleStore(tmp_path / "user")])
    with pytest.raises(StyleReadOnly):
        shipped.publish(_manifest(), _files())
    with pytest.raises(StyleReadOnly, match="shipped"):
        catalog.delete("starry")
    retrained = catalog.publish(_manifest(), _files(b"retrained"))
    assert retrained.manifest.version == 2 and not retrained.read_only
    assert catalog.resolve("starry").read_artifact() == b"retrained"
    assert catalog.resolve("starry@1").read_only
    with pytest.raises(StyleReadOnly, match="starry@1"):  # the shipped version, beside a writable one
        catalog.delete("starry", 1)
    with pytest.raises(StyleNotFound):
        catalog.delete("starry", 3)
    catalog.delete("starry")  # removes only the writable versions
    assert catalog.versions("starry") == [1]


def test_publish_rejects_bad_file_names(tmp_path: Path) -> None:
    store = StyleStore(tmp_path)
    with pytest.raises(Exception, match="invalid file name"):
        store.publish(_manifest(), {"generator.ts": b"x", "../evil": b"y"})
    with pytest.raises(Exception, match="artifact"):
        store.publish(_manifest(), {"preview.jpg": b"y"})
    assert store.style_ids() == []


def test_manifest_catalog_are_torch_free() -> None:
    code = (
        "import sys, model_store, model_store.catalog, model_store.manifest, model_store.shipped\n"
        "model_store.shipped.open_catalog('/nonexistent').styles()\n"
        "assert 'torch' not in sys.modules, 'model_store imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_pinned_ref_resolves_without_listing_and_sees_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``id@version`` (each stylize job's ref) is found with one stat per store, from a parsed
    manifest it keeps while the file is unchanged; a deleted or rewritten version is noticed."""
    shipped = StyleStore(tmp_path / "shipped")
    shipped.publish(_manifest(), _files())
    catalog = Catalog([StyleStore(tmp_path / "shipped", read_only=True), StyleStore(tmp_path / "user")])
    catalog.publish(_manifest(), _files(b"retrained"))
    first = catalog.resolve("starry@2")
    assert catalog.resolve("starry@1").read_only and not first.read_only

    def no_listing(self: StyleStore, style_id: str) -> list[int]:
        raise AssertionError("listed the versions")

    with monkeypatch.context() as m:
        m.setattr(StyleStore, "versions", no_listing)
        assert catalog.resolve("starry@2") is first  # the parsed manifest, kept
        assert catalog.resolve("starry@1").read_artifact() == ARTIFACT
    manifest = first.path / "manifest.json"
    data = json.loads(manifest.read_text())
    data["final_losses"]["total"] = 2.5
    manifest.write_text(json.dumps(data))
    os.utime(manifest, ns=(1, 1))  # a rewrite with another mtime
    assert catalog.resolve("starry@2").manifest.final_losses["total"] == 2.5
    catalog.delete("starry", 2)
    with pytest.raises(StyleNotFound, match="no version 2"):
        catalog.resolve("starry@2")
