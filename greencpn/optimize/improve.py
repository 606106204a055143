"""Stage 2b: improve a placed schedule by re-inserting jobs (node packing).

A placement decides jobs one after another, each priced against what is already placed: the
first job on a node pays (a share of) its idle power, later ones could have filled it. This
pass takes a finished, executable schedule and moves its jobs: each is taken out and put
back at its cheapest (pool, cap level, start) given all the others, priced by what it really
adds to the objective —

* busy energy at the level's extra power, at the slot's carbon and price (PUE included);
* the nodes it makes necessary: a pool's nodes on are estimated per slot as what the held GPUs
  need, kept on for min up after each start (:func:`~greencpn.optimize.schedule.node_profile`), plus boot energy per start;
  GPUs on nodes that are on anyway cost nothing, so jobs pack onto them;
* lateness as the placement charges it.

Two neighbourhoods, both judged by that same estimate (a move is kept only when the estimate
of the whole schedule falls):

* **one job** (:func:`improve_schedule`): each job alone is re-inserted at its cheapest place;
* **node spans** (:func:`empty_node_spans`): every job holding GPUs of a pool during a span
  in which that pool keeps nodes on beyond its spares is taken out at once, then all are put
  back one after another (several orders tried). Several jobs move together, so a node-span
  can be emptied — and stay off — where no single job's move frees it (each alone leaves the
  node on for the others), and the span's pool-slots lose their cap level while empty, so the
  jobs put back may run there at another one.

One cap level per pool and slot stays true: a job may take a level in a slot only where no
other job runs at another one. GPUs, the boot-time capacity of slot 0 and the site budgets
(with the estimated nodes) are respected as in :func:`~greencpn.optimize.placement.place_jobs`.
The result is an ordinary :class:`~greencpn.optimize.schedule.Schedule`; the caller repairs
its nodes exactly (:func:`~greencpn.optimize.repair.repair_nodes`) and keeps it only if the
evaluation is better.

The state every move works on — a schedule with its cost estimate — is
:class:`~greencpn.optimize.packer.Packer`; this module holds the moves.
"""

from __future__ import annotations

import time

import numpy as np

from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.packer import Packer
from greencpn.optimize.schedule import Schedule


def _sweeps(pk: Packer, sweeps: int, deadline: float, min_gain: float) -> tuple[int, int, str]:
    """One-job re-insertion sweeps; returns (sweeps done, moves, status)."""
    inp = pk.inp
    order = sorted(
        pk.movable(), key=lambda i: (-inp.jobs[i].gpus * inp.jobs[i].work_gpu_h, inp.jobs[i].id)
    )
    moves = 0
    est0 = pk.estimate()
    done = 0
    status = "done"
    for _sweep in range(sweeps):
        gain = 0.0
        for j in order:
            if time.perf_counter() > deadline:
                status = "time limit"
                break
            if pk.work[j] <= 1e-12:
                continue
            p0, rr0 = int(pk.pool_of[j]), pk.runs[j]
            kept = pk.pool_state(p0, j)
            old_total = pk.take_out(j)
            best = pk.cheapest(j, old_total)
            if best is not None and best[0] < old_total - 1e-9 * max(1.0, abs(old_total)):
                total, p1, rr1, lv = best
                pk.put(j, p1, rr1, lv)
                gain += old_total - total
                moves += 1
            else:  # put it back as it was
                pk.put_back(j, p0, rr0, kept)
        done += 1
        if status != "done" or gain < min_gain * max(1.0, est0):
            break
    return done, moves, status


def improve_schedule(
    inp: PlanInputs,
    sched: Schedule,
    *,
    carbon_w: float | None = None,
    cost_w: float | None = None,
    sweeps: int = 3,
    time_limit_s: float = 20.0,
    min_gain: float = 1e-4,
    group_moves_s: float = 0.0,
    span_moves: bool = True,
    group_size: int = 8,
    max_span_jobs: int = 12,
) -> tuple[Schedule, dict]:
    """Re-insert every job at its cheapest place given the others, ``sweeps`` times (or until
    a sweep gains less than ``min_gain`` of the estimate, or ``time_limit_s``); then, for
    ``group_moves_s`` more, the multi-job moves (node spans of at most ``max_span_jobs`` jobs,
    unless ``span_moves`` is off, then related jobs ``group_size`` at a time; 80 % of that
    time) and one last sweep when they moved anything (the rest).

    Returns the improved schedule and what the pass did (moves, estimate before / after, s).
    The input schedule needs ``fine_runs`` (every schedule :func:`place_jobs` returns has it).
    """
    t_start = time.perf_counter()
    pk = Packer(inp, sched, carbon_w, cost_w)
    e0 = pk.estimate()
    done, moves, status = _sweeps(pk, sweeps, t_start + time_limit_s, min_gain)
    info: dict = {"status": status, "sweeps": done, "moves": moves}
    span_t = span_k = rel_t = rel_k = 0
    if group_moves_s > 0:
        t_g = time.perf_counter()
        end = t_g + group_moves_s
        moves_end = t_g + 0.8 * group_moves_s  # the rest for a last sweep
        if span_moves:
            span_t, span_k, _g, _st = _span_moves(pk, moves_end, max_span_jobs, rounds=3)
        rel_t, rel_k, _g, st = _related_moves(pk, moves_end, group_size)
        if span_k or rel_k:
            d2, m2, _st2 = _sweeps(pk, 1, end, min_gain)
            info["sweeps"] += d2
            info["moves"] += m2
        info["group_status"] = st
        info["group_s"] = round(time.perf_counter() - t_g, 3)
    info.update(
        spans_tried=span_t,
        spans_emptied=span_k,
        related_tried=rel_t,
        related_kept=rel_k,
        estimate_before=round(e0, 6),
        estimate_after=round(pk.estimate(), 6),
        s=round(time.perf_counter() - t_start, 3),
    )
    return pk.schedule(), info


