"""A thin layer over Pyomo for building large linear models fast.

Variables live in three flat indexed components (``vi`` integers, ``vb`` binaries, ``vc``
continuous) addressed by one global integer id; families allocate ids in blocks (numpy arrays
shaped like their index, e.g. ``[P, T]``) and append rows as ``(ids, coefs, lo, hi)``. At the end
each family becomes one Pyomo ``Constraint`` whose rule returns a ``LinearExpression`` built
from the grouped lists — measured 1.4–1.8× faster than ``sum()`` over tuple sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyomo.environ as pyo
from pyomo.core.expr.numeric_expr import LinearExpression

INF = float("inf")


@dataclass
class _Rows:
    ids: list[Sequence[int]] = field(default_factory=list)
    coefs: list[Sequence[float]] = field(default_factory=list)
    lo: list[float | None] = field(default_factory=list)
    hi: list[float | None] = field(default_factory=list)


class ModelBuilder:
    """Collects variables and rows, then materialises one Pyomo model."""

    KINDS = ("int", "bin", "cont")

    def __init__(self) -> None:
        self._lb: dict[str, list[float]] = {k: [] for k in self.KINDS}
        self._ub: dict[str, list[float]] = {k: [] for k in self.KINDS}
        self._kind_of_block: list[tuple[str, int, int]] = []  # (kind, first global id, count)
        self._next_id = 0
        self._local: list[tuple[str, int]] = []  # global id -> (kind, local index)
        self.rows: dict[str, _Rows] = {}
        self.m = pyo.ConcreteModel()
        self.vars: list[pyo.Var] = []
        self._blocks: list[tuple[str, int, int, int]] = []  # (kind, first local, first id, n)

    # ------------------------------------------------------------------ variables
    def new_vars(
        self,
        kind: str,
        shape: tuple[int, ...],
        lb: float | np.ndarray = 0.0,
        ub: float | np.ndarray = INF,
    ) -> np.ndarray:
        """Allocate variables of one kind; returns their global ids in an array of ``shape``."""
        n = int(np.prod(shape)) if shape else 1
        ids = np.arange(self._next_id, self._next_id + n).reshape(shape)
        lbs = np.broadcast_to(np.asarray(lb, dtype=float), shape).ravel()
        ubs = np.broadcast_to(np.asarray(ub, dtype=float), shape).ravel()
        start_local = len(self._lb[kind])
        self._lb[kind].extend(lbs.tolist())
        self._ub[kind].extend(ubs.tolist())
        self._local.extend((kind, start_local + i) for i in range(n))
        self._blocks.append((kind, start_local, self._next_id, n))
        self._next_id += n
        return ids

    # ------------------------------------------------------------------ rows
    def add_row(
        self,
        family: str,
        ids: Sequence[int],
        coefs: Sequence[float],
        lo: float | None = None,
        hi: float | None = None,
    ) -> None:
        rows = self.rows.setdefault(family, _Rows())
        rows.ids.append(ids)
        rows.coefs.append(coefs)
        rows.lo.append(lo)
        rows.hi.append(hi)

    def n_rows(self) -> int:
        return sum(len(r.ids) for r in self.rows.values())

    @property
    def n_vars(self) -> int:
        return self._next_id

    # ------------------------------------------------------------------ materialise
    def finalize(self) -> None:
        m = self.m
        for kind, domain, name in (
            ("int", pyo.NonNegativeIntegers, "vi"),
            ("bin", pyo.Binary, "vb"),
            ("cont", pyo.NonNegativeReals, "vc"),
        ):
            lbs, ubs = self._lb[kind], self._ub[kind]

            def bounds(_m, i, lbs=lbs, ubs=ubs):
                ub = ubs[i]
                return (lbs[i], None if ub == INF else ub)

            comp = pyo.Var(range(len(lbs)), domain=domain, bounds=bounds, dense=True)
            setattr(m, name, comp)
        comps = {"int": m.vi, "bin": m.vb, "cont": m.vc}
        self.vars = [comps[k][i] for k, i in self._local]
        allv = self.vars
        for family, rows in self.rows.items():
            ids, coefs, lo, hi = rows.ids, rows.coefs, rows.lo, rows.hi

            def rule(_m, r, ids=ids, coefs=coefs, lo=lo, hi=hi):
                expr = LinearExpression(
                    constant=0, linear_coefs=list(coefs[r]), linear_vars=[allv[j] for j in ids[r]]
                )
                if lo is not None and lo[r] == hi[r]:
                    return expr == lo[r]
                return (lo[r], expr, hi[r])

            setattr(m, f"c_{family}", pyo.Constraint(range(len(ids)), rule=rule))
        # the variables in the order the rows above first name them: the order in which
        # pyomo.contrib.solver's HiGHS interface would add them one constraint at a time
        # (see fast_highs), so it can add them all at once and the columns stay the same
        flat = [np.asarray(i, dtype=np.int64).ravel() for r in self.rows.values() for i in r.ids]
        if flat:
            cat = np.concatenate(flat)
            _, first = np.unique(cat, return_index=True)
            order = cat[np.sort(first)]
        else:
            order = np.zeros(0, dtype=np.int64)
        m._greencpn_var_order = [allv[int(i)] for i in order.tolist()]
        m._greencpn_rows = {f"c_{family}": rows for family, rows in self.rows.items()}
        m._greencpn_vars = allv

    def value(self, ids: np.ndarray) -> np.ndarray:
        """Solution values of the variables with these ids (same shape)."""
        flat = ids.ravel()
        vals = np.fromiter((self.vars[i].value or 0.0 for i in flat), dtype=float, count=flat.size)
        return vals.reshape(ids.shape)


def highspy_mod():
    import highspy

    return highspy


def fast_highs_class():
    """pyomo.contrib.solver's persistent HiGHS interface, loading a :class:`ModelBuilder`
    model faster and to the same HiGHS columns.

    The stock interface adds each constraint's new variables to HiGHS one constraint at a time
    (``addVars`` + ``changeColsIntegrality`` per row: ~25 % of its hand-off on the L fleet).
    Here :meth:`add_block` first adds every variable the builder's rows name, in the order
    those rows first name them (``_greencpn_var_order``, made by :meth:`ModelBuilder.finalize`)
    — the order the stock interface would have reached — in one call; the rest (e.g.
    variables of constraints added after ``finalize``) it adds as before. Same columns, same
    rows, so HiGHS solves the same model (tests/optimize/test_fast_highs.py)."""
    from pyomo.contrib.solver.solvers.highs import Highs

    class FastHighs(Highs):
        def add_variables(self, variables):
            if variables:  # the stock path calls HiGHS even for none (once per constraint)
                super().add_variables(variables)

        _rows: dict | None = None
        _allv: list | None = None

        def add_block(self, block):
            pre = getattr(block, "_greencpn_var_order", None)
            if pre:
                self.add_variables([v for v in pre if id(v) not in self._referenced_variables])
            self._rows = getattr(block, "_greencpn_rows", None)
            self._allv = getattr(block, "_greencpn_vars", None)
            if self._allv is not None and any(v.fixed for v in self._allv):
                self._rows = None  # fixed variables are parameters: the stock path prices them
            try:
                super().add_block(block)
            finally:
                self._rows = self._allv = None

        def load_all_vars(self) -> None:
            """The solution into every Pyomo variable the model uses, as the stock
            ``solution_loader.load_vars()`` does (the same variables, the same HiGHS column
            values, ``set_value(skip_validation=True)``, stale flags marked) without building
            the ``ComponentMap`` of all primals first (~2× faster on the example fleet)."""
            from pyomo.contrib.solver.common.util import NoSolutionError
            from pyomo.core.staleflag import StaleFlagManager

            sol = self._sol
            if sol is None or not sol.value_valid:
                raise NoSolutionError()
            vals = sol.col_value
            col = self._pyomo_var_to_solver_var_map
            pv = self._vars
            for v_id, (using_cons, using_sos, using_obj) in self._referenced_variables.items():
                if using_cons or using_sos or (using_obj is not None):
                    pv[v_id][0].set_value(vals[col[v_id]], skip_validation=True)
            StaleFlagManager.mark_all_as_stale(delayed=True)

        def set_objective(self, obj):
            """A flat ``LinearExpression`` objective over builder variables (the plan's, the
            stability terms appended) is read from its two lists instead of walked and
            re-expressed (``collect_vars_and_named_exprs`` + ``generate_standard_repn``: ~3 s
            on the L re-plan); the same costs (duplicates summed in order), the same mutable
            coefficients (the carbon Params), the same bookkeeping. Anything else — a fixed
            or unknown variable, a mutable coefficient on a repeated variable, another
            expression type — goes the stock way."""
            if obj is None or not self._fast_objective(obj):
                return super().set_objective(obj)
            return None

        def _fast_objective(self, obj) -> bool:
            from pyomo.contrib.solver.solvers import highs as _h
            from pyomo.core.expr.numvalue import is_constant, value

            expr = obj.expr
            if type(expr) is not LinearExpression or getattr(self, "_objective", None) is not None:
                return False
            if obj.sense not in (pyo.minimize, pyo.maximize):
                return False
            col = self._pyomo_var_to_solver_var_map
            const = expr.constant
            if not (isinstance(const, int | float) and const == 0):
                return False
            order: dict[int, Any] = {}  # id -> var, first appearance
            cost: dict[int, float] = {}
            mutable: dict[int, Any] = {}
            for c, v in zip(expr.linear_coefs, expr.linear_vars, strict=True):
                vid = id(v)
                if v.fixed or vid not in col:
                    return False
                if isinstance(c, int | float) or is_constant(c):
                    cv = float(value(c))
                    if vid in mutable:
                        return False
                    cost[vid] = cost[vid] + cv if vid in cost else cv
                else:
                    if vid in order:
                        return False
                    mutable[vid] = c
                    cost[vid] = float(value(c))
                order.setdefault(vid, v)
            variables = list(order.values())
            self._objective = obj
            self._objective_expr = expr
            self._objective_sense = obj.sense
            self._obj_named_expressions: list = []
            self._vars_referenced_by_obj = variables
            refs = self._referenced_variables
            for v in variables:
                refs[id(v)][2] = obj
            # _set_objective's HiGHS calls, from the lists
            self._sol = None
            if self._last_results_object is not None:
                self._last_results_object.solution_loader.invalidate()
            n = len(col)
            costs = np.zeros(n, dtype=np.double)
            for vid, cv in cost.items():
                costs[col[vid]] = cv
            mut = [
                _h._MutableObjectiveCoefficient(
                    pyomo_var_id=vid, var_map=col, expr=c, highs=self._solver_model
                )
                for vid, c in mutable.items()
            ]
            sense = (
                highspy_mod().ObjSense.kMinimize
                if obj.sense == pyo.minimize
                else highspy_mod().ObjSense.kMaximize
            )
            self._solver_model.changeObjectiveSense(sense)
            self._solver_model.changeColsCost(n, np.arange(n), costs)
            self._mutable_objective = _h._MutableObjective(
                self._solver_model,
                _h._MutableObjectiveOffset(expr=0, highs=self._solver_model),
                mut,
                [],
                col,
            )
            self._mutable_objective.update()
            return True

        def add_constraints(self, cons):
            """The builder's rows (constant coefficients and bounds, no fixed variable) are
            read from its lists, not walked as expressions; the same bookkeeping and the same
            HiGHS rows as the stock ``add_constraints`` + ``_add_constraints``. Runs of other
            constraints go the stock way, in order."""
            rows = self._rows
            if not rows:
                return super().add_constraints(cons)
            run: list = []
            run_fast: bool | None = None
            for con in cons:
                fast = con.parent_component().local_name in rows
                if run and fast is not run_fast:
                    self._add_run(run, run_fast)
                    run = []
                run.append(con)
                run_fast = fast
            if run:
                self._add_run(run, run_fast)

        def _add_run(self, cons, fast):
            if not fast:
                return super().add_constraints(cons)
            import highspy

            assert self._rows is not None and self._allv is not None
            allv, rows = self._allv, self._rows
            col = self._pyomo_var_to_solver_var_map
            self._sol = None
            if self._last_results_object is not None:
                self._last_results_object.solution_loader.invalidate()
            n_con = len(self._pyomo_con_to_solver_con_map)
            lbs: list[float] = []
            ubs: list[float] = []
            starts: list[int] = []
            index: list[int] = []
            value: list[float] = []
            for con in cons:
                if con in self._named_expressions:
                    raise ValueError(f"Constraint {con.name} has already been added")
                r = rows[con.parent_component().local_name]
                i = con.index()
                ids, coefs, lo, hi = r.ids[i], r.coefs[i], r.lo[i], r.hi[i]
                self._active_constraints[con] = con.expr
                seen: dict[int, int] = {}  # global id -> position in this row (merged)
                variables = []
                row_idx: list[int] = []
                row_val: list[float] = []
                for j, c in zip(ids, coefs, strict=True):
                    j = int(j)
                    k = seen.get(j)
                    if k is None:
                        seen[j] = len(row_idx)
                        v = allv[j]
                        variables.append(v)
                        row_idx.append(j)
                        row_val.append(float(c))
                    else:
                        row_val[k] += float(c)
                self._check_for_new_vars(variables)
                self._named_expressions[con] = []
                self._vars_referenced_by_con[con] = variables
                refs = self._referenced_variables
                for v in variables:
                    refs[id(v)][0][con] = None
                starts.append(len(value))
                index.extend(col[id(allv[j])] for j in row_idx)
                value.extend(row_val)
                if lo is not None and lo == hi:
                    lb = ub = float(lo)
                else:
                    lb = -highspy.kHighsInf if lo is None else float(lo)
                    ub = highspy.kHighsInf if hi is None else float(hi)
                lbs.append(lb)
                ubs.append(ub)
                self._pyomo_con_to_solver_con_map[con] = n_con
                self._solver_con_to_pyomo_con_map[n_con] = con
                n_con += 1
            self._solver_model.addRows(
                len(lbs),
                np.array(lbs, dtype=np.double),
                np.array(ubs, dtype=np.double),
                len(value),
                np.array(starts),
                np.array(index),
                np.array(value, dtype=np.double),
            )

    return FastHighs


@dataclass
class DirectResult:
    """What :meth:`ModelBuilder.solve_direct` found: ``values`` by global id (None: no
    solution), HiGHS' model status name and, when it has one, the primal solution."""

    values: np.ndarray | None
    status: str
    objective: float | None


