"""The faster hand-off (handoff.fast_highs_class) loads the same HiGHS model as the stock
pyomo.contrib.solver HiGHS interface: same Pyomo variable -> column map, same bounds,
integrality, rows and objective, and the same solve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs
from greencpn.optimize.handoff import fast_highs_class
from greencpn.optimize.milp import PlanModel
from greencpn.optimize.stability import Anchor, StablePlanModel
from tests.optimize.conftest import START

pytestmark = pytest.mark.slow  # minutes of solves / wall time: xdist hands it out first

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


def _anchor(inp, seed: int = 1) -> Anchor:
    """Every stability term on: flap rows for the known cells (the last 3 slots unknown),
    moved share and shifted starts on the x columns, history bounds."""
    P, T, K, S = len(inp.pools), inp.T, len(inp.groups), len(inp.sites)
    rng = np.random.default_rng(seed)
    a = Anchor(flap_weight=0.5, site_weight_per_gpu_h=0.05, shift_weight_per_gpu_h_slot=0.005)
    prev = rng.integers(0, 5, size=(P, T)).astype(float)
    prev[:, -3:] = np.nan
    a.prev_nodes_on = prev
    a.moved_share = rng.random((K, S))
    a.shift_slots = rng.random((K, T)) * 3
    a.must_on = np.zeros((P, T), dtype=int)
    a.must_on[0, :2] = 1
    a.must_off = np.zeros((P, T), dtype=int)
    return a


@pytest.mark.parametrize("stable", [False, True])
def test_same_columns_and_rows_as_the_stock_interface(example_inputs, stable):
    from pyomo.contrib.solver.solvers.highs import Highs

    inp = example_inputs
    if stable:  # the flap rows and columns, the stability objective terms
        model = StablePlanModel(inp, _anchor(inp)).model
        assert len(model.c_stab_flap) == 2 * int(np.isfinite(_anchor(inp).prev_nodes_on).sum())
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


def _legacy_stable_model(inp, a: Anchor):
    """The stability terms as they were built before they became builder rows: a Pyomo
    ConstraintList ``f >= n − n̂``, ``f >= n̂ − n`` and a nested objective sum."""
    import pyomo.environ as pyo

    pm = PlanModel(inp)
    m, V, mb = pm.model, pm.V, pm.mb
    StablePlanModel._add_history_bounds(pm, a)  # type: ignore[arg-type]
    P, T = len(inp.pools), inp.T
    known = [(p, t) for p in range(P) for t in range(T) if np.isfinite(a.prev_nodes_on[p, t])]
    m.stab_flap = pyo.Var(range(len(known)), domain=pyo.NonNegativeReals)
    m.stab_flap_rows = pyo.ConstraintList()
    for i, (p, t) in enumerate(known):
        n = mb.vars[int(V.n[p, t])]
        prev = float(a.prev_nodes_on[p, t])
        m.stab_flap_rows.add(m.stab_flap[i] >= n - prev)
        m.stab_flap_rows.add(m.stab_flap[i] >= prev - n)
    terms = [a.flap_weight * pyo.quicksum(m.stab_flap[i] for i in range(len(known)))]
    coef = a.site_weight_per_gpu_h * a.moved_share[V.x_k, V.x_s]
    coef = coef + a.shift_weight_per_gpu_h_slot * a.shift_slots[V.x_k, V.x_t]
    nz = np.nonzero(coef > 0)[0]
    terms.append(pyo.quicksum(float(coef[i]) * mb.vars[int(V.x_id[i])] for i in nz.tolist()))
    base = m.objective.expr
    m.objective.deactivate()
    m.objective_stable = pyo.Objective(expr=base + sum(terms), sense=pyo.minimize)
    return m


def test_stability_rows_take_the_fast_path_and_give_the_legacy_highs_model(example_inputs):
    """The stability rows are builder rows now (the fast hand-off reads them from its lists,
    none goes the stock way), and HiGHS gets exactly the model the former ConstraintList gave
    through the stock interface: same columns, bounds, integrality, costs, rows."""
    from pyomo.contrib.solver.solvers.highs import Highs

    inp = example_inputs
    a = _anchor(inp)
    cls = fast_highs_class()
    stock_way: list = []

    fast_objective: list[bool] = []

    class Spy(cls):  # type: ignore[misc,valid-type]
        def _add_run(self, cons, fast):
            if not fast:
                stock_way.extend(cons)
            return super()._add_run(cons, fast)

        def _fast_objective(self, obj):
            fast_objective.append(super()._fast_objective(obj))
            return fast_objective[-1]

    fast = _loaded(Spy, StablePlanModel(inp, a).model)
    assert stock_way == []
    assert fast_objective == [True]  # the flat objective was read from its lists
    legacy = _loaded(Highs, _legacy_stable_model(inp, a))
    lp_l, lp_f = _lp(legacy), _lp(fast)
    for k in lp_l:
        assert np.array_equal(lp_l[k], lp_f[k]), k
    assert legacy._solver_model.getNumRow() == fast._solver_model.getNumRow() > 1000


def test_stable_model_solves_to_the_stock_objective(example_inputs):
    from pyomo.contrib.solver.solvers.highs import Highs

    a = _anchor(example_inputs)
    out_fast = StablePlanModel(example_inputs, a, warm_start=False).solve()
    stock_model = StablePlanModel(example_inputs, a, warm_start=False)
    stock_model._make_solver = Highs  # type: ignore[method-assign]
    out_stock = stock_model.solve()
    assert out_fast.status == out_stock.status
    assert out_fast.objective == pytest.approx(out_stock.objective, rel=1e-9)


def test_new_carbon_values_change_the_same_costs_as_the_stock_interface(example_inputs):
    """The objective's carbon coefficients stay mutable on the fast path: a new intensity in
    the Params gives the stock interface's new costs."""
    from pyomo.contrib.solver.solvers.highs import Highs

    model = StablePlanModel(example_inputs, _anchor(example_inputs)).model
    stock, fast = _loaded(Highs, model), _loaded(fast_highs_class(), model)
    before = _lp(fast)["cost"]
    for i in range(len(model.intensity)):
        model.intensity[i] = 37.0 + i
    for s in (stock, fast):
        s._mutable_objective.update()
    assert np.array_equal(_lp(stock)["cost"], _lp(fast)["cost"])
    assert not np.array_equal(before, _lp(fast)["cost"])  # the update reached HiGHS


