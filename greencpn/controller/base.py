"""The controller's state and the accessors every phase uses (config, ledgers, backends,
safety settings, levers), the recovery after a restart, and the small types the phases share.

:class:`ControllerBase` is the base of the phase classes (``observe``, ``forecast_phase``,
``optimise``, ``act``, ``record``); :class:`greencpn.controller.step.Controller` combines them
and keeps only the sequencing of one step. Split from ``step.py`` by role (pure moves).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from greencpn.actuate.apply import Backends
from greencpn.actuate.base import NodePower, NodePowerHook, NodeStatus
from greencpn.actuate.hostlist import expand
from greencpn.actuate.safety import ControlSettings
from greencpn.clock import Clock
from greencpn.config import FleetConfig, load_config
from greencpn.controller import forecast as fcmod
from greencpn.controller.jobs import JobActuator, JobDecision
from greencpn.controller.ledger import StepLedger
from greencpn.controller.types import (
    Levers,
    Mode,
    QueueState,
)
from greencpn.optimize import plan as planmod
from greencpn.optimize.baseline_worker import BaselineWorker, wanted
from greencpn.optimize.inputs import PlanInputs

PHASES = ("observe", "forecast", "optimize", "reconcile", "act", "record")
NODE_STATES = ("on", "off", "booting", "draining", "failed", "unknown")


class Queue(Protocol):
    """Where pending and running jobs come from (Slurm, Kubernetes, a trace, the config)."""

    def observe(self, now: datetime) -> QueueState: ...


class ConfigQueue:
    """The jobs of the config's ``jobs``/``jobs_file`` as pending jobs (nothing running)."""

    def __init__(self, controller: ControllerBase) -> None:
        self.controller = controller

    def observe(self, now: datetime) -> QueueState:
        return QueueState(pending=list(self.controller.config.jobs), source="config")


@dataclass
class Observation:
    statuses: dict[str, list[NodeStatus]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    initial_on: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    queue: QueueState = field(default_factory=QueueState)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=8192)
def _parse(text: str) -> datetime:
    """A plan document's or the ledger's timestamp (memoised: a pure function of the text; a
    ``datetime`` is immutable; the anchor reads the newest plan's job starts every step)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def default_backends(cfg: FleetConfig) -> Backends:
    """The real hooks of the config's pools, GPU backends from the hooks (node agents)."""
    import contextlib
    import importlib

    from greencpn.actuate.hooks import make_hook

    if any(p.hook.kind == "agent" for p in cfg.pools):
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module("greencpn.actuate.agent_hook")
    hooks: dict[str, NodePowerHook | None] = {}
    node_hook: dict[str, NodePowerHook | None] = {}
    for pool in cfg.pools:
        h = None if pool.hook.kind == "none" else make_hook(pool.hook, source=str(cfg.path))
        hooks[pool.name] = h
        for n in expand(pool.hostlist) if pool.hostlist else []:
            node_hook[n] = h

    def gpus(node: str) -> Any:
        provider = getattr(node_hook.get(node), "gpu_backend", None)
        return provider(node) if callable(provider) else None

    return Backends(hooks=hooks, gpus=gpus)


