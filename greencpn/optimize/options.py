"""One job's cheapest option: which candidate pool and which placement steps.

:func:`_best_option` is the window chooser every placement pass calls
(:func:`greencpn.optimize.placement.place_jobs`, the improvement moves of
:mod:`greencpn.optimize.improve`). On candidate pools ``c`` and fine steps ``t`` it marks the
steps that fit — ``alloc + g ≤ cap``, ``t ≥ release`` and, inside the horizon, the meter energy
``pue · dt · (extra_kw · g + extra_nodes · idle_kw) ≤ head`` — and scores them:

* ``plan``: busy-GPU cost ``g · gpu_cost[c, t]`` plus lateness ``w_late · priority · late_h``
  per unit of work ``g · thr · dt``; a non-checkpointable job takes the contiguous window with the
  least total, a checkpointable one its cheapest steps until the work is done;
* ``asap`` / ``finish``: the earliest start / the earliest end (contiguous);
* ``greedy``: contiguous, on time, the lowest mean ``score`` (PUE × intensity).

Steps that do not fit cost ``BIG``; sums are kept away from ``BIG`` so their low digits stay
exact (see the comments in the code).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from greencpn.optimize.inputs import JobIn

BIG = 1e18


def _best_option(
    *,
    job: JobIn,
    W: float,
    r: int,
    D: int,
    mode: str,
    T: int,
    T2: int,
    tidx,
    thr,
    gpu_cost,
    n_free,
    alloc,
    gpn,
    cap,
    extra_kw,
    pue,
    idle_kw,
    head,
    dt,
    w_late,
    extra_cost=None,
    score=None,
    table: bool = False,
    span: float | None = None,
):
    """Cheapest (pool, steps, fractions) for one job among candidate pools, or None.

    With ``table`` (contiguous modes only) it returns ``(total, end_idx, frac)`` [C, T2]
    instead: each start's score (inf where not allowed), last step and its busy fraction.

    ``T`` and ``T2`` are in fine steps here (horizon and extended timeline), ``dt`` the step in
    h, ``r`` / ``D`` the job's first step and last step ending by its deadline, ``cap`` [C, T2]
    the GPUs usable per step. Modes: ``plan`` (cheapest by the objective), ``asap`` (earliest
    start), ``greedy`` (contiguous, on time, lowest mean ``score`` = PUE × intensity),
    ``finish`` (contiguous, earliest end).
    """
    g = job.gpus
    if mode == "greedy" and span is None and 0 <= D < T2 - 1:
        return _greedy_prefix(
            job=job, W=W, r=r, D=D, T=T, T2=T2, tidx=tidx, thr=thr, gpu_cost=gpu_cost,
            n_free=n_free, alloc=alloc, gpn=gpn, cap=cap, extra_kw=extra_kw, pue=pue,
            idle_kw=idle_kw, head=head, dt=dt, w_late=w_late, extra_cost=extra_cost,
            score=score, table=table,
        )  # fmt: skip
    rate = g * thr * dt  # [C, T2] work per full step
    fits = (alloc + g <= cap + 1e-9) & (tidx[None, :] >= r)
    free_gpus = n_free * gpn[:, None] - alloc
    extra_nodes = np.ceil(np.maximum(0.0, g - np.maximum(free_gpus, 0.0)) / gpn[:, None] - 1e-9)
    power_need = pue[:, None] * dt * (extra_kw * g + extra_nodes * idle_kw[:, None])
    fits &= (head - power_need >= -1e-9) | (tidx[None, :] >= T)
    late_h = np.maximum(0, tidx - D) * dt  # [T2]
    prio = job.priority
    if mode in ("asap", "finish"):
        slot_cost = np.where(fits, 0.0, BIG) + tidx[None, :] * 1e-6  # earliest wins
        late_cost = np.zeros_like(rate)
    elif mode == "greedy":
        slot_cost = np.where(fits, score, BIG)
        late_cost = np.zeros_like(rate)
    else:
        # gpu_cost already carries each GPU's share of its node's idle power
        slot_cost = np.where(fits, g * gpu_cost, BIG) + tidx[None, :] * 1e-9
        if extra_cost is not None:
            slot_cost = slot_cost + extra_cost
        late_cost = w_late * prio * late_h[None, :] * rate
    if job.checkpointable and mode in ("plan", "asap"):
        # cheapest slots per unit of work, taken until the work is done
        per_work = (slot_cost + late_cost) / np.maximum(rate, 1e-12)
        if mode == "asap":
            per_work = np.where(fits, tidx[None, :].astype(float), BIG)
        order = np.argsort(per_work, axis=1, kind="stable")
        rows = np.arange(order.shape[0])[:, None]
        rate_sorted = np.where(fits[rows, order], rate[rows, order], 0.0)
        cum = np.cumsum(rate_sorted, axis=1)
        enough = cum[:, -1] >= W - 1e-9
        if not enough.any():
            return None
        n_take = np.argmax(cum >= W - 1e-9, axis=1)  # index of last slot taken
        r1 = rows[:, 0]
        prev_cum = np.where(n_take > 0, cum[r1, np.maximum(n_take - 1, 0)], 0.0)
        last_rate = rate_sorted[r1, n_take]
        frac_last = (W - prev_cum) / np.maximum(last_rate, 1e-12)
        if mode == "asap":  # earliest finish; exact ties go to the first candidate (first site)
            last_step = order[r1, n_take]
            totals = np.where(enough, last_step + frac_last, np.inf)
        else:
            # total per candidate: the full slots before the last plus the fraction of the last
            cost_sorted = (slot_cost + late_cost)[rows, order]
            ccum = np.cumsum(np.minimum(cost_sorted, BIG), axis=1)
            prev_cost = np.where(n_take > 0, ccum[r1, np.maximum(n_take - 1, 0)], 0.0)
            last_cost = cost_sorted[r1, n_take]
            totals = np.where(enough, prev_cost + frac_last * last_cost, np.inf)
        c = int(np.argmin(totals))
        n_last = int(n_take[c])
        sl = order[c, : n_last + 1]
        prev = cum[c, n_last - 1] if n_last > 0 else 0.0
        fr = np.ones(n_last + 1)
        fr[-1] = (W - prev) / rate_sorted[c, n_last]
        srt = np.argsort(sl)
        return c, sl[srt], fr[srt]
    # contiguous: for each start s the end slot e(s) where cumulative work reaches W
    nc = rate.shape[0]
    C = np.concatenate([np.zeros((nc, 1)), np.cumsum(rate, axis=1)], axis=1)  # [C, T2+1]
    target = C[:, :-1] + W  # [C, T2] work level to reach when starting at s
    # e = number of full slots needed: first index i with C[i+1] >= target
    # one searchsorted for all rows: lift row i by i·span so the rows stay sorted end to end
    if span is None:
        span = float(C[:, -1].max() + W + 1.0)
    lift = np.arange(nc)[:, None] * span
    found = np.searchsorted((C + lift).ravel(), (target - 1e-9 + lift).ravel(), side="left")
    end_idx = found.reshape(target.shape) - np.arange(nc)[:, None] * (T2 + 1) - 1
    valid = end_idx < T2
    end_idx = np.minimum(end_idx, T2 - 1)
    rows = np.arange(nc)[:, None]
    bad = np.concatenate([np.zeros((nc, 1)), np.cumsum(~fits, axis=1)], axis=1)
    # summed over fitting steps only: a window with a step that does not fit is invalid
    # anyway (n_bad), and a BIG in the running sum would wipe out the low digits of every
    # later window's cost (1e18 + 0.1 − 1e18 = 0: such windows looked free)
    step_cost = slot_cost + late_cost
    cost_cum = np.concatenate(
        [np.zeros((nc, 1)), np.cumsum(np.where(fits, step_cost, 0.0), axis=1)], axis=1
    )
    # tidx is 0..T2-1, so a window starting at s reads column s of the running sums
    starts = tidx[None, :]
    n_bad = bad[rows, end_idx + 1] - bad[:, :-1]
    valid &= (n_bad == 0) & (starts >= r)
    if mode == "greedy":
        valid &= end_idx <= D  # on time, or not this level
    if not valid.any() and not table:
        return None
    # cost of full slots [s, e) plus the fraction of slot e
    full_cost = cost_cum[rows, end_idx] - cost_cum[:, :-1]
    done_before_e = C[rows, end_idx] - C[:, :-1]
    last_rate = rate[rows, end_idx]
    frac = np.clip((W - done_before_e) / np.maximum(last_rate, 1e-12), 0.0, 1.0)
    last_cost = step_cost[rows, end_idx] * frac
    total = np.where(valid, full_cost + last_cost, np.inf)
    if mode == "asap":
        total = np.where(valid, starts.astype(float), np.inf)
    elif mode == "finish":
        total = np.where(valid, end_idx + frac, np.inf)
    elif mode == "greedy":  # mean PUE × intensity over the run, earliest on ties
        length = np.maximum(end_idx - starts + frac, 1e-12)
        total = np.where(valid, np.round((full_cost + last_cost) / length, 9), np.inf)
    if table:
        return total, end_idx, frac
    flat = int(np.argmin(total))
    c, s = divmod(flat, T2)
    e = int(end_idx[c, s])
    slots = np.arange(s, e + 1)
    fr = np.ones(slots.size)
    fr[-1] = frac[c, s]
    if fr[-1] <= 1e-12 and slots.size > 1:
        slots, fr = slots[:-1], fr[:-1]
    return c, slots, fr


def _greedy_prefix(*, T2: int, D: int, W: float, table: bool, **kw):
    """``greedy`` on the steps up to the deadline only: its windows must end by step ``D``, so
    no step after it is part of any. The same figures bit for bit as on the whole timeline:
    every running sum (work, cost, misfits) is a prefix of the whole one (``np.cumsum`` adds
    left to right), and the rows' lift in the one ``searchsorted`` is the whole timeline's
    (``span``). With ``table`` the arrays are widened back to ``T2`` steps (inf: no window)."""
    hi = D + 1
    job, dt = kw["job"], kw["dt"]
    rate_full = job.gpus * kw["thr"] * dt
    span = float(np.cumsum(rate_full, axis=1)[:, -1].max() + W + 1.0)
    cut: dict[str, Any] = {
        key: (val[:, :hi] if isinstance(val, np.ndarray) and val.ndim == 2 else val)
        for key, val in kw.items()
    }
    cut["tidx"] = kw["tidx"][:hi]
    out = _best_option(**cut, T2=hi, D=D, W=W, mode="greedy", table=table, span=span)
    if not table:
        return out
    tot, e_i, fr = out
    nc = tot.shape[0]
    tot_f = np.full((nc, T2), np.inf)
    e_f = np.zeros((nc, T2), dtype=e_i.dtype)
    fr_f = np.zeros((nc, T2))
    tot_f[:, :hi], e_f[:, :hi], fr_f[:, :hi] = tot, e_i, fr
    return tot_f, e_f, fr_f
