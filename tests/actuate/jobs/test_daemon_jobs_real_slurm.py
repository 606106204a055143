"""The daemon's job side against a REAL slurmctld + slurmd whose node1 counts 4 GPUs
(``gres.conf``, no devices needed):

* the controller's observe phase reads running AND pending jobs from Slurm itself
  (``squeue --json``): a running GPU job is pinned where it runs with the work it has left;
* lost leadership never costs a deadline: two ``greencpn run`` processes share a REAL etcd;
  the leader defers jobs on the real slurmctld, is frozen (SIGSTOP) mid-step, loses its lease
  and the other takes over; thawed, the deposed leader's remaining actions are refused by the
  fence (no job carries its times); the new leader is then killed (SIGKILL), and every job
  still starts by its latest safe start — Slurm's begin times need no running greencpn.

The leadership test's controller follows a plan file (tests/actuate/jobs/run_plan_daemon.py:
no MILP, so the planned starts are seconds away); the daemon, elector, queue, bridge, ledger
and Slurm are the real ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from greencpn.actuate.jobs.controller_bridge import RunningJob, controller_job_kwargs
from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.fakes import FakeFleet
from greencpn.controller.types import Mode
from tests.actuate.jobs.job_plans import iso, now_s, partitions, sbatch, show_job
from tests.controller.conftest import GPU, make_controller

if TYPE_CHECKING:
    from slurm_cluster import SlurmCluster

    from tests.daemon.conftest import EtcdServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
SLURM_NODE1_EXTRA = "Gres=gpu:4"
SLURM_GRES_CONF = "NodeName=node1 Name=gpu File=/dev/null,/dev/zero,/dev/full,/dev/random"
SLURM_MAIN_PARTITION_EXTRA = "OverSubscribe=FORCE:32"
SLURM_EXTRA_CONF = (
    "GresTypes=gpu\nSchedulerParameters=sched_interval=1,bf_interval=1\nMinJobAge=900"
)
START_LATENCY_S = 20.0  # Slurm's scheduler loop: a job eligible at t starts by t + this
PERIOD_S = 6.0
TTL_S = 2


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    from tests.daemon.conftest import ETCD, _start_etcd

    if not ETCD:
        pytest.skip("etcd not installed (Debian package 'etcd-server'; .ci/run installs it)")
    srv = _start_etcd(tmp_path_factory.mktemp("etcd"))
    try:
        yield srv
    finally:
        srv.proc.terminate()
        srv.proc.wait(timeout=10)


def _fleet(tmp: Path, slurm: SlurmCluster, now: datetime, slack_h: float = 24.0) -> Path:
    """Site s1, pool p-main = node1 (1 node x 4 GPUs), carbon for the days around ``now``,
    [job_actuation] on the real cluster (no steering)."""
    t0 = now.replace(minute=0, second=0) - timedelta(hours=24)
    rows = "".join(f"{iso(t0 + timedelta(hours=h))},{300 + 100 * (h % 5)}\n" for h in range(96))
    (tmp / "carbon.csv").write_text("datetime_utc,Z1\n" + rows)
    cfg = tmp / "fleet.toml"
    cfg.write_text(f"""
