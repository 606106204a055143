"""In-memory fleets for tests, benches, demos and the what-if replay.

:class:`FakeFleet` gives every pool of a config with a ``hostlist`` a
:class:`~greencpn.actuate.fake_nodes.FakeNodeHook` (all nodes on) and fake GPUs at the model's
default cap, on the given clock, as :class:`~greencpn.actuate.apply.Backends`.
"""

from __future__ import annotations

from greencpn.actuate.apply import Backends
from greencpn.actuate.base import GpuBackend, NodePowerHook
from greencpn.actuate.fake_nodes import FakeNodeHook
from greencpn.actuate.gpu.fake import FakeFleetGpus, FakeGpu
from greencpn.actuate.hostlist import expand
from greencpn.clock import Clock
from greencpn.config import FleetConfig


class FakeFleet:
    def __init__(self, cfg: FleetConfig, clock: Clock, *, boot_delay_s: float | None = None):
        self.hooks: dict[str, FakeNodeHook] = {}
        self.gpus: dict[str, FakeFleetGpus] = {}
        self.node_pool: dict[str, str] = {}
        for p in cfg.pools:
            nodes = expand(p.hostlist) if p.hostlist else []
            if not nodes:
                continue
            delay = p.boot_time_min * 60.0 if boot_delay_s is None else boot_delay_s
            self.hooks[p.name] = FakeNodeHook(nodes, clock, boot_delay_s=delay, name="fake")
            gm = cfg.gpu_models[p.gpu_model.lower()]
            self.gpus[p.name] = FakeFleetGpus(
                gpus_per_node=p.gpus_per_node,
                template=FakeGpu(
                    name=gm.name,
                    min_w=gm.power_limit_min_w,
                    max_w=gm.power_limit_max_w,
                    default_w=gm.power_limit_default_w,
                ),
            )
            for n in nodes:
                self.node_pool[n] = p.name

    def gpu(self, node: str) -> GpuBackend | None:
        pool = self.node_pool.get(node)
        return None if pool is None else self.gpus[pool].backend(node)

    @property
    def backends(self) -> Backends:
        hooks: dict[str, NodePowerHook | None] = dict(self.hooks)
        return Backends(hooks=hooks, gpus=self.gpu)

    def killed_jobs(self) -> int:
        return sum(h.killed_jobs for h in self.hooks.values())

    def forget_calls(self) -> None:
        """Drop the fakes' call logs (long simulations)."""
        for h in self.hooks.values():
            h.calls.clear()
            h.call_log.clear()
