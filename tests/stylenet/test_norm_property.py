"""The paper's point as a property: instance norm makes each image's output independent of the
rest of the batch and identical in train and eval mode; batch norm does neither."""

from __future__ import annotations

import pytest
import torch

from stylenet.config import GeneratorConfig
from stylenet.generator import build_generator
from stylenet.norm import make_norm


def _model(arch: str, norm: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_generator(GeneratorConfig(arch=arch, norm=norm, width=0.25 if arch == "johnson" else 1.0, scales=4))  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ["johnson", "ulyanov"])
def test_instance_norm_output_ignores_the_batch_and_the_mode(arch: str) -> None:
    model = _model(arch, "instance")
    x = torch.rand(1, 3, 48, 40)
    others = torch.rand(3, 3, 48, 40) * 0.3
    with torch.no_grad():
        model.train()
        alone = model(x)
        in_batch = model(torch.cat([x, others]))[:1]
        model.eval()
        in_eval = model(x)
    torch.testing.assert_close(in_batch, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(in_eval, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["johnson", "ulyanov"])
def test_batch_norm_output_depends_on_the_batch_and_the_mode(arch: str) -> None:
    model = _model(arch, "batch")
    x = torch.rand(1, 3, 48, 40)
    others = torch.rand(3, 3, 48, 40) * 0.3
    with torch.no_grad():
        model.train()
        a = model(torch.cat([x, torch.rand(1, 3, 48, 40)]))[:1]
        b = model(torch.cat([x, others]))[:1]
        model.eval()
        c = model(x)
    assert float((a - b).abs().max()) > 1e-3
    assert float((a - c).abs().max()) > 1e-3


def test_instance_frozen_uses_running_statistics_in_eval() -> None:
    model = _model("johnson", "instance-frozen")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(torch.rand(2, 3, 32, 32))
        trained_mode = model(x)
        alone_in_batch = model(torch.cat([x, torch.rand(1, 3, 32, 32)]))[:1]
        model.eval()
        frozen = model(x)
    torch.testing.assert_close(alone_in_batch, trained_mode, atol=1e-5, rtol=0)  # per-image stats in training
    assert float((frozen - trained_mode).abs().max()) > 1e-3  # frozen stats at test time


@pytest.mark.parametrize("arch", ["johnson", "ulyanov"])
def test_instance_and_instance_frozen_train_identically(arch: str) -> None:
    """Why the ablation trains instance and instance-frozen once: tracking running statistics
    changes nothing while training -- same outputs, same gradients, step after step."""
    tracked, plain = _model(arch, "instance-frozen"), _model(arch, "instance")
    plain.load_state_dict(
        {
            k: v
            for k, v in tracked.state_dict().items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        }
    )
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in (tracked, plain)]
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.rand(2, 3, 32, 32, generator=g)
        for model, opt in zip((tracked, plain), opts, strict=True):
            model.train()
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for (name, a), b in zip(tracked.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


def test_norm_factory() -> None:
    inst = make_norm("instance", 4)
    assert isinstance(inst, torch.nn.InstanceNorm2d) and inst.affine and not inst.track_running_stats
    frozen = make_norm("instance-frozen", 4)
    assert isinstance(frozen, torch.nn.InstanceNorm2d) and frozen.track_running_stats
    assert isinstance(make_norm("batch", 4), torch.nn.BatchNorm2d)
    with pytest.raises(ValueError):
        make_norm("group", 4)  # type: ignore[arg-type]
