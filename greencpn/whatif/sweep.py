"""``greencpn whatif sweep``: fleet variants × slack rules × policies, one comparison table.

Each cell (config, slack, policy) is one replay task, run where the executor puts it:

* ``scheduler`` given (``tcp://host:8786``): a running Dask cluster
  (``dask.distributed.Client``; ``pip install 'greencpn[sweep]'``). Workers read the config,
  carbon and jobs files by path, so those paths must be visible to them (a shared file system).
* ``dask_local=N``: a ``dask.distributed.LocalCluster`` of N worker processes on this machine.
* otherwise: a ``concurrent.futures`` spawn process pool (``workers``), no Dask needed.

Every path gives the same table: a task is a pure function of its inputs (seeded failures,
deterministic policies); rows are sorted by (config, slack, policy order). Savings and shares
are computed per (config, slack) group against that group's ``carbon-agnostic`` row (added to
the policies if missing) and its perfect-foresight oracle (the lowest-carbon ``perfect=1`` run
of the group, if any).
"""

from __future__ import annotations

import csv
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from greencpn.errors import ConfigError

log = logging.getLogger(__name__)

SWEEP_COLUMNS = (
    "config",
    "slack",
    "policy",
    "energy_kwh",
    "carbon_kg",
    "carbon_saved_pct",
    "share_of_oracle_saving",
    "mean_wait_h",
    "p95_wait_h",
    "deadline_misses",
    "unfinished_jobs",
    "power_cycles_per_node_mean",
)


@dataclass(frozen=True)
class SweepTask:
    """One replay of a sweep (everything by value or path, so it pickles to any worker)."""

    config: str
    slack: str
    policy: str
    start: datetime
    end: datetime
    carbon: str | None = None
    jobs: str | None = None
    assign: str = "hash"
    residency: tuple[str, ...] = ()
    seed: int = 0
    failure_rate: float = 0.0
    drain_h: float = 48.0
    step_min: int | None = None
    forecasts: tuple[str, ...] = ()  # ZONE=PATH


@functools.lru_cache(maxsize=8)
def _inputs(task_key: tuple) -> tuple[Any, Any, Any, Any, Any]:
    """Fleet, jobs, sources and settings of a (config, slack, ...) — cached per process so a
    worker running several policies of one cell reads the files once."""

    from greencpn.config import load_config
    from greencpn.whatif.carbon import carbon_sources
    from greencpn.whatif.engine import ReplaySettings
    from greencpn.whatif.jobs import load_jobs
    from greencpn.whatif.model import FleetSpec

    t = SweepTask(**dict(task_key))
    cfg = load_config(Path(t.config))
    fleet = FleetSpec.from_config(cfg)
    step = timedelta(minutes=t.step_min or cfg.horizon.slot_minutes)
    settings = ReplaySettings(
        start=t.start,
        end=t.end,
        step=step,
        drain=timedelta(hours=t.drain_h),
        seed=t.seed,
        failure_rate_per_node_h=t.failure_rate,
    )
    carbon = Path(t.carbon) if t.carbon else cfg.carbon_path
    fc, actual = carbon_sources(list(t.forecasts), fleet, carbon, step)
    if t.jobs:
        jobs = load_jobs(
            t.jobs,
            fleet,
            slack=t.slack,
            assign=t.assign,
            residency=list(t.residency),
            seed=t.seed,
            start=t.start,
            end=t.end,
        )
    elif cfg.jobs_file_path is not None:
        jobs = load_jobs(
            cfg.jobs_file_path,
            fleet,
            kind="greencpn",
            assign=t.assign,
            residency=list(t.residency),
            seed=t.seed,
        )
    else:
        raise ConfigError("no jobs to replay", field="--jobs", fix="pass --jobs TRACE")
    return fleet, jobs, fc, actual, settings


def run_task(task: SweepTask) -> dict[str, Any]:
    """Replay one cell; its summary row (``metrics.summarise``) with config and slack."""
    from greencpn.whatif.engine import run_replay
    from greencpn.whatif.metrics import summarise

    key = tuple(sorted((k, v) for k, v in asdict(task).items() if k != "policy"))
    fleet, jobs, fc, actual, settings = _inputs(key + (("policy", ""),))
    run = run_replay(fleet, jobs, task.policy, forecasts=fc, actuals=actual, settings=settings)
    row = summarise(run)
    row.pop("wall_s", None)  # the only field that differs between executors
    return {"config": task.config, "slack": task.slack, **row}


#: the ``slack`` label of rows whose jobs come from a config's jobs file (their own deadlines)
JOB_DEADLINES = "own deadlines"


