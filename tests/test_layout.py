"""The import contract of ARCHITECTURE.md, checked on every module's import statements."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: package -> top-level modules it must never import
FORBIDDEN: dict[str, set[str]] = {
    "stylenet": {"service", "worker", "model_store", "instyle", "redis", "rq", "fastapi", "torchvision"},
    "model_store": {"service", "worker", "stylenet", "instyle", "torch", "torchvision"},
    "service": {"torch", "stylenet", "worker", "torchvision"},
    "worker": {"service", "torchvision"},
    "instyle": {"torchvision"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_contract(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    violations = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in files
        for name in sorted(_imports(path) & FORBIDDEN[package])
    ]
    assert not violations, "\n".join(violations)


def test_top_level_layout() -> None:
    for name in [
        "service",
        "worker",
        "model_store",
        "stylenet",
        "docker",
        "tests",
        "docker-compose.yml",
        "pyproject.toml",
    ]:
        assert (REPO / name).exists(), name
