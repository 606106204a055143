"""Fixtures for the apply tests: a tiny fleet config, hand-made plans, fake nodes and GPUs.

Everything runs on a SimClock; ``sleep`` advances it, so waits cost no real time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from greencpn.actuate.apply import ApplyReport, Backends, apply_plan
from greencpn.actuate.base import NodePower
from greencpn.actuate.fake_nodes import FakeNodeHook
from greencpn.actuate.gpu.fake import FakeFleetGpus, FakeGpu, FakeGpuBackend
from greencpn.actuate.hostlist import expand
from greencpn.actuate.ledger import Ledger
from greencpn.actuate.safety import ControlSettings
from greencpn.clock import SimClock
from greencpn.config import FleetConfig, load_config

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


class LoggedGpus:
    """Wraps one node's FakeGpuBackend and writes every cap change into the shared call log."""

    name = "fake"

    def __init__(self, backend: FakeGpuBackend, node: str, log: list[tuple[object, ...]]) -> None:
        self.backend = backend
        self.node = node
        self.log = log

    def set_power_limit_w(self, index: int, power_limit_w: float):  # type: ignore[no-untyped-def]
        self.log.append(("set_cap", f"{self.node}:gpu{index}", power_limit_w))
        return self.backend.set_power_limit_w(index, power_limit_w)

    def __getattr__(self, item: str) -> Any:
        return getattr(self.backend, item)


def pool_toml(
    name: str,
    *,
    site: str = "s1",
    nodes: int = 4,
    hostlist: str | None = None,
    spares: int = 0,
    min_up_h: float = 0.0,
    min_down_h: float = 0.0,
    boot_time_min: float = 2.0,
    gpus_per_node: int = 2,
    hook: str = "command",
) -> str:
    hostlist = hostlist or f"{name}n[1-{nodes}]"
    # the World replaces each pool's hook by a fake; a command hook must still name a command
    # to load (these would fail loudly if one ever ran)
    table = (
        '{ kind = "command", power_on = "/bin/false", power_off = "/bin/false" }'
        if hook == "command"
        else f'{{ kind = "{hook}" }}'
    )
    return f"""
[[pools]]
name = "{name}"
site = "{site}"
nodes = {nodes}
gpu_model = "A100-SXM4-40GB"
gpus_per_node = {gpus_per_node}
node_idle_w = 400.0
boot_time_min = {boot_time_min}
min_up_h = {min_up_h}
min_down_h = {min_down_h}
spares = {spares}
hostlist = "{hostlist}"
hook = {table}
"""


