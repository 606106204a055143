"""GPU power caps: typed errors, NVML error mapping, shared read-before-write logic, factory.

Two backends implement :class:`greencpn.actuate.base.GpuBackend`:

* ``nvml`` — :class:`greencpn.actuate.nvml.NvmlGpuBackend`, the NVIDIA driver through
  nvidia-ml-py (``pynvml``, imported lazily so importing greencpn needs no driver);
* ``fake`` — :class:`greencpn.actuate.fake_gpu.FakeGpuBackend`, in memory, for logic tests and
  dry runs.

Both subclass :class:`BaseGpuBackend`, which owns the behaviour the caller relies on:
validation against the device's range (clamping only when allowed), read before write (setting
the value already in place changes nothing and says so), clock-lock bookkeeping and
:meth:`BaseGpuBackend.restore_defaults`. Backends only provide small primitives in the
device's own units (mW, mJ, MHz).

Every NVML return code maps to an error typed by what the caller should do
(:func:`error_from_nvml_code`): a :class:`~greencpn.errors.TemporaryError` subclass when a retry
may help, a :class:`~greencpn.errors.PermanentError` subclass otherwise; the message says what
to do.
"""

from __future__ import annotations

import logging
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

from greencpn.actuate.base import Change, GpuBackend, GpuInfo
from greencpn.errors import GreencpnError, PermanentError, TemporaryError

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------------------------
# Shared logic


def _mw_to_w(mw: int) -> float:
    return mw / 1000.0


