"""The plans of last resort when the re-plan fails: the previous plan shifted forward
(:func:`shift_plan`) or the safe plan (:func:`safe_plan`: every usable node on, default caps,
no job held). Split from ``step.py`` (pure moves).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from greencpn.config import FleetConfig
from greencpn.controller.base import _iso, _parse
from greencpn.optimize import plan as planmod


def safe_plan(cfg: FleetConfig, start: datetime, failed: Mapping[str, int]) -> dict[str, Any]:
    """The plan of last resort: every usable node on, default caps, no job held."""
    hz = cfg.horizon
    T = hz.slots
    starts = [start + timedelta(minutes=hz.slot_minutes * i) for i in range(T)]
    pools = []
    for p in cfg.pools:
        gm = cfg.gpu_models[p.gpu_model.lower()]
        on = max(0, p.nodes - failed.get(p.name, 0))
        pools.append(
            {
                "name": p.name,
                "site": p.site,
                "gpu_model": gm.name,
                "nodes": p.nodes,
                "gpus_per_node": p.gpus_per_node,
                "spares": p.spares,
                "hostlist": p.hostlist,
                "hook": p.hook.model_dump(),
                "power_limit_min_w": gm.power_limit_min_w,
                "power_limit_max_w": gm.power_limit_max_w,
                "power_limit_default_w": gm.power_limit_default_w,
                "slots": [
                    {"slot": t, "nodes_on": on, "power_cap_w": gm.power_limit_default_w}
                    for t in range(T)
                ],
            }
        )
    return {
        "schema": planmod.SCHEMA,
        "origin": "safe",
        "config": str(cfg.path),
        "fleet": cfg.name,
        "horizon": {
            "start": _iso(start),
            "slot_minutes": hz.slot_minutes,
            "slots": T,
            "slot_starts": [_iso(s) for s in starts],
        },
        "pools": pools,
        "jobs": [],
        "sites": [],
        "diagnostics": ["safe plan: all usable nodes on, default caps, jobs released"],
    }


def shift_plan(
    doc: dict[str, Any], start: datetime, cfg: FleetConfig, failed: Mapping[str, int]
) -> dict[str, Any] | None:
    """The previous plan moved forward so that its slot 0 is ``start``; ``None`` if it no
    longer covers ``start``, was made for other pools, or needs nodes that have failed."""
    hz = doc.get("horizon") or {}
    starts = [_parse(s) for s in hz.get("slot_starts", [])]
    if start not in starts:
        return None
    k = starts.index(start)
    if {p["name"] for p in doc.get("pools", [])} != {p.name for p in cfg.pools}:
        return None
    nodes = {p.name: p.nodes for p in cfg.pools}
    out = dict(doc)
    out["origin"] = "previous_shifted"
    out["horizon"] = {**hz, "start": _iso(start), "slot_starts": [_iso(s) for s in starts[k:]]}
    out["horizon"]["slots"] = len(starts) - k
    pools = []
    for p in doc["pools"]:
        slots = [dict(s, slot=int(s["slot"]) - k) for s in p["slots"] if int(s["slot"]) >= k]
        usable = nodes[p["name"]] - failed.get(p["name"], 0)
        if any(int(s.get("nodes_on", 0)) > usable for s in slots[:1]):
            return None
        pools.append({**p, "slots": slots})
    out["pools"] = pools
    # the jobs' slots and placement steps count from the new slot 0 as well (the kept
    # placement of the next step rebuilds them relative to this horizon's start)
    step_min = hz.get("placement_step_minutes")
    per_slot = round(float(hz["slot_minutes"]) / float(step_min)) if step_min else 0
    jobs = []
    for j in doc.get("jobs", []):
        j = dict(j)
        j["schedule"] = [
            dict(r, slot=int(r["slot"]) - k) for r in j.get("schedule", []) if int(r["slot"]) >= k
        ]
        if "placement_runs" in j:
            off = k * per_slot  # runs are clipped to the steps still ahead
            j["placement_runs"] = [
                dict(
                    r,
                    step=max(0, int(r["step"]) - off),
                    steps=int(r["steps"]) - max(0, off - int(r["step"])),
                )
                for r in j["placement_runs"]
                if int(r["step"]) + int(r["steps"]) > off
            ]
        jobs.append(j)
    out["jobs"] = jobs
    out["diagnostics"] = list(doc.get("diagnostics", [])) + [
        f"previous plan shifted forward by {k} slot(s) (the re-plan failed)"
    ]
    return out