name = "real-slurm-daemon"
[horizon]
slots = 6
slot_minutes = 60
[solver]
time_limit_s = 20
[carbon]
file = "carbon.csv"
{GPU}
[[sites]]
name = "s1"
zone = "Z1"
pue = 1.2
[[pools]]
name = "p-main"
site = "s1"
nodes = 1
gpu_model = "T1"
gpus_per_node = 4
node_idle_w = 200
hostlist = "node1"
[job_actuation]
default_slack_h = {slack_h}
min_defer_s = 1
[[job_actuation.clusters]]
name = "greencpntest"
kind = "slurm"
sites = ["s1"]
slurm_conf = "{slurm.conf}"
steer = "none"
timeout_s = 20
""")
    return cfg


def _wait(cond: Any, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _started(slurm: SlurmCluster, job_id: str) -> datetime | None:
    j = show_job(slurm, job_id)
    if j.state in ("PENDING", ""):
        return None
    return datetime.fromisoformat(str(j.extra["start_time"])).replace(tzinfo=UTC)


def test_the_controller_observes_running_and_pending_jobs_from_slurm(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    running = sbatch(slurm, "--gpus=2", minutes=30, wrap="sleep 120")
    _wait(lambda: show_job(slurm, running).state == "RUNNING", 30, "the 2-GPU job to run")
    pending = sbatch(slurm, "--gpus=4", minutes=60)  # 2 GPUs busy: waits for resources
    plain = sbatch(slurm, minutes=5, wrap="sleep 60")  # no GPU: not planned by greencpn
    try:
        now = now_s()
        cfg_path = _fleet(tmp_path, slurm, now)
        cfg = load_config(cfg_path)
        clock = SimClock(now)
        state = tmp_path / "state"
        kw = controller_job_kwargs(cfg, state, clock_now=clock.now, enforce=False)
        obs = kw["queue"].observe(now)
        started = _started(slurm, running)
        assert started is not None
        assert [(r.job.id, r.pool, r.nodes, r.started_at) for r in obs.running] == [
            (running, "p-main", ("node1",), started)
        ]
        r = obs.running[0]
        assert isinstance(r, RunningJob) and r.job.gpus == 2
        elapsed_h = (now - started).total_seconds() / 3600
        assert abs(r.remaining_gpu_h - 2 * (0.5 - elapsed_h)) < 1e-6
        assert [(j.id, j.gpus, j.work_gpu_h) for j in obs.pending] == [(pending, 4, 4.0)]
        assert (plain, "running, asks for no GPU") in kw["queue"].skipped or (
            plain,
            "asks for no GPU",
        ) in kw["queue"].skipped
        # the REAL controller's step observes the same: the running job is kept (never
        # touched) and planned where it runs; the pending one is planned after it
        ctl = make_controller(
            cfg_path, clock, tmp_path / "ctl", FakeFleet(cfg, clock), mode=Mode.SHADOW, **kw
        )
        res = ctl.step()
        assert res.metrics["jobs"]["running"] == 1, res.errors
        plan_jobs = {j["id"]: j for j in res.plan["jobs"]}
        assert plan_jobs[running]["pool"] == "p-main"
        assert plan_jobs[running]["start"] <= iso(now)
        assert pending in plan_jobs
        kinds = {(a["kind"], a["target"]) for a in res.actions}
        assert ("job.keep", running) not in kinds  # a running job gets no action row at all
        assert not any(t == running for _k, t in kinds)
    finally:
        for j in (running, pending, plain):
            slurm.run("scancel", j)


def _spawn(tmp: Path, name: str, cfg: Path, plan: Path, log: Path, delay: float) -> Any:
    return subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tests" / "actuate" / "jobs" / "run_plan_daemon.py"),
            str(cfg),
            str(tmp / f"state-{name}"),
            str(plan),
            str(log),
            "--delay",
            str(delay),
            "--name",
            name,
        ],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.DEVNULL,
        stderr=(tmp / f"{name}.log").open("wb"),
    )


def _rows(log: Path) -> list[dict[str, Any]]:
    if not log.is_file():
        return []
    return [json.loads(x) for x in log.read_text().splitlines() if x.strip()]


def _holder(etcd: EtcdServer, key: str) -> str | None:
    import etcd3gw

    c = etcd3gw.client(host="127.0.0.1", port=etcd.port, api_path="/v3/", timeout=2)
    kvs = c.get(key)
    return json.loads(kvs[0])["name"] if kvs else None


def _plan(path: Path, jobs: dict[str, datetime]) -> Path:
    path.write_text(
        json.dumps(
            {
                "jobs": [
                    {"id": j, "site": "s1", "pool": "p-main", "start": iso(s)}
                    for j, s in jobs.items()
                ]
            }
        )
    )
    return path


def test_a_deposed_leader_is_refused_and_no_deferred_job_misses_its_latest_safe_start(
    slurm: SlurmCluster, tmp_path: Path, etcd: EtcdServer
) -> None:
    key = f"/greencpn-test/jobs-leader/{time.monotonic_ns()}"
    partitions(slurm, "DOWN", ("main",))  # Slurm starts nothing before greencpn acted
    procs: list[subprocess.Popen[bytes]] = []
    try:
        t0 = now_s()
        # 2-minute jobs that must end 5 min from now: latest safe start = t0 + 3 min
        jobs = [sbatch(slurm, "--gpus=1", "--deadline=now+5minutes") for _ in range(6)]
        lss = {j: show_job(slurm, j).deadline - timedelta(minutes=2) for j in jobs}  # type: ignore[operator]
        plan_a = _plan(tmp_path / "plan-a.json", dict.fromkeys(jobs, t0 + timedelta(seconds=45)))
        # b's plan: three jobs at t0 + 75 s, three after their latest safe start (clamped)
        want_b = {
            j: t0 + timedelta(seconds=75) if i < 3 else t0 + timedelta(minutes=9)
            for i, j in enumerate(jobs)
        }
        plan_b = _plan(tmp_path / "plan-b.json", want_b)
        cfg = _fleet(tmp_path, slurm, t0)
        (tmp_path / "control.toml").write_text(f"""[control]
