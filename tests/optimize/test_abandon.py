"""A candidate placement is abandoned once a lower bound on its objective passes the incumbent.

The bound (:func:`~greencpn.optimize.placement.place_jobs`, ``abandon_above``): the unserved
weight × the work the jobs placed so far can no longer deliver inside the horizon, counted at
the pool's fastest cap level. On L-loaded the MILP-guided and per-job-level placements leave
thousands of GPU-h unserved against a FIFO schedule that serves everything; each was still
built in full (plus its node repair and feedback passes) before losing by 250× or more.
Every figure here is worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

import greencpn.optimize.candidates as candmod
import greencpn.optimize.plan as planmod
from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs
from greencpn.optimize.evaluate import evaluate
from greencpn.optimize.placement import PlacementAbandoned, place_jobs
from greencpn.optimize.repair import repair_nodes
from tests.optimize.conftest import START
from tests.optimize.test_plan_exact import SITE, gpu_two_levels
from tests.optimize.test_plan_tiny import job, pool

TWO_LEVELS = gpu_two_levels(0.5, name="T1")  # the pools' GPU, with a 150 W level


def one_job_too_big(fleet, gpu=None):
    """One GPU, a 4-hour horizon, one job of 6 GPU-h due at the horizon's end: at most 4 GPU-h
    fit inside, so at least 2 GPU-h are unserved (1000 per GPU-h: the default weight)."""
    kw = {} if gpu is None else {"gpu": gpu}
    path = fleet(
        carbon={"Z": [100, 100, 100, 100]},
        sites=SITE,
        pools=pool("p"),
        jobs=[job("x", gpus=1, work=6.0, release=0, deadline=4, ckpt=True)],
        **kw,
    )
    return make_inputs(load_config(path), SimClock(START))


def abandoned_then_built(inp, top):
    """The plan-mode placement with all nodes on at cap levels ``top``: once abandoned just
    under 2000 (what it raised), once let through at 2000 (its evaluation)."""
    P, T = len(inp.pools), inp.T
    on = np.ones((P, T))
    with pytest.raises(PlacementAbandoned) as ab:
        place_jobs(inp, on, top, mode="plan", abandon_above=1999.0)
    sched = place_jobs(inp, on, top, mode="plan", abandon_above=2000.0)
    n, u, _d = repair_nodes(inp, sched)
    return ab.value, evaluate(inp, sched, n, u)


def test_the_bound_is_the_work_that_cannot_fit_inside_the_horizon(fleet):
    inp = one_job_too_big(fleet)
    assert inp.objective.unserved_weight_per_gpu_h == 1000.0
    ab, ev = abandoned_then_built(inp, np.zeros((len(inp.pools), inp.T), dtype=int))
    assert ab.lower_bound == pytest.approx(2000.0)  # (6 - 4) GPU-h × 1000
    assert ab.jobs_done == 1
    # at the bound itself the placement is built, and its objective is not below the bound
    assert ev.job_unserved_gpu_h[0] == pytest.approx(2.0)
    assert ev.objective >= 2000.0


def test_the_bound_counts_the_fastest_level_not_the_slot_level(fleet):
    """At the half-speed level the job delivers 2 GPU-h inside (4 GPU-h unserved, objective
    ≥ 4000), but a later job could raise the cap under it: the bound counts full speed, 2000."""
    inp = one_job_too_big(fleet, gpu=TWO_LEVELS)
    ab, ev = abandoned_then_built(inp, np.ones((len(inp.pools), inp.T), dtype=int))  # slow level
    assert ab.lower_bound == pytest.approx(2000.0)
    assert ev.job_unserved_gpu_h[0] == pytest.approx(4.0)
    assert ev.objective >= 4000.0


def cheap_end_fleet(fleet):
    """One GPU, 4 hours at 100, 100, 1, 1 g/kWh. Job a (2 GPU-h, from 0 h) and job b (2 GPU-h,
    from 2 h), both due at 4 h. FIFO runs a in 0–2 h and b in 2–4 h: everything served, about
    0.06 kg. The per-job-level placement takes a first (same size and deadline, id order) and
    puts it in the clean 2–4 h; b then cannot fit inside the horizon: 2 GPU-h unserved,
    bound 2000 ≫ FIFO's objective."""
    return fleet(
        carbon={"Z": [100, 100, 1, 1]},
        sites=SITE,
        pools=pool("p"),
        jobs=[
            job("a", gpus=1, work=2.0, release=0, deadline=4),
            job("b", gpus=1, work=2.0, release=2, deadline=4),
        ],
    )


def plan_of(cfg):
    clock = SimClock(START)
    return planmod.make_plan(
        cfg, clock, inputs=make_inputs(cfg, clock), joblevel=False, tradeoff_curve=False
    )


def test_a_pass_a_later_pass_is_built_from_is_not_abandoned(fleet):
    """The per-job-level passes at first leave b unserved (bound 2000 against FIFO's
    0.08), but the next pass, b first, serves both: such a pass must be built in full (a
    bound on this pass says nothing about the next)."""
    res = plan_of(load_config(cheap_end_fleet(fleet)))
    solver = res.document["solver"]
    assert solver["abandoned"] == []
    levels = [c["objective"] for c in solver["candidates"] if "per-job" in c["name"]]
    assert max(levels) == pytest.approx(2000.0, abs=1.0)  # the first passes: b unserved
    assert min(levels) < 1.0  # the retry pass: b first, everything served


def test_a_last_pass_above_the_incumbent_is_abandoned_and_the_plan_is_unchanged(fleet, monkeypatch):
    """With the passes' time budgets spent (0 s: no pass after the first of each order), the
    per-job-level passes are the last of their order: each stops after placing both jobs, its
    bound 2000 (b's 2 GPU-h × 1000) above FIFO's objective. Built in full instead, they score
    2000.0008 and the plan is the same."""
    cfg = load_config(cheap_end_fleet(fleet))
    monkeypatch.setattr(planmod, "LEVELS_BUDGET_S", 0.0)
    monkeypatch.setattr(candmod, "PLACEMENT_PASSES_BUDGET_S", 0.0)
    res = plan_of(cfg)
    solver = res.document["solver"]
    levels = [a for a in solver["abandoned"] if a["name"].startswith("placement with per-job")]
    assert len(levels) == 2  # both orders, at their first pass, after both jobs
    for a in levels:
        assert a["pass"] == 0
        assert a["lower_bound"] == pytest.approx(2000.0)
        assert a["jobs_placed_before"] == 2
        assert a["abandon_above"] < 1.0  # FIFO's objective: carbon only, well under 1 kg
    assert res.executed.totals["late_jobs"] == 0
    assert res.executed.totals["unserved_gpu_h"] == pytest.approx(0.0)
    # without the bound every candidate is built in full: the same plan, and the abandoned
    # ones are indeed above it (each leaves b's 2 GPU-h unserved)
    monkeypatch.setattr(planmod, "abandon_threshold", lambda *_a, **_k: None)
    full = plan_of(cfg)
    assert full.document["solver"]["abandoned"] == []
    assert full.executed.objective == res.executed.objective
    assert full.document["solver"]["plan_source"] == solver["plan_source"]
    built = [c for c in full.document["solver"]["candidates"] if "per-job" in c["name"]]
    assert len(built) == 2 and all(c["objective"] >= 2000.0 for c in built)
