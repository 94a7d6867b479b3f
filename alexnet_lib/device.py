"""Device, precision and hardware facts: the one place that knows what this machine can compute.

* :func:`select_device`, :func:`model_device`, :func:`sync`: which device, which device a model is on,
  wait for it;
* :func:`autocast_dtype`, :func:`amp_dtype`, :func:`autocast`: which low precision the device computes
  natively, what a ``precision`` argument means on it, and the one autocast context the library uses;
* :func:`cpu_flags`, :func:`cpu_name`, :func:`bf16_hardware`, :func:`describe`: what the hardware is
  (nothing else in the package reads ``/proc/cpuinfo``);
* :func:`peak_stats`, :func:`matmul_peak`, :func:`conv_peak`: the FLOP/s the hardware delivers on the
  friendliest workloads, measured;
* :func:`keep_freed_memory`, :func:`can_keep_freed_memory`: host memory that tensors free stays in the
  process for the next step (glibc), as PyTorch's caching allocator does on a GPU;
  :func:`page_faults`, :func:`peak_memory`: what not keeping it costs, and what keeping it holds.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import time

import torch
from torch import nn

from . import checks

__all__ = ["DTYPE_NAMES", "PRECISIONS", "amp_dtype", "autocast", "autocast_dtype", "bf16_hardware",
           "can_keep_freed_memory", "conv_peak", "cpu_flags", "cpu_name", "describe", "keep_freed_memory",
           "matmul_peak", "model_device", "page_faults", "peak_memory", "peak_stats", "select_device", "sync"]

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32", torch.float32: "fp32"}
_DEVICE_TYPES = ("cpu", "cuda", "mps")


# --- which device ----------------------------------------------------------------------------------

def select_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else the best available: cuda, then mps, then cpu.

    A device that does not exist here is a ``ValueError`` that says which ones do."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a device: use 'cpu', 'cuda', 'cuda:1', 'mps' or None "
                         f"(the best available) ({exc})") from None
    mps = getattr(torch.backends, "mps", None)
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": mps is not None and mps.is_available()}
    if dev.type not in _DEVICE_TYPES or not available[dev.type]:
        here = ", ".join(t for t in _DEVICE_TYPES if available.get(t))
        raise ValueError(f"device={device!r} is not available on this machine; available: {here} "
                         "(or None for the best of them)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model with neither."""
    t = next(model.parameters(), None)
    if t is None:
        t = next(model.buffers(), None)
    return t.device if t is not None else torch.device("cpu")


