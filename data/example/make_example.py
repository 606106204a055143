"""Generate the bundled example fleet (``fleet.toml``, ``jobs.csv``, ``carbon.csv``) deterministically.

Run from the repository root::

    .venv/bin/python data/example/make_example.py          # rewrites the three files
    .venv/bin/python data/example/make_example.py --check  # exit 1 if they would change

* Sites, pools and node power come from this file and ``models/nodes/*.toml``; GPU power from
  ``models/gpus/*.toml``.
* Jobs are drawn with a fixed seed: GPU counts from the Microsoft Philly trace's empirical
  distribution (re-weighted towards multi-GPU jobs, see README.md), durations uniform
  1-12 h, releases over the first 30 h, deadlines 4-24 h after the earliest possible end.
* ``carbon.csv`` is a 72-hour excerpt of the Electricity Maps lifecycle (LCA) hourly
  intensities (ODbL, "Electricity Maps") read from ``../shared/data/carbon``; when that folder is
  absent the committed ``carbon.csv`` is kept and only the other files are regenerated.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import random
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CARBON_SRC = REPO.parent / "shared" / "data" / "carbon" / "electricitymaps_hourly_lca_2021-2023.csv"
PHILLY_SRC = REPO.parent / "shared" / "data" / "traces" / "philly_jobs_pollux.csv"

SEED = 20230425
START = datetime(2023, 4, 25, tzinfo=UTC)  # spring 2023: clear daily swings in DE, ES, CAISO
CARBON_ROWS = 72  # 48-slot horizon + 24 h of look-ahead
SLOTS = 48
N_JOBS = 600
RELEASE_SPAN_H = 30

# Philly trace (82,247 jobs): share of jobs per GPU count, for when the trace is absent.
PHILLY_GPU_COUNTS = {1: 76627, 2: 1818, 4: 1870, 8: 1643, 12: 7, 16: 199, 24: 7, 32: 67}
# The example has only a few hundred jobs; with Philly's 93 % single-GPU jobs they would
# load the fleet to under 10 %. Re-weight the three shape classes, keep Philly's shape
# within each class.
CLASS_WEIGHTS = {"single": 0.45, "small": 0.37, "large": 0.18}
CLASS_OF = {
    1: "single",
    2: "small",
    4: "small",
    8: "small",
    12: "large",
    16: "large",
    24: "large",
    32: "large",
}

SITES = [
    # name, zone, jurisdictions, pue, price per kWh (EUR), latency ms to user regions
    dict(
        name="frankfurt",
        zone="DE",
        jurisdictions=["EU", "EEA", "DE"],
        pue=1.3,
        price_per_kwh=0.24,
        latency_ms={"eu-central": 5, "eu-north": 20, "eu-south": 30, "us-east": 90, "us-west": 150},
    ),
    dict(
        name="oslo",
        zone="NO",
        jurisdictions=["EEA", "NO"],
        pue=1.15,
        price_per_kwh=0.09,
        latency_ms={"eu-central": 20, "eu-north": 5, "eu-south": 45, "us-east": 95, "us-west": 160},
    ),
    dict(
        name="madrid",
        zone="ES",
        jurisdictions=["EU", "EEA", "ES"],
        pue=1.4,
        price_per_kwh=0.16,
        latency_ms={"eu-central": 30, "eu-north": 45, "eu-south": 5, "us-east": 85, "us-west": 150},
    ),
    dict(
        name="california",
        zone="US-CAL-CISO",
        jurisdictions=["US"],
        pue=1.2,
        price_per_kwh=0.21,
        latency_ms={
            "eu-central": 150,
            "eu-north": 160,
            "eu-south": 150,
            "us-east": 65,
            "us-west": 5,
        },
    ),
]

# meter budget as a share of the site's full-load meter power (all nodes on, all GPUs busy at
# the top cap); frankfurt has a peak-shaving contract 15:00-19:00 UTC.
BUDGET_SHARE = {"frankfurt": 0.85, "oslo": 0.8, "madrid": 0.62, "california": 0.9}
PEAK_SHAVE = {"frankfurt": (15, 19, 0.65)}

POOLS = [
    # name, site, node profile, nodes, spares, initial_on, hostlist, hook
    ("fra-a100", "frankfurt", "dgx-a100", 32, 1, 32, "fra-a[001-032]", "slurm"),
    ("fra-v100", "frankfurt", "dgx1-v100", 24, 1, 24, "fra-v[001-024]", "slurm"),
    ("osl-h100", "oslo", "dgx-h100", 12, 1, 12, "osl-h[001-012]", "ipmi"),
    ("osl-a40", "oslo", "pcie-4gpu-a40", 32, 2, 32, "osl-g[001-032]", "ipmi"),
    ("mad-a100", "madrid", "dgx-a100", 20, 1, 20, "mad-a[001-020]", "slurm"),
    ("mad-a40", "madrid", "pcie-4gpu-a40", 36, 2, 36, "mad-g[001-036]", "slurm"),
    ("cal-h100", "california", "dgx-h100", 20, 1, 20, "cal-h[001-020]", "none"),
    ("cal-v100", "california", "pcie-4gpu-v100", 48, 2, 48, "cal-v[001-048]", "none"),
]
# an ipmi hook must say how to reach each BMC and as whom (checked when the config loads)
HOOK_TOML = {"ipmi": 'hook = { kind = "ipmi", user = "greencpn", bmc_template = "{node}-bmc" }'}
MIN_UP_H = {
    "dgx-a100": 3.0,
    "dgx-h100": 3.0,
    "dgx1-v100": 2.0,
    "pcie-4gpu-a40": 2.0,
    "pcie-4gpu-v100": 2.0,
}


def _load_toml_dir(path: Path) -> dict[str, dict]:
    out = {}
    for f in sorted(path.glob("*.toml")):
        data = tomllib.loads(f.read_text())
        out[data["name"]] = data
        for alias in data.get("aliases", []):
            out[alias] = data
    return out


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, float):
        return repr(round(v, 3))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml_value(x)}' for k, x in v.items()) + " }"
    raise TypeError(v)


def full_load_it_kw(nodes_by_profile: list[tuple[dict, dict, int]]) -> float:
    """IT power with every node on and every GPU busy at the top cap, kW."""
    total_w = 0.0
    for node, gpu, n in nodes_by_profile:
        top = max(gpu["levels"], key=lambda lv: lv["cap_w"])
        busy_w = top["power_factor"] * gpu["power_limit_max_w"]
        total_w += n * (node["node_idle_w"] + node["gpus_per_node"] * (busy_w - gpu["idle_w"]))
    return total_w / 1000.0


def build_fleet_toml() -> tuple[str, int]:
    """The fleet.toml text and the fleet's GPU count."""
    gpus = _load_toml_dir(REPO / "models" / "gpus")
    nodes = _load_toml_dir(REPO / "models" / "nodes")
    lines = [
        "# Example fleet generated by data/example/make_example.py - rerun it instead of editing.",
        "# 4 sites on different grids, 8 pools, 224 nodes; see data/example/README.md.",
        'name = "example"',
        'jobs_file = "jobs.csv"',
        "",
        "[horizon]",
        f'start = "{_iso(START)}"',
        f"slots = {SLOTS}",
        "slot_minutes = 60",
        "",
        "[objective]",
        "carbon_weight_per_kg = 1.0",
        "cost_weight = 0.05            # objective units per EUR: carbon first, cost breaks ties",
        "lateness_weight_per_gpu_h = 10.0",
        "",
        "[solver]",
        "time_limit_s = 60",
        "mip_rel_gap = 0.01",
        "",
        "[carbon]",
        'file = "carbon.csv"            # Electricity Maps, LCA, hourly (ODbL) - see README.md',
    ]
    total_gpus = 0
    for site in SITES:
        members = [
            (nodes[p[2]], gpus[nodes[p[2]]["gpu_model"]], p[3])
            for p in POOLS
            if p[1] == site["name"]
        ]
        meter_kw = full_load_it_kw(members) * site["pue"]
        share = BUDGET_SHARE[site["name"]]
        budget: float | list[float] = float(round(meter_kw * share))
        if site["name"] in PEAK_SHAVE:
            h0, h1, low = PEAK_SHAVE[site["name"]]
            budget = [
                float(
                    round(
                        meter_kw * (low if h0 <= (START + timedelta(hours=i)).hour < h1 else share)
                    )
                )
                for i in range(SLOTS)
            ]
        lines += ["", "[[sites]]"]
        for key in ("name", "zone", "jurisdictions", "pue", "price_per_kwh"):
            lines.append(f"{key} = {_toml_value(site[key])}")
        lines.append(
            f"power_budget_kw = {_toml_value(budget)}"
            f"   # full load would be {meter_kw:.0f} kW at the meter"
        )
        lines.append(f"latency_ms = {_toml_value(site['latency_ms'])}")
    for name, site, prof, n, spares, init, hostlist, hook in POOLS:
        node = nodes[prof]
        total_gpus += n * node["gpus_per_node"]
        lines += [
            "",
            "[[pools]]",
            f'name = "{name}"',
            f'site = "{site}"',
            f"nodes = {n}",
            f'gpu_model = "{node["gpu_model"]}"',
            f"gpus_per_node = {node['gpus_per_node']}",
            f"node_idle_w = {_toml_value(node['node_idle_w'])}",
            f"node_off_w = {_toml_value(node['node_off_w'])}",
            f"node_boot_w = {_toml_value(node['node_boot_w'])}",
            f"boot_time_min = {_toml_value(node['boot_time_min'])}",
            f"min_up_h = {_toml_value(MIN_UP_H[prof])}",
            "min_down_h = 1.0",
            f"spares = {spares}",
            f"initial_on = {init}",
            f'hostlist = "{hostlist}"',
            HOOK_TOML.get(hook, f'hook = {{ kind = "{hook}" }}'),
        ]
    return "\n".join(lines) + "\n", total_gpus


