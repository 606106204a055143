"""When steps run: slot boundaries plus an offset, as an APScheduler 3.x trigger.

``period_s`` divides a day, so the boundaries are ``k × period_s`` seconds after the Unix epoch
(midnight UTC is one of them); the step fires ``offset_s`` later (e.g. 30 s after each hour,
once new carbon forecasts are out). Like every APScheduler trigger it takes ``now`` as an
argument, so it is tested — and the daemon is simulated over days — without sleeping.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, tzinfo

from apscheduler.triggers.base import BaseTrigger

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SlotTrigger(BaseTrigger):
    """Fire at ``epoch + offset_s + k × period_s`` for whole ``k``."""

    def __init__(self, period_s: float, offset_s: float = 0.0) -> None:
        if period_s <= 0:
            raise ValueError("period_s must be positive")
        self.period_s = float(period_s)
        self.offset_s = float(offset_s) % self.period_s
        self.timezone: tzinfo = UTC

    def _at(self, k: int) -> datetime:
        return _EPOCH + timedelta(seconds=self.offset_s + k * self.period_s)

    def _k(self, when: datetime) -> float:
        return ((when - _EPOCH).total_seconds() - self.offset_s) / self.period_s

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        """After a fire: the next boundary after it (APScheduler then applies misfire grace
        and coalescing to fire times already past). First time: the first boundary at or
        after ``now``."""
        if previous_fire_time is not None:
            return self._at(math.floor(self._k(previous_fire_time) + 1e-9) + 1)
        return self._at(math.ceil(self._k(now) - 1e-9))

    def slot_start(self, fire_time: datetime) -> datetime:
        """The slot boundary a fire time belongs to (fire time minus the offset, floored)."""
        return self._at(math.floor(self._k(fire_time) + 1e-9)) - timedelta(seconds=self.offset_s)

    def __str__(self) -> str:
        return f"slot[period={self.period_s:g}s, offset={self.offset_s:g}s]"

    def __repr__(self) -> str:
        return f"SlotTrigger(period_s={self.period_s!r}, offset_s={self.offset_s!r})"
