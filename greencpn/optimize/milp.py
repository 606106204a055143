"""Stage 1: build the aggregate MILP, hand it to HiGHS, and read the solution back.

``build_model`` calls the constraint families in a fixed order (PyPSA / oemof-solph style);
each family module carries its math in its docstring. Solving goes through Pyomo's
``pyomo.contrib.solver`` HiGHS interface, which is persistent: :meth:`PlanModel.resolve` after
changing the carbon Params re-solves without a rebuild or a new handoff.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from greencpn.errors import SolverError
from greencpn.optimize import budget, capacity, caps, completion, nodes, objective
from greencpn.optimize.builder import ModelBuilder
from greencpn.optimize.handoff import fast_highs_class
from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.variables import Vars, allocate

log = logging.getLogger(__name__)

#: the order families are built in; each returns early when it does not apply
FAMILIES = (completion, capacity, nodes, caps, budget, objective)


class SolveStatus(StrEnum):
    OPTIMAL = "optimal"  # proven within the configured gap
    TIME_LIMIT = "time_limit"  # stopped by the time limit; the incumbent is used
    INFEASIBLE = "infeasible"
    NO_SOLUTION = "no_solution"  # stopped with no incumbent
    ERROR = "error"


@dataclass
class SolveOutcome:
    status: SolveStatus
    termination: str
    objective: float | None
    bound: float | None
    mip_gap: float | None
    build_s: float
    handoff_s: float
    solve_s: float
    extract_s: float = 0.0
    #: the HiGHS solution loaded into the Pyomo variables (after the solve; read by extract)
    load_s: float = 0.0
    #: a re-plan's extra MILP rows and bounds (stability terms, min up / down from history),
    #: added after the plan's own build (``build_s``); 0 for a plain plan
    stability_rows_s: float = 0.0
    #: a re-plan's MIP start values, read from the newest plan before the solve
    start_values_s: float = 0.0
    incumbent_used_on_time_limit: bool = False
    n_vars: int = 0
    n_constraints: int = 0
    n_job_groups: int = 0
    warm: bool = False

    @property
    def usable(self) -> bool:
        return self.status in (SolveStatus.OPTIMAL, SolveStatus.TIME_LIMIT)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["status"] = self.status.value
        return d


@dataclass
class MilpSolution:
    """Stage-1 decisions as arrays (see :mod:`greencpn.optimize.variables`)."""

    n: np.ndarray  # [P, T] int
    u: np.ndarray
    d: np.ndarray
    level: np.ndarray  # [P, T] chosen level index
    g: np.ndarray  # [P, L, T]
    x: np.ndarray  # [X] work per (k, s, t) of V.x_k / x_s / x_t
    q: np.ndarray  # [K]
    e: np.ndarray  # [S, T]
    v: np.ndarray  # [S, T]


def dominant_levels(inp: PlanInputs, g: np.ndarray) -> np.ndarray:
    """[P, T] one cap level per pool and slot from the MILP's GPU counts per level.

    Where the MILP mixes levels (it does when capacity binds), the slot gets the most
    power-saving level whose throughput still reaches the mix's busy-weighted average, so the
    executed pool delivers the work the MILP planned with the same GPUs. Where a pool is idle,
    its most efficient level (least energy per unit of work, counting the GPU's share of its
    node's idle power).
    """
    P, L, T = g.shape
    level = np.zeros((P, T), dtype=int)
    for p, pool in enumerate(inp.pools):
        nl = len(pool.level_thr)
        thr = pool.level_thr  # sorted by cap, highest first: non-increasing
        per_work = (pool.level_extra_kw + pool.node_idle_kw / pool.gpus_per_node) / thr
        efficient = int(np.argmin(per_work))
        gp = g[p, :nl]
        total = gp.sum(axis=0)
        for t in range(T):
            if total[t] <= 1e-9:
                level[p, t] = efficient
                continue
            avg = float((thr * gp[:, t]).sum() / total[t])
            ok = np.nonzero(thr >= avg - 1e-9)[0]
            level[p, t] = int(ok[-1]) if ok.size else 0
    return level


class PlanModel:
    """A built model with its persistent solver."""

    def __init__(self, inp: PlanInputs) -> None:
        t0 = time.perf_counter()
        self.inp = inp
        self.mb = ModelBuilder()
        self.V: Vars = allocate(self.mb, inp)
        # families that only need ids first, objective last (it needs the Pyomo vars)
        for fam in FAMILIES[:-1]:
            fam.add(self.mb, inp, self.V)
        self._add_rows()
        self.mb.finalize()
        objective.add(self.mb, inp, self.V)
        self.build_s = time.perf_counter() - t0
        self._solver: Any = None  # pyomo.contrib.solver HiGHS, persistent across solves
        self._highs_time_total = 0.0
        self.placement_order: str | None = None  # the job order that won the last placement

    def _add_rows(self) -> None:
        """More builder rows before :meth:`ModelBuilder.finalize` (a subclass's families:
        builder rows reach HiGHS through the fast hand-off, ``fast_highs_class``)."""

    @property
    def model(self):
        return self.mb.m

    def _make_solver(self):
        solver = fast_highs_class()()
        if not solver.available():
            raise SolverError("HiGHS is not available: pip install highspy")
        return solver

    def solve(self) -> SolveOutcome:
        cfg = self.inp.solver
        warm = self._solver is not None
        if self._solver is None:
            self._solver = self._make_solver()
        opts = {
            # measured: feasibility jump overran the time limit and halved speed on L
            "mip_heuristic_run_feasibility_jump": False,
            "output_flag": bool(os.environ.get("GREENCPN_SOLVER_LOG")),
        }
        log_file = os.environ.get("GREENCPN_SOLVER_LOG_FILE")
        if log_file:  # the progress display tails it (greencpn.report.progress); never stdout
            opts["output_flag"] = True
            opts["log_file"] = log_file  # type: ignore[assignment]
            if not os.environ.get("GREENCPN_SOLVER_LOG"):
                opts["log_to_console"] = False
        kwargs = dict(
            time_limit=cfg.time_limit_s,
            rel_gap=cfg.mip_rel_gap,
            load_solutions=False,
            raise_exception_on_nonoptimal_result=False,
            solver_options=opts,
        )
        if cfg.threads:
            kwargs["threads"] = cfg.threads
        if warm:
            kwargs["auto_updates"] = dict(
                check_for_new_or_removed_constraints=False,
                check_for_new_or_removed_vars=False,
                check_for_new_or_removed_params=False,
                check_for_new_objective=False,
                update_constraints=False,
                update_vars=False,
                update_named_expressions=False,
                update_parameters=True,
                update_objective=True,
            )
        t0 = time.perf_counter()
        try:
            res = self._solver.solve(self.model, **kwargs)
        except Exception as exc:  # solver crash: report as a typed outcome
            log.exception("HiGHS failed")
            return SolveOutcome(
                SolveStatus.ERROR,
                repr(exc),
                None,
                None,
                None,
                self.build_s,
                time.perf_counter() - t0,
                0.0,
                warm=warm,
            )
        wall = time.perf_counter() - t0
        # HiGHS reports its run time cumulated over the life of the persistent solver object
        highs_total = float(getattr(res.timing_info, "highs_time", 0.0) or 0.0)
        highs_s = max(0.0, highs_total - self._highs_time_total)
        self._highs_time_total = highs_total
        tc = str(res.termination_condition.name)
        has_sol = str(res.solution_status.name) in ("optimal", "feasible")
        if tc == "convergenceCriteriaSatisfied":
            status = SolveStatus.OPTIMAL
        elif tc == "maxTimeLimit":
            status = SolveStatus.TIME_LIMIT if has_sol else SolveStatus.NO_SOLUTION
        elif tc in ("provenInfeasible", "infeasibleOrUnbounded"):
            status = SolveStatus.INFEASIBLE
        elif has_sol:
            status = SolveStatus.TIME_LIMIT
        else:
            status = SolveStatus.NO_SOLUTION if tc != "error" else SolveStatus.ERROR
        obj = res.incumbent_objective
        bound = res.objective_bound
        gap = None
        if obj is not None and bound is not None:
            gap = abs(obj - bound) / max(abs(obj), 1e-9)
        t_load = time.perf_counter()
        if has_sol:
            fast_load = getattr(self._solver, "load_all_vars", None)
            if fast_load is not None:
                fast_load()
            else:
                res.solution_loader.load_vars()
        load_s = time.perf_counter() - t_load
        if status is SolveStatus.TIME_LIMIT:
            log.warning(
                "HiGHS stopped at the time limit (%.0f s); using the incumbent (gap %s)",
                cfg.time_limit_s,
                f"{gap:.2%}" if gap is not None else "unknown",
            )
        return SolveOutcome(
            status=status,
            termination=tc,
            objective=obj,
            bound=bound,
            mip_gap=gap,
            build_s=0.0 if warm else self.build_s,
            handoff_s=max(0.0, wall - highs_s),
            solve_s=highs_s,
            load_s=load_s,
            incumbent_used_on_time_limit=status is SolveStatus.TIME_LIMIT,
            n_vars=self.mb.n_vars,
            n_constraints=self.mb.n_rows(),
            n_job_groups=len(self.inp.groups),
            warm=warm,
        )

    def resolve(self, inp: PlanInputs) -> SolveOutcome:
        """Re-solve with new carbon intensities (same fleet, jobs and horizon)."""
        if inp.T != self.inp.T or len(inp.sites) != len(self.inp.sites):
            raise ValueError("resolve() needs the same horizon and sites; build a new model")
        self.inp = inp
        objective.set_intensity(self.model, inp)
        return self.solve()

    def set_weights(self, carbon_weight_per_kg: float, cost_weight: float) -> None:
        self.model.w_carbon = carbon_weight_per_kg
        self.model.w_cost = cost_weight

    def extract(self) -> MilpSolution:
        V, mb = self.V, self.mb
        g = mb.value(V.g)
        if V.y is not None:
            level = np.argmax(mb.value(V.y), axis=1)
        else:
            level = dominant_levels(self.inp, g)
        return MilpSolution(
            n=np.rint(mb.value(V.n)).astype(int),
            u=np.rint(mb.value(V.u)).astype(int),
            d=np.rint(mb.value(V.d)).astype(int),
            level=level,
            g=g,
            x=mb.value(V.x_id),
            q=mb.value(V.q),
            e=mb.value(V.e),
            v=mb.value(V.v),
        )