class World:
    """A fleet config + fake backends + a SimClock, and helpers to build plans and apply them."""

    def __init__(
        self,
        tmp_path: Path,
        pools: list[dict[str, Any]],
        *,
        sites: tuple[str, ...] = ("s1",),
        node_power: NodePower = NodePower.ON,
        boot_delay_s: float = 60.0,
        gpu_limit_w: float | None = None,
    ) -> None:
        self.tmp = tmp_path
        self.clock = SimClock(T0)
        self.log: list[tuple[object, ...]] = []
        text = [
            'name = "t"\n[horizon]\nstart = "2026-11-25T10:00:00Z"\nslots = 3\nslot_minutes = 60\n',
            '[carbon]\nfile = "carbon.csv"\n',
        ]
        for s in sites:
            text.append(f'[[sites]]\nname = "{s}"\nzone = "DE"\npue = 1.2\n')
        for p in pools:
            text.append(pool_toml(**p))
        self.config_path = tmp_path / "fleet.toml"
        self.config_path.write_text("\n".join(text))
        (tmp_path / "carbon.csv").write_text("timestamp,DE\n")
        self.config: FleetConfig = load_config(self.config_path)
        self.hooks: dict[str, FakeNodeHook] = {}
        self.gpus: dict[str, FakeFleetGpus] = {}
        self.node_pool: dict[str, str] = {}
        for p in self.config.pools:
            nodes = expand(p.hostlist or "")
            self.hooks[p.name] = FakeNodeHook(
                nodes, self.clock, power=node_power, boot_delay_s=boot_delay_s, call_log=self.log
            )
            self.gpus[p.name] = FakeFleetGpus(
                gpus_per_node=p.gpus_per_node,
                template=FakeGpu(min_w=100, max_w=400, default_w=400, limit_w=gpu_limit_w),
            )
            for n in nodes:
                self.node_pool[n] = p.name
        self._wrapped: dict[str, LoggedGpus] = {}
        self.state_dir = tmp_path / "state"
        self.settings = ControlSettings(
            allow_actuation=True,
            max_power_ops_per_min=100,
            power_ops_burst=100,
            drain_timeout_s=120,
            poll_interval_s=10,
            boot_timeout_factor=2.0,
            boot_timeout_min_s=0,
        )
        self.printed: list[str] = []

    # ------------------------------------------------------------------ fakes
    def gpu(self, node: str) -> FakeGpuBackend:
        fleet = self.gpus[self.node_pool[node]]
        if node not in fleet.nodes and fleet.template.limit_w is not None:
            be = fleet.backend(node)
            for g in be.gpus:
                g.limit_w = fleet.template.limit_w
        return fleet.backend(node)

    def gpu_lookup(self, node: str) -> LoggedGpus | None:
        if node not in self.node_pool:
            return None
        if node not in self._wrapped:
            self._wrapped[node] = LoggedGpus(self.gpu(node), node, self.log)
        return self._wrapped[node]

    def caps(self, node: str) -> list[float]:
        return [float(g.limit_w or 0) for g in self.gpu(node).gpus]

    def backends(self) -> Backends:
        return Backends(hooks=dict(self.hooks), gpus=self.gpu_lookup)

    def sleep(self, seconds: float) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    # ------------------------------------------------------------------ plans
    def plan(self, targets: dict[str, list[tuple[int, float | None]]]) -> dict[str, Any]:
        """``targets[pool] = [(nodes_on, power_cap_w) for each slot]`` → a plan dict."""
        starts = [T0 + timedelta(hours=i) for i in range(3)]
        pools = []
        for p in self.config.pools:
            slots = [
                {
                    "slot": i,
                    "nodes_on": on,
                    "power_cap_w": cap,
                    "startups": 0,
                    "shutdowns": 0,
                    "cap_level": 0,
                    "busy_gpus": 0,
                    "it_power_kw": 0.0,
                }
                for i, (on, cap) in enumerate(targets[p.name])
            ]
            pools.append(
                {
                    "name": p.name,
                    "site": p.site,
                    "gpu_model": p.gpu_model,
                    "nodes": p.nodes,
                    "gpus_per_node": p.gpus_per_node,
                    "spares": p.spares,
                    "hostlist": p.hostlist,
                    "hook": {"kind": p.hook.kind},
                    "power_limit_min_w": 100,
                    "power_limit_max_w": 400,
                    "power_limit_default_w": 400,
                    "slots": slots,
                }
            )
        return {
            "schema": "greencpn.plan/1",
            "created_at": "2026-11-25T09:55:00Z",
            "config": str(self.config_path),
            "fleet": "t",
            "horizon": {
                "start": "2026-11-25T10:00:00Z",
                "slot_minutes": 60,
                "slots": 3,
                "slot_starts": [s.isoformat().replace("+00:00", "Z") for s in starts],
            },
            "pools": pools,
            "jobs": [],
            "sites": [],
        }

    def apply(
        self,
        plan: dict[str, Any],
        slot: str | int = "now",
        *,
        dry_run: bool = False,
        settings: ControlSettings | None = None,
        allow_other_slot: bool = False,
    ) -> ApplyReport:
        return apply_plan(
            plan,
            slot,
            self.config,
            self.backends(),
            clock=self.clock,
            state_dir=self.state_dir,
            settings=settings or self.settings,
            dry_run=dry_run,
            plan_path="plan.json",
            sleep=self.sleep,
            echo=self.printed.append,
            allow_other_slot=allow_other_slot,
        )

    def ledger(self) -> Ledger:
        return Ledger.open_readonly(self.state_dir)

    def ops(self, *kinds: str) -> list[tuple[object, ...]]:
        """The shared call log without status reads (optionally only some kinds)."""
        return [c for c in self.log if not kinds or c[0] in kinds]


@pytest.fixture
def make_world(tmp_path: Path) -> Callable[..., World]:
    def make(pools: list[dict[str, Any]], **kw: Any) -> World:
        return World(tmp_path, pools, **kw)

    return make
