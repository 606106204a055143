"""Benchmark job actuation against a REAL slurmctld: pending jobs read, deferred, steered and
read back, then all restored (``--undo-jobs`` path), for N pending jobs (default 1,000).

A cluster is started from tests/slurm_cluster.py in a temp dir (munged, slurmctld, one slurmd,
partitions ``main`` and ``green``, both DOWN so the jobs stay pending); N jobs are submitted
with ``sbatch``; then, timed:

* ``pending_jobs()`` — one ``squeue --json --states=PENDING`` parse of N jobs;
* a shadow step — decide + ledger rows for every job, no scheduler writes;
* an act step — per job: steer + defer in one ``scontrol update JobId= Partition= StartTime=``
  and one ``scontrol show job`` read back; both actions written to the ledger (intent, result);
* undo — per job: restore partition and begin time (each read back).

Not measured here: the share of the planned carbon saving realised in a replay where jobs follow
the actuated begin times — that needs the what-if simulator, which does not exist yet.

Run: .venv/bin/python bench/bench_jobs.py [--jobs 1000] [--write bench/results/jobs.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from greencpn.actuate.jobs import JobBackends, act_on_jobs, undo_all_jobs
from greencpn.actuate.jobs.slurm import SlurmJobActuator
from greencpn.actuate.ledger import Ledger
from greencpn.config import JobActuationConfig

ROOT = Path(__file__).resolve().parents[1]


def _cluster_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "slurm_cluster", ROOT / "tests" / "slurm_cluster.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["slurm_cluster"] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    sc = _cluster_module()
    why = sc.missing_reason()
    if why:
        print(f"bench_jobs: skipped: {why}")
        return 0
    n = args.jobs
    rows: list[tuple[str, float, int]] = []
    with (
        tempfile.TemporaryDirectory() as d,
        sc.start_slurm_cluster(
            Path(d) / "slurm",
            node1_extra="Feature=green",
            main_extra="OverSubscribe=FORCE:32",
            extra_conf=f"PartitionName=green Nodes=node1 State=UP\nMaxJobCount={max(10000, 2 * n)}",
        ) as cluster,
    ):
        for part in ("main", "green"):
            cluster.run("scontrol", "update", f"PartitionName={part}", "State=DOWN")
        t0 = time.perf_counter()
        ids = []
        for _ in range(n):
            ids.append(
                cluster.run(
                    "sbatch",
                    "--parsable",
                    "-t",
                    "30",
                    "-o",
                    "/dev/null",
                    "-D",
                    d,
                    "--wrap",
                    "sleep 1",
                ).strip()
            )
        submit_s = time.perf_counter() - t0
        version = cluster.run("sinfo", "-V").strip().removeprefix("slurm ")
        act = SlurmJobActuator(cluster="greencpntest", slurm_conf=str(cluster.conf), timeout_s=60)
        t0 = time.perf_counter()
        pending = act.pending_jobs()
        rows.append(("pending_jobs(): squeue --json parse", time.perf_counter() - t0, len(pending)))
        assert len(pending) == n, (len(pending), n)
        now = datetime.now(UTC).replace(microsecond=0)
        start = now + timedelta(hours=2)
        plan = {
            "jobs": [{"id": i, "site": "s1", "pool": "p", "start": start.isoformat()} for i in ids]
        }
        cfg = JobActuationConfig.model_validate(
            {
                "default_slack_h": 24,
                "clusters": [
                    {
                        "name": "greencpntest",
                        "kind": "slurm",
                        "sites": ["s1"],
                        "slurm_conf": str(cluster.conf),
                        "steer": "partition",
                        "pools": {"p": {"partition": "green"}},
                    }
                ],
            }
        )
        backends = JobBackends(config=cfg, actuators={"greencpntest": act})
        with Ledger.open(Path(d) / "state") as ledger:
            for shadow in (True, False):
                aid = ledger.begin_apply(now, plan_path=None, slot=0, slot_start=now, mode="bench")
                t0 = time.perf_counter()
                rep = act_on_jobs(
                    plan,
                    backends,
                    ledger,
                    aid,
                    clock_now=lambda: datetime.now(UTC),
                    next_step_at=now + timedelta(hours=1),
                    pool_ready=lambda p: True,
                    shadow=shadow,
                )
                dt = time.perf_counter() - t0
                ok = sum(1 for o in rep.outcomes if o.status == ("shadow" if shadow else "ok"))
                assert ok == 2 * n, rep.counts
                rows.append(
                    (
                        (
                            "shadow step: decide + ledger (no writes)"
                            if shadow
                            else "act step: steer + defer (1 update + 1 read back per job) + ledger"
                        ),
                        dt,
                        ok,
                    )
                )
            check = act.read(ids[-1])
            assert check.partition == "green" and check.begin_at == start
            aid = ledger.begin_apply(now, plan_path=None, slot=None, slot_start=None, mode="bench")
            t0 = time.perf_counter()
            rep = undo_all_jobs(backends, ledger, aid, clock_now=lambda: datetime.now(UTC))
            dt = time.perf_counter() - t0
            restored = sum(1 for o in rep.outcomes if o.status == "ok")
            assert restored == n, rep.counts
            rows.append(("undo: restore partition + begin time, read back", dt, restored))
            assert act.read(ids[-1]).partition == "main"
        cluster.run("scancel", "--state=PENDING", "-u", "root")
    load = os.getloadavg()
    head = (
        "## Job actuation against a real slurmctld\n\n"
        f"Measured {datetime.now(UTC):%Y-%m-%d} by `bench/bench_jobs.py` on this machine: "
        f"{os.cpu_count()} cores (`nproc`), {platform.machine()}, Python {platform.python_version()}, "
        f"Slurm {version} "
        "(slurmctld + one slurmd on 127.0.0.1, state in a temp dir). "
        f"{n} pending jobs submitted with `sbatch` ({submit_s:.1f} s, {n / submit_s:.0f} submissions/s). "
        "Act step: per job ONE `scontrol update` (Partition= and StartTime=) and one `scontrol show "
        "job` (read back; the value before comes from the `squeue --json` listing), counted as 2 "
        "actions (steer to a partition, defer the begin time), each with its own ledger intent and "
        "result. Undo: per job one update + read back per restored field. The machine is shared "
        f"(load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end), so times are noisy.\n\n"
        "| step | wall s | items | items per s |\n|---|---:|---:|---:|\n"
    )
    body = "\n".join(f"| {name} | {s:.2f} | {k} | {k / s:.1f} |" for name, s, k in rows)
    tail = (
        "\n\nItems: jobs listed, job actions (2 per job) or jobs restored. Not measured: the share of "
        "the planned carbon saving realised in a replay that follows the actuated begin times "
        "(needs the what-if simulator, not built yet).\n"
    )
    text = head + body + tail
    print(text)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
