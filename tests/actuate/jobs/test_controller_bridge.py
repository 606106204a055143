"""The daemon's control step acting on scheduler jobs through the job actuators
(greencpn/actuate/jobs/controller_bridge.py): the REAL Controller (tests/controller's tiny
two-site fleet on fake nodes) with ``queue`` and ``job_actuator`` from ``[job_actuation]``,
over the in-memory fake scheduler (one cluster per site)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from greencpn.actuate.jobs.base import PendingJob
from greencpn.actuate.jobs.controller_bridge import (
    ControllerJobBridge,
    SchedulerQueue,
    controller_job_kwargs,
)
from greencpn.actuate.jobs.fake import FakeJobActuator
from greencpn.actuate.ledger import Ledger, _dt
from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.fakes import FakeFleet
from greencpn.controller.types import Mode
from greencpn.daemon.core import Daemon
from tests.controller.conftest import START, make_controller, write_tiny

JOB_ACTUATION = """
[job_actuation]
default_slack_h = 20
[[job_actuation.clusters]]
name = "c1"
kind = "fake"
sites = ["s1"]
steer = "partition"
[job_actuation.clusters.pools.p1]
partition = "p1"
[[job_actuation.clusters]]
name = "c2"
kind = "fake"
sites = ["s2"]
steer = "partition"
[job_actuation.clusters.pools.p2]
partition = "p2"
"""


def _fleet(tmp_path: Path) -> Path:
    path = write_tiny(tmp_path, days=3, slots=24, time_limit_s=20)
    text = path.read_text()
    for site in ("s1", "s2"):  # jurisdictions keep a queued job on its cluster's sites
        text = text.replace(f'name = "{site}"\n', f'name = "{site}"\njurisdictions = ["{site}"]\n')
    path.write_text(text + JOB_ACTUATION)
    return path


def test_the_daemon_gives_its_controller_the_scheduler_queue_and_the_bridge(
    tmp_path: Path,
) -> None:
    path = _fleet(tmp_path)
    with (tmp_path / "control.toml").open("a") as fh:
        fh.write("allow_actuation = true\n[daemon]\nmode = 'enforce'\n")
    clock = SimClock(START + timedelta(minutes=1))
    cfg = load_config(path)
    d = Daemon(
        path, state_dir=tmp_path / "state", clock=clock, backends=FakeFleet(cfg, clock).backends
    )
    assert isinstance(d.controller.queue, SchedulerQueue) and d.controller.queue.heartbeat
    assert isinstance(d.controller.job_actuator, ControllerJobBridge)
    assert sorted(d.controller.queue.backends.actuators) == ["c1", "c2"]


def test_controller_defers_steers_and_lets_scheduler_jobs_start_at_the_planned_hour(
    tmp_path: Path,
) -> None:
    path = _fleet(tmp_path)
    cfg = load_config(path)
    clock = SimClock(START + timedelta(minutes=1))
    state = tmp_path / "state"
    kw = controller_job_kwargs(cfg, state, clock_now=clock.now, enforce=True)
    c2 = kw["queue"].backends.actuators["c2"]
    assert isinstance(c2, FakeJobActuator)
    # submitted now to site s2's scheduler in the wrong partition; 2 GPUs, 2 h time limit
    c2.jobs["42"] = PendingJob(
        id="42", cluster="c2", gpus=2, time_limit_s=7200.0, submit_at=START, partition="debug"
    )
    seen = kw["queue"].observe(clock.now()).pending
    assert [(j.id, j.gpus, j.work_gpu_h, j.release, j.jurisdictions) for j in seen] == [
        ("42", 2, 4.0, START, ["s2"])
    ]
    assert seen[0].deadline == START + timedelta(hours=22)  # release + limit + 20 h slack
    fleet = FakeFleet(cfg, clock)
    ctl = make_controller(path, clock, state, fleet, mode=Mode.ENFORCE, **kw)
    res = ctl.step()
    entry = next(j for j in res.plan["jobs"] if j["id"] == "42")
    planned = entry["start"]
    at = _dt(planned)
    assert at is not None and at > clock.now(), (entry, res.plan.get("diagnostics"), res.errors)
    job = c2.jobs["42"]
    assert job.begin_at == at and job.pending and job.partition == "debug"
    bridge = kw["job_actuator"]
    assert ("defer", "42", "ok") in bridge.calls
    with Ledger.open_readonly(state) as ledger:
        rec = ledger.job("c2", "42")
        assert rec is not None and rec.originals == {"begin_at": None}
        assert rec.latest_safe_start == START + timedelta(hours=20)
        assert any(a.mode == "daemon" for a in ledger.applies())
    # the next observation plans from the job's own release, not greencpn's begin time
    assert kw["queue"].observe(clock.now()).pending[0].release == START
    # the planned hour: the controller steers it to pool p2's partition; the scheduler starts it
    clock.set(at + timedelta(minutes=1))
    ctl.step()
    job = c2.jobs["42"]
    assert job.partition == "p2" and job.begin_at == at
    assert c2.start_due(clock.now()) == ["42"]
    assert c2.jobs["42"].state == "RUNNING"
    assert ("steer", "42", "ok") in bridge.calls
    assert dataclasses.asdict(c2.jobs["42"])["pending"] is False
