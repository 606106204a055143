"""The FIFO-with-spill baseline's retry passes (baselines.fifo_spill): late jobs go first in a
retry; a retry whose order and held-back energy equal the pass before it is not placed again.

Fleet, by hand: one site, one 1-GPU node, a 4-hour horizon at 100 g/kWh. ``a`` (1 GPU-h,
released at 0, due at 1) and ``b`` (3 GPU-h, released at 1, due at 2): ``b`` cannot finish by
its deadline in any order (3 GPU-h on one GPU after hour 1 ends at hour 4 at the earliest), so
it is late in every pass. Pass 1 places in release order (a, b) — b late; pass 2 puts b first
(order b, a) — b still late (released at 1, ends at 4), a runs 0–1; pass 3 would again put
b first with nothing held back (no budget): the inputs of pass 2, so it is skipped."""

from __future__ import annotations

import numpy as np
import pytest

import greencpn.optimize.baselines as bmod
from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs
from tests.optimize.conftest import START, write_fleet
from tests.optimize.test_plan_exact import SITE, job, pool

PLACE = bmod.place_jobs  # the real placement, wrapped afresh by each _spill


@pytest.fixture
def inp(tmp_path):
    path = write_fleet(
        tmp_path,
        carbon={"Z": [100.0, 100.0, 100.0, 100.0]},
        sites=SITE,
        pools=pool(nodes=1, gpn=1, idle_w=100.0),
        jobs=[
            job("a", work=1.0, release=0.0, deadline=1.0, ckpt=True),
            job("b", work=3.0, release=1.0, deadline=2.0, ckpt=True),
        ],
    )
    return make_inputs(load_config(path), SimClock(START))


def _spill(inp, monkeypatch, passes: int):
    orders: list = []

    def counting(inp_, *a, **k):
        orders.append(k.get("job_order"))
        return PLACE(inp_, *a, **k)

    monkeypatch.setattr(bmod, "place_jobs", counting)
    P, T = len(inp.pools), inp.T
    spare_on = np.zeros((P, T), dtype=int)
    top = np.zeros((P, T), dtype=int)
    sched, n, u, ev = bmod.fifo_spill(inp, spare_on, top, passes=passes)
    return orders, sched, ev


def test_a_retry_with_the_inputs_of_the_pass_before_is_skipped(inp, monkeypatch):
    ids = [j.id for j in inp.jobs]
    orders, sched, ev = _spill(inp, monkeypatch, passes=3)
    assert orders[0] is None  # release order
    assert [ids[j] for j in orders[1]] == ["b", "a"]  # the late job first
    assert len(orders) == 2  # pass 3 (b first again, nothing held back) not placed
    late = bmod.late_jobs(inp, sched)
    assert [ids[j] for j in late] == ["b"]
    # b: 3 GPU-h from hour 1 on the only GPU ends at hour 4 (2 h late)
    b = ids.index("b")
    assert float(sched.end_h[b]) == pytest.approx(4.0)


def test_the_skipped_pass_would_have_placed_the_same_schedule(inp):
    """The premise of the skip: the placement is deterministic — the retry's inputs placed
    twice give the same schedule, job by job and step by step."""
    P, T = len(inp.pools), inp.T
    spare_on, top = np.zeros((P, T), dtype=int), np.zeros((P, T), dtype=int)
    reserve = np.zeros((len(inp.sites), T))
    order = [1, 0]  # b first, as in pass 2
    one, two = (
        PLACE(inp, spare_on, top, mode="asap", job_order=order, reserve_kwh=reserve)
        for _ in range(2)
    )
    assert [list(r) for r in one.runs] == [list(r) for r in two.runs]
    assert list(one.pool) == list(two.pool) and list(one.end_h) == list(two.end_h)
    assert [list(r) for r in one.runs] != [[], []]  # both jobs were placed
