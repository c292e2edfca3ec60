"""Native kernels: a little C, compiled on this machine at first use and called through ctypes.

Torch has no CPU op for a few passes where the engine's time goes to many small torch calls or
to extra trips through memory:

* Winograd's input and output transforms (``winograd.c``, used by ``stylenet.winograd``) are
  sums of a few terms per tile, which torch runs as a few hundred passes over memory per band of
  tiles. In C each tile is read once and written once, a block of channels at a time (a 128 ->
  128 channel 3x3 convolution on a 128² map, float32 under the AVX2 caps: 15.8 ms with torch's
  sums, 9.1 ms with these; docs/performance.md). The whole convolution runs there too
  (``winograd_conv``): each thread transforms a group of tiles, multiplies them by the
  transformed kernel with a register-blocked product of its own and transforms them back, all
  within its cache, where torch's ``bmm`` between two transform calls sent every band's
  transformed tiles and products through memory (the Johnson residual blocks' convolutions in a
  512² pass: 186 -> 157 ms, Ice Lake Xeon). It runs F(2x2, 3x3), F(4x4, 3x3), F(6x6, 3x3),
  F(8x8, 3x3), F(3x3, 2x2), F(7x7, 2x2), F(4x4, 5x5) and F(6x6, 5x5) with the kernel packed in
  panels (``pack_kernel``), ends maps in partial tiles, adds a bias, and can write a 2x2
  space-to-depth output out to full resolution as it makes it (``phases``).
* An instance norm and the activation or residual add after it (``affine.c``, used by
  ``stylenet.fast.norm_into``): one pass where torch takes two, float32 or bf16.
* An instance norm's statistics (``moments.c``, used by ``stylenet.fast.channel_moments``): one
  read of the map, strided views measured where they lie, float64 sums.

The library is built with the C compiler found (``$CC``, else ``cc``/``gcc``) and
``-O3 -march=native -fopenmp`` into a cache folder, once per source, flags, compiler and CPU
(the key names all four, so a cache shared between machines never hands one machine another's
instructions). It links the same ``libgomp.so.1`` that torch loaded, so its loops run on torch's
OpenMP threads and honour each thread's share (``stylenet.config.set_openmp_threads``).

Without a compiler, or with ``INSTYLE_NATIVE=0``, ``library()`` is ``None`` and every caller
keeps its torch path: the same results to float32 rounding, only slower. Settings (environment):

* ``INSTYLE_NATIVE``: ``0`` / ``false`` / ``off`` turns the native kernels off;
* ``INSTYLE_NATIVE_DIR``: the cache folder (default ``$XDG_CACHE_HOME/instyle/native``, else
  ``~/.cache/instyle/native``);
* ``INSTYLE_NATIVE_CFLAGS``: the optimization flags, ``-O3 -march=native`` by default (e.g.
  ``-O3 -march=haswell`` to build AVX2 code on an AVX-512 machine, as a Zen 3 would run it).

``python -m stylenet.native`` builds the library now (``make setup`` does), checks it against
the torch path, and says where it is.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

#: The C sources, compiled into one library.
SOURCES = tuple(Path(__file__).with_name(name) for name in ("winograd.c", "affine.c", "moments.c"))
DEFAULT_CFLAGS = "-O3 -march=native"
#: Flags every build needs: a shared library whose loops run on OpenMP's threads; floating-point
#: exceptions never trap (so that a compare-and-select vectorizes: without it GCC kept
#: ``affine.c``'s loops scalar for AVX2, 5x slower).
REQUIRED_CFLAGS = ("-fopenmp", "-fPIC", "-shared", "-fno-trapping-math")
BUILD_TIMEOUT_S = 120
_OFF = {"0", "false", "off", "no"}


class NativeError(RuntimeError):
    """The library could not be built or loaded."""


def enabled() -> bool:
    """Whether the native kernels may be used (``INSTYLE_NATIVE`` is not ``0``/``false``/``off``)."""
    return os.environ.get("INSTYLE_NATIVE", "1").strip().lower() not in _OFF


def cache_dir() -> Path:
    if folder := os.environ.get("INSTYLE_NATIVE_DIR"):
        return Path(folder)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "instyle" / "native"


def cflags() -> list[str]:
    return shlex.split(os.environ.get("INSTYLE_NATIVE_CFLAGS") or DEFAULT_CFLAGS)


def compiler() -> str | None:
    """The C compiler: ``$CC`` if set, else ``cc`` or ``gcc`` on the PATH; None without one."""
    if cc := os.environ.get("CC"):
        return shutil.which(cc) or None
    return shutil.which("cc") or shutil.which("gcc")


def _cpu_identity() -> str:
    """What ``-march=native`` compiles for: the CPU's model and instruction-set flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = ("model name", "flags", "Features", "CPU part")  # x86 and ARM
    lines = [line for line in text.splitlines() if line.split(":")[0].strip() in wanted]
    return "\n".join(sorted(set(lines)))


