"""An in-memory :class:`~greencpn.actuate.base.NodePowerHook` for tests, replay and demos.

Each node has a power state, running jobs, a drain flag and a boot delay; time comes from an
injected clock, so a node started at ``t`` reports ``on`` from ``t + boot_delay_s`` (or never,
with ``never_boots``). Running jobs end at ``jobs_end_at`` if set. Powering off a busy node is
*allowed* by the fake (as a real BMC would) but counted in ``killed_jobs`` so tests can prove
the safety layer never does it. Failures are injected per operation and node with
:meth:`FakeNodeHook.fail`. Every call is appended to ``calls`` (and to a shared ``call_log`` if
given, so the order of node and GPU operations can be asserted together).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from greencpn.actuate.base import Change, NodePower, NodeStatus
from greencpn.clock import Clock
from greencpn.errors import GreencpnError, PermanentError


@dataclass
class FakeNode:
    name: str
    power: NodePower = NodePower.ON
    running_jobs: int = 0
    drained: bool = False
    boot_delay_s: float = 60.0
    never_boots: bool = False
    boot_started_at: datetime | None = None
    jobs_end_at: datetime | None = None
    killed_jobs: int = 0


@dataclass
class _Failure:
    op: str
    node: str | None
    exc: Exception
    times: int | None


class FakeNodeHook:
    """Fake node power hook with per-node state, boot delays and injected failures."""

    def __init__(
        self,
        nodes: Iterable[str],
        clock: Clock,
        *,
        power: NodePower = NodePower.ON,
        boot_delay_s: float = 60.0,
        call_log: list[tuple[object, ...]] | None = None,
        name: str = "fake",
    ) -> None:
        self.name = name
        self.clock = clock
        self.nodes: dict[str, FakeNode] = {
            n: FakeNode(name=n, power=power, boot_delay_s=boot_delay_s) for n in nodes
        }
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.call_log = call_log if call_log is not None else []
        self._failures: list[_Failure] = []

    # ---------------------------------------------------------------- test controls
    def fail(
        self,
        op: str,
        exc: Exception | None = None,
        *,
        node: str | None = None,
        times: int | None = None,
    ) -> None:
        """Make ``op`` (drain/resume/power_off/power_on/status) raise ``exc`` when it reaches
        ``node`` (any node if ``None``), ``times`` times (forever if ``None``)."""
        self._failures.append(
            _Failure(op, node, exc or PermanentError(f"injected {op} failure"), times)
        )

    def set(self, node: str, **fields: object) -> None:
        """Change a node's fake state, e.g. ``set('n1', running_jobs=2)``."""
        fn = self.nodes[node]
        for key, value in fields.items():
            if not hasattr(fn, key):
                raise AttributeError(key)
            setattr(fn, key, value)

    def run_jobs(self, node: str, jobs: int, *, for_s: float | None = None) -> None:
        """Give ``node`` running jobs that end after ``for_s`` seconds (never if ``None``)."""
        fn = self.nodes[node]
        fn.running_jobs = jobs
        fn.jobs_end_at = None if for_s is None else self.clock.now() + timedelta(seconds=for_s)

    @property
    def killed_jobs(self) -> int:
        return sum(n.killed_jobs for n in self.nodes.values())

    # ---------------------------------------------------------------- internals
    def _check_fail(self, op: str, node: str) -> None:
        for f in self._failures:
            if (
                f.op == op
                and (f.node is None or f.node == node)
                and (f.times is None or f.times > 0)
            ):
                if f.times is not None:
                    f.times -= 1
                raise f.exc

    def _get(self, node: str) -> FakeNode:
        try:
            return self.nodes[node]
        except KeyError:
            raise PermanentError(f"fake hook: unknown node {node!r}") from None

    def _advance(self, fn: FakeNode) -> None:
        now = self.clock.now()
        if (
            fn.power == NodePower.BOOTING
            and not fn.never_boots
            and fn.boot_started_at is not None
            and now >= fn.boot_started_at + timedelta(seconds=fn.boot_delay_s)
        ):
            fn.power = NodePower.ON
        if fn.jobs_end_at is not None and now >= fn.jobs_end_at:
            fn.running_jobs = 0
            fn.jobs_end_at = None

    def _log(self, op: str, nodes: Sequence[str]) -> None:
        self.calls.append((op, tuple(nodes)))
        for n in nodes:
            self.call_log.append((op, n))

    # ---------------------------------------------------------------- NodePowerHook
    def drain(self, nodes: Sequence[str], reason: str) -> list[Change]:
        self._log("drain", nodes)
        out = []
        for n in nodes:
            self._check_fail("drain", n)
            fn = self._get(n)
            out.append(
                Change(n, "drained", fn.drained, True, changed=not fn.drained, message=reason)
            )
            fn.drained = True
        return out

    def resume(self, nodes: Sequence[str]) -> list[Change]:
        self._log("resume", nodes)
        out = []
        for n in nodes:
            self._check_fail("resume", n)
            fn = self._get(n)
            out.append(Change(n, "drained", fn.drained, False, changed=fn.drained))
            fn.drained = False
        return out

    def power_off(self, nodes: Sequence[str]) -> list[Change]:
        self._log("power_off", nodes)
        out = []
        for n in nodes:
            self._check_fail("power_off", n)
            fn = self._get(n)
            self._advance(fn)
            before = fn.power
            if fn.running_jobs:
                fn.killed_jobs += fn.running_jobs
                fn.running_jobs = 0
                fn.jobs_end_at = None
            fn.power = NodePower.OFF
            fn.boot_started_at = None
            out.append(Change(n, "power", before.value, "off", changed=before != NodePower.OFF))
        return out

    def power_on(self, nodes: Sequence[str]) -> list[Change]:
        self._log("power_on", nodes)
        out = []
        for n in nodes:
            self._check_fail("power_on", n)
            fn = self._get(n)
            self._advance(fn)
            before = fn.power
            if before in (NodePower.ON, NodePower.BOOTING):
                out.append(Change(n, "power", before.value, before.value, changed=False))
                continue
            fn.power = NodePower.BOOTING
            fn.boot_started_at = self.clock.now()
            out.append(Change(n, "power", before.value, "booting", changed=True))
        return out

    def status(self, nodes: Sequence[str]) -> list[NodeStatus]:
        self.calls.append(("status", tuple(nodes)))
        out = []
        for n in nodes:
            try:
                self._check_fail("status", n)
            except GreencpnError as exc:
                out.append(NodeStatus(n, NodePower.UNKNOWN, detail=str(exc)))
                continue
            fn = self._get(n)
            self._advance(fn)
            out.append(NodeStatus(n, fn.power, drained=fn.drained, running_jobs=fn.running_jobs))
        return out
