"""GPU actuation: power caps and clocks through NVML or in memory, per job and per GPU index.

Modules: :mod:`~greencpn.actuate.gpu.errors` (typed errors, the NVML code mapping),
:mod:`~greencpn.actuate.gpu.base` (the read-before-write logic every backend shares,
``apply_power_limits``), :mod:`~greencpn.actuate.gpu.nvml` (the NVIDIA driver),
:mod:`~greencpn.actuate.gpu.fake` (in memory), :mod:`~greencpn.actuate.gpu.jobs` (a Slurm job's
GPU indices, per-index caps), :mod:`~greencpn.actuate.gpu.meter` (energy per job).

This package module is the factory — choosing a backend by name:
``get_gpu_backend("nvml" | "fake")``, ``nvml_available()``. The backends import the base, the
factory imports the backends; no import circle between them.
"""

from __future__ import annotations

from typing import Any

from greencpn.actuate.gpu.base import BaseGpuBackend
from greencpn.actuate.gpu.errors import (
    GpuInvalidArgumentError,
    GpuPermanentError,
    GpuTemporaryError,
)
from greencpn.actuate.gpu.fake import FakeGpuBackend
from greencpn.actuate.gpu.nvml import NvmlGpuBackend  # pynvml is loaded when a backend is created


def get_gpu_backend(kind: str = "nvml", **options: Any) -> BaseGpuBackend:
    """Create a GPU backend by name.

    Args:
        kind: ``"nvml"`` (the NVIDIA driver), ``"fake"`` (in memory) or ``"auto"`` (nvml if a
            driver answers, else raise).
        **options: passed to the backend's constructor.

    Raises:
        GpuDriverError: ``nvml``/``auto`` without a usable NVIDIA driver.
        GpuInvalidArgumentError: an unknown ``kind``.
    """
    kind = kind.lower()
    if kind in ("nvml", "auto"):
        return NvmlGpuBackend(**options)
    if kind == "fake":
        return FakeGpuBackend(**options)
    raise GpuInvalidArgumentError(
        f"unknown GPU backend {kind!r} — use 'nvml' or 'fake'", operation="get_gpu_backend"
    )


def nvml_available() -> bool:
    """True when pynvml imports and an NVIDIA driver answers nvmlInit (no exception escapes)."""
    try:
        backend = get_gpu_backend("nvml")
    except (GpuPermanentError, GpuTemporaryError):
        return False
    backend.close()
    return True
