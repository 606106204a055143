"""A small hand-made plan (2 sites, 2 pools, 3 jobs, 6 hourly slots) for the report tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def capture_saved_figures(mp: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every matplotlib figure saved while ``mp`` is active, as (file name, figure), in save
    order; each is still written as usual."""
    from matplotlib.figure import Figure

    saved: list[tuple[str, Any]] = []
    orig = Figure.savefig

    def keep(self: Figure, fname: Any, *a: Any, **kw: Any) -> None:
        saved.append((Path(fname).name, self))
        orig(self, fname, *a, **kw)

    mp.setattr(Figure, "savefig", keep)
    return saved


def _plan() -> dict[str, Any]:
    starts = [f"2026-03-02T{h:02d}:00:00Z" for h in range(6)]
    intensity = {
        "frankfurt": [400.0, 380.0, 300.0, 250.0, 320.0, 420.0],
        "oslo": [30.0, 31.0, 29.0, 28.0, 30.0, 32.0],
    }
    budget = {"frankfurt": [10.0, 4.368, 2.0, 2.0, 2.0, 10.0], "oslo": None}
    pue = {"frankfurt": 1.3, "oslo": 1.1}
    price = {"frankfurt": 0.25, "oslo": 0.1}
    # fra pool: 2 nodes x 8 A100; osl pool: 3 nodes x 4 A40
    pools = [
        {
            "name": "fra-a100",
            "site": "frankfurt",
            "gpu_model": "A100-SXM4-40GB",
            "nodes": 2,
            "gpus_per_node": 8,
            "spares": 0,
            "hostlist": "fra[1-2]",
            "hook": {"kind": "slurm"},
            "power_limit_min_w": 100,
            "power_limit_max_w": 400,
            "power_limit_default_w": 400,
            "slots": [],
        },
        {
            "name": "osl-a40",
            "site": "oslo",
            "gpu_model": "A40",
            "nodes": 3,
            "gpus_per_node": 4,
            "spares": 1,
            "hostlist": None,
            "hook": {"kind": "ipmi"},
            "power_limit_min_w": 100,
            "power_limit_max_w": 300,
            "power_limit_default_w": 300,
            "slots": [],
        },
    ]
    fra_on = [1, 1, 0, 0, 1, 1]
    fra_busy = [8, 8, 0, 0, 0, 0]
    fra_cap = [400.0, 400.0, 400.0, 400.0, 280.0, 280.0]
    osl_on = [3, 3, 3, 2, 1, 1]
    osl_busy = [12, 12, 12, 4, 0, 0]
    osl_cap = [200.0, 200.0, 200.0, 250.0, 300.0, 300.0]
    it = {"frankfurt": [], "oslo": []}
    for i in range(6):
        fkw = fra_on[i] * 1.6 + fra_busy[i] * 0.22
        okw = osl_on[i] * 0.42 + osl_busy[i] * 0.14
        it["frankfurt"].append(round(fkw, 3))
        it["oslo"].append(round(okw, 3))
        pools[0]["slots"].append(
            {
                "slot": i,
                "nodes_on": fra_on[i],
                "startups": int(i == 4),
                "shutdowns": int(i == 2),
                "cap_level": 5 if fra_cap[i] == 400 else 2,
                "power_cap_w": fra_cap[i],
                "busy_gpus": fra_busy[i],
                "it_power_kw": round(fkw, 3),
            }
        )
        pools[1]["slots"].append(
            {
                "slot": i,
                "nodes_on": osl_on[i],
                "startups": 0,
                "shutdowns": int(i in (3, 4)),
                "cap_level": 1,
                "power_cap_w": osl_cap[i],
                "busy_gpus": osl_busy[i],
                "it_power_kw": round(okw, 3),
            }
        )
    sites = []
    totals = {"energy_kwh": 0.0, "carbon_kg": 0.0, "cost": 0.0}
    for name, zone in (("frankfurt", "DE"), ("oslo", "NO")):
        slots = []
        for i in range(6):
            meter = it[name][i] * pue[name]
            e = meter * 1.0
            c = e * intensity[name][i] / 1000.0
            cost = e * price[name]
            totals["energy_kwh"] += e
            totals["carbon_kg"] += c
            totals["cost"] += cost
            slots.append(
                {
                    "slot": i,
                    "it_power_kw": it[name][i],
                    "meter_power_kw": meter,
                    "budget_kw": None if budget[name] is None else budget[name][i],
                    "intensity_g_per_kwh": intensity[name][i],
                    "price_per_kwh": price[name],
                    "energy_kwh": e,
                    "carbon_kg": c,
                    "cost": cost,
                }
            )
        sites.append({"name": name, "zone": zone, "pue": pue[name], "slots": slots})
    jobs = [
        {
            "id": "train-a",
            "site": "oslo",
            "pool": "osl-a40",
            "gpus": 4,
            "work_gpu_h": 12.0,
            "checkpointable": False,
            "release": starts[0],
            "deadline": starts[5],
            "start": starts[0],
            "end": starts[3],
            "late_h": 0.0,
            "unserved_gpu_h": 0.0,
            "schedule": [{"slot": s, "gpus": 4} for s in range(3)],
        },
        {
            "id": "gdpr|b",
            "site": "frankfurt",
            "pool": "fra-a100",
            "gpus": 8,
            "work_gpu_h": 16.0,
            "checkpointable": True,
            "release": starts[0],
            "deadline": starts[1],
            "start": starts[0],
            "end": starts[2],
            "late_h": 1.0,
            "unserved_gpu_h": 0.0,
            "schedule": [{"slot": 0, "gpus": 8}, {"slot": 1, "gpus": 8}],
        },
        {
            "id": "big<c>",
            "site": "oslo",
            "pool": "osl-a40",
            "gpus": 8,
            "work_gpu_h": 40.0,
            "checkpointable": True,
            "release": starts[0],
            "deadline": starts[5],
            "start": starts[0],
            "end": None,
            "late_h": 0.0,
            "unserved_gpu_h": 12.0,
            "schedule": [{"slot": s, "gpus": 8} for s in range(3)],
        },
    ]
    totals.update({"late_gpu_h": 16.0, "late_jobs": 1, "unserved_gpu_h": 12.0})
    return {
        "schema": "greencpn.plan/1",
        "created_at": "2026-03-01T23:55:00Z",
        "config": "/tmp/fleet.toml",
        "fleet": "tiny",
        "horizon": {"start": starts[0], "slot_minutes": 60, "slots": 6, "slot_starts": starts},
        "solver": {
            "status": "optimal",
            "termination": "optimal",
            "objective": 21.5,
            "bound": 21.4,
            "mip_gap": 0.0047,
            "incumbent_used_on_time_limit": False,
            "build_s": 0.11,
            "handoff_s": 0.05,
            "solve_s": 0.2,
            "extract_s": 0.01,
            "placement_s": 0.02,
            "n_vars": 120,
            "n_constraints": 95,
            "n_job_groups": 3,
        },
        "executed": {"objective": 21.7, "gap_to_bound": 0.0138},
        "pools": pools,
        "jobs": jobs,
        "sites": sites,
        "totals": totals,
        "baselines": {
            "carbon_agnostic": {
                "energy_kwh": 150.0,
                "carbon_kg": 40.0,
                "cost": 30.0,
                "late_jobs": 2,
                "late_gpu_h": 20.0,
                "unserved_gpu_h": 12.0,
            },
            "shutdown_idle": {
                "energy_kwh": 110.0,
                "carbon_kg": 30.0,
                "cost": 25.0,
                "late_jobs": 2,
                "late_gpu_h": 20.0,
                "unserved_gpu_h": 12.0,
            },
            "carbon_aware_greedy": {
                "energy_kwh": 95.0,
                "carbon_kg": 8.0,
                "cost": 22.0,
                "late_jobs": 1,
                "late_gpu_h": 10.0,
                "unserved_gpu_h": 12.0,
            },
        },
        "savings": {},
        "objective_weights": {"carbon_weight_per_kg": 1.0, "cost_weight": 0.0},
        "diagnostics": [
            "deadline: job gdpr|b finishes 1.00 h late",
            "capacity: job big<c> could not be placed inside the horizon (12.0 GPU-h)",
        ],
        "tradeoff": [
            {"carbon_weight_per_kg": 1.0, "cost_weight": 0.0, "carbon_kg": 9.0, "cost": 20.0},
            {"carbon_weight_per_kg": 0.0, "cost_weight": 1.0, "carbon_kg": 14.0, "cost": 12.5},
        ],
        # the report's where-and-when plots (#10.13): busy GPU-h per site and slot, kg per slot
        "work_by_site_gpu_h": {
            "plan": {
                "frankfurt": [float(b) for b in fra_busy],
                "oslo": [float(b) for b in osl_busy],
            },
            "carbon_agnostic": {
                "frankfurt": [8.0, 8.0, 8.0, 8.0, 0.0, 0.0],
                "oslo": [12.0, 12.0, 4.0, 0.0, 0.0, 0.0],
            },
        },
        "carbon_by_slot_kg": {
            "plan": [sum(site["slots"][i]["carbon_kg"] for site in sites) for i in range(6)],
            "carbon_agnostic": [8.0, 8.0, 8.0, 6.0, 5.0, 5.0],
        },
    }


@pytest.fixture
def tiny_plan() -> dict[str, Any]:
    return _plan()


@pytest.fixture(scope="session")
def tiny_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny plan rendered once: ``{"plan": dict, "paths": {...}}`` (read-only for tests)."""
    from greencpn.report.render import render_report

    plan = _plan()
    return {"plan": plan, "paths": render_report(plan, tmp_path_factory.mktemp("tiny_report"))}
