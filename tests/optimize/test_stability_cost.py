"""optimize/stability.py ``stability_cost`` on 30-minute slots: the start-shift term is priced
per *slot* moved (``shift_weight_per_gpu_h_slot``), so an hour's move is two slots here. Until
now only tests/controller exercised it, on hourly slots, where hours and slots coincide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs
from greencpn.optimize.schedule import Schedule
from greencpn.optimize.stability import Anchor, stability_cost
from tests.optimize.conftest import START, iso, plan_horizon, write_fleet
from tests.optimize.test_plan_exact import SITE, job, pool


def _half_hour_inputs(tmp: Path):
    """One site a, pool p (1 node × 1 GPU), four 30-min slots from START (a 2-h horizon), job
    j (1 GPU, 1 GPU-h, release 0, due at 2 h: all of it required in the horizon)."""
    path = write_fleet(
        tmp, carbon={"Z": [100.0] * 4}, sites=SITE, pools=pool(), jobs=[job("j", deadline=2.0)]
    )
    path.write_text(path.read_text().replace("slot_minutes = 60", "slot_minutes = 30"))
    return make_inputs(load_config(path), SimClock(START))


def _schedule_starting_at(start_h: float, T: int) -> Schedule:
    """Job 0 on pool 0 from ``start_h`` (only pool and start are read by stability_cost)."""
    z = np.zeros((1, T))
    return Schedule(
        pool=np.array([0]),
        runs=[[]],
        alloc=z,
        busy=z,
        level=z.astype(int),
        T=T,
        start_h=np.array([start_h]),
        end_h=np.array([start_h + 1.0]),
    )


def test_an_hours_shift_on_half_hour_slots_is_two_slots(tmp_path: Path) -> None:
    """The newest plan had j at site ``b`` from 00:00; the candidate runs it at site a from
    01:00. Weights: site 0.3 per GPU-h, shift 0.1 per GPU-h and slot moved; r_j = 1 GPU-h:

        0.3 · 1 (other site) + 0.1 · 1 · |1.0 h − 0 h| / 0.5 h = 0.3 + 0.2 = 0.5

    and the same start as the newest plan's costs only the site term, 0.3."""
    inp = _half_hour_inputs(tmp_path)
    assert inp.slot_h == 0.5 and inp.T == 4
    doc = {
        "horizon": plan_horizon(4),
        "jobs": [{"id": "j", "site": "b", "pool": "old", "start": iso(0)}],
        "pools": [],
    }
    anchor = Anchor(site_weight_per_gpu_h=0.3, shift_weight_per_gpu_h_slot=0.1, latest=doc)
    nodes_on = np.ones((1, 4))
    moved = stability_cost(inp, anchor, _schedule_starting_at(1.0, 4), nodes_on)
    assert abs(moved - 0.5) < 1e-12
    same = stability_cost(inp, anchor, _schedule_starting_at(0.0, 4), nodes_on)
    assert abs(same - 0.3) < 1e-12
