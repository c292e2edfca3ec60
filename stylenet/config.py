"""Configuration dataclasses for the generators.

One ``GeneratorConfig`` drives both architectures of the paper (Ulyanov, Vedaldi & Lempitsky,
*Instance Normalization: The Missing Ingredient for Fast Stylization*, arXiv:1607.08022):

* ``arch="johnson"`` -- the residual network of Johnson, Alahi & Fei-Fei (ECCV 2016);
* ``arch="ulyanov"`` -- the multi-scale "pyramid" texture network of Ulyanov et al. (ICML 2016).

The config is plain data so it can be written into an artifact's manifest and read back to
rebuild the exact network (``GeneratorConfig.from_dict(cfg.to_dict())``).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

Arch = Literal["johnson", "ulyanov"]
Norm = Literal["instance", "batch", "instance-frozen"]
Upsample = Literal["nearest", "deconv"]
Padding = Literal["reflect", "replicate", "zero"]

ARCHS: tuple[str, ...] = get_args(Arch)
NORMS: tuple[str, ...] = get_args(Norm)
UPSAMPLES: tuple[str, ...] = get_args(Upsample)
PADDINGS: tuple[str, ...] = get_args(Padding)

#: Inference precision (``stylenet.fast.resolve_precision``): "auto" picks per device.
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
#: Images with more megapixels than this run tiled (``stylenet.tiling``): the worker's and the
#: CLI's default (2048 x 2048 still runs whole).
TILE_MEGAPIXELS = 4.2

#: PyTorch's CPU allocator puts tensors of 2 MB and more on transparent huge pages when this
#: environment variable is "1". On fresh buffers the engine's memory-bound passes (norms, ReLU
#: copies) otherwise spend most of their time in 4 KB page faults: the worker's 1024² runs 13 %
#: faster with it in bf16 (1035 -> 897 ms, AVX512-BF16 EPYC) and 36 % in fp32 (3925 -> 2516 ms,
#: AVX2 EPYC); docs/performance.md. Torch reads it once, at its first allocation.
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"


def use_huge_pages(environ: MutableMapping[str, str] = os.environ) -> None:
    """Turn huge pages on for the torch of this process, unless the environment already says
    otherwise. Only effective before torch's first allocation: the CLI calls it first thing."""
    environ.setdefault(HUGE_PAGES_ENV, "1")


#: glibc's malloc maps every block of 128 KB and more afresh (mmap) and, each time such a block
#: is freed, raises that threshold and the heap's trim threshold, up to 32 MB. So how many of a
#: forward pass's buffers come back from the heap, instead of being mapped and faulted in again,
#: drifts with the history of the process: the worker's 512² took 78-130 ms for its first 10-25
#: passes, then ~64 ms (AMX Xeon). Fixing the mmap threshold at glibc's 32 MB maximum and keeping
#: up to ``TRIM_THRESHOLD`` of freed heap makes every pass after the first the fast one (59-60 ms);
#: buffers over 32 MB (1024² and up) are still mapped per pass, on huge pages (above). Training
#: gains most: the `fast` preset's 300 steps took 52 s instead of 115 s, at 1.0-1.2 GB peak RSS
#: instead of 0.65 GB (docs/TRAINING.md). Any ``MALLOC_*_`` variable (``MALLOC_TOP_PAD_=131072``
#: is glibc's default) or glibc malloc tunable in the environment leaves malloc alone.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 512 << 20

