"""The node agent: a small authenticated HTTP/1.1 service that actuates one node.

Endpoints (every request signed, see :mod:`greencpn.agent.auth`; JSON in, JSON out):

* ``GET  /v1/status`` — node name, time, uptime, GPUs (power, energy counter, limits), running
  work, drained flag, power state.
* ``POST /v1/gpu/power-limit`` — ``{"index": 0 | "all", "power_limit_w": 250}``; the limit must lie
  within the device's range (400 otherwise), read before write.
* ``POST /v1/gpu/clocks`` — ``{"index": 0 | "all", "min_mhz": 900, "max_mhz": 1410}`` or
  ``{"index": ..., "reset": true}``.
* ``POST /v1/gpu/restore-defaults`` — ``{}``: default power limits, clocks unlocked.
* ``POST /v1/power`` — ``{"action": "drain" | "resume" | "off", "reason": "..."}``. ``off`` needs a
  configured ``--power-command`` and no running work; it answers 202 and runs the command a
  moment later, so the answer gets out first.

Errors are ``{"error": {"code": ..., "message": ..., "fix": ...}}`` with 400 (bad value), 401
(authentication), 404, 405, 409 (refused by state or configuration), 411/413 (body), 500, 503.

The server is the standard library's ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive
(measured in ``bench/bench_agent.py``), optionally behind TLS with client certificates required.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from greencpn import __version__
from greencpn.actuate.base import Change, GpuBackend, GpuInfo
from greencpn.agent.auth import (
    HEADER_RESPONSE_SIGNATURE,
    SCHEME,
    SCOPE_CONTROL,
    AuthError,
    ScopedKey,
    Verified,
    Verifier,
)
from greencpn.clock import Clock, SystemClock
from greencpn.errors import ConfigError, GreencpnError, PermanentError, TemporaryError

log = logging.getLogger(__name__)

DEFAULT_PORT = 9123
DEFAULT_MAX_BODY_BYTES = 64 * 1024
REFUSAL_LOG_INTERVAL_S = 10.0


class ApiError(Exception):
    """An answer other than success: HTTP status, machine code, message and fix."""

    def __init__(self, status: int, code: str, message: str, fix: str = "") -> None:
        self.status = status
        self.code = code
        self.fix = fix
        super().__init__(message)


@dataclass
class AgentSettings:
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
        command_timeout_s: time limit of every command, seconds.
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

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    node_name: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_skew_s: float = 30.0
    power_command: str | None = None
    power_off_delay_s: float = 1.0
    drain_command: str | None = None
    resume_command: str | None = None
    work_command: str | None = None
    command_timeout_s: float = 30.0
    request_timeout_s: float = 5.0
    idle_timeout_s: float = 60.0
    max_connections: int = 128
    max_connections_per_client: int = 32
    proc_root: str = "/proc"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None

    def __post_init__(self) -> None:
        positive = (
            "max_body_bytes",
            "max_skew_s",
            "command_timeout_s",
            "request_timeout_s",
            "idle_timeout_s",
            "max_connections",
            "max_connections_per_client",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(
                    f"must be a positive number, got {value!r}",
                    field=name,
                    fix=f"--{name.replace('_', '-')} takes a value > 0",
                )
        if self.power_off_delay_s < 0:
            raise ConfigError(
                f"must be >= 0, got {self.power_off_delay_s!r}", field="power_off_delay_s"
            )


# ------------------------------------------------------------------------------- running work

_GPU_DEVICE_RE = re.compile(r"^/dev/nvidia[0-9]+$")


def count_gpu_processes(proc_root: str = "/proc", *, exclude_pid: int | None = None) -> int:
    """Count processes holding a GPU device (``/dev/nvidia<N>``) open, by reading ``proc_root``.

    A process whose open files cannot be read (another user's, when the agent is not root) may
    be a GPU job, so the count is then unknown: :class:`TemporaryError` is raised rather than
    counting it idle. Processes that exit while being read are skipped.

    Raises:
        TemporaryError: ``proc_root`` cannot be listed, or some process cannot be inspected.
    """
    count = 0
    seen = 0
    unreadable: list[str] = []
    try:
        entries = os.listdir(proc_root)
    except OSError as exc:
        raise TemporaryError(f"cannot list {proc_root}: {exc.strerror}") from None
    for entry in entries:
        if not entry.isdigit() or (exclude_pid is not None and int(entry) == exclude_pid):
            continue
        seen += 1
        fd_dir = os.path.join(proc_root, entry, "fd")
        try:
            fds = os.listdir(fd_dir)
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        except OSError:
            unreadable.append(entry)
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except (FileNotFoundError, ProcessLookupError):
                continue  # closed or exited meanwhile
            except OSError:
                unreadable.append(entry)
                break
            if _GPU_DEVICE_RE.match(target):
                count += 1
                break
    if unreadable:
        shown = ", ".join(unreadable[:5]) + (", ..." if len(unreadable) > 5 else "")
        raise TemporaryError(
            f"open files of {len(unreadable)} of {seen} processes in {proc_root} are not "
            f"readable (pid {shown}); any of them may be a GPU job"
        )
    return count


def parse_work_output(text: str) -> int:
    """A work command's output → running work: first token if an integer, else non-empty lines."""
    stripped = text.strip()
    if not stripped:
        return 0
    first = stripped.split()[0]
    if first.isdigit() and len(stripped.split()) == 1:
        return int(first)
    return sum(1 for line in stripped.splitlines() if line.strip())


def run_command(
    command: str, timeout_s: float, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (split like a shell would, no shell) in its own process group.

    At the timeout the whole group is killed (SIGKILL), so a hung command's children and
    grandchildren do not outlive it.

    Raises:
        TemporaryError: the command timed out.
        PermanentError: the command cannot be started.
    """
    env = dict(os.environ)
    env.update(env_extra or {})
    argv = shlex.split(command)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # its own process group: killed as one at the timeout
        )
    except OSError as exc:
        raise PermanentError(f"cannot run command {command!r}: {exc.strerror}") from None
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise TemporaryError(
            f"command timed out after {timeout_s:g} s (its process group was killed): {command}"
        ) from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.communicate(timeout=5)  # reap it; its pipes close once the group is gone
    except subprocess.TimeoutExpired:  # a member that left the group still holds a pipe
        log.error("command %d: output pipes still open after killing its group", proc.pid)


class FreshCounter:
    """Calls ``count`` for concurrent callers at most once at a time, sharing results, yet never
    hands a caller a result whose call began before the caller arrived: as fresh as calling
    ``count`` itself, cheaper when status requests come in together.
    """

    def __init__(self, count: Callable[[], dict[str, Any]]) -> None:
        self._count = count
        self._cond = threading.Condition()
        self._running = False
        self._started = 0  # generations begun
        self._done = 0  # newest generation finished
        self._result: dict[str, Any] = {}
        self.calls = 0

    def __call__(self) -> dict[str, Any]:
        with self._cond:
            need = self._started + 1  # the first generation that begins after we arrived
            while self._done < need:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                mine = self._started
                self._cond.release()
                try:
                    result = self._count()
                finally:
                    self._cond.acquire()
                    self._running = False
                    self.calls += 1
                    self._cond.notify_all()
                self._result, self._done = result, mine
            return self._result


# ---------------------------------------------------------------------------------- the agent


def _change_dict(change: Change) -> dict[str, Any]:
    return dataclasses.asdict(change)


def _gpu_selector(body: dict[str, Any], gpus: list[GpuInfo]) -> list[GpuInfo]:
    index = body.get("index", "all")
    if index == "all":
        return gpus
    if isinstance(index, bool) or not isinstance(index, int):
        raise ApiError(400, "bad_value", f'index must be an integer or "all", got {index!r}')
    for gpu in gpus:
        if gpu.index == index:
            return [gpu]
    raise ApiError(
        400,
        "unknown_gpu",
        f"no GPU with index {index} on this node",
        fix=f"indices here: {[g.index for g in gpus]}",
    )


def _number(body: dict[str, Any], name: str) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, "bad_value", f"{name} must be a finite number, got {value!r}")
    return float(value)


def _only_keys(body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise ApiError(
            400, "bad_value", f"unknown field(s) {extra}", fix=f"allowed fields: {sorted(allowed)}"
        )


class NodeAgent:
    """What the agent does, independent of HTTP (so it can be tested and reused).

    Args:
        backend: the node's GPUs, or None on a node without GPUs.
        settings: agent settings.
        clock: tells the time (status timestamps, uptime).
        monotonic: seconds counter for caches (injectable).
    """

    def __init__(
        self,
        backend: GpuBackend | None,
        settings: AgentSettings,
        clock: Clock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.clock = clock or SystemClock()
        self._monotonic = monotonic
        self.started_at = self.clock.now()
        self.drained = False
        self.power_state = "on"
        self.last_power_off: dict[str, Any] | None = None
        self._off_cancel: threading.Event | None = None
        self._work_log: tuple[float, int] = (-math.inf, 0)
        self._fresh_work = FreshCounter(self._count_work)
        self._log_lock = threading.Lock()
        self._lock = threading.Lock()  # serialises every change

    # ---- telemetry

    def node_uptime_s(self) -> float | None:
        try:
            text = Path(self.settings.proc_root, "uptime").read_text()
            return float(text.split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running_work(self) -> dict[str, Any]:
        """``{"count": int | None, "source": str, "error": str?}``, counted now.

        ``count`` is None when the work cannot be known (command failed or timed out, some
        ``/proc`` entry unreadable): callers must treat that as busy. Concurrent callers share
        a count that began after each of them arrived (:class:`FreshCounter`), never an older
        one.
        """
        return self._fresh_work()

    def _count_work(self) -> dict[str, Any]:
        cmd = self.settings.work_command
        try:
            if cmd:
                proc = run_command(cmd, self.settings.command_timeout_s)
                if proc.returncode != 0:
                    raise TemporaryError(
                        f"work command exited {proc.returncode}: {proc.stderr.strip()[:200]}"
                    )
                return {"count": parse_work_output(proc.stdout), "source": f"command: {cmd}"}
            n = count_gpu_processes(self.settings.proc_root, exclude_pid=os.getpid())
            return {"count": n, "source": f"{self.settings.proc_root}/*/fd -> /dev/nvidia<N>"}
        except GreencpnError as exc:
            self._log_work_unknown(str(exc))
            return {
                "count": None,
                "source": f"command: {cmd}" if cmd else "proc",
                "error": str(exc),
            }

    def _log_work_unknown(self, error: str) -> None:
        """Log an unknown work count at most once per ``REFUSAL_LOG_INTERVAL_S`` (status is
        polled; a node whose count is never readable must not fill the log)."""
        now = self._monotonic()
        with self._log_lock:
            last, suppressed = self._work_log
            if now - last < REFUSAL_LOG_INTERVAL_S:
                self._work_log = (last, suppressed + 1)
                return
            self._work_log = (now, 0)
        more = f" (+{suppressed} more not logged)" if suppressed else ""
        log.warning("running work unknown: %s%s", error, more)

    def check_power_control(self) -> None:
        """Refuse power control (at start) when the running-work count cannot be trusted.

        Raises:
            ConfigError: a power command is configured but counting the work fails now.
        """
        if not self.settings.power_command:
            return
        work = self.running_work()
        if work["count"] is None:
            raise ConfigError(
                f"refusing to start with power control: the running work cannot be counted "
                f"({work.get('error')}), so a busy node could look idle",
                field="power_command",
                fix="run the agent as root in the host's pid namespace, or pass --work-command "
                "(e.g. 'squeue -h -t R -w NODE -o %i'), or leave out --power-command",
            )

    def status(self) -> dict[str, Any]:
        now = self.clock.now()
        gpus: list[dict[str, Any]] = []
        backend_error = None
        if self.backend is not None:
            try:
                infos = self.backend.list_gpus()
            except GreencpnError as exc:
                infos = []
                backend_error = str(exc)
            for info in infos:
                entry: dict[str, Any] = {
                    "index": info.index,
                    "uuid": info.uuid,
                    "name": info.name,
                    "power_limit_w": info.power_limit_current_w,
                    "power_limit_min_w": info.power_limit_min_w,
                    "power_limit_max_w": info.power_limit_max_w,
                    "power_limit_default_w": info.power_limit_default_w,
                }
                try:
                    entry["power_w"] = self.backend.power_w(info.index)
                    entry["energy_j"] = self.backend.energy_j(info.index)
                except GreencpnError as exc:
                    entry["error"] = str(exc)
                gpus.append(entry)
        out: dict[str, Any] = {
            "node": self.settings.node_name,
            "time": now.isoformat().replace("+00:00", "Z"),
            "power": self.power_state,
            "drained": self.drained,
            "uptime_s": self.node_uptime_s(),
            "agent": {
                "version": __version__,
                "uptime_s": round((now - self.started_at).total_seconds(), 3),
            },
            "gpu_backend": self.backend.name if self.backend is not None else None,
            "gpus": gpus,
            "gpu_power_w": round(sum(g.get("power_w", 0.0) for g in gpus), 3),
            "gpu_energy_j": round(sum(g.get("energy_j", 0.0) for g in gpus), 3),
            "running_work": self.running_work(),
            "power_off_enabled": self.settings.power_command is not None,
            "last_power_off": self.last_power_off,
        }
        if backend_error:
            out["gpu_error"] = backend_error
        return out

    # ---- GPU actions

    def _require_backend(self) -> GpuBackend:
        if self.backend is None:
            raise ApiError(
                409,
                "no_gpus",
                "this agent runs without a GPU backend",
                fix="start the agent with --gpu nvml",
            )
        return self.backend

    def _refuse_while_powering_off(self) -> None:
        if self.power_state == "shutting_down":
            raise ApiError(
                409,
                "powering_off",
                f"{self.settings.node_name} is being powered off; GPU settings are not changed",
                fix="resume the node first if it should stay on",
            )

    def set_power_limit(self, body: dict[str, Any]) -> dict[str, Any]:
        _only_keys(body, {"index", "power_limit_w"})
        backend = self._require_backend()
        limit_w = _number(body, "power_limit_w")
        with self._lock:
            self._refuse_while_powering_off()
            targets = _gpu_selector(body, backend.list_gpus())
            for gpu in targets:  # validate all before changing any
                if not gpu.power_limit_min_w <= limit_w <= gpu.power_limit_max_w:
                    raise ApiError(
                        400,
                        "out_of_range",
                        f"power_limit_w {limit_w:g} is outside GPU {gpu.index}'s range "
                        f"[{gpu.power_limit_min_w:g}, {gpu.power_limit_max_w:g}] W",
                        fix="ask for a limit within the device's range",
                    )
            changes = [backend.set_power_limit_w(gpu.index, limit_w) for gpu in targets]
        return {"changes": [_change_dict(c) for c in changes]}

    def set_clocks(self, body: dict[str, Any]) -> dict[str, Any]:
        _only_keys(body, {"index", "min_mhz", "max_mhz", "reset"})
        backend = self._require_backend()
        with self._lock:
            self._refuse_while_powering_off()
            targets = _gpu_selector(body, backend.list_gpus())
            if body.get("reset") is True:
                if "min_mhz" in body or "max_mhz" in body:
                    raise ApiError(400, "bad_value", "give either reset or min_mhz/max_mhz")
                changes = [backend.reset_clocks(g.index) for g in targets]
                return {"changes": [_change_dict(c) for c in changes]}
            lo, hi = _number(body, "min_mhz"), _number(body, "max_mhz")
            if lo != int(lo) or hi != int(hi) or not 0 < lo <= hi:
                raise ApiError(400, "bad_value", "need whole MHz with 0 < min_mhz <= max_mhz")
            for gpu in targets:
                clocks = gpu.supported_graphics_clocks_mhz
                if clocks and not (min(clocks) <= lo and hi <= max(clocks)):
                    raise ApiError(
                        400,
                        "out_of_range",
                        f"clocks [{lo:g}, {hi:g}] MHz outside GPU {gpu.index}'s "
                        f"supported [{min(clocks)}, {max(clocks)}] MHz",
                    )
            changes = [backend.lock_clocks_mhz(g.index, int(lo), int(hi)) for g in targets]
        return {"changes": [_change_dict(c) for c in changes]}

    def restore_defaults(self, body: dict[str, Any]) -> dict[str, Any]:
        _only_keys(body, set())
        backend = self._require_backend()
        with self._lock:
            self._refuse_while_powering_off()
            changes = backend.restore_defaults()
        return {"changes": [_change_dict(c) for c in changes]}

    # ---- node power

    def power(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        _only_keys(body, {"action", "reason"})
        action = body.get("action")
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 200:
            raise ApiError(400, "bad_value", "reason must be a string of at most 200 characters")
        node = self.settings.node_name
        with self._lock:
            if action == "drain":
                before = self.drained
                if self.settings.drain_command and not before:
                    self._run_checked(self.settings.drain_command, reason)
                self.drained = True
                return 200, {
                    "changes": [
                        _change_dict(
                            Change(
                                node,
                                "drained",
                                before,
                                True,
                                changed=not before,
                                message=reason or "drained",
                            )
                        )
                    ]
                }
            if action == "resume":
                cancel = self._off_cancel
                if cancel is not None and self.power_state == "shutting_down":
                    cancel.set()  # the power-off sequence checks it under this lock
                    self._off_cancel = None
                    self.power_state = "on"
                    self._record_off("cancelled", "a resume cancelled the power-off")
                before = self.drained
                if self.settings.resume_command and before:
                    self._run_checked(self.settings.resume_command, reason)
                self.drained = False
                return 200, {
                    "changes": [
                        _change_dict(
                            Change(
                                node, "drained", before, False, changed=before, message="resumed"
                            )
                        )
                    ]
                }
            if action == "off":
                return 202, self._power_off(reason)
        raise ApiError(
            400,
            "bad_value",
            f"unknown action {action!r}",
            fix='action is one of "drain", "resume", "off"',
        )

    def _record_off(self, outcome: str, message: str) -> None:
        record = dict(self.last_power_off or {})
        record.update(
            outcome=outcome,
            message=message,
            at=self.clock.now().isoformat().replace("+00:00", "Z"),
        )
        self.last_power_off = record

    def _require_idle(self, work: dict[str, Any], what: str) -> None:
        node = self.settings.node_name
        if work["count"] is None:
            raise ApiError(
                409,
                "work_unknown",
                f"running work unknown ({work.get('error')}); refusing to {what}",
                fix="fix the work count (command, or run the agent as root), then retry",
            )
        if work["count"] > 0:
            raise ApiError(
                409,
                "busy",
                f"{work['count']} running job(s)/process(es) on {node}; refusing to {what}",
                fix="drain the node and wait until it is idle",
            )

    def _power_off(self, reason: str) -> dict[str, Any]:
        """Start a power-off (called under ``self._lock``): check idle, drain, answer; then
        :meth:`_power_off_sequence` re-checks after the settle time and runs the command."""
        node = self.settings.node_name
        if self.power_state == "shutting_down":
            return {
                "changes": [
                    _change_dict(
                        Change(
                            node,
                            "power",
                            "shutting_down",
                            "off",
                            changed=False,
                            message="already shutting down",
                        )
                    )
                ]
            }
        if not self.settings.power_command:
            raise ApiError(
                409,
                "not_configured",
                "this agent may not power its node off",
                fix="start the agent with --power-command 'systemctl poweroff'",
            )
        self._require_idle(self.running_work(), "power off")
        if not self.drained:  # drain first: refuse new work before the final check
            if self.settings.drain_command:
                self._run_checked(self.settings.drain_command, reason)
            self.drained = True
        self.power_state = "shutting_down"
        cancel = threading.Event()
        self._off_cancel = cancel
        delay_s = self.settings.power_off_delay_s
        self.last_power_off = {
            "outcome": "pending",
            "reason": reason,
            "requested_at": self.clock.now().isoformat().replace("+00:00", "Z"),
            "message": f"drained; work re-checked in {delay_s:g} s, then the power command",
        }
        threading.Thread(
            target=self._power_off_sequence,
            args=(cancel, reason),
            name="greencpn-agent-power-off",
            daemon=True,
        ).start()
        return {
            "changes": [
                _change_dict(
                    Change(
                        node,
                        "power",
                        "on",
                        "off",
                        changed=True,
                        message=f"drained; power command in {delay_s:g} s unless work appears",
                    )
                )
            ]
        }

    def _power_off_sequence(self, cancel: threading.Event, reason: str) -> None:
        """Settle, then under the lock: re-count the work and run the power command at once.

        Holding the lock from the final count to the end of the power command means no resume
        or GPU change can come between them; the node stays drained (refusing new work) all
        along. Work that appeared (or a count that failed) aborts the power-off; the node stays
        drained for the controller to decide.
        """
        if cancel.wait(self.settings.power_off_delay_s):
            return
        with self._lock:
            if cancel.is_set():
                return
            self._off_cancel = None
            work = self.running_work()
            count = work["count"]
            if count is None or count > 0:
                why = (
                    f"running work unknown ({work.get('error')})"
                    if count is None
                    else f"{count} running job(s)/process(es) appeared"
                )
                log.warning(
                    "power off of %s aborted: %s; the node stays drained",
                    self.settings.node_name,
                    why,
                )
                self.power_state = "on"
                self._record_off("aborted", f"aborted at the final check: {why}")
                return
            command = self.settings.power_command
            assert command is not None
            log.warning("powering off: %s (reason: %s)", command, reason or "-")
            try:
                proc = run_command(
                    command, self.settings.command_timeout_s, {"GREENCPN_REASON": reason}
                )
            except GreencpnError as exc:
                log.error("power command failed: %s", exc)
                self.power_state = "on"
                self._record_off("failed", f"power command failed: {exc}")
                return
            if proc.returncode != 0:
                msg = f"power command exited {proc.returncode}: {proc.stderr.strip()[:200]}"
                log.error("%s", msg)
                self.power_state = "on"
                self._record_off("failed", msg)
                return
            self._record_off("command_ran", f"no running work at the final check; ran {command}")

    def _run_checked(self, command: str, reason: str) -> None:
        try:
            proc = run_command(
                command, self.settings.command_timeout_s, {"GREENCPN_REASON": reason}
            )
        except TemporaryError as exc:
            raise ApiError(503, "command_failed", str(exc)) from None
        except GreencpnError as exc:
            raise ApiError(500, "command_failed", str(exc)) from None
        if proc.returncode != 0:
            raise ApiError(
                500,
                "command_failed",
                f"{command!r} exited {proc.returncode}: {proc.stderr.strip()[:200]}",
            )


# ------------------------------------------------------------------------------------- HTTP


class IdempotencyStore:
    """Answers to POSTs by idempotency key, kept ``ttl_s`` seconds, at most ``max_entries``."""

    def __init__(self, ttl_s: float = 600.0, max_entries: int = 4096) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, str, int, bytes]] = OrderedDict()

    def get(self, key: str, request_id: str, now_s: float) -> tuple[int, bytes] | None:
        item = self._items.get(key)
        if item is None or item[0] < now_s:
            return None
        if item[1] != request_id:
            raise ApiError(
                409,
                "idempotency_conflict",
                "idempotency key reused for a different request",
                fix="use a fresh idempotency key for every new request",
            )
        return item[2], item[3]

    def put(self, key: str, request_id: str, status: int, body: bytes, now_s: float) -> None:
        self._items[key] = (now_s + self.ttl_s, request_id, status, body)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)


@dataclass(eq=False)
class _Conn:
    """One open connection: who, since when, and whether it carried an authenticated request."""

    sock: socket.socket
    client: str
    accepted_at: float
    proven: bool = False
    evicted: bool = False


class _DeadlineReader(io.RawIOBase):
    """The socket as the handler's ``rfile``, with deadlines instead of a per-recv timeout.

    Before a request's first byte the wait is ``idle_timeout_s`` on a connection that carried an
    authenticated request, else ``request_timeout_s`` from when the wait began; from the first
    byte, the rest of the request must arrive within ``request_timeout_s``. Trickling bytes
    (slowloris) therefore cannot keep a connection open.
    """

    def __init__(self, sock: socket.socket, settings: AgentSettings, conn: _Conn) -> None:
        self._sock = sock
        self._settings = settings
        self._conn = conn
        self._deadline = 0.0
        self._waiting_first_byte = True
        self.begin_request()

    def begin_request(self) -> None:
        s = self._settings
        wait_s = s.idle_timeout_s if self._conn.proven else s.request_timeout_s
        self._deadline = time.monotonic() + wait_s
        self._waiting_first_byte = True

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request deadline passed")
        self._sock.settimeout(remaining)
        try:
            n = self._sock.recv_into(buffer)
        finally:
            self._sock.settimeout(self._settings.request_timeout_s)  # for writing the answer
        if n and self._waiting_first_byte:
            self._waiting_first_byte = False
            self._deadline = time.monotonic() + self._settings.request_timeout_s
        return n


class AgentHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with the agent, its verifier, optional mutual TLS and connection
    limits that an unauthenticated caller cannot use to lock key holders out."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, agent: NodeAgent, verifier: Verifier, settings: AgentSettings) -> None:
        self.agent = agent
        self.verifier = verifier
        self.settings = settings
        self.idempotency = IdempotencyStore()
        self.idempotency_lock = threading.Lock()
        self._conns: OrderedDict[int, _Conn] = OrderedDict()  # live, in accept order
        self._per_client: dict[str, int] = {}
        self._conn_lock = threading.Lock()
        self._refusals: dict[str, tuple[float, int]] = {}
        self._refusal_lock = threading.Lock()
        self.ssl_context = _server_ssl_context(settings)
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        self.address_family = family
        super().__init__((settings.host, settings.port), _Handler)

    def log_refusal(self, code: str, message: str) -> None:
        """Log a refused request: at most once per ``REFUSAL_LOG_INTERVAL_S`` per code, with a
        count of the ones not logged (an unauthenticated flood must not flood the log)."""
        now = time.monotonic()
        with self._refusal_lock:
            last, suppressed = self._refusals.get(code, (-math.inf, 0))
            if now - last < REFUSAL_LOG_INTERVAL_S:
                self._refusals[code] = (last, suppressed + 1)
                return
            self._refusals[code] = (now, 0)
        more = f" (+{suppressed} more '{code}' not logged)" if suppressed else ""
        log.warning("%s%s", message, more)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); not needed here.
        import socketserver

        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            # Handshake lazily in the handler's thread (under its deadline), not here.
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, addr

    # ---- connection limits

    def open_connections(self) -> int:
        with self._conn_lock:
            return len(self._conns)

    def _evict_oldest_unproven(self, client: str | None) -> bool:
        """Close the oldest connection (of ``client``, or of anyone) that never carried an
        authenticated request; False if there is none. Called under ``_conn_lock``."""
        for conn in self._conns.values():
            if conn.proven or (client is not None and conn.client != client):
                continue
            self._drop(conn)
            conn.evicted = True
            # The plain socket's shutdown, also under TLS: its reader sees EOF at once.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
            return True
        return False

    def _drop(self, conn: _Conn) -> None:
        if self._conns.pop(id(conn.sock), None) is not None:
            left = self._per_client.get(conn.client, 1) - 1
            if left:
                self._per_client[conn.client] = left
            else:
                self._per_client.pop(conn.client, None)

    def _admit(self, conn: _Conn) -> str | None:
        """Register ``conn``, evicting unproven connections at the limits; the reason if not."""
        s = self.settings
        evicted = 0
        with self._conn_lock:
            while self._per_client.get(conn.client, 0) >= s.max_connections_per_client:
                if not self._evict_oldest_unproven(conn.client):
                    return (
                        f"{s.max_connections_per_client} authenticated connections from "
                        f"{conn.client} already open"
                    )
                evicted += 1
            while len(self._conns) >= s.max_connections:
                if not self._evict_oldest_unproven(None):
                    return f"{s.max_connections} authenticated connections already open"
                evicted += 1
            self._conns[id(conn.sock)] = conn
            self._per_client[conn.client] = self._per_client.get(conn.client, 0) + 1
        if evicted:
            self.log_refusal(
                "evicted",
                f"connection limit reached: closed {evicted} unauthenticated connection(s) "
                f"to admit one from {conn.client}",
            )
        return None

    def connection_of(self, sock: socket.socket) -> _Conn:
        with self._conn_lock:
            conn = self._conns.get(id(sock))
        return conn if conn is not None else _Conn(sock, "?", time.monotonic(), evicted=True)

    def mark_proven(self, sock: socket.socket) -> None:
        with self._conn_lock:
            conn = self._conns.get(id(sock))
            if conn is not None:
                conn.proven = True

    def process_request(self, request: Any, client_address: Any) -> None:
        reason = self._admit(_Conn(request, str(client_address[0]), time.monotonic()))
        if reason is not None:
            self.log_refusal(
                "too_many_connections", f"closed a connection from {client_address[0]}: {reason}"
            )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def _forget(self, request: Any) -> None:
        with self._conn_lock:
            conn = self._conns.get(id(request))
            if conn is not None and conn.sock is request:
                self._drop(conn)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def shutdown_request(self, request: Any) -> None:
        with contextlib.suppress(OSError):  # e.g. TLS close_notify into a reset connection
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection failed outside a request's own handling: one rate-limited line."""
        import sys

        exc = sys.exc_info()[1]
        self.log_refusal(
            "connection_error",
            f"connection from {client_address[0]} failed: {type(exc).__name__}: {exc}",
        )


def _server_ssl_context(settings: AgentSettings) -> ssl.SSLContext | None:
    parts = (settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    if not any(parts):
        return None
    if not all(parts):
        raise ConfigError(
            "mutual TLS needs --tls-cert, --tls-key and --tls-client-ca together", field="tls"
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key)  # type: ignore[arg-type]
        ctx.load_verify_locations(cafile=settings.tls_client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load TLS files: {exc}",
            field="tls",
            fix="check the PEM paths and that the key matches the certificate",
        ) from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "greencpn-agent"
    sys_version = ""
    disable_nagle_algorithm = True
    server: AgentHTTPServer

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        settings = self.server.settings
        self.timeout = settings.request_timeout_s  # type: ignore[misc]  # per server
        super().setup()
        self.rfile.close()
        self._conn = self.server.connection_of(self.request)
        self._reader = _DeadlineReader(self.connection, settings, self._conn)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        if self._conn.evicted:
            self.close_connection = True
            return
        self._reader.begin_request()
        try:
            super().handle_one_request()
        except OSError as exc:  # reset, broken pipe, TLS failure: the peer is gone
            self.close_connection = True
            self.server.log_refusal(
                "connection_error",
                f"connection from {self.client_address[0]} failed: {type(exc).__name__}: {exc}",
            )

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_POST

    def _handle(self) -> None:
        """Read, authenticate, dispatch, answer once. A connection fault (reset, broken pipe,
        deadline) is not an internal error: it propagates to :meth:`handle_one_request`, which
        logs one rate-limited line."""
        verified: Verified | None = None
        extra: dict[str, str] = {}
        try:
            body = self._read_body()
            try:
                verified = self.server.verifier.verify(self.command, self.path, self.headers, body)
            except AuthError as exc:
                self.server.log_refusal(
                    exc.code,
                    f"refused {self.command} {self.path} from {self.client_address[0]}: {exc}",
                )
                if exc.status == 401:
                    extra["WWW-Authenticate"] = SCHEME
                raise ApiError(exc.status, exc.code, str(exc), exc.fix) from None
            self.server.mark_proven(self.request)
            status, payload = self._dispatch(verified, body)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to an answer; bugs are logged there
            status, payload = _error_answer(exc, f"{self.command} {self.path}")
        self._send(status, payload, verified, extra)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(
                411, "length_required", "chunked bodies are not accepted", fix="send Content-Length"
            )
        text = self.headers.get("Content-Length", "0")
        try:
            length = int(text)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "bad_request", "bad Content-Length") from None
        if length < 0:
            self.close_connection = True
            raise ApiError(400, "bad_request", "bad Content-Length")
        if length > self.server.settings.max_body_bytes:
            self.close_connection = True  # the body stays unread
            raise ApiError(
                413,
                "too_large",
                f"body of {length} bytes exceeds {self.server.settings.max_body_bytes} bytes",
            )
        return self.rfile.read(length) if length else b""

    def _dispatch(self, verified: Verified, body: bytes) -> tuple[int, Any]:
        route = self.path.split("?", 1)[0]
        agent = self.server.agent
        if route == "/v1/status":
            if self.command != "GET":
                raise ApiError(405, "method_not_allowed", "use GET")
            return 200, agent.status()
        posts = {
            "/v1/gpu/power-limit": agent.set_power_limit,
            "/v1/gpu/clocks": agent.set_clocks,
            "/v1/gpu/restore-defaults": agent.restore_defaults,
            "/v1/power": agent.power,
        }
        handler = posts.get(route)
        if handler is None:
            raise ApiError(404, "not_found", f"no endpoint {route}")
        if self.command != "POST":
            raise ApiError(405, "method_not_allowed", "use POST")
        if verified.scope != SCOPE_CONTROL:
            self.server.log_refusal(
                "forbidden_scope",
                f"refused POST {route} from {self.client_address[0]}: {verified.scope} key",
            )
            raise ApiError(
                403,
                "forbidden_scope",
                f"a {verified.scope} key may only read (GET /v1/status)",
                fix="sign changes with one of the node's control keys",
            )
        return self._post(handler, verified, body)

    def _post(
        self, handler: Callable[[dict[str, Any]], Any], verified: Verified, body: bytes
    ) -> tuple[int, Any]:
        try:
            data = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "bad_json", "body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "bad_json", "body must be a JSON object")
        key = verified.idempotency_key
        if not key:
            return _as_status(handler(data))
        store = self.server.idempotency
        request_id = f"{self.path}\n{body.hex()}"
        with self.server.idempotency_lock:
            now_s = self.server.agent.clock.now().timestamp()
            previous = store.get(key, request_id, now_s)
            if previous is not None:
                return previous[0], _Raw(previous[1])
            try:
                status, payload = _as_status(handler(data))
            except ApiError as exc:
                status, payload = exc.status, _error_body(exc.code, str(exc), exc.fix)
            raw = _json_bytes(payload)
            if status < 500:  # a failed attempt may be retried for real
                store.put(key, request_id, status, raw, now_s)
        return status, _Raw(raw)

    def _send(
        self,
        status: int,
        payload: Any,
        verified: Verified | None,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        raw = payload.data if isinstance(payload, _Raw) else _json_bytes(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "no-store")
        if verified is not None:
            self.send_header(
                HEADER_RESPONSE_SIGNATURE, self.server.verifier.sign_response(verified, status, raw)
            )
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)


def _error_answer(exc: Exception, what: str) -> tuple[int, dict[str, Any]]:
    """The one place where errors become HTTP answers: status and error body."""
    if isinstance(exc, ApiError):
        return exc.status, _error_body(exc.code, str(exc), exc.fix)
    if isinstance(exc, TemporaryError):
        return 503, _error_body("temporary", str(exc), "retry later")
    if isinstance(exc, ConfigError):
        return 400, _error_body("bad_value", str(exc), exc.fix or "")
    if isinstance(exc, PermanentError):
        status, code, fix = _permanent_status(exc)
        return status, _error_body(code, str(exc), fix)
    log.exception("internal error on %s", what)  # a bug must not kill the agent
    return 500, _error_body("internal", "internal error; see the agent's log")


def _permanent_status(exc: PermanentError) -> tuple[int, str, str]:
    """HTTP status, code and fix for a permanent fault (GPU errors by their type)."""
    from greencpn.actuate import gpu

    if isinstance(exc, gpu.GpuNotFoundError):
        return 400, "unknown_gpu", ""
    if isinstance(exc, gpu.GpuInvalidArgumentError):
        return 400, "bad_value", ""
    if isinstance(exc, gpu.GpuNotSupportedError):
        return 409, "not_supported", "this GPU or driver cannot do it; leave it out of the plan"
    if isinstance(exc, gpu.GpuPermissionError):
        return 500, "no_permission", "run the agent as root (NVML needs it to change limits)"
    return 500, "failed", ""


@dataclass(frozen=True)
class _Raw:
    data: bytes


def _as_status(result: Any) -> tuple[int, Any]:
    if isinstance(result, tuple):
        return result
    return 200, result


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, default=str, separators=(",", ":")).encode()


def _error_body(code: str, message: str, fix: str = "") -> dict[str, Any]:
    err = {"code": code, "message": message}
    if fix:
        err["fix"] = fix
    return {"error": err}


# ------------------------------------------------------------------------------------ running


class AgentServer:
    """A running agent: bind, serve in a background thread, stop.

    Args:
        backend: the node's GPUs (None: a node without GPUs).
        key: the node key, or several (rotation; see :func:`greencpn.agent.auth.load_keys`).
        settings: agent settings.
        clock: injectable clock (authentication freshness, status times).
    """

    def __init__(
        self,
        backend: GpuBackend | None,
        key: bytes | ScopedKey | Sequence[bytes | ScopedKey],
        settings: AgentSettings,
        clock: Clock | None = None,
    ) -> None:
        clock = clock or SystemClock()
        self.settings = settings
        self.agent = NodeAgent(backend, settings, clock)
        self.agent.check_power_control()
        self.verifier = Verifier(key, clock, max_skew_s=settings.max_skew_s)
        try:
            self.httpd = AgentHTTPServer(self.agent, self.verifier, settings)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
                field="listen",
                fix="pick a free port or a local address",
            ) from None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.httpd.ssl_context is not None else "http"
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}"

    def start(self) -> AgentServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            name="greencpn-agent",
            kwargs={"poll_interval": 0.2},
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.5)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> AgentServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
