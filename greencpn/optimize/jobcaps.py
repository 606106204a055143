"""Per-job cap levels (issue #14.3, building block): the level of one placed job.

A job placed at ``start_h`` on a pool runs contiguously; at level ``l`` (class throughput
``θ_l`` relative to the top cap, busy power above idle ``ε_l`` kW per GPU) it needs
``D_l = W / (g θ_l)`` hours and its GPUs draw ``g ε_l`` kW (× PUE at the meter) while it runs.
The idle power of its nodes is drawn anyway (they are on for the placed window), so the level
changes only the busy energy ``E_l = g ε_l D_l × PUE`` and where in time it falls.

:func:`choose_level` takes the level with the least carbon (busy meter energy × the slot's
intensity, slot by slot) among the levels whose slowed run

* still ends by ``end_limit_h`` — the job's deadline, or the end of the window its nodes are
  on for if earlier (no added node-hours), and
* fits the site's power budget: ``g ε_l × PUE`` ≤ the headroom left in every slot it touches.

No feasible level → the fastest level that fits the budget, else the top level (``ok=False``).
Ties go to the higher cap (shorter run). Not yet wired into the plan (see the branch report).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LevelChoice:
    level: int  # index into the levels
    duration_h: float
    energy_kwh: float  # busy meter energy above idle
    carbon_kg: float
    ok: bool  # False: no level met the deadline and the budget


def _slot_shares(start_h: float, dur_h: float, slot_h: float, n_slots: int) -> list[float]:
    """Hours of [start_h, start_h + dur_h) in each slot (the last slot takes any overhang)."""
    out = [0.0] * n_slots
    t, end = start_h, start_h + dur_h
    while t < end - 1e-12:
        s = min(n_slots - 1, int(math.floor(t / slot_h + 1e-12)))
        nxt = end if s == n_slots - 1 else min(end, (s + 1) * slot_h)
        out[s] += nxt - t
        t = nxt
    return out


def choose_level(
    *,
    work_gpu_h: float,
    gpus: int,
    throughput: Sequence[float],
    busy_extra_kw: Sequence[float],
    start_h: float,
    end_limit_h: float,
    intensity_g_per_kwh: Sequence[float],
    slot_h: float,
    pue: float = 1.0,
    headroom_kw: Sequence[float] | None = None,
) -> LevelChoice:
    """The least-carbon level of one job; see the module docstring.

    ``throughput``/``busy_extra_kw`` are per level (the job's class curve); ``intensity`` and
    ``headroom_kw`` (site budget minus everything else, meter kW; None = no budget) per slot.
    """
    n = len(intensity_g_per_kwh)
    options: list[tuple[float, float, LevelChoice]] = []
    fallback: list[tuple[float, LevelChoice]] = []
    for lv, (th, eps) in enumerate(zip(throughput, busy_extra_kw, strict=True)):
        dur = work_gpu_h / (gpus * th)
        kw = gpus * eps * pue
        shares = _slot_shares(start_h, dur, slot_h, n)
        energy = kw * dur
        carbon = sum(kw * h * i for h, i in zip(shares, intensity_g_per_kwh, strict=True)) / 1e3
        fits_budget = headroom_kw is None or all(
            kw <= headroom_kw[s] + 1e-9 for s, h in enumerate(shares) if h > 0
        )
        fits_time = start_h + dur <= end_limit_h + 1e-9
        choice = LevelChoice(lv, dur, energy, carbon, True)
        if fits_budget and fits_time:
            options.append((carbon, dur, choice))
        elif fits_budget:
            fallback.append((dur, LevelChoice(lv, dur, energy, carbon, False)))
    if options:
        return min(options, key=lambda o: (round(o[0], 12), o[1]))[2]
    if fallback:
        return min(fallback, key=lambda o: o[0])[1]
    top = max(range(len(throughput)), key=lambda i: throughput[i])
    dur = work_gpu_h / (gpus * throughput[top])
    kw = gpus * busy_extra_kw[top] * pue
    shares = _slot_shares(start_h, dur, slot_h, n)
    carbon = sum(kw * h * i for h, i in zip(shares, intensity_g_per_kwh, strict=True)) / 1e3
    return LevelChoice(top, dur, kw * dur, carbon, False)
