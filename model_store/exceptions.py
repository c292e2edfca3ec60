"""Domain errors of the model store."""

from __future__ import annotations


class StoreError(Exception):
    """Base class for model-store errors."""


class InvalidStyleId(StoreError, ValueError):
    """A style id is not a slug ``[a-z0-9][a-z0-9-]{0,62}`` (or a version is not a positive int)."""


class StyleNotFound(StoreError, LookupError):
    """No such style, or no such version of it."""


class ArtifactCorrupt(StoreError):
    """A style's files are missing, unreadable, or fail their sha256 check."""


class StyleExists(StoreError):
    """Publishing was to make a style's first version, and the style has versions (one was
    published meanwhile)."""


class StyleReadOnly(StoreError):
    """The style lives in a read-only store (shipped styles) and cannot be changed."""
