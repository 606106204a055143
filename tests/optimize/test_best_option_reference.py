"""placement._best_option against a step-by-step reference written from its docstring.

The vectorised chooser prices every (candidate pool, start) window at once with running sums
and a lifted searchsorted; the reference below walks each window step by step in plain
Python. On random small cases (3 pools, 14 steps, some steps not fitting by GPUs or by the
site's power headroom, a deadline inside the horizon) both must agree on every window's
price (``table=True``) and on the chosen option — for contiguous jobs in the ``plan``,
``finish`` and ``greedy`` modes, and for checkpointable jobs in ``plan`` mode (cheapest steps
per unit of work, taken until the work is done).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from greencpn.optimize.inputs import JobIn
from greencpn.optimize.options import _best_option

T0 = datetime(2026, 1, 5, tzinfo=UTC)
C, F, T = 3, 14, 12  # pools, steps on the extended timeline, steps inside the horizon


def _case(seed: int, *, checkpointable: bool = False):
    rng = np.random.default_rng(seed)
    g = int(rng.integers(1, 3))
    job = JobIn("j", g, 1.0, T0, T0, 0, 10, (0,), checkpointable, 1.0, 1.0)
    gpn = np.array([2.0, 4.0, 2.0])
    cap = rng.choice([1.0, 2.0, 4.0, 4.0], size=(C, F))
    alloc = rng.choice([0.0, 1.0], size=(C, F))
    kw = dict(
        job=job,
        W=float(rng.uniform(0.3, 2.5)),
        r=int(rng.integers(0, 4)),
        D=int(rng.integers(6, T)),
        T=T,
        T2=F,
        tidx=np.arange(F),
        thr=rng.choice([0.6, 0.8, 1.0], size=(C, F)),
        gpu_cost=rng.uniform(0.05, 1.0, size=(C, F)),
        n_free=rng.integers(0, 3, size=(C, F)).astype(float),
        alloc=alloc,
        gpn=gpn,
        cap=cap,
        extra_kw=rng.uniform(0.1, 0.3, size=(C, F)),
        pue=np.array([1.1, 1.3, 1.2]),
        idle_kw=np.array([0.2, 0.4, 0.3]),
        head=rng.uniform(0.0, 3.0, size=(C, F)),
        dt=0.25,
        w_late=3.0,
        score=rng.uniform(50.0, 400.0, size=(C, F)),
    )
    return kw


def _fits(kw, c: int, t: int) -> bool:
    g = kw["job"].gpus
    if t < kw["r"] or kw["alloc"][c, t] + g > kw["cap"][c, t] + 1e-9:
        return False
    free = kw["n_free"][c, t] * kw["gpn"][c] - kw["alloc"][c, t]
    extra_nodes = math.ceil(max(0.0, g - max(free, 0.0)) / kw["gpn"][c] - 1e-9)
    need = kw["pue"][c] * kw["dt"] * (kw["extra_kw"][c, t] * g + extra_nodes * kw["idle_kw"][c])
    return t >= kw["T"] or kw["head"][c, t] - need >= -1e-9


def _step_cost(kw, mode: str, c: int, t: int) -> float:
    g, dt = kw["job"].gpus, kw["dt"]
    if mode == "greedy":
        return float(kw["score"][c, t])
    rate = g * kw["thr"][c, t] * dt
    late = kw["w_late"] * kw["job"].priority * max(0, t - kw["D"]) * dt * rate
    return g * kw["gpu_cost"][c, t] + t * 1e-9 + late


def _reference_window(kw, mode: str, c: int, s: int):
    """(price, end step, fraction of the end step) of the window starting at s, or None."""
    g, W, dt = kw["job"].gpus, kw["W"], kw["dt"]
    if s < kw["r"]:
        return None
    done = cost = 0.0
    for t in range(s, F):
        if not _fits(kw, c, t):
            return None
        rate = g * kw["thr"][c, t] * dt
        if done + rate >= W - 1e-9:
            frac = min(1.0, max(0.0, (W - done) / rate))
            cost += frac * _step_cost(kw, mode, c, t)
            if mode == "greedy":
                if t > kw["D"]:
                    return None
                return round(cost / max(t - s + frac, 1e-12), 9), t, frac
            if mode == "finish":
                return t + frac, t, frac
            return cost, t, frac
        done += rate
        cost += _step_cost(kw, mode, c, t)
    return None


@pytest.mark.parametrize("mode", ["plan", "finish", "greedy"])
@pytest.mark.parametrize("seed", range(25))
def test_every_contiguous_window_is_priced_as_the_step_by_step_reference(mode, seed):
    kw = _case(seed)
    total, end_idx, frac = _best_option(**kw, mode=mode, table=True)
    n_valid = 0
    for c in range(C):
        for s in range(F):
            ref = _reference_window(kw, mode, c, s)
            if ref is None:
                assert math.isinf(total[c, s]), (c, s, total[c, s])
                continue
            n_valid += 1
            price, e, fr = ref
            assert total[c, s] == pytest.approx(price, rel=1e-9, abs=1e-9), (c, s)
            assert int(end_idx[c, s]) == e and frac[c, s] == pytest.approx(fr, abs=1e-9)
    if mode != "greedy":
        best = _best_option(**kw, mode=mode)
        if n_valid == 0:
            assert best is None
        else:
            ci, steps, _ = best
            s0 = int(steps[0])
            assert total[ci, s0] == pytest.approx(float(np.min(total)), abs=1e-12)


def test_the_random_cases_reach_both_valid_and_invalid_windows():
    """The cases above are not vacuous: across the seeds some windows are valid, many are not
    (GPUs, headroom or the release), and some run past the deadline."""
    valid = invalid = late = 0
    for seed in range(25):
        kw = _case(seed)
        for c in range(C):
            for s in range(F):
                ref = _reference_window(kw, "plan", c, s)
                if ref is None:
                    invalid += 1
                else:
                    valid += 1
                    late += ref[1] > kw["D"]
    assert valid > 100 and invalid > 100 and late > 10, (valid, invalid, late)


@pytest.mark.parametrize("seed", range(25))
def test_a_checkpointable_job_takes_its_cheapest_steps_per_unit_of_work(seed):
    """Reference: per pool, the fitting steps sorted by price per unit of work (stable), taken
    until the work is done, the last one in part; the cheapest pool wins."""
    kw = _case(seed, checkpointable=True)
    g, W, dt = kw["job"].gpus, kw["W"], kw["dt"]
    best_ref = None
    for c in range(C):
        steps = [t for t in range(F) if _fits(kw, c, t)]
        steps.sort(key=lambda t: _step_cost(kw, "plan", c, t) / (g * kw["thr"][c, t] * dt))
        done = cost = 0.0
        taken: list[tuple[int, float]] = []
        for t in steps:
            rate = g * kw["thr"][c, t] * dt
            f = min(1.0, (W - done) / rate)
            taken.append((t, f))
            cost += f * _step_cost(kw, "plan", c, t)
            done += f * rate
            if done >= W - 1e-9:
                break
        if done >= W - 1e-9 and (best_ref is None or cost < best_ref[0] - 1e-12):
            best_ref = (cost, c, sorted(taken))
    got = _best_option(**kw, mode="plan")
    if best_ref is None:
        assert got is None
        return
    ci, steps_got, fr_got = got
    assert ci == best_ref[1]
    assert [int(t) for t in steps_got] == [t for t, _ in best_ref[2]]
    assert np.allclose(fr_got, [f for _, f in best_ref[2]], atol=1e-9)


@pytest.mark.parametrize("checkpointable", [False, True])
def test_more_work_than_the_fitting_steps_hold_has_no_option(checkpointable):
    """Steps that do not fit give no work: a job needing more than the fitting steps hold
    gets no option at all (not one priced with a step it cannot use)."""
    kw = _case(3, checkpointable=checkpointable)
    g, dt = kw["job"].gpus, kw["dt"]
    fitting = max(
        sum(g * kw["thr"][c, t] * dt for t in range(F) if _fits(kw, c, t)) for c in range(C)
    )
    everything = max(sum(g * kw["thr"][c, t] * dt for t in range(F)) for c in range(C))
    assert fitting < everything  # some steps do not fit
    kw["W"] = (fitting + everything) / 2
    assert _best_option(**kw, mode="plan") is None


@pytest.mark.parametrize("seed", range(40))
def test_greedy_on_the_steps_up_to_the_deadline_is_bit_for_bit_the_whole_timeline(seed):
    """``greedy`` windows must end by the deadline, so the chooser reads only the steps up to
    it. Given the whole timeline's lift (``span``), the full computation is run instead: every
    window's price, last step and fraction agree exactly, not just to a tolerance."""
    kw = _case(seed)
    assert kw["D"] < F - 1  # the steps after the deadline are cut
    rate = kw["job"].gpus * kw["thr"] * kw["dt"]
    span = float(np.cumsum(rate, axis=1)[:, -1].max() + kw["W"] + 1.0)
    cut = _best_option(**kw, mode="greedy", table=True)
    whole = _best_option(**kw, mode="greedy", table=True, span=span)
    tot_c, tot_w = cut[0], whole[0]
    assert np.array_equal(tot_c, tot_w)  # inf where no window, the same floats elsewhere
    ok = np.isfinite(tot_w)
    assert np.array_equal(cut[1][ok], whole[1][ok]) and np.array_equal(cut[2][ok], whole[2][ok])
    assert np.isinf(tot_w[:, kw["D"] + 1 :]).all()  # no window starts after the deadline
    pick_c = _best_option(**kw, mode="greedy")
    pick_w = _best_option(**kw, mode="greedy", span=span)
    assert (pick_c is None) == (pick_w is None)
    if pick_c is not None:
        assert pick_c[0] == pick_w[0]
        assert np.array_equal(pick_c[1], pick_w[1]) and np.array_equal(pick_c[2], pick_w[2])
