"""An arena for the engines' large CPU buffers, kept from one forward pass to the next.

Every buffer of 32 MB and more that a pass allocates is, by default, a fresh ``mmap`` that the
kernel zeroes and faults in on its first write, and unmaps when it is freed: a 2048² Johnson
pass maps ~2.5 GB that way, and on the 2-core VMs measured the kernel spends 1-2 s of system
time zeroing it, out of 4-5 s (docs/performance.md). Keeping freed blocks in glibc's heap
removes the faults but costs 13-30 % more peak memory; so does keeping a block per size (a
pool), because a block of one size cannot serve another.

This arena is one reservation of ``capacity`` bytes of address space. Each large buffer is
placed in the lowest gap between the buffers still in use that fits it (first fit), so a pass
touches little more memory than it holds at its peak, and the next pass, placing the same
buffers in the same order, finds those pages already faulted in: it allocates nothing. Pages
never written stay unbacked, so the reservation itself costs no memory.

Lifetime is the storage's own reference count: each buffer is a slice of the arena's storage
with a reference count of its own, and the arena holds one reference to it; a slice whose count
is back to one is referenced by no tensor or view any more, so its bytes are free. Nothing has
to be given back explicitly, and a buffer that escapes the pass (an output the caller keeps)
stays in use until the caller drops it. A buffer that finds no gap is allocated as usual.

``trim()`` gives back the pages behind the free gaps and keeps the reservation: a tiled pass
(``stylenet.tiling``) places its whole-image buffers here too and trims once it has let them
go, so what it allocates next does not sit on top of pages it no longer needs.

``release()`` lets go of the whole reservation once nothing in it is in use: a worker calls it
when it has had no pass for a while (``worker.runner.release_idle_arena``), so a busy worker's
passes reuse the pages and an idle one gives the memory back. CPU only: CUDA's caching
allocator already reuses device memory.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import mmap
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from stylenet.config import BUFFER_POOL_ENV as POOL_ENV
from stylenet.config import DEFAULT_BUFFER_POOL_MB as DEFAULT_CAPACITY_MB
from stylenet.config import MMAP_THRESHOLD

CL = torch.channels_last
log = logging.getLogger(__name__)

#: Buffers are placed at multiples of this (a huge page: each buffer starts on its own).
ALIGN = 2 << 20

_use_count = getattr(torch._C, "_storage_Use_Count", None)


@dataclass
class PoolStats:
    placed: int = 0  # buffers placed in the arena
    bypassed: int = 0  # buffers that found no gap, allocated as usual
    high_water: int = 0  # extent of the arena used at once since the last trim: what it has faulted in
    released: int = 0  # reservations let go
    trimmed: int = 0  # bytes of free gaps given back (``trim``)


#: ``madvise``'s advice to drop a private anonymous range's pages (Linux); they read as zeros after.
MADV_DONTNEED = 4
PAGE = mmap.PAGESIZE


@functools.cache
def _madvise() -> Any:
    """libc's ``madvise``, looked up once, or None where there is none (off Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


