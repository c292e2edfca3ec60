"""Self-describing style artifacts: manifest, catalog, atomic publish. Torch-free by design.

A style version is a folder ``<store>/<style_id>/<version>/`` holding the exported generator
(see ``stylenet.export``), ``manifest.json`` and thumbnails. The API imports this package, so
nothing here may import torch.
"""

from model_store.catalog import Catalog, ResolvedStyle, StyleStore, StyleSummary
from model_store.exceptions import (
    ArtifactCorrupt,
    InvalidStyleId,
    StoreError,
    StyleNotFound,
    StyleReadOnly,
)
from model_store.ids import parse_style_ref, validate_style_id
from model_store.manifest import MANIFEST_FILE, MANIFEST_FORMAT_VERSION, StyleManifest

__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_FORMAT_VERSION",
    "ArtifactCorrupt",
    "Catalog",
    "InvalidStyleId",
    "ResolvedStyle",
    "StoreError",
    "StyleManifest",
    "StyleNotFound",
    "StyleReadOnly",
    "StyleStore",
    "StyleSummary",
    "parse_style_ref",
    "validate_style_id",
]
