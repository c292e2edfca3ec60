"""The buffer arena: large buffers placed in reused memory, freed by reference count, never shared."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from stylenet import buffers, fast
from stylenet.buffers import ALIGN, BufferPool, capacity_from
from stylenet.config import GeneratorConfig
from stylenet.fast import optimize
from tests.stylenet.test_fast import BF16, _random

MB = 1 << 20
FLOAT = torch.float32


def _flat(pool: BufferPool, n: int) -> torch.Tensor | None:
    return pool.take((n,), FLOAT, torch.contiguous_format)


def _offset(pool: BufferPool, t: torch.Tensor) -> int:
    assert pool._arena is not None
    return t.untyped_storage().data_ptr() - pool._arena.data_ptr()


def test_a_dropped_buffer_is_reused_in_place() -> None:
    pool = BufferPool(16 * ALIGN, min_bytes=1)
    a = pool.take((1, 4, 8, 8), FLOAT)
    assert a is not None and a.is_contiguous(memory_format=torch.channels_last)
    first = a.data_ptr()
    a.fill_(1.0)
    del a
    b = pool.take((1, 4, 8, 8), FLOAT)
    assert b is not None and b.data_ptr() == first  # the same bytes, already faulted in
    assert pool.stats.placed == 2 and pool.stats.high_water == ALIGN


def test_buffers_in_use_never_overlap_and_gaps_are_filled_first() -> None:
    pool = BufferPool(16 * ALIGN, min_bytes=1)
    a, b, c = (_flat(pool, ALIGN // 4) for _ in range(3))  # one ALIGN each
    assert a is not None and b is not None and c is not None
    assert [_offset(pool, t) for t in (a, b, c)] == [0, ALIGN, 2 * ALIGN]
    del b
    big = _flat(pool, ALIGN // 2)  # two ALIGNs: not in b's gap
    assert big is not None and _offset(pool, big) == 3 * ALIGN
    small = _flat(pool, 100)
    assert small is not None and _offset(pool, small) == ALIGN  # the lowest gap that fits
    assert pool.in_use_bytes == 5 * ALIGN
    assert pool.stats.high_water == 5 * ALIGN


def test_a_view_keeps_its_buffer_in_use() -> None:
    pool = BufferPool(16 * ALIGN, min_bytes=1)
    buf = pool.take((1, 2, 10, 10), FLOAT)
    assert buf is not None
    inner = buf[:, :, 1:-1, 1:-1]
    inner.fill_(7.0)
    del buf
    other = pool.take((1, 2, 10, 10), FLOAT)
    assert other is not None and _offset(pool, other) == ALIGN  # not over the view
    assert torch.all(inner == 7.0)


def test_small_and_oversized_requests_are_allocated_as_usual() -> None:
    pool = BufferPool(2 * ALIGN, min_bytes=1024)
    assert _flat(pool, 10) is None  # 40 bytes: malloc's heap reuses those already
    plain = pool.empty((10,), FLOAT, memory_format=torch.contiguous_format)
    assert plain.shape == (10,) and pool._arena is None
    held = _flat(pool, ALIGN // 4)
    assert held is not None
    assert _flat(pool, ALIGN // 2) is None  # two ALIGNs do not fit beside one
    assert pool.stats.bypassed == 1
    fallback = pool.empty((ALIGN // 2,), FLOAT, memory_format=torch.contiguous_format)
    assert fallback.numel() == ALIGN // 2
    assert not 0 <= _offset(pool, fallback) < pool.capacity  # memory of its own


def test_release_lets_the_reservation_go_only_when_idle() -> None:
    pool = BufferPool(4 * ALIGN, min_bytes=1)
    t = _flat(pool, 8)
    assert t is not None and not pool.release()
    del t
    assert not pool.release(idle_s=60.0)  # a buffer was placed less than a minute ago
    assert pool.holds_memory
    assert pool.release() and not pool.holds_memory and pool.stats.high_water == 0
    assert not pool.release()  # nothing left to let go
    again = _flat(pool, 8)
    assert again is not None and pool._arena is not None


def test_trim_drops_the_pages_of_free_gaps_only() -> None:
    pool = BufferPool(32 * ALIGN, min_bytes=1)
    a, b, c, d = (_flat(pool, ALIGN // 4) for _ in range(4))  # one ALIGN each, at 0 .. 3 ALIGN
    assert a is not None and b is not None and c is not None and d is not None
    for value, t in enumerate((a, b, c, d), start=1):
        t.fill_(float(value))
    del b, d, t  # a gap between a and c, and the end above c
    assert pool.stats.high_water == 4 * ALIGN
    assert pool._arena is not None and pool._arena.data_ptr() % ALIGN == 0  # whole pages, huge ones too
    assert pool.trim() == 2 * ALIGN
    assert pool.stats.high_water == 3 * ALIGN and pool.stats.trimmed > 0
    assert torch.all(a == 1.0) and torch.all(c == 3.0)  # buffers in use keep their bytes
    again, above = _flat(pool, ALIGN // 4), _flat(pool, ALIGN // 4)
    assert again is not None and _offset(pool, again) == ALIGN
    assert above is not None and _offset(pool, above) == 3 * ALIGN
    # the kernel gave those pages back: they fault in afresh, as zeros, not as the 2.0 and 4.0
    assert torch.all(again == 0.0) and torch.all(above == 0.0)
    del a, c, again, above
    assert pool.trim() == 4 * ALIGN and pool.stats.high_water == 0
    assert pool.holds_memory  # the reservation stays: trimming is not releasing
    assert BufferPool(4 * ALIGN, min_bytes=1).trim() == 0  # nothing reserved yet


def test_threads_never_share_a_buffer() -> None:
    pool = BufferPool(64 * ALIGN, min_bytes=1)
    errors: list[str] = []

    def work(value: float) -> None:
        for _ in range(200):
            t = _flat(pool, ALIGN // 8)
            assert t is not None
            t.fill_(value)
            if not torch.all(t == value):
                errors.append(f"thread {value}: its buffer was written by another")
            del t

    threads = [threading.Thread(target=work, args=(float(i),)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert pool.in_use_bytes == 0


def test_capacity_from_the_environment() -> None:
    assert capacity_from({}) == buffers.DEFAULT_CAPACITY_MB * MB
    assert capacity_from({buffers.POOL_ENV: "0"}) == 0
    assert capacity_from({buffers.POOL_ENV: " 512 "}) == 512 * MB
    for bad in ("-1", "lots", "nan"):
        with pytest.raises(ValueError, match=buffers.POOL_ENV):
            capacity_from({buffers.POOL_ENV: bad})


def test_configure_off_gives_plain_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buffers, "_pool", None)
    monkeypatch.setattr(buffers, "_configured", False)
    monkeypatch.setenv(buffers.POOL_ENV, "0")
    assert buffers.pool() is None
    t = buffers.empty((1, 3, 4, 4), FLOAT, "cpu")
    assert t.is_contiguous(memory_format=torch.channels_last)
    assert buffers.configure(8 * MB, min_bytes=1) is buffers.pool() is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("stride", "bias"), [(1, False), (2, True)])
def test_conv2d_into_the_arena_equals_f_conv2d(
    small_arena: BufferPool, dtype: torch.dtype, stride: int, bias: bool
) -> None:
    if dtype == torch.bfloat16 and not BF16:
        pytest.skip("no native bf16 on this CPU")
    cl = torch.channels_last
    x = torch.randn(2, 16, 35, 41).to(dtype).contiguous(memory_format=cl)
    w = (torch.randn(24, 16, 3, 3) * 0.1).to(dtype).contiguous(memory_format=cl)
    b = torch.randn(24).to(dtype) if bias else None
    expected = F.conv2d(x, w, b, stride)
    got = fast.conv2d(x, w, b, stride)
    assert small_arena.stats.placed == 1  # the output is in the arena
    assert got.is_contiguous(memory_format=cl)
    assert torch.equal(got, expected)
    got.fill_(123.0)  # stale values left in the bytes the next output reuses
    where = got.data_ptr()
    del got
    again = fast.conv2d(x, w, b, stride)
    assert again.data_ptr() == where and small_arena.stats.placed == 2
    assert torch.equal(again, expected)  # the buffer is zeroed before the convolution adds to it


def test_engines_compute_the_same_with_and_without_the_arena(small_arena: BufferPool) -> None:
    cfg = GeneratorConfig(width=0.25, residual_blocks=2)
    ucfg = GeneratorConfig(arch="ulyanov", scales=3, channels_per_scale=4)  # type: ignore[arg-type]
    x = torch.rand(2, 3, 45, 70)
    # (batches of two: for a lone small float32 photo torch's own convolution is not oneDNN's)
    pixels = (torch.rand(2, 45, 70, 3) * 255).to(torch.uint8)
    for engine in (optimize(_random(cfg), cfg, precision="fp32"), optimize(_random(ucfg), ucfg, precision="fp32")):
        with torch.inference_mode():
            pooled = [engine(x), engine(x), engine.forward_bytes(pixels)]
            buffers._pool = None  # (the fixture puts the arena back for the next test)
            plain = [engine(x), engine(x), engine.forward_bytes(pixels)]
            buffers._pool = small_arena
        for a, b in zip(pooled, plain, strict=True):
            assert torch.equal(a, b)
    assert small_arena.stats.placed > 20 and small_arena.in_use_bytes == 0  # nothing escapes a pass


def test_an_arena_that_cannot_be_reserved_turns_itself_off(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = BufferPool(16 * ALIGN, min_bytes=1)

    def refuse(nbytes: int) -> torch.UntypedStorage:
        raise RuntimeError(f"DefaultCPUAllocator: can't allocate memory: you tried to allocate {nbytes} bytes")

    monkeypatch.setattr(torch, "UntypedStorage", refuse)
    t = pool.empty((1, 2, 8, 8), FLOAT)  # allocated as usual: the pass goes on
    assert t.shape == (1, 2, 8, 8) and pool.capacity == 0 and not pool.holds_memory
    monkeypatch.undo()
    assert pool.take((1, 2, 8, 8), FLOAT) is None  # and it does not try again
