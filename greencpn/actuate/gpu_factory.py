"""Choosing a GPU backend by name: ``get_gpu_backend("nvml" | "fake")``, ``nvml_available()``.

The factory lives apart from :mod:`greencpn.actuate.gpu` (the shared base class and the NVML
error mapping) so that the backends import the base and the factory imports the backends, with
no import circle between them.
"""

from __future__ import annotations

from typing import Any

from greencpn.actuate.fake_gpu import FakeGpuBackend
from greencpn.actuate.gpu import (
    BaseGpuBackend,
    GpuInvalidArgumentError,
    GpuPermanentError,
    GpuTemporaryError,
)
from greencpn.actuate.nvml import NvmlGpuBackend  # pynvml is loaded when a backend is created


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
