"""In-memory GPU backend with the same behaviour as the NVML one, for logic tests and dry runs.

It shares all validation and read-before-write logic with :class:`NvmlGpuBackend` through
:class:`~greencpn.actuate.gpu.base.BaseGpuBackend`; only the device primitives are simulated.
Errors can be injected per primitive, as NVML return codes (mapped exactly as the NVML backend
maps them) or as ready exceptions.

Example:
    >>> from greencpn.actuate.gpu.fake import FakeGpu, FakeGpuBackend
    >>> gpus = FakeGpuBackend([FakeGpu(min_w=100, max_w=300, default_w=300)])
    >>> gpus.set_power_limit_w(0, 200).message
    'power limit 300 W -> 200 W'
    >>> gpus.set_power_limit_w(0, 200).message
    'already 200 W'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from greencpn.actuate.gpu.base import BaseGpuBackend
from greencpn.actuate.gpu.errors import GpuInvalidArgumentError, error_from_nvml_code

#: primitive names usable with :meth:`FakeGpuBackend.inject_error`
OPERATIONS = (
    "count",
    "identity",
    "limit_range",
    "default_limit",
    "limit",
    "set_limit",
    "graphics_clocks",
    "lock_clocks",
    "reset_clocks",
    "power",
    "energy",
)

# primitive -> the operation name NvmlGpuBackend puts into its errors
_PUBLIC_OP = {
    "count": "device_count",
    "identity": "get_uuid",
    "limit_range": "power_limit_range",
    "default_limit": "default_power_limit",
    "limit": "power_limit",
    "set_limit": "set_power_limit_w",
    "graphics_clocks": "supported_graphics_clocks",
    "lock_clocks": "lock_clocks_mhz",
    "reset_clocks": "reset_clocks",
    "power": "power_w",
    "energy": "energy_j",
}


@dataclass
class FakeGpu:
    """One simulated GPU (W, MHz, J); ``limit_w`` starts at ``default_w`` when None."""

    name: str = "NVIDIA A100-SXM4-40GB"
    uuid: str = ""
    min_w: float = 100.0
    max_w: float = 400.0
    default_w: float = 400.0
    limit_w: float | None = None
    demand_w: float = 250.0  # what the load would draw uncapped; power_w = min(demand, limit)
    energy_j: float = 0.0
    graphics_clocks_mhz: tuple[int, ...] = (1410, 1200, 1005, 810, 615, 420, 210)
    locked_mhz: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.limit_w is None:
            self.limit_w = self.default_w


@dataclass
class _Injection:
    error: int | Exception
    times: int  # -1 = always


class FakeGpuBackend(BaseGpuBackend):
    """GPUs held in memory.

    Args:
        gpus: the simulated GPUs (index = position); default two A100-like GPUs.

    Attributes:
        gpus: the live state, for tests to inspect.
        calls: how often each primitive ran (e.g. ``calls["set_limit"]``).
    """

    name = "fake"

    def __init__(self, gpus: Sequence[FakeGpu] | None = None) -> None:
        super().__init__()
        self.gpus: list[FakeGpu] = list(gpus) if gpus is not None else [FakeGpu(), FakeGpu()]
        for i, g in enumerate(self.gpus):
            if not g.uuid:
                g.uuid = f"GPU-fake-{i:04d}"
        self.calls: Counter[str] = Counter()
        self._injections: dict[str, _Injection] = {}

    def inject_error(self, operation: str, error: int | Exception, times: int = 1) -> None:
        """Make the next ``times`` calls of a primitive fail (-1: every call).

        Args:
            operation: one of :data:`OPERATIONS`.
            error: an NVML return code (e.g. ``gpu.NVML_ERROR_NO_PERMISSION``) or an exception.
            times: how many calls fail.
        """
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; use one of {OPERATIONS}")
        self._injections[operation] = _Injection(error, times)

    def clear_errors(self) -> None:
        """Remove every injected error."""
        self._injections.clear()

    def _enter(self, operation: str, index: int | None = None) -> None:
        self.calls[operation] += 1
        inj = self._injections.get(operation)
        if inj is None or inj.times == 0:
            return
        if inj.times > 0:
            inj.times -= 1
        if isinstance(inj.error, Exception):
            raise inj.error
        raise error_from_nvml_code(
            inj.error, operation=_PUBLIC_OP.get(operation, operation), gpu_index=index
        )

    # --- primitives -------------------------------------------------------------------------

    def _count(self) -> int:
        self._enter("count")
        return len(self.gpus)

    def _identity(self, index: int) -> tuple[str, str]:
        self._enter("identity", index)
        return self.gpus[index].uuid, self.gpus[index].name

    def _limit_range_mw(self, index: int) -> tuple[int, int]:
        self._enter("limit_range", index)
        g = self.gpus[index]
        return round(g.min_w * 1000), round(g.max_w * 1000)

    def _default_limit_mw(self, index: int) -> int:
        self._enter("default_limit", index)
        return round(self.gpus[index].default_w * 1000)

    def _limit_mw(self, index: int) -> int:
        self._enter("limit", index)
        return round((self.gpus[index].limit_w or 0.0) * 1000)

    def _set_limit_mw(self, index: int, limit_mw: int) -> None:
        self._enter("set_limit", index)
        g = self.gpus[index]
        if not round(g.min_w * 1000) <= limit_mw <= round(g.max_w * 1000):
            # what the driver answers; BaseGpuBackend validates first so this is a safety net
            raise GpuInvalidArgumentError(
                f"gpu{index}: driver refused {limit_mw / 1000:g} W",
                gpu_index=index,
                operation="set_power_limit_w",
            )
        g.limit_w = limit_mw / 1000

    def _graphics_clocks_mhz(self, index: int) -> tuple[int, ...]:
        self._enter("graphics_clocks", index)
        return tuple(self.gpus[index].graphics_clocks_mhz)

    def _lock_clocks(self, index: int, min_mhz: int, max_mhz: int) -> None:
        self._enter("lock_clocks", index)
        self.gpus[index].locked_mhz = (min_mhz, max_mhz)

    def _reset_clocks(self, index: int) -> None:
        self._enter("reset_clocks", index)
        self.gpus[index].locked_mhz = None

    def _power_mw(self, index: int) -> int:
        self._enter("power", index)
        g = self.gpus[index]
        return round(min(g.demand_w, g.limit_w or 0.0) * 1000)

    def _energy_mj(self, index: int) -> int:
        self._enter("energy", index)
        return round(self.gpus[index].energy_j * 1000)


@dataclass
class FakeFleetGpus:
    """Convenience: one :class:`FakeGpuBackend` per node name, for multi-node dry runs.

    Every GPU starts as a copy of ``template`` (limit, demand, energy, clocks included) with
    its own UUID ``GPU-<node>-<i>``.
    """

    gpus_per_node: int = 8
    template: FakeGpu = field(default_factory=FakeGpu)
    nodes: dict[str, FakeGpuBackend] = field(default_factory=dict)

    def backend(self, node: str) -> FakeGpuBackend:
        """The node's backend, created on first use from ``template``."""
        if node not in self.nodes:
            self.nodes[node] = FakeGpuBackend(
                [replace(self.template, uuid=f"GPU-{node}-{i}") for i in range(self.gpus_per_node)]
            )
        return self.nodes[node]
