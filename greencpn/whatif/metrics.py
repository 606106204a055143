"""Metrics of replays, compared with the carbon-agnostic baseline and a reference ("oracle").

Every ratio names its denominator: ``carbon_saved_pct`` is ``(baseline − run) / baseline``
carbon; ``share_of_oracle_saving`` is ``(baseline − run) / (baseline − oracle)`` carbon, where
the oracle is the run named in ``oracle`` (the perfect-foresight reference).
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from greencpn.whatif.engine import RunResult

COLUMNS = (
    "policy",
    "energy_kwh",
    "carbon_kg",
    "carbon_saved_kg",
    "carbon_saved_pct",
    "share_of_oracle_saving",
    "jobs",
    "unfinished_jobs",
    "unfinished_gpu_h",
    "deadline_misses",
    "mean_wait_h",
    "p95_wait_h",
    "power_cycles_per_node_mean",
    "power_cycles_per_node_max",
    "node_failures",
    "job_restarts",
    "killed_jobs",
    "wall_s",
)


def _h(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds() / 3600.0


def summarise(run: RunResult) -> dict[str, Any]:
    """One row of metrics for one run (no comparison fields)."""
    end = run.settings.end + run.settings.drain
    waits, misses, unfinished = [], 0, 0
    for j in run.jobs:
        if j.first_start is not None:
            waits.append(_h(j.first_start, j.release))
        if j.finish is None:
            unfinished += 1
            if j.deadline < end:
                misses += 1
        elif j.finish > j.deadline:
            misses += 1
    cycles = np.array(list(run.stats.power_cycles.values()) or [0])
    w = np.array(waits) if waits else np.zeros(1)
    return {
        "policy": run.policy,
        "energy_kwh": float(run.energy_kwh.sum()),
        "carbon_kg": float(run.carbon_kg.sum()),
        "jobs": len(run.jobs),
        "unfinished_jobs": unfinished,
        # work not done by the end of the accounted window (its energy is not in energy_kwh:
        # compare policies only when this is ~0, or lengthen --drain-h)
        "unfinished_gpu_h": float(sum(j.remaining_gpu_h for j in run.jobs if j.finish is None)),
        "deadline_misses": misses,
        "mean_wait_h": float(w.mean()),
        "p95_wait_h": float(np.percentile(w, 95)),
        "power_cycles_per_node_mean": float(cycles.mean()),
        "power_cycles_per_node_max": int(cycles.max()),
        "node_failures": run.stats.failures,
        "job_restarts": sum(j.restarts for j in run.jobs),
        "killed_jobs": run.killed_jobs,
        "wall_s": round(run.wall_s, 3),
        "energy_kwh_by_site": {
            s: float(run.energy_kwh[:, i].sum()) for i, s in enumerate(run.sites)
        },
        "carbon_kg_by_site": {s: float(run.carbon_kg[:, i].sum()) for i, s in enumerate(run.sites)},
    }


def compare(
    runs: list[RunResult], *, baseline: str = "carbon-agnostic", oracle: str | None = None
) -> dict[str, Any]:
    """Rows for all runs with savings against ``baseline`` and shares of ``oracle``'s saving.

    ``oracle`` None: the lowest-carbon run that had perfect foresight (``perfect=1``), if any;
    the chosen name is returned in ``"oracle"`` (None when there is none).
    """
    rows = [summarise(r) for r in runs]
    by = {r["policy"]: r for r in rows}
    base = by.get(baseline)
    if oracle is None:
        perfect = [r for r in rows if "perfect=1" in r["policy"] or "perfect=true" in r["policy"]]
        oracle = min(perfect, key=lambda r: r["carbon_kg"])["policy"] if perfect else None
    orc = by.get(oracle) if oracle else None
    for r in rows:
        if base is None:
            r["carbon_saved_kg"] = r["carbon_saved_pct"] = r["share_of_oracle_saving"] = None
            continue
        saved = base["carbon_kg"] - r["carbon_kg"]
        r["carbon_saved_kg"] = saved
        r["carbon_saved_pct"] = 100.0 * saved / base["carbon_kg"] if base["carbon_kg"] else None
        if orc is not None and base["carbon_kg"] - orc["carbon_kg"] > 1e-12:
            r["share_of_oracle_saving"] = saved / (base["carbon_kg"] - orc["carbon_kg"])
        else:
            r["share_of_oracle_saving"] = None
    return {"baseline": baseline if base else None, "oracle": oracle if orc else None, "rows": rows}


def write(table: dict[str, Any], out_dir: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``whatif.csv`` (one row per policy, :data:`COLUMNS`) and ``whatif.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "whatif.csv", out_dir / "whatif.json"
    with csv_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in table["rows"]:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    json_path.write_text(json.dumps({**meta, **table}, indent=2, default=str) + "\n")
    return csv_path, json_path
