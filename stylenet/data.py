"""Training photos: a recursive folder of jpg/png/webp, random-resized crops at ``image_size``."""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Collection
from pathlib import Path

import torch
from PIL import Image

from stylenet.exceptions import EmptyDataset, InvalidImage
from stylenet.imageio import image_to_tensor, list_images, load_image, resize_short

log = logging.getLogger(__name__)

#: Decoded photos are kept in memory, downscaled to this multiple of the crop size.
CACHE_SHORT_SIDE_FACTOR = 1.5
#: Cache at most this many decoded photos (bounded memory on large datasets).
MAX_CACHED = 4000


class PhotoDataset:
    """Photos below ``folder`` (minus ``exclude``); unreadable files are skipped with a warning.

    ``sample(batch, generator)`` returns a (batch, 3, size, size) tensor of random-resized
    crops (area fraction in ``crop_scale``, aspect ratio in [3/4, 4/3]) with random flips.
    """

    def __init__(
        self,
        folder: str | Path,
        image_size: int,
        crop_scale: tuple[float, float] = (0.35, 1.0),
        exclude: Collection[Path] = (),
    ):
        root = Path(folder)
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "does not exist"
            raise EmptyDataset(f"photo folder {root} {what}")
        if not os.access(root, os.R_OK | os.X_OK):
            raise EmptyDataset(f"photo folder {root} cannot be read (permission denied)")
        skip = {p.resolve() for p in exclude}
        self.root = root
        self.paths = [p for p in list_images(root) if p.resolve() not in skip]
        if not self.paths:
            raise EmptyDataset(f"no jpg/png/webp photos found below {root}" + (" (after exclusions)" if skip else ""))
        self.image_size = image_size
        self.crop_scale = crop_scale
        self._cache: dict[Path, Image.Image] = {}
        self._bad: set[Path] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def fingerprint(self) -> str:
        """What a resumed run must train on again: the sha256 of the photos' names below the
        folder, sorted (not their bytes: reading every photo would cost more than a resume)."""
        names = sorted(str(p.relative_to(self.root)) if p.is_relative_to(self.root) else str(p) for p in self.paths)
        return hashlib.sha256("\n".join(names).encode()).hexdigest()

    def _get(self, path: Path) -> Image.Image | None:
        if path in self._cache:
            return self._cache[path]
        try:
            img = load_image(path)
        except InvalidImage as exc:
            log.warning("skipping unreadable photo %s: %s", path, exc)
            self._bad.add(path)
            return None
        short = round(self.image_size * CACHE_SHORT_SIDE_FACTOR)
        if min(img.size) > short:
            img = resize_short(img, short)
        if len(self._cache) < MAX_CACHED:
            self._cache[path] = img
        return img

    def _random_crop(self, img: Image.Image, g: torch.Generator) -> torch.Tensor:
        w, h = img.size
        area = w * h
        for _ in range(10):
            frac = self.crop_scale[0] + (self.crop_scale[1] - self.crop_scale[0]) * float(torch.rand((), generator=g))
            log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * float(torch.rand((), generator=g))
            ratio = math.exp(log_ratio)
            cw = round(math.sqrt(area * frac * ratio))
            ch = round(math.sqrt(area * frac / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                break
        else:
            cw = ch = min(w, h)
        x0 = int(torch.randint(0, w - cw + 1, (), generator=g))
        y0 = int(torch.randint(0, h - ch + 1, (), generator=g))
        crop = img.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
        t = image_to_tensor(crop)
        if float(torch.rand((), generator=g)) < 0.5:
            t = t.flip(-1)
        return t

    def sample(self, batch_size: int, g: torch.Generator) -> torch.Tensor:
        out: list[torch.Tensor] = []
        while len(out) < batch_size:
            if len(self._bad) == len(self.paths):
                raise EmptyDataset(f"none of the {len(self.paths)} photos could be decoded")
            path = self.paths[int(torch.randint(0, len(self.paths), (), generator=g))]
            if path in self._bad:
                continue
            img = self._get(path)
            if img is not None:
                out.append(self._random_crop(img, g))
        return torch.stack(out)  # (B, 3, S, S)
