"""Building blocks of every config model: strict pydantic base, number types, UTC parsing
and per-slot helpers."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    # allow_inf_nan=False: TOML's inf/nan (and "inf" in a jobs CSV) are refused in every float
    # field — they used to give NaN plans, Infinity tokens in plan.json and OverflowErrors
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _parse_utc(value: Any, what: str = "timestamp") -> datetime:
    """Parse an ISO-8601 timestamp that carries its zone; convert it to UTC.

    Naive timestamps are refused: their zone is unknown and guessing shifts the plan.
    """
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(
                f"{what} {value!r} is not an ISO-8601 timestamp (use e.g. 2026-03-02T00:00:00Z)"
            ) from exc
    else:
        raise ValueError(f"{what} must be an ISO-8601 timestamp string, got {value!r}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(
            f"{what} {value!s} has no timezone; write it in UTC with a 'Z' suffix "
            "(e.g. 2026-03-02T00:00:00Z) or with an explicit offset such as +01:00"
        )
    from datetime import UTC

    return dt.astimezone(UTC)


def slot_times(start: datetime, slots: int, slot_minutes: int) -> list[datetime]:
    step = timedelta(minutes=slot_minutes)
    return [start + i * step for i in range(slots)]


def per_slot(
    value: float | list[float] | None, slots: int, default: float = math.inf
) -> list[float]:
    if value is None:
        return [default] * slots
    if isinstance(value, list):
        return [float(v) for v in value]
    return [float(value)] * slots
