"""GPU errors: typed by what the caller should do, and the mapping from NVML return codes.

Every NVML return code maps to an error typed by what the caller should do
(:func:`error_from_nvml_code`): a :class:`~greencpn.errors.TemporaryError` subclass when a retry
may help, a :class:`~greencpn.errors.PermanentError` subclass otherwise; the message says what
to do.
"""

from __future__ import annotations

from greencpn.errors import PermanentError, TemporaryError

# ---------------------------------------------------------------------------------------------
# NVML return codes (nvml.h; stable ABI, equal to pynvml.NVML_ERROR_*). Kept here so the mapping
# needs no pynvml import; tests check they match the installed bindings.
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22
NVML_ERROR_INSUFFICIENT_RESOURCES = 23
NVML_ERROR_FREQ_NOT_SUPPORTED = 24
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_DEPRECATED = 26
NVML_ERROR_NOT_READY = 27
NVML_ERROR_GPU_NOT_FOUND = 28
NVML_ERROR_INVALID_STATE = 29
NVML_ERROR_RESET_TYPE_NOT_SUPPORTED = 30
NVML_ERROR_UNKNOWN = 999


# ---------------------------------------------------------------------------------------------
# Typed errors


class GpuError:
    """Mixin carried by every GPU error: the NVML code (if any), the GPU and the operation."""

    nvml_code: int | None = None
    gpu_index: int | None = None
    operation: str | None = None

    def _set_context(
        self, nvml_code: int | None, gpu_index: int | None, operation: str | None
    ) -> None:
        self.nvml_code = nvml_code
        self.gpu_index = gpu_index
        self.operation = operation


class GpuPermanentError(GpuError, PermanentError):
    """A GPU fault retrying will not fix; the message says what to change."""

    def __init__(
        self,
        message: str,
        *,
        nvml_code: int | None = None,
        gpu_index: int | None = None,
        operation: str | None = None,
    ) -> None:
        super().__init__(message)
        self._set_context(nvml_code, gpu_index, operation)