def _direct_solve(
    mb: ModelBuilder,
    cost: np.ndarray,
    *,
    time_limit_s: float,
    rel_gap: float,
    options: dict | None = None,
) -> DirectResult:
    import highspy

    n = mb.n_vars
    lb, ub = np.zeros(n), np.full(n, np.inf)
    integer = np.zeros(n, dtype=bool)
    for kind, first_local, first_id, count in mb._blocks:
        sl = slice(first_id, first_id + count)
        lb[sl] = mb._lb[kind][first_local : first_local + count]
        ub[sl] = mb._ub[kind][first_local : first_local + count]
        if kind == "bin":
            lb[sl] = np.maximum(lb[sl], 0.0)
            ub[sl] = np.minimum(ub[sl], 1.0)
        integer[sl] = kind != "cont"
    starts: list[int] = [0]
    index: list[int] = []
    value: list[float] = []
    row_lo: list[float] = []
    row_hi: list[float] = []
    for rows in mb.rows.values():
        for ids, coefs, lo, hi in zip(rows.ids, rows.coefs, rows.lo, rows.hi, strict=True):
            index.extend(int(i) for i in ids)
            value.extend(float(c) for c in coefs)
            starts.append(len(index))
            row_lo.append(-np.inf if lo is None else float(lo))
            row_hi.append(np.inf if hi is None else float(hi))
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n, len(row_lo)
    lp.col_cost_ = np.asarray(cost, dtype=float)
    lp.col_lower_, lp.col_upper_ = lb, ub
    lp.row_lower_, lp.row_upper_ = np.array(row_lo), np.array(row_hi)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = np.array(starts, dtype=np.int32)
    lp.a_matrix_.index_ = np.array(index, dtype=np.int32)
    lp.a_matrix_.value_ = np.array(value, dtype=np.float64)
    if integer.any():
        kint, kcont = highspy.HighsVarType.kInteger, highspy.HighsVarType.kContinuous
        lp.integrality_ = [kint if f else kcont for f in integer.tolist()]
    h.passModel(lp)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("mip_rel_gap", float(rel_gap))
    for k, v in (options or {}).items():
        h.setOptionValue(k, v)
    h.run()
    status = h.modelStatusToString(h.getModelStatus())
    info = h.getInfo()
    if int(info.primal_solution_status) != 2:  # 2: feasible
        return DirectResult(None, status, None)
    vals = np.asarray(h.getSolution().col_value, dtype=float)
    return DirectResult(vals, status, float(info.objective_function_value))


def solve_direct(
    mb: ModelBuilder,
    obj_ids: Sequence[int] | np.ndarray,
    obj_coefs: Sequence[float] | np.ndarray,
    *,
    time_limit_s: float,
    rel_gap: float,
    options: dict | None = None,
) -> DirectResult:
    """Minimise ``Σ obj_coefs · x[obj_ids]`` over the builder's variables and rows with
    highspy directly: the rows go to HiGHS as one CSR matrix, no Pyomo model is made
    (call it instead of :meth:`ModelBuilder.finalize`). For small models solved once — the
    node repair: its Pyomo build and hand-off cost ~50× HiGHS' own solve time."""
    cost = np.zeros(mb.n_vars)
    np.add.at(cost, np.asarray(obj_ids, dtype=int), np.asarray(obj_coefs, dtype=float))
    return _direct_solve(mb, cost, time_limit_s=time_limit_s, rel_gap=rel_gap, options=options)
