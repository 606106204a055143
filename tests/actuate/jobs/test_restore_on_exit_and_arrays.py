"""Restore-on-exit of jobs through the daemon's exit path, and pending Slurm job arrays — on a
REAL slurmctld + slurmd (tests/conftest.py ``slurm``, no accounting) and the fake Kubernetes API.

* ``greencpn apply`` defers and steers Slurm jobs and holds gated pods; then the daemon
  (``on_exit = "restore"``, enforce) is stopped: every Slurm job is back to its original
  begin time and partition (read back with ``scontrol``), every pod is ungated, the heartbeat
  lease is deleted, and the ledger has one ``restore-on-exit`` apply with a row per job.
* arrays: ``sbatch --array`` gives one pending record for many tasks; a plan that names every
  task with one start defers the whole array in one update; tasks planned apart are each split
  off and deferred alone; a partly started array has only its pending tasks touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from greencpn.actuate.jobs.slurm import SlurmJobActuator
from greencpn.actuate.ledger import Ledger
from greencpn.cli import main
from greencpn.clock import SystemClock
from greencpn.daemon.core import Daemon
from tests.actuate.jobs.fake_kube import FakePodsApi, make_pod
from tests.actuate.jobs.job_plans import (
    iso,
    now_s,
    partitions,
    sbatch,
    show_job,
    slurm_cluster_toml,
    write_fleet,
    write_plan,
)
from tests.daemon.fake_controller import FakeController

if TYPE_CHECKING:
    from slurm_cluster import SlurmCluster

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]

SLURM_NODE1_EXTRA = "Feature=green,blue"
SLURM_EXTRA_CONF = (
    "PartitionName=green Nodes=node1 State=UP OverSubscribe=FORCE:32\n"
    "SchedulerParameters=sched_interval=1,bf_interval=1\nMinJobAge=900\nMaxArraySize=1001"
)
SLURM_MAIN_PARTITION_EXTRA = "OverSubscribe=FORCE:32"


def _kube_cluster(api: FakePodsApi, token: Path) -> str:
    return f"""name = "k1"
