"""The example fleet planned with ``solver.cap_mode = "pool"`` and ``"job"`` side by side
(issue #14.3): plan carbon, GPU-h run below the GPUs' maximum cap, jobs re-capped, time.

    .venv/bin/python bench/bench_job_caps_plan.py [--config data/example/fleet.toml]

Both plans are made in one run, from the same config (only ``cap_mode`` differs), with the
default candidates, baselines and trade-off sweep (what ``greencpn plan`` computes, without
writing the report files). "GPU-h capped" = Σ over job runs of GPUs × busy hours at a cap below
the pool's ``power_limit_max_w`` (the job's own cap where it has one, else its pool's cap in
that slot), from plan.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from greencpn.clock import SimClock  # noqa: E402
from greencpn.config import load_config  # noqa: E402
from greencpn.controller.forecast import make_plan  # noqa: E402
from greencpn.optimize.plan import horizon_start  # noqa: E402


def gpu_h_capped(doc: dict) -> tuple[float, float]:
    """(busy GPU-h below the maximum cap, all busy GPU-h) of the plan's job runs."""
    pools = {p["name"]: p for p in doc["pools"]}
    dt = doc["horizon"]["slot_minutes"] / 60.0
    total = run = 0.0
    for j in doc["jobs"]:
        if j["pool"] is None:
            continue
        pool = pools[j["pool"]]
        caps = {s["slot"]: s["power_cap_w"] for s in pool["slots"]}
        for r in j["schedule"]:
            run += r["gpus"] * r["busy_fraction"] * dt
            cap = j["power_cap_w"] or caps.get(r["slot"], pool["power_limit_max_w"])
            if cap < pool["power_limit_max_w"] - 1e-9:
                total += r["gpus"] * r["busy_fraction"] * dt
    return total, run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(REPO / "data" / "example" / "fleet.toml"))
    args = ap.parse_args()
    cfg = load_config(Path(args.config))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        "| cap_mode | plan kg | plan / greedy kg | GPU-h capped / GPU-h run | jobs re-capped "
        "(considered) | pass kg before → after | pass s | plan s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("pool", "job"):
        raw = cfg.raw.model_copy(
            update={"solver": cfg.raw.solver.model_copy(update={"cap_mode": mode})}
        )
        c = dataclasses.replace(cfg, raw=raw)
        t0 = time.perf_counter()
        doc = make_plan(c, SimClock(horizon_start(c, None))).document
        wall = time.perf_counter() - t0
        jc = doc["solver"]["job_caps"]
        capped, run = gpu_h_capped(doc)
        kg = doc["totals"]["carbon_kg"]
        greedy = doc["baselines"]["carbon_aware_greedy"]["carbon_kg"]
        passed = (
            f"{jc['carbon_kg_before']:,.1f} → {jc['carbon_kg_after']:,.1f}"
            if mode == "job"
            else "–"
        )
        recap = f"{jc['jobs_recapped']} ({jc['jobs_considered']})" if mode == "job" else "–"
        pass_s = f"{jc['s']:.3f}" if mode == "job" else "–"
        print(
            f"| {mode} | {kg:,.1f} | {kg / greedy:.3f} | {capped:,.1f} / {run:,.1f} | {recap} | "
            f"{passed} | {pass_s} | {wall:.1f} |"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
