"""Multi-job moves of the re-insertion pass (optimize/improve.py): node spans emptied together,
related jobs re-inserted together, and the boot steps in the node estimate."""

from __future__ import annotations

import numpy as np
import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs
from greencpn.optimize.evaluate import evaluate
from greencpn.optimize.improve import improve_schedule
from greencpn.optimize.packer import Packer
from greencpn.optimize.placement import place_jobs
from greencpn.optimize.repair import repair_nodes
from greencpn.optimize.schedule import boot_steps
from tests.optimize.conftest import START
from tests.optimize.test_improve import _random_fleet, assert_work_on_time_and_nodes_cover
from tests.optimize.test_plan_tiny import ONE_SITE, job, pool


def inputs(path):
    return make_inputs(load_config(path), SimClock(START))


def _asap(inp):
    P, T = len(inp.pools), inp.T
    return place_jobs(inp, np.zeros((P, T)), np.zeros((P, T), dtype=int), mode="asap")


def _priced(inp, sched):
    n, u, _ = repair_nodes(inp, sched)
    return evaluate(inp, sched, n, u), n


def _stuck_pair(fleet):
    """Two 1-GPU jobs of 1 h on one node of 2 GPUs (100 W idle, 300 W per busy GPU), both
    allowed in slot 0 or 1; slot 1 is cleaner (100 against 110 g/kWh). The earliest-start
    placement puts both in slot 0: 0.1 + 0.6 = 0.7 kWh × 110 = 0.077 kg. One job alone moved to
    slot 1 needs the node there too while the other keeps it on in slot 0: 0.4 kWh × 110 +
    0.4 kWh × 100 = 0.084 kg, worse, so the one-job pass is stuck. Both moved together: 0.7 kWh
    × 100 = 0.070 kg."""
    return fleet(
        carbon={"Z": [110, 100, 300]},
        sites=ONE_SITE,
        pools=pool(gpn=2),
        jobs=[job("a", release=0, deadline=2), job("b", release=0, deadline=2)],
    )


def test_one_job_pass_is_stuck_where_the_pair_move_is_not(fleet):
    inp = inputs(_stuck_pair(fleet))
    s0 = _asap(inp)
    ev0, _ = _priced(inp, s0)
    assert [float(x) for x in s0.start_h] == [0.0, 0.0]
    assert ev0.totals["carbon_kg"] == pytest.approx(0.077)
    s1, info1 = improve_schedule(inp, s0)  # one-job moves only
    assert info1["moves"] == 0
    assert [float(x) for x in s1.start_h] == [0.0, 0.0]
    s2, info2 = improve_schedule(inp, s0, group_moves_s=5.0)
    ev2, n2 = _priced(inp, s2)
    # round 1 empties the node's span in slot 0 (both jobs to slot 1); round 2 looks at the
    # new span in slot 1, keeps nothing, and the span moves stop: 2 spans tried, 1 emptied
    assert (info2["spans_tried"], info2["spans_emptied"]) == (2, 1)
    assert [float(x) for x in s2.start_h] == [1.0, 1.0]
    assert n2[0].tolist() == [0, 1, 0]  # the node's hour in slot 0 is emptied: it stays off
    assert ev2.totals["carbon_kg"] == pytest.approx(0.070)
    assert ev2.totals["late_jobs"] == 0


def test_related_jobs_move_together_without_span_moves(fleet):
    """The same pair found by the related-job move alone (seed job + the jobs of its site that
    overlap it in time)."""
    inp = inputs(_stuck_pair(fleet))
    s2, info = improve_schedule(inp, _asap(inp), group_moves_s=5.0, span_moves=False)
    ev2, _ = _priced(inp, s2)
    assert info["spans_emptied"] == 0 and info["related_kept"] >= 1
    assert ev2.totals["carbon_kg"] == pytest.approx(0.070)


def test_a_pair_that_pays_only_apart_is_left_alone(fleet):
    """Slot 1 cleaner by too little to pay for nothing, and the jobs cannot share a node (2
    GPUs each on nodes of 2): the pass must not move them (0 gain, the estimate never rises)."""
    path = fleet(
        carbon={"Z": [100, 100, 300]},
        sites=ONE_SITE,
        pools=pool(gpn=2, nodes=2),
        jobs=[job("a", gpus=2, work=2.0, release=0, deadline=2)],
    )
    inp = inputs(path)
    s0 = _asap(inp)
    s1, info = improve_schedule(inp, s0, group_moves_s=2.0)
    # one span, nothing kept in the first round: no second round over the same spans
    assert (info["spans_tried"], info["spans_emptied"]) == (1, 0)
    assert info["estimate_after"] <= info["estimate_before"] + 1e-12
    assert _priced(inp, s1)[0].objective <= _priced(inp, s0)[0].objective + 1e-9


