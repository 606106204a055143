"""Fleet configs and plans for job-actuation tests that run ``greencpn apply`` (shared by the
real-Slurm, Kubernetes fail-safe and restore-on-exit tests): one site ``s1``, pools ``p-main``
and ``p-green`` (one node, one A100 each), a plan of 1-minute slots whose ``jobs`` list is
given, and helpers for the real Slurm cluster (tests/conftest.py ``slurm``)."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from greencpn.actuate.jobs.base import PendingJob
from greencpn.actuate.jobs.slurm import parse_scontrol_job

if TYPE_CHECKING:
    from slurm_cluster import SlurmCluster

POOLS = ("p-main", "p-green")
K8S_POOL = "p-k8s"  # at site s2 (``two_sites``)


def now_s() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def _pools(two_sites: bool) -> list[tuple[str, str]]:
    return [(n, "s1") for n in POOLS] + ([(K8S_POOL, "s2")] if two_sites else [])


def write_fleet(
    tmp: Path, *clusters_toml: str, job_actuation: str = "", two_sites: bool = False
) -> Path:
    """``tmp/fleet.toml`` with ``[job_actuation]`` (``job_actuation``: its top-level lines) and
    one ``[[job_actuation.clusters]]`` entry per ``clusters_toml`` (with its pool tables);
    ``two_sites``: also site ``s2`` (zone FR) with pool ``p-k8s``."""
    (tmp / "carbon.csv").write_text("timestamp,DE,FR\n" if two_sites else "timestamp,DE\n")
    pools = "".join(
        f"""[[pools]]
name = "{name}"
site = "{site}"
nodes = 1
gpu_model = "A100-SXM4-40GB"
gpus_per_node = 1
node_idle_w = 400.0
"""
        for name, site in _pools(two_sites)
    )
    site2 = '[[sites]]\nname = "s2"\nzone = "FR"\npue = 1.2\n' if two_sites else ""
    clusters = "".join(f"[[job_actuation.clusters]]\n{c}\n" for c in clusters_toml)
    cfg = tmp / "fleet.toml"
    cfg.write_text(f"""
name = "job-actuation-test"
[carbon]
file = "carbon.csv"
[[sites]]
name = "s1"
zone = "DE"
pue = 1.2
{site2}{pools}
[job_actuation]
{job_actuation}
{clusters}""")
    return cfg


def write_plan(
    tmp: Path,
    cfg: Path,
    t0: datetime,
    jobs: list[tuple[str, str, datetime]],
    *,
    two_sites: bool = False,
) -> Path:
    """``tmp/plan.json``: 10 slots of 1 minute from ``t0``, every node on; ``jobs`` are
    ``(id, pool, planned start)`` at the pool's site."""
    site_of = dict(_pools(two_sites))
    starts = [t0 + timedelta(minutes=i) for i in range(10)]
    pools = [
        {
            "name": n,
            "site": site,
            "gpu_model": "A100-SXM4-40GB",
            "nodes": 1,
            "gpus_per_node": 1,
            "hostlist": None,
            "power_limit_min_w": 100,
            "power_limit_max_w": 400,
            "power_limit_default_w": 400,
            "slots": [{"slot": i, "nodes_on": 1, "power_cap_w": None} for i in range(10)],
        }
        for n, site in _pools(two_sites)
    ]
    plan = {
        "schema": "greencpn.plan/1",
        "config": str(cfg),
        "horizon": {
            "start": iso(t0),
            "slot_minutes": 1,
            "slots": 10,
            "slot_starts": [iso(s) for s in starts],
        },
        "pools": pools,
        "jobs": [
            {"id": i, "site": site_of[pool], "pool": pool, "start": iso(s)} for i, pool, s in jobs
        ],
    }
    path = tmp / "plan.json"
    path.write_text(json.dumps(plan))
    return path


# --------------------------------------------------------------------------- real Slurm


def partitions(slurm: SlurmCluster, state: str, names: tuple[str, ...] = ("main", "green")) -> None:
    """DOWN: Slurm queues but starts nothing (so no job starts before greencpn has seen it)."""
    for part in names:
        slurm.run("scontrol", "update", f"PartitionName={part}", f"State={state}")


def sbatch(slurm: SlurmCluster, *args: str, minutes: int = 2, wrap: str = "sleep 3") -> str:
    """Submit ``wrap`` (time limit ``minutes``); returns the job id (``--parsable``)."""
    return slurm.run(
        "sbatch",
        "--parsable",
        "-t",
        str(minutes),
        "-o",
        "/dev/null",
        "-D",
        str(slurm.dir / "jobs"),
        *args,
        "--wrap",
        wrap,
    ).strip()


def show_job(slurm: SlurmCluster, job_id: str) -> PendingJob:
    """``scontrol show job -o`` (UTC) of one job, parsed as greencpn reads it."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id],
        env=dict(slurm.env, TZ="UTC"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_scontrol_job(out.splitlines()[0])


def slurm_cluster_toml(slurm: SlurmCluster, *, steer: str, pools: dict[str, dict[str, str]]) -> str:
    tables = "".join(
        f"[job_actuation.clusters.pools.{name}]\n" + "".join(f'{k} = "{v}"\n' for k, v in t.items())
        for name, t in pools.items()
    )
    return f"""name = "greencpntest"
kind = "slurm"
sites = ["s1"]
slurm_conf = "{slurm.conf}"
steer = "{steer}"
timeout_s = 20
{tables}"""