allow_actuation = true
[daemon]
mode = "enforce"
period_s = {PERIOD_S}
offset_s = 0.5
misfire_grace_s = 2
on_exit = "leave"
[daemon.http]
enabled = false
[daemon.etcd]
endpoints = ["{etcd.endpoint}"]
key = "{key}"
ttl_s = {TTL_S}
timeout_s = 1.0
""")
        log = tmp_path / "actions.jsonl"
        a = _spawn(tmp_path, "a", cfg, plan_a, log, delay=1.5)
        procs.append(a)
        _wait(lambda: _holder(etcd, key) == "a", 20, "a to lead")
        b = _spawn(tmp_path, "b", cfg, plan_b, log, delay=0.0)
        procs.append(b)
        # a defers its first two jobs (one scontrol update + read back each), then freezes
        _wait(
            lambda: sum(r["pid"] == a.pid and r["status"] == "done" for r in _rows(log)) >= 2,
            40,
            "a to defer two jobs",
        )
        os.kill(a.pid, signal.SIGSTOP)
        frozen_at = time.time()
        by_a = [r["job"] for r in _rows(log) if r["pid"] == a.pid and r["status"] == "done"]
        assert len(by_a) < len(jobs), "a finished its step before it was frozen"
        for j in by_a:
            assert show_job(slurm, j).begin_at == t0 + timedelta(seconds=45)
        _wait(lambda: _holder(etcd, key) == "b", 3 * TTL_S + 3, "b to take over")
        # b defers every job to ITS plan (clamped to the latest safe start)
        want = {j: min(s, lss[j]) for j, s in want_b.items()}
        _wait(
            lambda: all(show_job(slurm, j).begin_at == want[j] for j in jobs),
            3 * PERIOD_S + 10,
            "b to defer every job",
        )
        os.kill(a.pid, signal.SIGCONT)  # a wakes mid-step: its next fence must refuse
        thawed_at = time.time()
        _wait(
            lambda: any(r["pid"] == a.pid and r["at"] > thawed_at for r in _rows(log)),
            10,
            "a to try its next action",
        )
        time.sleep(PERIOD_S)  # and a's next steps, as a follower
        late = [r for r in _rows(log) if r["pid"] == a.pid and r["at"] > frozen_at]
        assert late and all(r["status"] == "skipped" for r in late), late
        why = late[0].get("why", "")
        assert "may have expired" in why or "not the leader" in why or "deposed" in why, late
        # nothing of a's survives: every begin time is b's
        assert {j: show_job(slurm, j).begin_at for j in jobs} == want
        # the new leader crashes too: nobody acts any more, Slurm starts the jobs by itself
        b.send_signal(signal.SIGKILL)
        b.wait(timeout=10)
        a.terminate()
        a.wait(timeout=20)
        partitions(slurm, "UP", ("main",))
        up_at = now_s()
        started: dict[str, datetime | None] = {}
        limit = max(lss.values()) + timedelta(seconds=START_LATENCY_S + 10)
        while now_s() < limit:
            started = {j: _started(slurm, j) for j in jobs}
            if all(started.values()):
                break
            time.sleep(2)
        assert all(started.values()), started
        for j, s in started.items():
            assert s is not None
            assert s <= lss[j] + timedelta(seconds=START_LATENCY_S), (j, s, lss[j])
            assert s >= max(want[j], up_at) - timedelta(seconds=1), (j, s, want[j])
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait(timeout=10)
        partitions(slurm, "UP", ("main",))
        for j in locals().get("jobs", []):
            subprocess.run(["scancel", j], env=slurm.env, check=False)
