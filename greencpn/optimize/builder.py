"""A thin layer over Pyomo for building large linear models fast.

Variables live in three flat indexed components (``vi`` integers, ``vb`` binaries, ``vc``
continuous) addressed by one global integer id; families allocate ids in blocks (numpy arrays
shaped like their index, e.g. ``[P, T]``) and append rows as ``(ids, coefs, lo, hi)``. At the end
each family becomes one Pyomo ``Constraint`` whose rule returns a ``LinearExpression`` built
from the grouped lists — measured 1.4–1.8× faster than ``sum()`` over tuple sets.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pyomo.environ as pyo
from pyomo.core.expr.numeric_expr import LinearExpression
from pyomo.core.expr.numeric_expr import MonomialTermExpression as Monomial

INF = float("inf")


@contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a large model is built and handed to
    HiGHS, then restored as it was (also on an exception).

    Building the L model allocates ~10⁶ container objects (Pyomo components, expression
    nodes, the hand-off's bookkeeping dicts); every few hundred allocations the collector
    runs and, once the model is large, its full passes walk all of it again: 40 % of the
    build and hand-off CPU time on L (``bench/bench_handoff.py``). Paused, what is made and
    dropped is still freed by reference counting at once; only cyclic garbage waits for the
    collector, which runs again when the pause ends."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


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
                # a term with coefficient 1 is the variable itself (an argument LinearExpression
                # accepts as such, coefficient 1): no MonomialTermExpression made for the 84 %
                # of the L model's terms that are 1 — 4.5x less CPU for 22,000 such rows with
                # the collector on, barely any with it off (L build 1.03 -> 1.00 s CPU): it
                # mostly spares the collector objects to walk
                expr = LinearExpression(
                    [
                        allv[j] if c == 1 else Monomial((c, allv[j]))
                        for j, c in zip(ids[r], coefs[r], strict=True)
                    ]
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
