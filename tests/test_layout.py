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


def test_compose_file_is_valid() -> None:
    import shutil
    import subprocess

    if shutil.which("docker") is None:
        pytest.skip("docker client not installed")
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("docker compose plugin not installed")
    result = subprocess.run(
        ["docker", "compose", "-f", str(REPO / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_dockerfiles_run_as_non_root() -> None:
    for dockerfile in (REPO / "docker").glob("*.Dockerfile"):
        lines = [line.strip() for line in dockerfile.read_text().splitlines()]
        assert any(line.startswith("FROM ") for line in lines), dockerfile.name
        users = [line for line in lines if line.startswith("USER ")]
        assert users and users[-1] != "USER root", dockerfile.name
        assert any(line.startswith("ENTRYPOINT") for line in lines), dockerfile.name
