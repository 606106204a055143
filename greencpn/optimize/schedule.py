"""The placement's grid and its outcome: :class:`Schedule`, the node counts it implies.

Placement (:mod:`greencpn.optimize.placement`) works on ``k = subslots`` steps per MILP slot
and on an extended timeline of ``T2 ≥ T`` slots (:func:`extension_slots`: the longest job at the
slowest cap level may run past the horizon). This module holds what every stage after the MILP
shares about that grid:

* :class:`Schedule` — per job its pool and runs ``(slot, GPUs, busy fraction)``, per pool and
  slot the GPUs held ``alloc``, the busy GPUs ``busy`` and the cap level; built from the fine
  grid by :func:`schedule_from_fine` (held = the most held in any step of the slot, busy = the
  time average);
* :class:`NodeAnchor` — what a re-plan's node schedule must respect;
* the grid arithmetic: :func:`job_steps` (release / deadline on the fine grid),
  :func:`boot_steps` (steps of a slot a node started in it still boots), :func:`work_done`
  (``Σ gpus · thr[level] · slot_h · busy``);
* the node counts a placement implies: :func:`nodes_to_hold` (``⌈held / gpus_per_node⌉`` per
  slot, a slot early for jobs in boot steps) and :func:`node_profile` (that need with min up
  and spares, forward pass) — the estimate placement budgets with before the exact repair
  (:mod:`greencpn.optimize.repair`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from greencpn.optimize.inputs import JobIn, PlanInputs


def node_profile(need: list[int], initial_on: int, min_up: int, lo: int) -> list[int]:
    """Nodes on per slot to cover ``need``: at least ``lo`` (spares), every node started stays
    on ``min_up`` slots, nodes are stopped as soon as nothing needs them (forward pass)."""
    out: list[int] = []
    starts = [0] * len(need)
    prev, held = initial_on, 0  # held = nodes started in the last min_up − 1 slots
    for t, nd in enumerate(need):
        if min_up > 1 and t >= min_up:
            held -= starts[t - min_up]
        n = max(nd, lo, held)
        if n > prev:
            starts[t] = n - prev
            held += n - prev if min_up > 1 else 0
        out.append(n)
        prev = n
    return out


def nodes_to_hold(inp: PlanInputs, p: int, alloc_fine: np.ndarray, k: int) -> np.ndarray:
    """[T] nodes pool ``p`` must have on to hold ``alloc_fine`` ([≥ T·k] GPUs per placement
    step): each slot's most GPUs held, and, for a slot whose first (boot) steps hold GPUs, those
    nodes on in the slot before too — a node started in a slot still boots there."""
    T = inp.T
    pool = inp.pools[p]
    a = alloc_fine[: T * k].reshape(T, k)
    need = np.ceil(a.max(axis=1) / pool.gpus_per_node - 1e-9).astype(int)
    nb = boot_steps(inp, p, k)
    if nb and T > 1:
        at_boot = np.ceil(a[:, :nb].max(axis=1) / pool.gpus_per_node - 1e-9).astype(int)
        need[:-1] = np.maximum(need[:-1], at_boot[1:])
    return need


@dataclass
class Schedule:
    """Job-level schedule on an extended timeline of ``T2 ≥ T`` slots."""

    pool: np.ndarray  # [J] pool index, -1 = not placed (no work required in the horizon)
    runs: list[list[tuple[int, int, float]]]  # per job: (slot, gpus, busy fraction of the slot)
    alloc: np.ndarray  # [P, T2] GPUs held (whole slots)
    busy: np.ndarray  # [P, T2] time-averaged busy GPUs
    level: np.ndarray  # [P, T2] cap level used
    T: int
    start_h: np.ndarray  # [J] start in hours from the horizon start (nan = not placed)
    end_h: np.ndarray  # [J] end in hours from the horizon start (nan = not placed)
    alloc_fine: np.ndarray | None = None  # [P, T2·k] GPUs held per placement step
    subslots: int = 1  # placement steps per slot (k)
    # per job: (placement step, busy fraction of the step) — the exact runs, so a re-plan can
    # rebuild them (plan.json ``placement_runs``); None where the schedule has no fine grid
    fine_runs: list[list[tuple[int, float]]] | None = None
    # cap_mode = "job" (issue #14.3): job → (cap W, throughput relative to full power, busy kW
    # above idle per GPU) of the job's own level; jobs not in it run at their pool's level
    job_cap: dict[int, tuple[float, float, float]] | None = None


@dataclass
class NodeAnchor:
    """What a re-plan's node schedule must respect (arrays [P, T] on this horizon): nodes that
    may not stop / start yet by the power history, and the previous plan's nodes on (nan where
    it does not cover the slot) with the weight per node and slot on/off unlike it."""

    must_on: np.ndarray | None = None
    must_off: np.ndarray | None = None
    prev_nodes_on: np.ndarray | None = None
    flap_weight: float = 0.0


def boot_steps(inp: PlanInputs, p: int, k: int) -> int:
    """Placement steps at the start of a slot during which a node started in it still boots.

    A start-up begins at the slot start and lasts ``boot_time_min`` (at most one slot); a step
    is usable only if the node is up for all of it, so the count is rounded up.
    """
    boot_h = inp.pools[p].boot_frac * inp.slot_h
    if boot_h <= 0:
        return 0
    return min(k, math.ceil(boot_h / (inp.slot_h / k) - 1e-9))


def job_steps(job: JobIn, inp: PlanInputs, k: int) -> tuple[int, int]:
    """(first step, last step ending by the deadline) of a job on the placement grid.

    Exact at placement resolution: a job released at 10:15 may start at 10:15 on a 15-minute
    grid, not at the next whole slot; a deadline at 11:45 lets it run until 11:45.
    """
    step_h = inp.slot_h / k
    r = max(0, math.ceil((job.release - inp.start).total_seconds() / 3600.0 / step_h - 1e-9))
    d = math.floor((job.deadline - inp.start).total_seconds() / 3600.0 / step_h + 1e-9) - 1
    return r, d


def work_done(inp: PlanInputs, sched: Schedule, j: int) -> float:
    """GPU-h of work job ``j``'s runs deliver at the cap levels of the slots they run in."""
    p = int(sched.pool[j])
    if p < 0:
        return 0.0
    thr = inp.pools[p].level_thr
    return float(sum(g * thr[sched.level[p, t]] * inp.slot_h * f for t, g, f in sched.runs[j]))


