"""optimize/stability.py ``kept_runs`` directly (until now only tests/controller exercised it):
which jobs of a previous plan document a re-plan keeps, and on which placement steps.

The inputs: one site, pools ``p`` (1 node × 1 GPU) and ``q`` (1 node × 2 GPUs), a 4-slot
hourly horizon from START, placement grid k = 4 (15-min steps). The previous plan is a hand
document made at START, so its slots are this horizon's.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs
from greencpn.optimize.plan import make_inputs as plan_inputs
from greencpn.optimize.stability import kept_runs
from tests.optimize.conftest import START, iso, plan_horizon, write_fleet
from tests.optimize.test_plan_exact import SITE, job, pool


def _inputs(tmp: Path, jobs: list[dict]):
    path = write_fleet(
        tmp,
        carbon={"Z": [100.0] * 4},
        sites=SITE,
        pools=pool("p") + pool("q", gpn=2),
        jobs=jobs,
    )
    return make_inputs(load_config(path), SimClock(START))


def _prev(jid: str, *, pool_name: str, start_h: float, work: float = 1.0, **kw: Any) -> dict:
    """Job ``jid`` as plan.json writes it (release 0, deadline 4 h, 1 GPU unless given)."""
    d = {
        "id": jid,
        "pool": pool_name,
        "gpus": kw.get("gpus", 1),
        "work_gpu_h": work,
        "checkpointable": kw.get("ckpt", False),
        "release": iso(0),
        "deadline": iso(4),
        "start": iso(start_h),
        "schedule": kw.get("schedule", [{"slot": int(start_h), "gpus": 1, "busy_fraction": 1.0}]),
    }
    return d


def _doc(jobs: list[dict]) -> dict:
    return {
        "horizon": plan_horizon(4),
        "jobs": jobs,
        "pools": [],
    }


def test_an_unchanged_contiguous_job_keeps_pool_and_start_step(tmp_path: Path) -> None:
    """Job a (on q, from 02:00) keeps pool index 1 and its start step 2 h × 4 = 8; a rigid job's
    steps run on from there to the end of the extended timeline (10 × T slots = 160 steps,
    i.e. 8 … 167): placement re-times the run to its work."""
    inp = _inputs(tmp_path, [job("a")])
    out = kept_runs(inp, _doc([_prev("a", pool_name="q", start_h=2.0)]))
    assert list(out) == [0]
    p, steps = out[0]
    assert p == 1
    assert steps == list(range(8, 168))


def test_a_checkpointable_job_is_rebuilt_from_its_slots(tmp_path: Path) -> None:
    """No placement runs in the document: slot 1 half busy from the start at 01:30 → steps 6,
    7 (⌈0.5 × 4⌉ = 2 from the start step 6); slot 2 fully busy → steps 8–11."""
    inp = _inputs(tmp_path, [job("c", work=1.5, ckpt=True)])
    sched = [
        {"slot": 1, "gpus": 1, "busy_fraction": 0.5},
        {"slot": 2, "gpus": 1, "busy_fraction": 1.0},
    ]
    prev = _prev("c", pool_name="p", start_h=1.5, work=1.5, ckpt=True, schedule=sched)
    assert kept_runs(inp, _doc([prev])) == {0: (0, [6, 7, 8, 9, 10, 11])}


def test_jobs_that_are_not_kept(tmp_path: Path) -> None:
    """Of five jobs only ``ok`` is kept: ``run`` is in ``skip`` (e.g. running), ``grown`` has
    other work than the plan knew (2 GPU-h, not 1), ``gone`` is on a pool that no longer
    exists, ``new`` is not in the document at all. Without ``skip``, ``run`` is kept too."""
    ids = ["ok", "run", "grown", "gone", "new"]
    inp = _inputs(tmp_path, [job(i, work=2.0 if i == "grown" else 1.0) for i in ids])
    doc = _doc(
        [
            _prev("ok", pool_name="p", start_h=1.0),
            _prev("run", pool_name="q", start_h=0.0),
            _prev("grown", pool_name="p", start_h=2.0),
            _prev("gone", pool_name="old", start_h=3.0),
        ]
    )
    kept = kept_runs(inp, doc, skip={"run"})
    assert {inp.jobs[j].id: v[1][0] for j, v in kept.items()} == {"ok": 4}
    kept = kept_runs(inp, doc)
    assert {inp.jobs[j].id: v[1][0] for j, v in kept.items()} == {"ok": 4, "run": 0}


def test_a_job_due_to_have_started_is_placed_afresh(tmp_path: Path) -> None:
    """The same plan one slot later (this horizon starts at 01:00): ``early`` was planned for
    00:00, before this horizon (still pending: not kept); ``late``, planned for 03:00, keeps
    start step (3 − 1) × 4 = 8 on this horizon's grid."""
    path = write_fleet(
        tmp_path,
        carbon={"Z": [100.0] * 4},
        sites=SITE,
        pools=pool("p") + pool("q", gpn=2),
        jobs=[job("early"), job("late")],
    )
    one = START + timedelta(hours=1)
    inp = plan_inputs(load_config(path), intensity_by_zone={"Z": np.full(4, 100.0)}, start=one)
    assert inp.start == one
    doc = _doc(
        [_prev("early", pool_name="p", start_h=0.0), _prev("late", pool_name="p", start_h=3.0)]
    )
    kept = kept_runs(inp, doc)
    assert {inp.jobs[j].id: v[1][0] for j, v in kept.items()} == {"late": 8}


