"""Export a trained generator to a deployable artifact, checked against the eager model.

The format lives behind this module (and ``model_store``) and is recorded in each manifest, so a
later move from TorchScript (deprecated upstream) to ``torch.export`` touches two modules.
"""

from __future__ import annotations

import copy
import hashlib
import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from stylenet.exceptions import ExportMismatch, InvalidArtifact

ARTIFACT_FORMAT = "torchscript"
ARTIFACT_FILE = "generator.ts"
#: (H, W) sizes at which the exported module must reproduce the eager one.
CHECK_SIZES: tuple[tuple[int, int], ...] = ((64, 80), (97, 131))
#: Max abs difference (pixels in [0, 1]) tolerated between eager and exported outputs (fp32).
EXPORT_ATOL = 1e-4


#: PSNR reported for identical images (keeps numbers finite for JSON).
PSNR_IDENTICAL = 999.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two images in [0, 1] (``PSNR_IDENTICAL`` when equal)."""
    mse = float((a.float() - b.float()).pow(2).mean())
    return PSNR_IDENTICAL if mse == 0 else min(PSNR_IDENTICAL, 10.0 * math.log10(1.0 / mse))


def _script(model: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(model)


def _check_inputs(seed: int, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, h, w, generator=g) for h, w in sizes]


@torch.no_grad()
def export_generator(
    model: nn.Module,
    path: str | Path,
    *,
    half: bool = False,
    check_sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
    atol: float = EXPORT_ATOL,
    min_psnr: float = 40.0,
) -> dict[str, float | str]:
    """Script ``model`` in eval mode on CPU, save it to ``path``, and verify the saved file.

    The saved module is loaded back and run at each of ``check_sizes``; its output must match
    the eager fp32 model within ``atol`` (or, with ``half=True`` -- fp16 weights, cast back to
    fp32 on load -- reach ``min_psnr`` dB). A mismatch raises ``ExportMismatch`` and nothing
    is left at ``path``. Returns the sha256 and the check's worst error / PSNR.
    """
    eager = copy.deepcopy(model).float().cpu().eval()
    candidate = copy.deepcopy(eager)
    if half:
        # Round the weights to fp16 and back: the file stores them in half precision and the
        # module computes in fp32, so any device runs it.
        for p in candidate.parameters():
            p.copy_(p.half().float())
    buf = io.BytesIO()
    torch.jit.save(_script(copy.deepcopy(candidate).half() if half else candidate), buf)
    data = buf.getvalue()
    loaded = load_generator_bytes(data)
    worst, worst_psnr = 0.0, PSNR_IDENTICAL
    for x in _check_inputs(0, check_sizes):
        ref = eager(x)
        got = loaded(x)
        if got.shape != ref.shape:
            raise ExportMismatch(f"exported output shape {tuple(got.shape)} != eager {tuple(ref.shape)}")
        if not (torch.isfinite(got).all() and torch.isfinite(ref).all()):  # max() and min() skip NaN
            raise ExportMismatch("the generator's output is not finite (NaN or infinite): its weights are broken")
        worst = max(worst, float((got - ref).abs().max()))
        worst_psnr = min(worst_psnr, psnr(got, ref))
    if (not half and worst > atol) or (half and worst_psnr < min_psnr):
        raise ExportMismatch(
            f"exported generator differs from the eager model: max |diff| {worst:.3g}, PSNR {worst_psnr:.1f} dB"
        )
    target = Path(path)
    target.write_bytes(data)
    return {
        "format": ARTIFACT_FORMAT,
        "sha256": hashlib.sha256(data).hexdigest(),
        "max_abs_diff": worst,
        "psnr_db": worst_psnr,
        "weights_dtype": "float16" if half else "float32",
    }


def _float32(module: torch.jit.ScriptModule) -> nn.Module:
    first = next(iter(module.parameters()), None)
    if first is not None and first.dtype == torch.float16:
        module = module.float()
    return module


def load_generator_bytes(data: bytes, device: str | torch.device = "cpu") -> nn.Module:
    """Load an exported generator from bytes, in eval mode, computing in fp32; ``InvalidArtifact``
    when they do not load."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            module = torch.jit.load(io.BytesIO(data), map_location=device)
        except torch.cuda.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError, EOFError, KeyError, IndexError, TypeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidArtifact(f"not a loadable TorchScript generator: {reason}") from exc
    return _float32(module).eval()


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load an exported generator file, in eval mode, computing in fp32."""
    return load_generator_bytes(Path(path).read_bytes(), device)
