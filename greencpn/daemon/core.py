"""``greencpn run``: the control step on a schedule, with signals, HTTP, leader election.

One :class:`Daemon` owns one :class:`~greencpn.controller.Controller` and drives it:

* **Schedule** — an APScheduler 3.x ``BackgroundScheduler`` fires :meth:`Daemon.run_step` at
  every slot boundary plus ``offset_s`` (:class:`~greencpn.daemon.schedule.SlotTrigger`), with
  ``max_instances = 1``, ``coalesce = True`` (missed fires run once, not once each) and
  ``misfire_grace_time``. Its executor has one worker, so two steps never overlap.
* **Extra steps** — SIGHUP (re-read the config, then step), ``POST /step``, ``POST /reload``.
  A bad config on reload is refused: error logged, ``greencpn_errors_total{type=
  "config_reload"}`` counted, ``greencpn_config_reload_success`` 0, the old config kept.
* **Modes** — shadow / enforce / per-pool levers, from ``[daemon]`` in control.toml
  (:mod:`greencpn.daemon.settings`).
* **Leader** — with ``[daemon.etcd]`` the controller's ``fence`` is the etcd election's
  (:mod:`greencpn.daemon.leader`): a follower, or any instance while etcd is unreachable,
  still runs the step (plan, metrics, ledger) but every action is refused — shadow only — and
  the log says so.
* **SIGTERM / SIGINT** — ``on_sigterm = "finish"`` lets the running step end; ``"abandon"``
  makes the fence refuse from the next action on (the controller records the rest as
  skipped). Then ``on_exit = "restore"`` (leader only) calls ``Controller.restore()``; the
  lease is revoked so a follower takes over at once.

:meth:`Daemon.simulate` runs the same step function at the trigger's fire times on a
simulated clock — days of steps in seconds, no sleeping.

Size (~790 lines, over the ~600 of issue 13, on purpose): :class:`Daemon` is one object whose
methods share one lock and one state (the controller, the settings, the scheduler, the leader
state, the state file, the last step's result) across the scheduler thread, the HTTP threads and
the signal handlers; the parts that do not touch that state already have their own rooms
(schedule, leader, http, api, settings, metrics, logs). Cutting the class would spread the
locking across modules.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from greencpn.clock import Clock, SimClock
from greencpn.config import load_config
from greencpn.daemon import api
from greencpn.daemon.leader import Elector, LeaderState, SingleInstance
from greencpn.daemon.metrics import DaemonMetrics
from greencpn.daemon.schedule import SlotTrigger
from greencpn.daemon.settings import DaemonSettings, check_pools, control_path_for, load_settings
from greencpn.errors import ConfigError

log = logging.getLogger("greencpn.daemon")

STATE_FILE = "daemon.json"
KEEP_STEPS = 50  # step summaries kept in the state file
KEEP_SLOTS = 96  # per-slot savings kept (to replace a slot's contribution on a re-step)

ControllerFactory = Callable[..., Any]


@dataclass
class _Pending:
    reload: bool = False


def levers_for(settings: DaemonSettings, pools: list[str]) -> dict[str, Any] | None:
    """``[daemon.levers]`` as the controller's ``{pool: Levers}`` (None: all levers)."""
    if not settings.levers and not settings.only_listed_pools:
        return None
    out: dict[str, Any] = {}
    for pool in pools:
        lv = settings.levers.get(pool)
        if lv is not None:
            out[pool] = api.Levers(caps=lv.caps, power=lv.power, jobs=lv.jobs)
        elif settings.only_listed_pools:
            out[pool] = api.Levers(caps=False, power=False, jobs=False)
        else:
            out[pool] = api.Levers()
    return out