class ControllerBase:
    """The controller's state and shared accessors (see :class:`~greencpn.controller.step.Controller`
    for the arguments)."""

    def __init__(
        self,
        config_path: Path,
        *,
        clock: Clock,
        state_dir: Path,
        mode: Mode = Mode.SHADOW,
        levers: dict[str, Levers] | None = None,
        backends: Backends | None = None,
        fence: Callable[[], int] | None = None,
        queue: Queue | None = None,
        job_actuator: JobActuator | None = None,
        settings: ControlSettings | None = None,
        sleep: Callable[[float], None] | None = None,
        rolling: bool = True,
    ) -> None:
        self._config_path = Path(config_path)
        self._cfg = load_config(self._config_path)
        self.clock = clock
        self.state_dir = Path(state_dir)
        self.mode = Mode(mode)
        self.levers = dict(levers or {})
        self._backends = backends
        self._backends_given = backends is not None
        self.fence = fence
        self.queue: Queue = queue or ConfigQueue(self)
        self.job_actuator = job_actuator
        self._settings_given = settings
        self.sleep = sleep or time.sleep
        self.rolling = rolling
        self._ledger: StepLedger | None = None
        self._model: Any = None
        self._model_key: Any = None
        self._baseline_worker: BaselineWorker | None = None
        self._last_forecast: fcmod.Forecast | None = None
        self.last_plan_result: planmod.PlanResult | None = None
        self.recovered: list[str] = []

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> FleetConfig:
        return self._cfg

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "steps.sqlite"

    @property
    def ledger(self) -> StepLedger:
        if self._ledger is None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._ledger = StepLedger.open(self.state_dir, self._cfg.controller.keep_plans)
            self._recover()
        return self._ledger

    def close(self) -> None:
        """Close the step ledger (from the thread that used it) and stop the baseline worker."""
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        self.stop_baseline_worker()

    def stop_baseline_worker(self) -> None:
        """Stop the baseline worker process, if one runs (any thread; started again when a plan
        wants it)."""
        if self._baseline_worker is not None:
            self._baseline_worker.close()
            self._baseline_worker = None

    def baseline_worker(self, n_jobs: int, *, step: bool = True) -> BaselineWorker | None:
        """The worker process a plan of ``n_jobs`` jobs prices its baselines in
        (``[solver] baselines_worker``; ``step``: a control step's re-plan, else a one-off
        plan), started on first use and kept across steps; ``None``: in-process."""
        if not wanted(self._cfg.solver.baselines_worker, n_jobs, step=step):
            return None
        if self._baseline_worker is None:
            self._baseline_worker = BaselineWorker()
        return self._baseline_worker

    def override_solver(self, **fields: Any) -> None:
        """Change solver settings of the loaded config (e.g. ``time_limit_s`` from the CLI)."""
        self._override("solver", fields)

    def override_controller(self, **fields: Any) -> None:
        """Change ``[controller]`` settings of the loaded config (e.g. ``baselines`` in the
        what-if replay); the values are validated like the config file's."""
        from greencpn.config import ControllerConfig

        merged = {**self._cfg.controller.model_dump(), **fields}
        ControllerConfig.model_validate(merged)  # raises on a bad value
        self._override("controller", fields)

    def _override(self, section: str, fields: dict[str, Any]) -> None:
        cfg = self._cfg
        sub = getattr(cfg, section).model_copy(update=fields)
        self._cfg = cfg.with_sections(**{section: sub})

    def reload(self) -> None:
        """Re-read the config; on ConfigError keep the old one and re-raise."""
        cfg = load_config(self._config_path)
        self._cfg = cfg
        self._model = None
        self._model_key = None
        self.stop_baseline_worker()  # started again if the new config wants it
        if not self._backends_given:
            self._backends = None  # rebuilt from the new config's hooks

    @property
    def backends(self) -> Backends:
        if self._backends is None:
            self._backends = default_backends(self._cfg)
        return self._backends

    def settings(self) -> ControlSettings:
        s = self._settings_given or ControlSettings.for_config(self._cfg.path)
        return replace(s, allow_actuation=self.mode is Mode.ENFORCE)

    def lever(self, pool: str) -> Levers:
        return self.levers.get(pool, Levers())

    # ------------------------------------------------------------------ recovery
    def _recover(self) -> None:
        """Close what a killed process left open; re-observe started actions (never repeat)."""
        assert self._ledger is not None
        now = self.clock.now()
        steps, started = self._ledger.recover(now)
        for sid in steps:
            self.recovered.append(f"step #{sid} did not finish: marked interrupted")
        if not started:
            return
        backends = self.backends
        pool_of = {
            n: p.name for p in self._cfg.pools for n in (expand(p.hostlist) if p.hostlist else [])
        }
        for a in started:
            status, msg = "failed", "unknown after restart"
            try:
                if a.kind in ("power_on", "power_off", "drain", "resume"):
                    hook = backends.hooks.get(a.pool or pool_of.get(a.target, ""))
                    if hook is not None:
                        st = hook.status([a.target])[0]
                        want = {
                            "power_on": st.power in (NodePower.ON, NodePower.BOOTING),
                            "power_off": st.power in (NodePower.OFF, NodePower.SHUTTING_DOWN),
                            "drain": st.drained,
                            "resume": not st.drained,
                        }[a.kind]
                        status = "done" if want else "failed"
                        msg = f"re-observed after restart: {st.power.value}, drained={st.drained}"
                        if want and a.kind in ("power_on", "power_off"):
                            self._ledger.power_cycle(
                                a.target,
                                a.pool,
                                "on" if a.kind == "power_on" else "off",
                                now,
                                a.step_id,
                                a.id,
                                a.epoch,
                            )
                elif a.kind == "set_power_cap":
                    node, _, gpu = a.target.partition(":gpu")
                    gb = backends.gpus(node)
                    if gb is not None:
                        info = {g.index: g for g in gb.list_gpus()}.get(int(gpu or 0))
                        msg = (
                            f"re-observed after restart: cap {info.power_limit_current_w:g} W"
                            if info
                            else "GPU not found after restart"
                        )
                        status = "done" if info else "failed"
                else:
                    msg = "job action with no result: re-decided by the next step"
            except Exception as exc:  # observation failed: leave it failed, next diff decides
                msg = f"re-observation failed: {type(exc).__name__}: {exc}"
            self._ledger.finish(a.id, now, status, msg)
            self.recovered.append(f"action #{a.id} {a.kind} {a.target}: {msg}")

    # ------------------------------------------------------------------ phases
    def slot_start(self) -> datetime:
        cfg = self._cfg
        if not self.rolling and cfg.horizon.start is not None:
            return cfg.horizon.start
        step = cfg.horizon.slot_minutes * 60
        now = self.clock.now()
        return datetime.fromtimestamp(int(now.timestamp()) // step * step, UTC)

    def _baseline_fleet(self, inp: PlanInputs) -> str:
        """What the stored baseline was priced for: the pools, slot length and baseline set
        (a reload that changes any of them prices afresh)."""
        ctl = self._cfg.controller
        return repr(
            (
                ctl.baselines,
                inp.slot_h,
                [(p.name, p.site, p.nodes, p.gpus_per_node) for p in inp.pools],
            )
        )

    # state one phase leaves for a later one (set each step)
    _step_id: int | None = None
    _baseline_reuse: dict[str, Any] | None = None
    _epoch: int | None = None
    _decisions: list[JobDecision] = []
    _failsafe: list[tuple[str, str, str, str]] = []  # fail-safe releases carried out this step
    _degraded_pools: list[str] = []
    _moves: dict[str, Any] | None = None
