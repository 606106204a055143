"""carbon-time: GAIA-style waiting (Hanafy et al., ASPLOS 2024), carbon saved per hour of delay.

When a job is first seen, for every start slot ``s`` in ``[0, latest]`` (deadline-feasible) the
policy computes the job's forecast carbon ``C(s)`` (mean forecast over its run time) and picks
the ``s`` that maximises ``(C(0) − C(s)) / (s + duration)``: savings weighed against the
completion time they cost. No positive saving → start now. Temporal only, home site;
``shutdown=1`` adds idle-node shutdown (and keeps a boot's margin before the deadline).
"""

from __future__ import annotations

import numpy as np

from greencpn.whatif.model import Decision, FleetSpec, SimJob, View
from greencpn.whatif.policies.base import (
    all_on,
    boot_margin_slots,
    idle_shutdown,
    place_fifo,
    unmet_by_home,
    window_slots,
)


def carbon_time_start(forecast: np.ndarray, duration_slots: int, latest_start: int) -> int:
    """The start slot maximising ``(C(0) − C(s)) / (s + duration)``; 0 if none saves carbon."""
    last = min(latest_start, len(forecast) - duration_slots)
    if last <= 0:
        return 0
    c = np.concatenate([[0.0], np.cumsum(forecast, dtype=float)])
    means = (c[duration_slots : duration_slots + last + 1] - c[: last + 1]) / duration_slots
    s = np.arange(last + 1)
    score = (means[0] - means) / (s + duration_slots)
    best = int(np.argmax(score))
    return best if score[best] > 0 else 0


class CarbonTime:
    name = "carbon-time"

    def __init__(self, shutdown: bool = False, timeout_min: float = 30.0, spares: int = 0) -> None:
        self.shutdown = bool(shutdown)
        self.timeout_min = float(timeout_min)
        self.spares = int(spares)

    def reset(self, fleet: FleetSpec) -> None:
        pass

    def choose(self, view: View, job: SimJob) -> int:
        margin = boot_margin_slots(view, job) if self.shutdown else 0
        dur, latest = window_slots(view, job, margin)
        if latest == 0:
            return 0
        fc = view.forecast(view.site_zone[job.home_site], dur + latest)
        return carbon_time_start(fc, dur, latest)

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


POLICY = CarbonTime
