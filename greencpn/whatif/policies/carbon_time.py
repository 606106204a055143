"""carbon-time: GAIA-style waiting (Hanafy et al., ASPLOS 2024), carbon saved per hour of delay.

When a job is first seen, for every start slot ``s`` in ``[0, latest]`` (deadline-feasible) the
policy computes the job's forecast carbon ``C(s)`` (mean forecast over its run time) and picks
the ``s`` that maximises ``(C(0) − C(s)) / (s + duration)``: savings weighed against the
completion time they cost. No positive saving → start now. Temporal only, home site;
``shutdown=1`` adds idle-node shutdown (and keeps a boot's margin before the deadline).
"""

from __future__ import annotations

import numpy as np

from greencpn.whatif.policies.base import WaitForWindow


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


class CarbonTime(WaitForWindow):
    name = "carbon-time"

    def start_rule(self, forecast: np.ndarray, duration_slots: int, latest_start: int) -> int:
        return carbon_time_start(forecast, duration_slots, latest_start)


POLICY = CarbonTime
