"""Site budgets against the node dynamics the placement does not place itself (issue 11.3).

A node the node repair must keep on — for min up after a start, or a slot early because a job
uses the first minutes of a slot while a node started then still boots — draws idle power in
slots where no job of its own runs. Placing jobs without counting it pushed a site over its
budget (the FIFO baseline on L-loaded: 4 late, 321 kWh over). Each fleet here has a schedule
with no overrun and no late job, worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs, make_plan
from greencpn.optimize.evaluate import evaluate
from greencpn.optimize.placement import place_jobs
from greencpn.optimize.repair import repair_nodes
from tests.optimize.conftest import START
from tests.optimize.test_plan_tiny import job, pool


def site(budget: list[float]) -> str:
    return f"""
[[sites]]
name = "a"
zone = "Z"
jurisdictions = ["EU"]
pue = 1.0
power_budget_kw = {budget}
"""


def fifo(path):
    """The FIFO schedule (asap, idle nodes off: only spares counted on) and its nodes."""
    inp = make_inputs(load_config(path), SimClock(START))
    P, T = len(inp.pools), inp.T
    sched = place_jobs(inp, np.zeros((P, T)), np.zeros((P, T), dtype=int), mode="asap")
    n, u, _d = repair_nodes(inp, sched)
    return inp, sched, n, evaluate(inp, sched, n, u)


def min_up_fleet(fleet):
    """Pool "big" (1 node × 4 GPUs, min up 3 h) comes first for FIFO (most GPUs); "small"
    (1 node × 2 GPUs, min up 1 h). Job x needs 2 GPUs for slot 1 exactly. On big its node stays
    on through slot 3 (min up): 0.1 kW idle against a 0.05 kW budget in slots 2 and 3 =
    0.1 kWh over. On small: 0.1 + 2 × 0.3 = 0.7 kW in slot 1 only, inside the 1 kW budget."""
    return fleet(
        carbon={"Z": [100, 100, 100, 100]},
        sites=site([1.0, 1.0, 0.05, 0.05]),
        pools=pool("big", gpn=4, min_up=3.0) + pool("small", gpn=2),
        jobs=[job("x", gpus=2, work=2.0, release=1, deadline=2)],
    )


def boot_fleet(fleet):
    """One node booting 6 min. Job x (1 GPU-h) may run from 01:00 to 03:00. Started at
    01:00 it needs its node up at 01:00, i.e. on in slot 0, whose budget (0.05 kW) is below
    the node's 0.1 kW idle: 0.05 kWh over. Started at 01:15 (the node boots in slot 1's first
    step) it ends at 02:15: on time, nothing over. Pool q (no boot time) cannot take it: its
    0.8 kW idle + 0.3 kW busy is over the 1 kW budget."""
    gpu_pool = pool("p").replace("min_down_h", "boot_time_min = 6\nnode_boot_w = 100\nmin_down_h")
    return fleet(
        carbon={"Z": [100, 100, 100, 100]},
        sites=site([0.05, 1.0, 1.0, 1.0]),
        pools=gpu_pool + pool("q", idle_w=800.0),
        jobs=[job("x", gpus=1, work=1.0, release=1, deadline=3)],
    )


@pytest.mark.parametrize("make", [min_up_fleet, boot_fleet])
def test_fifo_stays_inside_the_budget(fleet, make):
    inp, sched, n, ev = fifo(make(fleet))
    assert ev.totals["budget_overrun_kwh"] == pytest.approx(0.0, abs=1e-9)
    assert ev.totals["late_jobs"] == 0


def test_fifo_min_up_takes_the_small_pool(fleet):
    inp, sched, n, ev = fifo(min_up_fleet(fleet))
    assert inp.pools[int(sched.pool[0])].name == "small"
    assert n.tolist() == [[0, 0, 0, 0], [0, 1, 0, 0]]
    assert ev.totals["energy_kwh"] == pytest.approx(0.7)


def test_fifo_boot_starts_after_the_boot(fleet):
    inp, sched, n, ev = fifo(boot_fleet(fleet))
    assert float(sched.start_h[0]) == pytest.approx(1.25)
    assert n[0].tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize("make", [min_up_fleet, boot_fleet])
def test_plan_and_baselines_stay_inside_the_budget(fleet, make):
    res = make_plan(load_config(make(fleet)), SimClock(START))
    doc = res.document
    assert doc["totals"]["budget_overrun_kwh"] == pytest.approx(0.0, abs=1e-9)
    assert doc["totals"]["late_jobs"] == 0
    for name in ("shutdown_idle",):  # the greedy baseline does not count the node dynamics
        assert doc["baselines"][name]["budget_overrun_kwh"] == pytest.approx(0.0, abs=1e-9), name
        assert doc["baselines"][name]["late_jobs"] == 0, name


def test_node_repair_stops_a_node_rather_than_bridge_over_the_budget(fleet):
    """Bridging a one-slot gap is cheaper than a start-up here (boot 10 kW × 6 min = 1 kWh
    against 0.1 kWh idle), but the 0.05 kW budget of slot 1 forbids the idle node: the repair
    stops it (n = 1, 0, 1). Job b starts at 02:15, after the boot step, so no node is needed
    in slot 1 for it either."""
    boot_pool = pool("p").replace(
        "min_down_h", "boot_time_min = 6\nnode_boot_w = 10000\nmin_down_h"
    )
    path = fleet(
        carbon={"Z": [100, 100, 100]},
        sites=site([2.0, 0.05, 2.0]),
        pools=boot_pool,
        jobs=[
            job("a", work=0.75, release=0.25, deadline=1),
            job("b", work=0.75, release=2.25, deadline=3),
        ],
        extra="",
    )
    inp, sched, n, ev = fifo(path)
    assert [float(x) for x in sched.start_h] == [0.25, 2.25]
    assert n[0].tolist() == [1, 0, 1]
    assert ev.totals["budget_overrun_kwh"] == pytest.approx(0.0, abs=1e-9)


def test_fifo_counts_the_standby_power_of_nodes_off(fleet):
    """Pool p: 2 nodes × 1 GPU (T1: 300 W busy), 300 W idle, 100 W when off. Job x (1 GPU-h)
    may run in slot 0 or 1. In slot 0 it would draw 0.3 + 0.3 kW on its node plus 0.1 kW of the
    other node off = 0.7 kW, over the 0.5 kW budget; both nodes off draw 0.2 kW, inside it.
    So FIFO starts x at 01:00 (slot 1, budget 1 kW): 0.2 + 0.7 = 0.9 kWh, nothing over.
    (Counting the off power with the wrong sign made the headroom too large: x at 00:00.)"""
    off_pool = pool("p", nodes=2, idle_w=300.0).replace(
        "min_down_h", "node_off_w = 100\nmin_down_h"
    )
    path = fleet(
        carbon={"Z": [100, 100]},
        sites=site([0.5, 1.0]),
        pools=off_pool,
        jobs=[job("x", work=1.0, release=0, deadline=2)],
        extra="",
    )
    inp, sched, n, ev = fifo(path)
    assert float(sched.start_h[0]) == pytest.approx(1.0)
    assert n[0].tolist() == [0, 1]
    assert ev.totals["budget_overrun_kwh"] == pytest.approx(0.0, abs=1e-9)
    assert ev.totals["energy_kwh"] == pytest.approx(0.9)