@pytest.mark.parametrize("stable", [False, True])
def test_fast_solution_load_sets_the_same_values_as_the_stock_loader(example_inputs, stable):
    """FastHighs.load_all_vars (PlanModel.solve's solution load) sets every variable the stock
    ``solution_loader.load_vars()`` sets, to the same value, and no other."""
    import pyomo.environ as pyo

    pm = StablePlanModel(example_inputs, _anchor(example_inputs)) if stable else None
    pm = pm or PlanModel(example_inputs)
    out = pm.solve()  # loads with load_all_vars
    assert out.status.value in ("optimal", "time_limit") and out.load_s > 0
    solver = pm._solver
    assert hasattr(solver, "load_all_vars")
    variables = list(pm.model.component_data_objects(ctype=pyo.Var))
    fast = {id(v): v.value for v in variables}
    for v in variables:
        v.set_value(None, skip_validation=True)
    solver._last_results_object.solution_loader.load_vars()  # the stock path
    stock = {id(v): v.value for v in variables}
    assert sum(x is not None for x in stock.values()) > 1000
    assert fast == stock


def _tiny_builder_model(repeat: bool = True):
    """Three variables of each kind with bounds, four rows:
    r0: x1 + 2·x0 + 3·x1 (x1 named twice) ≤ 10   → one HiGHS row 4·x1 + 2·x0, x1 first;
    r1: x0 + y0 + z0 = 2 (every coefficient 1);
    r2: 0.5·z1 − y1 ≥ −1;  r3: an empty row, 0 ≤ · ≤ 5."""
    import pyomo.environ as pyo

    from greencpn.optimize.builder import ModelBuilder

    mb = ModelBuilder()
    x = mb.new_vars("int", (3,), ub=np.array([4.0, 7.0, np.inf]))
    y = mb.new_vars("bin", (3,))
    z = mb.new_vars("cont", (3,), lb=0.5, ub=9.0)
    first = (int(x[1]), int(x[0]), int(x[1])) if repeat else (int(x[1]), int(x[0]))
    mb.add_row("a", first, (1.0, 2.0, 3.0)[: len(first)], hi=10.0)
    mb.add_row("a", (int(x[0]), int(y[0]), int(z[0])), (1, 1, 1), lo=2.0, hi=2.0)
    mb.add_row("b", (int(z[1]), int(y[1])), (0.5, -1.0), lo=-1.0)
    mb.add_row("b", (), (), lo=0.0, hi=5.0)
    mb.finalize()
    mb.m.obj = pyo.Objective(expr=mb.vars[int(x[2])] + 2 * mb.vars[int(z[2])])
    return mb, x, y, z