class BufferPool:
    """Buffers of ``min_bytes`` and more placed in one ``capacity``-byte arena (see the module
    docstring)."""

    def __init__(self, capacity: int, min_bytes: int = MMAP_THRESHOLD) -> None:
        if capacity < 0 or min_bytes < 1:
            raise ValueError(f"bad arena settings: capacity={capacity}, min_bytes={min_bytes}")
        if _use_count is None:
            raise RuntimeError("this torch cannot tell a storage's reference count; no buffer arena")
        self.capacity = _aligned(capacity) if capacity else 0
        self.min_bytes = min_bytes
        self.stats = PoolStats()
        self._arena: torch.UntypedStorage | None = None
        self._blocks: list[tuple[int, int, torch.UntypedStorage]] = []  # (offset, nbytes, slice), by offset
        self._lock = threading.Lock()
        self._last_take = -math.inf  # monotonic time of the last buffer placed

    @staticmethod
    def _free(block: torch.UntypedStorage) -> bool:
        assert _use_count is not None
        return bool(_use_count(block._cdata) == 1)

    def _drop_free(self) -> None:
        self._blocks = [b for b in self._blocks if not self._free(b[2])]

    @property
    def in_use_bytes(self) -> int:
        """Bytes of the buffers now in use."""
        with self._lock:
            self._drop_free()
            return sum(b[1] for b in self._blocks)

    @property
    def holds_memory(self) -> bool:
        """Whether the arena has a reservation (pages a pass wrote may be backed by memory)."""
        return self._arena is not None

    def release(self, idle_s: float = 0.0) -> bool:
        """Let go of the reservation when no buffer in it is in use and none was placed in the
        last ``idle_s`` seconds; returns whether it did."""
        with self._lock:
            self._drop_free()
            if self._blocks or self._arena is None or time.monotonic() - self._last_take < idle_s:
                return False
            self._arena = None
            self.stats.high_water = 0
            self.stats.released += 1
            return True

    def trim(self) -> int:
        """Give back the memory behind the arena's free gaps (``madvise(MADV_DONTNEED)``), keeping
        the reservation and the buffers in use; returns the bytes of address range given back.

        A pass whose buffers shrink for a while calls this so the pages its freed buffers
        faulted in do not sit beside what it allocates outside the arena next: a tiled pass's
        second 1/4-resolution buffer is 512 MB at 4096² in float32, and the output picture the
        decoder then writes (201 MB in float32) would otherwise be on top of it. The next
        buffer placed there faults its pages in again (zeroed; a buffer's bytes are undefined
        anyway). 0 off Linux or when nothing is free."""
        madvise = _madvise()
        with self._lock:
            self._drop_free()
            if self._arena is None or madvise is None:
                return 0
            base, given = self._arena.data_ptr(), 0
            start = 0
            for offset, size, _ in [*self._blocks, (self.stats.high_water, 0, None)]:
                lo, hi = -(-(base + start) // PAGE) * PAGE, (base + offset) // PAGE * PAGE
                if hi > lo and madvise(lo, hi - lo, MADV_DONTNEED) == 0:
                    given += hi - lo
                start = max(start, offset + size)
            self.stats.high_water = self._blocks[-1][0] + self._blocks[-1][1] if self._blocks else 0
            self.stats.trimmed += given
            return given

    def _place(self, nbytes: int) -> int | None:
        """The lowest offset where ``nbytes`` fit between the buffers in use, or None."""
        self._drop_free()
        start = 0
        for offset, size, _ in self._blocks:
            if offset - start >= nbytes:
                return start
            start = offset + size
        return start if self.capacity - start >= nbytes else None

    def take(
        self, shape: Sequence[int], dtype: torch.dtype, memory_format: torch.memory_format = CL
    ) -> torch.Tensor | None:
        """An uninitialized CPU tensor of ``shape`` in the arena, or None when it is smaller
        than ``min_bytes`` or no gap fits it."""
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.min_bytes:
            return None
        size = _aligned(nbytes)
        stride = torch.empty(tuple(shape), dtype=dtype, device="meta", memory_format=memory_format).stride()
        with self._lock:  # the tensor takes its reference before another thread can see the bytes free
            offset = self._place(size)
            if offset is None:
                self.stats.bypassed += 1
                return None
            if self._arena is None:
                try:
                    raw = torch.UntypedStorage(self.capacity + ALIGN)  # address space; backed when written
                    skip = -raw.data_ptr() % ALIGN  # offsets from a huge-page boundary, whatever the allocator gave
                    self._arena = raw[skip : skip + self.capacity]
                except RuntimeError as exc:  # no address space for it (strict overcommit, a ulimit)
                    log.warning("no %d MiB buffer arena (%s); buffers are allocated as usual", self.capacity >> 20, exc)
                    self.capacity = 0
                    self.stats.bypassed += 1
                    return None
            block = self._arena[offset : offset + size]
            self._blocks.append((offset, size, block))
            self._blocks.sort(key=lambda b: b[0])
            self.stats.placed += 1
            self._last_take = time.monotonic()
            self.stats.high_water = max(self.stats.high_water, offset + size)
            return torch.empty(0, dtype=dtype).set_(block, 0, tuple(shape), stride)

    def empty(
        self,
        shape: Sequence[int],
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
        memory_format: torch.memory_format = CL,
    ) -> torch.Tensor:
        """An uninitialized tensor like ``torch.empty(shape, dtype=..., memory_format=...)``,
        from the arena when it is a CPU buffer of ``min_bytes`` or more."""
        device = torch.device(device)
        out = self.take(shape, dtype, memory_format) if device.type == "cpu" else None
        if out is None:
            return torch.empty(tuple(shape), dtype=dtype, device=device, memory_format=memory_format)
        return out


_pool: BufferPool | None = None
_configured = False
_config_lock = threading.Lock()


def capacity_from(environ: Mapping[str, str] = os.environ) -> int:
    """The capacity ``POOL_ENV`` asks for, in bytes (the default when unset)."""
    raw = environ.get(POOL_ENV, "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_CAPACITY_MB
    except ValueError:
        raise ValueError(f"{POOL_ENV} must be a number of MiB, got {raw!r}") from None
    if not mb >= 0:
        raise ValueError(f"{POOL_ENV} must be >= 0, got {raw!r}")
    return int(mb * (1 << 20))


def configure(capacity: int | None = None, min_bytes: int = MMAP_THRESHOLD) -> BufferPool | None:
    """Set the process's arena: ``capacity`` bytes (0: none), or what ``POOL_ENV`` says, for
    buffers of ``min_bytes`` and more (smaller ones come from malloc's heap, already reused)."""
    global _pool, _configured
    with _config_lock:
        capacity = capacity_from() if capacity is None else capacity
        _pool = BufferPool(capacity, min_bytes) if capacity > 0 and _use_count is not None else None
        _configured = True
        return _pool


def pool() -> BufferPool | None:
    """The process's arena (configured from the environment on first use), or None when off."""
    if not _configured:
        configure()
    return _pool


def trim() -> int:
    """``BufferPool.trim`` of the process's arena; 0 when it is off."""
    p = pool()
    return p.trim() if p is not None else 0


def empty(
    shape: Sequence[int], dtype: torch.dtype, device: torch.device | str, memory_format: torch.memory_format = CL
) -> torch.Tensor:
    """``BufferPool.empty`` of the process's arena, or plain ``torch.empty`` when it is off."""
    p = pool()
    if p is None:
        return torch.empty(tuple(shape), dtype=dtype, device=device, memory_format=memory_format)
    return p.empty(shape, dtype, device, memory_format)
