"""The Pyomo → HiGHS hand-off of a :class:`~greencpn.optimize.builder.ModelBuilder` model:
pyomo.contrib.solver's persistent HiGHS interface, loading the builder's variables and rows
from its lists and arrays instead of walking Pyomo expressions, to the same HiGHS columns and
rows as the stock interface (tests/optimize/test_fast_highs.py compares them entry by entry).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyomo.environ as pyo
from pyomo.core.expr.numeric_expr import LinearExpression

from greencpn.optimize.builder import _Rows


def highspy_mod():
    import highspy

    return highspy


class _FamilyTerms:
    """The terms of one builder family's rows, flat: row ``i`` is ``gid[start[i]:start[i+1]]``
    (global variable ids; ``gids`` the same as Python ints) with coefficients ``val``. A row
    naming a variable twice has it once, at its first position, its coefficients summed in row
    order (as the stock interface's standard repn does). ``unseen``: some variable of the
    family had no HiGHS column when the terms were made."""

    __slots__ = ("gid", "gids", "val", "start", "unseen")

    def __init__(self, gid: np.ndarray, val: np.ndarray, start: list[int], unseen: bool):
        self.gid, self.val, self.start, self.unseen = gid, val, start, unseen
        self.gids = gid.tolist()

    @classmethod
    def of(cls, r: _Rows, colof: np.ndarray) -> _FamilyTerms:
        ids = [np.asarray(x, dtype=np.int64).ravel() for x in r.ids]
        vals = [np.asarray(x, dtype=np.double).ravel() for x in r.coefs]
        sizes = np.array([x.size for x in ids], dtype=np.int64)
        if not ids or not sizes.sum():
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, np.zeros(0), [0] * (len(ids) + 1), False)
        gid, val = np.concatenate(ids), np.concatenate(vals)
        row = np.repeat(np.arange(len(ids)), sizes)
        o = np.lexsort((gid, row))
        rep = (row[o][1:] == row[o][:-1]) & (gid[o][1:] == gid[o][:-1])
        for i in np.unique(row[o][1:][rep]).tolist():  # rows naming a variable twice
            uniq, first, inv = np.unique(ids[i], return_index=True, return_inverse=True)
            merged = np.zeros(uniq.size)
            np.add.at(merged, inv, vals[i])  # in row order, from 0.0
            keep = np.argsort(first, kind="stable")
            ids[i], vals[i] = uniq[keep], merged[keep]
            sizes[i] = uniq.size
        if rep.any():
            gid, val = np.concatenate(ids), np.concatenate(vals)
        start = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(sizes, out=start[1:])
        unseen = bool((colof[gid] < 0).any())
        return cls(gid, val, start.tolist(), unseen)


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
            if not variables:  # the stock path calls HiGHS even for none (once per constraint)
                return
            if len(variables) < 64 or not self._add_variables_at_once(variables):
                super().add_variables(variables)

        def _add_variables_at_once(self, variables) -> bool:
            """The stock ``add_variables`` + ``_add_variables`` for many variables whose bounds
            are plain numbers (or None) and whose domain is integer or continuous: the same
            bookkeeping tuples, the same columns, bounds (the domain's interval intersected
            with the variable's) and integrality, computed as arrays instead of one
            ``_process_domain_and_bounds`` call per variable. Anything else (a fixed
            variable, a mutable bound, a variable already added) returns False untouched:
            the stock path then handles or refuses it."""
            refs = self._referenced_variables
            intervals: dict[int, tuple] = {}  # id(domain) -> (domain kept alive, interval)
            recs = []
            for v in variables:
                lb, ub = v._lb, v._ub
                if (
                    id(v) in refs
                    or v.fixed
                    or (lb is not None and type(lb) not in (float, int))
                    or (ub is not None and type(ub) not in (float, int))
                ):
                    return False
                d = v.domain
                got = intervals.get(id(d))
                if got is None:
                    got = intervals[id(d)] = (d, d.get_interval())
                    if got[1][2] not in (0, 1):
                        return False
                iv = got[1]
                recs.append((v, lb, ub, iv, v.value))
            import highspy

            inf = highspy.kHighsInf
            n = len(recs)
            lbs = np.empty(n)
            ubs = np.empty(n)
            vtypes = []
            kint, kcont = highspy.HighsVarType.kInteger, highspy.HighsVarType.kContinuous
            col = self._pyomo_var_to_solver_var_map
            first = len(col)
            for k, (v, lb, ub, iv, val) in enumerate(recs):
                v_id = id(v)
                refs[v_id] = [{}, {}, None]
                self._vars[v_id] = (v, lb, ub, False, iv, val)
                dlo, dhi, step = iv
                lo = -inf if dlo is None else dlo
                hi = inf if dhi is None else dhi
                lbs[k] = lo if lb is None else max(lb, lo)
                ubs[k] = hi if ub is None else min(ub, hi)
                vtypes.append(kint if step == 1 else kcont)
                col[v_id] = first + k
            self._sol = None
            if self._last_results_object is not None:
                self._last_results_object.solution_loader.invalidate()
            self._solver_model.addVars(n, lbs, ubs)
            self._solver_model.changeColsIntegrality(
                n, np.arange(first, first + n), np.array(vtypes)
            )
            return True

        _rows: dict | None = None
        _allv: list | None = None
        _colof: np.ndarray | None = None  # HiGHS column by builder id, per add_block
        _families: dict | None = None  # family name -> _FamilyTerms, per add_block

        def add_block(self, block):
            pre = getattr(block, "_greencpn_var_order", None)
            if pre:
                self.add_variables([v for v in pre if id(v) not in self._referenced_variables])
            self._rows = getattr(block, "_greencpn_rows", None)
            self._allv = getattr(block, "_greencpn_vars", None)
            if self._allv is not None and any(v.fixed for v in self._allv):
                self._rows = None  # fixed variables are parameters: the stock path prices them
            self._colof = self._families = None
            try:
                super().add_block(block)
            finally:
                self._rows = self._allv = None
                self._colof = self._families = None

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
            self._sol = None
            if self._last_results_object is not None:
                self._last_results_object.solution_loader.invalidate()
            n_con = len(self._pyomo_con_to_solver_con_map)
            lbs: list[float] = []
            ubs: list[float] = []
            starts: list[int] = []
            pieces: list[list] = []  # [family, first term, end] of consecutive rows, merged
            nnz = 0
            refs = self._referenced_variables
            for con in cons:
                if con in self._named_expressions:
                    raise ValueError(f"Constraint {con.name} has already been added")
                name = con.parent_component().local_name
                r = rows[name]
                i = con.index()
                fam = self._family(name, r)
                a, b = fam.start[i], fam.start[i + 1]
                self._active_constraints[con] = con.expr
                variables = [allv[j] for j in fam.gids[a:b]]
                if fam.unseen:  # a variable the hand-off has not added yet (not by the builder)
                    self._check_for_new_vars(variables)
                    self._colof = None
                self._named_expressions[con] = []
                self._vars_referenced_by_con[con] = variables
                for v in variables:
                    refs[id(v)][0][con] = None
                starts.append(nnz)
                nnz += b - a
                if pieces and pieces[-1][0] is fam and pieces[-1][2] == a:
                    pieces[-1][2] = b
                else:
                    pieces.append([fam, a, b])
                lo, hi = r.lo[i], r.hi[i]
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
            colof = self._columns_of_builder_vars()
            index = [colof[f.gid[a:b]] for f, a, b in pieces]
            value = [f.val[a:b] for f, a, b in pieces]
            self._solver_model.addRows(
                len(lbs),
                np.array(lbs, dtype=np.double),
                np.array(ubs, dtype=np.double),
                nnz,
                np.array(starts, dtype=np.int64),
                np.concatenate(index) if index else np.zeros(0, dtype=np.int64),
                np.concatenate(value) if value else np.zeros(0, dtype=np.double),
            )

        def _columns_of_builder_vars(self) -> np.ndarray:
            """HiGHS column of every builder variable by global id (-1: not added);
            made once per :meth:`add_block` (again after variables were added)."""
            if self._colof is None:
                col = self._pyomo_var_to_solver_var_map
                allv = self._allv or []
                self._colof = np.fromiter((col.get(id(v), -1) for v in allv), np.int64, len(allv))
            return self._colof

        def _family(self, name: str, r) -> _FamilyTerms:
            """A family's rows as flat arrays, once per :meth:`add_block`."""
            if self._families is None:
                self._families = {}
            got = self._families.get(name)
            if got is None:
                got = self._families[name] = _FamilyTerms.of(r, self._columns_of_builder_vars())
            return got

    return FastHighs