#: Environment variable: MiB of address space for the CPU engines' large buffers, kept from one
#: pass to the next (``stylenet.buffers``); "0" turns the arena off.
BUFFER_POOL_ENV = "INSTYLE_BUFFER_POOL_MB"
#: The default: a 2048² pass's large buffers at their peak (0.8 GB for Johnson in bf16) with
#: room for a second pass at once; only the pages a pass writes are ever backed by memory.
DEFAULT_BUFFER_POOL_MB = 3072
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def tune_malloc(environ: Mapping[str, str] = os.environ) -> bool:
    """Fix glibc malloc's mmap and trim thresholds for this process (see ``MMAP_THRESHOLD``).

    Returns whether both were set: False off glibc (no ``mallopt``), and when the environment
    already tunes malloc (``GLIBC_TUNABLES`` naming ``glibc.malloc.``, ``MALLOC_*_`` variables):
    the operator's choice wins. Safe at any time; the CLI calls it first thing.
    """
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", "") or any(
        k.startswith("MALLOC_") and k.endswith("_") for k in environ
    ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def release_free_heap() -> bool:
    """Give the memory glibc malloc holds free back to the system (``malloc_trim(0)``); False
    off glibc.

    ``tune_malloc`` keeps up to ``TRIM_THRESHOLD`` of freed memory for the next allocations,
    but a tiled pass's large buffers are mapped apart (over ``MMAP_THRESHOLD``) and never reuse
    it: before one, what decoding the photo freed (Pillow's image, 268 MB at 8192²) would stay
    resident beside them. ~10 ms; worth it only before a pass that long."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, looked up once (each ``ctypes.CDLL`` builds a class of its own,
    garbage in reference cycles), or None off glibc."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def _loaded_libgomp() -> str | None:
    """Path of the GNU OpenMP runtime mapped into this process (torch's, on Linux), if any."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if os.path.basename(path).startswith("libgomp"):
                    return path
    except OSError:
        pass
    return None


_libgomp_functions: dict[str, Any] = {}  # looked-up libgomp functions; False: none
_OMP_PAUSE_SOFT = 1  # omp_pause_soft (omp.h, OpenMP 5.0)


def _libgomp(name: str, argtypes: list[Any], restype: Any) -> Any:
    """libgomp's function ``name`` (looked up once), or False: torch not imported yet, or not on
    libgomp (another OpenMP runtime's calls may reach the whole process, not the calling thread)."""
    if "torch" not in sys.modules:  # no torch kernel has run: no pool (and no runtime loaded yet)
        return False
    if name not in _libgomp_functions:
        path = _loaded_libgomp()
        fn: Any = False
        try:
            if path:
                fn = getattr(ctypes.CDLL(path), name)
                fn.argtypes, fn.restype = argtypes, restype
        except (OSError, AttributeError):
            fn = False
        _libgomp_functions[name] = fn
    return _libgomp_functions[name]


def release_openmp_pool() -> bool:
    """Let this thread's OpenMP worker threads go (libgomp's ``omp_pause_resource_all``).

    torch's CPU kernels run on an OpenMP thread pool that belongs to the thread that first ran
    one and lives as long as that thread. An idle pool still counts: with more OpenMP threads
    than cores, libgomp's threads stop spinning between parallel regions and sleep, and every
    other thread's pass slows down (a lone 256² pass beside one idle pool: 55 -> 60 ms on the
    2-core EPYC). A long-lived thread that runs torch now and then (an embedded worker thread
    between jobs) calls this when it goes idle; its next parallel region starts a fresh pool,
    at the cost of starting its threads again (~0.1 ms).

    Returns whether libgomp took the request (also when this thread had no pool): False before
    torch is imported, off libgomp (another OpenMP runtime's pause stops the whole process's
    threads, not this thread's) and inside a parallel region.
    """
    pause = _libgomp("omp_pause_resource_all", [ctypes.c_int], ctypes.c_int)
    return bool(pause) and pause(_OMP_PAUSE_SOFT) == 0


def set_openmp_threads(threads: int) -> bool:
    """Run this thread's later torch CPU kernels on ``threads`` threads, leaving every other
    thread's count alone (libgomp's ``omp_set_num_threads`` sets the calling thread's; torch's
    ``set_num_threads`` sets the process's default as well and drops oneDNN's primitive cache).

    Returns False where it cannot (see ``_libgomp``); the thread then keeps torch's count.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    set_threads = _libgomp("omp_set_num_threads", [ctypes.c_int], None)
    if not set_threads:
        return False
    import torch

    torch.get_num_threads()  # torch sets each new thread's count at its first call: let it go first
    set_threads(threads)
    return True


@dataclass(frozen=True)
class GeneratorConfig:
    """Hyper-parameters of a stylization generator.

    ``norm``:
      * ``instance`` -- ``InstanceNorm2d(affine=True)``, per-image statistics in training AND at
        test time (the paper's proposal);
      * ``batch`` -- ``BatchNorm2d``: batch statistics in training, running averages in ``eval()``;
      * ``instance-frozen`` -- instance normalization while training, but the running statistics
        (PyTorch's exponential moving averages, momentum 0.1, of the per-image statistics) are
        frozen and used at test time (the paper's RQ2 control).
    ``width`` multiplies every channel count (1.0 = the published sizes).
    ``scales`` and ``noise_channels`` only concern the Ulyanov generator.
    """

    arch: Arch = "johnson"
    norm: Norm = "instance"
    width: float = 1.0
    upsample: Upsample = "nearest"
    padding: Padding = "reflect"
    residual_blocks: int = 5
    scales: int = 6
    channels_per_scale: int = 8
    noise_channels: int = 0

    def __post_init__(self) -> None:
        _check_choice("arch", self.arch, ARCHS)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("upsample", self.upsample, UPSAMPLES)
        _check_choice("padding", self.padding, PADDINGS)
        if not 0.0 < self.width <= 8.0:
            raise ValueError(f"width must be in (0, 8], got {self.width}")
        if not 0 <= self.residual_blocks <= 32:
            raise ValueError(f"residual_blocks must be in [0, 32], got {self.residual_blocks}")
        if not 1 <= self.scales <= 8:
            raise ValueError(f"scales must be in [1, 8], got {self.scales}")
        if not 1 <= self.channels_per_scale <= 256:
            raise ValueError(f"channels_per_scale must be in [1, 256], got {self.channels_per_scale}")
        if not 0 <= self.noise_channels <= 16:
            raise ValueError(f"noise_channels must be in [0, 16], got {self.noise_channels}")

    def channels(self, base: int) -> int:
        """A published channel count scaled by ``width`` (at least 1)."""
        return max(1, round(base * self.width))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown generator config keys: {sorted(unknown)}")
        return cls(**data)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
