"""What the node logic can refuse, typed by why (no HTTP here).

:mod:`greencpn.agent.routes` is the one place that turns these into HTTP statuses:

* :class:`InvalidRequest` — the request itself is wrong (unknown GPU, out of range, bad field):
  400;
* :class:`Refused` — the node's state or configuration refuses it (busy, work unknown, power
  control not configured, powering off, no GPUs, idempotency key reused): 409;
* :class:`CommandFailed` — a drain / resume command failed: 503 when it timed out (retry),
  else 500.
"""

from __future__ import annotations


class AgentError(Exception):
    """A refusal with a machine-readable ``code``, a message and a ``fix``."""

    def __init__(self, code: str, message: str, fix: str = "") -> None:
        self.code = code
        self.fix = fix
        super().__init__(message)


class InvalidRequest(AgentError):
    """The request's values are wrong."""


class Refused(AgentError):
    """The node's state or configuration refuses the request."""


class CommandFailed(AgentError):
    """A command the request needed failed; ``temporary`` when it timed out."""

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        self.temporary = temporary
        super().__init__("command_failed", message)
