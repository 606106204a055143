"""Job decisions from a plan's current slot, by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from greencpn.config import JobConfig
from greencpn.controller.jobs import decide_jobs

NOW = datetime(2026, 1, 5, 10, tzinfo=UTC)
END = NOW + timedelta(hours=1)


def job(jid, deadline_h, work=4.0, gpus=2):
    return JobConfig(
        id=jid,
        gpus=gpus,
        work_gpu_h=work,
        release=NOW - timedelta(hours=1),
        deadline=NOW + timedelta(hours=deadline_h),
    )


def planned(jid, start_h, site="s2", pool="p2"):
    start = None if start_h is None else (NOW + timedelta(hours=start_h)).isoformat()
    return {"id": jid, "start": start, "site": site, "pool": pool}


def kinds(decisions):
    return [(d.job_id, d.kind) for d in decisions]


def test_decisions():
    plan = {
        "jobs": [
            planned("now", 0.5),  # starts in this slot -> steer + release
            planned("later", 5),  # starts later -> defer until then
            planned("late", 6),  # planned later, but its latest start is in this slot
            planned("tight", 6),  # planned later; latest start after this slot, before the plan
            planned("beyond", None, site=None, pool=None),  # past the horizon
            planned("run", 0),
        ]
    }
    pending = [
        job("now", 20),
        job("later", 20),
        job("late", 2.5),
        job("tight", 3.5),
        job("beyond", 40),
        job("new", 9),
    ]
    got = decide_jobs(plan, pending, {"run"}, NOW, END)
    assert kinds(got) == [
        ("run", "keep"),
        ("now", "steer"),
        ("now", "release"),
        ("later", "defer"),
        ("late", "release"),  # run time 2 h, deadline in 2.5 h: latest start 10:30 < slot end
        ("tight", "defer"),
        ("beyond", "defer"),
        ("new", "release"),  # not in the plan: the scheduler's own behaviour
    ]
    by = {(d.job_id, d.kind): d.detail for d in got}
    assert by[("now", "steer")]["pool"] == "p2"
    assert by[("later", "defer")]["until"] == (NOW + timedelta(hours=5)).isoformat()
    # held until its latest start (11:30), not its planned start (16:00)
    assert by[("tight", "defer")]["until"] == (NOW + timedelta(hours=1.5)).isoformat()
    # deferred beyond the horizon: held until its latest start at the most
    assert by[("beyond", "defer")]["until"] == (NOW + timedelta(hours=38)).isoformat()


def test_safe_plan_releases_everything():
    got = decide_jobs({"jobs": []}, [job("a", 20), job("b", 5)], set(), NOW, END)
    assert kinds(got) == [("a", "release"), ("b", "release")]