class Daemon:
    """The long-running controller. Build it, then :meth:`serve` (signals, HTTP, scheduler),
    :meth:`run_once`, or :meth:`simulate`."""

    def __init__(
        self,
        config_path: str | Path,
        *,
        state_dir: str | Path,
        clock: Clock,
        control_path: str | Path | None = None,
        controller_factory: ControllerFactory | None = None,
        backends: Any = None,
        elector: Any = None,
        http_port: int | None = None,
        controller_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.config_path = Path(config_path).resolve()
        self.control_path = control_path_for(self.config_path, control_path)
        self._control_arg = control_path
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._factory = controller_factory or api.controller_class()
        self._backends = backends
        self._http_port = http_port
        self._controller_kwargs = dict(controller_kwargs or {})
        self.settings, self.allow_actuation = self._load_settings()
        self.metrics = DaemonMetrics()
        self.elector = elector if elector is not None else self._make_elector(self.settings)
        self._step_lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pending = _Pending()
        self._extra_lock = threading.Lock()
        self._extra_queued = False
        self._extra_n = 0
        self._scheduler: Any = None
        self._http: Any = None
        self._started_at = clock.now()
        self._step_count = 0
        self._last_leader: bool | None = None
        self.last_overhead_s = 0.0
        self.state = self._read_state()
        self.controller = self._build_controller(self.settings)
        self._check_timing(self.settings, self.controller.config.horizon.slot_minutes)
        self.trigger = SlotTrigger(self.period_s, self.settings.offset_s)
        self.metrics.set_savings(self.state["savings"]["kg_co2e"], self.state["savings"]["kwh"])
        self.metrics.enforce.set(1 if self.settings.mode == "enforce" else 0)
        self._note_leader()

    # ------------------------------------------------------------------ construction

    def _load_settings(self) -> tuple[DaemonSettings, bool]:
        settings, allow = load_settings(self.config_path, self._control_arg)
        return settings, allow

    def _make_elector(self, settings: DaemonSettings) -> Any:
        if settings.etcd is None:
            return SingleInstance()
        return Elector(settings.etcd)

    def _build_controller(self, settings: DaemonSettings) -> Any:
        cfg = load_config(self.config_path)
        pools = [p.name for p in cfg.pools]
        check_pools(settings, pools, str(self.control_path))
        kwargs: dict[str, Any] = dict(
            clock=self.clock,
            state_dir=self.state_dir,
            mode=api.Mode(settings.mode or "shadow"),
            levers=levers_for(settings, pools),
            fence=self.elector.fence,
        )
        if self._backends is not None:
            kwargs["backends"] = self._backends
        if cfg.job_actuation is not None:  # scheduler jobs: greencpn/actuate/jobs
            from greencpn.actuate.jobs.controller_bridge import controller_job_kwargs

            enforce = settings.mode == "enforce" and self.allow_actuation
            kwargs.update(
                controller_job_kwargs(
                    cfg, self.state_dir, clock_now=self.clock.now, enforce=enforce
                )
            )
        kwargs.update(self._controller_kwargs)
        return self._factory(self.config_path, **kwargs)

    def _check_timing(self, settings: DaemonSettings, slot_minutes: int) -> None:
        period = settings.period_s or slot_minutes * 60
        if settings.offset_s >= period:
            raise ConfigError(
                f"offset_s = {settings.offset_s:g} is not shorter than the step period ({period:g} s)",
                source=str(self.control_path),
                field="daemon.offset_s",
                fix="use an offset below the period",
            )
        if settings.etcd is not None and settings.etcd.ttl_s * 2 > period:
            raise ConfigError(
                f"ttl_s = {settings.etcd.ttl_s} s: failover (up to ~4/3 × TTL) would not fit in "
                f"one step period ({period:g} s)",
                source=str(self.control_path),
                field="daemon.etcd.ttl_s",
                fix=f"use ttl_s <= {int(period // 2)}",
            )

    @property
    def period_s(self) -> float:
        if self.settings.period_s is not None:
            return float(self.settings.period_s)
        return float(self.controller.config.horizon.slot_minutes * 60)

    # ------------------------------------------------------------------ the step

    def run_step(self, reason: str = "schedule") -> Any:
        """Run one control step now (serialised; never raises for faults). Returns the
        ``StepResult``, or ``None`` if the controller crashed (logged and counted) or the daemon
        is stopping (a step queued before SIGTERM is not started after it)."""
        with self._step_lock:
            if self._stop.is_set():  # a step queued before SIGTERM does not start after it
                log.warning("stopping: the queued step (%s) is not started", reason)
                return None
            self._idle.clear()
            try:
                return self._step(reason)
            finally:
                self._idle.set()

    def _step(self, reason: str) -> Any:
        lstate = self._note_leader()
        if lstate.enabled and not lstate.reachable:
            self.metrics.errors.labels(type="leader").inc()
        if lstate.enabled and not lstate.is_leader:
            log.warning(
                "step (%s): not the leader — %s; shadow only, no action will be taken",
                reason,
                lstate.detail,
            )
        t0 = time.perf_counter()
        try:
            result = self.controller.step()
        except Exception as exc:  # the controller promises not to raise; count it if it does
            self.metrics.errors.labels(type="step").inc()
            log.exception("step (%s) crashed: %s", reason, exc)
            self._remember_failure(reason, exc)
            return None
        overhead_t0 = time.perf_counter()
        self._step_count += 1
        self.metrics.observe_step(result, reason=reason, duration_s=overhead_t0 - t0)
        self._add_savings(result)
        self._remember(result, reason, lstate)
        self._note_leader()
        took = overhead_t0 - t0
        self.last_overhead_s = time.perf_counter() - overhead_t0
        log.info(
            "step %s (%s) slot %s: %s in %.2f s, %d action(s), %d error(s)",
            result.step_id,
            reason,
            _iso(result.slot_start),
            result.status,
            took,
            len(result.actions or []),
            len(result.errors or []),
            extra={"step_id": result.step_id, "status": str(result.status), "reason": reason},
        )
        return result

    def _note_leader(self) -> LeaderState:
        st: LeaderState = self.elector.state()
        self.metrics.set_leader(st.is_leader, st.epoch)
        if st.is_leader != self._last_leader:
            if st.enabled:
                log.warning("leadership: %s", "this instance leads" if st.is_leader else st.detail)
            self._last_leader = st.is_leader
        return st

    def _add_savings(self, result: Any) -> None:
        m = result.metrics or {}
        kg, kwh = m.get("saved_kg_co2e"), m.get("saved_kwh")
        if kg is None and kwh is None:
            return
        sv = self.state["savings"]
        slot = _iso(result.slot_start)
        old = sv["slots"].get(slot, [0.0, 0.0])
        new = [float(kg or 0.0), float(kwh or 0.0)]
        sv["kg_co2e"] += new[0] - old[0]
        sv["kwh"] += new[1] - old[1]
        sv["slots"][slot] = new
        if len(sv["slots"]) > KEEP_SLOTS:
            for key in sorted(sv["slots"])[: len(sv["slots"]) - KEEP_SLOTS]:
                del sv["slots"][key]
        self.metrics.set_savings(sv["kg_co2e"], sv["kwh"])

    # ------------------------------------------------------------------ state file

    def _read_state(self) -> dict[str, Any]:
        path = self.state_dir / STATE_FILE
        fresh: dict[str, Any] = {
            "version": 1,
            "savings": {"kg_co2e": 0.0, "kwh": 0.0, "slots": {}},
            "steps": [],
            "failures": [],
        }
        if not path.is_file():
            return fresh
        try:
            doc = json.loads(path.read_text())
            if doc.get("version") != 1:
                raise ValueError(f"version {doc.get('version')!r}")
            for key, value in fresh.items():
                doc.setdefault(key, value)
            return dict(doc)
        except Exception as exc:
            self.metrics.errors.labels(type="state_file").inc()
            log.error("%s unreadable (%s): starting a new one (savings restart at 0)", path, exc)
            return fresh

    def _write_state(self) -> None:
        st = self.elector.state()
        self.state.update(
            {
                "name": getattr(self.elector, "name", socket.gethostname()),
                "pid": os.getpid(),
                "config": str(self.config_path),
                "control": str(self.control_path) if self.control_path.is_file() else None,
                "mode": self.settings.mode,
                "levers": {k: v.model_dump() for k, v in self.settings.levers.items()},
                "only_listed_pools": self.settings.only_listed_pools,
                "period_s": self.period_s,
                "offset_s": self.settings.offset_s,
                "updated_at": _iso(self.clock.now()),
                "started_at": _iso(self._started_at),
                "ledger": str(getattr(self.controller, "ledger_path", "")) or None,
                "leader": {
                    "enabled": st.enabled,
                    "is_leader": st.is_leader,
                    "epoch": st.epoch,
                    "holder": st.holder,
                    "etcd_reachable": st.reachable,
                    "detail": st.detail,
                },
            }
        )
        path = self.state_dir / STATE_FILE
        tmp = path.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps(self.state, indent=1, default=str))
            os.replace(tmp, path)
        except OSError as exc:
            self.metrics.errors.labels(type="state_file").inc()
            log.error("could not write %s: %s", path, exc)

    def _remember(self, result: Any, reason: str, lstate: LeaderState) -> None:
        actions = result.actions or []
        by_status: dict[str, int] = {}
        for a in actions:
            by_status[str(a.get("status"))] = by_status.get(str(a.get("status")), 0) + 1
        m = result.metrics or {}
        summary = {
            "step_id": result.step_id,
            "reason": reason,
            "slot_start": _iso(result.slot_start),
            "started_at": _iso(result.started_at),
            "finished_at": _iso(result.finished_at),
            "status": str(result.status),
            "mode": str(result.mode),
            "leader": lstate.is_leader,
            "epoch": lstate.epoch,
            "solver_status": result.solver_status,
            "mip_gap": result.mip_gap,
            "phase_s": result.phase_s,
            "actions": by_status,
            "power_actions": [
                {k: a.get(k) for k in ("kind", "target", "status", "epoch")}
                for a in actions
                if "power" in str(a.get("kind", "")) or "node" in str(a.get("kind", ""))
            ][:50],
            "errors": list(result.errors or [])[:20],
            "sources": result.sources,
            "jobs": m.get("jobs"),
            "saved_kg_co2e": m.get("saved_kg_co2e"),
            "saved_kwh": m.get("saved_kwh"),
            # which pricing of the carbon-agnostic baseline the saving used (baselines_every)
            "baseline": m.get("baseline"),
            "plan": _plan_summary(result.plan),
        }
        steps = self.state["steps"]
        steps.append(summary)
        del steps[:-KEEP_STEPS]
        # a follower's refused actions are expected, not failures worth showing
        errs = [
            e
            for e in result.errors or []
            if lstate.is_leader or not lstate.enabled or e.get("type") != "not_leader"
        ]
        if errs:
            fails = self.state["failures"]
            for err in errs:
                fails.append({"at": _iso(result.finished_at), "step_id": result.step_id, **err})
            del fails[:-KEEP_STEPS]
        self._write_state()

    def _remember_failure(self, reason: str, exc: Exception) -> None:
        fails = self.state["failures"]
        fails.append(
            {
                "at": _iso(self.clock.now()),
                "type": "step",
                "where": f"daemon ({reason})",
                "message": f"{type(exc).__name__}: {exc}",
            }
        )
        del fails[:-KEEP_STEPS]
        self._write_state()

    # ------------------------------------------------------------------ reload

    def _candidate(self) -> tuple[DaemonSettings, bool]:
        """Read and check control.toml and the fleet config without changing anything."""
        settings, allow = self._load_settings()
        cfg = load_config(self.config_path)
        check_pools(settings, [p.name for p in cfg.pools], str(self.control_path))
        self._check_timing(settings, cfg.horizon.slot_minutes)
        return settings, allow

    def _refuse(self, exc: ConfigError) -> str:
        self.metrics.errors.labels(type="config_reload").inc()
        self.metrics.reload_ok.set(0)
        log.error("config reload refused, keeping the previous config: %s", exc)
        self.state["reload"] = {"at": _iso(self.clock.now()), "ok": False, "error": str(exc)}
        self._write_state()
        return str(exc)

    def check_reload(self) -> str | None:
        """Would a reload now be accepted? (``POST /reload`` answers 400 at once if not.)"""
        try:
            self._candidate()
        except ConfigError as exc:
            return self._refuse(exc)
        return None

    def reload(self) -> str | None:
        """Re-read control.toml and the fleet config, between steps (holds the step lock). On
        a bad file: log, count, keep the old ones, and return the error text; else None."""
        with self._step_lock:
            return self._reload_locked()

    def _reload_locked(self) -> str | None:
        try:
            settings, allow = self._candidate()
            if (settings.mode, settings.levers, settings.only_listed_pools) != (
                self.settings.mode,
                self.settings.levers,
                self.settings.only_listed_pools,
            ):
                controller = self._build_controller(settings)  # new mode/levers
            else:
                self.controller.reload()
                controller = self.controller
        except ConfigError as exc:
            return self._refuse(exc)
        if settings.etcd != self.settings.etcd:
            log.warning("[daemon.etcd] changed: restart greencpn run to apply it (kept the old)")
            settings = settings.model_copy(update={"etcd": self.settings.etcd})
        if settings.http != self.settings.http:
            log.warning("[daemon.http] changed: restart greencpn run to apply it (kept the old)")
            settings = settings.model_copy(update={"http": self.settings.http})
        self.settings, self.allow_actuation, self.controller = settings, allow, controller
        new_trigger = SlotTrigger(self.period_s, settings.offset_s)
        if repr(new_trigger) != repr(self.trigger):
            self.trigger = new_trigger
            if self._scheduler is not None:
                self._scheduler.reschedule_job("step", trigger=new_trigger)
        self.metrics.reload_ok.set(1)
        self.metrics.enforce.set(1 if settings.mode == "enforce" else 0)
        self.state["reload"] = {"at": _iso(self.clock.now()), "ok": True, "error": None}
        log.warning("config reloaded (mode %s)", settings.mode)
        return None

    # ------------------------------------------------------------------ health

    def health(self) -> tuple[bool, dict[str, Any]]:
        running = self._scheduler is not None and self._scheduler.running
        return running or self._scheduler is None, {
            "scheduler": "running" if running else "not running",
            "stopping": self._stop.is_set(),
        }

    def ready(self) -> tuple[bool, dict[str, Any]]:
        steps = self.state["steps"]
        st = self.elector.state()
        detail: dict[str, Any] = {
            "mode": self.settings.mode,
            "leader": st.is_leader,
            "leader_detail": st.detail,
            "config_reload_ok": self.metrics.reload_ok._value.get() == 1,
        }
        if self._stop.is_set():
            return False, {**detail, "reason": "stopping"}
        if not steps:
            return False, {**detail, "reason": "no step finished yet"}
        last = steps[-1]
        detail["last_step"] = {k: last[k] for k in ("step_id", "status", "finished_at")}
        if last["status"] == "failed":
            return False, {**detail, "reason": "the last step failed"}
        age = (self.clock.now() - _parse(last["finished_at"])).total_seconds()
        limit = 2 * self.period_s + self.settings.misfire_grace_s
        if age > limit:
            return False, {**detail, "reason": f"last step {age:.0f} s ago (> {limit:.0f} s)"}
        return True, detail

    # ------------------------------------------------------------------ ways to run

    def simulate(self, clock: SimClock, until: datetime, *, reason: str = "schedule") -> list[Any]:
        """Step at each of the trigger's fire times up to ``until`` on a simulated clock (no
        sleeping). Returns the step results.

        Like the scheduler: the clock is moved to each fire time; if a step itself moved the
        clock past later fire times (waits inside the step), those missed fires are coalesced
        into one step run at once, or skipped if the last is more than ``misfire_grace_s`` late
        — the clock never goes back."""
        results = []
        prev = None
        grace = timedelta(seconds=self.settings.misfire_grace_s)
        while True:
            now = clock.now()
            fire = self.trigger.get_next_fire_time(prev, now)
            if fire is None or fire > until:
                break
            if fire >= now:
                clock.set(fire)
                prev = fire
            else:  # missed while the last step ran: coalesce to the newest due fire
                while True:
                    nxt = self.trigger.get_next_fire_time(fire, now)
                    if nxt is None or nxt > now or nxt > until:
                        break
                    fire = nxt
                prev = fire
                if now - fire > grace:
                    log.warning("missed the step of %s by more than the grace time", _iso(fire))
                    continue
            results.append(self.run_step(reason))
        return results

    def run_once(self) -> Any:
        """``greencpn run --once``: one election round (if etcd), one step, resign."""
        self.elector.campaign_once()
        try:
            return self.run_step("once")
        finally:
            self.elector.stop(resign=True)

    def request_step(self, reason: str, *, reload: bool = False) -> None:
        """Queue an extra step (and a reload first) for the scheduler's worker."""
        if reload:
            self._pending.reload = True
        if self._scheduler is None:
            raise RuntimeError("request_step needs serve() running")
        with self._extra_lock:
            if self._extra_queued:  # one queued extra step serves a burst of requests
                log.info("extra step (%s) coalesced into the one already queued", reason)
                return
            self._extra_queued = True
            self._extra_n += 1
            # a job id of its own: a second extra step requested while one runs must queue
            # behind it (with one id, APScheduler's max_instances = 1 would drop it)
            self._scheduler.add_job(
                self._extra_job,
                "date",
                args=[reason],
                id=f"extra-{self._extra_n}",
                name="extra step",
                misfire_grace_time=None,
                max_instances=1,
            )

    def _extra_job(self, reason: str) -> None:
        with self._extra_lock:
            self._extra_queued = False
        if self._pending.reload:
            self._pending.reload = False
            self.reload()
        self.run_step(reason)

    def _http_reload(self) -> str | None:
        """Check now (400 on a bad config); reload and step in the worker, between steps."""
        err = self.check_reload()
        if err is None:
            self.request_step("reload", reload=True)
        return err

    def start_background(self) -> None:
        """Start the elector, the HTTP server and the scheduler (no signal handlers)."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self.elector.start()
        self._note_leader()
        hs = self.settings.http
        if hs.enabled:
            from greencpn.daemon.http import DaemonHttp

            token = None
            if hs.token_file:
                tf = Path(hs.token_file)
                if not tf.is_absolute():
                    tf = self.control_path.parent / tf
                try:
                    token = tf.read_text().strip()
                except OSError as exc:
                    raise ConfigError(
                        f"cannot read the token file: {exc}",
                        source=str(self.control_path),
                        field="daemon.http.token_file",
                        fix="point it at a readable file holding the token",
                    ) from None
                if not token:
                    raise ConfigError(
                        "the token file is empty",
                        source=str(tf),
                        field="daemon.http.token_file",
                        fix="write a long random token in it",
                    )
            port = self._http_port if self._http_port is not None else hs.port
            try:
                self._http = DaemonHttp(
                    hs.host,
                    port,
                    registry=self.metrics.registry,
                    health=self.health,
                    ready=self.ready,
                    trigger=lambda why: self.request_step(why),
                    reload=self._http_reload,
                    token=token,
                )
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on {hs.host}:{port}: {exc.strerror}",
                    source=str(self.control_path),
                    field="daemon.http.port",
                    fix="pick a free port, or stop the other greencpn run",
                ) from None
            self._http.start()
            log.warning("HTTP on http://%s:%s (/metrics /healthz /readyz)", *self.http_address)
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(self.settings.misfire_grace_s),
            },
            timezone=UTC,
        )
        self._scheduler.add_job(
            self.run_step, self.trigger, args=["schedule"], id="step", name="control step"
        )
        self._scheduler.start()
        nxt = self._scheduler.get_job("step").next_run_time
        log.warning(
            "greencpn run: mode %s, every %g s (+%g s), next step %s",
            self.settings.mode,
            self.period_s,
            self.settings.offset_s,
            _iso(nxt) if nxt else "?",
        )

    @property
    def http_address(self) -> tuple[str, int]:
        if self._http is None:
            raise RuntimeError("HTTP server not started")
        return str(self._http.host), int(self._http.port)

    def serve(self, *, step_at_start: bool = True) -> int:
        """Run until SIGTERM/SIGINT: scheduler, HTTP, leader election; SIGHUP reloads and
        steps. Returns the exit status (0 on a clean stop)."""
        signals: list[int] = []
        self._signals = signals

        def on_signal(signum: int, _frame: Any) -> None:
            signals.append(signum)
            self._wake.set()

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, on_signal)
        self.start_background()
        if step_at_start:
            self.request_step("start")
        while True:
            self._wake.wait(5.0)
            self._wake.clear()
            while signals:
                sig = signals.pop(0)
                if sig == signal.SIGHUP:
                    log.warning("SIGHUP: reloading the config, then an extra step")
                    self.request_step("sighup", reload=True)
                else:
                    return self.shutdown(signal.Signals(sig).name)
            if self._stop.is_set():
                return self.shutdown("stop requested")

    def stop(self) -> None:
        """Ask :meth:`serve` to shut down (from another thread)."""
        self._stop.set()
        self._wake.set()

    def shutdown(self, why: str) -> int:
        """Stop scheduling; finish or abandon the running step; restore if configured; resign."""
        self._stop.set()
        log.warning(
            "%s: stopping (on_sigterm = %s, on_exit = %s)",
            why,
            self.settings.on_sigterm,
            self.settings.on_exit,
        )
        if self.settings.on_sigterm == "abandon":
            self.elector.stop_acting(f"{why} (on_sigterm = abandon)")
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        finished = self._idle.wait(self.settings.stop_timeout_s)
        status = 0
        if not finished:
            log.error(
                "the running step did not end within %g s; exiting anyway (the ledger lets the "
                "next start check its started-but-unfinished actions)",
                self.settings.stop_timeout_s,
            )
            status = 1
        elif self.settings.on_exit == "restore":
            if hasattr(self.elector, "resume_acting"):
                self.elector.resume_acting()
            st = self.elector.state()
            if st.is_leader:
                with self._step_lock:
                    log.warning("on_exit = restore: default caps, release held jobs, wake nodes")
                    try:
                        res = self.controller.restore()
                        self._remember(res, "restore", st)
                        self.metrics.observe_step(res, reason="restore")
                    except Exception as exc:
                        log.exception("restore failed: %s", exc)
                        status = 1
                    status = max(status, self._restore_jobs())
            else:
                log.warning("on_exit = restore skipped: not the leader (%s)", st.detail)
        self.elector.stop(resign=True)
        self._write_state()
        if self._http is not None:
            self._http.stop()
        stop_worker = getattr(self.controller, "stop_baseline_worker", None)
        if finished and callable(stop_worker):  # the step ledger stays with the step thread
            stop_worker()
        log.warning("stopped")
        return status

    def _restore_jobs(self) -> int:
        """on_exit = restore, the job side (greencpn/actuate/jobs/failsafe.py): every job in
        ``<state dir>/ledger.sqlite`` put back, gated pods released, the heartbeat lease
        dropped. Only when enforcing; 1 if a job could not be restored."""
        if self.settings.mode != "enforce" or not self.allow_actuation:
            log.warning("on_exit = restore: jobs left as they are (shadow mode)")
            return 0
        from greencpn.actuate.jobs.failsafe import restore_on_exit

        try:
            rep = restore_on_exit(self.controller.config, self.state_dir, clock_now=self.clock.now)
        except Exception as exc:  # a broken ledger or config: logged, the exit goes on
            log.exception("restoring jobs failed: %s", exc)
            return 1
        if rep is not None:
            log.warning("on_exit = restore: jobs %s", rep.counts or "none touched")
            return 1 if rep.problems else 0
        return 0


def _iso(ts: datetime | None) -> str:
    if ts is None:
        return ""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _plan_summary(plan: dict[str, Any] | None) -> dict[str, Any] | None:
    """The small part of a plan document that status shows: horizon, totals, savings, and
    this slot's nodes on and cap per pool."""
    if not plan:
        return None
    out: dict[str, Any] = {}
    hz = plan.get("horizon")
    if isinstance(hz, dict):
        out["horizon"] = {k: hz.get(k) for k in ("start", "slot_minutes", "slots")}
    for key in ("totals", "savings"):
        if isinstance(plan.get(key), dict):
            out[key] = {
                k: v for k, v in plan[key].items() if isinstance(v, int | float | str | None)
            }
    pools = {}
    for p in plan.get("pools") or []:
        if isinstance(p, dict) and p.get("slots"):
            s0 = p["slots"][0]
            pools[p.get("name")] = {k: s0.get(k) for k in ("nodes_on", "power_cap_w") if k in s0}
    if pools:
        out["this_slot"] = pools
    if isinstance(plan.get("jobs"), list):
        out["jobs"] = len(plan["jobs"])
    return out or None