def philly_gpu_counts() -> dict[int, int]:
    """GPU-count histogram of the Philly trace (read when present, else the stored copy)."""
    if not PHILLY_SRC.is_file():
        return dict(PHILLY_GPU_COUNTS)
    counts: dict[int, int] = {}
    with PHILLY_SRC.open(newline="") as fh:
        for row in csv.DictReader(fh):
            g = int(row["num_gpus"])
            if g <= 32:
                counts[g] = counts.get(g, 0) + 1
    return dict(sorted(counts.items()))


def build_jobs_csv(max_gpus_at: dict[str, int]) -> tuple[str, float]:
    """jobs.csv text and the total work in GPU-hours."""
    rng = random.Random(SEED)
    counts = philly_gpu_counts()
    by_class: dict[str, list[tuple[int, int]]] = {}
    for g, c in counts.items():
        by_class.setdefault(CLASS_OF.get(g, "large"), []).append((g, c))
    horizon_end = START + timedelta(hours=SLOTS)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(
        [
            "id",
            "gpus",
            "work_gpu_h",
            "release",
            "deadline",
            "jurisdictions",
            "user_region",
            "max_latency_ms",
            "checkpointable",
            "priority",
        ]
    )
    total = 0.0
    for i in range(N_JOBS):
        cls = rng.choices(list(CLASS_WEIGHTS), weights=list(CLASS_WEIGHTS.values()))[0]
        shapes = by_class[cls]
        gpus = rng.choices([g for g, _ in shapes], weights=[c for _, c in shapes])[0]
        duration_h = round(rng.uniform(1.0, 12.0) * 4) / 4  # quarter hours
        release = START + timedelta(minutes=15 * rng.randrange(0, RELEASE_SPAN_H * 4))
        slack_h = rng.uniform(4.0, 24.0)
        deadline = release + timedelta(hours=duration_h + slack_h)
        deadline = min(deadline, horizon_end)
        deadline = START + timedelta(
            minutes=15 * math.floor((deadline - START).total_seconds() / 900)
        )
        if deadline < release + timedelta(hours=duration_h):
            deadline = release + timedelta(hours=duration_h)
        r = rng.random()
        jurisdictions = ""
        region, max_lat = "", ""
        if r < 0.20:
            jurisdictions = "EU;EEA"  # GDPR: personal data stays in the EU/EEA
        elif r < 0.25:
            jurisdictions = "US"  # export-controlled data stays in the US
        elif r < 0.33:
            region, max_lat = "eu-central", "25"  # interactive: near Frankfurt
        elif r < 0.38:
            region, max_lat = "us-west", "30"
        elif r < 0.43:
            region, max_lat = "eu-south", "35"
        # a job must fit in the biggest pool it may use
        allowed = [
            s["name"]
            for s in SITES
            if (not jurisdictions or set(jurisdictions.split(";")) & set(s["jurisdictions"]))
            and (not region or s["latency_ms"][region] <= float(max_lat))
        ]
        gpus = min(gpus, max(max_gpus_at[s] for s in allowed))
        checkpointable = rng.random() < 0.30
        priority = rng.choices([1.0, 2.0, 5.0], weights=[0.8, 0.15, 0.05])[0]
        work = round(gpus * duration_h, 2)
        total += work
        w.writerow(
            [
                f"job-{i:04d}",
                gpus,
                f"{work:g}",
                _iso(release),
                _iso(deadline),
                jurisdictions,
                region,
                max_lat,
                "true" if checkpointable else "false",
                f"{priority:g}",
            ]
        )
    return out.getvalue(), total