class BaseGpuBackend(ABC):
    """Shared behaviour of every GPU backend; subclasses supply device primitives.

    Primitives work in the device's units (mW, mJ, MHz) and raise typed errors
    (:func:`error_from_nvml_code`). Power limit ranges and defaults are read once per GPU and
    cached (they are fixed by the board); current limits are read before every write.
    Clock locks cannot be read back through NVML, so the backend remembers the locks it set
    (``None`` = reset by us; absent = unknown).
    """

    name: str = "base"

    def __init__(self) -> None:
        self._range_mw: dict[int, tuple[int, int]] = {}
        self._default_mw: dict[int, int] = {}
        self._locked_mhz: dict[int, tuple[int, int] | None] = {}
        self.closed = False
        # read-then-write sequences must not interleave (the agent serves requests in threads)
        self._mutex = threading.RLock()

    # --- primitives -------------------------------------------------------------------------

    @abstractmethod
    def _count(self) -> int: ...

    @abstractmethod
    def _identity(self, index: int) -> tuple[str, str]:
        """(uuid, name)."""

    @abstractmethod
    def _limit_range_mw(self, index: int) -> tuple[int, int]: ...

    @abstractmethod
    def _default_limit_mw(self, index: int) -> int: ...

    @abstractmethod
    def _limit_mw(self, index: int) -> int: ...

    @abstractmethod
    def _set_limit_mw(self, index: int, limit_mw: int) -> None: ...

    @abstractmethod
    def _graphics_clocks_mhz(self, index: int) -> tuple[int, ...]: ...

    @abstractmethod
    def _lock_clocks(self, index: int, min_mhz: int, max_mhz: int) -> None: ...

    @abstractmethod
    def _reset_clocks(self, index: int) -> None: ...

    @abstractmethod
    def _power_mw(self, index: int) -> int: ...

    @abstractmethod
    def _energy_mj(self, index: int) -> int: ...

    # --- helpers ----------------------------------------------------------------------------

    def _check_index(self, index: int, operation: str) -> None:
        count = self._count()
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
            raise GpuNotFoundError(
                f"gpu{index}: no such GPU (this node has {count}: indices 0..{count - 1}) "
                "— check the GPU index against list_gpus()",
                gpu_index=index if isinstance(index, int) else None,
                operation=operation,
            )

    def _range(self, index: int) -> tuple[int, int]:
        if index not in self._range_mw:
            self._range_mw[index] = self._limit_range_mw(index)
        return self._range_mw[index]

    def _default(self, index: int) -> int:
        if index not in self._default_mw:
            self._default_mw[index] = self._default_limit_mw(index)
        return self._default_mw[index]

    # --- GpuBackend -------------------------------------------------------------------------

    def gpu_count(self) -> int:
        """Number of GPUs this backend sees."""
        return self._count()

    def list_gpus(self) -> list[GpuInfo]:
        """Describe every GPU: identity, power-limit range/default/current (W), clocks (MHz)."""
        out = []
        for i in range(self._count()):
            uuid, name = self._identity(i)
            min_mw, max_mw = self._range(i)
            out.append(
                GpuInfo(
                    index=i,
                    uuid=uuid,
                    name=name,
                    power_limit_min_w=_mw_to_w(min_mw),
                    power_limit_max_w=_mw_to_w(max_mw),
                    power_limit_default_w=_mw_to_w(self._default(i)),
                    power_limit_current_w=_mw_to_w(self._limit_mw(i)),
                    supported_graphics_clocks_mhz=self._graphics_clocks_mhz(i),
                )
            )
        return out

    def power_limit_w(self, index: int) -> float:
        """The GPU's current power limit in W."""
        self._check_index(index, "power_limit_w")
        return _mw_to_w(self._limit_mw(index))

    def set_power_limit_w(
        self, index: int, power_limit_w: float, *, allow_clamp: bool = False
    ) -> Change:
        """Set a GPU's power limit, reading it first.

        Args:
            index: GPU index.
            power_limit_w: the wanted limit in W.
            allow_clamp: clamp a value outside the device's range to the range (with a
                warning in the log and in the Change's message) instead of raising.

        Returns:
            A Change with ``before``/``after`` in W; ``changed`` is False (message
            ``"already ..."``) when the limit was already in place.

        Raises:
            PowerLimitOutOfRangeError: outside the range and ``allow_clamp`` is False.
            GpuInvalidArgumentError: not a finite number.
            GpuPermanentError / GpuTemporaryError: NVML refused (see the message).
        """
        with self._mutex:
            op = "set_power_limit_w"
            target = f"gpu{index}"
            self._check_index(index, op)
            try:
                wanted_w = float(power_limit_w)
            except (TypeError, ValueError):
                wanted_w = math.nan
            if not math.isfinite(wanted_w):
                raise GpuInvalidArgumentError(
                    f"{target}: power limit {power_limit_w!r} is not a finite number of watts",
                    gpu_index=index,
                    operation=op,
                )
            min_mw, max_mw = self._range(index)
            wanted_mw = round(wanted_w * 1000)
            note = ""
            if not min_mw <= wanted_mw <= max_mw:
                min_w, max_w = _mw_to_w(min_mw), _mw_to_w(max_mw)
                if not allow_clamp:
                    raise PowerLimitOutOfRangeError(
                        f"{target}: power limit {wanted_w:g} W is outside the device range "
                        f"[{min_w:g}, {max_w:g}] W — choose a cap inside the range, or allow "
                        "clamping for this pool",
                        gpu_index=index,
                        requested_w=wanted_w,
                        min_w=min_w,
                        max_w=max_w,
                    )
                clamped_mw = min(max(wanted_mw, min_mw), max_mw)
                note = (
                    f"clamped {wanted_w:g} W to {_mw_to_w(clamped_mw):g} W "
                    f"(device range [{min_w:g}, {max_w:g}] W)"
                )
                log.warning("%s: %s", target, note)
                wanted_mw = clamped_mw
            before_mw = self._limit_mw(index)
            before_w, after_w = _mw_to_w(before_mw), _mw_to_w(wanted_mw)
            if before_mw == wanted_mw:
                msg = f"already {after_w:g} W"
                return Change(
                    target,
                    "power_limit_w",
                    before_w,
                    after_w,
                    False,
                    f"{msg}; {note}" if note else msg,
                )
            self._set_limit_mw(index, wanted_mw)
            msg = f"power limit {before_w:g} W -> {after_w:g} W"
            return Change(
                target, "power_limit_w", before_w, after_w, True, f"{msg}; {note}" if note else msg
            )

    def lock_clocks_mhz(self, index: int, min_mhz: int, max_mhz: int) -> Change:
        """Lock the GPU's graphics clock into [min_mhz, max_mhz] (nvmlDeviceSetGpuLockedClocks).

        A lock this backend already set to the same range is not re-sent.

        Raises:
            GpuInvalidArgumentError: min > max, negative, or outside the supported clocks.
        """
        with self._mutex:
            op = "lock_clocks_mhz"
            target = f"gpu{index}"
            self._check_index(index, op)
            if (
                not (isinstance(min_mhz, int) and isinstance(max_mhz, int))
                or min_mhz < 0
                or min_mhz > max_mhz
            ):
                raise GpuInvalidArgumentError(
                    f"{target}: clock range [{min_mhz}, {max_mhz}] MHz is invalid — give whole "
                    "MHz with 0 <= min <= max",
                    gpu_index=index,
                    operation=op,
                )
            supported = self._graphics_clocks_mhz(index)
            if supported and (max_mhz < min(supported) or min_mhz > max(supported)):
                raise GpuInvalidArgumentError(
                    f"{target}: clock range [{min_mhz}, {max_mhz}] MHz misses the supported "
                    f"graphics clocks [{min(supported)}, {max(supported)}] MHz — pick clocks in "
                    "that range",
                    gpu_index=index,
                    operation=op,
                )
            wanted = (min_mhz, max_mhz)
            before = self._locked_mhz.get(index, "unknown")
            if before == wanted:
                return Change(
                    target,
                    "locked_clocks_mhz",
                    before,
                    wanted,
                    False,
                    f"already locked to {min_mhz}-{max_mhz} MHz",
                )
            self._lock_clocks(index, min_mhz, max_mhz)
            self._locked_mhz[index] = wanted
            return Change(
                target,
                "locked_clocks_mhz",
                before,
                wanted,
                True,
                f"graphics clock locked to {min_mhz}-{max_mhz} MHz",
            )

    def reset_clocks(self, index: int) -> Change:
        """Undo a clock lock (nvmlDeviceResetGpuLockedClocks).

        Skipped when this backend knows there is no lock (it reset it, or never locked after
        a reset); sent when the state is unknown (``before == "unknown"``).
        """
        with self._mutex:
            op = "reset_clocks"
            target = f"gpu{index}"
            self._check_index(index, op)
            before = self._locked_mhz.get(index, "unknown")
            if index in self._locked_mhz and before is None:
                return Change(
                    target,
                    "locked_clocks_mhz",
                    None,
                    None,
                    False,
                    "already unlocked (default clocks)",
                )
            self._reset_clocks(index)
            self._locked_mhz[index] = None
            return Change(
                target,
                "locked_clocks_mhz",
                before,
                None,
                True,
                "graphics clock lock reset to default",
            )

    def power_w(self, index: int) -> float:
        """The GPU's current power draw in W (nvmlDeviceGetPowerUsage)."""
        self._check_index(index, "power_w")
        return _mw_to_w(self._power_mw(index))

    def energy_j(self, index: int) -> float:
        """The GPU's total-energy counter in J since the driver loaded."""
        self._check_index(index, "energy_j")
        return self._energy_mj(index) / 1000.0

    def restore_defaults(self) -> list[Change]:
        """Put every GPU back to its default power limit and default clocks.

        Used on exit and rollback. Carries on past a failing GPU and raises the first error
        only after every GPU was tried, so one lost GPU does not leave the others capped.
        """
        with self._mutex:
            changes: list[Change] = []
            first_error: Exception | None = None
            for i in range(self._count()):
                try:
                    changes.append(self.set_power_limit_w(i, _mw_to_w(self._default(i))))
                except (GpuPermanentError, GpuTemporaryError) as exc:
                    log.error("restore_defaults: %s", exc)
                    first_error = first_error or exc
                try:
                    changes.append(self.reset_clocks(i))
                except (GpuPermanentError, GpuTemporaryError) as exc:
                    log.error("restore_defaults: %s", exc)
                    first_error = first_error or exc
            if first_error is not None:
                raise first_error
            return changes

    def close(self) -> None:
        """Release the backend (subclasses add e.g. NVML shutdown); marks it closed."""
        self.closed = True

    def __enter__(self) -> BaseGpuBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class PowerLimitsResult:
    """Outcome of :func:`apply_power_limits`.

    Attributes:
        changes: one Change per GPU that was handled, in the order applied.
        errors: GPU index -> the typed error that stopped it.
        skipped: GPUs whose cap would have gone up but was not applied because a lowering
            failed first (raising then could exceed the node's power budget).
    """

    changes: list[Change] = field(default_factory=list)
    errors: dict[int, GreencpnError] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every requested cap is in place."""
        return not self.errors and not self.skipped


def apply_power_limits(
    backend: GpuBackend, caps_w: Mapping[int, float], *, allow_clamp: bool = False
) -> PowerLimitsResult:
    """Apply several power limits on one node in a safe order: lowered caps first.

    Lowering before raising keeps the node's total GPU power at or below both the old and the
    new plan while the changes go through; if any lowering fails, no cap is raised (those GPUs
    are reported as skipped). Reads before writing, so re-applying the same caps changes
    nothing. Errors are collected per GPU, never half-reported.

    Args:
        backend: the node's GPU backend.
        caps_w: GPU index -> wanted power limit in W.
        allow_clamp: clamp out-of-range caps to the device range (with a warning); only
            backends derived from :class:`BaseGpuBackend` support clamping.

    Returns:
        A :class:`PowerLimitsResult`.
    """
    result = PowerLimitsResult()
    current: dict[int, float | None] = {}
    if isinstance(backend, BaseGpuBackend):
        for i in caps_w:
            try:
                current[i] = backend.power_limit_w(i)
            except (GpuPermanentError, GpuTemporaryError) as exc:
                result.errors[i] = exc
    else:
        infos = {g.index: g.power_limit_current_w for g in backend.list_gpus()}
        current = {i: infos.get(i) for i in caps_w}
    todo = [i for i in caps_w if i not in result.errors]
    lowering = [i for i in todo if current[i] is None or caps_w[i] <= current[i]]  # type: ignore[operator]
    raising = [i for i in todo if i not in lowering]
    for i in lowering + raising:
        if i in raising and result.errors:
            result.skipped.append(i)
            continue
        try:
            if isinstance(backend, BaseGpuBackend):
                change = backend.set_power_limit_w(i, caps_w[i], allow_clamp=allow_clamp)
            else:
                change = backend.set_power_limit_w(i, caps_w[i])
        except (GpuPermanentError, GpuTemporaryError) as exc:
            log.error("%s", exc)
            result.errors[i] = exc
            continue
        result.changes.append(change)
    return result
