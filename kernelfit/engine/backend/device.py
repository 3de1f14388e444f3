"""The benchmark's devices: which backends run here (:func:`probe`) and their own matmul peak.

:func:`matmul_peak` times a warmed square GEMM on the SAME device and dtype as
the benchmarked factor (NumPy: ``A @ B``; CuPy; PyTorch: ``torch.matmul``,
synchronized), and :func:`no_tf32` keeps float32 products in true float32 on
CUDA while both are measured. A library that is not installed or has no
device is reported in :class:`Device`'s ``skipped``, never raised.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kernelfit.engine.sizes import PEAK_REPS, PEAK_SIZE, machine_memory

_find_spec = importlib.util.find_spec      # a name of our own: tests hide a library with it


# -- backends: what is there, and its device ------------------------------------------------
@dataclass
class Device:
    backend: str
    device: str | None = None      # "cpu", "cuda", "cuda:0"; None when skipped
    name: str = ""
    versions: dict = field(default_factory=dict)
    skipped: str | None = None     # why the backend does not run here


def machine_label() -> str:
    """This machine in result names and records: usable cores and memory, e.g. "2cpu-24gb"."""
    return f"{len(os.sched_getaffinity(0))}cpu-{round(machine_memory() / 2 ** 30)}gb"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe(backend: str, device: str | None = None) -> Device:
    """Whether ``backend`` runs here and on which device; never raises for a missing one."""
    import os
    cpu = f"{_cpu_name()} ({os.cpu_count()} logical cores)"
    if backend == "numpy":
        return Device("numpy", "cpu", cpu, {"numpy": np.__version__})
    lib = {"torch": "torch", "cupy": "cupy"}[backend]
    if _find_spec(lib) is None:
        return Device(backend, skipped=f"{lib} is not installed (pip install {lib}); "
                                       f"backend {backend!r} not measured")
    mod = importlib.import_module(lib)
    info = {lib: mod.__version__}
    if backend == "torch":
        dev = device or ("cuda" if mod.cuda.is_available() else "cpu")
        if dev.startswith("cuda"):
            if not mod.cuda.is_available():
                why = f"device {dev!r} asked for, but PyTorch {mod.__version__} sees no CUDA device"
                return Device(backend, skipped=why, versions=info)
            info["cuda"] = mod.version.cuda
            return Device(backend, dev, mod.cuda.get_device_name(mod.device(dev)), info)
        return Device(backend, "cpu", cpu, info)
    try:
        count = mod.cuda.runtime.getDeviceCount()
    except Exception as err:     # CuPy raises its own runtime errors without a driver
        return Device(backend, skipped=f"CuPy {mod.__version__} finds no CUDA device "
                                       f"({type(err).__name__}: {err})", versions=info)
    if count == 0:
        return Device(backend, skipped="CuPy finds no CUDA device", versions=info)
    props = mod.cuda.runtime.getDeviceProperties(0)
    return Device(backend, "cuda:0", props["name"].decode(), info)   # pragma: no cover


# -- the device's own matmul peak -------------------------------------------------------------
def matmul_peak(dev: Device, dtype: str, size: int | None = None, reps: int = PEAK_REPS) -> dict:
    """Best-of-``reps`` GFLOP/s of a size^3 matmul on ``dev`` in ``dtype`` (2 size^3 flops)."""
    from kernelfit.engine.backend import get_backend

    kind = "cuda" if dev.device.startswith("cuda") else "cpu"
    s = size or PEAK_SIZE[kind]
    gflops = get_backend(dev.backend, dev.device).matmul_gflops(dtype, s, reps)
    return {"gflops": gflops, "size": s, "seconds": 2 * s**3 / (gflops * 1e9)}


@contextmanager
def no_tf32():
    """float32 matmuls in true float32 on CUDA (peak and factor alike); restored afterwards."""
    if _find_spec("torch") is None:
        yield
        return
    torch = importlib.import_module("torch")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])
