"""The report's baselines priced in a worker process while the MILP is built and solved.

The baselines (:func:`~greencpn.optimize.baselines.price_baselines`) need the plan's inputs
and nothing the MILP computes: pricing the carbon-agnostic one is a FIFO placement of every
job with up to three passes, each with a node-repair MIP. On the L bench fleet that is 2–5 s
of a 5–11 s re-plan step, spent while the second core is idle. With a worker the step hands
the inputs to one long-lived process when planning starts and collects the priced baselines
when the plan needs them (``finish_plan``): the step then waits only for what is left of the
pricing once the MILP is solved.

* **The same figures.** The worker runs the very same :func:`price_baselines` on a pickled
  copy of the inputs (a NumPy array pickles bit for bit); baselines the worker was not asked
  for are priced in-process as before (tests/optimize/test_baseline_worker.py compares both
  ways on real plans).
* **Faults degrade to the old way.** A worker that cannot start, raises, dies, or has not
  answered within ``wait_limit_s`` of being asked is logged, terminated, and the baselines are
  priced in-process (a bug in the pricing itself then raises there, as it always did). A worker
  that dies in the middle of a pricing (killed for memory, say) is noticed as it dies:
  :class:`~concurrent.futures.ProcessPoolExecutor` watches its process and fails the pending
  answer with ``BrokenProcessPool`` at once, so the plan does not wait out ``wait_limit_s``. The
  plan document's solver block says where they were priced (``baselines_where``) and why not in
  the worker (``baselines_worker_error``). The next plan starts a fresh worker.
* **One process, started once.** ``multiprocessing``'s ``spawn`` start method (a fresh
  interpreter: no fork of a process with threads and a live HiGHS), one worker kept across
  steps (its start, ~1–2 s of imports, overlaps the first plan's MILP build). Its standard
  output goes to standard error: nothing it prints can land in ``greencpn plan --json``.

Whether a plan uses it is ``[solver] baselines_worker``: ``auto`` (the default: a control step's
re-plan with at least :data:`AUTO_MIN_JOBS` jobs and two usable CPUs, and not inside a daemonic
process such as a Dask worker, which may not start children; on the example fleet the pricing
is a few hundred milliseconds), ``on``, ``off``. ``auto`` leaves a one-off ``greencpn plan``
in-process: there the MILP part the pricing overlaps is shorter than the pricing itself (L: ~5
against ~9 s) and HiGHS slows while the worker runs — measured 2–4 % slower with the worker on L
(bench/results/controller.md). On a machine without a free core the worker costs time: two busy
processes then share one core (``off`` there).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import resource
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from greencpn.optimize.baselines import BASELINE_SETS, price_baselines
from greencpn.optimize.evaluate import Evaluation
from greencpn.optimize.inputs import PlanInputs

log = logging.getLogger(__name__)

#: ``baselines_worker = "auto"`` uses the worker from this many jobs on
AUTO_MIN_JOBS = 1000

#: how long a plan waits for the worker's answer, counted from when it was asked, before it
#: treats the worker as hung (terminated, the baselines priced in-process)
DEFAULT_WAIT_LIMIT_S = 600.0


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def wanted(setting: str, n_jobs: int, cpus: int | None = None, *, step: bool = True) -> bool:
    """Whether a plan of ``n_jobs`` jobs prices its baselines in the worker
    (``[solver] baselines_worker``); ``step``: a control step's re-plan (``auto`` leaves a
    one-off ``greencpn plan`` in-process, see the module docstring)."""
    if setting == "on":
        return True
    if setting == "off" or not step:
        return False
    if multiprocessing.current_process().daemon:  # e.g. a Dask worker: it may not have children
        return False
    return n_jobs >= AUTO_MIN_JOBS and (usable_cpus() if cpus is None else cpus) >= 2


def worker_set(baselines: str) -> tuple[str, ...]:
    """What the worker prices for ``baselines`` (:data:`BASELINE_SETS`): the report's set, and
    the shutdown-idle baseline with the carbon-agnostic one — both come from the same FIFO
    placement (:func:`~greencpn.optimize.baselines.fifo_spill`), so it costs nothing more and a
    plan that competes the FIFO schedule as a candidate finds it priced."""
    which = BASELINE_SETS[baselines]
    if "carbon_agnostic" in which and "shutdown_idle" not in which:
        which = (*which, "shutdown_idle")
    return which


def _init_worker() -> None:
    """In the worker: standard output to standard error (``greencpn plan --json`` owns stdout)."""
    sys.stdout.flush()
    os.dup2(2, 1)
    sys.stdout = sys.stderr


def _price(blob: bytes, which: tuple[str, ...]) -> tuple[dict, dict, dict[str, float]]:
    """In the worker: :func:`price_baselines` on the pickled inputs, and its own wall and CPU
    seconds and peak RSS."""
    t0, c0 = time.perf_counter(), time.process_time()
    evals, scheds = price_baselines(pickle.loads(blob), which)
    own = {
        "baselines_worker_s": time.perf_counter() - t0,
        "baselines_worker_cpu_s": time.process_time() - c0,
        "baselines_worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    return evals, scheds, own


@dataclass
class PendingBaselines:
    """Baselines asked of the worker for one plan (:meth:`BaselineWorker.submit`)."""

    worker: BaselineWorker
    asked_at: float  # perf_counter
    handle: Future | None
    error: str | None = None

    def result(self) -> tuple[dict[str, Evaluation], dict, dict[str, Any]]:
        """The worker's evaluations and schedules and what to record about them; empty dicts
        (and ``info["baselines_worker_error"]``) when the worker failed — the caller prices
        in-process then. Never raises for a worker fault."""
        t0 = time.perf_counter()
        err = self.error
        if self.handle is not None and err is None:
            left = self.worker.wait_limit_s - (t0 - self.asked_at)
            try:
                evals, scheds, own = self.handle.result(timeout=max(0.0, left))
            except TimeoutError:
                err = f"no answer within {self.worker.wait_limit_s:g} s of being asked"
                self.worker.terminate()
            except BrokenProcessPool as exc:  # the process died (killed, out of memory, …)
                err = f"the worker process died while pricing ({exc})"
                self.worker.terminate()
            except Exception as exc:  # the worker raised: priced in-process below
                err = f"{type(exc).__name__}: {exc}"
                self.worker.terminate()
            else:
                wait_s = time.perf_counter() - t0
                return (
                    evals,
                    scheds,
                    {"baselines_where": "worker", **own, "baselines_wait_s": wait_s},
                )
        log.warning("baselines: the worker process failed (%s); priced in-process", err)
        return {}, {}, {"baselines_where": "in-process", "baselines_worker_error": err}

    def abandon(self) -> None:
        """The plan ended without collecting (e.g. the solver failed): the answer is dropped.
        A pricing still running finishes in the worker before the next one starts."""
        self.handle = None


class BaselineWorker:
    """One worker process pricing baselines (see the module docstring). Not thread-safe: one
    plan at a time asks it, as the control step does."""

    def __init__(self, wait_limit_s: float = DEFAULT_WAIT_LIMIT_S) -> None:
        self.wait_limit_s = float(wait_limit_s)
        self._executor: ProcessPoolExecutor | None = None
        self.started = 0  # worker processes started (a fault starts a fresh one next time)

    @property
    def running(self) -> bool:
        """Whether a worker process is kept (started and not terminated)."""
        return self._executor is not None

    def submit(self, inp: PlanInputs, which: tuple[str, ...]) -> PendingBaselines:
        """Ask the worker to price ``which`` on ``inp``; returns at once."""
        now = time.perf_counter()
        try:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                )
                self.started += 1
            # pickled here, in the caller's thread: the worker sees the inputs as they are now
            blob = pickle.dumps(inp, protocol=pickle.HIGHEST_PROTOCOL)
            handle = self._executor.submit(_price, blob, which)
        except Exception as exc:  # cannot start a process (limits, no /dev/shm, …)
            self.terminate()
            return PendingBaselines(self, now, None, error=f"{type(exc).__name__}: {exc}")
        return PendingBaselines(self, now, handle)

    def terminate(self) -> None:
        """Stop the worker process now, a pricing it runs included (a fault, or the controller
        closing)."""
        ex, self._executor = self._executor, None
        if ex is None:
            return
        stopped = True
        try:
            kill = getattr(ex, "terminate_workers", None)  # Python ≥ 3.14
            if kill is not None:
                kill()
            else:  # the executor's process table (no public way to stop a busy worker before 3.14)
                for proc in list((getattr(ex, "_processes", None) or {}).values()):
                    proc.terminate()
                    proc.join(timeout=10)
        except Exception as exc:  # e.g. a pool already broken by the worker's death
            log.debug("baselines: stopping the worker: %s", exc)
            stopped = False
        # not waiting on a worker that could not be stopped (it may be the one that hangs)
        ex.shutdown(wait=stopped, cancel_futures=True)

    close = terminate


def collect(
    inp: PlanInputs, which: tuple[str, ...], pending: PendingBaselines | None
) -> tuple[dict[str, Evaluation], dict, dict[str, Any]]:
    """``which`` priced: what the worker priced (when it was asked), the rest in-process.

    Returns the evaluations and schedules as :func:`price_baselines` does, and the solver
    block's ``baselines_*`` entries for where they were priced."""
    if pending is None:
        evals, scheds = price_baselines(inp, which)
        return evals, scheds, {"baselines_where": "in-process"}
    got_e, got_s, info = pending.result()
    rest = tuple(b for b in which if b not in got_e)
    evals = {k: v for k, v in got_e.items() if k in which}
    scheds = {k: v for k, v in got_s.items() if k in which}
    if rest:
        e2, s2 = price_baselines(inp, rest)
        evals.update(e2)
        scheds.update(s2)
        if info.get("baselines_where") == "worker":
            info = {**info, "baselines_in_process": list(rest)}
    return evals, scheds, info