def _doc_on_grid(jobs: list[dict], step_minutes: float) -> dict:
    """A plan document whose placement grid is ``step_minutes`` per step."""
    doc = _doc(jobs)
    doc["horizon"]["placement_step_minutes"] = step_minutes
    return doc


def test_a_checkpointable_job_keeps_its_exact_placement_runs_on_the_same_grid(
    tmp_path: Path,
) -> None:
    """The plan's grid is this one (15-min steps): c's placement runs — steps 6, 7 (the last
    half busy) and 8–11 — are kept as they are, with their busy fractions."""
    inp = _inputs(tmp_path, [job("c", work=1.5, ckpt=True)])
    prev = _prev("c", pool_name="p", start_h=1.5, work=1.5, ckpt=True)
    prev["placement_runs"] = [
        {"step": 6, "steps": 2, "last_busy_fraction": 0.5},
        {"step": 8, "steps": 4, "last_busy_fraction": 1.0},
    ]
    out = kept_runs(inp, _doc_on_grid([prev], 15.0))
    assert out == {0: (0, [6, 7, 8, 9, 10, 11], [1.0, 0.5, 1.0, 1.0, 1.0, 1.0])}


def test_placement_runs_on_another_grid_are_not_read(tmp_path: Path) -> None:
    """The plan's placement runs are on a 60-min grid (a job-level plan), this horizon's on
    15-min steps: its run "step 1, 2 steps" means 01:00–03:00 there, steps 1–2 (00:15–00:45)
    here, so it is not read; c is rebuilt from its slots as without runs — slot 1 half busy
    from 01:30 → steps 6, 7; slot 2 → steps 8–11."""
    inp = _inputs(tmp_path, [job("c", work=1.5, ckpt=True)])
    sched = [
        {"slot": 1, "gpus": 1, "busy_fraction": 0.5},
        {"slot": 2, "gpus": 1, "busy_fraction": 1.0},
    ]
    prev = _prev("c", pool_name="p", start_h=1.5, work=1.5, ckpt=True, schedule=sched)
    prev["placement_runs"] = [{"step": 1, "steps": 2, "last_busy_fraction": 1.0}]
    assert kept_runs(inp, _doc_on_grid([prev], 60.0)) == {0: (0, [6, 7, 8, 9, 10, 11])}


def test_a_contiguous_job_keeps_only_its_start_even_with_placement_runs(
    tmp_path: Path,
) -> None:
    """Placement runs are read for checkpointable jobs only: contiguous job a (on q from
    02:00, runs "step 8, 4 steps" on this very grid) keeps its start step 8 and runs on to the
    end of the extended timeline (8 … 167), re-timed to its work by placement — no fractions."""
    inp = _inputs(tmp_path, [job("a")])
    prev = _prev("a", pool_name="q", start_h=2.0)
    prev["placement_runs"] = [{"step": 8, "steps": 4, "last_busy_fraction": 1.0}]
    assert kept_runs(inp, _doc_on_grid([prev], 15.0)) == {0: (1, list(range(8, 168)))}