def test_boot_steps_need_the_nodes_a_slot_earlier(fleet):
    """A node takes 15 min to boot (one placement step): GPUs held in the first step of slot 1
    must be on nodes already on in slot 0, so the estimate needs a node in slot 0 for a job
    that starts at 01:00 (the node repair's boot-capacity rows)."""
    path = fleet(
        carbon={"Z": [100, 100, 100, 100]},
        sites=ONE_SITE,
        pools=pool(gpn=2).replace("min_up_h", "boot_time_min = 15\nmin_up_h"),
        jobs=[job("a", release=1, deadline=3)],
    )
    inp = inputs(path)
    assert boot_steps(inp, 0, 4) == 1
    s0 = _asap(inp)
    assert float(s0.start_h[0]) == 1.0
    pk = Packer(inp, s0, None, None)
    n, _u, _ = repair_nodes(inp, s0)
    assert pk.need_of(0)[: inp.T].tolist() == [1, 1, 0, 0]
    assert pk.prof_n[0, : inp.T].tolist() == n[0].tolist() == [1, 1, 0, 0]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_group_moves_keep_the_schedule_executable(fleet, seed):
    """Every job still does exactly its work, on time if it was, GPUs within the nodes on and
    off booting nodes; the estimate never rises."""
    inp = inputs(_random_fleet(fleet, seed))
    P, T = len(inp.pools), inp.T
    s0 = place_jobs(inp, np.zeros((P, T)), np.zeros((P, T), dtype=int), mode="levels")
    s1, info = improve_schedule(inp, s0, group_moves_s=3.0)
    assert info["estimate_after"] <= info["estimate_before"] + 1e-9
    n, u, _ = repair_nodes(inp, s1)
    assert_work_on_time_and_nodes_cover(inp, s0, s1, n, u)
    for p in range(len(inp.pools)):
        # GPUs held = the jobs' own runs (nothing left behind by an undone move)
        own = np.zeros(s1.alloc_fine.shape[1])
        for j, jb in enumerate(inp.jobs):
            if int(s1.pool[j]) == p:
                for t, _f in s1.fine_runs[j]:
                    own[t] += jb.gpus
        assert np.allclose(own, s1.alloc_fine[p])


def test_site_energy_estimate_includes_boot_energy(fleet):
    """One node off at the start (100 W idle, 500 W while booting 15 min: 0.1 kWh above idle
    per start-up), a 1-GPU job of 0.75 h released at 01:00: the node is started in slot 0
    (its GPU must be up at 01:00), so slot 0 draws 0.1 (idle) + 0.1 (boot) kWh and slot 1 0.1
    + 0.225 kWh. The estimate the budget checks use is the evaluation's energy, boot
    included."""
    path = fleet(
        carbon={"Z": [300, 100, 300]},
        sites=ONE_SITE + "power_budget_kw = 5.0\n",
        pools=pool().replace("min_up_h", "node_boot_w = 500.0\nboot_time_min = 15\nmin_up_h"),
        jobs=[job("a", work=0.75, release=1, deadline=3)],
    )
    inp = inputs(path)
    s0 = _asap(inp)
    ev, n = _priced(inp, s0)
    pk = Packer(inp, s0, None, None)
    assert n[0].tolist() == pk.prof_n[0, : inp.T].tolist() == [1, 1, 0]
    per_slot = pk.site_used[0, : inp.T * pk.k].reshape(inp.T, pk.k).sum(axis=1)
    assert per_slot.tolist() == pytest.approx([0.2, 0.325, 0.0])
    assert per_slot.tolist() == pytest.approx(ev.site_energy_kwh[0].tolist())


def test_a_whole_slot_schedule_reads_as_the_same_runs_on_the_placement_grid(fleet):
    """A schedule without placement runs (the job-level MILP's, ``fine_runs`` None) is read
    at ``k`` steps per slot, each slot's busy share as its first steps: the stuck pair's
    earliest-start schedule (k = 4, both jobs busy all of slot 0) gives back its own runs and
    the same estimate. By hand, a slot 0.6 busy on k = 4 is 2.4 steps: 1, 1, 0.4."""
    from dataclasses import replace

    from greencpn.optimize.packer import fine_runs_of

    inp = inputs(_stuck_pair(fleet))
    s0 = _asap(inp)
    assert s0.subslots == 4
    coarse = replace(s0, fine_runs=None)
    assert fine_runs_of(coarse) == [[(t, 1.0) for t in range(4)]] * 2 == s0.fine_runs
    assert Packer(inp, coarse, None, None).estimate() == pytest.approx(
        Packer(inp, s0, None, None).estimate()
    )
    partial = replace(coarse, runs=[[(0, 1, 1.0), (1, 1, 0.6)], []])
    got = fine_runs_of(partial)
    assert [t for t, _ in got[0]] == [0, 1, 2, 3, 4, 5, 6] and got[1] == []
    assert [f for _, f in got[0]] == pytest.approx([1.0] * 6 + [0.4])


def test_the_packer_reads_every_placed_job_after_an_unplaced_one(fleet):
    """Job ``later`` (released 02:00, due 08:00, past the 3-slot horizon) needs no work inside
    it and is not placed (pool −1, no runs); job ``b`` after it (1 GPU-h, due 02:00) runs in
    slot 0 at 100 g/kWh. The packer must still read ``b``: its work 1 GPU-h, its window the
    steps before its deadline (0–7 at 4 steps per slot), its busy cost 0.3 kWh × 100 g =
    0.03 kg; the estimate adds the node's hour, 0.1 kWh × 100 g = 0.01 kg → 0.04."""
    path = fleet(
        carbon={"Z": [100, 200, 300]},
        sites=ONE_SITE,
        pools=pool(gpn=2),
        jobs=[job("later", work=4.0, release=2, deadline=8), job("b", release=0, deadline=2)],
    )
    inp = inputs(path)
    s0 = _asap(inp)
    assert s0.pool.tolist() == [-1, 0] and s0.fine_runs[0] == []
    pk = Packer(inp, s0, None, None)
    assert pk.work.tolist() == pytest.approx([0.0, 1.0])
    assert pk.window == [(0, 0), (0, 8)]
    assert pk.jcost.tolist() == pytest.approx([0.0, 0.03])
    assert pk.estimate() == pytest.approx(0.04)
