"""Style ids are slugs; references are ``id`` or ``id@version``."""

from __future__ import annotations

import re

from model_store.exceptions import InvalidStyleId

#: A style id: lowercase letters, digits and dashes, starting with a letter or digit, <= 63 chars.
STYLE_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
#: A version: ASCII digits only (``str.isdigit`` also takes "²" and "١"), at most 9 of them.
VERSION_RE = re.compile(r"[0-9]{1,9}")


def validate_style_id(style_id: str) -> str:
    if not isinstance(style_id, str) or not STYLE_ID_RE.fullmatch(style_id):
        raise InvalidStyleId(
            f"invalid style id {style_id!r}: use 1-63 lowercase letters, digits or dashes, "
            "starting with a letter or digit"
        )
    return style_id


def parse_style_ref(ref: str) -> tuple[str, int | None]:
    """``"starry"`` -> ("starry", None); ``"starry@3"`` -> ("starry", 3)."""
    style_id, sep, version = ref.partition("@")
    validate_style_id(style_id)
    if not sep:
        return style_id, None
    if not VERSION_RE.fullmatch(version) or int(version) < 1:
        raise InvalidStyleId(f"invalid version {version!r} in {ref!r}: expected a positive integer (at most 9 digits)")
    return style_id, int(version)
