"""GPU power caps: the shared read-before-write logic every backend inherits.

Two backends implement :class:`greencpn.actuate.base.GpuBackend`:

* ``nvml`` — :class:`greencpn.actuate.gpu.nvml.NvmlGpuBackend`, the NVIDIA driver through
  nvidia-ml-py (``pynvml``, imported lazily so importing greencpn needs no driver);
* ``fake`` — :class:`greencpn.actuate.gpu.fake.FakeGpuBackend`, in memory, for logic tests and
  dry runs.

Both subclass :class:`BaseGpuBackend`, which owns the behaviour the caller relies on:
validation against the device's range (clamping only when allowed), read before write (setting
the value already in place changes nothing and says so), clock-lock bookkeeping and
:meth:`BaseGpuBackend.restore_defaults`. Backends only provide small primitives in the
device's own units (mW, mJ, MHz). Errors and the NVML code mapping live in
:mod:`greencpn.actuate.gpu.errors`.
"""

from __future__ import annotations

import logging
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

from greencpn.actuate.base import Change, GpuBackend, GpuInfo
from greencpn.actuate.gpu.errors import (
    GpuInvalidArgumentError,
    GpuNotFoundError,
    GpuPermanentError,
    GpuTemporaryError,
    PowerLimitOutOfRangeError,
)
from greencpn.errors import GreencpnError

log = logging.getLogger(__name__)

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
