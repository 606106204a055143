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

Second part (``--part realised``, no Slurm needed): the share of the planned saving realised
when jobs start where and when the job actuators put them (greencpn/whatif/realised.py). For
the bench instances S and M (../shared/bench-instances, converted by bench/instances.py)
``greencpn plan`` makes the plan; the replay then runs one FIFO scheduler per site behind the
fake job actuator, ``act_on_jobs`` at every hourly slot, and prices baseline / planned /
realised job energy at the plan's site intensities — once with jobs queued at their home site
(a queued job cannot change cluster) and once queued at the planned site (``greencpn submit``).

Run: .venv/bin/python bench/bench_jobs.py [--jobs 1000] [--part all|slurm|realised]
     [--write bench/results/jobs.md]
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


REALISED_HEADER = "## Realised share of the planned job-timing saving"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--part", choices=("all", "slurm", "realised"), default="all")
    ap.add_argument("--instances", default="S,M")
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    old = args.write.read_text() if args.write and args.write.exists() else ""
    old_slurm, _, old_real = old.partition(REALISED_HEADER)
    slurm_text = bench_slurm(args.jobs) if args.part in ("all", "slurm") else old_slurm.rstrip()
    real_text = (
        bench_realised(args.instances.split(","))
        if args.part in ("all", "realised")
        else (REALISED_HEADER + old_real).rstrip()
    )
    text = slurm_text.rstrip() + "\n\n" + real_text.rstrip() + "\n"
    print(text)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)
    return 0


def bench_realised(names: list[str]) -> str:
    import json
    import subprocess

    sys.path.insert(0, str(ROOT / "bench"))
    from instances import INSTANCES, convert

    from greencpn.config import load_config
    from greencpn.whatif.realised import ReplayJob, ReplayPool, realised_share

    rows = []
    for name in names:
        if not (INSTANCES / name).is_dir():
            rows.append(f"| {name} | instance not found ({INSTANCES / name}) |||||||||")
            continue
        with tempfile.TemporaryDirectory() as d:
            cfg_path = convert(name, Path(d) / "fleet", time_limit_s=60.0)
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "greencpn.cli", "plan", "--config", str(cfg_path)]
                + ["--out", str(Path(d) / "out"), "--no-report"],
                check=True,
                capture_output=True,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
            )
            plan_s = time.perf_counter() - t0
            plan = json.loads((Path(d) / "out" / "plan.json").read_text())
            cfg = load_config(cfg_path)
        site_names = [s.name for s in cfg.raw.sites]
        site_tags = {s.name: set(s.jurisdictions or [s.name]) for s in cfg.raw.sites}
        pue = {s["name"]: float(s.get("pue") or 1.0) for s in plan["sites"]}
        pools = [
            ReplayPool(
                p["name"],
                p["site"],
                int(p["nodes"]) * int(p["gpus_per_node"]),
                float(p["power_limit_max_w"]) / 1000.0,
                pue[p["site"]],
            )
            for p in plan["pools"]
        ]
        jobs = []
        for j in cfg.jobs:
            tags = set(j.jurisdictions)
            sites = [s for s in site_names if not tags or site_tags[s] & tags]
            jobs.append(
                ReplayJob(j.id, j.gpus, j.work_gpu_h / j.gpus, j.release, j.deadline, tuple(sites))
            )
        for queue in ("home", "planned"):
            t0 = time.perf_counter()
            res = realised_share(plan, jobs, pools, queue=queue)
            wall = time.perf_counter() - t0
            share = "n/a" if res.share is None else f"{100 * res.share:.1f} %"
            moved = sum(1 for j in jobs if j.id in res.planned_starts and
                        next(p.site for p in pools if p.name == res.planned_starts[j.id][0]) != j.sites[0])  # fmt: skip
            rows.append(
                f"| {name} | {queue} | {res.jobs} | {moved} | {res.baseline_kg:,.0f} | "
                f"{res.planned_kg:,.0f} | {res.realised_kg:,.0f} | {share} | "
                f"{res.on_plan} | {res.late_jobs} | {plan_s:.0f} + {wall:.1f} |"
            )
    load = os.getloadavg()
    return (
        f"{REALISED_HEADER}\n\n"
        f"Measured {datetime.now(UTC):%Y-%m-%d} by `bench/bench_jobs.py --part realised` "
        f"({os.cpu_count()} cores, Python {platform.python_version()}, load average "
        f"{load[0]:.1f}). Plan: `greencpn plan` on the bench instance (solver time limit 60 s). "
        "Replay (greencpn/whatif/realised.py): one FIFO scheduler per site (no backfill, a "
        "pool's GPUs as capacity) behind the fake job actuator; `act_on_jobs` at every hourly "
        "slot exactly as `greencpn apply` (defer by begin time, steer by partition = pool, "
        "release at the latest safe start), pools always ready. Carbon here = job GPU energy "
        "only (GPUs × 300 W × run time at full power × PUE) at the plan's site intensity; node "
        "idle power, boots and caps are not in it, so these kg are not the plan's totals. "
        "**share = (baseline − realised) / (baseline − planned)**, baseline = the same "
        "schedulers without greencpn (every job at its home site from its release).\n\n"
        "| instance | jobs queued at | jobs priced | planned at another site | baseline kg | "
        "planned kg | realised kg | realised share of planned saving | on plan (pool, ±1 min) "
        "| late | wall s (plan + replay) |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\n"
        "`home`: a queued job cannot change cluster, so greencpn skips jobs planned at another "
        "site and they run at home from their release (their share of the saving is lost: the "
        "spatial part of the plan needs jobs queued where the plan puts them); `planned`: jobs "
        "queued at the planned site (as `greencpn submit` would). A share above 100 % means the "
        "jobs that stayed home emit less in this job-energy-only accountant than the plan's "
        "placement (the plan also weighs idle nodes, boots and budgets). `on plan`: jobs that "
        "started on their planned pool within a minute of the planned start.\n"
    )


def bench_slurm(n: int) -> str:
    sc = _cluster_module()
    why = sc.missing_reason()
    if why:
        return f"## Job actuation against a real slurmctld\n\nSkipped: {why}\n"
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
    tail = "\n\nItems: jobs listed, job actions (2 per job) or jobs restored.\n"
    return head + body + tail


if __name__ == "__main__":
    sys.exit(main())