def make_tasks(
    configs: Sequence[str], slacks: Sequence[str], policies: Sequence[str], **common: Any
) -> list[SweepTask]:
    """The grid; ``carbon-agnostic`` is added (first) when missing — it is every group's
    baseline. Policy specs and slack rules are validated here, before anything runs."""
    from greencpn.whatif.jobs import parse_slack
    from greencpn.whatif.policies import parse_spec

    pols = list(policies)
    if "carbon-agnostic" not in pols:
        pols.insert(0, "carbon-agnostic")
    for p in pols:
        parse_spec(p)
    for s in slacks:
        parse_slack(s)
    if not common.get("jobs"):
        # the configs' own job files carry their deadlines: a slack rule would be unused, and
        # rows labelled with it would say something that was not done
        (log.warning if len(slacks) > 1 else log.info)(
            "sweep: no --jobs trace, so the configs' jobs files are replayed with their own "
            "deadlines; the slack rule(s) %s are not used",
            " ".join(slacks),
        )
        slacks = [JOB_DEADLINES]
    return [
        SweepTask(config=str(c), slack=s, policy=p, **common)
        for c in configs
        for s in slacks
        for p in pols
    ]


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]
    executor: str
    tasks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _table(tasks: list[SweepTask], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {(t.config, t.slack, t.policy): i for i, t in enumerate(tasks)}
    rows = sorted(rows, key=lambda r: order[(r["config"], r["slack"], r["policy"])])
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["config"], r["slack"]), []).append(r)
    for grp in groups.values():
        base = next(r for r in grp if r["policy"] == "carbon-agnostic")["carbon_kg"]
        perfect = [r for r in grp if "perfect=1" in r["policy"]]
        orc = min(perfect, key=lambda r: r["carbon_kg"])["carbon_kg"] if perfect else None
        for r in grp:
            saved = base - r["carbon_kg"]
            r["carbon_saved_pct"] = 100.0 * saved / base if base else None
            r["share_of_oracle_saving"] = (
                saved / (base - orc) if orc is not None and base - orc > 1e-12 else None
            )
            r["oracle"] = min(perfect, key=lambda x: x["carbon_kg"])["policy"] if perfect else None
    return rows


def run_sweep(
    tasks: list[SweepTask],
    *,
    scheduler: str | None = None,
    dask_local: int = 0,
    workers: int = 1,
    executor: Executor | None = None,
    progress: Callable[[int], None] | None = None,
) -> SweepResult:
    """Run the tasks (see the module docstring for where) and build the table.

    Raises:
        ConfigError: Dask asked for but not installed, or the scheduler is unreachable.
    """
    kind = "given executor"
    client = cluster = None
    own_pool = None
    try:
        if executor is None and (scheduler or dask_local):
            try:
                from dask.distributed import Client, LocalCluster
            except ImportError:
                raise ConfigError(
                    "dask.distributed is not installed",
                    field="--scheduler",
                    fix="pip install 'greencpn[sweep]' (or run without --scheduler/--dask-local)",
                ) from None
            if scheduler:
                try:
                    client = Client(scheduler, timeout="10s")
                except OSError as exc:
                    raise ConfigError(
                        f"cannot reach the Dask scheduler: {exc}",
                        field="--scheduler",
                        fix="give the scheduler's address, e.g. tcp://10.0.0.5:8786",
                    ) from None
                kind = f"dask {scheduler}"
            else:
                cluster = LocalCluster(n_workers=dask_local, threads_per_worker=1, processes=True)
                client = Client(cluster)
                kind = f"dask LocalCluster({dask_local} workers)"
            futs = {client.submit(run_task, t, pure=False): t for t in tasks}
            from dask.distributed import as_completed as das_completed

            rows = []
            for f in das_completed(list(futs)):
                rows.append(f.result())
                if progress is not None:
                    progress(1)
        else:
            if executor is None:
                if workers <= 1:
                    rows = []
                    for t in tasks:
                        rows.append(run_task(t))
                        if progress is not None:
                            progress(1)
                    return SweepResult(_table(tasks, rows), "serial", len(tasks))
                from greencpn.whatif.parallel import process_pool

                own_pool = executor = process_pool(workers)
                kind = f"process pool({workers})"
            futs2 = {executor.submit(run_task, t): t for t in tasks}
            rows = []
            for f2 in as_completed(futs2):
                rows.append(f2.result())
                if progress is not None:
                    progress(1)
    finally:
        if own_pool is not None:
            own_pool.shutdown(wait=True, cancel_futures=True)
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    return SweepResult(_table(tasks, rows), kind, len(tasks))


def write_sweep(result: SweepResult, out_dir: Path) -> Path:
    """``sweep.csv`` (:data:`SWEEP_COLUMNS`, one row per cell)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "sweep.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(SWEEP_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in result.rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in SWEEP_COLUMNS})
    return path
