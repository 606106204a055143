"""Clocks: time is passed into logic, never read inside it.

All timestamps in greencpn are timezone-aware UTC ``datetime`` objects.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Something that tells the current UTC time."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class SimClock:
    """A clock that only moves when told to (what-if replay, tests)."""

    def __init__(self, start: datetime) -> None:
        self._now = ensure_utc(start, "SimClock start")

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now

    def set(self, when: datetime) -> None:
        self._now = ensure_utc(when, "SimClock.set")


def ensure_utc(value: datetime, what: str = "timestamp") -> datetime:
    """Return ``value`` in UTC; refuse naive datetimes (their zone is unknown)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{what} {value.isoformat()} has no timezone; give it in UTC (e.g. '...Z')"
        )
    return value.astimezone(UTC)


@functools.lru_cache(maxsize=4096)
def utc_text(dt: datetime) -> str:
    """``dt`` as ledger text, ISO 8601 in UTC with a ``Z`` (naive → ValueError).

    Memoised, bounded: a pure function of the instant (equal aware datetimes are the same
    instant and the text is in UTC; an exception is never cached) — a control step writes the
    same few times on hundreds of ledger rows."""
    return ensure_utc(dt).isoformat().replace("+00:00", "Z")