class GpuTemporaryError(GpuError, TemporaryError):
    """A GPU fault that may clear by itself (timeout, busy, unknown); retry later."""

    def __init__(
        self,
        message: str,
        *,
        nvml_code: int | None = None,
        gpu_index: int | None = None,
        operation: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self._set_context(nvml_code, gpu_index, operation)


class GpuPermissionError(GpuPermanentError):
    """NVML_ERROR_NO_PERMISSION: changing limits or clocks needs root."""


class GpuNotSupportedError(GpuPermanentError):
    """NVML_ERROR_NOT_SUPPORTED (and kin): this GPU or driver cannot do the operation."""


class GpuInvalidArgumentError(GpuPermanentError):
    """NVML_ERROR_INVALID_ARGUMENT, or a value greencpn refused before calling NVML."""


class PowerLimitOutOfRangeError(GpuInvalidArgumentError):
    """A requested power limit lies outside the device's [min, max] range."""

    def __init__(
        self,
        message: str,
        *,
        gpu_index: int,
        requested_w: float,
        min_w: float,
        max_w: float,
        nvml_code: int | None = None,
    ) -> None:
        super().__init__(
            message, nvml_code=nvml_code, gpu_index=gpu_index, operation="set_power_limit_w"
        )
        self.requested_w = requested_w
        self.min_w = min_w
        self.max_w = max_w


class GpuNotFoundError(GpuPermanentError):
    """The GPU index does not exist (NVML_ERROR_NOT_FOUND / GPU_NOT_FOUND, or index out of range)."""


class GpuDriverError(GpuPermanentError):
    """No usable NVIDIA driver: library missing, driver not loaded, version mismatch."""


class GpuResetRequiredError(GpuPermanentError):
    """The GPU needs a reset or reboot (NVML_ERROR_RESET_REQUIRED / CORRUPTED_INFOROM)."""


class GpuLostError(GpuTemporaryError):
    """NVML_ERROR_GPU_IS_LOST: the GPU fell off the bus; retry later, alert if it persists."""


# code -> (class, what it means, what to do)
_NVML_ERRORS: dict[int, tuple[type[GpuPermanentError] | type[GpuTemporaryError], str, str]] = {
    NVML_ERROR_UNINITIALIZED: (
        GpuTemporaryError,
        "NVML is not initialised",
        "re-create the backend (nvmlInit) and retry",
    ),
    NVML_ERROR_INVALID_ARGUMENT: (
        GpuInvalidArgumentError,
        "the driver refused the value",
        "use a value inside the device's range (see list_gpus())",
    ),
    NVML_ERROR_NOT_SUPPORTED: (
        GpuNotSupportedError,
        "this GPU or driver does not support it",
        "leave this GPU out of power capping (set its pool to shadow mode)",
    ),
    NVML_ERROR_NO_PERMISSION: (
        GpuPermissionError,
        "insufficient permissions",
        "run as root or through the greencpn agent",
    ),
    NVML_ERROR_ALREADY_INITIALIZED: (
        GpuTemporaryError,
        "NVML already initialised",
        "retry; this is harmless",
    ),
    NVML_ERROR_NOT_FOUND: (
        GpuNotFoundError,
        "the GPU or object was not found",
        "check the GPU index against list_gpus()",
    ),
    NVML_ERROR_INSUFFICIENT_SIZE: (
        GpuTemporaryError,
        "buffer too small inside NVML bindings",
        "retry; if it persists, upgrade nvidia-ml-py",
    ),
    NVML_ERROR_INSUFFICIENT_POWER: (
        GpuPermanentError,
        "the GPU lacks external power",
        "check the GPU's power cables",
    ),
    NVML_ERROR_DRIVER_NOT_LOADED: (
        GpuDriverError,
        "no NVIDIA driver is loaded",
        "no NVIDIA driver: install/load it (nvidia-smi must work) or use the 'fake' GPU backend",
    ),
    NVML_ERROR_TIMEOUT: (GpuTemporaryError, "the driver timed out", "retry later"),
    NVML_ERROR_IRQ_ISSUE: (
        GpuTemporaryError,
        "interrupt problem talking to the GPU",
        "retry later; check dmesg if it persists",
    ),
    NVML_ERROR_LIBRARY_NOT_FOUND: (
        GpuDriverError,
        "libnvidia-ml.so.1 not found",
        "no NVIDIA driver: install it (nvidia-smi must work) or use the 'fake' GPU backend",
    ),
    NVML_ERROR_FUNCTION_NOT_FOUND: (
        GpuNotSupportedError,
        "the driver lacks this NVML function",
        "upgrade the NVIDIA driver",
    ),
    NVML_ERROR_CORRUPTED_INFOROM: (
        GpuResetRequiredError,
        "the GPU's infoROM is corrupted",
        "take the GPU out of service and contact the vendor",
    ),
    NVML_ERROR_GPU_IS_LOST: (
        GpuLostError,
        "the GPU is lost (fell off the bus)",
        "retry later; if it persists, drain the node and reboot it",
    ),
    NVML_ERROR_RESET_REQUIRED: (
        GpuResetRequiredError,
        "the GPU needs a reset",
        "reset the GPU (nvidia-smi -r) or reboot the node",
    ),
    NVML_ERROR_OPERATING_SYSTEM: (
        GpuPermanentError,
        "the operating system blocked the request",
        "check the kernel log and the driver's module options",
    ),
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: (
        GpuDriverError,
        "NVML library and kernel driver versions differ",
        "reload the driver or reboot after the driver upgrade",
    ),
    NVML_ERROR_IN_USE: (GpuTemporaryError, "the GPU is busy", "retry later"),
    NVML_ERROR_MEMORY: (GpuTemporaryError, "the driver ran out of memory", "retry later"),
    NVML_ERROR_NO_DATA: (GpuTemporaryError, "no data yet", "retry later"),
    NVML_ERROR_VGPU_ECC_NOT_SUPPORTED: (
        GpuNotSupportedError,
        "not supported with vGPU ECC",
        "leave this GPU out of power capping",
    ),
    NVML_ERROR_INSUFFICIENT_RESOURCES: (GpuTemporaryError, "insufficient resources", "retry later"),
    NVML_ERROR_FREQ_NOT_SUPPORTED: (
        GpuInvalidArgumentError,
        "clock frequency not supported",
        "pick clocks from the GPU's supported_graphics_clocks_mhz",
    ),
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH: (
        GpuDriverError,
        "nvidia-ml-py and driver disagree on a struct version",
        "install an nvidia-ml-py matching the driver",
    ),
    NVML_ERROR_DEPRECATED: (
        GpuNotSupportedError,
        "the function is deprecated by the driver",
        "upgrade greencpn / nvidia-ml-py",
    ),
    NVML_ERROR_NOT_READY: (GpuTemporaryError, "the GPU is not ready", "retry later"),
    NVML_ERROR_GPU_NOT_FOUND: (
        GpuNotFoundError,
        "the GPU was not found",
        "check the GPU index against list_gpus()",
    ),
    NVML_ERROR_INVALID_STATE: (
        GpuTemporaryError,
        "the GPU is in an invalid state",
        "retry later; reset the GPU if it persists",
    ),
    NVML_ERROR_RESET_TYPE_NOT_SUPPORTED: (
        GpuNotSupportedError,
        "reset type not supported",
        "reboot the node instead",
    ),
    NVML_ERROR_UNKNOWN: (
        GpuTemporaryError,
        "unknown NVML error",
        "retry later; check nvidia-smi and dmesg if it persists",
    ),
}


def error_from_nvml_code(
    code: int, *, operation: str, gpu_index: int | None = None, detail: str = ""
) -> GpuPermanentError | GpuTemporaryError:
    """Build the typed error for an NVML return code.

    Args:
        code: the NVML return code (``NVMLError.value``).
        operation: what greencpn was doing, e.g. ``"set_power_limit_w"``.
        gpu_index: the GPU concerned, if any.
        detail: extra text, e.g. the device's range for INVALID_ARGUMENT.

    Returns:
        A :class:`GpuTemporaryError` or :class:`GpuPermanentError` subclass instance whose
        message says what happened and what to do. Codes this table does not know map to a
        :class:`GpuTemporaryError` naming the code.
    """
    cls, meaning, todo = _NVML_ERRORS.get(
        code,
        (
            GpuTemporaryError,
            f"unrecognised NVML error code {code}",
            "retry later; upgrade greencpn if it persists",
        ),
    )
    where = f"gpu{gpu_index}" if gpu_index is not None else "NVML"
    text = f"{where}: {operation} failed: {meaning} (NVML code {code})"
    if detail:
        text += f"; {detail}"
    text += f" — {todo}"
    return cls(text, nvml_code=code, gpu_index=gpu_index, operation=operation)
