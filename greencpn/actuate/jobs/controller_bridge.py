"""The job actuators behind the control step (greencpn/controller): its queue and its job actuator.

The controller (``greencpn run``'s step) plans the jobs its ``queue`` observes and calls a job
actuator with its decisions (``defer(job_id, until)``, ``steer(job_id, site, pool)``,
``release(job_id)`` — greencpn/controller/jobs.py). This module gives it both from
``[job_actuation]``, so the daemon acts on the schedulers' real pending jobs:

* :class:`SchedulerQueue` — every cluster's running jobs (Slurm ``squeue --states=RUNNING``:
  GPUs, start, time limit, nodes → pool by the pools' hostlists, else by the steering's
  partition / features / nodes, else the cluster's only pool; work left = GPUs × (time limit −
  time run)) and pending jobs (Slurm arrays as their tasks ``A_t``)
  as :class:`~greencpn.config.JobConfig`: work = GPUs × time limit, release = the job's own
  begin time from the ledger's originals (not the one greencpn set), deadline by the
  ``[job_actuation]`` rules; jurisdictions = those of the cluster's sites, so the plan keeps a
  queued job on its cluster (give every site ``jurisdictions``: without them a job may be
  planned at another cluster's site, and is then neither moved nor steered there). Jobs without GPUs or time limit are not planned. With
  ``heartbeat=True`` (enforce mode) each observation renews the Kubernetes heartbeat lease.
* :class:`ControllerJobBridge` — the controller's job actuator: ``defer`` sets the begin time
  (or holds, ``defer_with = "hold"`` / Kubernetes, writing the release-by mark), ``steer`` moves
  the job to the pool's partition / features / nodes, ``release`` undoes greencpn's own hold or
  later begin time. Before each first change the original value goes to the apply ledger
  (``<state dir>/ledger.sqlite``, table ``jobs``), and every call is a ledger row — so
  ``--undo-jobs``, restore-on-exit and ``greencpn jobs release-expired`` cover what the daemon
  did too.

Use: ``Controller(config, ..., **controller_job_kwargs(config, state_dir, clock, enforce))``.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greencpn.actuate.hostlist import expand
from greencpn.actuate.jobs import JobBackends, make_job_backends
from greencpn.actuate.jobs.base import (
    BEGIN,
    HELD,
    STEER_FIELDS,
    JobActuator,
    JobChange,
    JobNotFoundError,
    PendingJob,
    SteerMode,
)
from greencpn.actuate.jobs.decisions import _begin_of_record
from greencpn.actuate.jobs.engine import (
    JobPolicy,
    deadline_of,
    latest_safe_start,
    steer_targets,
)
from greencpn.actuate.jobs.execution import _json, _remember
from greencpn.actuate.ledger import LEDGER_FILE, Ledger
from greencpn.config import JobConfig
from greencpn.errors import TemporaryError

if TYPE_CHECKING:
    from greencpn.config import FleetConfig

PHASE = "jobs"


@dataclasses.dataclass
class QueueState:
    """What :meth:`SchedulerQueue.observe` returns: the shape of
    ``greencpn.controller.types.QueueState`` (pending, running, source) — the actuate layer may
    not import the controller layer (.importlinter), the controller reads these attributes."""

    pending: list[JobConfig] = dataclasses.field(default_factory=list)
    running: list[Any] = dataclasses.field(default_factory=list)
    source: str = "job actuators"


@dataclasses.dataclass(frozen=True)
class RunningJob:
    """A running scheduler job, in the shape of ``greencpn.controller.types.RunningJob``
    (job, pool, started_at, remaining_gpu_h, nodes): the plan keeps it where it runs."""

    job: JobConfig
    pool: str
    started_at: datetime
    remaining_gpu_h: float
    nodes: tuple[str, ...] = ()


def _open_ledger(state_dir: Path) -> Ledger:
    """The apply ledger for writing. The controller holds the apply lock (its node phases)
    while it calls the job actuator, so when the lock is taken the rows go through a second
    SQLite connection without it: job rows never touch nodes, and SQLite serialises writers."""
    try:
        return Ledger.open(state_dir)
    except TemporaryError:
        path = state_dir / LEDGER_FILE
        if not path.is_file():
            raise
        conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA synchronous=FULL")
        led = Ledger(conn, path=path)
        led.readonly = False
        return led


def _tasks_as_jobs(jobs: list[PendingJob]) -> list[PendingJob]:
    """A pending array record as one job per task ``A_t`` (the plan names tasks)."""
    out: list[PendingJob] = []
    for job in jobs:
        tasks = job.extra.get("array_tasks")
        array = job.extra.get("array_job_id")
        if not isinstance(tasks, list) or not tasks or not array:
            out.append(job)
            continue
        base = {k: v for k, v in job.extra.items() if k not in ("array_tasks", "array_spec")}
        out += [
            dataclasses.replace(job, id=f"{array}_{t}", extra={**base, "array_task": t})
            for t in tasks
        ]
    return out


class SchedulerQueue:
    """The controller's ``queue`` over the job actuators (see the module docstring)."""

    def __init__(
        self,
        backends: JobBackends,
        config: FleetConfig,
        state_dir: str | Path,
        *,
        clock_now: Callable[[], datetime],
        heartbeat: bool = False,
    ) -> None:
        self.backends = backends
        self.state_dir = Path(state_dir)
        self.policy = JobPolicy.from_config(backends.config)
        self.clock_now = clock_now
        self.heartbeat = heartbeat
        tags = {s.name: list(s.jurisdictions) for s in config.sites}
        # a job may go where its jurisdictions allow: those of its cluster's sites keep it on
        # the cluster (a queued job cannot move); sites without jurisdictions cannot say so
        self.jurisdictions = {
            c.name: sorted({t for s in c.sites for t in tags.get(s, [])})
            if all(tags.get(s) for s in c.sites)
            else []
            for c in backends.config.clusters
        }
        self.skipped: list[tuple[str, str]] = []
        # where a running job runs: its nodes (pool hostlists), else its partition / features /
        # nodes as the cluster's steering names them, else the only pool of the cluster's sites
        self.node_pool = {n: p.name for p in config.pools if p.hostlist for n in expand(p.hostlist)}
        self.site_pools = {
            c.name: [p.name for p in config.pools if not c.sites or p.site in c.sites]
            for c in backends.config.clusters
        }

    def observe(self, now: datetime) -> QueueState:
        pending: list[JobConfig] = []
        running: list[RunningJob] = []
        self.skipped = []
        with Ledger.open_readonly(self.state_dir) as ledger:
            for name, act in self.backends.actuators.items():
                records = {r.job_id: r for r in ledger.jobs(name)}
                for job in _tasks_as_jobs(act.pending_jobs()):
                    got = self._job(job, records.get(job.id), name, now)
                    if isinstance(got, str):
                        self.skipped.append((job.id, got))
                    else:
                        pending.append(got)
                list_running = getattr(act, "running_jobs", None)
                for job in list_running() if callable(list_running) else []:
                    got_r = self._running(job, name, now)
                    if isinstance(got_r, str):
                        self.skipped.append((job.id, got_r))
                    else:
                        running.append(got_r)
                beat = getattr(act, "heartbeat", None)
                if self.heartbeat and callable(beat):
                    beat(self.clock_now())
        return QueueState(pending=pending, running=running, source="job actuators")

    def _pool_of(self, cluster: str, job: PendingJob) -> str | None:
        nodes = str(job.extra.get("node_list") or "")
        pools = {self.node_pool[n] for n in (expand(nodes) if nodes else []) if n in self.node_pool}
        if len(pools) == 1:
            return pools.pop()
        for pool, target in steer_targets(self.backends.cluster(cluster)).items():
            field = STEER_FIELDS.get(target.mode)
            if field is not None and target.value and job.value(field) == target.value:
                return pool
        own = self.site_pools.get(cluster, [])
        return own[0] if len(own) == 1 else None

    def _running(self, job: PendingJob, cluster: str, now: datetime) -> RunningJob | str:
        """A running job as the controller's RunningJob (a reason string: not planned)."""
        if job.gpus < 1:
            return "running, asks for no GPU"
        started = job.extra.get("started_at")
        if not isinstance(started, datetime) or job.time_limit_s is None:
            return "running, start or time limit unknown"
        pool = self._pool_of(cluster, job)
        if pool is None:
            return "running on no pool greencpn knows (nodes, partition)"
        left_s = max(0.0, job.time_limit_s - (now - started).total_seconds())
        nodes = str(job.extra.get("node_list") or "")
        return RunningJob(
            job=JobConfig(
                id=job.id,
                gpus=job.gpus,
                work_gpu_h=job.gpus * job.time_limit_s / 3600.0,
                release=started,
                deadline=started + timedelta(seconds=max(job.time_limit_s, 1.0)),
                jurisdictions=self.jurisdictions.get(cluster, []),
            ),
            pool=pool,
            started_at=started,
            remaining_gpu_h=job.gpus * left_s / 3600.0,
            nodes=tuple(expand(nodes)) if nodes else (),
        )

    def _job(self, job: PendingJob, rec: Any, cluster: str, now: datetime) -> JobConfig | str:
        if job.gpus < 1:
            return "asks for no GPU"
        if job.time_limit_s is None:
            return "no time limit"
        if job.held and not (rec is not None and rec.held_by_us) and not job.gated:
            return "held by its user or an admin"
        why = self.policy.excluded(job)
        if why:
            return why
        recorded, orig = _begin_of_record(rec)
        if not recorded:
            orig = job.begin_at
        release = orig or job.submit_at or now
        deadline = deadline_of(job, self.policy, orig)
        limit = timedelta(seconds=job.time_limit_s)
        if deadline is None or deadline <= release:
            deadline = release + limit
        return JobConfig(
            id=job.id,
            gpus=job.gpus,
            work_gpu_h=job.gpus * job.time_limit_s / 3600.0,
            release=release,
            deadline=deadline,
            jurisdictions=self.jurisdictions.get(cluster, []),
        )


