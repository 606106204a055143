"""Backend interfaces for actuation: one Protocol per kind, units in every name.

Implementations: GPUs — ``nvml`` (pynvml) and ``fake`` (in memory); nodes — ``command``,
``slurm``, ``kubernetes``, ``ipmi``, ``wol``, ``agent``.
Actuators read before they write and report what they changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    name: str
    power_limit_min_w: float
    power_limit_max_w: float
    power_limit_default_w: float
    power_limit_current_w: float
    supported_graphics_clocks_mhz: tuple[int, ...] = ()


@dataclass(frozen=True)
class Change:
    """One actuation result: what was asked, what was there before, whether it changed."""

    target: str  # e.g. "gpu0" or "node017"
    what: str  # e.g. "power_limit_w", "power"
    before: object
    after: object
    changed: bool
    message: str = ""


@runtime_checkable
class GpuBackend(Protocol):
    name: str

    def list_gpus(self) -> list[GpuInfo]: ...

    def set_power_limit_w(self, index: int, power_limit_w: float) -> Change: ...

    def lock_clocks_mhz(self, index: int, min_mhz: int, max_mhz: int) -> Change: ...

    def reset_clocks(self, index: int) -> Change: ...

    def power_w(self, index: int) -> float: ...

    def energy_j(self, index: int) -> float: ...

    def restore_defaults(self) -> list[Change]: ...


class NodePower(StrEnum):
    ON = "on"
    OFF = "off"
    BOOTING = "booting"
    SHUTTING_DOWN = "shutting_down"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class NodeStatus:
    """One node as its hook sees it.

    ``running_jobs`` is ``None`` when the hook cannot tell how much work runs on the node
    (a command hook whose status line has no ``jobs=N``, an ipmi/wol hook without a nested
    hook that reports work). Unknown work counts as **busy**: such a node is never powered off.
    """

    name: str
    power: NodePower
    drained: bool = False
    running_jobs: int | None = None
    detail: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def idle(self) -> bool:
        """On and known to run no work (unknown work is not idle)."""
        return self.power == NodePower.ON and self.running_jobs == 0


@runtime_checkable
class NodePowerHook(Protocol):
    """Powers a set of nodes. Every method takes node names (already expanded from a hostlist)."""

    name: str

    def drain(self, nodes: Sequence[str], reason: str) -> list[Change]: ...

    def resume(self, nodes: Sequence[str]) -> list[Change]: ...

    def power_off(self, nodes: Sequence[str]) -> list[Change]: ...

    def power_on(self, nodes: Sequence[str]) -> list[Change]: ...

    def status(self, nodes: Sequence[str]) -> list[NodeStatus]: ...


class PowerOffState(StrEnum):
    """Where a power-off that a hook carries out later stands."""

    DONE = "done"
    """The power command ran (or the node is seen off)."""
    PENDING = "pending"
    """Accepted, not decided yet."""
    ABORTED = "aborted"
    """Not carried out: work appeared at the final check, or the power command failed."""


@dataclass(frozen=True)
class PowerOffResult:
    node: str
    state: PowerOffState
    message: str = ""


@runtime_checkable
class DeferredPowerOff(Protocol):
    """A hook whose ``power_off`` only *starts* the power-off (the node agent answers 202 and
    decides after its settle time). ``greencpn apply`` asks :meth:`power_off_results` until no
    node is pending (bounded by ``power_off_confirm_s``) before it records a node as off."""

    def power_off_results(self, nodes: Sequence[str]) -> list[PowerOffResult]: ...