def _compiler_version(cc: str) -> str:
    try:
        done = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.splitlines()[0] if done.stdout else "unknown"


def build_key(cc: str, flags: list[str]) -> str:
    """A digest of everything the built library depends on: source, flags, compiler, CPU."""
    digest = hashlib.sha256(b"".join(source.read_bytes() for source in SOURCES))
    for part in (" ".join([*flags, *REQUIRED_CFLAGS]), _compiler_version(cc), platform.machine(), _cpu_identity()):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:16]


def build(folder: Path | None = None) -> Path:
    """The library for this machine, compiled into ``folder`` (``cache_dir()``) unless it is
    there already. Raises ``NativeError`` without a compiler or when the compiler fails."""
    cc = compiler()
    if cc is None:
        raise NativeError("no C compiler found ($CC, cc or gcc)")
    flags = cflags()
    folder = folder or cache_dir()
    path = folder / f"libinstyle-{build_key(cc, flags)}.so"
    if path.exists():
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NativeError(f"cannot create {folder}: {exc}") from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # concurrent builders each write their own
    cmd = [cc, *flags, *REQUIRED_CFLAGS, "-o", str(tmp), *map(str, SOURCES)]
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise NativeError(f"{shlex.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        os.replace(tmp, path)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeError(f"{shlex.join(cmd)}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    log.info("native kernels built in %.1f s: %s", time.monotonic() - start, path)
    return path


class Kernels:
    """The loaded library, its entry points typed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        lib = ctypes.CDLL(str(path))
        i64, ptr = ctypes.c_long, ctypes.c_void_p
        self._input = lib.instyle_winograd_input
        self._input.argtypes = [ctypes.c_int, ptr, i64, i64, i64, i64, i64, ptr]
        self._input.restype = ctypes.c_int
        self._output = lib.instyle_winograd_output
        self._output.argtypes = [ctypes.c_int, ptr, i64, i64, i64, ptr, i64, i64]
        self._output.restype = ctypes.c_int
        self._conv = lib.instyle_winograd_conv
        self._conv.argtypes = [
            *(ctypes.c_int, ctypes.c_int, ptr, i64, i64, i64, i64, i64),  # (m, r, src, sy, sx, c_in, h, w)
            *(ptr, i64, i64, ptr, ptr, i64, i64, i64),  # (kernel, its columns, c_out, bias, dst, dy, dx, group)
            ctypes.c_int,  # phases
            ptr,  # stats
        ]
        self._conv.restype = ctypes.c_int
        #: output channels per product block: a C_out of this multiple runs fastest
        self.conv_block_channels = int(lib.instyle_winograd_block_channels())
        #: the transformed kernel's columns come in multiples of this (zero past C_out)
        self.kernel_columns = int(lib.instyle_winograd_kernel_columns())
        self._affine = {  # (src, dst) dtypes
            (torch.float32, torch.float32): lib.instyle_affine_act_f32,
            (torch.bfloat16, torch.bfloat16): lib.instyle_affine_act_bf16,
            (torch.bfloat16, torch.float32): lib.instyle_affine_act_bf16_f32,
        }
        for fn in self._affine.values():
            fn.argtypes = [ptr, i64, i64, ptr, i64, i64, i64, i64, i64, ptr, ptr, ctypes.c_float, ctypes.c_int]
            fn.restype = ctypes.c_int
        self._phases = {
            torch.float32: lib.instyle_phases_affine_act_f32,
            torch.bfloat16: lib.instyle_phases_affine_act_bf16,
        }
        for fn in self._phases.values():
            fn.argtypes = [ptr, i64, i64, i64, i64, i64, ptr, i64, i64, i64, i64, ptr, ptr, ctypes.c_float]
            fn.restype = ctypes.c_int
        self._moments = {torch.float32: lib.instyle_moments_f32, torch.bfloat16: lib.instyle_moments_bf16}
        for fn in self._moments.values():
            fn.argtypes = [ptr, i64, i64, i64, i64, i64, ptr, ptr]
            fn.restype = ctypes.c_int

    def moments(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and biased variance per channel, (C,) float32, of ``src``: an (H, W, C) float32 or
        bf16 view with its channels contiguous and at least one pixel (one read, float64 sums)."""
        h, w, c = src.shape
        _check(src, "src", (torch.float32, torch.bfloat16))
        if h * w == 0:
            raise ValueError("moments of an empty map")
        mean, var = torch.empty(c), torch.empty(c)
        iy, ix, _ = src.stride()
        if self._moments[src.dtype](src.data_ptr(), iy, ix, h, w, c, mean.data_ptr(), var.data_ptr()) != 0:
            raise MemoryError("the native moments kernel could not allocate its accumulators")
        return mean, var

    def affine_act(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        scale: torch.Tensor,
        shift: torch.Tensor,
        slope: float,
        accumulate: bool = False,
    ) -> None:
        """``dst`` (+)= act(``src`` * scale + shift) per channel, act(v) = v < 0 ? ``slope`` v : v:
        (H, W, C) float32 or bf16 views, channels contiguous, ``dst`` of ``src``'s dtype or, from
        bf16, float32; ``scale``, ``shift`` (C,) float32. ``dst`` may be ``src`` itself (each
        element is read before it is written)."""
        h, w, c = src.shape
        _check(src, "src", (torch.float32, torch.bfloat16))
        _check(dst, "dst", tuple(d for s, d in self._affine if s == src.dtype))
        if dst.shape != src.shape:
            raise ValueError(f"dst {tuple(dst.shape)} and src {tuple(src.shape)} differ")
        _check_affine(scale, shift, c)
        (iy, ix, _), (oy, ox, _) = src.stride(), dst.stride()
        fn = self._affine[src.dtype, dst.dtype]
        fn(
            src.data_ptr(),
            iy,
            ix,
            dst.data_ptr(),
            oy,
            ox,
            h,
            w,
            c,
            scale.data_ptr(),
            shift.data_ptr(),
            slope,
            accumulate,
        )

    def phases_affine_act(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        phase_offsets: tuple[int, int],
        scale: torch.Tensor,
        shift: torch.Tensor,
        slope: float,
    ) -> None:
        """The four phases of an upsampling's 2x2 convolution, normalized and activated in one pass:
        ``src`` (h + 1, w + 1, 4 C), phase (a, b) of channel k at (i + a, j + b) in channel (2 a + b)
        C + k (``stylenet.fast.ShiftedPhases``); ``dst`` (h, w, C) the view phase (0, 0) is written
        to, phase (a, b) at ``dst``'s element offset a ``phase_offsets[0]`` + b ``phase_offsets[1]``
        (the interleaved map's row and pixel strides, or 2 C and C in a space-to-depth map), of
        ``src``'s dtype; ``scale``, ``shift`` (C,) float32; act as for ``affine_act``."""
        h, w, c = dst.shape
        _check(src, "src", tuple(self._phases))
        _check(dst, "dst", (src.dtype,))
        if src.shape != (h + 1, w + 1, 4 * c):
            raise ValueError(f"src {tuple(src.shape)} does not hold the four phases of dst {tuple(dst.shape)}")
        _check_affine(scale, shift, c)
        if min(phase_offsets) < 0:
            raise ValueError("the phases' offsets must not be negative")
        (iy, ix, _), (oy, ox, _) = src.stride(), dst.stride()
        pa, pb = phase_offsets
        self._phases[src.dtype](
            *(src.data_ptr(), iy, ix, h, w, c, dst.data_ptr(), oy, ox, pa, pb),
            *(scale.data_ptr(), shift.data_ptr(), slope),
        )

    def winograd_input(self, m: int, src: torch.Tensor, u: torch.Tensor, rows: int, cols: int) -> None:
        """``u`` (n², rows x cols, C_in) := B^T d B of each tile of F(m x m, 3 x 3) (n = m + 2),
        tile (r, q) read from ``src`` (H, W, C_in) at pixels (m r + i, m q + j), i, j < n."""
        c_in = src.shape[2]
        n = m + 2
        _check(src, "src")
        if not u.is_contiguous() or u.dtype != torch.float32 or u.shape != (n * n, rows * cols, c_in):
            raise ValueError(f"u must be a contiguous float32 ({n * n}, {rows * cols}, {c_in}) tensor")
        if src.shape[0] < m * rows + 2 or src.shape[1] < m * cols + 2:
            raise ValueError(f"src {tuple(src.shape)} is too small for {rows} x {cols} tiles of {n}")
        sy, sx, _ = src.stride()
        if self._input(m, src.data_ptr(), sy, sx, c_in, rows, cols, u.data_ptr()) != 0:
            raise ValueError(f"no Winograd transform for m = {m}")

    def winograd_output(self, m: int, prods: torch.Tensor, dst: torch.Tensor, rows: int, cols: int) -> None:
        """``dst`` (H, W, C_out) pixels (m r + i, m q + j), i, j < m := A^T M A of each tile's
        products ``prods`` (n², rows x cols, C_out)."""
        c_out = dst.shape[2]
        n = m + 2
        _check(dst, "dst")
        if not prods.is_contiguous() or prods.dtype != torch.float32 or prods.shape != (n * n, rows * cols, c_out):
            raise ValueError(f"prods must be a contiguous float32 ({n * n}, {rows * cols}, {c_out}) tensor")
        if dst.shape[0] < m * rows or dst.shape[1] < m * cols:
            raise ValueError(f"dst {tuple(dst.shape)} is too small for {rows} x {cols} tiles of {m}")
        dy, dx, _ = dst.stride()
        if self._output(m, prods.data_ptr(), c_out, rows, cols, dst.data_ptr(), dy, dx) != 0:
            raise ValueError(f"no Winograd transform for m = {m}")

    def pack_kernel(self, kernel: torch.Tensor) -> torch.Tensor:
        """A transformed kernel (n², C_in, C) as ``winograd_conv`` takes it: (n², P, C_in, NR)
        float32, its columns zero-padded to P panels of NR = ``conv_block_channels`` and each
        panel's (C_in, NR) values contiguous, the order the products read them in."""
        if kernel.dim() != 3:
            raise ValueError(f"a transformed kernel is (n², C_in, C), got {tuple(kernel.shape)}")
        nn_, c_in, c = kernel.shape
        block = self.conv_block_channels
        panels = -(-c // block)
        padded = F.pad(kernel.float(), (0, panels * block - c))
        return padded.reshape(nn_, c_in, panels, block).permute(0, 2, 1, 3).contiguous()

    def winograd_conv(
        self,
        m: int,
        src: torch.Tensor,
        kernel: torch.Tensor,
        dst: torch.Tensor,
        group: int,
        r: int = 3,
        bias: torch.Tensor | None = None,
        phases: bool = False,
        stats: torch.Tensor | None = None,
    ) -> None:
        """``dst`` (H, W, C_out) := the unpadded r x r convolution of ``src`` (at least H + r - 1 by
        W + r - 1 pixels, C_in) by Winograd's F(m x m, r x r) (F(2x2, 3x3), F(4x4, 3x3), F(6x6,
        3x3), F(8x8, 3x3), F(3x3, 2x2), F(7x7, 2x2), F(4x4, 5x5), F(6x6, 5x5); sides that are not
        multiples of m end in partial tiles), plus ``bias`` ((C_out,) float32, or none): ``kernel``
        is the transformed kernel (n², C_in, C_out), n = m + r - 1, as ``pack_kernel`` packs it. Each thread
        transforms, multiplies and transforms back ``group`` tiles at a time in its own buffers.
        ``phases``: the convolution's output is a 2x2 space-to-depth map (H / 2 x W / 2 pixels of
        C_out = 4 C channels, phase-major) and ``dst`` (H, W, C, sides even) receives it at full
        resolution: channel q C + c at (y, x) is ``dst``'s channel c at (2 y + q // 2, 2 x + q % 2).
        ``stats``: a (2, C_out) float64 tensor the output channels' sums and sums of squares are
        added to, as the outputs are written (float64)."""
        _check(src, "src")
        _check(dst, "dst")
        scale = 2 if phases else 1
        h, w = dst.shape[0] // scale, dst.shape[1] // scale
        c_in, c_out, n = src.shape[2], dst.shape[2] * scale**2, m + r - 1
        if phases and (dst.shape[0] % 2 or dst.shape[1] % 2):
            raise ValueError(f"dst {tuple(dst.shape)}: a map written from 2x2 phases needs even sides")
        columns = -(-c_out // self.kernel_columns) * self.kernel_columns
        packed = (n * n, -(-c_out // self.conv_block_channels), c_in, self.conv_block_channels)
        if not kernel.is_contiguous() or kernel.dtype != torch.float32 or kernel.shape != packed:
            raise ValueError(
                f"kernel must be a contiguous float32 {packed} tensor, the ({n * n}, {c_in}, {c_out})"
                " transformed kernel as pack_kernel packs it"
            )
        if bias is not None and (bias.dtype != torch.float32 or bias.shape != (c_out,) or not bias.is_contiguous()):
            raise ValueError(f"bias must be a contiguous float32 ({c_out},) tensor")
        if src.shape[0] < h + r - 1 or src.shape[1] < w + r - 1:
            raise ValueError(f"src {tuple(src.shape)} is too small for {h} x {w} outputs of a {r}x{r} convolution")
        bad_stats = stats is not None and (stats.dtype != torch.float64 or stats.shape != (2, c_out))
        if bad_stats or (stats is not None and not stats.is_contiguous()):
            raise ValueError(f"stats must be a contiguous float64 (2, {c_out}) tensor")
        (sy, sx, _), (dy, dx, _) = src.stride(), dst.stride()
        bias_ptr = None if bias is None else bias.data_ptr()
        done = self._conv(
            *(m, r, src.data_ptr(), sy, sx, c_in, h, w),
            *(kernel.data_ptr(), columns, c_out, bias_ptr, dst.data_ptr(), dy, dx, group),
            *(phases, None if stats is None else stats.data_ptr()),
        )
        if done == -1:
            raise ValueError(f"no Winograd transform for m = {m}, r = {r}")
        if done == -3:
            raise MemoryError("the native Winograd convolution could not allocate its buffers")
        if done != 0:
            raise ValueError(f"the native Winograd convolution refused its arguments ({done})")


def _check_affine(scale: torch.Tensor, shift: torch.Tensor, channels: int) -> None:
    for t in (scale, shift):
        if t.dtype != torch.float32 or t.shape != (channels,) or not t.is_contiguous():
            raise ValueError(f"scale and shift must be contiguous float32 ({channels},) tensors")


def _check(t: torch.Tensor, name: str, dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> None:
    if t.dtype not in dtypes or t.device.type != "cpu" or t.dim() != 3 or (t.stride(2) != 1 and t.shape[2] > 1):
        kinds = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise ValueError(f"{name} must be a {kinds} CPU (H, W, C) view with its channels contiguous")
    if min(t.stride()) < 0:
        raise ValueError(f"{name} must not have negative strides")


@functools.cache
def library() -> Kernels | None:
    """The native kernels, built if need be; None when off (``INSTYLE_NATIVE=0``), without a
    compiler, or when the build fails (logged once: the callers' torch paths run instead)."""
    if not enabled():
        log.info("native kernels off (INSTYLE_NATIVE)")
        return None
    try:
        path = build()
        try:
            return Kernels(path)
        except (OSError, AttributeError) as exc:  # a damaged or foreign file under our name: once more
            log.warning("native kernels at %s do not load (%s); building them again", path, exc)
            path.unlink(missing_ok=True)
            return Kernels(build())
    except (NativeError, OSError, AttributeError) as exc:
        log.warning("native kernels unavailable, using torch's ops instead: %s", exc)
        return None


def main() -> int:
    from stylenet import winograd

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not enabled():
        print("native kernels are off (INSTYLE_NATIVE); nothing to build")
        return 0
    try:
        kernels = Kernels(build())
    except (NativeError, OSError) as exc:
        print(f"native kernels unavailable ({exc}); the engine runs torch's ops instead")
        return 0  # not an error: everything runs without them
    worst = winograd.self_check(kernels)
    print(f"native kernels: {kernels.path} (largest difference from torch's transforms: {worst:.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
