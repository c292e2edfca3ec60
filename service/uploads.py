"""Upload validation before anything is queued: real decode, pixel cap, format allow-list.

Pillow only reads the header to learn the size, so a decompression bomb is refused before any
pixel is decoded; JPEGs are then checked at 1/8 scale (every block is still read). The
image's bytes are passed on unchanged; the worker converts them to RGB through
``stylenet.imageio`` (the one image path).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from service.exceptions import CorruptImage, ImageTooLarge, UnsupportedImage

#: Pillow format names accepted as uploads.
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"})


@dataclass(frozen=True)
class UploadInfo:
    format: str
    width: int
    height: int
    frames: int

    def fitted(self, max_size: int) -> tuple[int, int]:
        """(width, height) of the image downscaled (never upscaled) so that its long side is at
        most ``max_size``, rounded as ``stylenet.imageio.fit_size`` / ``resize_max`` round it."""
        long_side = max(self.width, self.height)
        if long_side <= max_size:
            return self.width, self.height
        scale = max_size / long_side
        return max(1, round(self.width * scale)), max(1, round(self.height * scale))

    def output_pixels(self, max_size: int) -> int:
        """Pixels of the stylized image: the photo ``fitted`` to ``max_size``."""
        width, height = self.fitted(max_size)
        return width * height


def inspect_upload(data: bytes, max_pixels: int) -> UploadInfo:
    """Check that ``data`` is a decodable image of an accepted format within ``max_pixels``."""
    if not data:
        raise CorruptImage("the uploaded file is empty")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise UnsupportedImage(
                "the upload is not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF)"
            ) from None
        except Image.DecompressionBombError:  # Pillow's own cap, far above ours: say ours
            raise ImageTooLarge(
                f"the image's header declares more than {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} MP; "
                f"the limit is {max_pixels / 1e6:.1f} MP"
            ) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise CorruptImage(f"the image header cannot be read: {exc}") from None
        with img:
            if img.format not in ACCEPTED_FORMATS:
                raise UnsupportedImage(f"image format {img.format} is not supported (JPEG, PNG, WebP, GIF, BMP, TIFF)")
            width, height = img.size
            if width * height > max_pixels:
                megapixels = width * height / 1e6
                raise ImageTooLarge(
                    f"the image has {width}x{height} = {megapixels:.1f} MP; the limit is {max_pixels / 1e6:.1f} MP"
                )
            frames = int(getattr(img, "n_frames", 1))
            # JPEG: decoded at 1/8 scale (DC coefficients only), which still reads every block,
            # so a truncated or corrupt file fails just the same, in half the time
            img.draft(img.mode, (1, 1))
            try:
                img.load()  # decodes the first frame: truncated files fail here
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                raise CorruptImage(f"the image is truncated or corrupt: {exc}") from None
    return UploadInfo(format=str(img.format), width=width, height=height, frames=frames)
