from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylenet.exceptions import InvalidImage
from stylenet.imageio import (
    encode_image,
    encode_pixels,
    image_to_tensor,
    load_image,
    load_pixels,
    resize_max,
    resize_pixels,
    tensor_to_image,
    to_rgb,
)


def _bytes(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    loaded = load_image(_bytes(img, "JPEG", exif=exif))
    assert loaded.size == (20, 40)


def test_an_rgb_photo_is_not_copied_and_orientation_applies_once() -> None:
    img = Image.open(io.BytesIO(_bytes(Image.new("RGB", (8, 4), (0, 128, 255)), "JPEG")))
    img.load()
    assert to_rgb(img) is img  # a decoded RGB photo: no copy (load_image's own image)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = Image.open(io.BytesIO(_bytes(Image.new("RGB", (40, 20)), "JPEG", exif=exif)))
    out = to_rgb(rotated)
    assert out.size == (20, 40)
    assert out.getexif().get(0x0112, 1) == 1  # the tag is gone: a second call changes nothing
    assert to_rgb(out).size == (20, 40)


@pytest.mark.parametrize(
    ("img", "fmt", "expected"),
    [
        (Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "PNG", (255, 255, 255)),  # transparent -> white
        (Image.new("LA", (4, 4), (0, 255)), "PNG", (0, 0, 0)),
        (Image.new("CMYK", (4, 4), (0, 0, 0, 0)), "JPEG", (255, 255, 255)),
        (Image.new("I;16", (4, 4), 65535), "PNG", (255, 255, 255)),
        (Image.new("I;16", (4, 4), 200), "PNG", (1, 1, 1)),  # a dark 16-bit photo: was 200 of 255
        (Image.new("F", (4, 4), 0.5), "TIFF", (128, 128, 128)),  # float in [0, 1]: was black
        (Image.new("F", (4, 4), 1000.0), "TIFF", (4, 4, 4)),  # float beyond 255: a 16-bit range
        (Image.new("I", (4, 4), 100), "TIFF", (100, 100, 100)),  # 32-bit ints in 8-bit range
        (Image.new("P", (4, 4), 0), "GIF", (0, 0, 0)),
    ],
)
def test_modes_become_rgb(img: Image.Image, fmt: str, expected: tuple[int, int, int]) -> None:
    out = load_image(_bytes(img, fmt))
    assert out.mode == "RGB"
    assert tuple(np.asarray(out)[0, 0]) == pytest.approx(expected, abs=2)


def test_animated_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert np.asarray(load_image(data))[0, 0, 0] > 200


def test_round_trip_does_not_mutate_and_is_exact() -> None:
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    t = image_to_tensor(img)
    before = t.clone()
    assert t.shape == (3, 5, 7) and t.dtype == torch.float32
    np.testing.assert_array_equal(np.asarray(tensor_to_image(t)), arr)
    torch.testing.assert_close(t, before)
    assert np.asarray(tensor_to_image(t.unsqueeze(0))).shape == (5, 7, 3)


def test_resize_max_and_encode() -> None:
    img = Image.new("RGB", (400, 100))
    assert resize_max(img, 200).size == (200, 50)
    assert resize_max(img, 1000) is img
    for fmt, magic in [("jpeg", b"\xff\xd8"), ("png", b"\x89PNG"), ("webp", b"RIFF")]:
        assert encode_image(img, fmt).startswith(magic)
    with pytest.raises(ValueError):
        encode_image(img, "bmp")


def test_invalid_image() -> None:
    with pytest.raises(InvalidImage, match="cannot decode"):
        load_image(b"nope")


def test_tensor_conversions_round_clamp_and_accept_any_layout() -> None:
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (9, 6, 3), dtype=np.uint8), "RGB")
    t = image_to_tensor(img)
    assert t.is_contiguous()  # callers may view/reshape it
    np.testing.assert_array_equal(t.numpy() * 255.0, np.asarray(img, dtype=np.float32).transpose(2, 0, 1))
    assert image_to_tensor(img.convert("L")).shape == (3, 9, 6)
    values = torch.tensor([-0.5, 0.0, 0.3 / 255, 0.5 / 255, 0.7 / 255, 254.49 / 255, 254.51 / 255, 1.0, 1.7, 3.0])
    x = values.repeat(3, 1, 1)  # (3, 1, 10): clamped to [0, 1], rounded to the nearest byte
    expected = [0, 0, 0, 1, 1, 254, 255, 255, 255, 255]
    assert np.asarray(tensor_to_image(x))[0, :, 0].tolist() == expected
    y = torch.rand(1, 3, 8, 5)
    ref = np.asarray(tensor_to_image(y))
    np.testing.assert_array_equal(np.asarray(tensor_to_image(y.contiguous(memory_format=torch.channels_last))), ref)
    assert np.abs(np.asarray(tensor_to_image(y.bfloat16())).astype(int) - ref).max() <= 1


