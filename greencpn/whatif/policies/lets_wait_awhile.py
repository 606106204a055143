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

from greencpn.whatif.policies.base import WaitForWindow


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


class LetsWaitAwhile(WaitForWindow):
    name = "lets-wait-awhile"

    def start_rule(self, forecast: np.ndarray, duration_slots: int, latest_start: int) -> int:
        return greenest_start(forecast, duration_slots, latest_start)


POLICY = LetsWaitAwhile