kind = "kubernetes"
sites = ["s2"]
host = "{api.url}"
token_file = "{token}"
lease_namespace = "greencpn"
steer = "nodes"
[job_actuation.clusters.pools.p-k8s]
node_selector = {{ "greencpn.io/pool" = "p-k8s" }}
"""


def test_daemon_exit_restores_slurm_jobs_and_releases_pods(
    slurm: SlurmCluster,
    kube: tuple[FakePodsApi, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    api, token = kube
    partitions(slurm, "DOWN")
    try:
        t0 = now_s()
        x = sbatch(slurm)  # deferred + steered to green
        y = sbatch(slurm, "--begin=now+40minutes")  # its own begin time, deferred less
        orig = {j: show_job(slurm, j) for j in (x, y)}
        api.add(make_pod("ml", "planned", created=iso(t0)))
        api.add(make_pod("ml", "unplanned", created=iso(t0)))  # gated, in no plan
        cfg = write_fleet(
            tmp_path,
            slurm_cluster_toml(
                slurm,
                steer="partition",
                pools={"p-main": {"partition": "main"}, "p-green": {"partition": "green"}},
            ),
            _kube_cluster(api, token),
            job_actuation="default_slack_h = 2\nmin_defer_s = 5",
            two_sites=True,
        )
        (tmp_path / "control.toml").write_text(
            "[control]\nallow_actuation = true\n[daemon]\nmode = 'enforce'\non_exit = 'restore'\n"
        )
        plan = write_plan(
            tmp_path,
            cfg,
            t0,
            [
                (x, "p-green", t0 + timedelta(minutes=20)),
                (y, "p-main", t0 + timedelta(minutes=30)),
                ("ml/planned", "p-k8s", t0 + timedelta(minutes=30)),
            ],
            two_sites=True,
        )
        state = tmp_path / "state"
        argv = ["apply", str(plan), "--slot", "0", "--allow-actuation", "--state-dir", str(state)]
        code = main(argv)
        assert code == 0, capsys.readouterr()
        jx, jy = show_job(slurm, x), show_job(slurm, y)
        assert jx.partition == "green" and jx.begin_at == t0 + timedelta(minutes=20)
        assert jy.begin_at == orig[y].begin_at  # its user's later begin time is left alone
        assert api.gated("ml", "planned") and ("greencpn", "greencpn-controller") in api.leases

        daemon = Daemon(
            cfg,
            state_dir=state,
            clock=SystemClock(),
            # the fake controller takes no queue / job_actuator (the daemon passes them
            # for [job_actuation]; the real controller's use is tests/actuate/jobs/
            # test_controller_bridge.py)
            controller_factory=lambda p, **kw: FakeController(
                p, **{k: v for k, v in kw.items() if k not in ("queue", "job_actuator")}
            ),
        )
        assert daemon.shutdown("SIGTERM") == 0
        jx, jy = show_job(slurm, x), show_job(slurm, y)
        assert jx.partition == orig[x].partition == "main"
        assert jx.begin_at is not None and jx.begin_at <= now_s()  # eligible now, as submitted
        assert jy.begin_at == orig[y].begin_at and jy.partition == "main"
        assert not api.gated("ml", "planned") and not api.gated("ml", "unplanned")
        assert ("greencpn", "greencpn-controller") not in api.leases
        with Ledger.open_readonly(state) as ledger:
            applies = [a for a in ledger.applies() if a.mode == "restore-on-exit"]
            assert len(applies) == 1 and applies[0].outcome == "applied"
            rows = [
                (s.action, s.status, s.targets[0])
                for s in ledger.steps()
                if s.apply_id == applies[0].id
            ]
            assert ("restore", "ok", x) in rows and ("restore", "ok", "ml/planned") in rows
            assert ("release", "ok", "ml/unplanned") in rows and ("resign", "ok", "k1") in rows
            assert all(r.restored_at is not None for r in ledger.jobs("greencpntest"))
    finally:
        partitions(slurm, "UP")


def _array(slurm: SlurmCluster, spec: str, **kw: Any) -> str:
    return sbatch(slurm, f"--array={spec}", **kw)


def _records(slurm: SlurmCluster, array_id: str) -> dict[str, Any]:
    """The array's pending records as greencpn lists them (meta record: the array's id)."""
    act = SlurmJobActuator(cluster="greencpntest", slurm_conf=str(slurm.conf), timeout_s=20)
    return {j.id: j for j in act.pending_jobs() if j.extra.get("array_job_id") == array_id}


def test_pending_arrays_deferred_per_array_or_per_task(
    slurm: SlurmCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    partitions(slurm, "DOWN")
    t0 = now_s()
    whole = _array(slurm, "0-99")  # every task planned at one start: one update
    split = _array(slurm, "0-3")  # tasks planned apart: split off one by one
    cfg = write_fleet(
        tmp_path,
        slurm_cluster_toml(
            slurm,
            steer="partition",
            pools={"p-main": {"partition": "main"}, "p-green": {"partition": "green"}},
        ),
        job_actuation="default_slack_h = 2\nmin_defer_s = 5",
    )
    at = t0 + timedelta(minutes=20)
    jobs = [(f"{whole}_{i}", "p-green", at) for i in range(100)]
    jobs += [(f"{split}_{i}", "p-main", t0 + timedelta(minutes=10 + i)) for i in range(4)]
    plan = write_plan(tmp_path, cfg, t0, jobs)
    state = str(tmp_path / "state")
    listed = _records(slurm, whole)
    assert list(listed) == [whole]  # one pending record for the 100 tasks
    assert listed[whole].extra["array_tasks"] == list(range(100))
    argv = ["apply", str(plan), "--slot", "0", "--allow-actuation", "--state-dir", state]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    w = show_job(slurm, whole)
    assert w.id == whole and w.extra["array_spec"] == "0-99"  # still one record, not split
    assert w.begin_at == at and w.partition == "green"
    assert out.count(f"greencpntest {whole}  —") == 2, out  # steer + defer, once each
    assert out.count(f"(array {whole}_[0-99]: 100 tasks)") == 2, out
    after = _records(slurm, split)
    assert sorted(after) == [f"{split}_{i}" for i in range(4)], after  # each task its own record
    for i in range(4):
        assert after[f"{split}_{i}"].begin_at == t0 + timedelta(minutes=10 + i)
        assert after[f"{split}_{i}"].partition == "main"
    # a second step changes nothing (every begin time is already the plan's)
    assert main(argv) == 0
    assert "jobs        defer" not in capsys.readouterr().out
    # undo puts the array and the split tasks back (eligible now)
    assert main(["apply", str(plan), "--undo-jobs", "--state-dir", state]) == 0
    out = capsys.readouterr().out
    assert out.count("[ok      ] jobs        restore") == 5, out
    w = show_job(slurm, whole)
    assert w.partition == "main" and w.begin_at is not None and w.begin_at <= now_s()
    slurm.run("scancel", whole, split)

    # --- a partly started array: at most 2 tasks at a time; 0-1 run, 2-5 wait in the record
    part = _array(slurm, "0-5%2", wrap="sleep 120", minutes=5)
    partitions(slurm, "UP")
    try:
        deadline = time.monotonic() + 30
        pend = _records(slurm, part)
        while time.monotonic() < deadline and len(pend[part].extra.get("array_tasks", [])) == 6:
            time.sleep(0.2)
            pend = _records(slurm, part)
    finally:
        partitions(slurm, "DOWN")
    waiting = pend[part].extra["array_tasks"]
    running = [i for i in range(6) if i not in waiting]
    assert running and waiting, pend
    t1 = now_s()
    plan2 = write_plan(
        tmp_path,
        cfg,
        t1,
        [(f"{part}_{i}", "p-green", t1 + timedelta(minutes=15)) for i in range(6)],
    )
    argv2 = ["apply", str(plan2), "--slot", "0", "--allow-actuation", "--state-dir", state]
    assert main(argv2) == 0
    out = capsys.readouterr().out
    rest = show_job(slurm, part)
    assert rest.extra["array_tasks"] == waiting
    assert rest.begin_at == t1 + timedelta(minutes=15) and rest.partition == "green"
    for i in running:  # a running task is never touched
        ran = show_job(slurm, f"{part}_{i}")
        assert ran.state == "RUNNING" and ran.partition == "main"
        assert f"{part}_{i} " not in out
    slurm.run("scancel", part)
    partitions(slurm, "UP")


def test_killed_greencpn_in_hold_mode_release_expired_releases_at_the_latest_safe_start(
    slurm: SlurmCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """defer_with = "hold": Slurm does not release a hold by itself. greencpn apply holds the
    job and is SIGKILLed; `greencpn jobs release-expired --state-dir` (a CronJob) releases it
    once its latest safe start (release + 30 s slack here) has passed, not before."""
    partitions(slurm, "DOWN")
    try:
        t0 = now_s()
        j = sbatch(slurm)
        submitted = show_job(slurm, j).submit_at
        assert submitted is not None
        cfg = write_fleet(
            tmp_path,
            slurm_cluster_toml(slurm, steer="none", pools={}),
            job_actuation=f'defer_with = "hold"\ndefault_slack_h = {30 / 3600}\nmin_defer_s = 5',
        )
        plan = write_plan(tmp_path, cfg, t0, [(j, "p-main", t0 + timedelta(minutes=8))])
        state = tmp_path / "state"
        proc = subprocess.Popen(
            [sys.executable, "-m", "greencpn.cli", "apply", str(plan), "--slot", "0"]
            + ["--allow-actuation", "--state-dir", str(state)],
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        until = time.monotonic() + 60
        while time.monotonic() < until and not show_job(slurm, j).held:
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert show_job(slurm, j).held
        lss = submitted + timedelta(seconds=30)
        with Ledger.open_readonly(state) as ledger:
            rec = ledger.job("greencpntest", j)
            assert rec is not None and rec.held_by_us and rec.latest_safe_start == lss
        argv = ["jobs", "release-expired", "--config", str(cfg), "--state-dir", str(state)]
        released_at = None
        stop = time.monotonic() + 90
        while time.monotonic() < stop:
            before = now_s()
            assert main(argv) == 0
            if not show_job(slurm, j).held:
                released_at = before
                break
            assert now_s() < lss + timedelta(seconds=1)  # held while its lss is ahead
            time.sleep(0.5)
        out = capsys.readouterr().out
        assert released_at is not None, out
        assert lss <= released_at + timedelta(seconds=1) <= lss + timedelta(seconds=4), (
            released_at,
            lss,
        )
        assert f"failsafe_release greencpntest {j}  — latest safe start {iso(lss)} passed" in out
        with Ledger.open_readonly(state) as ledger:
            rows = [(s.action, s.status) for s in ledger.steps() if s.targets == [j]]
            assert ("failsafe_release", "ok") in rows
            rec = ledger.job("greencpntest", j)
            assert rec is not None and not rec.held_by_us
        slurm.run("scancel", j)
    finally:
        partitions(slurm, "UP")
