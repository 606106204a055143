"""The bundled example fleet planned on real grid data from ../shared/data/carbon.

Asserts what users care about: no deadline missed when it can be met, carbon below both
baselines, caps within device limits, site budgets held, residency never violated, an
executable schedule (integer nodes covering every allocated GPU, contiguous runs).
"""

from __future__ import annotations

import csv
import math
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from greencpn.clock import SimClock
from greencpn.config import allowed_sites, load_config
from greencpn.controller.forecast import make_plan
from greencpn.optimize.checks import check_deadlines

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "carbon" / "electricitymaps_hourly_lca_2021-2023.csv"
EXAMPLE = ROOT / "data" / "example"

pytestmark = pytest.mark.skipif(
    not SHARED.is_file(),
    reason=f"real carbon data not found at {SHARED} (../shared/data is absent)",
)


def _shift(ts: str, delta: timedelta) -> str:
    return (datetime.fromisoformat(ts.replace("Z", "+00:00")) + delta).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def example_on(tmp: Path, start: str) -> Path:
    """The example fleet and jobs moved to another start, reading the shared 3-year file."""
    text = (EXAMPLE / "fleet.toml").read_text()
    old_start = next(line for line in text.splitlines() if line.startswith("start ="))
    old = old_start.split('"')[1]
    delta = datetime.fromisoformat(start.replace("Z", "+00:00")) - datetime.fromisoformat(
        old.replace("Z", "+00:00")
    )
    text = text.replace(old_start, f'start = "{start}"')
    text = text.replace('file = "carbon.csv"', f'file = "{SHARED}"')
    text = text.replace("[carbon]", "[carbon]\nassume_utc = true", 1)
    (tmp / "fleet.toml").write_text(text)
    with (EXAMPLE / "jobs.csv").open() as fh, (tmp / "jobs.csv").open("w", newline="") as out:
        reader = csv.DictReader(fh)
        writer = csv.DictWriter(out, fieldnames=reader.fieldnames)
        writer.writeheader()
        for row in reader:
            row["release"] = _shift(row["release"], delta)
            row["deadline"] = _shift(row["deadline"], delta)
            writer.writerow(row)
    return tmp / "fleet.toml"


@pytest.mark.slow
@pytest.mark.parametrize("start", ["2022-01-10T00:00:00Z", "2023-07-03T00:00:00Z"])
def test_example_fleet_on_real_carbon(tmp_path, start):
    cfg = load_config(example_on(tmp_path, start))
    res = make_plan(cfg, SimClock(datetime.fromisoformat(start.replace("Z", "+00:00"))))
    doc = res.document
    assert doc["solver"]["status"] in ("optimal", "time_limit")
    assert doc["solver"]["mip_gap"] <= cfg.raw.solver.mip_rel_gap + 1e-9

    # no deadline missed where the job could meet it
    unavoidable = {m.split()[2] for m in check_deadlines(res.inputs)}
    late = [j["id"] for j in doc["jobs"] if j["late_h"] > 1e-6 and j["id"] not in unavoidable]
    assert late == []
    assert doc["totals"]["unserved_gpu_h"] == 0

    # carbon below both baselines
    assert doc["totals"]["carbon_kg"] < doc["baselines"]["carbon_agnostic"]["carbon_kg"]
    assert doc["totals"]["carbon_kg"] < doc["baselines"]["shutdown_idle"]["carbon_kg"]

    # caps within device limits, nodes integer and covering the allocated GPUs
    for p in doc["pools"]:
        for s in p["slots"]:
            assert p["power_limit_min_w"] <= s["power_cap_w"] <= p["power_limit_max_w"]
            assert p["spares"] <= s["nodes_on"] <= p["nodes"]
            assert s["busy_gpus"] <= s["nodes_on"] * p["gpus_per_node"]

    # site budgets held
    for site in doc["sites"]:
        for s in site["slots"]:
            if s["budget_kw"] is not None:
                assert s["meter_power_kw"] <= s["budget_kw"] + 1e-6, (site["name"], s)

    # residency and latency never violated; non-checkpointable jobs contiguous on one pool
    jobs = {j.id: j for j in cfg.jobs}
    for j in doc["jobs"]:
        if j["site"] is None:
            continue
        assert j["site"] in allowed_sites(jobs[j["id"]], cfg.raw.sites)
        slots = [r["slot"] for r in j["schedule"]]
        if not j["checkpointable"]:
            assert slots == list(range(slots[0], slots[0] + len(slots)))
        done = sum(r["gpus"] * r["busy_fraction"] for r in j["schedule"])
        assert done > 0 and math.isfinite(done)
