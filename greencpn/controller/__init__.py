"""The control step shared by the report, the daemon and the what-if replay.

``from greencpn.controller import Controller, Mode, Levers, StepStatus, StepResult,
NotLeaderError`` — see :mod:`greencpn.controller.step` and docs/controller.md.
"""

from greencpn.controller.jobs import JobActuator, JobDecision, RecordingJobActuator
from greencpn.controller.step import ConfigQueue, Controller, Queue, default_backends
from greencpn.controller.types import (
    Levers,
    Mode,
    NotLeaderError,
    QueueState,
    RunningJob,
    StepResult,
    StepStatus,
)

__all__ = [
    "ConfigQueue",
    "Controller",
    "JobActuator",
    "JobDecision",
    "Levers",
    "Mode",
    "NotLeaderError",
    "Queue",
    "QueueState",
    "RecordingJobActuator",
    "RunningJob",
    "StepResult",
    "StepStatus",
    "default_backends",
]
