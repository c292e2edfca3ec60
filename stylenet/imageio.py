"""The one image <-> tensor path, shared by training, export checks, evaluation and the worker.

Tensors are float32 RGB in [0, 1], shaped (3, H, W) or (N, 3, H, W). No function mutates its
arguments but ``to_rgb``, which takes over the image it is given (``load_image``'s own).
"""

from __future__ import annotations

import functools
import io
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

from stylenet.exceptions import InvalidImage

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


def to_rgb(img: Image.Image) -> Image.Image:
    """EXIF orientation applied; first frame; colours in sRGB (``to_srgb``); palette/LA/CMYK/16-bit/float/alpha
    to RGB (alpha on white).

    Takes ``img`` over (``load_image`` hands it a photo it has just decoded): the orientation
    is applied in place, and an RGB photo comes back as itself. Copying it twice, as
    ``exif_transpose`` and ``convert`` do when they have nothing to change, cost 0.8 of the
    2.2 ms a 512² JPEG took to load (400 MB at 8192²).
    """
    if getattr(img, "is_animated", False):
        img.seek(0)
    ImageOps.exif_transpose(img, in_place=True)
    if img.mode == "P":  # the palette's colours are in the profile's space too: converted next
        icc = img.info.get("icc_profile")
        img = img.convert("RGBA")
        if icc:
            img.info["icc_profile"] = icc
    img = to_srgb(img)
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        key = img.info.get("transparency")
        grey = _grey_bytes(img)
        if isinstance(key, int) and not isinstance(key, bool):  # a tRNS grey value: that one is clear
            alpha = np.where(np.asarray(img) == key, 0, 255).astype(np.uint8)
            img = Image.merge("LA", (Image.fromarray(grey, "L"), Image.fromarray(alpha, "L")))
        else:
            img = Image.fromarray(grey, "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode in ("RGB", "L") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == "RGB" and not getattr(img, "is_animated", False):
        return img  # (an animated one is copied: its frames keep its file open)
    return img.convert("RGB")


def to_srgb(img: Image.Image) -> Image.Image:
    """An RGB or CMYK image tagged with an ICC profile other than sRGB (a phone's Display P3, a
    camera's Adobe RGB, a print CMYK), converted to sRGB: the generators were trained on sRGB
    photos, and their output goes out untagged, which every viewer reads as sRGB. Read as
    sRGB instead, a wide-gamut photo loses its saturation. RGBA images keep their alpha.
    Untagged images and those whose profile is sRGB in effect (whatever its name) come back as
    they are; a profile that does not parse is ignored (logged)."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK"):
        return img
    transform = _srgb_transform(bytes(icc), img.mode)
    if transform is None:
        return img
    out = ImageCms.applyTransform(img, transform)
    assert out is not None  # None only with inPlace=True
    return out


@functools.lru_cache(maxsize=16)
def _srgb_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """The transform from profile ``icc`` to sRGB for ``mode`` images; None for a profile that is
    sRGB in effect (a cube of colours through it comes back within one level: names lie, GIMP's
    "Linear sRGB" is not sRGB) or one that cannot be used. Cached: a phone's photos all carry
    the same profile."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        intent = ImageCms.Intent.RELATIVE_COLORIMETRIC
        transform = ImageCms.buildTransform(profile, srgb, mode, "RGBA" if mode == "RGBA" else "RGB", intent)
        if mode in ("RGB", "RGBA"):
            levels = np.linspace(0, 255, 9).round().astype(np.uint8)
            cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(27, 27, 3)
            probe = Image.fromarray(cube, "RGB").convert(mode)
            through = ImageCms.applyTransform(probe, transform)
            assert through is not None
            if np.abs(np.asarray(through, np.int16) - np.asarray(probe, np.int16)).max() <= 1:
                return None
        return transform
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        log.info("ignoring an embedded ICC profile that cannot be used: %s", exc)
        return None


def _grey_bytes(img: Image.Image) -> np.ndarray:
    """A one-channel image of more than 8 bits, as 8-bit grey.

    ``I;16*`` modes are 16-bit whatever their values (a dark 16-bit photo stays dark); float
    (``F``) images are taken to be in [0, 1] when they fit it, as float pixels conventionally
    are (``convert`` clipped them to 0..1 of 255: black); 32-bit integers (``I``) and larger
    floats by their range: 8-bit values if they fit, else 16-bit.
    """
    arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(arr.max()) if arr.size else 0.0
    if img.mode.startswith("I;16"):
        peak = 65535.0
    elif img.mode == "F" and top <= 1.0:
        peak = 1.0
    else:
        peak = 255.0 if top <= 255 else 65535.0
    return np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)


