"""The report baselines priced in a worker process (greencpn/optimize/baseline_worker.py): the
same figures and schedules as in-process — on fleets whose FIFO placement needs its retry pass
and its node repair — and every fault priced in-process, logged, and said in the plan."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs
from greencpn.optimize import plan as planmod
from greencpn.optimize.baseline_worker import (
    AUTO_MIN_JOBS,
    BaselineWorker,
    collect,
    wanted,
    worker_set,
)
from greencpn.optimize.baselines import price_baselines
from tests.optimize.conftest import START
from tests.optimize.test_budget_nodes import boot_fleet, min_up_fleet
from tests.optimize.test_plan_exact import SITE
from tests.optimize.test_plan_tiny import job, pool


def retry_fleet(fleet):
    """One node with one GPU. FIFO by release puts ``a`` (3 GPU-h, released 00:00, due 10:00)
    first, so ``b`` (1 GPU-h, released 00:00 too but ordered after a by id, due 02:00) runs
    03:00–04:00: 2 h late. The retry pass places the late job first: b 00:00–01:00, a
    01:00–04:00, both on time — the pass the baseline keeps."""
    return fleet(
        carbon={"Z": [100.0] * 12},
        sites=SITE,
        pools=pool("p"),
        jobs=[
            job("a", work=3.0, release=0, deadline=10),
            job("b", work=1.0, release=0, deadline=2),
        ],
    )


FLEETS = [retry_fleet, min_up_fleet, boot_fleet]


@pytest.fixture(scope="module")
def worker():
    w = BaselineWorker()
    yield w
    w.close()


def inputs(path):
    return make_inputs(load_config(path), SimClock(START))


def same_baselines(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    """Two ``price_baselines`` answers are the same figures and the same schedules."""
    (ea, sa), (eb, sb) = a, b
    assert list(ea) == list(eb) and list(sa) == list(sb)
    for k in ea:
        assert ea[k].totals == eb[k].totals and ea[k].objective == eb[k].objective, k
        for f in ("site_carbon_kg", "site_energy_kwh", "job_late_h", "job_unserved_gpu_h"):
            assert np.array_equal(getattr(ea[k], f), getattr(eb[k], f)), (k, f)
    for k in sa:
        (s1, n1, u1), (s2, n2, u2) = sa[k], sb[k]
        assert np.array_equal(n1, n2) and np.array_equal(u1, u2), k
        assert s1.runs == s2.runs, k
        for f in ("pool", "start_h", "end_h"):
            assert np.array_equal(getattr(s1, f), getattr(s2, f), equal_nan=True), (k, f)


def test_when_the_worker_is_used():
    assert wanted("on", 1) and not wanted("off", 10**6)
    assert not wanted("auto", AUTO_MIN_JOBS - 1, cpus=8)
    assert wanted("auto", AUTO_MIN_JOBS, cpus=2)
    assert not wanted("auto", AUTO_MIN_JOBS, cpus=1)  # one CPU: nothing to overlap with
    # a one-off plan: only when asked for (measured slower on L with auto's rule)
    assert not wanted("auto", AUTO_MIN_JOBS, cpus=8, step=False)
    assert wanted("on", 1, step=False)


def _wanted_here(q) -> None:
    q.put(wanted("auto", 10 * AUTO_MIN_JOBS, cpus=8))


def test_no_worker_from_a_daemonic_process():
    """A daemonic process (a Dask worker, a multiprocessing pool's worker) may not start
    children: ``auto`` prices in-process there."""
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_wanted_here, args=(q,), daemon=True)
    p.start()
    got = q.get(timeout=60)
    p.join(timeout=60)
    assert got is False
    assert wanted("auto", 10 * AUTO_MIN_JOBS, cpus=8)  # here, not daemonic


def test_what_the_worker_is_asked():
    # the shutdown-idle baseline comes from the carbon-agnostic one's FIFO placement
    assert worker_set("agnostic") == ("carbon_agnostic", "shutdown_idle")
    assert worker_set("all") == ("carbon_agnostic", "shutdown_idle", "carbon_aware_greedy")
    assert worker_set("none") == ()


def test_the_retry_fleet_is_what_its_docstring_says(fleet):
    """The hand-worked premise of the figures below: FIFO's first pass has b late, the kept
    (retry) pass has both on time with b first."""
    inp = inputs(retry_fleet(fleet))
    evals, scheds = price_baselines(inp, ("shutdown_idle",))
    sched = scheds["shutdown_idle"][0]
    ids = [j.id for j in inp.jobs]
    a, b = ids.index("a"), ids.index("b")
    assert evals["shutdown_idle"].totals["late_jobs"] == 0
    assert float(sched.start_h[b]) == pytest.approx(0.0) and float(sched.end_h[b]) == 1.0
    assert float(sched.start_h[a]) == pytest.approx(1.0) and float(sched.end_h[a]) == 4.0


@pytest.mark.parametrize("make", FLEETS)
@pytest.mark.parametrize("baselines", ["agnostic", "all"])
def test_the_worker_prices_the_same_baselines(fleet, make, baselines, worker):
    inp = inputs(make(fleet))
    which = worker_set(baselines)
    here = price_baselines(inp, which)
    evals, scheds, info = collect(inp, which, worker.submit(inp, which))
    assert info["baselines_where"] == "worker", info
    assert info["baselines_worker_s"] > 0 and info["baselines_wait_s"] >= 0
    same_baselines(here, (evals, scheds))


def test_what_the_worker_was_not_asked_is_priced_here(fleet, worker):
    inp = inputs(retry_fleet(fleet))
    which = ("carbon_agnostic", "shutdown_idle", "carbon_aware_greedy")
    pending = worker.submit(inp, ("carbon_agnostic",))
    evals, scheds, info = collect(inp, which, pending)
    assert info["baselines_where"] == "worker"
    assert info["baselines_in_process"] == ["shutdown_idle", "carbon_aware_greedy"]
    same_baselines(price_baselines(inp, which), (evals, scheds))


def _doc_without_timings(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in ("solver", "created_at")}


@pytest.mark.parametrize("make", FLEETS)
def test_a_plan_with_the_worker_is_the_same_plan(fleet, make, worker):
    cfg = load_config(make(fleet))
    inp = make_inputs(cfg, SimClock(START))
    alone = planmod.make_plan(cfg, SimClock(START), inputs=inp)
    beside = planmod.make_plan(cfg, SimClock(START), inputs=inp, baseline_worker=worker)
    assert alone.document["solver"]["baselines_where"] == "in-process"
    assert beside.document["solver"]["baselines_where"] == "worker"
    assert _doc_without_timings(beside.document) == _doc_without_timings(alone.document)


def test_unpicklable_inputs_are_priced_here_and_logged(fleet, worker, caplog):
    inp = inputs(retry_fleet(fleet))
    inp.extras["not_picklable"] = lambda: None
    which = worker_set("agnostic")
    with caplog.at_level(logging.WARNING, logger="greencpn.optimize.baseline_worker"):
        evals, scheds, info = collect(inp, which, worker.submit(inp, which))
    assert info["baselines_where"] == "in-process"
    assert (
        "lambda" in info["baselines_worker_error"]
        or "pickle" in info["baselines_worker_error"].lower()
    ), info
    assert any("priced in-process" in m for m in caplog.messages)
    del inp.extras["not_picklable"]
    same_baselines(price_baselines(inp, which), (evals, scheds))


def test_a_worker_that_does_not_answer_is_stopped_and_replaced(fleet, caplog):
    """A worker that has not answered within ``wait_limit_s`` (here 0.05 s: less than a fresh
    process takes to start) is terminated and the baselines priced here; the next plan starts a
    fresh worker, which answers."""
    inp = inputs(retry_fleet(fleet))
    which = worker_set("agnostic")
    before = {p.pid for p in multiprocessing.active_children()}  # e.g. the module's worker
    w = BaselineWorker(wait_limit_s=0.05)
    try:
        with caplog.at_level(logging.WARNING, logger="greencpn.optimize.baseline_worker"):
            evals, scheds, info = collect(inp, which, w.submit(inp, which))
        assert info == {
            "baselines_where": "in-process",
            "baselines_worker_error": "no answer within 0.05 s of being asked",
        }
        assert any("no answer within 0.05 s" in m for m in caplog.messages)
        same_baselines(price_baselines(inp, which), (evals, scheds))
        assert not w.running  # terminated, not left running
        w.wait_limit_s = 600.0
        _e, _s, info = collect(inp, which, w.submit(inp, which))
        assert info["baselines_where"] == "worker" and w.started == 2
    finally:
        w.close()
    assert not [p for p in multiprocessing.active_children() if p.pid not in before]


def mark_then_sleep(marker: str, sleep_s: float) -> None:
    """Run by the worker while it unpickles its inputs (see :class:`SlowToUnpickle`): says it
    has started, then holds the pricing."""
    Path(marker).touch()
    time.sleep(sleep_s)


class SlowToUnpickle:
    """An inputs extra whose unpickling — inside the worker's pricing call — takes ``sleep_s``."""

    def __init__(self, marker: Path, sleep_s: float) -> None:
        self.marker, self.sleep_s = str(marker), sleep_s

    def __reduce__(self):
        return (mark_then_sleep, (self.marker, self.sleep_s))


def test_a_worker_that_dies_while_pricing_is_noticed_at_once(fleet, tmp_path, caplog):
    """The worker process killed (SIGKILL, as the kernel's OOM killer does) in the middle of a
    pricing: the plan is told at once — not after ``wait_limit_s`` (600 s here) — prices the
    baselines itself with the same figures, says why, and the next plan starts a fresh worker.
    (Before, the pool replaced the process, lost the pricing it held, and the plan waited out the
    600 s.)"""
    inp = inputs(retry_fleet(fleet))
    which = worker_set("agnostic")
    marker = tmp_path / "pricing-started"
    inp.extras["slow"] = SlowToUnpickle(marker, sleep_s=120.0)
    before = {p.pid for p in multiprocessing.active_children()}  # e.g. the module's worker
    w = BaselineWorker(wait_limit_s=600.0)
    try:
        pending = w.submit(inp, which)
        deadline = time.monotonic() + 120.0
        while not marker.exists():  # the worker is inside the pricing call
            assert time.monotonic() < deadline, "the worker never started pricing"
            time.sleep(0.05)
        mine = [p for p in multiprocessing.active_children() if p.pid not in before]
        assert len(mine) == 1  # the worker process this submit started
        os.kill(mine[0].pid, signal.SIGKILL)
        t0 = time.perf_counter()
        with caplog.at_level(logging.WARNING, logger="greencpn.optimize.baseline_worker"):
            evals, scheds, info = collect(inp, which, pending)
        waited_s = time.perf_counter() - t0
        assert info["baselines_where"] == "in-process"
        assert info["baselines_worker_error"].startswith("the worker process died while pricing")
        assert any("the worker process died" in m for m in caplog.messages)
        assert waited_s < 60.0, waited_s  # noticed, not waited out (600 s)
        del inp.extras["slow"]
        same_baselines(price_baselines(inp, which), (evals, scheds))
        assert not w.running
        _e, _s, info = collect(inp, which, w.submit(inp, which))
        assert info["baselines_where"] == "worker" and w.started == 2
    finally:
        w.close()
    assert not [p for p in multiprocessing.active_children() if p.pid not in before]


def test_a_failed_plan_leaves_the_worker_usable(fleet, worker):
    cfg = load_config(retry_fleet(fleet))
    inp = make_inputs(cfg, SimClock(START))

    def broken_model(inp):
        raise RuntimeError("model build failed")

    with pytest.raises(RuntimeError, match="model build failed"):
        planmod.make_plan(
            cfg, SimClock(START), inputs=inp, new_model=broken_model, baseline_worker=worker
        )
    res = planmod.make_plan(cfg, SimClock(START), inputs=inp, baseline_worker=worker)
    assert res.document["solver"]["baselines_where"] == "worker"
