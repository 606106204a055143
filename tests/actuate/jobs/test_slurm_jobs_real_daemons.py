"""Job actuation against a REAL slurmctld + slurmd (tests/conftest.py ``slurm`` fixture), with
plans of 1-minute slots and ``greencpn apply`` run as the operator would.

The cluster has accounting (MariaDB + slurmdbd in the temp dir): start times are read from
``sacct`` and checked against ``scontrol show job``'s ``StartTime``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from greencpn.actuate.jobs.slurm import SlurmJobActuator
from greencpn.actuate.ledger import Ledger
from greencpn.cli import main
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

if TYPE_CHECKING:
    from slurm_cluster import SlurmCluster

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
SLURM_NODE1_EXTRA = "Feature=green,blue"
SLURM_MAIN_PARTITION_EXTRA = "OverSubscribe=FORCE:32"
SLURM_EXTRA_CONF = (
    "PartitionName=green Nodes=node1 State=UP OverSubscribe=FORCE:32\n"
    "SchedulerParameters=sched_interval=1,bf_interval=1\n"
    "MinJobAge=900"
)
SLURM_ACCOUNTING = True
START_LATENCY_S = 20.0  # Slurm's scheduler loop: a job eligible at t starts by t + this


_partitions = partitions
_now = now_s
_iso = iso
_sbatch = sbatch
_job = show_job


def _fields(job):  # type: ignore[no-untyped-def]
    """What greencpn may change (Slurm updates the pending reason by itself)."""
    return (job.begin_at, job.held, job.partition, job.features, job.required_nodes)


def _sacct_starts(slurm: SlurmCluster, ids: list[str]) -> dict[str, datetime | None]:
    """Start times as accounting recorded them (None: not started / not recorded yet)."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,Start", "-j", ",".join(ids)],
        env=dict(slurm.env, TZ="UTC"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    got: dict[str, datetime | None] = dict.fromkeys(ids)
    for line in out.splitlines():
        jid, _, start = line.partition("|")
        if jid in got and start not in ("", "Unknown", "None"):
            got[jid] = datetime.fromisoformat(start).replace(tzinfo=UTC)
    return got


def _started_at(slurm: SlurmCluster, job_id: str) -> datetime | None:
    j = _job(slurm, job_id)
    if j.pending:
        return None
    return datetime.fromisoformat(str(j.extra["start_time"])).replace(tzinfo=UTC)


def _ctl_start(slurm: SlurmCluster, job_id: str) -> datetime | None:
    """slurmctld's start time of a job that has started (None: pending or no longer known)."""
    try:
        return _started_at(slurm, job_id)
    except Exception:  # purged from slurmctld (MinJobAge) or not answering: ask again later
        return None


def _fleet(
    tmp: Path,
    slurm: SlurmCluster,
    *,
    steer: str,
    pools: dict[str, dict[str, str]],
    extra: str = "",
    slack_h: float = 1.0,
) -> Path:
    return write_fleet(
        tmp,
        slurm_cluster_toml(slurm, steer=steer, pools=pools),
        job_actuation=f'excluded_accounts = ["excluded-acct"]\ndefault_slack_h = {slack_h}\n'
        f"min_defer_s = 5\n{extra}",
    )


_plan = write_plan


def test_deferred_steered_excluded_and_killed_greencpn_start_by_their_latest_safe_start(
    slurm: SlurmCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # accounting knows the account only once it is added (else Slurm files the job under root)
    slurm.run("sacctmgr", "-i", "add", "account", "excluded-acct")
    slurm.run("sacctmgr", "-i", "add", "user", "root", "account=excluded-acct")
    t0 = _now() - timedelta(seconds=1)  # slot 0 holds "now"; planned starts within 90 s
    _partitions(slurm, "DOWN")
    # --- part 1: greencpn apply in-process, partition steering
    a = _sbatch(slurm)  # planned at +70 s, steered to green
    b = _sbatch(slurm)  # planned at +40 s, main
    c = _sbatch(slurm, "--deadline=now+170seconds")  # must start by now+50 s
    d = _sbatch(slurm, "-A", "excluded-acct")  # excluded: untouched, starts at once
    a_before = _job(slurm, a)
    dir1 = tmp_path / "one"
    dir1.mkdir()
    cfg = _fleet(
        dir1,
        slurm,
        steer="partition",
        pools={"p-main": {"partition": "main"}, "p-green": {"partition": "green"}},
    )
    plan_a, plan_b, plan_c = (
        t0 + timedelta(seconds=70),
        t0 + timedelta(seconds=40),
        t0 + timedelta(minutes=6),
    )
    plan = _plan(
        dir1,
        cfg,
        t0,
        [
            (a, "p-green", plan_a),
            (b, "p-main", plan_b),
            (c, "p-main", plan_c),
            (d, "p-main", plan_b),
        ],
    )
    code = main(
        ["apply", str(plan), "--slot", "0", "--allow-actuation", "--state-dir", str(dir1 / "state")]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    ja, jb, jc, jd = (_job(slurm, x) for x in (a, b, c, d))
    assert ja.begin_at == plan_a and ja.partition == "green" and ja.pending
    assert jb.begin_at == plan_b and jb.partition == "main"
    lss_c = jc.deadline - timedelta(minutes=2)  # type: ignore[operator]
    assert jc.begin_at == lss_c and lss_c < plan_c  # clamped to its latest safe start
    assert jd.account == "excluded-acct" and jd.partition == "main"
    assert f"skip             greencpntest {d}  — excluded account 'excluded-acct'" in out
    with Ledger.open_readonly(dir1 / "state") as ledger:
        rec = ledger.job("greencpntest", a)
        assert rec is not None and rec.originals == {
            "partition": "main",
            "begin_at": _iso(a_before.begin_at),  # type: ignore[arg-type]
        }
        rows = [(s.action, s.status, s.targets) for s in ledger.steps() if s.phase == "jobs"]
    assert ("steer", "ok", [a]) in rows and ("defer", "ok", [a]) in rows
    assert ("defer", "ok", [c]) in rows and ("skip", "skipped", [d]) in rows

    # --- part 2: 12 more jobs, greencpn apply as a process, killed (SIGKILL) mid-run
    dir2 = tmp_path / "two"
    dir2.mkdir()
    more = [
        _sbatch(slurm) if i % 2 else _sbatch(slurm, "--deadline=now+3minutes") for i in range(12)
    ]
    plan2_start = t0 + timedelta(seconds=80)
    cfg2 = _fleet(dir2, slurm, steer="none", pools={})
    plan2 = _plan(dir2, cfg2, t0, [(j, "p-main", plan2_start) for j in more])
    before = {j: _job(slurm, j) for j in more}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "greencpn.cli",
            "apply",
            str(plan2),
            "--slot",
            "0",
            "--allow-actuation",
            "--state-dir",
            str(dir2 / "state"),
        ],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deferred = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        db = dir2 / "state" / "ledger.sqlite"
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                    deferred = conn.execute(
                        "SELECT COUNT(*) FROM steps WHERE action='defer' AND status='ok'"
                    ).fetchone()[0]
            except sqlite3.OperationalError:
                deferred = 0
        if deferred >= 3:
            break
        time.sleep(0.02)
    killed_mid_run = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    _partitions(slurm, "UP")
    up_at = _now()
    assert deferred >= 3
    touched = [j for j in more if _job(slurm, j).begin_at != before[j].begin_at]
    assert len(touched) >= 3
    print(
        f"greencpn killed {'mid-run' if killed_mid_run else 'after it finished'}: "
        f"{len(touched)} of {len(more)} jobs deferred"
    )

    # --- every job starts by its latest safe start (Slurm does it by itself)
    everything = {a: ja, b: jb, c: jc, d: jd, **before}
    lss = {}
    for j, job in everything.items():
        limit = timedelta(minutes=2)
        dl = job.deadline or (job.submit_at + limit + timedelta(hours=1))  # type: ignore[operator]
        lss[j] = dl - limit
    started: dict[str, datetime | None] = {}
    acct: dict[str, datetime | None] = {}
    # accounting first; slurmctld's own record where slurmdbd has not (yet) written a start —
    # a CI run once saw every job run (slurmctld.log) while sacct showed no start for 4 min
    wait_until = time.monotonic() + 4 * 60  # inside pytest-timeout's 300 s, so this says why
    while time.monotonic() < wait_until:
        acct = _sacct_starts(slurm, list(everything))
        started = {j: acct[j] or _ctl_start(slurm, j) for j in everything}
        if all(started.values()):
            break
        time.sleep(2)
    assert all(started.values()), {
        j: (_job(slurm, j).state, _job(slurm, j).extra.get("reason"))
        for j, s in started.items()
        if s is None
    }
    # accounting and the controller agree on every start time accounting has
    assert {j: s for j, s in acct.items() if s is not None} == {
        j: _started_at(slurm, j) for j, s in acct.items() if s is not None
    }
    print(f"starts from accounting: {sum(s is not None for s in acct.values())} of {len(acct)}")
    for j, s in started.items():
        assert s is not None
        assert s <= lss[j] + timedelta(seconds=START_LATENCY_S), (j, s, lss[j])
    # deferred jobs started at their begin time, not before, and promptly
    for j, want in ((a, plan_a), (b, plan_b), (c, lss_c)):
        s = started[j]
        assert s is not None and want <= s <= want + timedelta(seconds=START_LATENCY_S), (
            j,
            s,
            want,
        )
    # the steered job ran in the planned partition; the excluded one started at once
    assert _job(slurm, a).partition == "green"
    sd = started[d]
    assert sd is not None and sd <= up_at + timedelta(seconds=START_LATENCY_S)
    for j in touched:
        s = started[j]
        assert s is not None and s >= min(plan2_start, lss[j]) - timedelta(seconds=1)
    print({j: (s.isoformat() if s else None) for j, s in started.items()})


def test_shadow_then_features_steer_and_undo_restores_every_field(
    slurm: SlurmCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = _now().replace(second=0)
    _partitions(slurm, "DOWN")
    later = _sbatch(slurm, "--begin=now+20minutes", "--constraint=blue")  # own begin time
    soon = _sbatch(slurm)
    cfg = _fleet(
        tmp_path,
        slurm,
        steer="features",
        pools={"p-main": {"features": "blue"}, "p-green": {"features": "green"}},
        slack_h=2.0,
    )
    plan = _plan(
        tmp_path,
        cfg,
        t0,
        [
            (later, "p-green", t0 + timedelta(minutes=30)),
            (soon, "p-green", t0 + timedelta(minutes=8)),
        ],
    )
    orig = {j: _job(slurm, j) for j in (later, soon)}
    state = str(tmp_path / "state")
    # dry run: the job actions are shown, nothing is changed or recorded
    assert main(["apply", str(plan), "--slot", "0", "--dry-run", "--state-dir", state]) == 0
    out = capsys.readouterr().out
    assert f"[dry-run ] jobs        defer            greencpntest {later}  — would begin at" in out
    assert (
        f"[dry-run ] jobs        steer            greencpntest {soon}  — would steer to features 'green'"
        in out
    )
    assert not (tmp_path / "state" / "ledger.sqlite").exists()
    assert {j: _fields(_job(slurm, j)) for j in orig} == {j: _fields(o) for j, o in orig.items()}
    # shadow mode (the default): recorded per job, nothing changed
    assert main(["apply", str(plan), "--slot", "0", "--state-dir", state]) == 0
    out = capsys.readouterr().out
    assert "[shadow  ] jobs        defer" in out and "[shadow  ] jobs        steer" in out
    assert {j: _fields(_job(slurm, j)) for j in orig} == {j: _fields(o) for j, o in orig.items()}
    # act
    assert main(["apply", str(plan), "--slot", "0", "--allow-actuation", "--state-dir", state]) == 0
    capsys.readouterr()
    jl, js = _job(slurm, later), _job(slurm, soon)
    assert jl.features == "green" and jl.begin_at == t0 + timedelta(minutes=30)
    assert js.features == "green" and js.begin_at == t0 + timedelta(minutes=8)
    # undo: every field back (the user's own begin time and constraint; "soon" eligible now)
    assert main(["apply", str(plan), "--undo-jobs", "--state-dir", state]) == 0
    out = capsys.readouterr().out
    assert out.count("[ok      ] jobs        restore") == 2, out
    jl, js = _job(slurm, later), _job(slurm, soon)
    assert jl.features == "blue" and jl.begin_at == orig[later].begin_at
    assert js.features == "" and js.begin_at is not None and js.begin_at <= _now()
    assert jl.partition == orig[later].partition and js.partition == orig[soon].partition
    slurm.run("scancel", later, soon)
    _partitions(slurm, "UP")


def test_hold_mode_and_node_steering_with_typed_errors(slurm: SlurmCluster, tmp_path: Path) -> None:
    act = SlurmJobActuator(cluster="greencpntest", slurm_conf=str(slurm.conf), timeout_s=20)
    j = _sbatch(slurm, "--begin=now+30minutes")
    try:
        pend = {p.id: p for p in act.pending_jobs()}
        assert pend[j].begin_at is not None and pend[j].time_limit_s == 120.0 and not pend[j].held
        assert act.hold(j).after is True and act.read(j).held
        assert act.release(j).after is False
        from greencpn.actuate.jobs.base import SteerMode, SteerTarget

        ch = act.steer(j, SteerTarget(SteerMode.NODES, nodes="node1"))
        assert [(c.what, c.before, c.after, c.changed) for c in ch] == [
            ("required_nodes", "", "node1", True)
        ]
        assert act.restore(j, "required_nodes", "").after == ""
        from greencpn.actuate.jobs.base import JobActuatorPermanentError, JobNotFoundError

        with pytest.raises(JobNotFoundError):
            act.read("999999")
        with pytest.raises(JobActuatorPermanentError, match="nosuchpartition|Invalid partition"):
            act.steer(j, SteerTarget(SteerMode.PARTITION, partition="nosuchpartition"))
    finally:
        slurm.run("scancel", j)


def _two_cluster_fleet(tmp: Path, slurm: SlurmCluster, other_conf: Path | None = None) -> Path:
    """Sites s1 (the real cluster ``greencpntest``) and s2 (cluster ``other``: a second real
    cluster at ``other_conf``, else a config no slurmctld answers)."""
    (tmp / "carbon.csv").write_text("timestamp,DE\n")
    dead = other_conf or tmp / "dead.conf"
    if other_conf is None:
        dead.write_text("ClusterName=other\n")
    pools = ""
    for name, site in (("p-green", "s1"), ("p-other", "s2")):
        pools += f"""
[[pools]]
name = "{name}"
site = "{site}"
nodes = 2
gpu_model = "A100-SXM4-40GB"
gpus_per_node = 4
node_idle_w = 400.0
"""
    cfg = tmp / "fleet.toml"
    cfg.write_text(f"""
name = "two-clusters"
[carbon]
file = "carbon.csv"
[[sites]]
name = "s1"
zone = "DE"
pue = 1.2
[[sites]]
name = "s2"
zone = "FR"
pue = 1.2
{pools}
[[job_actuation.clusters]]
name = "greencpntest"
kind = "slurm"
sites = ["s1"]
slurm_conf = "{slurm.conf}"
steer = "partition"
[job_actuation.clusters.pools.p-green]
partition = "green"
[[job_actuation.clusters]]
name = "other"
kind = "slurm"
sites = ["s2"]
slurm_conf = "{dead}"
""")
    return cfg


def _carbon_plan(tmp: Path, cfg: Path, t0: datetime, s1: list[float], s2: list[float]) -> Path:
    plan = {
        "schema": "greencpn.plan/1",
        "config": str(cfg),
        "horizon": {
            "start": _iso(t0),
            "slot_minutes": 60,
            "slots": len(s1),
            "slot_starts": [_iso(t0 + timedelta(hours=i)) for i in range(len(s1))],
        },
        "pools": [  # a valid plan names its pools (greencpn.plan/1 is validated on load)
            {
                "name": name,
                "site": site,
                "nodes": 2,
                "slots": [{"slot": i, "nodes_on": 2} for i in range(len(s1))],
            }
            for name, site in (("p-green", "s1"), ("p-other", "s2"))
        ],
        "sites": [
            {
                "name": n,
                "slots": [{"slot": i, "intensity_g_per_kwh": v} for i, v in enumerate(vals)],
            }
            for n, vals in (("s1", s1), ("s2", s2))
        ],
    }
    path = tmp / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def test_submit_sends_the_job_to_the_greenest_cluster(
    slurm: SlurmCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = _now()  # slots start now: the run windows below are whole slots
    cfg = _two_cluster_fleet(tmp_path, slurm)
    # s1 is cleaner over the next 2 h (100, 300 vs 200, 250): submitted to the real cluster,
    # into the partition of its pool
    plan = _carbon_plan(tmp_path, cfg, t0, [100, 300, 500], [200, 250, 50])
    args = [
        "submit",
        "--plan",
        str(plan),
        "--gpus",
        "4",
        "--time-limit-min",
        "120",
        "--",
        "--parsable",
        "-t",
        "2",
        "-o",
        "/dev/null",
        "-D",
        str(slurm.dir / "jobs"),
        "--begin=now+1hour",
        "--wrap",
        "sleep 1",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "greencpn submit: cluster greencpntest (site s1, pool p-green)" in out, out
    job_id = out.strip().splitlines()[-1]
    j = _job(slurm, job_id)
    assert j.partition == "green" and j.pending
    slurm.run("scancel", job_id)
    # over the next 3 h s2 is cleaner (mean 166.7 vs 300): the other cluster is chosen
    args[args.index("120")] = "180"
    assert main([*args[:1], "--dry-run", *args[1:]]) == 0
    out = capsys.readouterr().out
    assert "greencpn submit: cluster other (site s2, pool p-other)" in out, out
    assert "167 gCO2/kWh mean over the next 180 min; other clusters: greencpntest 300" in out


def test_submit_lands_on_a_second_real_cluster_and_apply_defers_it_there(
    slurm: SlurmCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two real Slurm clusters (two slurmctld, two ClusterNames): ``greencpn submit`` sends the
    job to the greener one for real, and ``greencpn apply`` then defers it on that cluster."""
    from tests.slurm_cluster import start_slurm_cluster

    t0 = _now()
    with start_slurm_cluster(tmp_path / "other-cluster", cluster_name="other") as other:
        _partitions(other, "DOWN", ("main",))  # the job waits for greencpn's begin time there
        cfg = _two_cluster_fleet(tmp_path, slurm, other_conf=other.conf)
        plan = _carbon_plan(tmp_path, cfg, t0, [100, 300, 500], [200, 250, 50])
        name = f"greencpn-mc-{time.monotonic_ns()}"
        argv = ["submit", "--plan", str(plan), "--gpus", "4", "--time-limit-min", "180", "--"]
        argv += ["--parsable", "-t", "2", "-J", name, "-o", "/dev/null", "-D", str(other.dir)]
        assert main([*argv, "--wrap", "sleep 1"]) == 0
        out = capsys.readouterr().out
        assert "greencpn submit: cluster other (site s2, pool p-other)" in out, out
        job_id = out.strip().splitlines()[-1]
        # queued on the other cluster, not on this one
        assert other.run("squeue", "-h", "-n", name, "-o", "%i").split() == [job_id]
        assert slurm.run("squeue", "-h", "-n", name, "-o", "%i").split() == []
        assert _job(other, job_id).pending
        # greencpn apply (the plan names it cluster:id) defers it on the cluster it is queued on
        start = _now() + timedelta(minutes=5)
        doc = json.loads(plan.read_text())
        doc["jobs"] = [
            {"id": f"other:{job_id}", "site": "s2", "pool": "p-other", "start": _iso(start)}
        ]
        plan.write_text(json.dumps(doc))
        state = str(tmp_path / "state")
        code = main(["apply", str(plan), "--slot", "0", "--allow-actuation", "--state-dir", state])
        out = capsys.readouterr().out
        assert code == 0, out
        assert f"[ok      ] jobs        {'defer':16} {'other':12} {job_id}" in out, out
        j = _job(other, job_id)
        assert j.begin_at == start and j.pending
        with Ledger.open_readonly(state) as ledger:
            rec = ledger.job("other", job_id)
            assert rec is not None and "begin_at" in (rec.originals or {})
            assert ledger.job("greencpntest", job_id) is None
        other.run("scancel", job_id)


def test_hold_mode_through_apply_releases_at_the_planned_start(
    slurm: SlurmCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = _now() - timedelta(seconds=1)
    _partitions(slurm, "DOWN")
    try:
        j = _sbatch(slurm)
        cfg = _fleet(tmp_path, slurm, steer="none", pools={}, extra='defer_with = "hold"')
        start = _now() + timedelta(seconds=6)
        plan = _plan(tmp_path, cfg, t0, [(j, "p-main", start)])
        state = str(tmp_path / "state")
        argv = ["apply", str(plan), "--slot", "0", "--allow-actuation", "--state-dir", state]
        assert main(argv) == 0
        assert "[ok      ] jobs        hold" in capsys.readouterr().out
        held = _job(slurm, j)
        assert held.held and held.extra["reason"] == "JobHeldAdmin"
        with Ledger.open_readonly(state) as ledger:
            rec = ledger.job("greencpntest", j)
            assert rec is not None and rec.held_by_us and rec.release_at == start
        assert main(argv) == 0  # before the planned start: stays held, nothing new
        assert "jobs        release" not in capsys.readouterr().out
        time.sleep(max(0.0, (start - _now()).total_seconds()) + 1)
        assert main(argv) == 0
        assert "[ok      ] jobs        release" in capsys.readouterr().out
        assert not _job(slurm, j).held
    finally:
        _partitions(slurm, "UP")