def load_image(source: str | Path | bytes) -> Image.Image:
    """Decode a file path or raw bytes to an RGB ``PIL.Image`` (see ``to_rgb``)."""
    return _decode(source, None)[0]


#: EXIF orientations that turn the image a quarter (width and height trade places).
_QUARTER_TURNS = frozenset({5, 6, 7, 8})


def _decode(source: str | Path | bytes, max_side: int | None) -> tuple[Image.Image, tuple[int, int] | None]:
    """``load_image``, and the (width, height) ``resize_max(..., max_side)`` will give it, or
    None when it is no larger. A JPEG larger than that is decoded at the smallest of libjpeg's
    1/2, 1/4 and 1/8 scales that still covers it (``Image.draft``)."""
    try:
        opened = Image.open(io.BytesIO(source)) if isinstance(source, bytes) else Image.open(source)
        target = None if max_side is None or max(opened.size) <= max_side else fit_size(opened.size, max_side)
        if target is not None and opened.format == "JPEG":
            opened.draft(opened.mode, target)
        opened.load()
        # the size as stored, turned as to_rgb turns the pixels (the draft's rounding up of both
        # sides can make a nearly square photo square, so its shape cannot tell)
        if target is not None and opened.getexif().get(ExifTags.Base.Orientation) in _QUARTER_TURNS:
            target = (target[1], target[0])
        return to_rgb(opened), target
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        name = "upload" if isinstance(source, bytes) else str(source)
        raise InvalidImage(f"cannot decode {name} as an image: {exc}") from exc


def fit_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(width, height) scaled so that the long side is ``max_side``, as ``resize_max`` rounds it."""
    scale = max_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def resize_max(img: Image.Image, max_side: int | None) -> Image.Image:
    """Downscale (never upscale) so the long side is at most ``max_side`` (Lanczos)."""
    if max_side is None or max(img.size) <= max_side:
        return img
    return img.resize(fit_size(img.size, max_side), Image.Resampling.LANCZOS)


def resize_short(img: Image.Image, short_side: int) -> Image.Image:
    """Resize so the short side is ``short_side`` (Lanczos), keeping the aspect ratio."""
    scale = short_side / min(img.size)
    size = (max(short_side, round(img.width * scale)), max(short_side, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB ``PIL.Image`` -> float32 tensor (3, H, W) in [0, 1]."""
    # uint8 (H, W, 3) -> (3, H, W) while still 1 byte a value, then one float pass: 5x faster
    # than converting in numpy first (0.5 against 2.5 ms at 512²), and the same float32 values
    arr = np.array(img if img.mode == "RGB" else img.convert("RGB"))
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().to(torch.float32).div_(255.0)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) or (1, 3, H, W), any float dtype, in [0, 1] -> RGB ``PIL.Image``
    (values outside are clamped; rounded to the nearest byte)."""
    t = tensor.detach()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {t.shape[0]}")
        t = t[0]
    return Image.fromarray(to_bytes(t).cpu().numpy(), "RGB")


def to_bytes(t: torch.Tensor) -> torch.Tensor:
    """Float (..., 3, H, W) in [0, 1], any float dtype -> uint8 (..., H, W, 3), clamped and
    rounded to the nearest byte: what ``tensor_to_image`` shows."""
    # (H, W, 3) first, so the arithmetic writes the layout PIL wants in one pass (0.7 against
    # 3.3 ms at 512²); clamp(x * 255 + 0.5, 0, 255) truncates to the same bytes as
    # clamp(x, 0, 1) * 255 + 0.5 did
    return t.float().movedim(-3, -1).mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8).contiguous()


def bytes_to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [0, 1] (a channels-last view): the
    values ``image_to_tensor`` gives, which ``to_bytes`` turns back into the same bytes."""
    return pixels.movedim(-1, -3).to(torch.float32).div_(255.0)