def sync(device: torch.device) -> None:
    """Wait for the device to finish its queued work (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# --- which precision -------------------------------------------------------------------------------

@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the Linux kernel reports them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _cpu_has_bf16() -> bool:
    try:
        if torch.backends.cpu.get_cpu_capability().upper() in ("AMX", "AVX512_BF16"):
            return True
    except Exception:  # older torch: no get_cpu_capability
        pass
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """torch.bfloat16 where the device computes in bf16 natively, else None (train in fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            ok = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:
            ok = torch.cuda.is_bf16_supported()
        return torch.bfloat16 if ok else None
    if device.type == "cpu":
        return torch.bfloat16 if _cpu_has_bf16() else None
    return None


def amp_dtype(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype ``fit`` and ``evaluate`` use for ``precision`` on ``device`` (None = fp32).

    'auto' is bf16 where the device computes it natively, fp16 on a CUDA GPU without bf16 (a T4 or
    V100: its tensor cores compute fp16; ``fit`` then scales the loss with a ``GradScaler`` so that
    small gradients do not underflow), fp32 elsewhere."""
    checks.choice(precision, "precision", PRECISIONS)
    device = torch.device(device)
    if precision == "auto":
        return autocast_dtype(device) or (torch.float16 if device.type == "cuda" else None)
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def autocast(device: str | torch.device, dtype: torch.dtype | None):
    """The autocast context for ``dtype`` on ``device`` (``None``: plain fp32, autocast off)."""
    device = torch.device(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# --- host memory -----------------------------------------------------------------------------------

# glibc's <malloc.h>: mallopt parameters, and the values keep_freed_memory leaves behind on exit
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_MMAP_THRESHOLD_AFTER = 32 * 2**20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: the most glibc's own threshold
_TRIM_THRESHOLD_AFTER = 64 * 2**20  # rises to; trimming at twice that, as glibc pairs them
_MMAP_MAX_DEFAULT = 65536
_kept = {"depth": 0}


@functools.cache
def _glibc():
    """The C library when it is glibc (Linux), with mallopt and malloc_trim; else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes, libc.malloc_trim.argtypes = [ctypes.c_int, ctypes.c_int], [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


def can_keep_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` can change anything here: the C library is glibc (Linux). It
    cannot tell whether another allocator (jemalloc or tcmalloc through ``LD_PRELOAD``) serves
    ``malloc`` instead; the settings then change nothing."""
    return _glibc() is not None


def peak_memory() -> int | None:
    """The most resident memory this process has used so far, in bytes (``ru_maxrss``; shared library
    pages included); None where the platform does not report it."""
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError, AttributeError):
        return None
    return rss if platform.system() == "Darwin" else rss * 1024  # bytes on macOS, KiB on Linux


def page_faults() -> int | None:
    """Minor page faults of this process so far (pages the kernel had to map, and zero-fill where they
    are new, on first touch; ``resource.getrusage``); None where the platform does not count them."""
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    except (ImportError, OSError, AttributeError):
        return None


@contextlib.contextmanager
def keep_freed_memory():
    """Within the block, host memory that tensors free stays in the process for reuse; yields whether it
    can (True with glibc on Linux; elsewhere the block runs unchanged and it yields False).

    PyTorch's CPU tensors come from the C library (``posix_memalign``, an aligned ``malloc``). glibc
    serves a block at or above its mmap threshold, when no free space in its heap fits it, with a fresh
    mapping from the operating system and unmaps it when it is freed; it raises the threshold to the size
    of each freed mapped block of at most 32 MiB (larger ones leave it unchanged), and it also returns
    free memory at the top of its heap beyond a trim threshold (128 KiB at first, then twice the mmap
    threshold). The kernel zero-fills the pages of a fresh mapping one page fault at a time as they are
    first touched, so a training step with single tensors over 32 MiB (AlexNet at 224 px, batch 128:
    activations, gradients, autocast's bf16 weight copies) usually pays that at every step; chapter 8
    measures what it costs. On a GPU, PyTorch's caching allocator keeps freed blocks for the same reason.
    Inside the block glibc neither maps large blocks separately (``M_MMAP_MAX`` = 0) nor trims its heap
    (``M_TRIM_THRESHOLD`` = -1), so from the second step on the same memory is reused; the process keeps
    the most memory it needed at any moment (more if the heap fragments). Exceptions: in threads other
    than the main one, blocks over 64 MiB are still mapped separately; and an allocator loaded with
    ``LD_PRELOAD`` (jemalloc, tcmalloc) ignores these settings. On exit large blocks are mapped again and
    ``malloc_trim(0)`` hands the memory the block kept back to the system; the thresholds then stay fixed
    at 32 MiB (mmap) and 64 MiB (trim), at or above where glibc's own would have settled (setting any of
    them ends glibc's adjustment, and replaces ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` from
    the environment). Blocks nest; only the outermost restores."""
    libc = _glibc()
    if libc is None:
        yield False
        return
    if _kept["depth"] == 0:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, -1)
    _kept["depth"] += 1
    try:
        yield True
    finally:
        _kept["depth"] -= 1
        if _kept["depth"] == 0:
            libc.mallopt(_M_MMAP_MAX, _MMAP_MAX_DEFAULT)
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_AFTER)
            libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_AFTER)
            libc.malloc_trim(0)


# --- what the hardware is --------------------------------------------------------------------------

def cpu_name() -> str:
    """The CPU's model name (e.g. 'AMD EPYC'), or what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_hardware(device=None) -> str:
    """What computes bfloat16 on ``device``: 'AMX' or 'AVX-512 BF16' on an x86 CPU (from the kernel's
    CPU flags), the GPU's name on CUDA, 'none' where bf16 autocast is off (fp32 training).

    The answer sets the ceiling of a bf16 loop: AVX-512 BF16 does twice the multiply-adds of an fp32
    instruction, AMX's tile instructions many times more."""
    device = select_device(device)
    if autocast_dtype(device) is None:
        return "none"
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    flags = cpu_flags()
    if not flags:
        return "bf16 (CPU flags unknown)"
    return "AMX" if "amx_bf16" in flags else "AVX-512 BF16" if "avx512_bf16" in flags else "bf16"


def describe(device=None) -> dict:
    """The device, CPU, torch version and the precision 'auto' picks: what produced a set of outputs."""
    device = select_device(device)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "cpu": f"{cpu_name()} ({os.cpu_count()} logical cores; torch threads: {torch.get_num_threads()})",
        "bf16 hardware": bf16_hardware(device),
        "torch": torch.__version__,
        "precision": str(amp_dtype("auto", device) or torch.float32).replace("torch.", ""),
    }


# --- measured peaks --------------------------------------------------------------------------------

def matmul_peak(dtype: torch.dtype = torch.float32, device=None, n: int | None = None, seconds: float = 0.5,
                repeats: int = 3) -> float:
    """Best GFLOP/s of an ``n x n`` matrix multiplication in ``dtype`` over ``repeats`` bursts of about
    ``seconds`` each: what the hardware delivers on the friendliest workload there is. ``n`` defaults to
    2048 on a CPU, 8192 on a GPU. fp32 means true fp32 (TF32 off during the measurement)."""
    return peak_stats(dtype, device, "matmul", n, seconds, repeats)["wall"]


def conv_peak(dtype: torch.dtype = torch.float32, device=None, seconds: float = 0.5,
              repeats: int = 3) -> float:
    """Best GFLOP/s of a large 3x3 convolution (256 -> 256 channels, 16x16 maps, batch 64 on a CPU, 256
    on a GPU, channels_last). On some CPUs oneDNN's convolutions run faster than the BLAS library behind
    ``torch.matmul`` in fp32 (e.g. MKL on AMD processors), so a matmul alone can understate the peak."""
    return peak_stats(dtype, device, "conv", None, seconds, repeats)["wall"]


def _peak_op(kind: str, dtype: torch.dtype, device: torch.device, n: int | None):
    """(operation, FLOPs per call) for the peak measurement of ``kind``."""
    g = torch.Generator(device="cpu").manual_seed(0)
    if kind == "matmul":
        n = n or (2048 if device.type == "cpu" else 8192)
        a = torch.randn(n, n, generator=g).to(device, dtype)
        b = torch.randn(n, n, generator=g).to(device, dtype)
        return (lambda: a @ b), 2 * n**3
    batch = 64 if device.type == "cpu" else 256
    cl = torch.channels_last
    x = torch.randn(batch, 256, 16, 16, generator=g).to(device, dtype).contiguous(memory_format=cl)
    w = torch.randn(256, 256, 3, 3, generator=g).to(device, dtype).contiguous(memory_format=cl)
    return (lambda: torch.nn.functional.conv2d(x, w, padding=1)), 2 * batch * 16 * 16 * 256 * 256 * 9


def peak_stats(dtype: torch.dtype = torch.float32, device=None, kind: str = "matmul", n: int | None = None,
               seconds: float = 0.5, repeats: int = 3) -> dict:
    """Like :func:`matmul_peak` (``kind='matmul'``) or :func:`conv_peak` (``kind='conv'``), returning
    ``{'wall': best GFLOP/s, 'cpu': best GFLOP per CPU-second of this process}``. The second hardly
    drops when other processes take CPU time (provided waiting threads do not spin:
    ``OMP_WAIT_POLICY=PASSIVE``)."""
    checks.choice(kind, "kind", ("matmul", "conv"))
    checks.number(seconds, "seconds", minimum=0, min_open=True)
    checks.integer(repeats, "repeats")
    checks.optional_integer(n, "n")
    device = select_device(device)
    op, flop = _peak_op(kind, dtype, device, n)
    old = torch.get_float32_matmul_precision()
    # fp32 matmuls in true fp32 (no TF32), as the tutorial loop runs them; cuDNN's fp32 convolutions keep
    # PyTorch's default (TF32 allowed on GPUs that have it), also as in the tutorial loop
    torch.set_float32_matmul_precision("highest")
    try:
        op()  # warm-up
        sync(device)
        t = time.perf_counter()
        op()
        sync(device)
        k = max(1, int(seconds / max(time.perf_counter() - t, 1e-6)))
        best = {"wall": 0.0, "cpu": 0.0}
        for _ in range(repeats):
            sync(device)
            t, c = time.perf_counter(), time.process_time()
            for _ in range(k):
                op()
            sync(device)
            gflop = k * flop / 1e9
            best["wall"] = max(best["wall"], gflop / (time.perf_counter() - t))
            best["cpu"] = max(best["cpu"], gflop / max(time.process_time() - c, 1e-9))
        return best
    finally:
        torch.set_float32_matmul_precision(old)
