"""Slurm job actuator: begin times, holds and placement through ``squeue`` and ``scontrol``.

* running jobs (read only, for the controller's observation): ``squeue --json --states=RUNNING``;
* pending jobs: ``squeue --json --states=PENDING`` (Slurm 22.05's ``v0.0.38`` shape: plain epoch
  integers, ``time_limit`` in minutes or ``null``; the later wrapped ``{"set", "number"}`` numbers
  are read too). The job's begin time is its ``eligible_time``; a held job has ``priority`` 0.
* read back: ``scontrol show job -o ID`` (one line, ``Key=Value`` words) after every update;
  the value before is the job's last listing or read back (one update + one read per change).
* defer: ``scontrol update JobId=ID StartTime=YYYY-MM-DDTHH:MM:SS`` — the time is written in UTC
  and the command runs with ``TZ=UTC`` (Slurm reads times in the client's local zone).
* hold / release: ``scontrol hold ID`` / ``scontrol release ID``.
* steer: ``scontrol update JobId=ID Partition=P`` | ``Features=F`` | ``ReqNodeList=N``; a steer
  and a defer of the same job go in one ``scontrol update`` (:meth:`steer_and_defer`)
  (``Features=`` / ``ReqNodeList=`` with an empty value clear them on undo).

Errors: ``Invalid job id`` → :class:`JobNotFoundError`; ``no longer pending`` / ``already
completed`` → :class:`JobNotPendingError`; controller unreachable or a timeout →
:class:`JobActuatorTemporaryError`; anything else (permission, bad partition) →
:class:`JobActuatorPermanentError`. Only ``slurm_conf`` (per-cluster ``SLURM_CONF``) selects the
cluster; each ``[[job_actuation.clusters]]`` entry is one Slurm cluster.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from greencpn.actuate.hooks._common import (
    CommandPermanentError,
    CommandTemporaryError,
    run_command,
)
from greencpn.actuate.jobs.base import (
    BEGIN,
    FEATURES,
    HELD,
    NODES,
    PARTITION,
    STEER_FIELDS,
    JobActuatorPermanentError,
    JobActuatorTemporaryError,
    JobChange,
    JobNotFoundError,
    JobNotPendingError,
    PendingJob,
    SteerMode,
    SteerTarget,
)
from greencpn.domain.slurm import array_tasks, slurm_epoch, slurm_number

_PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"}
_GPU = re.compile(r"gpu(?::[A-Za-z][\w.-]*)?[:=](\d+)")
_SLURM_FIELD = {
    BEGIN: "StartTime",
    PARTITION: "Partition",
    FEATURES: "Features",
    NODES: "ReqNodeList",
}


def _state(value: Any) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value or "").upper()


def gpu_count(*specs: Any) -> int:
    """GPUs in TRES/GRES strings (``gres/gpu=2``, ``gres:gpu:2``, ``gpu:a100:2``); first hit wins."""
    for spec in specs:
        if not spec or not isinstance(spec, str):
            continue
        counts = [int(m.group(1)) for m in _GPU.finditer(spec)]
        if counts:
            return max(counts)
    return 0


def slurm_time(dt: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` in UTC (run scontrol with ``TZ=UTC``)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _array_identity(
    job_id: str, array_job_id: Any, task_id: Any, task_string: str
) -> tuple[str, dict[str, object]]:
    """(greencpn's id, extra) of a Slurm record: a plain job keeps its id; an array task (split
    off, running, or the only one left) is ``A_t`` as the plan names it; the pending meta record
    of an array (tasks not split off yet) keeps its own job id ``A`` — stable while its tasks
    start — with ``array_tasks`` and ``array_spec`` (``scontrol update JobId=A_[spec]`` touches
    exactly those tasks, neither the split-off nor the running ones)."""
    a = slurm_number(array_job_id)
    t = slurm_number(task_id)
    if not a:
        return job_id, {}
    if t is not None:
        return f"{int(a)}_{int(t)}", {"array_job_id": str(int(a)), "array_task": int(t)}
    spec = task_string.split("%", 1)[0]
    if spec:
        tasks = array_tasks(spec)
        if len(tasks) == 1:
            return f"{int(a)}_{tasks[0]}", {"array_job_id": str(int(a)), "array_task": tasks[0]}
        return job_id, {"array_job_id": str(int(a)), "array_tasks": tasks, "array_spec": spec}
    return job_id, {}


def parse_squeue_job(job: Mapping[str, Any], cluster: str = "") -> PendingJob:
    """One entry of ``squeue --json``'s ``jobs`` list."""
    state = _state(job.get("job_state"))
    limit = slurm_number(job.get("time_limit"))
    nodes = slurm_number(job.get("node_count")) or 1.0
    per_node = gpu_count(job.get("tres_per_node"))
    gpus = gpu_count(job.get("tres_per_job"), job.get("tres_req_str")) or int(per_node * nodes)
    prio = slurm_number(job.get("priority"))
    reason = str(job.get("state_reason") or "")
    jid, arr = _array_identity(
        str(job.get("job_id")),
        job.get("array_job_id"),
        job.get("array_task_id"),
        str(job.get("array_task_string") or ""),
    )
    return PendingJob(
        id=jid,
        cluster=cluster or str(job.get("cluster") or ""),
        state=state,
        pending=state in _PENDING_STATES,
        gpus=gpus,
        time_limit_s=None if limit is None else limit * 60.0,
        submit_at=slurm_epoch(job.get("submit_time")),
        begin_at=slurm_epoch(job.get("eligible_time")),
        deadline=slurm_epoch(job.get("deadline")),
        held=prio == 0 or reason.startswith("JobHeld"),
        partition=str(job.get("partition") or ""),
        features=str(job.get("features") or ""),
        required_nodes=str(job.get("required_nodes") or ""),
        user=str(job.get("user_name") or ""),
        account=str(job.get("account") or ""),
        qos=str(job.get("qos") or ""),
        extra={
            "reason": reason,
            "name": str(job.get("name") or ""),
            "node_list": str(job.get("nodes") or ""),
            "started_at": slurm_epoch(job.get("start_time")) if state == "RUNNING" else None,
            **arr,
        },
    )