def image_bytes(img: Image.Image) -> torch.Tensor:
    """RGB ``PIL.Image`` -> its pixels, uint8 (H, W, 3): a quarter of ``image_to_tensor``'s memory."""
    return torch.from_numpy(np.array(img if img.mode == "RGB" else img.convert("RGB")))


def load_pixels(source: str | Path | bytes, max_side: int | None = None) -> torch.Tensor:
    """``load_image``, downscaled by ``resize_max``, as its pixels: uint8 (H, W, 3).

    A JPEG larger than ``max_side`` is decoded at the smallest of libjpeg's 1/2, 1/4 and 1/8
    scales that still covers the output (``Image.draft``: the scaling is done in the DCT, so the
    skipped pixels are never decoded), then resized to exactly the size ``resize_max`` gives, as
    bytes by torch's antialiased bicubic (``resize_pixels``): a 12 MP photo to 1024 px took
    164 ms and now 36 ms, 53 dB from the full decode and Lanczos resize of ``resize_max`` (46 dB
    to 512 px; a 640x480 photo to 300-64 px, 38-33 dB: libjpeg's DCT scaling and the bicubic are
    a little softer than Lanczos from the full image).
    The decoded image is let go before this returns, so it does not sit beside a generator pass
    that only needs the pixels (Pillow keeps 4 bytes a pixel: 268 MB at 8192²)."""
    img, target = _decode(source, max_side)
    pixels = image_bytes(img)
    del img
    if target is None or (pixels.shape[1], pixels.shape[0]) == target:
        return pixels
    return resize_pixels(pixels, target)


def resize_pixels(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (H, W, 3) -> uint8 (height, width, 3) for ``size`` = (width, height): antialiased
    bicubic, computed on the bytes by torch. 2000x1500 to 1024x768 in 5-6 ms where Pillow's
    Lanczos (``resize_max``) takes 33 ms, 55 dB from it."""
    chw = pixels.permute(2, 0, 1)[None]  # a channels-last view: torch's uint8 kernels take it as is
    out = F.interpolate(chw, size=(size[1], size[0]), mode="bicubic", antialias=True)
    return out[0].permute(1, 2, 0).contiguous()


def encode_pixels(pixels: torch.Tensor, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """uint8 (H, W, 3) pixels -> ``encode_image`` bytes."""
    return encode_image(Image.fromarray(pixels.numpy(), "RGB"), fmt, quality)


#: The longest side each output format can hold (libjpeg: 65500; libwebp: 16383).
MAX_ENCODED_SIDE = {"jpeg": 65500, "jpg": 65500, "png": 2**31 - 1, "webp": 16383}


def check_encodable(size: tuple[int, int], fmt: str) -> None:
    """``ValueError`` if an image of ``size`` (width, height) is too large for ``fmt``."""
    limit = MAX_ENCODED_SIDE.get(fmt.lower())
    if limit is not None and max(size) > limit:
        raise ValueError(
            f"a {size[0]}x{size[1]} image is too large for {fmt.upper()} (at most {limit} px a side): "
            "choose another format or a smaller --max-size"
        )


def encode_image(img: Image.Image, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode to ``jpeg``, ``png`` or ``webp`` bytes."""
    fmt = fmt.lower()
    check_encodable(img.size, fmt)
    buf = io.BytesIO()
    if fmt in ("jpeg", "jpg"):
        img.save(buf, "JPEG", quality=quality)  # no Huffman optimization: 2.7x faster, 2 % larger
    elif fmt == "png":
        img.save(buf, "PNG", optimize=False)
    elif fmt == "webp":
        img.save(buf, "WEBP", quality=quality)
    else:
        raise ValueError(f"unsupported output format {fmt!r}")
    return buf.getvalue()


def list_images(folder: str | Path) -> list[Path]:
    """Image files (jpg/jpeg/png/webp) below ``folder``, recursively (into linked folders too,
    each real folder once: a link to a folder above is no loop), sorted."""
    root = Path(folder)
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(root, followlinks=True):
        try:
            st = os.stat(top)
        except OSError:
            dirs.clear()
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs.clear()
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        found.extend(
            path for name in files if (path := Path(top) / name).suffix.lower() in IMAGE_SUFFIXES and path.is_file()
        )
    return sorted(found)
