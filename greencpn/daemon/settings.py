"""Daemon settings: the ``[daemon]`` table of ``control.toml`` (beside the fleet config).

``control.toml`` already holds ``[control]`` (the apply-time safety settings read by
:class:`greencpn.actuate.safety.ControlSettings`, which ignores other tables); the daemon reads
``[daemon]`` from the same file, so one file holds everything an operator changes to trust the
controller step by step::

    [control]
    allow_actuation = true          # needed before any mode acts on hardware

    [daemon]
    mode = "enforce"                # "shadow" (default) | "enforce"
    offset_s = 60                   # step 60 s after each slot boundary
    on_exit = "restore"             # "leave" (default) | "restore"

    [daemon.levers.fra-a100]        # per-pool opt-in: this pool only gets caps
    caps = true
    power = false
    jobs = false

    [daemon.etcd]                   # high availability: omit for a single instance
    endpoints = ["127.0.0.1:2379"]

Every field is optional; unknown keys and wrong types are refused (pydantic, strict) with the
file, the field and the fix. Compatibility with ``greencpn apply``: without ``[daemon] mode``
the mode follows ``[control] allow_actuation`` (``true`` → enforce, else shadow); an explicit
``mode = "enforce"`` with ``allow_actuation = false`` is a contradiction and is refused.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from greencpn.errors import ConfigError

CONTROL_FILE = "control.toml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class LeverSettings(_Strict):
    """Which levers the daemon may pull on one pool in enforce mode (all by default)."""

    caps: bool = Field(default=True, description="set GPU power caps")
    power: bool = Field(default=True, description="drain and power nodes off/on")
    jobs: bool = Field(default=True, description="hold, release and shift jobs")


class EtcdSettings(_Strict):
    """Leader election through an etcd lease (two or more ``greencpn run`` on two head nodes)."""

    endpoints: list[str] = Field(
        min_length=1, description="host:port of etcd's client URL (the first reachable is used)"
    )
    key: str = Field(default="/greencpn/leader", description="the leader key")
    ttl_s: int = Field(
        default=10, ge=2, le=3600, description="lease TTL, s: failover takes at most ~TTL × 4/3"
    )
    timeout_s: float = Field(default=2.0, gt=0, le=60, description="per-request timeout, s")
    name: str | None = Field(
        default=None, description="this instance's name in the leader key (default: hostname:pid)"
    )

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        for ep in value:
            host, sep, port = ep.removeprefix("http://").rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"endpoint {ep!r} is not host:port (e.g. 127.0.0.1:2379)")
        return value


class HttpSettings(_Strict):
    """The one HTTP server: GET /metrics /healthz /readyz, POST /step /reload."""

    enabled: bool = True
    host: str = Field(default="127.0.0.1", description="listen address (127.0.0.1: local only)")
    port: int = Field(default=9464, ge=0, le=65535, description="listen port (0: any free port)")
    token_file: str | None = Field(
        default=None,
        description="file holding a bearer token that POST requests must send; without it POST "
        "is accepted from loopback clients only",
    )

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"
            ) from None
        return value


class DaemonSettings(_Strict):
    """``[daemon]``: how ``greencpn run`` schedules, acts and exits."""

    mode: Literal["shadow", "enforce"] | None = Field(
        default=None,
        description="shadow: record what would be done; enforce: act (default: enforce iff "
        "[control] allow_actuation = true, else shadow)",
    )
    levers: dict[str, LeverSettings] = Field(
        default_factory=dict,
        description="per-pool opt-in in enforce mode; a pool not listed gets every lever, unless "
        "only_listed_pools = true",
    )
    only_listed_pools: bool = Field(
        default=False, description="in enforce mode, pools not in [daemon.levers] get no lever"
    )
    offset_s: float = Field(
        default=30.0, ge=0, description="step this long after each slot boundary, s"
    )
    period_s: float | None = Field(
        default=None,
        gt=0,
        description="step period, s (default: the config's slot length); must divide a day",
    )
    misfire_grace_s: float = Field(
        default=300.0,
        gt=0,
        description="a step that could not start on time still runs if at most this late, s",
    )
    on_sigterm: Literal["finish", "abandon"] = Field(
        default="finish",
        description="finish: let the running step end; abandon: stop acting at the next action "
        "(the rest is recorded as skipped), then exit",
    )
    stop_timeout_s: float = Field(
        default=120.0, gt=0, description="longest wait for the running step on SIGTERM, s"
    )
    on_exit: Literal["leave", "restore"] = Field(
        default="leave",
        description="leave: change nothing on exit; restore: default caps, release held jobs, "
        "wake all nodes (leader only)",
    )
    json_logs: bool = Field(default=False, description="log one JSON object per line")
    http: HttpSettings = Field(default_factory=HttpSettings)
    etcd: EtcdSettings | None = None

    @field_validator("period_s")
    @classmethod
    def _period(cls, value: float | None) -> float | None:
        if value is not None and (86400.0 / value) != round(86400.0 / value):
            raise ValueError(f"period_s = {value} does not divide a day (86400 s)")
        return value


def _format(exc: ValidationError, source: str) -> ConfigError:
    err = exc.errors()[0]
    field = "daemon" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    hints = {
        "extra_forbidden": "remove it or check its spelling against docs/daemon.md",
        "literal_error": "use one of the listed values",
        "bool_type": "write true or false",
        "int_type": "write a whole number",
        "float_type": "write a number",
        "string_type": "write a quoted string",
    }
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return ConfigError(
        msg + more, source=source, field=field, fix=hints.get(err["type"], "see docs/daemon.md")
    )


def control_path_for(config_path: str | Path, control_path: str | Path | None = None) -> Path:
    """``control_path`` if given, else ``control.toml`` beside the fleet config."""
    if control_path is not None:
        return Path(control_path)
    return Path(config_path).resolve().parent / CONTROL_FILE


def load_settings(
    config_path: str | Path, control_path: str | Path | None = None
) -> tuple[DaemonSettings, bool]:
    """Read ``[daemon]`` (and ``[control] allow_actuation``) from control.toml.

    Returns the settings with ``mode`` resolved, and whether ``[control]`` allows actuation.
    A missing control.toml beside the config means all defaults (shadow mode); a missing file
    named explicitly is an error.
    """
    path = control_path_for(config_path, control_path)
    if not path.is_file():
        if control_path is not None:
            raise ConfigError(
                "control file not found", source=str(path), fix="create it or drop --control"
            )
        return DaemonSettings(mode="shadow"), False
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"not valid TOML: {exc}", source=str(path), fix="fix the TOML syntax"
        ) from None
    return settings_from_mapping(data, source=str(path))


def settings_from_mapping(data: dict[str, Any], source: str) -> tuple[DaemonSettings, bool]:
    control = data.get("control", {})
    allow = control.get("allow_actuation", False) if isinstance(control, dict) else False
    if not isinstance(allow, bool):
        raise ConfigError(
            f"{allow!r} is not true/false",
            source=source,
            field="control.allow_actuation",
            fix="write true or false",
        )
    raw = data.get("daemon", {})
    if not isinstance(raw, dict):
        raise ConfigError(
            "must be a table", source=source, field="daemon", fix="write a [daemon] header"
        )
    try:
        settings = DaemonSettings.model_validate(raw)
    except ValidationError as exc:
        raise _format(exc, source) from None
    if settings.mode is None:
        settings = settings.model_copy(update={"mode": "enforce" if allow else "shadow"})
    elif settings.mode == "enforce" and "allow_actuation" in control and not allow:
        raise ConfigError(
            "mode = 'enforce' but [control] allow_actuation = false",
            source=source,
            field="daemon.mode",
            fix="set allow_actuation = true in [control], or mode = 'shadow'",
        )
    return settings, bool(allow)


def check_pools(settings: DaemonSettings, pools: list[str], source: str) -> None:
    """Refuse ``[daemon.levers.X]`` naming a pool the fleet config does not have."""
    unknown = sorted(set(settings.levers) - set(pools))
    if unknown:
        raise ConfigError(
            f"unknown pool(s) {unknown}",
            source=source,
            field="daemon.levers",
            fix=f"use pool names from the fleet config: {sorted(pools)}",
        )