def test_load_pixels_and_encode_pixels_are_the_image_path() -> None:
    arr = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    data = _bytes(Image.fromarray(arr, "RGB"), "PNG")
    whole = load_pixels(data, 50)  # no larger than max_side: exactly the decoded image
    np.testing.assert_array_equal(whole.numpy(), arr)
    assert encode_pixels(whole, "png") == encode_image(load_image(data), "png")
    pixels = load_pixels(data, 25)  # the long side 50 -> 25, as resize_max sizes it
    assert pixels.dtype == torch.uint8 and pixels.shape == (15, 25, 3)
    expected = np.asarray(resize_max(load_image(data), 25), dtype=np.float64)
    np.testing.assert_array_equal(pixels.numpy(), resize_pixels(whole, (25, 15)).numpy())
    # antialiased bicubic against Pillow's Lanczos, on noise (the hardest case): close
    assert np.abs(pixels.numpy() - expected).mean() < 12


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_to_the_same_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above ``max_side`` a JPEG is decoded at a 1/2^k scale (``Image.draft``) and resized to
    exactly ``resize_max``'s size, close to the full decode's picture; its EXIF orientation
    still applies."""
    from PIL import JpegImagePlugin

    from tests.conftest import ASSET_PHOTOS

    photo = Image.open(ASSET_PHOTOS / "skimage_astronaut.jpg").convert("RGB").resize((400, 300))
    drafts: list[tuple[int, int]] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def draft(self, mode, size):  # type: ignore[no-untyped-def]
        drafts.append(size)
        return real_draft(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", draft)
    for orientation, expected in ((1, (96, 72)), (6, (72, 96))):
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = _bytes(photo, "JPEG", quality=95, exif=exif)
        full = resize_max(load_image(data), 96)
        assert full.size == expected
        pixels = load_pixels(data, 96)
        assert pixels.shape == (expected[1], expected[0], 3)
        a, b = pixels.numpy().astype(np.float64), np.asarray(full, dtype=np.float64)
        assert 10 * np.log10(255**2 / np.mean((a - b) ** 2)) > 30  # the same picture
    assert drafts == [(96, 72), (96, 72)]  # before the orientation: 400x300 decoded at 1/4
    assert load_pixels(data, 400).shape == (400, 300, 3)  # no larger than max_side: decoded whole
    assert len(drafts) == 2


@pytest.mark.parametrize(
    ("mode", "options"), [("RGB", {"progressive": True}), ("L", {}), ("CMYK", {})], ids=["progressive", "grey", "cmyk"]
)
def test_every_kind_of_jpeg_is_reduced_to_resize_maxs_size(mode: str, options: dict[str, object]) -> None:
    from tests.conftest import ASSET_PHOTOS

    photo = Image.open(ASSET_PHOTOS / "skimage_astronaut.jpg").convert(mode).resize((320, 240))
    data = _bytes(photo, "JPEG", quality=90, **options)
    full = np.asarray(resize_max(load_image(data), 75), dtype=np.float64)
    pixels = load_pixels(data, 75).numpy().astype(np.float64)
    assert pixels.shape == full.shape == (56, 75, 3)
    assert 10 * np.log10(255**2 / np.mean((pixels - full) ** 2)) > 28


@pytest.mark.parametrize("orientation", [1, 6, 8])
@pytest.mark.parametrize("size", [(1001, 1008), (1008, 1001)], ids=["tall", "wide"])
def test_a_nearly_square_jpeg_keeps_its_orientation_at_a_reduced_scale(orientation: int, size: tuple[int, int]) -> None:
    """libjpeg's 1/8 scale rounds both sides up: 1001x1008 decodes to a square 126x126, whose
    shape cannot tell which side resize_max makes the long one (119x120, not 120x119)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _bytes(Image.new("RGB", size, (90, 120, 200)), "JPEG", quality=90, exif=exif)
    width, height = resize_max(load_image(data), 120).size
    assert {width, height} == {119, 120}
    assert load_pixels(data, 120).shape == (height, width, 3)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def icc_profile(primaries: tuple[tuple[float, float, float], ...], gamma: float, name: str) -> bytes:
    """A minimal ICC v2 RGB display profile: D50 XYZ primaries, one gamma for every channel."""

    def xyz(v: tuple[float, float, float]) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(_s15(c) for c in v)

    text = name.encode() + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 78  # no Unicode, no ScriptCode
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [
        (b"desc", desc), (b"wtpt", xyz((0.9642, 1.0, 0.8249))), (b"rXYZ", xyz(primaries[0])),
        (b"gXYZ", xyz(primaries[1])), (b"bXYZ", xyz(primaries[2])), (b"rTRC", curve), (b"gTRC", curve),
        (b"bTRC", curve), (b"cprt", b"text\0\0\0\0public domain\0"),
    ]  # fmt: skip
    start = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", start + len(data), len(body))
        data += body
    header = struct.pack(">I4sI4s4s4s", start + len(data), b"lcms", 0x02100000, b"mntr", b"RGB ", b"XYZ ")
    header += b"\0" * 12 + b"acsp" + b"\0" * 28 + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 48
    return header + struct.pack(">I", len(tags)) + table + data


