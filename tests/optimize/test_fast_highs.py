"""The faster hand-off (builder.fast_highs_class) loads the same HiGHS model as the stock
pyomo.contrib.solver HiGHS interface: same Pyomo variable -> column map, same bounds,
integrality, rows and objective, and the same solve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs
from greencpn.optimize.builder import fast_highs_class
from greencpn.optimize.milp import PlanModel
from greencpn.optimize.stability import Anchor, StablePlanModel
from tests.optimize.conftest import START

EXAMPLE = Path(__file__).resolve().parents[2] / "data" / "example" / "fleet.toml"


def _loaded(solver_cls, model):
    s = solver_cls()
    s.set_instance(model)
    return s


def _lp(s):
    lp = s._solver_model.getLp()
    a = lp.a_matrix_
    return {
        "cost": np.asarray(lp.col_cost_),
        "col_lo": np.asarray(lp.col_lower_),
        "col_hi": np.asarray(lp.col_upper_),
        "row_lo": np.asarray(lp.row_lower_),
        "row_hi": np.asarray(lp.row_upper_),
        "start": np.asarray(a.start_),
        "index": np.asarray(a.index_),
        "value": np.asarray(a.value_),
        "integrality": [int(x) for x in lp.integrality_],
    }


@pytest.fixture(scope="module")
def example_inputs():
    cfg = load_config(EXAMPLE)
    return make_inputs(cfg, SimClock(START))


@pytest.mark.parametrize("stable", [False, True])
def test_same_columns_and_rows_as_the_stock_interface(example_inputs, stable):
    from pyomo.contrib.solver.solvers.highs import Highs

    inp = example_inputs
    if stable:  # extra Pyomo rows and variables added after finalize (the flap terms)
        a = Anchor(flap_weight=1.0)
        a.prev_nodes_on = np.full((len(inp.pools), inp.T), 1.0)
        model = StablePlanModel(inp, a).model
    else:
        model = PlanModel(inp).model
    stock, fast = _loaded(Highs, model), _loaded(fast_highs_class(), model)
    assert fast._pyomo_var_to_solver_var_map == stock._pyomo_var_to_solver_var_map
    assert fast._pyomo_con_to_solver_con_map == stock._pyomo_con_to_solver_con_map
    lp_s, lp_f = _lp(stock), _lp(fast)
    assert lp_s.keys() == lp_f.keys()
    for k in lp_s:
        assert np.array_equal(lp_s[k], lp_f[k]), k
    assert stock._solver_model.getNumCol() > 100  # a real model, not an empty one


def test_plan_model_solves_to_the_stock_objective(example_inputs):
    from pyomo.contrib.solver.solvers.highs import Highs

    fast_model = PlanModel(example_inputs)
    out_fast = fast_model.solve()
    stock_model = PlanModel(example_inputs)
    stock_model._make_solver = Highs  # type: ignore[method-assign]
    out_stock = stock_model.solve()
    assert out_fast.status == out_stock.status
    assert out_fast.objective == pytest.approx(out_stock.objective, rel=1e-9)
