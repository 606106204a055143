"""lets-wait-awhile: each job to the greenest forecast window before its deadline.

As in Wiesner et al. (Middleware 2021, non-interruptible ad-hoc jobs): when a job is first seen,
the policy takes the forecast issued then, and picks the start slot ``s`` in
``[now, deadline − duration]`` with the lowest mean forecast over the job's run time; the job
starts at that slot (or later, if GPUs are busy then). Temporal shifting only, at the home site.
``shutdown=1`` adds idle-node shutdown (:mod:`shutdown_idle` rules) so that waiting does not
leave powered, idle nodes behind, and then plans starts a boot's time before the latest start.
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


def greenest_start(forecast: np.ndarray, duration_slots: int, latest_start: int) -> int:
    """Start slot in ``0..latest_start`` with the lowest mean of ``forecast`` over the run.

    Ties go to the earliest slot. ``forecast`` must cover ``latest_start + duration_slots``
    slots (shorter forecasts shrink the window).
    """
    n = len(forecast)
    last = min(latest_start, n - duration_slots)
    if last <= 0:
        return 0
    c = np.concatenate([[0.0], np.cumsum(forecast, dtype=float)])
    means = (c[duration_slots : duration_slots + last + 1] - c[: last + 1]) / duration_slots
    return int(np.argmin(means))


class LetsWaitAwhile:
    name = "lets-wait-awhile"

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
        return greenest_start(fc, dur, latest)

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


POLICY = LetsWaitAwhile
