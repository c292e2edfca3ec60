"""Where styles live: the read-only styles shipped in this repository, plus the writable store."""

from __future__ import annotations

import os
from pathlib import Path

from model_store.catalog import Catalog, StyleStore

#: Styles trained by the project and committed to the repository (read-only, always listed).
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
#: Default writable store when ``INSTYLE_STORE`` is not set.
DEFAULT_STORE = Path.home() / ".local" / "share" / "instyle" / "styles"


def writable_store_path(store: str | Path | None = None) -> Path:
    """``store`` if given, else ``$INSTYLE_STORE``, else ``~/.local/share/instyle/styles``."""
    if store is not None:
        return Path(store)
    env = os.environ.get("INSTYLE_STORE")
    return Path(env) if env else DEFAULT_STORE


def open_catalog(store: str | Path | None = None, include_shipped: bool = True) -> Catalog:
    """The shipped styles (read-only) stacked with the writable store."""
    stores = [StyleStore(SHIPPED_DIR, read_only=True)] if include_shipped else []
    stores.append(StyleStore(writable_store_path(store)))
    return Catalog(stores)
