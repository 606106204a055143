"""The safe plan priced by :func:`greencpn.optimize.plan.safe_result` with a failed node: only
the usable nodes carry work, in the document and in the schedule.

Written for the issue-15 mutation sample's survivor ``x_safe_result__mutmut_46`` (the safe
document's ``nodes_on`` not read: every node taken as on). That mutant turned out equivalent:
the plan inputs already count only usable nodes (``pool.nodes`` = nodes − failed, which
is also what :func:`safe_plan` writes), so ``min(pool.nodes, …)`` gives the same either way.
The test stays for the behaviour itself; with failed nodes ignored in the inputs it fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.fallback import safe_plan
from greencpn.controller.forecast import make_plan
from greencpn.optimize import milp
from greencpn.optimize import plan as planmod
from tests.optimize.conftest import START, write_fleet
from tests.optimize.test_plan_exact import SITE, job, pool
from tests.report.test_safe_fallback import _no_incumbent


def test_a_failed_node_stays_off_in_the_priced_safe_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pool p: 2 nodes × 2 GPUs, one failed → the safe document has 1 node on in every slot.
    Two 2-GPU jobs of 2 GPU-h (1 h each on 2 GPUs), both released at hour 0: on the one usable
    node j1 runs in hour 0 and j2 waits for hour 1 (release order, ``mode="asap"``); with both
    nodes on they would both start at hour 0."""
    path = write_fleet(
        tmp_path,
        carbon={"Z": [100, 500, 100, 500, 300, 200]},
        sites=SITE,
        pools=pool(nodes=2, gpn=2, initial=2),
        jobs=[
            job(id="j1", gpus=2, work=2.0, release=0.0, deadline=6),
            job(id="j2", gpus=2, work=2.0, release=0.0, deadline=6),
        ],
    )
    monkeypatch.setattr(milp.PlanModel, "solve", _no_incumbent)
    cfg = load_config(path)
    failed = {"p": 1}
    with pytest.raises(planmod.NoIncumbentError) as ei:
        make_plan(cfg, SimClock(START), failed_nodes=failed)
    exc = ei.value
    assert exc.inputs.pools[0].nodes == 1  # the usable nodes only
    doc = safe_plan(cfg, START, failed)
    assert {s["nodes_on"] for s in doc["pools"][0]["slots"]} == {1}
    res = planmod.safe_result(cfg, SimClock(START), exc.inputs, exc.outcome, exc.diagnostics, doc)
    assert np.array_equal(res.nodes_on[0], np.ones(exc.inputs.T, dtype=int))
    assert {s["nodes_on"] for s in res.document["pools"][0]["slots"]} == {1}
    start = {j["id"]: j["start"] for j in res.document["jobs"]}
    assert start == {"j1": "2026-01-05T00:00:00Z", "j2": "2026-01-05T01:00:00Z"}
    # no trade-off solves without an incumbent: plan.json's "tradeoff" is still the list that
    # docs/plan-schema.md documents, empty (not null)
    assert res.tradeoff == [] and res.document["tradeoff"] == []
