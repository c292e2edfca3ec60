from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from stylenet.config import GeneratorConfig
from stylenet.exceptions import ExportMismatch
from stylenet.export import export_generator, load_generator, psnr
from stylenet.generator import build_generator
from tests.conftest import REPO


def _trained_like(cfg: GeneratorConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_generator(cfg)
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 32, 32))  # moves batch-norm running statistics off their defaults
    return model


@pytest.mark.parametrize("cfg", [GeneratorConfig(width=0.25), GeneratorConfig(arch="ulyanov", norm="batch", scales=4)])
def test_round_trip_equals_eager(tmp_path: Path, cfg: GeneratorConfig) -> None:
    model = _trained_like(cfg)
    info = export_generator(model, tmp_path / "g.ts")
    assert model.training  # the caller's model is left as it was
    assert info["format"] == "torchscript" and len(str(info["sha256"])) == 64
    loaded = load_generator(tmp_path / "g.ts")
    model.eval()
    for size in [(40, 56), (97, 131)]:
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=0)


def test_fresh_process_loads_with_plain_torch(tmp_path: Path) -> None:
    model = _trained_like(GeneratorConfig(width=0.25)).eval()
    export_generator(model, tmp_path / "g.ts")
    x = torch.rand(1, 3, 45, 61)
    with torch.no_grad():
        torch.save({"x": x, "y": model(x)}, tmp_path / "io.pt")
    code = (
        "import sys, torch\n"
        "m = torch.jit.load(sys.argv[1]); d = torch.load(sys.argv[2])\n"
        "with torch.no_grad(): y = m(d['x'])\n"
        "ours = {'stylenet', 'model_store', 'instyle'}\n"
        "assert not ours & {n.split('.')[0] for n in sys.modules}, 'project imported'\n"
        "print(float((y - d['y']).abs().max()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code, str(tmp_path / "g.ts"), str(tmp_path / "io.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert float(out.stdout.strip()) < 1e-5


def test_mismatch_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    # noise channels make every call differ, so the exported module cannot reproduce the eager one
    model = _trained_like(GeneratorConfig(arch="ulyanov", noise_channels=1, scales=3))
    with pytest.raises(ExportMismatch, match="differs"):
        export_generator(model, tmp_path / "g.ts")
    assert not (tmp_path / "g.ts").exists()


def test_half_precision_weights(tmp_path: Path) -> None:
    model = _trained_like(GeneratorConfig(width=0.5)).eval()
    info = export_generator(model, tmp_path / "full.ts")
    half = export_generator(model, tmp_path / "half.ts", half=True)
    assert half["weights_dtype"] == "float16" and float(half["psnr_db"]) >= 40.0
    assert (tmp_path / "half.ts").stat().st_size < 0.6 * (tmp_path / "full.ts").stat().st_size
    assert info["weights_dtype"] == "float32"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert psnr(load_generator(tmp_path / "half.ts")(x), model(x)) >= 40.0


def test_psnr() -> None:
    a = torch.zeros(1, 3, 4, 4)
    assert psnr(a, a) == 999.0
    assert psnr(a, a + 0.1) == pytest.approx(20.0)


@pytest.mark.parametrize("arch", ["johnson", "ulyanov"])
def test_exported_code_calls_operators_not_torch_python_functions(arch: str, tmp_path: Path) -> None:
    # Scripting F.interpolate copied torch's whole Python implementation into the artifact,
    # naming operators (e.g. a lanczos mode) that older torch releases lack: a style exported
    # with torch 2.13 then failed to load on the GPU machine's torch 2.11.
    path = tmp_path / "g.ts"
    export_generator(build_generator(GeneratorConfig(arch=arch)).eval(), path)
    with zipfile.ZipFile(path) as z:
        code = "".join(z.read(n).decode() for n in z.namelist() if n.endswith(".py"))
    assert "upsample_nearest2d" in code
    assert "torch/nn/functional" not in code and "lanczos" not in code


def test_shipped_artifacts_are_portable() -> None:
    for artifact in sorted((REPO / "model_store" / "shipped").glob("*/*/generator.ts")):
        with zipfile.ZipFile(artifact) as z:
            code = "".join(z.read(n).decode() for n in z.namelist() if n.endswith(".py"))
        assert "lanczos" not in code and "torch/nn/functional" not in code, artifact
