"""The policy plug-in interface and the small helpers the built-in policies share.

A policy is one module in this package that defines ``POLICY``: a class with a ``name`` and a
``decide(view) -> Decision`` method (:class:`Policy`). Its constructor's keyword arguments are
its parameters, given on the command line as ``name:key=value,key=value`` (e.g.
``shutdown-idle:timeout_min=30,spares=2``). ``reset(fleet)`` is called once before a replay.
Policies only see a :class:`~greencpn.whatif.model.View`: the queue, the fleet state and
forecasts issued now — never the actual intensity of the future (unless the replay gives them
a perfect forecast, ``perfect=1``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import numpy as np

from greencpn.whatif.model import Decision, FleetSpec, PoolView, SimJob, View


@runtime_checkable
class Policy(Protocol):
    name: str

    def reset(self, fleet: FleetSpec) -> None: ...

    def decide(self, view: View) -> Decision: ...


def home_pools(view: View, job: SimJob) -> list[str]:
    """Pools of the job's home site, most free GPUs first."""
    pools = [p for p in view.pools.values() if p.site == job.home_site]
    return [p.name for p in sorted(pools, key=lambda p: (-p.free_gpus, p.name))]


def place_fifo(
    view: View, jobs: Iterable[SimJob], decision: Decision, *, home_only: bool = True
) -> list[SimJob]:
    """Start jobs in order where GPUs are free now (home site, or any allowed site).

    Returns:
        The jobs that did not fit (they wait).
    """
    free = {name: p.free_gpus for name, p in view.pools.items()}
    left = []
    for job in jobs:
        if home_only:
            cands = home_pools(view, job)
        else:
            cands = sorted(
                (p.name for p in view.pools.values() if p.site in job.sites),
                key=lambda n: -free[n],
            )
        for name in cands:
            if free[name] >= job.gpus:
                decision.starts.append((job.id, name))
                free[name] -= job.gpus
                break
        else:
            left.append(job)
    return left


def all_on(view: View, decision: Decision) -> None:
    """Wake every node that is off (carbon-agnostic fleets keep everything powered)."""
    for name, p in view.pools.items():
        if p.off:
            decision.power_on[name] = p.off


def idle_shutdown(
    view: View,
    decision: Decision,
    unmet_gpus: dict[str, int],
    *,
    timeout_min: float,
    spares: int,
) -> None:
    """Slurm power-save style node management.

    Idle nodes (on, nothing running) for at least ``timeout_min`` are powered off, keeping
    ``max(spares, pool.spares)`` idle nodes on; when jobs wait for GPUs a pool does not have
    free (``unmet_gpus``, beyond those already booting), enough nodes are woken.
    """
    for name, p in view.pools.items():
        keep = max(spares, p.spares)
        need = max(0, unmet_gpus.get(name, 0) - p.booting_gpus)
        wake = min(p.off, math.ceil(need / p.gpus_per_node)) if need else 0
        idle = sorted(p.idle_nodes, key=lambda x: (x[1], x[0]))
        spare_short = max(0, keep - len(idle) - p.booting)
        wake = min(p.off, max(wake, spare_short))
        if wake:
            decision.power_on[name] = wake
        if need == 0 and len(idle) > keep:
            due = [
                n
                for n, since in idle
                if (view.now - since).total_seconds() >= timeout_min * 60.0 - 1e-6
            ]
            n_off = min(len(due), len(idle) - keep)
            if n_off > 0:
                decision.power_off[name] = due[:n_off]


def unmet_by_home(view: View, jobs: Iterable[SimJob]) -> dict[str, int]:
    """GPUs that waiting jobs still need, charged to the home pool with most GPUs."""
    out: dict[str, int] = {}
    for job in jobs:
        pools = [p for p in view.pools.values() if p.site == job.home_site]
        if not pools:
            continue
        best: PoolView = max(pools, key=lambda p: (p.nodes * p.gpus_per_node, p.name))
        out[best.name] = out.get(best.name, 0) + job.gpus
    return out


def window_slots(view: View, job: SimJob, margin_slots: int = 0) -> tuple[int, int]:
    """(slots of run time at full power, last start slot from now that meets the deadline,
    ``margin_slots`` earlier — e.g. the slots a node needs to boot when nodes sleep)."""
    step_h = view.step.total_seconds() / 3600.0
    dur = max(1, math.ceil(job.duration_h / step_h - 1e-9))
    left_h = (job.deadline - view.now).total_seconds() / 3600.0
    latest = math.floor(left_h / step_h + 1e-9) - dur - margin_slots
    return dur, max(0, latest)


def boot_margin_slots(view: View, job: SimJob) -> int:
    """Slots lost when a job's home pool must first boot a node: a node woken at a slot start
    is usable from the first slot start after its boot (0 for an instant boot)."""
    step_min = view.step.total_seconds() / 60.0
    boots = [p.boot_time_min for p in view.pools.values() if p.site == job.home_site]
    return max((math.ceil(b / step_min - 1e-9) for b in boots), default=0)


class WaitForWindow:
    """Each job, when first seen, gets a start slot from :meth:`start_rule` on the forecast issued
    then (its home site's zone, up to its latest start); it starts at that slot or later if GPUs
    are busy. ``shutdown=1`` adds idle-node shutdown and plans a boot's time before the latest
    start. Subclasses give ``name`` and ``start_rule`` (lets-wait-awhile, carbon-time)."""

    name = ""

    def __init__(self, shutdown: bool = False, timeout_min: float = 30.0, spares: int = 0) -> None:
        self.shutdown = bool(shutdown)
        self.timeout_min = float(timeout_min)
        self.spares = int(spares)

    def start_rule(self, forecast: np.ndarray, duration_slots: int, latest_start: int) -> int:
        raise NotImplementedError

    def reset(self, fleet: FleetSpec) -> None:
        pass

    def choose(self, view: View, job: SimJob) -> int:
        margin = boot_margin_slots(view, job) if self.shutdown else 0
        dur, latest = window_slots(view, job, margin)
        if latest == 0:
            return 0
        fc = view.forecast(view.site_zone[job.home_site], dur + latest)
        return self.start_rule(fc, dur, latest)

    def decide(self, view: View) -> Decision:
        d = Decision()
        due = []
        for job in view.waiting:
            if job.planned_start is None:
                job.planned_start = view.now + view.step * self.choose(view, job)
            if job.planned_start <= view.now:
                due.append(job)
        left = place_fifo(view, sorted(due, key=lambda j: (j.planned_start, j.id)), d)
        if self.shutdown:
            idle_shutdown(
                view, d, unmet_by_home(view, left), timeout_min=self.timeout_min, spares=self.spares
            )
        else:
            all_on(view, d)
        return d