_WORD = re.compile(r"(?:^|\s)([A-Za-z/:_]+)=(\S*)")


def _text_time(value: str) -> datetime | None:
    if not value or value in ("Unknown", "None", "N/A", "(null)"):
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _null(value: str) -> str:
    return "" if value in ("(null)", "N/A") else value


def parse_scontrol_job(line: str, cluster: str = "") -> PendingJob:
    """``scontrol show job -o ID`` output (run with ``TZ=UTC``)."""
    kv: dict[str, str] = {}
    for m in _WORD.finditer(line):
        kv.setdefault(m.group(1), m.group(2))
    state = kv.get("JobState", "")
    limit = kv.get("TimeLimit", "UNLIMITED")
    limit_s: float | None = None
    if limit not in ("UNLIMITED", "Partition_Limit", ""):
        days, _, hms = limit.rpartition("-")
        parts = [int(p) for p in hms.split(":")]
        while len(parts) < 3:
            parts.insert(0, 0)
        limit_s = (int(days or 0) * 24 + parts[0]) * 3600.0 + parts[1] * 60 + parts[2]
    user = kv.get("UserId", "").split("(")[0]
    task = kv.get("ArrayTaskId", "")
    single = task.isdigit()
    jid, arr = _array_identity(
        kv.get("JobId", ""),
        kv.get("ArrayJobId"),
        task if single else None,
        "" if single else task,
    )
    return PendingJob(
        id=jid,
        cluster=cluster,
        state=state,
        pending=state in _PENDING_STATES,
        gpus=gpu_count(kv.get("TresPerJob"), kv.get("TRES"), kv.get("TresPerNode")),
        time_limit_s=limit_s,
        submit_at=_text_time(kv.get("SubmitTime", "")),
        begin_at=_text_time(kv.get("EligibleTime", "")),
        deadline=_text_time(kv.get("Deadline", "")),
        held=kv.get("Priority") == "0" or kv.get("Reason", "").startswith("JobHeld"),
        partition=_null(kv.get("Partition", "")),
        features=_null(kv.get("Features", "")),
        required_nodes=_null(kv.get("ReqNodeList", "")),
        user=user,
        account=_null(kv.get("Account", "")),
        qos=_null(kv.get("QOS", "")),
        extra={
            "reason": kv.get("Reason", ""),
            "start_time": kv.get("StartTime", ""),
            "node_list": _null(kv.get("NodeList", "")),
            **arr,
        },
    )