def test_tiny_builder_model_same_highs_model_as_the_stock_interface():
    """Hand-checked: the repeated x1 in r0 is one term with coefficient 1 + 3 = 4, placed
    before x0 (its first appearance, although its id is higher); bounds are the variables' own intersected with their
    domain's (y binary: [0, 1]; z [0.5, 9]; x2 unbounded above); a bound changed after
    ``finalize`` (x1 ≤ 3) is what HiGHS gets, on both paths."""
    from pyomo.contrib.solver.solvers.highs import Highs

    mb, x, y, z = _tiny_builder_model()
    mb.vars[int(x[1])].setub(3.0)
    stock, fast = _loaded(Highs, mb.m), _loaded(fast_highs_class(), mb.m)
    lp_s, lp_f = _lp(stock), _lp(fast)
    for k in lp_s:
        assert np.array_equal(lp_s[k], lp_f[k]), k
    col = fast._pyomo_var_to_solver_var_map
    c = {name: col[id(mb.vars[int(i)])] for name, i in (("x0", x[0]), ("x1", x[1]), ("y0", y[0]))}
    start, index, value = lp_f["start"], lp_f["index"], lp_f["value"]
    assert index[start[0] : start[1]].tolist() == [c["x1"], c["x0"]]
    assert value[start[0] : start[1]].tolist() == [4.0, 2.0]
    assert lp_f["row_lo"][1] == lp_f["row_hi"][1] == 2.0
    assert lp_f["row_lo"][3] == 0.0 and lp_f["row_hi"][3] == 5.0
    assert lp_f["col_hi"][c["x1"]] == 3.0 and lp_f["col_hi"][c["y0"]] == 1.0
    assert np.isinf(lp_f["col_hi"][col[id(mb.vars[int(x[2])])]])
    assert lp_f["col_lo"][col[id(mb.vars[int(z[0])])]] == 0.5
    # y2 is in no row and not in the objective: never a column (as on the stock path);
    # integer: x0, x1, x2, y0, y1 (5 of the 8 columns), z continuous
    assert len(lp_f["integrality"]) == 8 and sum(lp_f["integrality"]) == 5


def test_tiny_builder_model_with_a_fixed_variable_goes_the_stock_way():
    """A fixed variable is a parameter to the stock interface (its value moves into the row
    bounds): the fast path must not take such a model, and the two agree."""
    from pyomo.contrib.solver.solvers.highs import Highs

    mb, x, y, z = _tiny_builder_model(repeat=False)
    mb.vars[int(y[0])].fix(1)
    stock, fast = _loaded(Highs, mb.m), _loaded(fast_highs_class(), mb.m)
    lp_s, lp_f = _lp(stock), _lp(fast)
    for k in lp_s:
        assert np.array_equal(lp_s[k], lp_f[k]), k
    # r1: x0 + z0 = 2 − 1 (y0 fixed at 1)
    assert lp_f["row_lo"][1] == lp_f["row_hi"][1] == 1.0
