"""Re-planning terms: the previous plan as an anchor, and min up / min down from history.

:class:`StablePlanModel` is :class:`~greencpn.optimize.milp.PlanModel` plus, when an
:class:`Anchor` is given (all arrays indexed like the inputs: pool ``p``, slot ``t``, group
``k``, site ``s``):

    f[p,t] ≥ n[p,t] − n̂[p,t],   f[p,t] ≥ n̂[p,t] − n[p,t]         node flap vs the previous plan
    min  … + w_flap · Σ_{p,t < t_flap: n̂ known} f[p,t]
           + Σ_{k,s,t} ( w_site · m[k,s] + w_shift · h[k,t] ) · x[k,s,t]

with n̂ the previous plan's nodes on, shifted to this horizon (known for the overlapping slots),
t_flap = ``flap_slots`` (``[controller] node_flap_horizon_h`` in slots; the whole horizon if unset),
m[k,s] the share of group k's work whose jobs the previous plan put at another site than s, and
h[k,t] the mean distance (slots) from t to the previous planned starts of k's jobs. Two
consecutive plans thus only differ where the gain exceeds these weights.

Min up / min down counted from the power history (the first slots of the horizon, where the
MILP's own ``min_up``/``min_down`` rows cannot see nodes switched before the horizon):

    must_on[p,t] ≤ n[p,t] ≤ N_p − must_off[p,t]

``must_on[p,t]`` counts nodes of pool p started less than ``min_up_h`` before slot t's start
(they may not stop yet); ``must_off`` nodes stopped less than ``min_down_h`` before it.
"""

from __future__ import annotations

import functools
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyomo.environ as pyo
from pyomo.core.expr.numeric_expr import LinearExpression

from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.milp import PlanModel
from greencpn.optimize.schedule import NodeAnchor, Schedule


@dataclass
class Anchor:
    prev_nodes_on: np.ndarray | None = None  # [P, T] float, nan = unknown (no previous plan)
    moved_share: np.ndarray | None = None  # [K, S] in [0, 1]
    shift_slots: np.ndarray | None = None  # [K, T] mean |t − previous start slot|
    must_on: np.ndarray | None = None  # [P, T] int
    must_off: np.ndarray | None = None  # [P, T] int
    flap_weight: float = 0.0
    #: the flap term counts only the first this many slots of the horizon (0 = every slot)
    flap_slots: int = 0
    site_weight_per_gpu_h: float = 0.0
    shift_weight_per_gpu_h_slot: float = 0.0
    # the newest plan (any slot, also one made earlier in this slot): what every candidate is
    # scored against and what the kept-placement candidate starts from
    latest: dict[str, Any] | None = None
    latest_nodes_on: np.ndarray | None = None  # [P, T] float, nan = not covered

    def nodes(self) -> NodeAnchor:
        """The node part for :func:`~greencpn.optimize.repair.repair_nodes`."""
        return NodeAnchor(
            must_on=self.must_on,
            must_off=self.must_off,
            prev_nodes_on=self.flap_reference(self.latest_nodes_on),
            flap_weight=self.flap_weight,
        )

    def flap_reference(self, prev: np.ndarray | None) -> np.ndarray | None:
        """``prev`` as the flap term sees it: unknown (nan) from slot ``flap_slots`` on."""
        if prev is None or self.flap_slots <= 0 or self.flap_slots >= prev.shape[1]:
            return prev
        out = prev.copy()
        out[:, self.flap_slots :] = np.nan
        return out


