"""The README's settings table against the settings classes: every variable listed, none made
up, and the defaults it states the code's."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic_core import PydanticUndefined

from service.settings import ServiceSettings
from worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[1]


def settings_rows() -> dict[str, str]:
    """Variable -> the default the README's "Settings" table states for it."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Settings", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`INSTYLE_"):
            continue
        names = re.findall(r"`(INSTYLE_[A-Z_]+)`", cells[0])
        defaults = cells[1].split(", ") if len(names) > 1 else [cells[1]]
        assert len(defaults) == len(names), line
        rows.update(zip(names, defaults, strict=True))
    return rows


def code_settings() -> dict[str, object]:
    """Variable -> its default in the settings classes (``PydanticUndefined``: a factory's)."""
    found: dict[str, object] = {}
    for cls in (ServiceSettings, WorkerSettings):
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            found[(prefix + name).upper()] = field.default
    return found


def stated(default: object) -> str | None:
    """How the table writes a plain default (None: a default it describes in words)."""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, int):
        return str(default)
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, str):
        return f"`{default}`"
    return None


def test_every_setting_is_in_the_readme_table_with_its_default() -> None:
    rows, code = settings_rows(), code_settings()
    assert sorted(code) == sorted(rows), "README's Settings table and the settings classes differ"
    for name, default in code.items():
        if default is None or default is PydanticUndefined:
            continue
        assert stated(default) in (rows[name], None), f"{name}: README says {rows[name]}, the code {default!r}"
