"""The upload check (``service.uploads``): where it decodes, and that both ways refuse the same files."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from PIL import Image

from service import uploads
from service.exceptions import CorruptImage, ImageTooLarge, UnsupportedImage


def encoded(size: tuple[int, int], fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def pool_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The functions ``check_upload`` sent to the thread pool (run there all the same)."""
    calls: list[Any] = []
    real = uploads.run_in_threadpool

    async def recorded(fn: Any, *args: Any) -> Any:
        calls.append(fn)
        return await real(fn, *args)

    monkeypatch.setattr(uploads, "run_in_threadpool", recorded)
    return calls


def test_small_jpegs_are_checked_inline_the_rest_in_the_pool(
    pool_calls: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    jpeg, png = encoded((64, 48), "JPEG"), encoded((64, 48), "PNG")
    info = asyncio.run(uploads.check_upload(jpeg, 10**6))
    assert (info.format, info.width, info.height, info.frames) == ("JPEG", 64, 48, 1)
    assert pool_calls == []
    assert asyncio.run(uploads.check_upload(png, 10**6)) == uploads.inspect_upload(png, 10**6)
    assert pool_calls == [uploads.check_decodes]
    monkeypatch.setattr(uploads, "INLINE_JPEG_PIXELS", 64 * 48 - 1)  # one pixel too many: the pool
    assert asyncio.run(uploads.check_upload(jpeg, 10**6)) == info
    assert pool_calls == [uploads.check_decodes] * 2


@pytest.mark.parametrize("inline_pixels", [1 << 20, 0])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_both_ways_refuse_the_same_files(
    pool_calls: list[Any], monkeypatch: pytest.MonkeyPatch, fmt: str, inline_pixels: int
) -> None:
    monkeypatch.setattr(uploads, "INLINE_JPEG_PIXELS", inline_pixels)
    whole = encoded((64, 48), fmt)
    with pytest.raises(CorruptImage, match="truncated or corrupt"):
        asyncio.run(uploads.check_upload(whole[: len(whole) // 2], 10**6))
    with pytest.raises(ImageTooLarge, match="64x48"):
        asyncio.run(uploads.check_upload(whole, 64 * 48 - 1))
    with pytest.raises(UnsupportedImage):
        asyncio.run(uploads.check_upload(b"not an image at all", 10**6))
    with pytest.raises(CorruptImage, match="empty"):
        asyncio.run(uploads.check_upload(b"", 10**6))
    # only the decodes that got past the header went to the pool, and only where they should
    assert len(pool_calls) == (0 if fmt == "JPEG" and inline_pixels else 1)
