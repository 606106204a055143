"""GPU backend on the NVIDIA driver through nvidia-ml-py (``pynvml``).

``pynvml`` is imported when the backend is created, never when greencpn is imported, so
machines without the driver (or without the package) can still run everything else.

NVML units: power limits and power in milliwatts, energy in millijoules, clocks in MHz; this
module converts at the boundary and the public API speaks W and J. Clocks are locked with
``nvmlDeviceSetGpuLockedClocks`` / ``nvmlDeviceResetGpuLockedClocks``; application clocks are
deprecated by NVIDIA and are not used.

Changing limits and clocks needs root (or the greencpn agent running as root); reading does not.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from greencpn.actuate.gpu.base import BaseGpuBackend
from greencpn.actuate.gpu.errors import (
    NVML_ERROR_INVALID_ARGUMENT,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    GpuDriverError,
    GpuInvalidArgumentError,
    GpuNotSupportedError,
    error_from_nvml_code,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class NvmlGpuBackend(BaseGpuBackend):
    """The NVIDIA driver via NVML.

    Args:
        library_path: optional full path of ``libnvidia-ml.so.1`` for drivers installed outside
            the loader's search path. It is loaded by path before ``nvmlInit``; pynvml's own
            ``CDLL("libnvidia-ml.so.1")`` then resolves to it through its SONAME.

    Raises:
        GpuDriverError: nvidia-ml-py is not installed, or no NVIDIA driver answers.
        GpuPermanentError / GpuTemporaryError: nvmlInit failed for another reason.

    The backend is a context manager; :meth:`close` calls ``nvmlShutdown``. Device handles are
    looked up once and cached. Calls are serialised by a lock (NVML is thread-safe, but the
    bookkeeping in :class:`BaseGpuBackend` is not).
    """

    name = "nvml"

    def __init__(self, *, library_path: str | None = None) -> None:
        super().__init__()
        try:
            import pynvml
        except ImportError as exc:  # pragma: no cover - the package is a dependency
            raise GpuDriverError(
                "nvidia-ml-py (pynvml) is not installed — pip install nvidia-ml-py, "
                "or use the 'fake' GPU backend",
                operation="init",
            ) from exc
        self._nvml: Any = pynvml
        self._lock = threading.RLock()
        self._handles: dict[int, Any] = {}
        self._clocks: dict[int, tuple[int, ...]] = {}
        self._n: int | None = None
        self._open = False
        if library_path is not None:
            try:
                ctypes.CDLL(library_path)
            except OSError as exc:
                raise error_from_nvml_code(
                    NVML_ERROR_LIBRARY_NOT_FOUND,
                    operation="init",
                    detail=f"cannot load {library_path}: {exc}",
                ) from exc
        self._call("init", None, pynvml.nvmlInit)
        self._open = True

    # --- plumbing ---------------------------------------------------------------------------

    def _call(self, operation: str, index: int | None, fn: Callable[..., T], *args: Any) -> T:
        """Call a pynvml function, turning NVMLError into greencpn's typed errors."""
        try:
            with self._lock:
                return fn(*args)
        except self._nvml.NVMLError as exc:
            raise error_from_nvml_code(
                int(exc.value), operation=operation, gpu_index=index
            ) from exc

    def _handle(self, index: int) -> Any:
        handle = self._handles.get(index)
        if handle is None:
            handle = self._call("get_handle", index, self._nvml.nvmlDeviceGetHandleByIndex, index)
            self._handles[index] = handle
        return handle

    def driver_version(self) -> str:
        """The NVIDIA driver version string."""
        return _text(self._call("driver_version", None, self._nvml.nvmlSystemGetDriverVersion))

    def close(self) -> None:
        """Shut NVML down (once); the backend cannot be used afterwards."""
        super().close()
        if self._open:
            self._open = False
            self._handles.clear()
            try:
                self._call("shutdown", None, self._nvml.nvmlShutdown)
            except Exception as exc:  # noqa: BLE001 - closing must not raise on exit paths
                log.warning("nvmlShutdown failed: %s", exc)

    # --- primitives -------------------------------------------------------------------------

    def _count(self) -> int:
        if self._n is None:
            self._n = int(self._call("device_count", None, self._nvml.nvmlDeviceGetCount))
        return self._n

    def _identity(self, index: int) -> tuple[str, str]:
        h = self._handle(index)
        uuid = _text(self._call("get_uuid", index, self._nvml.nvmlDeviceGetUUID, h))
        name = _text(self._call("get_name", index, self._nvml.nvmlDeviceGetName, h))
        return uuid, name

    def _limit_range_mw(self, index: int) -> tuple[int, int]:
        lo, hi = self._call(
            "power_limit_range",
            index,
            self._nvml.nvmlDeviceGetPowerManagementLimitConstraints,
            self._handle(index),
        )
        return int(lo), int(hi)

    def _default_limit_mw(self, index: int) -> int:
        return int(
            self._call(
                "default_power_limit",
                index,
                self._nvml.nvmlDeviceGetPowerManagementDefaultLimit,
                self._handle(index),
            )
        )

    def _limit_mw(self, index: int) -> int:
        return int(
            self._call(
                "power_limit",
                index,
                self._nvml.nvmlDeviceGetPowerManagementLimit,
                self._handle(index),
            )
        )

    def _set_limit_mw(self, index: int, limit_mw: int) -> None:
        try:
            self._call(
                "set_power_limit_w",
                index,
                self._nvml.nvmlDeviceSetPowerManagementLimit,
                self._handle(index),
                limit_mw,
            )
        except GpuInvalidArgumentError as exc:
            # The driver refused the value: say which range it holds.
            lo, hi = self._range(index)
            raise error_from_nvml_code(
                NVML_ERROR_INVALID_ARGUMENT,
                operation="set_power_limit_w",
                gpu_index=index,
                detail=f"asked {limit_mw / 1000:g} W, device range "
                f"[{lo / 1000:g}, {hi / 1000:g}] W",
            ) from exc

    def _graphics_clocks_mhz(self, index: int) -> tuple[int, ...]:
        if index in self._clocks:
            return self._clocks[index]
        h = self._handle(index)
        nvml = self._nvml
        try:
            mem = self._call(
                "supported_memory_clocks", index, nvml.nvmlDeviceGetSupportedMemoryClocks, h
            )
            gfx: set[int] = set()
            for m in mem:
                gfx.update(
                    int(c)
                    for c in self._call(
                        "supported_graphics_clocks",
                        index,
                        nvml.nvmlDeviceGetSupportedGraphicsClocks,
                        h,
                        m,
                    )
                )
        except GpuNotSupportedError:
            gfx = set()  # e.g. GeForce boards: no clock table, but power caps may still work
        clocks = tuple(sorted(gfx, reverse=True))
        self._clocks[index] = clocks
        return clocks

    def _lock_clocks(self, index: int, min_mhz: int, max_mhz: int) -> None:
        self._call(
            "lock_clocks_mhz",
            index,
            self._nvml.nvmlDeviceSetGpuLockedClocks,
            self._handle(index),
            min_mhz,
            max_mhz,
        )

    def _reset_clocks(self, index: int) -> None:
        self._call(
            "reset_clocks", index, self._nvml.nvmlDeviceResetGpuLockedClocks, self._handle(index)
        )

    def _power_mw(self, index: int) -> int:
        return int(
            self._call("power_w", index, self._nvml.nvmlDeviceGetPowerUsage, self._handle(index))
        )

    def _energy_mj(self, index: int) -> int:
        return int(
            self._call(
                "energy_j",
                index,
                self._nvml.nvmlDeviceGetTotalEnergyConsumption,
                self._handle(index),
            )
        )
