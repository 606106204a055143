"""The re-insertion pass (optimize/improve.py): hand-checked packing, and its invariants."""

from __future__ import annotations

import numpy as np
import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs, make_plan
from greencpn.optimize.evaluate import evaluate
from greencpn.optimize.improve import improve_schedule
from greencpn.optimize.placement import place_jobs
from greencpn.optimize.repair import repair_nodes
from greencpn.optimize.schedule import boot_steps, job_steps, node_profile, work_done
from tests.optimize.conftest import START, iso
from tests.optimize.test_plan_tiny import ONE_SITE, job, pool


def inputs(path):
    return make_inputs(load_config(path), SimClock(START))


def test_node_profile_keeps_min_up_and_stops_early():
    # need 2 in slot 1 only, min up 3: both started nodes stay on through slot 3
    assert node_profile([0, 2, 0, 0, 0, 0], 0, 3, 0) == [0, 2, 2, 2, 0, 0]
    # nodes on at the start that nothing needs stop at once (they served their minimum)
    assert node_profile([0, 1, 0], 2, 3, 0) == [0, 1, 1]
    assert node_profile([0, 0, 0], 0, 1, 1) == [1, 1, 1]  # spares


def test_two_jobs_pack_onto_one_node(fleet):
    """Two 1-GPU jobs of 1 h on one node of 2 GPUs (100 W idle, 300 W per busy GPU): a may run
    in slot 0 or 1, b only in slot 1. Placed alone, a takes slot 0 (100 g/kWh < 105): 2
    node-hours, 0.4 kWh × 100 + 0.4 kWh × 105 = 0.082 kg. Beside b in slot 1 the node is on
    once: 0.1 + 0.6 = 0.7 kWh × 105 = 0.0735 kg. Re-insertion moves a there (it adds only its
    GPU's 0.3 kWh, 0.0315 kg, against the 0.040 kg it costs alone)."""
    path = fleet(
        carbon={"Z": [100, 105, 100]},
        sites=ONE_SITE,
        pools=pool(gpn=2),
        jobs=[job("a", release=0, deadline=2), job("b", release=1, deadline=2)],
    )
    inp = inputs(path)
    off = np.zeros((1, inp.T))
    lv = np.zeros((1, inp.T), dtype=int)
    s0 = place_jobs(inp, off, lv, mode="levels")
    n0, u0, _ = repair_nodes(inp, s0)
    ev0 = evaluate(inp, s0, n0, u0)
    assert [float(x) for x in s0.start_h] == [0.0, 1.0]  # apart: the case to fix
    assert ev0.totals["carbon_kg"] == pytest.approx(0.082)
    s1, info = improve_schedule(inp, s0)
    n1, u1, _ = repair_nodes(inp, s1)
    ev1 = evaluate(inp, s1, n1, u1)
    assert info["moves"] >= 1
    assert [float(x) for x in s1.start_h] == [1.0, 1.0]
    assert n1[0].tolist() == [0, 1, 0]
    assert ev1.totals["carbon_kg"] == pytest.approx(0.0735)
    assert ev1.totals["late_jobs"] == 0


def test_one_off_plan_takes_the_packed_schedule(fleet):
    path = fleet(
        carbon={"Z": [100, 105, 100]},
        sites=ONE_SITE,
        pools=pool(gpn=2),
        jobs=[job("a", release=0, deadline=2), job("b", release=1, deadline=2)],
    )
    res = make_plan(load_config(path), SimClock(START))
    assert res.executed.totals["carbon_kg"] == pytest.approx(0.0735)
    assert [j["start"] for j in res.document["jobs"]] == [iso(1), iso(1)]
    assert res.document["solver"]["reinsertion"]["runs"]


def _random_fleet(fleet, seed):
    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(14):
        r = int(rng.integers(0, 6))
        jobs.append(
            job(
                f"j{i}",
                gpus=int(rng.choice([1, 2, 4])),
                work=float(rng.choice([0.5, 1.0, 2.0, 3.0])),
                release=r,
                deadline=r + int(rng.integers(4, 9)),
                ckpt=bool(rng.random() < 0.3),
            )
        )
    carbon = [float(x) for x in rng.uniform(80, 500, 16)]
    pools = pool("p", gpn=4, nodes=3, min_up=2.0) + pool("q", gpn=2, nodes=4, idle_w=150.0)
    return fleet(carbon={"Z": carbon}, sites=ONE_SITE, pools=pools, jobs=jobs)


