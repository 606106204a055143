"""Placement (optimize/placement.py) on tiny fleets, answers by hand: steps kept from a previous
plan re-timed to the work, and the carbon-aware greedy's choice of cap level. Cases the second
seeded mutation sample of issue 15 item 5 showed no test pinned (bench/results/mutation.md)."""

from __future__ import annotations

import numpy as np
import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs, make_plan
from greencpn.optimize.placement import place_jobs
from tests.optimize.conftest import START
from tests.optimize.test_plan_exact import SITE, gpu_two_levels, job, pool


def test_kept_steps_are_retimed_to_the_jobs_work(fleet):
    """Hourly slots, 4 placement steps of 15 min; one 1-GPU node at full speed: a step does
    0.25 GPU-h. Job a (0.1 GPU-h) kept on steps 4–6 needs only step 4, 0.1 / 0.25 = 0.4 busy:
    01:00–01:06. Job b (0.4 GPU-h) kept on steps 8–10 needs step 8 whole and 0.15 / 0.25 =
    0.6 of step 9: 02:00–02:24. No fractions were given, so they come from the work."""
    path = fleet(
        carbon={"Z": [100] * 4},
        sites=SITE,
        pools=pool(),
        jobs=[job("a", work=0.1, deadline=4.0), job("b", work=0.4, deadline=4.0)],
    )
    inp = make_inputs(load_config(path), SimClock(START))
    P, T = len(inp.pools), inp.T
    s = place_jobs(
        inp,
        np.ones((P, T)),
        np.zeros((P, T), dtype=int),
        fixed={0: (0, [4, 5, 6]), 1: (0, [8, 9, 10])},
    )
    assert s.fine_runs is not None
    assert [t for t, _ in s.fine_runs[0]] == [4] and [t for t, _ in s.fine_runs[1]] == [8, 9]
    assert [f for _, f in s.fine_runs[0]] == pytest.approx([0.4])
    assert [f for _, f in s.fine_runs[1]] == pytest.approx([1.0, 0.6])
    assert s.start_h.tolist() == pytest.approx([1.0, 2.0])
    assert s.end_h.tolist() == pytest.approx([1.1, 2.4])


def test_greedy_takes_the_level_with_the_least_energy_per_work(fleet):
    """GPU T2: 300 W at throughput 1 (0.3 kW busy) or 150 W at 0.8 (0.15 kW); node idle
    10 W, one GPU per node. Energy per GPU-h of work: (0.3 + 0.01) / 1 = 0.31 kWh at 300 W,
    (0.15 + 0.01) / 0.8 = 0.2 kWh at 150 W, so the carbon-aware greedy runs the 1 GPU-h job
    at 150 W: 1.25 h over slots 0–1, node on 2 h: 0.02 + 0.15 × 1.25 = 0.2075 kWh (0.31 at
    300 W); × 100 g/kWh = 0.02075 kg."""
    path = fleet(
        carbon={"Z": [100] * 4},
        sites=SITE,
        pools=pool(gpu="T2", idle_w=10.0),
        jobs=[job(work=1.0, deadline=4.0)],
        gpu=gpu_two_levels(0.8),
    )
    res = make_plan(load_config(path), SimClock(START))
    greedy = res.document["baselines"]["carbon_aware_greedy"]
    assert greedy["energy_kwh"] == pytest.approx(0.2075)
    assert greedy["carbon_kg"] == pytest.approx(0.02075)
    assert greedy["node_hours_on"] == 2.0
    P, T = len(res.inputs.pools), res.inputs.T
    g = place_jobs(res.inputs, np.zeros((P, T)), np.zeros((P, T), dtype=int), mode="greedy")
    assert g.level[0, :2].tolist() == [1, 1]
    assert [t for t, _g, _f in g.runs[0]] == [0, 1]


def test_a_kept_checkpointable_job_keeps_its_steps_inside_the_slot(fleet):
    """The same one-GPU pool, 15-min steps (0.25 GPU-h each at throughput 1). Checkpointable
    job c (0.4 GPU-h) kept on steps 5–6, inside slot 1 (steps 4–7, all free): it keeps those
    two steps — step 5 whole, 0.15 / 0.25 = 0.6 of step 6: 01:15–01:39 (seed-20261206 sample:
    x_place_jobs__mutmut_743 found a step's slot by ``t / 4``, so steps 5 and 6 were in no
    slot and c was placed afresh)."""
    path = fleet(
        carbon={"Z": [100] * 4},
        sites=SITE,
        pools=pool(),
        jobs=[job("c", work=0.4, deadline=4.0, ckpt=True)],
    )
    inp = make_inputs(load_config(path), SimClock(START))
    P, T = len(inp.pools), inp.T
    s = place_jobs(inp, np.ones((P, T)), np.zeros((P, T), dtype=int), fixed={0: (0, [5, 6])})
    assert s.fine_runs is not None
    assert [t for t, _ in s.fine_runs[0]] == [5, 6]
    assert [f for _, f in s.fine_runs[0]] == pytest.approx([1.0, 0.6])
    assert s.start_h.tolist() == pytest.approx([1.25])
    assert s.end_h.tolist() == pytest.approx([1.65])


def test_greedy_with_no_level_on_time_takes_the_earliest_finish(fleet):
    """GPU T2 at 300 W (θ 1) or 150 W (θ 0.95, the less energy per work); 15-min steps. Job
    0.9 GPU-h due 00:30: late at either level, so the carbon-aware greedy takes the level that
    finishes first. 300 W: 0.9 / 0.25 = 3.6 steps, ends 00:54 (step 3 + 0.6); 150 W:
    0.9 / 0.2375 = 3.79 steps, ends 00:56.8 (step 3 + 0.79). So 300 W, done at 0.9 h
    (seed-20261206 sample: x_place_jobs__mutmut_1246 ranked the ends as step − fraction,
    3 − 0.6 > 3 − 0.79, and took 150 W: 0.947 h)."""
    path = fleet(
        carbon={"Z": [100] * 4},
        sites=SITE,
        pools=pool(gpu="T2", idle_w=10.0),
        jobs=[job(work=0.9, deadline=0.5)],
        gpu=gpu_two_levels(0.95),
    )
    inp = make_inputs(load_config(path), SimClock(START))
    P, T = len(inp.pools), inp.T
    s = place_jobs(inp, np.zeros((P, T)), np.zeros((P, T), dtype=int), mode="greedy")
    assert s.start_h.tolist() == pytest.approx([0.0])
    assert s.end_h.tolist() == pytest.approx([0.9])
