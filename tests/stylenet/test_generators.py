from __future__ import annotations

import pytest
import torch

from stylenet.config import GeneratorConfig
from stylenet.generator import build_generator, count_parameters

ARCHS = ["johnson", "ulyanov"]
NORMS = ["instance", "batch", "instance-frozen"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("size", [(97, 131), (33, 20), (5, 7), (64, 64)])
def test_output_has_input_size_and_image_range(arch: str, norm: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_generator(GeneratorConfig(arch=arch, norm=norm, width=0.25 if arch == "johnson" else 1.0))
    x = torch.rand(2, 3, *size)
    for mode in (True, False):
        model.train(mode)
        with torch.no_grad():
            y = model(x)
        assert y.shape == x.shape
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


@pytest.mark.parametrize("upsample", ["nearest", "deconv"])
@pytest.mark.parametrize("padding", ["reflect", "replicate", "zero"])
def test_johnson_variants(upsample: str, padding: str) -> None:
    model = build_generator(GeneratorConfig(upsample=upsample, padding=padding, width=0.25)).eval()  # type: ignore[arg-type]
    assert model(torch.rand(1, 3, 41, 29)).shape == (1, 3, 41, 29)


def test_johnson_has_published_size() -> None:
    # c9s1-32, d64, d128, 5 x R128, u64, u32, c9s1-3 with affine norms: 1.68 M parameters.
    assert count_parameters(build_generator(GeneratorConfig())) == 1_679_235


def test_ulyanov_channels_grow_per_scale() -> None:
    cfg = GeneratorConfig(arch="ulyanov", scales=6, channels_per_scale=8)
    model = build_generator(cfg)
    body = model.body
    assert len(body.stages) == 5
    assert body.to_rgb.in_channels == 8 * 6
    # the finest stage merges 5 * 8 coarse channels with 8 new ones
    assert body.stages[-1].merge[0][1].in_channels == 48


def test_ulyanov_noise_channels() -> None:
    model = build_generator(GeneratorConfig(arch="ulyanov", noise_channels=2, scales=3)).eval()
    x = torch.rand(1, 3, 20, 24)
    a, b = model(x), model(x)
    assert a.shape == x.shape
    assert not torch.equal(a, b)  # the noise is resampled on every call


def test_width_multiplier_scales_channels() -> None:
    small = count_parameters(build_generator(GeneratorConfig(width=0.5)))
    full = count_parameters(build_generator(GeneratorConfig()))
    assert 0.2 * full < small < 0.3 * full


def test_config_round_trip_and_validation() -> None:
    cfg = GeneratorConfig(arch="ulyanov", norm="batch", width=0.5, scales=4)
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="norm must be one of"):
        GeneratorConfig(norm="layer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="arch"):
        GeneratorConfig(arch="unet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="width"):
        GeneratorConfig(width=0)
    with pytest.raises(ValueError, match="unknown generator config keys"):
        GeneratorConfig.from_dict({"arch": "johnson", "depth": 3})