class ControllerJobBridge:
    """The controller's job actuator over the cluster actuators (see the module docstring)."""

    def __init__(
        self,
        backends: JobBackends,
        state_dir: str | Path,
        *,
        clock_now: Callable[[], datetime],
        step_gap_s: float = 60.0,
    ) -> None:
        self.backends = backends
        self.state_dir = Path(state_dir)
        self.clock_now = clock_now
        self.policy = JobPolicy.from_config(backends.config)
        self.step_gap_s = step_gap_s
        self._where: dict[str, str] = {}
        self._apply: tuple[int, datetime] | None = None
        self.calls: list[tuple[str, str, str]] = []  # (op, job id, status)

    # ------------------------------------------------------------------ helpers
    def job_gpu_lookup(self) -> Any:
        """Job id -> its GPU indices per node (for per-job caps), or None: no cluster reads them."""
        return self.backends.job_gpu_lookup()

    def _find(self, job_id: str) -> tuple[str, JobActuator, PendingJob]:
        names = list(self.backends.actuators)
        if job_id in self._where:
            names.remove(self._where[job_id])
            names.insert(0, self._where[job_id])
        for name in names:
            act = self.backends.actuators[name]
            try:
                job = act.read(job_id)
            except JobNotFoundError:
                continue
            self._where[job_id] = name
            return name, act, job
        raise JobNotFoundError(f"job {job_id} is in none of the job_actuation clusters")

    def _apply_id(self, ledger: Ledger, now: datetime) -> int:
        """One ledger apply per control step (calls closer than ``step_gap_s`` share it)."""
        if self._apply is None or (now - self._apply[1]).total_seconds() > self.step_gap_s:
            aid = ledger.begin_apply(now, plan_path=None, slot=None, slot_start=None, mode="daemon")
            self._apply = (aid, now)
        else:
            self._apply = (self._apply[0], now)
        return self._apply[0]

    def _do(
        self,
        op: str,
        job_id: str,
        fields: list[str],
        call: Callable[[str, JobActuator, PendingJob], list[JobChange]],
        **record: Any,
    ) -> list[JobChange]:
        now = self.clock_now()
        with _open_ledger(self.state_dir) as ledger:
            aid = self._apply_id(ledger, now)
            try:
                name, act, job = self._find(job_id)
            except JobNotFoundError as exc:
                ledger.record(
                    aid, now, phase=PHASE, action=op, pool=None, targets=[job_id],
                    status="skipped", detail={"error": str(exc)},
                )  # fmt: skip
                self.calls.append((op, job_id, "skipped"))
                raise
            sid = ledger.intent(
                aid, now, phase=PHASE, action=op, pool=record.get("pool"), targets=[job_id],
                detail={"cluster": name, "via": "controller", **{k: _json(v) for k, v in record.items()}},
            )  # fmt: skip
            if fields:
                _remember(ledger, name, job, fields, **record)
            try:
                changes = call(name, act, job)
            except Exception as exc:
                ledger.result(
                    sid, self.clock_now(), "error", {"error": f"{type(exc).__name__}: {exc}"}
                )
                self.calls.append((op, job_id, "error"))
                raise
            ledger.result(
                sid,
                self.clock_now(),
                "ok",
                {
                    "changes": [
                        {"what": c.what, "before": _json(c.before), "after": _json(c.after)}
                        for c in changes
                    ]
                },
            )
            self.calls.append((op, job_id, "ok"))
            return changes

    def backend_of(self, job_id: str) -> str:
        """The scheduler kind (``slurm``, ``kubernetes``, ``command``, ``fake``) of the cluster
        the job was last found on (the metrics' ``backend`` label); ``unknown`` if never seen."""
        name = self._where.get(job_id)
        return self.backends.cluster(name).kind if name is not None else "unknown"

    def _hold_mode(self, act: JobActuator) -> bool:
        return self.policy.defer_with == "hold" or not act.supports_begin_time

    # ------------------------------------------------------------------ the controller's interface
    def _lss(self, name: str, job: PendingJob) -> datetime | None:
        with Ledger.open_readonly(self.state_dir) as ro:
            recorded, orig = _begin_of_record(ro.job(name, job.id))
        return latest_safe_start(job, self.policy, orig if recorded else job.begin_at)

    def defer(self, job_id: str, until: datetime) -> object:
        """Begin time ``until`` — never past the job's latest safe start — or, in hold mode, a
        hold with its release scheduled at ``until`` and the fail-safe mark at the lss."""
        name, act, job = self._find(job_id)
        lss = self._lss(name, job)
        if lss is not None:
            until = min(until, lss)
        if self._hold_mode(act):

            def hold(name: str, act: JobActuator, job: PendingJob) -> list[JobChange]:
                until_fn = getattr(act, "hold_until", None)
                if callable(until_fn):
                    return [until_fn(job_id, lss)]
                return [act.hold(job_id)]

            return self._do(
                "defer", job_id, [HELD], hold, held_by_us=True, release_at=until,
                latest_safe_start=lss,
            )  # fmt: skip
        if job.begin_at is not None and abs((job.begin_at - until).total_seconds()) <= 1:
            return []  # already so
        return self._do(
            "defer", job_id, [BEGIN], lambda n, a, j: [a.defer(job_id, until)],
            latest_safe_start=lss,
        )  # fmt: skip

    def steer(self, job_id: str, site: str, pool: str | None) -> object:
        name, act, job = self._find(job_id)
        cluster = self.backends.cluster(name)
        if pool is None or (cluster.sites and site and site not in cluster.sites):
            return []  # a queued job cannot change cluster (greencpn submit chooses it)
        target = steer_targets(cluster).get(pool)
        if target is None or target.mode == SteerMode.NONE:
            return []
        what = STEER_FIELDS[target.mode]
        if job.value(what) == target.value:
            return []
        return self._do("steer", job_id, [what], lambda n, a, j: a.steer(job_id, target), pool=pool)

    def release(self, job_id: str) -> object:
        name, act, job = self._find(job_id)
        now = self.clock_now()
        with Ledger.open_readonly(self.state_dir) as ro:
            rec = ro.job(name, job_id)
        if job.held and ((rec is not None and rec.held_by_us) or job.gated):

            def let_go(name: str, act: JobActuator, job: PendingJob) -> list[JobChange]:
                change = act.release(job_id)
                with _open_ledger(self.state_dir) as ledger:
                    ledger.update_job(name, job_id, held_by_us=False, release_at=None)
                return [change]

            return self._do("release", job_id, [], let_go)
        ours = rec is not None and rec.originals is not None and BEGIN in rec.originals
        later = job.begin_at is not None and job.begin_at > now + timedelta(seconds=1)
        if ours and later and not self._hold_mode(act):
            return self._do(
                "release", job_id, [], lambda n, a, j: [a.defer(job_id, now)],
                release_at=now,
            )  # fmt: skip
        return []  # nothing of greencpn's holds it back


def controller_job_kwargs(
    config: FleetConfig,
    state_dir: str | Path,
    *,
    clock_now: Callable[[], datetime],
    enforce: bool,
) -> dict[str, Any]:
    """``queue`` and ``job_actuator`` for :class:`greencpn.controller.Controller` from the
    config's ``[job_actuation]`` ({} when it has none)."""
    backends = make_job_backends(config.job_actuation, source=str(config.path))
    if backends is None:
        return {}
    return {
        "queue": SchedulerQueue(
            backends, config, state_dir, clock_now=clock_now, heartbeat=enforce
        ),
        "job_actuator": ControllerJobBridge(backends, state_dir, clock_now=clock_now),
    }


__all__ = ["ControllerJobBridge", "RunningJob", "SchedulerQueue", "controller_job_kwargs"]
