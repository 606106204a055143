"""Which slot of a plan to apply: read the plan file, pick the slot, warn about a stale one.

The plan file is validated by :mod:`greencpn.actuate.plan_file` (schema, then against the
config); this module names the slot ``apply`` acts on (:class:`SlotRef`) from ``--slot``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from greencpn.actuate.plan_file import load_plan_file
from greencpn.clock import Clock
from greencpn.errors import ConfigError

PLAN_SCHEMA_PREFIX = "greencpn.plan/1"


def load_plan(path: str | Path) -> dict[str, Any]:
    """Read a ``plan.json`` and validate it against its schema (:mod:`.plan_file`)."""
    return load_plan_file(path)


@dataclass(frozen=True)
class SlotRef:
    index: int
    start: datetime
    end: datetime


def other_slot_warning(plan: dict[str, Any], ref: SlotRef, now: datetime) -> str | None:
    """A warning when slot ``ref`` is not the slot that holds ``now`` (``None`` if it is)."""
    if ref.start <= now < ref.end:
        return None
    hz = plan["horizon"]
    step = timedelta(minutes=int(hz["slot_minutes"]))
    starts = [_parse_time(s) for s in hz["slot_starts"]]
    current = next((i for i, s in enumerate(starts) if s <= now < s + step), None)
    where = (
        f"current is slot {current}"
        if current is not None
        else f"outside the plan's horizon {starts[0]:%Y-%m-%d %H:%MZ} – "
        f"{starts[-1] + step:%Y-%m-%d %H:%MZ}"
    )

    def span(d: timedelta) -> str:
        h = d.total_seconds() / 3600
        return f"{h:.1f} h" if h < 48 else f"{h / 24:.0f} days"

    if now >= ref.end:
        when = f"it ended {span(now - ref.end)} ago"
    else:
        when = f"it starts in {span(ref.start - now)}"
    return (
        f"slot {ref.index} [{ref.start:%Y-%m-%d %H:%M}Z, {ref.end:%H:%M}Z) is not the current "
        f"slot (now {now:%Y-%m-%d %H:%M}Z, {where}; {when})"
    )


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def resolve_slot(
    plan: dict[str, Any], slot: str | int, clock: Clock, source: str | None = None
) -> SlotRef:
    """``slot`` is an index or ``"now"`` (the slot whose interval holds ``clock.now()``)."""
    hz = plan["horizon"]
    starts = [_parse_time(s) for s in hz["slot_starts"]]
    step = timedelta(minutes=int(hz["slot_minutes"]))
    if isinstance(slot, str) and slot.strip().lower() == "now":
        now = clock.now()
        for i, s in enumerate(starts):
            if s <= now < s + step:
                return SlotRef(i, s, s + step)
        first = starts[0].isoformat() if starts else "?"
        last = (starts[-1] + step).isoformat() if starts else "?"
        raise ConfigError(
            f"now ({now.isoformat()}) is outside the plan's horizon {first} – {last}",
            source=source,
            field="--slot",
            fix="make a fresh plan or pass --slot N",
        )
    try:
        idx = int(slot)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{slot!r} is not a slot",
            source=source,
            field="--slot",
            fix="pass --slot now or a slot index",
        ) from None
    if not 0 <= idx < len(starts):
        raise ConfigError(
            f"slot {idx} is outside 0..{len(starts) - 1}",
            source=source,
            field="--slot",
            fix="pass a slot index inside the plan's horizon",
        )
    return SlotRef(idx, starts[idx], starts[idx] + step)
