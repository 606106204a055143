"""What the agent does on its node, independent of HTTP: telemetry, GPU settings, drain,
resume and a power-off that never runs under work it can see.

Refusals are domain errors (:mod:`greencpn.agent.errors`); :mod:`greencpn.agent.routes` maps
them to HTTP. Every change takes one lock, so a power-off's final work count and its power
command cannot be separated by a resume or a GPU change.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from greencpn import __version__
from greencpn.actuate.base import Change, GpuBackend, GpuInfo
from greencpn.agent.errors import CommandFailed, InvalidRequest, Refused
from greencpn.agent.probes import FreshCounter, count_gpu_processes, parse_work_output, run_command
from greencpn.agent.settings import LOG_INTERVAL_S, AgentSettings
from greencpn.clock import Clock, SystemClock
from greencpn.errors import ConfigError, GreencpnError, TemporaryError

log = logging.getLogger(__name__)


def _change_dict(change: Change) -> dict[str, Any]:
    return dataclasses.asdict(change)


def _gpu_selector(body: dict[str, Any], gpus: list[GpuInfo]) -> list[GpuInfo]:
    index = body.get("index", "all")
    if index == "all":
        return gpus
    if isinstance(index, bool) or not isinstance(index, int):
        raise InvalidRequest("bad_value", f'index must be an integer or "all", got {index!r}')
    for gpu in gpus:
        if gpu.index == index:
            return [gpu]
    raise InvalidRequest(
        "unknown_gpu",
        f"no GPU with index {index} on this node",
        fix=f"indices here: {[g.index for g in gpus]}",
    )


def _number(body: dict[str, Any], name: str) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest("bad_value", f"{name} must be a finite number, got {value!r}")
    return float(value)


def _only_keys(body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise InvalidRequest(
            "bad_value", f"unknown field(s) {extra}", fix=f"allowed fields: {sorted(allowed)}"
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
        """Log an unknown work count at most once per ``LOG_INTERVAL_S`` (status is
        polled; a node whose count is never readable must not fill the log)."""
        now = self._monotonic()
        with self._log_lock:
            last, suppressed = self._work_log
            if now - last < LOG_INTERVAL_S:
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
            raise Refused(
                "no_gpus",
                "this agent runs without a GPU backend",
                fix="start the agent with --gpu nvml",
            )
        return self.backend

    def _refuse_while_powering_off(self) -> None:
        if self.power_state == "shutting_down":
            raise Refused(
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
                    raise InvalidRequest(
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
                    raise InvalidRequest("bad_value", "give either reset or min_mhz/max_mhz")
                changes = [backend.reset_clocks(g.index) for g in targets]
                return {"changes": [_change_dict(c) for c in changes]}
            lo, hi = _number(body, "min_mhz"), _number(body, "max_mhz")
            if lo != int(lo) or hi != int(hi) or not 0 < lo <= hi:
                raise InvalidRequest("bad_value", "need whole MHz with 0 < min_mhz <= max_mhz")
            for gpu in targets:
                clocks = gpu.supported_graphics_clocks_mhz
                if clocks and not (min(clocks) <= lo and hi <= max(clocks)):
                    raise InvalidRequest(
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

    def power(self, body: dict[str, Any]) -> dict[str, Any]:
        """Drain, resume or start a power-off (``{"action": ..., "reason": ...}``).

        ``off`` only starts the sequence (see :meth:`_power_off`); the answer says so.
        """
        _only_keys(body, {"action", "reason"})
        action = body.get("action")
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 200:
            raise InvalidRequest("bad_value", "reason must be a string of at most 200 characters")
        node = self.settings.node_name
        with self._lock:
            if action == "drain":
                before = self.drained
                if self.settings.drain_command and not before:
                    self._run_checked(self.settings.drain_command, reason)
                self.drained = True
                return {
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
                return {
                    "changes": [
                        _change_dict(
                            Change(
                                node, "drained", before, False, changed=before, message="resumed"
                            )
                        )
                    ]
                }
            if action == "off":
                return self._power_off(reason)
        raise InvalidRequest(
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
            raise Refused(
                "work_unknown",
                f"running work unknown ({work.get('error')}); refusing to {what}",
                fix="fix the work count (command, or run the agent as root), then retry",
            )
        if work["count"] > 0:
            raise Refused(
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
            raise Refused(
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
            raise CommandFailed(str(exc), temporary=True) from None
        except GreencpnError as exc:
            raise CommandFailed(str(exc)) from None
        if proc.returncode != 0:
            raise CommandFailed(
                f"{command!r} exited {proc.returncode}: {proc.stderr.strip()[:200]}"
            )
