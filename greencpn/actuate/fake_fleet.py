"""A whole fleet config in memory: fake GPUs of a pool's model and one-slot plans for it.

Shared by the example-fleet apply test (tests/actuate/apply/test_apply_example_fleet.py) and
its benchmark (bench/bench_apply.py), which build the same fake fleet and the same kind of plan.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from greencpn.actuate.gpu.fake import FakeFleetGpus, FakeGpu
from greencpn.config import GpuModelConfig, PoolConfig


def fake_gpus(gm: GpuModelConfig, gpus_per_node: int) -> FakeFleetGpus:
    """Fake GPUs of model ``gm`` (its name and power-limit range), ``gpus_per_node`` a node."""
    return FakeFleetGpus(
        gpus_per_node=gpus_per_node,
        template=FakeGpu(
            name=gm.name,
            min_w=gm.power_limit_min_w,
            max_w=gm.power_limit_max_w,
            default_w=gm.power_limit_default_w,
        ),
    )


def plan_pool(
    p: PoolConfig, gm: GpuModelConfig, nodes_on: int, power_cap_w: float | None
) -> dict[str, Any]:
    """One pool of a one-slot plan (docs/plan-schema.md): ``nodes_on`` nodes at ``power_cap_w``."""
    return {
        "name": p.name,
        "site": p.site,
        "nodes": p.nodes,
        "gpus_per_node": p.gpus_per_node,
        "spares": p.spares,
        "hostlist": p.hostlist,
        "hook": {"kind": p.hook.kind},
        "power_limit_min_w": gm.power_limit_min_w,
        "power_limit_max_w": gm.power_limit_max_w,
        "power_limit_default_w": gm.power_limit_default_w,
        "slots": [{"slot": 0, "nodes_on": nodes_on, "power_cap_w": power_cap_w}],
    }


def one_slot_plan(config: Path, start: datetime, pools: list[dict[str, Any]]) -> dict[str, Any]:
    """A plan of one 60-minute slot from ``start`` for ``config``'s ``pools``."""
    return {
        "schema": "greencpn.plan/1",
        "config": str(config),
        "horizon": {
            "start": start.isoformat(),
            "slot_minutes": 60,
            "slots": 1,
            "slot_starts": [start.isoformat()],
        },
        "pools": pools,
    }
