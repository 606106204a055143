"""``command`` job actuator: any other scheduler, through one script and JSON on stdin.

greencpn runs the configured command once per operation and writes one JSON object to its
stdin::

    {"op": "defer", "cluster": "lab", "job_id": "42",
     "begin_at": "2026-12-01T15:00:00Z",          # defer: the new begin time
     "planned_pool": "fra-a100", "start": "2026-12-01T15:00:00Z",
     "latest_safe_start": "2026-12-01T18:00:00Z",  # plan context (null if unknown)
     "steer": {"mode": "partition", "value": "gpu"},  # steer only
     "field": "partition", "value": "main"}           # restore only
                                 # (restore begin_at with value null = eligible now)

``op`` is one of ``pending``, ``read``, ``defer``, ``hold``, ``release``, ``steer``, ``restore``.
The script prints the job **as the scheduler has it after the operation** (greencpn reads every
change back from this), as one JSON object::

    {"id": "42", "state": "PENDING", "pending": true, "gpus": 8, "time_limit_s": 3600,
     "submit_at": "...Z", "begin_at": "...Z" | null, "deadline": "...Z" | null, "held": false,
     "partition": "gpu", "features": "", "required_nodes": "", "user": "alice",
     "account": "physics", "qos": ""}

and for ``pending`` ``{"jobs": [<job>, ...]}``. Exit codes as for the node command hook: 0 ok;
126, 127 and ``permanent_exit_codes`` mean "do not retry" (:class:`JobActuatorPermanentError`);
any other non-zero status is temporary. Two more: **3** = no such job
(:class:`JobNotFoundError`), **4** = the job is no longer pending (:class:`JobNotPendingError`).
A timeout kills the process group and is temporary.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from greencpn.actuate.jobs.base import (
    BEGIN,
    HELD,
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
from greencpn.actuate.ledger import _dt, _iso

EXIT_NOT_FOUND = 3
EXIT_NOT_PENDING = 4


def job_from_json(obj: Mapping[str, Any], cluster: str) -> PendingJob:
    """A job object printed by the script (see the module docstring)."""
    if not isinstance(obj, Mapping) or "id" not in obj:
        raise JobActuatorTemporaryError(f"job command printed {obj!r}, not a job object with an id")

    def t(key: str) -> datetime | None:
        v = obj.get(key)
        return _dt(v) if isinstance(v, str) and v else None

    limit = obj.get("time_limit_s")
    return PendingJob(
        id=str(obj["id"]),
        cluster=cluster,
        state=str(obj.get("state") or "PENDING"),
        pending=bool(obj.get("pending", True)),
        gpus=int(obj.get("gpus") or 0),
        time_limit_s=None if limit is None else float(limit),
        submit_at=t("submit_at"),
        begin_at=t("begin_at"),
        deadline=t("deadline"),
        held=bool(obj.get("held", False)),
        partition=str(obj.get("partition") or ""),
        features=str(obj.get("features") or ""),
        required_nodes=str(obj.get("required_nodes") or ""),
        user=str(obj.get("user") or ""),
        account=str(obj.get("account") or ""),
        qos=str(obj.get("qos") or ""),
    )


class CommandJobActuator:
    name = "command"
    supports_begin_time = True

    def __init__(
        self,
        *,
        cluster: str,
        argv: Sequence[str],
        timeout_s: float = 30.0,
        permanent_exit_codes: Sequence[int] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.argv = list(argv)
        self.timeout_s = timeout_s
        self.permanent_exit_codes = set(permanent_exit_codes) | {126, 127}
        self.env = dict(env or {})
        self._context: dict[str, dict[str, object]] = {}

    def note_plan(
        self,
        job_id: str,
        *,
        pool: str | None,
        start: datetime | None,
        latest_safe_start: datetime | None,
    ) -> None:
        """Plan context for the next calls about ``job_id`` (sent on stdin)."""
        self._context[job_id] = {
            "planned_pool": pool,
            "start": _iso(start),
            "latest_safe_start": _iso(latest_safe_start),
        }

    def _call(self, op: str, job_id: str | None = None, **payload: object) -> Any:
        msg: dict[str, object] = {"op": op, "cluster": self.cluster, "job_id": job_id}
        msg.update(
            self._context.get(
                job_id or "", {"planned_pool": None, "start": None, "latest_safe_start": None}
            )
        )
        msg.update(payload)
        try:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError) as exc:
            raise JobActuatorPermanentError(f"job command {self.argv[0]}: {exc}") from None
        try:
            out, err = proc.communicate(json.dumps(msg) + "\n", timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise JobActuatorTemporaryError(
                f"job command {op} timed out after {self.timeout_s:g} s and was killed"
            ) from None
        tail = (err or "").strip()[-400:]
        rc = proc.returncode
        if rc == EXIT_NOT_FOUND:
            raise JobNotFoundError(f"job {job_id}: not found ({tail})")
        if rc == EXIT_NOT_PENDING:
            raise JobNotPendingError(f"job {job_id}: not pending ({tail})")
        if rc in self.permanent_exit_codes:
            raise JobActuatorPermanentError(f"job command {op} exited {rc}: {tail}")
        if rc != 0:
            raise JobActuatorTemporaryError(f"job command {op} exited {rc}: {tail}")
        try:
            return json.loads(out)
        except json.JSONDecodeError as exc:
            raise JobActuatorTemporaryError(f"job command {op} printed no JSON: {exc}") from None

    def pending_jobs(self) -> list[PendingJob]:
        doc = self._call("pending")
        jobs = doc.get("jobs") if isinstance(doc, Mapping) else None
        if not isinstance(jobs, list):
            raise JobActuatorTemporaryError('job command "pending" must print {"jobs": [...]}')
        return [j for j in (job_from_json(o, self.cluster) for o in jobs) if j.pending]

    def read(self, job_id: str) -> PendingJob:
        return job_from_json(self._call("read", job_id), self.cluster)

    def _change(self, job_id: str, what: str, op: str, **payload: object) -> JobChange:
        before = self.read(job_id)
        if not before.pending:
            raise JobNotPendingError(f"job {job_id} is {before.state}: not changed")
        after = job_from_json(self._call(op, job_id, **payload), self.cluster)
        b, a = before.value(what), after.value(what)
        return JobChange(job_id, what, b, a, b != a)

    def defer(self, job_id: str, begin_at: datetime) -> JobChange:
        return self._change(job_id, BEGIN, "defer", begin_at=_iso(begin_at))

    def hold(self, job_id: str) -> JobChange:
        return self._change(job_id, HELD, "hold")

    def release(self, job_id: str) -> JobChange:
        return self._change(job_id, HELD, "release")

    def steer(self, job_id: str, target: SteerTarget) -> list[JobChange]:
        if target.mode == SteerMode.NONE:
            return []
        what = STEER_FIELDS[target.mode]
        return [
            self._change(
                job_id, what, "steer", steer={"mode": target.mode.value, "value": target.value}
            )
        ]

    def restore(self, job_id: str, what: str, value: object) -> JobChange:
        shown = _iso(value) if isinstance(value, datetime) else value
        return self._change(job_id, what, "restore", field=what, value=shown)