def unit_energy_cost(inp: PlanInputs, carbon_w: float, cost_w: float, T2: int) -> np.ndarray:
    """Objective units per kWh at each site's meter, per slot, extended past the horizon."""
    out = np.empty((len(inp.sites), T2))
    for s, site in enumerate(inp.sites):
        c = carbon_w * site.planning_intensity / 1000.0 + cost_w * site.price_per_kwh
        out[s, : inp.T] = c
        out[s, inp.T :] = c[-1] if inp.T else 0.0
    return out


def extended(arr: np.ndarray, T2: int) -> np.ndarray:
    """``arr`` [..., T] continued to T2 slots by repeating its last slot."""
    T = arr.shape[-1]
    if T2 == T:
        return arr.copy()
    return np.concatenate([arr, np.repeat(arr[..., -1:], T2 - T, axis=-1)], axis=-1)


def extension_slots(inp: PlanInputs) -> int:
    """How far past the horizon a job may run: its longest run at the slowest level."""
    slow = min(float(p.level_thr.min()) for p in inp.pools)
    longest = max(
        (math.ceil(j.work_gpu_h / (j.gpus * slow * inp.slot_h)) for j in inp.jobs), default=0
    )
    return inp.T + longest + 1


def schedule_from_fine(
    inp: PlanInputs,
    fine_runs: list[list[tuple[int, float]]],
    placed: np.ndarray,
    alloc: np.ndarray,
    busy: np.ndarray,
    lev: np.ndarray,
    k: int,
    T2: int,
) -> Schedule:
    """A :class:`Schedule` from the placement grid: GPUs held per slot = the most held in any
    of its steps, busy = the time average, runs summed per slot. ``lev`` is [P, T2·k]."""
    P, T, J = len(inp.pools), inp.T, len(inp.jobs)
    dt = inp.slot_h / k
    lev_slot = lev.reshape(P, T2, k)[:, :, 0]
    alloc_slot = alloc.reshape(P, T2, k).max(axis=2)  # includes the reserve
    busy_slot = busy.reshape(P, T2, k).mean(axis=2)
    runs: list[list[tuple[int, int, float]]] = [[] for _ in range(J)]
    start_h = np.full(J, np.nan)
    end_h = np.full(J, np.nan)
    for j in range(J):
        fr = fine_runs[j]
        if not fr:
            continue
        start_h[j] = fr[0][0] * dt
        end_h[j] = (fr[-1][0] + fr[-1][1]) * dt
        per_slot: dict[int, float] = {}
        for t, f in fr:
            per_slot[t // k] = per_slot.get(t // k, 0.0) + f / k
        runs[j] = [(t, inp.jobs[j].gpus, v) for t, v in sorted(per_slot.items())]
    return Schedule(
        pool=placed,
        runs=runs,
        alloc=alloc_slot,
        busy=busy_slot,
        level=lev_slot,
        T=T,
        start_h=start_h,
        end_h=end_h,
        alloc_fine=alloc.copy(),
        subslots=k,
        fine_runs=[[(int(t), float(f)) for t, f in fr] for fr in fine_runs],
    )
