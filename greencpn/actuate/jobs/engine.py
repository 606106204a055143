"""Job actuation logic: decide per pending job what the plan asks, carry it out, undo it.

:func:`decide` is pure (jobs, plan entries, policy, ``now`` in; :class:`JobAction` out):

* jobs of excluded users / accounts / partitions / QOS, jobs held by someone else, jobs not in
  the plan and jobs without a time limit are never touched (the last: no latest safe start);
* **latest safe start** = deadline − time limit (the job at full power), where the deadline is
  the scheduler's own (Slurm ``--deadline``) or release + time limit + slack (per QOS, else per
  partition, else the default);
* a job whose planned start is ahead is **deferred** to ``min(planned start, latest safe start)``
  (never before the begin time its user asked for) — or held, with the release scheduled in the
  ledger, when ``defer_with = "hold"`` or the scheduler has no begin time (Kubernetes gates);
* it is **steered** to its planned pool (partition / features / nodes / node affinity);
* once the planned start has come it is **released** when its pool is ready; while the pool is
  not ready it waits (re-deferred to the next step), but never past its latest safe start, where
  it is released anyway (``failsafe_release``: a ledger row and a counter in the report).

:func:`execute` records the original value of every field before changing it (ledger table
``jobs``), writes an intent row, calls the actuator, reads the job back and records the result.
In shadow mode it records what would be done and changes nothing. :func:`undo_jobs` restores
every touched job from the recorded originals.

Modules by role: :mod:`~greencpn.actuate.jobs.rules` (policy, deadlines, latest safe start,
steer targets), :mod:`~greencpn.actuate.jobs.decisions` (:func:`decide`),
:mod:`~greencpn.actuate.jobs.execution` (:func:`execute`) and :mod:`~greencpn.actuate.jobs.undo`;
this module re-exports their names.
"""

from __future__ import annotations

from greencpn.actuate.jobs.decisions import (
    JobAction,
    PlannedJob,
    decide,
    expand_arrays,
    planned_jobs,
)
from greencpn.actuate.jobs.execution import (
    JobOutcome,
    JobReport,
    execute,
)
from greencpn.actuate.jobs.rules import (
    BEGIN_TOLERANCE_S,
    PHASE,
    JobPolicy,
    deadline_of,
    gated_release_by,
    latest_safe_start,
    steer_targets,
)
from greencpn.actuate.jobs.undo import undo_jobs

__all__ = [
    "BEGIN_TOLERANCE_S",
    "JobAction",
    "JobOutcome",
    "JobPolicy",
    "JobReport",
    "PHASE",
    "PlannedJob",
    "deadline_of",
    "decide",
    "execute",
    "expand_arrays",
    "gated_release_by",
    "latest_safe_start",
    "planned_jobs",
    "steer_targets",
    "undo_jobs",
]