class SlurmJobActuator:
    """Pending Slurm jobs through the Slurm client commands (see the module docstring)."""

    name = "slurm"
    supports_begin_time = True

    def __init__(
        self,
        *,
        cluster: str,
        slurm_conf: str | None = None,
        timeout_s: float = 30.0,
        bin_dir: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.slurm_conf = slurm_conf
        self.timeout_s = timeout_s
        self.bin_dir = bin_dir
        # the last state seen of each job (listing or read back): the "before" of the next
        # change, so a change costs one update + one read back. A job that started since is
        # refused by scontrol itself ("no longer pending") and raised as JobNotPendingError.
        self._seen: dict[str, PendingJob] = {}

    # ------------------------------------------------------------------ running commands
    def _argv(self, cmd: str, *args: str) -> list[str]:
        return [f"{self.bin_dir}/{cmd}" if self.bin_dir else cmd, *args]

    def _run(self, cmd: str, *args: str, job_id: str | None = None) -> str:
        env = {"TZ": "UTC"}
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        try:
            return run_command(self._argv(cmd, *args), timeout_s=self.timeout_s, env=env).stdout
        except CommandTemporaryError as exc:
            raise self._classify(exc.stderr_tail or str(exc), job_id, str(exc)) from None
        except CommandPermanentError as exc:
            raise JobActuatorPermanentError(str(exc)) from None

    @staticmethod
    def _classify(text: str, job_id: str | None, full: str) -> Exception:
        low = text.lower()
        if "invalid job id" in low:
            return JobNotFoundError(f"slurm job {job_id} not found: {text.strip()}")
        if "no longer pending" in low or "already completed" in low or "is finished" in low:
            return JobNotPendingError(f"slurm job {job_id} is not pending: {text.strip()}")
        if (
            "unable to contact" in low
            or "connection refused" in low
            or "timed out" in low
            or "socket timed out" in low
            or "temporarily unavailable" in low
        ):
            return JobActuatorTemporaryError(f"slurmctld unreachable: {full}")
        return JobActuatorPermanentError(full)

    # ------------------------------------------------------------------ reading
    def pending_jobs(self) -> list[PendingJob]:
        out = self._run("squeue", "--json", "--states=PENDING")
        try:
            doc = json.loads(out)
        except json.JSONDecodeError as exc:
            raise JobActuatorTemporaryError(f"squeue --json gave no JSON: {exc}") from None
        jobs = [parse_squeue_job(j, self.cluster) for j in doc.get("jobs") or []]
        self._seen = {j.id: j for j in jobs}
        return [j for j in jobs if j.pending]

    def running_jobs(self) -> list[PendingJob]:
        """Running jobs (``squeue --json --states=RUNNING``): the controller's observation of
        what holds GPUs now (``extra``: ``node_list``, ``started_at``). Read only."""
        out = self._run("squeue", "--json", "--states=RUNNING")
        try:
            doc = json.loads(out)
        except json.JSONDecodeError as exc:
            raise JobActuatorTemporaryError(f"squeue --json gave no JSON: {exc}") from None
        jobs = [parse_squeue_job(j, self.cluster) for j in doc.get("jobs") or []]
        return [j for j in jobs if j.state == "RUNNING"]

    def job_gpus(self, job_id: str) -> dict[str, tuple[int, ...]] | None:
        """The GPU indices per node of a RUNNING job (``scontrol show job -d ID``); None when
        the job is not running or Slurm does not know it. Raises when they cannot be read."""
        from greencpn.actuate.gpu.jobs import running_job_gpus

        try:
            out = self._run("scontrol", "show", "job", "-d", job_id, job_id=job_id)
        except JobNotFoundError:
            return None
        return running_job_gpus(out, source=f"scontrol show job -d {job_id}")

    def read(self, job_id: str) -> PendingJob:
        out = self._run("scontrol", "show", "job", "-o", job_id, job_id=job_id).strip()
        if not out:
            raise JobNotFoundError(f"slurm job {job_id} not found")
        # an array's job id lists its meta record and every split-off task: take the one asked
        lines = [parse_scontrol_job(x, self.cluster) for x in out.splitlines() if x.strip()]
        job = next((j for j in lines if j.id == job_id), lines[0])
        self._seen[job_id] = job
        return job

    def _target(self, job_id: str) -> str:
        """The ``JobId=`` of a change: an array's pending meta record as ``A_[its tasks]`` (so
        split-off and running tasks are not touched), anything else as listed."""
        job = self._seen.get(job_id)
        spec = job.extra.get("array_spec") if job is not None else None
        return f"{job.extra['array_job_id']}_[{spec}]" if job is not None and spec else job_id

    # ------------------------------------------------------------------ writing
    def _pending(self, job_id: str) -> PendingJob:
        job = self._seen.get(job_id) or self.read(job_id)
        if not job.pending:
            raise JobNotPendingError(f"slurm job {job_id} is {job.state}: not changed")
        return job

    def _update(self, job_id: str, what: str, words: Sequence[str], message: str) -> JobChange:
        before = self._pending(job_id)
        target = self._target(job_id)
        self._run("scontrol", "update", f"JobId={target}", *words, job_id=job_id)
        after = self.read(job_id)
        b, a = before.value(what), after.value(what)
        return JobChange(job_id, what, b, a, b != a, message)

    def defer(self, job_id: str, begin_at: datetime) -> JobChange:
        return self._update(
            job_id, BEGIN, [f"StartTime={slurm_time(begin_at)}"], f"begin {slurm_time(begin_at)}Z"
        )

    def hold(self, job_id: str) -> JobChange:
        before = self._pending(job_id)
        self._run("scontrol", "hold", self._target(job_id), job_id=job_id)
        after = self.read(job_id)
        return JobChange(job_id, HELD, before.held, after.held, before.held != after.held)

    def release(self, job_id: str) -> JobChange:
        before = self._pending(job_id)
        self._run("scontrol", "release", self._target(job_id), job_id=job_id)
        after = self.read(job_id)
        return JobChange(job_id, HELD, before.held, after.held, before.held != after.held)

    def steer(self, job_id: str, target: SteerTarget) -> list[JobChange]:
        if target.mode == SteerMode.NONE:
            return []
        what = STEER_FIELDS[target.mode]
        if not target.value:
            raise JobActuatorPermanentError(
                f"steer by {target.mode.value}: the pool names no {target.mode.value}"
            )
        current = self._pending(job_id).value(what)
        if current == target.value:
            return [JobChange(job_id, what, current, current, False, "already there")]
        return [self._update(job_id, what, [f"{_SLURM_FIELD[what]}={target.value}"], target.value)]

    def steer_and_defer(
        self, job_id: str, target: SteerTarget, begin_at: datetime
    ) -> list[JobChange]:
        """Steer and defer in ONE ``scontrol update`` (both words), one read back."""
        if target.mode == SteerMode.NONE or not target.value:
            return [*self.steer(job_id, target), self.defer(job_id, begin_at)]
        what = STEER_FIELDS[target.mode]
        before = self._pending(job_id)
        self._run(
            "scontrol",
            "update",
            f"JobId={self._target(job_id)}",
            f"{_SLURM_FIELD[what]}={target.value}",
            f"StartTime={slurm_time(begin_at)}",
            job_id=job_id,
        )
        after = self.read(job_id)
        return [
            JobChange(job_id, f, before.value(f), after.value(f), before.value(f) != after.value(f))
            for f in (what, BEGIN)
        ]

    def restore(self, job_id: str, what: str, value: object) -> JobChange:
        if what == HELD:
            return self.hold(job_id) if value else self.release(job_id)
        if what == BEGIN:
            when = value if isinstance(value, datetime) else None
            text = "now" if when is None else slurm_time(when)
            return self._update(job_id, BEGIN, [f"StartTime={text}"], f"begin restored to {text}")
        if what in (PARTITION, FEATURES, NODES):
            return self._update(
                job_id, what, [f"{_SLURM_FIELD[what]}={value or ''}"], f"{what} restored"
            )
        raise ValueError(f"unknown job field {what!r}")
