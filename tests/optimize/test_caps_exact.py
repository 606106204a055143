"""``solver.exact_cap_levels = true``: the exact-cap rows of optimize/caps.py (one cap level per
pool and slot inside the MILP), checked on the MILP solution itself against the default
relaxation (GPU counts per level), both worked out by hand.

GPU "T6": 300 W θ 1.0, busy 0.3 kW (0.30 kWh per GPU-h of work); 150 W θ 0.6, busy
0.5 × 300 W = 0.15 kW (0.25 kWh per GPU-h: the efficient level, but slower). One pool, 1 node ×
2 GPUs, node idle 100 W, PUE 1, one hourly slot at 100 g/kWh, one 2-GPU job with 1.6 GPU-h
due at the horizon end (unserved work costs 1000 per GPU-h, so it all runs in the slot).

* Relaxation (default): g₃₀₀ + g₁₅₀ ≤ 2 GPUs and g₃₀₀ + 0.6 g₁₅₀ = 1.6 GPU-h; minimising
  0.3 g₃₀₀ + 0.15 g₁₅₀ takes g₁₅₀ as large as the GPUs allow: g₃₀₀ = g₁₅₀ = 1 (1 + 0.6 =
  1.6), busy 0.45 kWh + node 0.1 kWh = 0.55 kWh → 0.055 kg.
* Exact: the slot has one level. 150 W alone gives at most 2 × 0.6 = 1.2 GPU-h < 1.6, so the
  slot is at 300 W: g₃₀₀ = 1.6, busy 0.48 + 0.1 = 0.58 kWh → 0.058 kg.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs
from greencpn.optimize.milp import PlanModel
from tests.optimize.conftest import START, write_fleet
from tests.optimize.test_plan_exact import SITE, gpu_two_levels, job, pool

GPU6 = gpu_two_levels(0.6, name="T6")


def _milp(tmp: Path, exact: bool):
    path = write_fleet(
        tmp,
        carbon={"Z": [100.0]},
        sites=SITE,
        pools=pool(gpn=2, gpu="T6"),
        jobs=[job("j", gpus=2, work=1.6, release=0, deadline=1)],
        gpu=GPU6,
    )
    if exact:
        text = path.read_text().replace(
            "mip_rel_gap = 0.0", "mip_rel_gap = 0.0\nexact_cap_levels = true"
        )
        path.write_text(text)
    inp = make_inputs(load_config(path), SimClock(START))
    assert inp.solver.exact_cap_levels is exact
    model = PlanModel(inp)
    outcome = model.solve()
    return model, outcome, model.extract()


def test_default_relaxation_mixes_two_levels_in_one_slot(tmp_path: Path) -> None:
    model, outcome, sol = _milp(tmp_path, exact=False)
    assert model.V.y is None  # no level binaries without exact_cap_levels
    assert sol.g[0, :, 0].tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert outcome.objective == pytest.approx(0.055, abs=1e-7)


def test_exact_cap_levels_give_the_slot_one_level(tmp_path: Path) -> None:
    model, outcome, sol = _milp(tmp_path, exact=True)
    assert model.V.y is not None
    y = model.mb.value(model.V.y[0, :, 0])
    assert y.tolist() == pytest.approx([1.0, 0.0], abs=1e-6)  # the 300 W level
    assert sol.level[0, 0] == 0
    assert sol.g[0, :, 0].tolist() == pytest.approx([1.6, 0.0], abs=1e-6)
    assert outcome.objective == pytest.approx(0.058, abs=1e-7)
