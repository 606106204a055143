"""Slurm's job-array task specs, read the same way by the queue reader
(greencpn.sources.slurm_queue) and the job actuator (greencpn.actuate.jobs.slurm)."""

from __future__ import annotations


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
