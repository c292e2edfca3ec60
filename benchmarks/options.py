"""Argument types the benchmark scripts share: a bad value is argparse's one-line error (exit 2)
before anything is measured, not a traceback after minutes of it."""

from __future__ import annotations

import argparse
from pathlib import Path

SHIPPED_STYLES = Path(__file__).resolve().parents[1] / "model_store" / "shipped"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


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