@functools.lru_cache(maxsize=8192)
def _parse(text: str) -> datetime:
    """A plan document's timestamp (memoised: a pure function of the text; a ``datetime`` is
    immutable; every candidate's stability cost reads the newest plan's job starts, and the
    kept placement its releases and deadlines, mostly the same step after step)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def plan_nodes_on(inp: PlanInputs, doc: dict[str, Any]) -> np.ndarray:
    """[P, T] a plan document's nodes on moved to this horizon (nan where it has no slot)."""
    P, T = len(inp.pools), inp.T
    out = np.full((P, T), np.nan)
    starts = {s: i for i, s in enumerate(doc["horizon"]["slot_starts"])}
    by_name = {pp["name"]: pp for pp in doc.get("pools", [])}
    # this horizon's slots in the document's slots (the same for every pool: found once)
    idx = [starts.get(ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")) for ts in inp.slot_starts]
    for p, pool in enumerate(inp.pools):
        pp = by_name.get(pool.name)
        if pp is None:
            continue
        slots = {int(s["slot"]): s for s in pp["slots"]}
        for t, i in enumerate(idx):
            if i is not None and i in slots:
                out[p, t] = min(float(slots[i]["nodes_on"]), pool.nodes)
    return out


def _same_job(job, pj: dict[str, Any]) -> bool:
    """The job as the previous plan knew it (size, work, window, checkpointing)."""
    try:
        return (
            int(pj["gpus"]) == job.gpus
            and abs(float(pj["work_gpu_h"]) - job.work_gpu_h) <= 1e-9
            and _parse(pj["release"]) == job.release.astimezone(UTC).replace(microsecond=0)
            and _parse(pj["deadline"]) == job.deadline.astimezone(UTC).replace(microsecond=0)
            and bool(pj.get("checkpointable")) == job.checkpointable
        )
    except (KeyError, TypeError, ValueError):
        return False


def encode_runs(fine: list[tuple[int, float]]) -> list[dict[str, Any]]:
    """A job's placement steps ``(step, busy fraction)`` as plan.json's ``placement_runs``:
    maximal runs of consecutive steps, every step busy in full except perhaps the last of a
    run (``last_busy_fraction``). Exact: :func:`decode_runs` gives the same steps back."""
    out: list[dict[str, Any]] = []
    for t, f in sorted(fine):
        last = out[-1] if out else None
        if (
            last is not None
            and last["step"] + last["steps"] == t
            and last["last_busy_fraction"] >= 1.0
        ):
            last["steps"] += 1
            last["last_busy_fraction"] = float(f)
        else:
            out.append({"step": int(t), "steps": 1, "last_busy_fraction": float(f)})
    return out


def decode_runs(runs: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """``placement_runs`` back to ``(step, busy fraction)`` (see :func:`encode_runs`)."""
    out: list[tuple[int, float]] = []
    for r in runs:
        s0, n = int(r["step"]), int(r["steps"])
        out += [(s0 + i, 1.0) for i in range(n - 1)]
        out.append((s0 + n - 1, float(r["last_busy_fraction"])))
    return out


def kept_runs(
    inp: PlanInputs, doc: dict[str, Any], k: int = 4, skip: set[str] | None = None
) -> dict[int, Any]:
    """Job index → (pool, fine steps[, busy fractions]) for every job the previous plan ``doc`` placed that is
    unchanged (same size, work, release, deadline) and not yet due to have started: its start
    lies at or after this horizon's start and its pool still exists and is allowed for it.

    Steps are on the placement grid (``k`` per slot) of *this* horizon: a contiguous job keeps
    its start (the run is re-timed to its work by :func:`place_jobs`); a checkpointable one
    keeps its exact placement steps from the plan's ``placement_runs`` when the plan has them
    on the same grid, with their busy fractions (:func:`place_jobs` keeps them while they
    deliver the job's work), else (older plans, the job-level MILP's whole-slot schedule) its
    slots, each from the slot's start for the share of it the job was busy.
    ``skip``: job ids to re-place anyway (e.g. running jobs).
    """
    out: dict[int, Any] = {}
    if not doc or "jobs" not in doc:
        return out
    prev_start = _parse(doc["horizon"]["start"])
    step_h = inp.slot_h / k
    off_h = (prev_start - inp.start).total_seconds() / 3600.0
    if abs(off_h / step_h - round(off_h / step_h)) > 1e-6:
        return out  # grids do not line up (another slot length)
    # the plan's own placement grid: its exact runs are usable when it is this one
    grid_min = doc["horizon"].get("placement_step_minutes")
    exact = grid_min is not None and abs(float(grid_min) / 60.0 - step_h) <= 1e-9
    off_steps = round(off_h / step_h)
    pool_idx = {p.name: i for i, p in enumerate(inp.pools)}
    prev_jobs = {j["id"]: j for j in doc["jobs"]}
    T2_slots = 10 * inp.T  # any run past this is not worth keeping
    for j, job in enumerate(inp.jobs):
        pj = prev_jobs.get(job.id)
        if pj is None or (skip and job.id in skip) or not _same_job(job, pj):
            continue
        if pj.get("pool") is None or pj.get("start") is None or not pj.get("schedule"):
            continue
        p = pool_idx.get(pj["pool"])
        if p is None:
            continue
        pool = inp.pools[p]
        if pool.site not in job.sites or pool.gpus < job.gpus:
            continue
        start_h = (_parse(pj["start"]) - inp.start).total_seconds() / 3600.0
        if start_h < -1e-9:
            continue  # due to have started already, yet still pending: placed afresh
        s0 = round(start_h / step_h)
        steps: list[int] = []
        if job.checkpointable and exact and pj.get("placement_runs"):
            runs = decode_runs(pj["placement_runs"])
            steps = [t + off_steps for t, _ in runs]
            if min(steps) >= 0 and max(steps) < T2_slots * k:
                out[j] = (p, steps, [f for _, f in runs])
            continue
        if job.checkpointable:
            for r in pj["schedule"]:
                t = int(r["slot"]) + round(off_h / inp.slot_h)
                if t < 0 or t >= T2_slots:
                    steps = []
                    break
                n = min(k, max(1, math.ceil(float(r["busy_fraction"]) * k - 1e-6)))
                # the first slot from the job's start step, the others from their start
                first = s0 if t * k <= s0 < (t + 1) * k else t * k
                first = min(first, (t + 1) * k - n)
                steps += [first + i for i in range(n)]
        else:
            steps = list(range(s0, s0 + T2_slots * k))
        if steps:
            out[j] = (p, steps)
    return out


def plan_moves(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """How plan ``new`` differs from plan ``old`` (two plan documents): ``jobs_compared`` jobs
    both place; of them ``jobs_moved`` have another pool or start, ``jobs_moved_not_due`` of
    those were planned by ``old`` to start at or after ``new``'s horizon start (not yet due);
    ``node_changes`` = Σ |nodes on − old nodes on| over the pool-slots both cover."""
    out: dict[str, Any] = {
        "jobs_compared": 0,
        "jobs_moved": 0,
        "jobs_moved_not_due": 0,
        "moved_ids": [],
        "node_changes": 0,
    }
    if not old:
        return out
    start = _parse(new["horizon"]["start"])
    prev = {j["id"]: j for j in old.get("jobs", []) if j.get("pool") and j.get("start")}
    for j in new.get("jobs", []):
        pj = prev.get(j["id"])
        if pj is None or not j.get("pool") or not j.get("start"):
            continue
        out["jobs_compared"] += 1
        if (pj["pool"], pj["start"]) != (j["pool"], j["start"]):
            out["jobs_moved"] += 1
            out["moved_ids"].append(j["id"])
            if _parse(pj["start"]) >= start:
                out["jobs_moved_not_due"] += 1
    old_at = {
        (p["name"], old["horizon"]["slot_starts"][int(s["slot"])]): int(s["nodes_on"])
        for p in old.get("pools", [])
        for s in p["slots"]
    }
    for p in new.get("pools", []):
        for s in p["slots"]:
            n0 = old_at.get((p["name"], new["horizon"]["slot_starts"][int(s["slot"])]))
            if n0 is not None:
                out["node_changes"] += abs(int(s["nodes_on"]) - n0)
    return out


def stability_cost(inp: PlanInputs, anchor: Anchor, sched: Schedule, nodes_on: np.ndarray) -> float:
    """What a candidate schedule pays for moving away from the newest plan (objective units):

        w_flap · Σ_{p,t < t_flap known} |n[p,t] − n̂[p,t]|
        + Σ_j r_j · ( w_site · [site_j ≠ ŝ_j] + w_shift · |start_j − ŝtart_j| / Δ )

    with ``r_j`` the job's required GPU-h in the horizon, over the jobs both plans place. The
    same weights as the MILP's terms; zero for the newest plan itself.
    """
    doc = anchor.latest
    if doc is None:
        return 0.0
    cost = 0.0
    prev_n = anchor.flap_reference(anchor.latest_nodes_on)
    if prev_n is not None and anchor.flap_weight > 0:
        known = np.isfinite(prev_n)
        cost += anchor.flap_weight * float(np.abs(nodes_on[known] - prev_n[known]).sum())
    w_site, w_shift = anchor.site_weight_per_gpu_h, anchor.shift_weight_per_gpu_h_slot
    if w_site <= 0 and w_shift <= 0:
        return cost
    prev_jobs = {j["id"]: j for j in doc.get("jobs", [])}
    # Python numbers once (.tolist() converts exactly), not a NumPy scalar per job
    pool_l, start_l = np.asarray(sched.pool).tolist(), np.asarray(sched.start_h).tolist()
    for j, job in enumerate(inp.jobs):
        pj = prev_jobs.get(job.id)
        p = int(pool_l[j])
        if pj is None or p < 0 or pj.get("site") is None or pj.get("start") is None:
            continue
        w = job.required_gpu_h
        if inp.sites[inp.pools[p].site].name != pj["site"]:
            cost += w_site * w
        t_prev = (_parse(pj["start"]) - inp.start).total_seconds() / 3600.0
        cost += w_shift * w * abs(float(start_l[j]) - t_prev) / inp.slot_h
    return cost


def _warm_highs():
    """pyomo.contrib.solver's HiGHS with a MIP start: ``start`` (column values by Pyomo var
    id) is handed to ``Highs.setSolution`` just before ``run()``; HiGHS completes a partial
    start (the integer columns) itself and reports in its log whether it was feasible."""
    from greencpn.optimize.handoff import fast_highs_class

    class WarmHighs(fast_highs_class()):  # type: ignore[misc]
        start: dict[int, float] | None = None
        start_status: str | None = None

        def _solve(self):
            start, self.start = self.start, None
            self.start_status = None
            if start:
                cols = self._pyomo_var_to_solver_var_map
                pairs = [(cols[i], v) for i, v in start.items() if i in cols]
                if pairs:
                    idx = np.array([c for c, _ in pairs], dtype=np.int32)
                    val = np.array([v for _, v in pairs], dtype=np.float64)
                    st = self._solver_model.setSolution(len(pairs), idx, val)
                    self.start_status = str(getattr(st, "name", st))
                    # the log (captured by pyomo into results.solver_log) says what HiGHS
                    # made of the start
                    self._active_config.solver_options["output_flag"] = True
            return super()._solve()

    return WarmHighs()


# HiGHS: "MIP start solution is feasible: objective value is %.12g" / "... is infeasible:
# objective value is %.12g with violations: ..." (the objective is the first figure)
_MIP_START = re.compile(
    r"MIP start solution is (feasible|infeasible|not feasible)\b"
    r"(?:[^\n]*?objective value is ([-+]?(?:[0-9.]+(?:[eE][-+]?[0-9]+)?|inf)))?",
)


def mip_start_verdict(log_text: str) -> tuple[bool | None, float | None]:
    """HiGHS' verdict on a user-supplied MIP start, from its log: (feasible, start objective);
    ``(None, None)`` where the log says nothing about a start."""
    m = _MIP_START.search(log_text)
    if m is None:
        return None, None
    return m.group(1) == "feasible", float(m.group(2)) if m.group(2) else None


class StablePlanModel(PlanModel):
    """A plan model with the re-planning terms above (no anchor: exactly :class:`PlanModel`).

    With ``warm_start`` (default) and an anchor holding the newest plan, every solve starts
    from that plan moved to this horizon: nodes on per pool and slot (``n``; the slots it does
    not cover repeat its last one), start-ups and stops following from them and the initial
    state (``u``, ``d``), and the cap level (``y``, when the model has level binaries), each
    clipped to its bounds. HiGHS fills in the continuous columns. ``warm_start_info`` says
    what was given and what HiGHS made of it (``feasible``: its log accepted the start).
    """

    def __init__(
        self, inp: PlanInputs, anchor: Anchor | None = None, *, warm_start: bool = True
    ) -> None:
        self.anchor = anchor  # before the build: _add_rows reads it
        self._flap_ids = np.zeros(0, dtype=np.int64)
        super().__init__(inp)
        self.warm_start = warm_start
        self.warm_start_info: dict[str, Any] = {"given": 0}
        t0 = time.perf_counter()
        if anchor is not None:
            self._add_history_bounds(anchor)
            self._add_stability(anchor)
        self.stability_rows_s = time.perf_counter() - t0

    _pending_start: dict[int, float] | None = None

    def _make_solver(self):
        solver = _warm_highs()
        solver.start, self._pending_start = self._pending_start, None
        if not solver.available():
            from greencpn.errors import SolverError

            raise SolverError("HiGHS is not available: pip install highspy")
        return solver

    def start_values(self) -> dict[int, float]:
        """Integer column values from the newest plan (see the class doc), by Pyomo var id."""
        a = self.anchor
        if a is None or a.latest is None or a.latest_nodes_on is None:
            return {}
        inp, V, mb = self.inp, self.V, self.mb
        prev = a.latest_nodes_on
        P, T = len(inp.pools), inp.T
        if not np.isfinite(prev).any():
            return {}
        out: dict[int, float] = {}
        n = np.zeros((P, T))
        for p in range(P):
            row = prev[p]
            last = np.nan
            for t in range(T):
                if np.isfinite(row[t]):
                    last = row[t]
                n[p, t] = last if np.isfinite(last) else inp.pools[p].initial_on
        for p in range(P):
            for t in range(T):
                var = mb.vars[int(V.n[p, t])]
                lo = var.lb if var.lb is not None else 0
                hi = var.ub if var.ub is not None else inp.pools[p].nodes
                n[p, t] = float(min(max(n[p, t], lo), hi))
        before = np.concatenate([np.array([[p.initial_on] for p in inp.pools]), n[:, :-1]], axis=1)
        u = np.maximum(0.0, n - before)
        d = np.maximum(0.0, before - n)
        for arr, ids in ((n, V.n), (u, V.u), (d, V.d)):
            for i, v in zip(ids.ravel().tolist(), arr.ravel().tolist(), strict=True):
                out[id(mb.vars[int(i)])] = float(v)
        if V.y is not None:
            levels = self._latest_levels()
            if levels is not None:
                L = V.y.shape[1]
                for p in range(P):
                    for t in range(T):
                        for lv in range(L):
                            var = mb.vars[int(V.y[p, lv, t])]
                            out[id(var)] = 1.0 if lv == levels[p, t] and (var.ub or 0) > 0 else 0.0
        return out

    def _latest_levels(self) -> np.ndarray | None:
        a, inp = self.anchor, self.inp
        assert a is not None and a.latest is not None
        starts = {s: i for i, s in enumerate(a.latest["horizon"]["slot_starts"])}
        by_name = {pp["name"]: pp for pp in a.latest.get("pools", [])}
        out = np.zeros((len(inp.pools), inp.T), dtype=int)
        for p, pool in enumerate(inp.pools):
            pp = by_name.get(pool.name)
            if pp is None:
                return None
            slots = {int(x["slot"]): x for x in pp["slots"]}
            last = 0
            for t, ts in enumerate(inp.slot_starts):
                i = starts.get(ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
                if i is not None and i in slots:
                    last = int(slots[i].get("cap_level", 0))
                out[p, t] = min(last, len(pool.level_thr) - 1)
        return out

    def solve(self):
        t0 = time.perf_counter()
        start = self.start_values() if self.warm_start else {}
        start_s = time.perf_counter() - t0
        # the first solve makes the solver (PlanModel.solve: no solver yet = load the model)
        if self._solver is not None:
            self._solver.start = start
        else:
            self._pending_start = start
        out = super().solve()
        log_text = ""
        res = getattr(self._solver, "_last_results_object", None)
        if res is not None:
            log_text = getattr(res, "solver_log", "") or ""
        feasible, start_objective = mip_start_verdict(log_text)
        self.warm_start_info = {
            "given": len(start),
            "set_solution": getattr(self._solver, "start_status", None),
            # HiGHS' own verdict on the start, from its log (None: it said nothing)
            "feasible": feasible,
            "start_objective": start_objective,
            "log": [
                ln.strip()
                for ln in log_text.splitlines()
                if "user-supplied" in ln or "MIP start" in ln or "Assessing feasibility" in ln
            ][:4],
        }
        out.start_values_s = start_s
        if not out.warm:  # the extra rows belong to this model's (first) build
            out.stability_rows_s = self.stability_rows_s
        return out

    def _add_history_bounds(self, a: Anchor) -> None:
        V, mb = self.V, self.mb
        for p, pool in enumerate(self.inp.pools):
            for t in range(self.inp.T):
                lo = int(a.must_on[p, t]) if a.must_on is not None else 0
                off = int(a.must_off[p, t]) if a.must_off is not None else 0
                var = mb.vars[int(V.n[p, t])]
                if lo > 0:
                    var.setlb(max(var.lb or 0, min(lo, pool.nodes)))
                if off > 0:
                    ub = max(pool.nodes - off, int(var.lb or 0))
                    var.setub(min(var.ub if var.ub is not None else pool.nodes, ub))

    def _known_flap_cells(self) -> list[tuple[int, int]]:
        a, inp = self.anchor, self.inp
        if a is None or a.prev_nodes_on is None or a.flap_weight <= 0:
            return []
        last = inp.T if a.flap_slots <= 0 else min(a.flap_slots, inp.T)
        return [
            (p, t)
            for p in range(len(inp.pools))
            for t in range(last)
            if np.isfinite(a.prev_nodes_on[p, t])
        ]

    def _add_rows(self) -> None:
        """The flap rows as builder rows (family ``stab_flap``), so the fast hand-off loads
        them: ``n[p,t] − f[i] ≤ n̂[p,t]`` and ``−n[p,t] − f[i] ≤ −n̂[p,t]`` per known cell
        (``f ≥ |n − n̂|``, written as Pyomo's ``f >= n − n̂`` and ``f >= n̂ − n`` reach HiGHS,
        so the HiGHS model is the one the ConstraintList gave)."""
        known = self._known_flap_cells()
        if not known:
            return
        a, V, mb = self.anchor, self.V, self.mb
        assert a is not None and a.prev_nodes_on is not None
        f = mb.new_vars("cont", (len(known),))
        for i, (p, t) in enumerate(known):
            n = int(V.n[p, t])
            prev = float(a.prev_nodes_on[p, t])
            mb.add_row("stab_flap", (n, int(f[i])), (1.0, -1.0), hi=prev)
            mb.add_row("stab_flap", (n, int(f[i])), (-1.0, -1.0), hi=-prev)
        self._flap_ids = f

    def _add_stability(self, a: Anchor) -> None:
        """The stability terms, appended to the objective as one flat linear expression
        (the plan's own terms first, then ``w_flap · f``, then ``(w_site·m + w_shift·h) · x``):
        the hand-off reads it in one pass, not as a nested sum."""
        m, V, mb = self.model, self.V, self.mb
        allv = mb.vars
        coefs: list = []
        vars_: list = []
        if self._flap_ids.size:
            w = float(a.flap_weight)
            for i in self._flap_ids.tolist():
                coefs.append(w)
                vars_.append(allv[int(i)])
        coef = np.zeros(V.x_id.size)
        if a.moved_share is not None and a.site_weight_per_gpu_h > 0 and V.x_id.size:
            coef += a.site_weight_per_gpu_h * a.moved_share[V.x_k, V.x_s]
        if a.shift_slots is not None and a.shift_weight_per_gpu_h_slot > 0 and V.x_id.size:
            coef += a.shift_weight_per_gpu_h_slot * a.shift_slots[V.x_k, V.x_t]
        nz = np.nonzero(coef > 0)[0]
        for i in nz.tolist():
            coefs.append(float(coef[i]))
            vars_.append(allv[int(V.x_id[i])])
        if coefs:
            base = m.objective.expr
            m.objective.deactivate()
            m.objective_stable = pyo.Objective(
                expr=LinearExpression(
                    constant=0,
                    linear_coefs=list(base.linear_coefs) + coefs,
                    linear_vars=list(base.linear_vars) + vars_,
                ),
                sense=pyo.minimize,
            )