def assert_work_on_time_and_nodes_cover(inp, s0, s1, n, u) -> None:
    """``s1`` (a re-inserted ``s0``) does every job's work exactly, on time where ``s0`` was,
    and holds GPUs only on nodes on ``n`` and, in a slot's boot steps, off nodes still booting
    (``n − u``). Shared by the one-job and the multi-job moves' tests."""
    T = inp.T
    k = s1.subslots
    for j, jb in enumerate(inp.jobs):
        assert work_done(inp, s1, j) == pytest.approx(work_done(inp, s0, j), abs=1e-6)
        if s0.runs[j]:
            _, d = job_steps(jb, inp, k)
            if max(t for t, _ in s0.fine_runs[j]) <= d:
                assert max(t for t, _ in s1.fine_runs[j]) <= d, jb.id
    for p, pl in enumerate(inp.pools):
        nb = boot_steps(inp, p, k)
        for t in range(T):
            held = s1.alloc_fine[p, t * k : (t + 1) * k]
            assert held.max() <= pl.gpus_per_node * n[p, t] + 1e-9
            if nb:
                assert held[:nb].max() <= pl.gpus_per_node * (n[p, t] - u[p, t]) + 1e-9


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reinsertion_keeps_the_schedule_executable(fleet, seed):
    """Every job still does exactly its work, on time if it was, one cap level per pool-slot,
    GPUs within the nodes on and off booting nodes; and the pass never makes the one-off plan
    worse than the candidate it started from."""
    inp = inputs(_random_fleet(fleet, seed))
    P, T = len(inp.pools), inp.T
    spare_on = np.zeros((P, T))
    s0 = place_jobs(inp, spare_on, np.zeros((P, T), dtype=int), mode="levels")
    s1, _ = improve_schedule(inp, s0)
    n, u, _ = repair_nodes(inp, s1)
    assert_work_on_time_and_nodes_cover(inp, s0, s1, n, u)
    for j in range(len(inp.jobs)):
        # every slot a job runs in has one of its pool's cap levels (work_done above reads
        # level_thr[level]: a -1 would silently price the top level, numpy wrapping it)
        p = int(s1.pool[j])
        n_levels = len(inp.pools[p].level_thr) if p >= 0 else 0
        assert all(0 <= int(s1.level[p, t]) < n_levels for t, _g, _f in s1.runs[j]), j
    res = make_plan(load_config(_random_fleet(fleet, seed)), SimClock(START))
    objs = {c["name"]: c["objective"] for c in res.document["solver"]["candidates"]}
    for run in res.document["solver"]["reinsertion"]["runs"]:
        assert objs[run["from"] + " + re-insertion"] == pytest.approx(run["objective"], rel=1e-6)
    assert res.executed.objective <= min(objs.values()) + 1e-6  # listed rounded to 1e-6


def test_a_plan_other_than_the_optimised_placement_says_so(fleet):
    """Random fleet 1 (14 jobs, two pools): the re-inserted placement scores below the
    MILP-guided one and is the plan. The diagnostic names both scores as plan.json's
    candidate list has them, and — a one-off plan, no newest plan to move away from — no
    stability part; exactly one such line."""
    doc = make_plan(load_config(_random_fleet(fleet, 1)), SimClock(START)).document
    src = doc["solver"]["plan_source"]
    assert src != "optimised placement"
    score = {c["name"]: c["objective"] for c in doc["solver"]["candidates"]}
    assert score[src] < score["optimised placement"]
    lines = [d for d in doc["diagnostics"] if d.startswith("plan: ")]
    assert lines == [
        f"plan: the {src} schedule scores {score[src]:,.2f} against the optimised "
        f"placement's {score['optimised placement']:,.2f}: it is the plan"
    ]