def build_carbon_csv() -> str | None:
    """72 hourly rows of DE, NO, ES, US-CAL-CISO from the shared Electricity Maps file."""
    if not CARBON_SRC.is_file():
        return None
    zones = [s["zone"] for s in SITES]
    want = {_iso(START + timedelta(hours=i)) for i in range(CARBON_ROWS)}
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["datetime_utc", *zones])
    n = 0
    with CARBON_SRC.open(newline="") as fh:
        for row in csv.DictReader(fh):
            ts = datetime.fromisoformat(row["datetime_utc"]).replace(tzinfo=UTC)
            if _iso(ts) in want:
                w.writerow([_iso(ts), *(row[z] for z in zones)])
                n += 1
    if n != CARBON_ROWS:
        raise SystemExit(f"{CARBON_SRC}: expected {CARBON_ROWS} rows from {_iso(START)}, got {n}")
    return out.getvalue()


def build_all() -> tuple[dict[str, str], dict[str, float]]:
    fleet, total_gpus = build_fleet_toml()
    nodes = _load_toml_dir(REPO / "models" / "nodes")
    max_gpus_at: dict[str, int] = {}
    for _, site, prof, n, *_ in POOLS:
        max_gpus_at[site] = max(max_gpus_at.get(site, 0), n * nodes[prof]["gpus_per_node"])
    jobs, work = build_jobs_csv(max_gpus_at)
    files = {"fleet.toml": fleet, "jobs.csv": jobs}
    carbon = build_carbon_csv()
    if carbon is not None:
        files["carbon.csv"] = carbon
    stats = {"gpus": total_gpus, "work_gpu_h": work, "utilisation_48h": work / (total_gpus * SLOTS)}
    return files, stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the files would change")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    files, stats = build_all()
    if "carbon.csv" not in files:
        print(f"note: {CARBON_SRC} not found; keeping the committed carbon.csv", file=sys.stderr)
    changed = []
    for name, text in files.items():
        path = args.out / name
        if not path.is_file() or path.read_text() != text:
            changed.append(name)
            if not args.check:
                path.write_text(text)
    print(
        f"{stats['gpus']} GPUs, {N_JOBS} jobs, {stats['work_gpu_h']:.0f} GPU-h of work = "
        f"{100 * stats['utilisation_48h']:.1f} % of the fleet's GPU-hours over {SLOTS} h"
    )
    if args.check:
        print("changed: " + (", ".join(changed) or "nothing"))
        return 1 if changed else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
