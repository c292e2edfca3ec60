"""Argument types the benchmark scripts share: a bad value is argparse's one-line error (exit 2)
before anything is measured, not a traceback after minutes of it."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from instyle.cli import positive_int

__all__ = ["key_value", "positive_int", "positive_ints", "shipped_style", "write_results"]

SHIPPED_STYLES = Path(__file__).resolve().parents[1] / "model_store" / "shipped"


def positive_ints(text: str) -> list[int]:
    """A comma-separated list of positive integers (``--sizes 256,512``)."""
    values = [positive_int(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (``--env``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def shipped_style(name: str) -> str:
    """The id of a style shipped in ``model_store/shipped``."""
    if not (SHIPPED_STYLES / name).is_dir():
        known = ", ".join(sorted(p.name for p in SHIPPED_STYLES.iterdir() if p.is_dir()))
        raise argparse.ArgumentTypeError(f"no shipped style {name!r}; shipped: {known}")
    return name


def write_results(out: Path, benchmark: str, argv: list[str] | None, rows: list[dict[str, Any]], **extra: Any) -> None:
    """Write a benchmark's rows as JSON with what produced them (command, date, machine)."""
    from benchmarks.inference import machine

    result = {
        "benchmark": benchmark,
        "command": f"python benchmarks/{benchmark}.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **extra,
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {out}")