#: sRGB's primaries adapted to D50, with gamma 1: the same colours as sRGB, stored linearly.
LINEAR_SRGB = icc_profile(((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)), 1.0, "lin")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_colours_are_converted_to_srgb_from_an_embedded_profile(fmt: str) -> None:
    """Mid-grey stored linearly is sRGB's 188: a tagged photo read as sRGB lost its colours."""
    from PIL import ImageCms

    grey = Image.new("RGB", (16, 16), (128, 128, 128))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for icc, expected in [(LINEAR_SRGB, 188), (srgb, 128), (None, 128), (b"not a profile", 128)]:
        data = _bytes(grey, fmt, **({"icc_profile": icc} if icc else {}))
        for decoded in (np.asarray(load_image(data)), load_pixels(data).numpy()):
            assert decoded[8, 8] == pytest.approx([expected] * 3, abs=2), (icc and icc[:8], fmt)


@pytest.mark.parametrize(("mode", "fmt"), [("RGBA", "PNG"), ("RGBA", "WEBP"), ("P", "PNG")])
def test_images_with_alpha_or_a_palette_are_converted_to_srgb_too(mode: str, fmt: str) -> None:
    """Only RGB and CMYK were: an RGBA screenshot tagged Display P3 kept its raw values (128),
    a palette image its palette's (153)."""
    grey = Image.new("RGB", (16, 16), (128, 128, 128))
    grey = grey.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else grey.convert(mode)
    data = _bytes(grey, fmt, icc_profile=LINEAR_SRGB)
    assert np.asarray(load_image(data))[8, 8].tolist() == pytest.approx([188] * 3, abs=2)


def test_a_profile_is_judged_by_its_colours_not_its_name() -> None:
    """GIMP names its linear profile "GIMP built-in Linear sRGB": a name containing "sRGB" was
    taken for sRGB, and the photo read 60 levels too dark."""
    grey = Image.new("RGB", (16, 16), (128, 128, 128))
    primaries = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))
    linear = icc_profile(primaries, 1.0, "GIMP built-in Linear sRGB")
    decoded = np.asarray(load_image(_bytes(grey, "PNG", icc_profile=linear)))
    assert decoded[8, 8].tolist() == pytest.approx([188] * 3, abs=2)
    srgb_like = icc_profile(primaries, 2.2, "a display")  # near sRGB, by another name
    decoded = np.asarray(load_image(_bytes(grey, "PNG", icc_profile=srgb_like)))
    assert decoded[8, 8].tolist() == pytest.approx([128] * 3, abs=3)


def test_a_16_bit_grey_png_keeps_its_transparent_value() -> None:
    """A 16-bit grey PNG's tRNS value was dropped on the way to 8 bits: clear pixels came out
    their stored grey instead of white (alpha on white)."""
    pixels = np.full((4, 4), 7 * 257, np.uint16)
    pixels[0, 0] = 40000
    img = Image.fromarray(pixels)
    assert img.mode.startswith("I;16")
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=7 * 257)
    decoded = np.asarray(load_image(buf.getvalue()))
    assert decoded[1, 1].tolist() == [255, 255, 255]
    assert decoded[0, 0].tolist() == [156] * 3  # 40000 / 65535 of 255, opaque


def test_list_images_follows_linked_folders_once(tmp_path: Path) -> None:
    """`--photos` is recursive: a linked folder of photos was skipped (Path.rglob does not enter
    links), so a folder of links found no photos at all."""
    from stylenet.imageio import list_images

    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.PNG", "notes.txt"):
        (real / name).write_bytes(b"x")
    top = tmp_path / "top"
    top.mkdir()
    (top / "set1").symlink_to(real)
    (top / "set2").symlink_to(real / "sub")  # the same folder again, by another link
    (real / "loop").symlink_to(tmp_path)  # a link to a folder above: no endless walk
    found = list_images(top)
    assert [p.relative_to(top).as_posix() for p in found] == ["set1/a.jpg", "set1/sub/b.PNG"]
