"""Policies in parallel processes, with the same numbers as one after another.

Each policy's replay is independent of the others (its own simulated fleet, its own seeded
failure draws, its own policy instance), so running them in a process pool changes only the
wall time. The pool uses the ``spawn`` start method (no forked solver threads); inputs are
pickled to the workers, results come back in the order of the specs. Forecasts are not shared
between processes (each worker's replay source issues its own; they are identical).

:func:`run_policies` is the one entry point: ``workers=1`` runs in this process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from typing import Any

from greencpn.sources.replay import ReplayCarbonSource
from greencpn.whatif.engine import ReplaySettings, RunResult, run_replay
from greencpn.whatif.model import FleetSpec, SimJob
from greencpn.whatif.policies import PolicySpec, parse_spec


def _one(
    fleet: FleetSpec,
    jobs: list[SimJob],
    spec: PolicySpec,
    forecasts: ReplayCarbonSource,
    actuals: ReplayCarbonSource,
    settings: ReplaySettings,
) -> RunResult:
    # one solver thread per process: the pool is the parallelism
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return run_replay(fleet, jobs, spec, forecasts=forecasts, actuals=actuals, settings=settings)


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A ``spawn`` process pool of ``workers`` processes."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def run_policies(
    fleet: FleetSpec,
    jobs: list[SimJob],
    policies: Sequence[str | PolicySpec],
    *,
    forecasts: ReplayCarbonSource,
    actuals: ReplayCarbonSource,
    settings: ReplaySettings,
    workers: int = 1,
    executor: Executor | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> list[RunResult]:
    """Replay every policy; results in the order of ``policies``.

    Args:
        workers: processes (1: in this process, slot-by-slot progress; more: a spawn pool,
            progress per finished policy). Ignored when ``executor`` is given.
        executor: any :class:`concurrent.futures.Executor` (e.g. a Dask client's
            ``get_executor()``); not shut down here.
        progress: called with slots done (per slot in-process, per policy in a pool).
    """
    specs = [parse_spec(p) if isinstance(p, str) else p for p in policies]  # errors first
    if executor is None and workers <= 1:
        out = []
        for spec in specs:
            if on_start is not None:
                on_start(spec.label)
            out.append(
                run_replay(
                    fleet,
                    jobs,
                    spec,
                    forecasts=forecasts,
                    actuals=actuals,
                    settings=settings,
                    progress=progress,
                )
            )
        return out
    own = executor is None
    ex: Executor = executor if executor is not None else process_pool(min(workers, len(specs)))
    try:
        futs: dict[Any, int] = {
            ex.submit(_one, fleet, jobs, s, forecasts, actuals, settings): i
            for i, s in enumerate(specs)
        }
        results: list[RunResult | None] = [None] * len(specs)
        for f in as_completed(futs):
            results[futs[f]] = f.result()
            if progress is not None:
                progress(settings.n_slots)
    finally:
        if own:
            ex.shutdown(wait=True, cancel_futures=True)
    return [r for r in results if r is not None]
