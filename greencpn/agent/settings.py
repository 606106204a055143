"""How one node agent runs: a strict, validated settings model.

Built by ``greencpn agent`` from its options (:mod:`greencpn.agent.cli`) or directly in code and
tests. Bad values raise :class:`~greencpn.errors.ConfigError` naming the field and the fix,
never a traceback.
"""

from __future__ import annotations

import socket
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from greencpn.errors import ConfigError

DEFAULT_PORT = 9123
DEFAULT_MAX_BODY_BYTES = 64 * 1024
LOG_INTERVAL_S = 10.0
"""A repeated warning (refused requests by code, connection faults, unknown work) is logged at
most once per this many seconds, with a count of the ones not logged."""


def _short_host_name() -> str:
    return socket.gethostname().split(".")[0]


class AgentSettings(BaseModel):
    """How one agent runs.

    Attributes:
        host: address to bind; 127.0.0.1 unless told otherwise.
        port: TCP port (0: pick a free one).
        node_name: reported name (default: short host name).
        max_body_bytes: larger request bodies are refused with 413 before being read.
        max_skew_s: accepted clock difference between controller and agent, seconds.
        power_command: command that powers the node off (e.g. ``systemctl poweroff``); None refuses.
        power_off_delay_s: settle time of a power-off, seconds: between draining (and
            answering 202) and the final running-work check that, under the agent's lock,
            immediately precedes the power command. Work that appears meanwhile aborts it.
        drain_command / resume_command: optional commands run on drain / resume (the reason
            is in the environment as ``GREENCPN_REASON``). Without a drain command the drain is
            the agent's own flag only: it cannot stop a scheduler from starting work.
        work_command: command whose output tells the running work: its first token if that is
            an integer, else its number of non-empty lines. None: count processes that hold a
            GPU device (``/dev/nvidia<N>``) open, from ``proc_root``. Counted afresh for every
            status and before every power-off decision (never cached).
        command_timeout_s: time limit of every command, seconds; at the limit the command's
            whole process group is killed.
        request_timeout_s: a whole request (line, headers, body) must arrive within this many
            seconds of its first byte, and a new connection must start its first request
            within it too; slower ones are closed (slowloris). Also the time limit of writing
            an answer.
        idle_timeout_s: a connection that has carried an authenticated request may wait this
            long for its next one (keep-alive), seconds.
        max_connections: connections open at once. At the limit a new connection evicts the
            oldest one that never carried an authenticated request; only when every open
            connection is a key holder's is the new one closed (and logged).
        max_connections_per_client: the same, per client IP address.
        proc_root: where /proc is (tests point it elsewhere).
        tls_cert / tls_key / tls_client_ca: serve TLS and require client certificates signed by
            ``tls_client_ca`` (mutual TLS), on top of HMAC.
    """

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    node_name: str = Field(default_factory=_short_host_name, min_length=1)
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, gt=0)
    max_skew_s: float = Field(30.0, gt=0)
    power_command: str | None = None
    power_off_delay_s: float = Field(1.0, ge=0)
    drain_command: str | None = None
    resume_command: str | None = None
    work_command: str | None = None
    command_timeout_s: float = Field(30.0, gt=0)
    request_timeout_s: float = Field(5.0, gt=0)
    idle_timeout_s: float = Field(60.0, gt=0)
    max_connections: int = Field(128, gt=0)
    max_connections_per_client: int = Field(32, gt=0)
    proc_root: str = "/proc"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _config_error(exc) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise _config_error(exc) from None


def _config_error(exc: ValidationError) -> ConfigError:
    """Every problem of one settings model as one ConfigError naming the fields."""
    errors = exc.errors()
    problems = []
    names = []
    for err in errors:
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        names.append(name)
        text = f"{err['msg']} (got {err.get('input')!r})"
        problems.append(text if len(errors) == 1 else f"{name}: {text}")
    flags = ", ".join(f"--{n.replace('_', '-')}" for n in names)
    return ConfigError(
        "; ".join(problems),
        field=names[0] if len(names) == 1 else ", ".join(names),
        fix=f"give {flags} a valid value (see greencpn agent --help)",
    )