def _spans(pk: Packer, p: int) -> list[tuple[int, int]]:
    """Maximal runs of slots [a, b) in which pool p keeps nodes on beyond its spares."""
    over = pk.prof_n[p, : pk.T] > pk.pools[p].spares
    out, a = [], None
    for t, o in enumerate(over.tolist() + [False]):
        if o and a is None:
            a = t
        elif not o and a is not None:
            out.append((a, t))
            a = None
    return out


def _orders(pk: Packer, jobs: list[int]) -> list[list[int]]:
    jb = pk.inp.jobs

    def slack(i: int) -> float:
        lo, hi = pk.window[i]
        return (hi - lo) * pk.dt - jb[i].work_gpu_h / jb[i].gpus

    largest = sorted(jobs, key=lambda i: (-jb[i].gpus * jb[i].work_gpu_h, jb[i].id))
    tight = sorted(jobs, key=lambda i: (slack(i), -jb[i].gpus * jb[i].work_gpu_h, jb[i].id))
    out = [largest]
    for o in (tight, largest[::-1]):
        if o not in out:
            out.append(o)
    return out


def _span_moves(
    pk: Packer, deadline: float, max_jobs: int, rounds: int
) -> tuple[int, int, float, str]:
    """Empty node-spans: all jobs of a pool-span with nodes beyond the spares out at once, put
    back one by one (several orders), kept when the estimate falls. Returns (tried, kept,
    gain, status)."""
    tried = kept = 0
    gain = 0.0
    status = "done"
    jobs_on: list[set[int]] = [set() for _ in range(pk.P)]
    for j in pk.movable():
        jobs_on[int(pk.pool_of[j])].add(j)
    k = pk.k
    for _round in range(rounds):
        kept_round = 0
        # dearest spans first: what the pool's nodes beyond its spares cost there
        spans = []
        for p in range(pk.P):
            sp = pk.pools[p].spares
            for a, b in _spans(pk, p):
                c = float(((pk.prof_n[p, a:b] - sp) * pk.node_c[p, a:b]).sum())
                spans.append((-c, p, a, b))
        spans.sort()
        seen: set[tuple] = set()
        for _c, p, a, b in spans:
            if time.perf_counter() > deadline:
                return tried, kept, gain, "time limit"
            members = sorted(j for j in jobs_on[p] if any(a <= t // k < b for t, _ in pk.runs[j]))
            if not members or len(members) > max_jobs or pk.prof_n[p, a] <= pk.pools[p].spares:
                continue
            key = (p, tuple(members))
            if key in seen:
                continue
            seen.add(key)
            tried += 1
            g = _ruin_recreate(pk, members)
            if g is not None:
                for j in members:
                    jobs_on[p].discard(j)
                    jobs_on[int(pk.pool_of[j])].add(j)
                gain += g
                kept += 1
                kept_round += 1
        if kept_round == 0:
            break
    return tried, kept, gain, status


def _ruin_recreate(pk: Packer, members: list[int]) -> float | None:
    """Take ``members`` out together and put them back one by one (several orders); keep the
    first order that lowers the estimate. Returns the gain, or None (all undone)."""
    e0 = pk.estimate()
    snap = pk.snapshot(members)
    for order in _orders(pk, members):
        for j in members:
            pk.take_out(j)
        ok = True
        for j in order:
            best = pk.cheapest(j)
            if best is None:
                ok = False
                break
            pk.put(j, best[1], best[2], best[3])
        e1 = pk.estimate()
        if ok and e1 < e0 - 1e-9 * max(1.0, abs(e0)):
            return e0 - e1
        pk.restore(snap)
        snap = pk.snapshot(members)
    return None


def _related_moves(
    pk: Packer, deadline: float, size: int, seed: int = 0
) -> tuple[int, int, float, str]:
    """Related-job moves: a seed job and the ``size`` − 1 jobs of its site that overlap it in
    time most, out together and put back (:func:`_ruin_recreate`). Seeds are taken in a
    shuffled order (fixed ``seed``: the same schedule gives the same result); stops after a
    pass over every seed keeps no move. Returns (tried, kept, gain, status)."""
    rng = np.random.default_rng(seed)
    jobs = pk.movable()
    tried = kept = 0
    gain = 0.0
    k = pk.k
    while True:
        kept_pass = 0
        for j0 in rng.permutation(jobs).tolist():
            if time.perf_counter() > deadline:
                return tried, kept, gain, "time limit"
            s0 = pk.site_of[pk.pool_of[j0]]
            t0 = {t // k for t, _ in pk.runs[j0]}
            lo0, hi0 = pk.window[j0]
            near = []
            for j in jobs:
                if j == j0 or pk.site_of[pk.pool_of[j]] != s0:
                    continue
                lo, hi = pk.window[j]
                ov = min(hi, hi0) - max(lo, lo0)
                if ov <= 0:
                    continue
                same = len(t0 & {t // k for t, _ in pk.runs[j]})
                near.append((-same, -ov, j))
            near.sort()
            members = [j0] + [j for *_x, j in near[: size - 1]]
            tried += 1
            g = _ruin_recreate(pk, members)
            if g is not None:
                kept += 1
                kept_pass += 1
                gain += g
        if kept_pass == 0:
            return tried, kept, gain, "done"
