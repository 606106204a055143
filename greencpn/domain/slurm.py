"""Slurm's values read the same way by the queue reader (greencpn.sources.slurm_queue) and
the job actuator (greencpn.actuate.jobs.slurm): job-array task specs, numbers and times of its
JSON (``squeue --json`` / ``sacct --json`` / ``scontrol --json``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def slurm_number(value: Any) -> float | None:
    """A Slurm number: plain, or ``{"set", "infinite", "number"}``; None if unset/infinite."""
    if isinstance(value, Mapping):
        if not value.get("set", True) or value.get("infinite", False):
            return None
        value = value.get("number")
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def slurm_epoch(value: Any) -> datetime | None:
    """A Slurm time (epoch seconds, plain or as :func:`slurm_number`), UTC; None if unset or 0."""
    n = slurm_number(value)
    return None if n is None or n <= 0 else datetime.fromtimestamp(n, UTC)


def array_tasks(text: str) -> list[int]:
    """Task ids of an array spec: ``0-99``, ``[1,5-9:2]``, ``2-5%2`` (the ``%`` limit dropped)
    or sacct's hex bitmap ``0x7`` (tasks 0, 1, 2)."""
    text = text.split("%", 1)[0].strip().strip("[]")
    if text.lower().startswith("0x"):
        bits = int(text, 16)
        return [i for i in range(bits.bit_length()) if bits >> i & 1]
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        rng, _, step = part.partition(":")
        lo, _, hi = rng.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1, int(step or 1)))
    return out
