"""A one-pool fleet config whose hook is the node agent, and hand-made plans for it
(docs/plan-schema.md); shared by the apply-through-agents tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_agent_fleet(tmp: Path, hostlist: str, nodes: int, hook_lines: str) -> Path:
    """``tmp/fleet.toml``: one 2-GPU pool ``gp`` of ``nodes`` nodes with ``[pools.hook]``
    ``kind = "agent"`` followed by ``hook_lines`` (keys, URLs, options)."""
    (tmp / "carbon.csv").write_text("timestamp,DE\n")
    cfg = tmp / "fleet.toml"
    cfg.write_text(f"""
name = "agents"
[horizon]
start = "2026-11-25T10:00:00Z"
slots = 2
slot_minutes = 60
[carbon]
file = "carbon.csv"
[[sites]]
name = "s1"
zone = "DE"
pue = 1.2
[[pools]]
name = "gp"
site = "s1"
nodes = {nodes}
gpu_model = "A100-SXM4-40GB"
gpus_per_node = 2
node_idle_w = 400.0
boot_time_min = 2.0
hostlist = "{hostlist}"
[pools.hook]
kind = "agent"
{hook_lines}
""")
    return cfg


def agent_plan(
    cfg: Path, hostlist: str, nodes: int, slots: list[tuple[int, float | None]]
) -> dict[str, Any]:
    """A 2-slot plan for :func:`write_agent_fleet`'s pool: ``(nodes_on, power_cap_w)`` a slot."""
    rows = [
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
        for i, (on, cap) in enumerate(slots)
    ]
    plan: dict[str, Any] = {
        "schema": "greencpn.plan/1",
        "created_at": "2026-11-25T09:55:00Z",
        "config": str(cfg),
        "fleet": "agents",
        "horizon": {
            "start": "2026-11-25T10:00:00Z",
            "slot_minutes": 60,
            "slots": 2,
            "slot_starts": ["2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z"],
        },
        "pools": [
            {
                "name": "gp",
                "site": "s1",
                "gpu_model": "A100-SXM4-40GB",
                "nodes": nodes,
                "gpus_per_node": 2,
                "spares": 0,
                "hostlist": hostlist,
                "hook": {"kind": "agent"},
                "power_limit_min_w": 100,
                "power_limit_max_w": 300,
                "power_limit_default_w": 300,
                "slots": rows,
            }
        ],
        "jobs": [],
        "sites": [],
    }
    return json.loads(json.dumps(plan))
