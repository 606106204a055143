"""Convert ../shared/bench-instances/<NAME>/ into a greencpn fleet config (TOML + CSV).

The instances (see their README) give sites, pools, residency policies, jobs and carbon per
slot; this writes the same fleet in greencpn's own format into a folder, so the benchmark
measures exactly what `greencpn plan` does with a user's files.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _find_instances() -> Path:
    """../shared/bench-instances beside the checkout (a worktree sits one level deeper)."""
    for up in (ROOT.parent, *ROOT.parents[1:3]):
        cand = up / "shared" / "bench-instances"
        if cand.is_dir():
            return cand
    return ROOT.parent / "shared" / "bench-instances"


INSTANCES = _find_instances()
START = datetime(2026, 1, 5, tzinfo=UTC)  # slot 0 of every instance

GPU = """
[[gpu_models]]
name = "BENCH-300W"
power_limit_min_w = 100
power_limit_max_w = 300
power_limit_default_w = 300
idle_w = 60
source = "../shared/bench-instances/README.md: 300 W max, 60 W idle, four cap levels"
[[gpu_models.levels]]
cap_w = 300
throughput = 1.0
power_factor = 1.0
[[gpu_models.levels]]
cap_w = 240
throughput = 0.985
power_factor = 0.8
[[gpu_models.levels]]
cap_w = 201
throughput = 0.95
power_factor = 0.67
[[gpu_models.levels]]
cap_w = 150
throughput = 0.85
power_factor = 0.5
"""


def _iso(slot: float) -> str:
    return (START + timedelta(hours=slot)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def convert(
    name: str,
    out: Path,
    *,
    node_factor: int = 1,
    time_limit_s: float = 120.0,
    mip_rel_gap: float = 0.01,
    window: int = 1,
) -> Path:
    src = INSTANCES / name
    if not src.is_dir():
        raise FileNotFoundError(f"benchmark instance {src} not found (../shared/bench-instances)")
    out.mkdir(parents=True, exist_ok=True)
    sites = _rows(src / "sites.csv")
    pools = _rows(src / "pools.csv")
    policies = {r["policy"]: r["sites"].split(";") for r in _rows(src / "residency.csv")}
    jobs = _rows(src / "jobs.csv")
    carbon = _rows(src / "carbon.csv")
    T = len(carbon)
    with (out / "carbon.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["datetime_utc", *[s["site"] for s in sites]])
        for r in carbon:
            w.writerow([_iso(int(r["slot"])), *[r[s["site"]] for s in sites]])
    with (out / "jobs.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["id", "gpus", "work_gpu_h", "release", "deadline", "jurisdictions", "checkpointable"]
        )
        for r in jobs:
            gpus = int(r["gpus"])
            w.writerow(
                [
                    r["job"],
                    gpus,
                    gpus * float(r["duration_h"]),
                    _iso(int(r["release_slot"])),
                    _iso(int(r["deadline_slot"]) + 1),
                    ";".join(policies[r["policy"]]),
                    r["checkpointable"].lower(),
                ]
            )
    text = [
        f'name = "bench-{name}"',
        'jobs_file = "jobs.csv"',
        f'[horizon]\nstart = "{_iso(0)}"\nslots = {T}\nslot_minutes = 60',
        "[objective]\ncarbon_weight_per_kg = 1.0\ncost_weight = 0.0",
        f"[solver]\ntime_limit_s = {time_limit_s}\nmip_rel_gap = {mip_rel_gap}\nwindow_rounding_slots = {window}",
        '[carbon]\nfile = "carbon.csv"',
        GPU,
    ]
    for s in sites:
        text.append(
            f'[[sites]]\nname = "{s["site"]}"\nzone = "{s["site"]}"\njurisdictions = ["{s["site"]}"]\n'
            f"pue = {float(s['pue'])}\npower_budget_kw = {float(s['budget_kw']) * node_factor}"
        )
    for p in pools:
        boot_min = 6.0  # boot energy = boot_kwh spread over 6 minutes
        boot_w = float(p["boot_kwh"]) * 1000.0 / (boot_min / 60.0)
        text.append(
            f'[[pools]]\nname = "{p["pool"]}"\nsite = "{p["site"]}"\nnodes = {int(p["nodes"]) * node_factor}\n'
            f'gpu_model = "BENCH-300W"\ngpus_per_node = {int(p["gpus_per_node"])}\n'
            f"node_idle_w = {float(p['idle_node_kw']) * 1000.0}\nnode_boot_w = {boot_w}\n"
            f"boot_time_min = {boot_min}\nmin_up_h = 3.0\nspares = {int(p['spares']) * node_factor}\n"
            f"initial_on = {int(p['initial_on']) * node_factor}"
        )
    path = out / "fleet.toml"
    path.write_text("\n\n".join(text) + "\n")
    return path
