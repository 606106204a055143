"""One control step: observe → forecast → optimise → reconcile → act → record.

:class:`Controller` is the one code path of the one-off report (``greencpn plan`` calls
:meth:`Controller.plan`), the daemon (:meth:`Controller.step` on a schedule) and the what-if
replay (the same step on a simulated clock with recording backends). See docs/controller.md.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from greencpn.actuate.apply import ApplyReport, Backends, SlotRef, _Run, compute_diff
from greencpn.actuate.base import NodePower, NodePowerHook, NodeStatus
from greencpn.actuate.hostlist import expand
from greencpn.actuate.ledger import LEDGER_FILE as APPLY_LEDGER_FILE
from greencpn.actuate.ledger import Ledger
from greencpn.actuate.safety import ControlSettings
from greencpn.clock import Clock
from greencpn.config import FleetConfig, load_config
from greencpn.controller import forecast as fcmod
from greencpn.controller.actuation import ActionGuard, SkippedAction
from greencpn.controller.jobs import JobActuator, JobDecision, decide_jobs, failsafe_counts
from greencpn.controller.ledger import StepLedger
from greencpn.controller.types import (
    Levers,
    Mode,
    QueueState,
    StepResult,
    StepStatus,
)
from greencpn.errors import ConfigError, GreencpnError, SolverError
from greencpn.optimize import plan as planmod
from greencpn.optimize.inputs import PlanInputs, group_jobs
from greencpn.optimize.milp import SolveStatus
from greencpn.optimize.stability import Anchor, StablePlanModel, plan_moves, plan_nodes_on

log = logging.getLogger(__name__)

PHASES = ("observe", "forecast", "optimize", "reconcile", "act", "record")
NODE_STATES = ("on", "off", "booting", "draining", "failed", "unknown")


class Queue(Protocol):
    """Where pending and running jobs come from (Slurm, Kubernetes, a trace, the config)."""

    def observe(self, now: datetime) -> QueueState: ...


class ConfigQueue:
    """The jobs of the config's ``jobs``/``jobs_file`` as pending jobs (nothing running)."""

    def __init__(self, controller: Controller) -> None:
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


def _parse(text: str) -> datetime:
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


def safe_plan(cfg: FleetConfig, start: datetime, failed: Mapping[str, int]) -> dict[str, Any]:
    """The plan of last resort: every usable node on, default caps, no job held."""
    hz = cfg.raw.horizon
    T = hz.slots
    starts = [start + timedelta(minutes=hz.slot_minutes * i) for i in range(T)]
    pools = []
    for p in cfg.pools:
        gm = cfg.gpu_models[p.gpu_model.lower()]
        on = max(0, p.nodes - failed.get(p.name, 0))
        pools.append(
            {
                "name": p.name,
                "site": p.site,
                "gpu_model": gm.name,
                "nodes": p.nodes,
                "gpus_per_node": p.gpus_per_node,
                "spares": p.spares,
                "hostlist": p.hostlist,
                "hook": p.hook.model_dump(),
                "power_limit_min_w": gm.power_limit_min_w,
                "power_limit_max_w": gm.power_limit_max_w,
                "power_limit_default_w": gm.power_limit_default_w,
                "slots": [
                    {"slot": t, "nodes_on": on, "power_cap_w": gm.power_limit_default_w}
                    for t in range(T)
                ],
            }
        )
    return {
        "schema": planmod.SCHEMA,
        "origin": "safe",
        "config": str(cfg.path),
        "fleet": cfg.raw.name,
        "horizon": {
            "start": _iso(start),
            "slot_minutes": hz.slot_minutes,
            "slots": T,
            "slot_starts": [_iso(s) for s in starts],
        },
        "pools": pools,
        "jobs": [],
        "sites": [],
        "diagnostics": ["safe plan: all usable nodes on, default caps, jobs released"],
    }


def shift_plan(
    doc: dict[str, Any], start: datetime, cfg: FleetConfig, failed: Mapping[str, int]
) -> dict[str, Any] | None:
    """The previous plan moved forward so that its slot 0 is ``start``; ``None`` if it no
    longer covers ``start``, was made for other pools, or needs nodes that have failed."""
    hz = doc.get("horizon") or {}
    starts = [_parse(s) for s in hz.get("slot_starts", [])]
    if start not in starts:
        return None
    k = starts.index(start)
    if {p["name"] for p in doc.get("pools", [])} != {p.name for p in cfg.pools}:
        return None
    nodes = {p.name: p.nodes for p in cfg.pools}
    out = dict(doc)
    out["origin"] = "previous_shifted"
    out["horizon"] = {**hz, "start": _iso(start), "slot_starts": [_iso(s) for s in starts[k:]]}
    out["horizon"]["slots"] = len(starts) - k
    pools = []
    for p in doc["pools"]:
        slots = [dict(s, slot=int(s["slot"]) - k) for s in p["slots"] if int(s["slot"]) >= k]
        usable = nodes[p["name"]] - failed.get(p["name"], 0)
        if any(int(s.get("nodes_on", 0)) > usable for s in slots[:1]):
            return None
        pools.append({**p, "slots": slots})
    out["pools"] = pools
    # the jobs' slots and placement steps count from the new slot 0 as well (the kept
    # placement of the next step rebuilds them relative to this horizon's start)
    step_min = hz.get("placement_step_minutes")
    per_slot = round(float(hz["slot_minutes"]) / float(step_min)) if step_min else 0
    jobs = []
    for j in doc.get("jobs", []):
        j = dict(j)
        j["schedule"] = [
            dict(r, slot=int(r["slot"]) - k) for r in j.get("schedule", []) if int(r["slot"]) >= k
        ]
        if "placement_runs" in j:
            off = k * per_slot  # runs are clipped to the steps still ahead
            j["placement_runs"] = [
                dict(
                    r,
                    step=max(0, int(r["step"]) - off),
                    steps=int(r["steps"]) - max(0, off - int(r["step"])),
                )
                for r in j["placement_runs"]
                if int(r["step"]) + int(r["steps"]) > off
            ]
        jobs.append(j)
    out["jobs"] = jobs
    out["diagnostics"] = list(doc.get("diagnostics", [])) + [
        f"previous plan shifted forward by {k} slot(s) (the re-plan failed)"
    ]
    return out


def _chosen_stab(doc: dict[str, Any]) -> float | None:
    """The stability cost of the candidate that became the plan (plan.json's solver block)."""
    sv = doc.get("solver") or {}
    for c in sv.get("candidates") or []:
        if c.get("name") == sv.get("plan_source"):
            return float(c["stability_cost"])
    return None


def _reuse_label(reuse: Mapping[str, Any]) -> dict[str, Any]:
    """How a step that reused the baseline says so (metrics, plan.json, daemon state)."""
    return {
        "priced": False,
        "step_id": reuse["step_id"],
        "priced_at": reuse["priced_at"],
        "slot_start": reuse["slot_start"],
        "age_steps": reuse["age_steps"],
        "age_s": reuse["age_s"],
    }


def _job_call(ja: JobActuator, d: JobDecision) -> Callable[[], Any]:
    if d.kind == "defer":
        return lambda: ja.defer(d.job_id, _parse(d.detail["until"]))
    if d.kind == "steer":
        return lambda: ja.steer(d.job_id, d.detail.get("site") or "", d.detail.get("pool"))
    return lambda: ja.release(d.job_id)


class Controller:
    """The control step (see the module docstring and docs/controller.md).

    Args:
        config_path: the fleet config (TOML).
        clock: the time source (real or simulated); nothing reads the time elsewhere.
        state_dir: where the step ledger (``steps.sqlite``) and the apply ledger live.
        mode: ``shadow`` (default) records what would be done; ``enforce`` acts.
        levers: per pool, which levers may act (default: all, in enforce mode).
        backends: node hooks and GPU backends (default: built from the config's hooks).
        fence: called before every action; returns the leader epoch or raises NotLeaderError.
        queue: where jobs come from (default: the config's jobs as pending).
        job_actuator: acts on jobs (defer / steer / release); ``None``: record what it would do.
        settings: apply safety settings (default: ``control.toml`` beside the config).
        sleep: waits inside the step (retries, boot waits); tests advance a SimClock.
        rolling: the horizon starts at the current slot (daemon); ``False`` keeps the config's
            ``horizon.start`` when it is set (the one-off report).

    Raises:
        ConfigError: a bad config (the only exception for user input).
    """

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
            self._ledger = StepLedger.open(self.state_dir, self._cfg.raw.controller.keep_plans)
            self._recover()
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def override_solver(self, **fields: Any) -> None:
        """Change solver settings of the loaded config (e.g. ``time_limit_s`` from the CLI)."""
        self._override("solver", fields)

    def override_controller(self, **fields: Any) -> None:
        """Change ``[controller]`` settings of the loaded config (e.g. ``baselines`` in the
        what-if replay); the values are validated like the config file's."""
        from greencpn.config import ControllerConfig

        merged = {**self._cfg.raw.controller.model_dump(), **fields}
        ControllerConfig.model_validate(merged)  # raises on a bad value
        self._override("controller", fields)

    def _override(self, section: str, fields: dict[str, Any]) -> None:
        cfg = self._cfg
        sub = getattr(cfg.raw, section).model_copy(update=fields)
        raw = cfg.raw.model_copy(update={section: sub})
        self._cfg = FleetConfig(
            path=cfg.path,
            raw=raw,
            gpu_models=cfg.gpu_models,
            jobs=cfg.jobs,
            carbon_path=cfg.carbon_path,
        )

    def reload(self) -> None:
        """Re-read the config; on ConfigError keep the old one and re-raise."""
        cfg = load_config(self._config_path)
        self._cfg = cfg
        self._model = None
        self._model_key = None
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
        if not self.rolling and cfg.raw.horizon.start is not None:
            return cfg.raw.horizon.start
        step = cfg.raw.horizon.slot_minutes * 60
        now = self.clock.now()
        return datetime.fromtimestamp(int(now.timestamp()) // step * step, UTC)

    def _apply_failed(self) -> set[str]:
        if not (self.state_dir / APPLY_LEDGER_FILE).is_file():
            return set()
        led = Ledger.open_readonly(self.state_dir)
        try:
            return {n.name for n in led.nodes() if n.failed}
        finally:
            led.close()

    def observe(self, errors: list[dict], *, hardware: bool = True) -> Observation:
        obs = Observation()
        marked_failed = self._apply_failed()
        hooks = self.backends.hooks if hardware else {}
        for pool in self._cfg.pools:
            nodes = expand(pool.hostlist) if pool.hostlist else []
            hook = hooks.get(pool.name)
            counts = dict.fromkeys(NODE_STATES, 0)
            if hook is None or not nodes:
                on = pool.nodes if pool.initial_on is None else pool.initial_on
                obs.initial_on[pool.name] = on
                obs.failed[pool.name] = len(marked_failed & set(nodes))
                counts["on"], counts["off"] = on, pool.nodes - on
                obs.counts[pool.name] = counts
                continue
            try:
                got = {s.name: s for s in hook.status(nodes)}
                sts = [
                    got.get(n) or NodeStatus(n, NodePower.UNKNOWN, detail="no reply") for n in nodes
                ]
            except Exception as exc:
                errors.append(
                    {
                        "type": "observe",
                        "where": f"pool {pool.name}",
                        "message": f"{type(exc).__name__}: {exc}",
                    }
                )
                sts = [NodeStatus(n, NodePower.UNKNOWN, detail="status failed") for n in nodes]
            obs.statuses[pool.name] = sts
            failed = 0
            on = 0
            for st in sts:
                if st.power == NodePower.FAILED or st.name in marked_failed:
                    counts["failed"] += 1
                    failed += 1
                    continue
                if st.power == NodePower.ON and st.drained:
                    counts["draining"] += 1
                elif st.power == NodePower.ON:
                    counts["on"] += 1
                elif st.power == NodePower.BOOTING:
                    counts["booting"] += 1
                elif st.power in (NodePower.OFF, NodePower.SHUTTING_DOWN):
                    counts["off"] += 1
                else:
                    counts["unknown"] += 1
                if st.power in (NodePower.ON, NodePower.BOOTING, NodePower.UNKNOWN):
                    on += 1  # unknown counts as on: the plan never assumes capacity is free
            # the plan's pool has nodes − failed nodes (inputs.without_failed)
            obs.initial_on[pool.name] = min(on, len(nodes) - failed)
            obs.failed[pool.name] = failed
            obs.counts[pool.name] = counts
        try:
            obs.queue = self.queue.observe(self.clock.now())
        except Exception as exc:
            errors.append(
                {"type": "queue", "where": "observe", "message": f"{type(exc).__name__}: {exc}"}
            )
            obs.queue = QueueState(pending=list(self._cfg.jobs), source="config (queue failed)")
        return obs

    def forecast(
        self, start: datetime, errors: list[dict], strict: bool
    ) -> tuple[fcmod.Forecast, dict[str, dict]]:
        cfg = self._cfg
        try:
            fc = fcmod.gather(cfg, self.clock, start)
        except Exception as exc:
            if strict:
                raise
            errors.append(
                {"type": "source", "where": "forecast", "message": f"{type(exc).__name__}: {exc}"}
            )
            prev = self._last_forecast
            fb = self._fallback_forecast(start)
            if fb is None or prev is None:
                raise
            sources: dict[str, dict[str, Any]] = {
                s.name: {
                    "source": "previous forecast",
                    "issued_at": _iso(prev.start),
                    "freshness": "fallback",
                    "detail": {"error": str(exc)[:300]},
                }
                for s in cfg.sites
            }
            return fb, sources
        sources = {}
        for s in cfg.sites:
            p = fc.provenance.get(s.name)
            if p is None:
                sources[s.name] = {
                    "source": f"csv:{cfg.carbon_path}",
                    "issued_at": None,
                    "freshness": "fresh",
                }
                continue
            fresh = (
                "fallback" if p.get("fallback") else ("stale" if p.get("stale_age_s") else "fresh")
            )
            sources[s.name] = {
                "source": p.get("source"),
                "issued_at": p.get("issued_at"),
                "freshness": fresh,
                "detail": {k: p.get(k) for k in ("fallback", "stale_age_s", "errors") if p.get(k)},
            }
        self._last_forecast = fc
        return fc, sources

    def _fallback_forecast(self, start: datetime) -> fcmod.Forecast | None:
        """The last good forecast moved to ``start`` (its last value repeated at the end)."""
        prev = self._last_forecast
        if prev is None:
            return None
        slot = timedelta(minutes=self._cfg.raw.horizon.slot_minutes)
        k = int(round((start - prev.start) / slot))
        T = self._cfg.raw.horizon.slots
        if k < 0:
            return None

        def shift(a: np.ndarray) -> np.ndarray:
            a = np.asarray(a, dtype=float)
            rest = a[k:] if k < a.size else a[-1:]
            return np.concatenate([rest, np.full(max(0, T - rest.size), rest[-1])])[:T]

        return fcmod.Forecast(
            start,
            {z: shift(v) for z, v in prev.intensity_by_zone.items()},
            {},
            {},
            {p: shift(v) for p, v in prev.reserves.items()},
        )

    def world_config(self, obs: Observation, start: datetime) -> FleetConfig:
        """The config as the world is now: horizon from ``start``, observed nodes on, the
        queue's jobs (running ones fixed, see :meth:`pin_running`)."""
        cfg = self._cfg
        raw = cfg.raw
        ctl = raw.controller
        pools = [
            p.model_copy(update={"initial_on": obs.initial_on.get(p.name, p.initial_on)})
            for p in raw.pools
        ]
        jobs = list(obs.queue.pending)
        for r in obs.queue.running:
            if r.job.checkpointable and ctl.preempt_checkpointable:
                jobs.append(
                    r.job.model_copy(
                        update={"release": start, "work_gpu_h": max(r.remaining_gpu_h, 1e-6)}
                    )
                )
                continue
            run_h = r.remaining_gpu_h / max(r.job.gpus, 1)
            slot_h = raw.horizon.slot_minutes / 60.0
            end = start + timedelta(hours=math.ceil(run_h / slot_h - 1e-9) * slot_h)
            jobs.append(
                r.job.model_copy(
                    update={
                        "release": start,
                        "work_gpu_h": max(r.remaining_gpu_h, 1e-6),
                        # planned to run on from now: its planning deadline is when it would
                        # end uninterrupted (a later real deadline would let the plan pause it)
                        "deadline": end,
                    }
                )
            )
        raw2 = raw.model_copy(
            update={"horizon": raw.horizon.model_copy(update={"start": start}), "pools": pools}
        )
        return FleetConfig(
            path=cfg.path,
            raw=raw2,
            gpu_models=cfg.gpu_models,
            jobs=jobs,
            carbon_path=cfg.carbon_path,
        )

    def pin_running(self, inp: PlanInputs, obs: Observation) -> PlanInputs:
        """Running jobs that keep their pool may only use that pool's site."""
        if not obs.queue.running:
            return inp
        ctl = self._cfg.raw.controller
        pool_site = {p.name: p.site for p in inp.pools}
        pin = {
            r.job.id: pool_site[r.pool]
            for r in obs.queue.running
            if r.pool in pool_site and not (r.job.checkpointable and ctl.preempt_checkpointable)
        }
        jobs = [
            replace(j, sites=(pin[j.id],), release_slot=0) if j.id in pin else j for j in inp.jobs
        ]
        return replace(
            inp, jobs=jobs, groups=group_jobs(jobs, inp.T, inp.solver.window_rounding_slots)
        )

    def anchor(
        self,
        inp: PlanInputs,
        prev: dict[str, Any] | None,
        now: datetime,
        latest: dict[str, Any] | None = None,
    ) -> Anchor:
        """The re-planning anchor: min up / min down from the power history; the MILP's
        stability terms against ``prev`` (the newest plan made for an earlier slot, the same
        for every step of a slot, so the built model can be kept); and ``latest`` (the newest
        plan, also one made earlier in this slot), which every candidate is scored against and
        the kept-placement candidate starts from (optimize/plan.py)."""
        ctl = self._cfg.raw.controller
        P, T, K, S = len(inp.pools), inp.T, len(inp.groups), len(inp.sites)
        a = Anchor(
            flap_weight=ctl.node_flap_weight,
            site_weight_per_gpu_h=ctl.job_move_weight_per_gpu_h,
            shift_weight_per_gpu_h_slot=ctl.job_shift_weight_per_gpu_h_slot,
        )
        # min up / min down from the power history of the step ledger
        hist = self.ledger.last_power_events(now - timedelta(hours=48))
        must_on = np.zeros((P, T), dtype=int)
        must_off = np.zeros((P, T), dtype=int)
        pools_cfg = {p.name: p for p in self._cfg.pools}
        epoch, us = datetime(1970, 1, 1, tzinfo=UTC), timedelta(microseconds=1)
        # slot 0 began before now: a node is held in it only if it is held now (exact µs)
        from_us = np.array([(max(ts, now) - epoch) // us for ts in inp.slot_starts], dtype=np.int64)
        for p, pool in enumerate(inp.pools):
            pc = pools_cfg[pool.name]
            for n in expand(pc.hostlist) if pc.hostlist else []:
                ev = hist.get(n)
                if ev is None:
                    continue
                hold_h = pc.min_up_h if ev.event == "on" else pc.min_down_h
                until_us = (ev.at + timedelta(hours=hold_h) - epoch) // us
                (must_on if ev.event == "on" else must_off)[p] += from_us < until_us
        a.must_on, a.must_off = must_on, must_off
        if latest is not None:
            a.latest = latest
            a.latest_nodes_on = plan_nodes_on(inp, latest)
        if prev is None:
            return a
        a.prev_nodes_on = plan_nodes_on(inp, prev)
        prev_jobs = {j["id"]: j for j in prev.get("jobs", [])}
        site_idx = {s.name: i for i, s in enumerate(inp.sites)}
        moved = np.zeros((K, S))
        shift = np.zeros((K, T))
        for k, g in enumerate(inp.groups):
            tot = 0.0
            for j in g.jobs:
                job = inp.jobs[j]
                pj = prev_jobs.get(job.id)
                w = job.required_gpu_h
                tot += w
                if pj is None or pj.get("site") is None or pj.get("start") is None:
                    continue
                s_prev = site_idx.get(pj["site"])
                if s_prev is not None:
                    moved[k] += w
                    moved[k, s_prev] -= w
                t0 = (_parse(pj["start"]) - inp.start).total_seconds() / 3600.0 / inp.slot_h
                shift[k] += w * np.abs(np.arange(T) - t0)
            if tot > 0:
                moved[k] /= tot
                shift[k] /= tot
        a.moved_share, a.shift_slots = moved, shift
        return a

    def optimize(
        self, cfg2: FleetConfig, inp: PlanInputs, failed: dict[str, int], anchor: Anchor | None
    ) -> planmod.PlanResult:
        """Plan on a new model, or re-solve the kept one (new carbon Params, warm persistent
        solver) when nothing but the forecast changed: same slot, job groups, pools' initial
        state and reserves, and the same anchor (e.g. a second step in one slot)."""
        key = self._model_signature(inp, anchor)
        model = self._model if key == self._model_key else None
        if isinstance(model, StablePlanModel):
            # same MILP terms (the signature covers them); the newest plan is this step's
            model.anchor = anchor
        built: list[StablePlanModel] = []

        def new_model(i: PlanInputs) -> StablePlanModel:
            built.append(StablePlanModel(i, anchor))
            return built[-1]

        self._model, self._model_key = None, None  # not kept if the solve fails
        ctl = self._cfg.raw.controller
        candidates = ctl.candidates
        skipped = None
        if candidates and 0 < ctl.candidates_max_jobs < len(inp.jobs):
            # bounded on big fleets: the per-job cap-level and greedy placements cost seconds
            # each there (measured in bench/results/controller.md)
            candidates = False
            skipped = (
                f"{len(inp.jobs)} jobs > controller.candidates_max_jobs = {ctl.candidates_max_jobs}"
            )
        reuse = self._baseline_to_reuse(inp)
        self._baseline_reuse = reuse
        res = planmod.make_plan(
            cfg2,
            self.clock,
            model=model,
            failed_nodes=failed,
            inputs=inp,
            new_model=new_model,
            tradeoff_curve=False,
            joblevel=self._cfg.raw.controller.joblevel_candidate,
            candidates=candidates,
            incremental=len(inp.jobs) >= ctl.incremental_min_jobs,
            improve=False,  # the re-insertion pass is for one-off plans (no stability cost)
            baselines="none" if reuse is not None else ctl.baselines,
        )
        if skipped:
            res.document.setdefault("solver", {})["candidates_skipped"] = skipped
        if reuse is not None:
            sv = res.document.setdefault("solver", {})
            sv["baselines"] = ctl.baselines
            sv["baselines_reused"] = _reuse_label(reuse)
            res.document.setdefault("diagnostics", []).append(
                f"baselines: not priced this step (controller.baselines_every = "
                f"{ctl.baselines_every}); the saving figures use the carbon-agnostic baseline "
                f"priced by step #{reuse['step_id']} at {reuse['priced_at']} for slot "
                f"{reuse['slot_start']} ({reuse['age_steps']} step(s), "
                f"{reuse['age_s'] / 3600.0:g} h old)"
            )
        self._model, self._model_key = (built[-1] if built else model), key
        used = self._model
        if isinstance(used, StablePlanModel):
            res.document.setdefault("solver", {})["warm_start"] = dict(used.warm_start_info)
        return res

    # ------------------------------------------------------------------ baselines every N steps
    _step_id: int | None = None
    _baseline_reuse: dict[str, Any] | None = None

    def _baseline_fleet(self, inp: PlanInputs) -> str:
        """What the stored baseline was priced for: the pools, slot length and baseline set
        (a reload that changes any of them prices afresh)."""
        ctl = self._cfg.raw.controller
        return repr(
            (
                ctl.baselines,
                inp.slot_h,
                [(p.name, p.site, p.nodes, p.gpus_per_node) for p in inp.pools],
            )
        )

    def _baseline_to_reuse(self, inp: PlanInputs) -> dict[str, Any] | None:
        """The newest priced baseline (ledger kv ``baseline_priced``) when this step may use it
        instead of pricing (``[controller] baselines_every``): priced fewer than N steps ago,
        for the same fleet, and its horizon still covers this slot. ``None``: price now."""
        ctl = self._cfg.raw.controller
        if ctl.baselines == "none" or ctl.baselines_every <= 1 or self._step_id is None:
            return None
        kv = self.ledger.get_kv("baseline_priced")
        if not kv or kv.get("fleet") != self._baseline_fleet(inp):
            return None
        age_steps = self._step_id - int(kv["step_id"])
        if not 0 < age_steps < ctl.baselines_every:
            return None
        k = (inp.start - _parse(kv["slot_start"])).total_seconds() / 3600.0 / inp.slot_h
        if abs(k - round(k)) > 1e-9 or not 0 <= round(k) < len(kv["carbon_kg"]):
            return None
        return {
            **kv,
            "slot_offset": int(round(k)),
            "age_steps": age_steps,
            "age_s": (self.clock.now() - _parse(kv["priced_at"])).total_seconds(),
        }

    def _baseline_saving(
        self, res: planmod.PlanResult, m: dict[str, Any], step_id: int | None, start: datetime
    ) -> None:
        """This slot's saving against the carbon-agnostic baseline (``saved_kg_co2e``,
        ``saved_kwh``) and ``m["baseline"]``: which pricing it comes from. Priced this step:
        stored as the newest priced baseline (per slot, summed over sites)."""
        ctl = self._cfg.raw.controller
        ex = res.executed
        ex_kg = float(ex.site_carbon_kg[:, 0].sum())
        ex_kwh = float(ex.site_energy_kwh[:, 0].sum())
        base = res.baselines.get("carbon_agnostic")  # none with [controller] baselines = none
        reuse = self._baseline_reuse
        if base is not None:
            m["saved_kg_co2e"] = float(base.site_carbon_kg[:, 0].sum() - ex_kg)
            m["saved_kwh"] = float(base.site_energy_kwh[:, 0].sum() - ex_kwh)
            priced_at = _iso(self.clock.now())
            m["baseline"] = {
                "priced": True,
                "step_id": step_id,
                "priced_at": priced_at,
                "slot_start": _iso(start),
                "age_steps": 0,
                "age_s": 0.0,
                "every": ctl.baselines_every,
            }
            if ctl.baselines_every > 1 and step_id is not None:
                self.ledger.set_kv(
                    "baseline_priced",
                    {
                        "step_id": step_id,
                        "priced_at": priced_at,
                        "slot_start": _iso(start),
                        "fleet": self._baseline_fleet(res.inputs),
                        "carbon_kg": base.site_carbon_kg.sum(axis=0).tolist(),
                        "energy_kwh": base.site_energy_kwh.sum(axis=0).tolist(),
                    },
                )
        elif reuse is not None:
            k = reuse["slot_offset"]
            m["saved_kg_co2e"] = float(reuse["carbon_kg"][k]) - ex_kg
            m["saved_kwh"] = float(reuse["energy_kwh"][k]) - ex_kwh
            m["baseline"] = {**_reuse_label(reuse), "every": ctl.baselines_every}

    @staticmethod
    def _model_signature(inp: PlanInputs, anchor: Anchor | None) -> tuple:
        import hashlib

        h = hashlib.sha1()
        for g in inp.groups:
            h.update(repr((g.key, round(g.required_gpu_h, 6), g.gpus)).encode())
        for p in inp.pools:
            h.update(repr((p.nodes, p.initial_on, p.spares)).encode())
            h.update(np.asarray(p.reserve_gpus, dtype=float).tobytes())
        if anchor is not None:
            for arr in (
                anchor.prev_nodes_on,
                anchor.moved_share,
                anchor.shift_slots,
                anchor.must_on,
                anchor.must_off,
            ):
                h.update(b"-" if arr is None else np.asarray(arr, dtype=float).tobytes())
            h.update(
                repr(
                    (
                        anchor.flap_weight,
                        anchor.site_weight_per_gpu_h,
                        anchor.shift_weight_per_gpu_h_slot,
                    )
                ).encode()
            )
        return (inp.start, inp.T, len(inp.jobs), h.hexdigest())

    # ------------------------------------------------------------------ the report
    def plan(self, *, safe_fallback: bool = False) -> planmod.PlanResult:
        """Observe (config and apply ledger only, no hardware) → forecast → optimise, strictly:
        a fault raises (``greencpn plan``). The same phases :meth:`step` runs. With
        ``safe_fallback``, a solve that ends with no incumbent gives :func:`safe_plan`, priced
        (:func:`greencpn.optimize.plan.safe_result`; its document says ``origin = "safe"``)."""
        errors: list[dict] = []
        start = self.slot_start()
        obs = self.observe(errors, hardware=False)
        fc, _ = self.forecast(start, errors, strict=True)
        cfg2 = self.world_config(obs, start)
        inp = self.pin_running(fcmod.inputs_from(cfg2, fc, obs.failed), obs)
        try:
            res = planmod.make_plan(cfg2, self.clock, failed_nodes=obs.failed, inputs=inp)
        except planmod.NoIncumbentError as exc:
            if not safe_fallback:
                raise
            log.warning("no incumbent (%s): the safe plan is the plan", exc.outcome.status.value)
            doc = safe_plan(self._cfg, start, obs.failed)
            res = planmod.safe_result(
                cfg2, self.clock, exc.inputs, exc.outcome, exc.diagnostics, doc
            )
        self.last_plan_result = res
        return res

    # ------------------------------------------------------------------ the step
    def step(self) -> StepResult:
        """One observe → forecast → optimise → reconcile → act → record. Never raises for
        faults: they are in ``errors`` (and the ledger), the status says how it went."""
        ledger = self.ledger
        started = self.clock.now()
        start = self.slot_start()
        phase_s = dict.fromkeys(PHASES, 0.0)
        errors: list[dict] = []
        sources: dict[str, dict] = {}
        status = StepStatus.OK
        origin = "optimized"
        solver_status = mip_gap = None
        res: planmod.PlanResult | None = None
        doc: dict[str, Any] | None = None
        step_id = ledger.begin_step(started, start, self.mode.value)
        self._step_id = step_id
        self._baseline_reuse = None
        self._moves = None
        for note in self.recovered:
            errors.append({"type": "recovered", "where": "start", "message": note})
        self.recovered = []

        t = time.perf_counter()
        obs = self.observe(errors)
        phase_s["observe"] = time.perf_counter() - t

        prev_entry = self._previous_plan(start, earlier_slot=True)
        t = time.perf_counter()
        fc = None
        try:
            fc, sources = self.forecast(start, errors, strict=False)
            if any(s["freshness"] != "fresh" for s in sources.values()):
                status = StepStatus.DEGRADED
        except Exception as exc:
            errors.append(
                {
                    "type": "source",
                    "where": "forecast",
                    "message": f"no forecast and no fallback: {exc}",
                }
            )
        phase_s["forecast"] = time.perf_counter() - t

        t = time.perf_counter()
        if fc is not None:
            try:
                cfg2 = self.world_config(obs, start)
                inp = self.pin_running(fcmod.inputs_from(cfg2, fc, obs.failed), obs)
                inp.extras["running_job_ids"] = [r.job.id for r in obs.queue.running]
                latest = self._previous_plan(start, earlier_slot=False)
                anchor = self.anchor(inp, prev_entry, started, latest)
                res = self.optimize(cfg2, inp, obs.failed, anchor)
                doc = res.document
                doc["origin"] = "optimized"
                self._moves = {**plan_moves(latest, doc), "stability_cost": _chosen_stab(doc)}
                solver_status = res.outcome.status.value
                mip_gap = res.outcome.mip_gap
                if res.outcome.status is SolveStatus.TIME_LIMIT:
                    status = StepStatus.DEGRADED
                    errors.append(
                        {
                            "type": "solver_time_limit",
                            "where": "optimize",
                            "message": f"time limit {cfg2.raw.solver.time_limit_s:g} s: incumbent used (gap {mip_gap})",
                        }
                    )
            except (SolverError, ConfigError, GreencpnError, ValueError, RuntimeError) as exc:
                errors.append(
                    {
                        "type": "solver",
                        "where": "optimize",
                        "message": f"{type(exc).__name__}: {exc}",
                    }
                )
                solver_status = "error"
                res = None
        if doc is None:
            last = self._previous_plan(start, earlier_slot=False)
            shifted = shift_plan(last, start, self._cfg, obs.failed) if last else None
            if shifted is not None:
                doc, origin, status = shifted, "previous_shifted", StepStatus.DEGRADED
            else:
                doc, origin, status = (
                    safe_plan(self._cfg, start, obs.failed),
                    "safe",
                    StepStatus.FAILED,
                )
        phase_s["optimize"] = time.perf_counter() - t

        actions: list[dict] = []
        try:
            act_status = self._reconcile_and_act(step_id, doc, start, obs, phase_s, errors, actions)
        except Exception as exc:  # an unexpected fault in the act phase: recorded, not raised
            log.exception("act phase failed")
            errors.append(
                {"type": "act", "where": "act", "message": f"{type(exc).__name__}: {exc}"}
            )
            act_status = StepStatus.DEGRADED
        if act_status is StepStatus.DEGRADED and status is StepStatus.OK:
            status = act_status

        t = time.perf_counter()
        metrics = self._metrics(obs, doc, res, actions)
        ledger.record_inputs(step_id, sources)
        for e in errors:
            if e["type"] not in ("actuator_temporary", "actuator_permanent", "not_leader"):
                ledger.failure(step_id, self.clock.now(), e["type"], e["where"], e["message"])
        metrics["ledger_plan_bytes"] = ledger.record_plan(step_id, doc)
        finished = self.clock.now()
        phase_s["record"] = time.perf_counter() - t
        ledger.finish_step(
            step_id,
            finished,
            status=status.value,
            plan_origin=origin,
            solver_status=solver_status,
            mip_gap=mip_gap,
            epoch=self._epoch,
            phase_s=phase_s,
            sources=sources,
            errors=errors,
            metrics=metrics,
        )
        self.last_plan_result = res
        return StepResult(
            step_id=step_id,
            started_at=started,
            finished_at=finished,
            slot_start=start,
            status=status,
            mode=self.mode,
            solver_status=solver_status,
            mip_gap=mip_gap,
            phase_s=phase_s,
            sources=sources,
            actions=actions,
            errors=errors,
            plan=doc,
            metrics=metrics,
            plan_origin=origin,
        )

    _epoch: int | None = None

    def _previous_plan(self, start: datetime, earlier_slot: bool) -> dict[str, Any] | None:
        """The newest usable plan; with ``earlier_slot`` only one made for an earlier slot
        (the stability anchor, the same for every step of a slot)."""
        sql = (
            "SELECT p.step_id FROM plans p JOIN steps s ON s.id = p.step_id WHERE "
            "s.plan_origin IN ('optimized', 'previous_shifted')"
        )
        args: tuple = ()
        if earlier_slot:
            sql += " AND s.slot_start < ?"
            args = (_iso(start),)
        row = self.ledger.db.execute(sql + " ORDER BY p.step_id DESC LIMIT 1", args).fetchone()
        return None if row is None else self.ledger.plan(int(row[0]))

    # ------------------------------------------------------------------ reconcile + act
    def _levered(self, doc: dict[str, Any]) -> tuple[dict[str, Any], Backends]:
        pools = []
        hooks: dict[str, NodePowerHook | None] = {}
        base = self.backends
        for p in doc["pools"]:
            lv = self.lever(p["name"])
            if not lv.caps:
                p = {
                    **p,
                    "slots": [
                        {k: v for k, v in s.items() if k != "power_cap_w"} for s in p["slots"]
                    ],
                }
            pools.append(p)
            hooks[p["name"]] = base.hooks.get(p["name"]) if lv.power else None
        out = {**doc, "pools": pools}
        no_caps = {p["name"] for p in doc["pools"] if not self.lever(p["name"]).caps}
        if no_caps and "jobs" in doc:  # a job's own cap is a cap lever of its pool too
            out["jobs"] = [
                {k: v for k, v in j.items() if k != "power_cap_w"}
                if j.get("pool") in no_caps
                else j
                for j in doc["jobs"]
            ]
        return out, Backends(hooks=hooks, gpus=base.gpus, job_gpus=base.job_gpus)

    def _reconcile_and_act(
        self,
        step_id: int,
        doc: dict[str, Any],
        start: datetime,
        obs: Observation,
        phase_s: dict[str, float],
        errors: list[dict],
        actions: list[dict],
    ) -> StepStatus:
        ledger = self.ledger
        ctl = self._cfg.raw.controller
        now = self.clock.now()
        t = time.perf_counter()
        settings = self.settings()
        slot = timedelta(minutes=int(doc["horizon"]["slot_minutes"]))
        ref = SlotRef(0, start, start + slot)
        degraded = {
            p: v
            for p, v in (ledger.get_kv("degraded_pools", {}) or {}).items()
            if (now - _parse(v["at"])).total_seconds() < ctl.degraded_cooldown_s
        }
        guard = ActionGuard(
            ledger,
            step_id,
            self.clock,
            self.sleep,
            self.fence,
            retries=ctl.retries,
            backoff_s=ctl.retry_backoff_s,
            blocked={
                p: f"pool degraded since {v['at']}: {v['message']}" for p, v in degraded.items()
            },
        )
        node_pool = {
            n: p.name for p in self._cfg.pools for n in (expand(p.hostlist) if p.hostlist else [])
        }
        act_doc, levered = self._levered(doc)
        if levered.job_gpus is None:  # per-job caps need the running jobs' GPU indices
            lookup = getattr(self.job_actuator, "job_gpu_lookup", None)
            job_gpus = lookup() if callable(lookup) else None
            if job_gpus is not None:
                levered = replace(levered, job_gpus=job_gpus)
        gb = guard.wrap(levered, node_pool)
        # NORMAL like the step ledger: every commit survives a kill -9 (docs in Ledger.open)
        apply_ledger = Ledger.open(self.state_dir, synchronous="NORMAL")
        try:
            apply_ledger.close_unfinished(now)
            diffs = compute_diff(
                act_doc, ref, self._cfg, gb, apply_ledger, settings, now, source=f"step {step_id}"
            )
            with ledger.tx():
                self._intend_hw(step_id, now, diffs)
            for pool, why in guard.blocked.items():
                ledger.skip_pool(step_id, pool, now, why)
            running = {r.job.id for r in obs.queue.running}
            decisions = decide_jobs(doc, obs.queue.pending, running, now, ref.end)
            job_pool = {j["id"]: j.get("pool") for j in doc.get("jobs", [])}
            with ledger.tx():
                job_rows = self._intend_jobs(step_id, decisions, job_pool)
            phase_s["reconcile"] = time.perf_counter() - t

            t = time.perf_counter()
            mode = "act" if self.mode is Mode.ENFORCE else "shadow"
            apply_id = apply_ledger.begin_apply(
                now, plan_path=f"step:{step_id}", slot=0, slot_start=start, mode=mode
            )
            report = ApplyReport(slot=ref, mode=mode, diffs=diffs)
            run = _Run(diffs, report, gb, apply_ledger, settings, self.clock, self.sleep, apply_id)
            if mode == "act":
                run.run()
                ledger.close_intended(
                    step_id,
                    self.clock.now(),
                    "skipped",
                    f"not carried out by the apply (held, deferred or unsafe; apply #{apply_id})",
                    jobs=False,
                )
            else:
                run.shadow()
            self._act_jobs(step_id, decisions, job_rows, job_pool, guard)
            ledger.close_intended(step_id, self.clock.now(), "shadow", "would do (shadow mode)")
            apply_ledger.finish_apply(
                apply_id,
                self.clock.now(),
                report.outcome,
                {"step": step_id, "steps": len(report.steps), "problems": len(report.problems)},
            )
        finally:
            apply_ledger.close()
        self._epoch = guard.epoch
        for p, msg in guard.degraded.items():
            degraded[p] = {"at": _iso(self.clock.now()), "message": msg}
        ledger.set_kv("degraded_pools", degraded)
        errors.extend(guard.errors)
        for a in ledger.actions(step_id):
            actions.append(
                {
                    "kind": a.kind,
                    "target": a.target,
                    "pool": a.pool,
                    "detail": a.message or a.detail,
                    "status": a.status,
                    "epoch": a.epoch,
                }
            )
        phase_s["act"] = time.perf_counter() - t
        self._decisions = decisions
        self._degraded_pools = sorted(degraded)
        bad = any(a["status"] == "failed" for a in actions) or guard.deposed or guard.degraded
        return StepStatus.DEGRADED if bad else StepStatus.OK

    _decisions: list[JobDecision] = []
    _failsafe: list[tuple[str, str, str, str]] = []  # fail-safe releases carried out this step
    _degraded_pools: list[str] = []
    _moves: dict[str, Any] | None = None

    def _intend_hw(self, step_id: int, now: datetime, diffs: list) -> None:
        """The reconcile diff as ``intended`` rows, one per target."""
        ledger = self.ledger
        for d in diffs:
            for c in d.cap_lower + d.cap_raise:
                ledger.intend(
                    step_id,
                    now,
                    "set_power_cap",
                    c.target,
                    d.name,
                    {"before_w": c.before_w, "after_w": c.after_w},
                )
            for kind, nodes in (
                ("power_off", d.power_off),
                ("power_on", d.power_on),
                ("resume", d.resume),
            ):
                for n in nodes:
                    ledger.intend(step_id, now, kind, n, d.name)

    def _intend_jobs(
        self, step_id: int, decisions: list[JobDecision], job_pool: dict[str, Any]
    ) -> dict[tuple[str, str], int]:
        """Job decisions are written when they change for that job (a job deferred to the same
        time step after step is one row, not one per step)."""
        ledger = self.ledger
        last = ledger.get_kv("job_decisions", {}) or {}
        now = self.clock.now()
        rows: dict[tuple[str, str], int] = {}
        new: dict[str, str] = {}
        for d in decisions:
            if d.kind == "keep":
                continue
            sig = f"{d.kind}:{d.detail.get('until') or d.detail.get('pool') or ''}"
            new[d.job_id] = (new.get(d.job_id, "") + "|" + sig).strip("|")
        for d in decisions:
            # a defer repeated unchanged is not written again; a release (and its steer) is
            # re-issued every step while the job still waits (idempotent; the scheduler may
            # not have had room to start it)
            if d.kind == "keep" or (d.kind == "defer" and last.get(d.job_id) == new.get(d.job_id)):
                continue
            rows[(d.job_id, d.kind)] = ledger.intend(
                step_id, now, f"job.{d.kind}", d.job_id, job_pool.get(d.job_id), d.detail
            )
        ledger.set_kv("job_decisions", new)
        return rows

    def _act_jobs(self, step_id, decisions, job_rows, job_pool, guard: ActionGuard) -> None:
        act = self.mode is Mode.ENFORCE and self.job_actuator is not None
        self._failsafe = []
        for d in decisions:
            aid = job_rows.get((d.job_id, d.kind))
            if aid is None:
                continue
            pool = job_pool.get(d.job_id)
            if not act or (pool is not None and not self.lever(pool).jobs):
                why = (
                    "no job actuator configured"
                    if self.job_actuator is None
                    else (
                        "shadow mode" if self.mode is Mode.SHADOW else "jobs lever off for the pool"
                    )
                )
                self.ledger.finish(aid, self.clock.now(), "shadow", f"would {d.kind} ({why})")
                continue
            ja = self.job_actuator
            assert ja is not None
            fn = _job_call(ja, d)
            try:
                guard.call(f"job.{d.kind}", pool, [d.job_id], fn)
                if d.detail.get("failsafe"):
                    backend = getattr(ja, "backend_of", lambda _j: "unknown")(d.job_id)
                    site = str(d.detail.get("site") or "")
                    self._failsafe.append((d.job_id, site, str(pool or ""), backend))
            except SkippedAction:
                pass
            except Exception:  # recorded by the guard; the other jobs continue
                pass

    # ------------------------------------------------------------------ metrics
    def _metrics(
        self,
        obs: Observation,
        doc: dict[str, Any],
        res: planmod.PlanResult | None,
        actions: list[dict],
    ) -> dict[str, Any]:
        m: dict[str, Any] = {"nodes": obs.counts}
        caps = {}
        for p in doc.get("pools", []):
            if p.get("slots") and p["slots"][0].get("power_cap_w") is not None:
                caps[p["name"]] = float(p["slots"][0]["power_cap_w"])
        m["power_cap_w"] = caps
        sites = doc.get("sites") or []
        m["carbon_intensity_g_per_kwh"] = {
            s["name"]: s["slots"][0]["intensity_g_per_kwh"] for s in sites if s.get("slots")
        }
        m["planned_power_kw"] = {
            s["name"]: s["slots"][0]["meter_power_kw"] for s in sites if s.get("slots")
        }
        m["measured_power_kw"] = dict.fromkeys(m["planned_power_kw"])
        dec = self._decisions
        m["jobs"] = {
            "held": sum(1 for d in dec if d.kind == "defer"),
            "released": sum(1 for d in dec if d.kind == "release"),
            "shifted": sum(1 for d in dec if d.kind == "steer"),
            "running": len(obs.queue.running),
        }
        m["jobs_failsafe_released"], counted = failsafe_counts(
            self._failsafe, self.ledger.get_kv("failsafe_released", []) or []
        )
        self.ledger.set_kv("failsafe_released", counted)
        m["degraded_pools"] = list(self._degraded_pools)
        m["actions_by_status"] = {}
        for a in actions:
            m["actions_by_status"][a["status"]] = m["actions_by_status"].get(a["status"], 0) + 1
        if self._moves is not None:
            # against the newest plan: the chosen candidate's stability cost, jobs moved
            m["stability"] = {k: v for k, v in self._moves.items() if k != "moved_ids"}
        if res is not None:
            self._baseline_saving(res, m, self._step_id, res.inputs.start)
            m["solve_s"] = float(res.outcome.solve_s)
            m["model_reused"] = bool(res.outcome.warm)
            ws = (res.document.get("solver") or {}).get("warm_start") or {}
            m["warm_start_feasible"] = ws.get("feasible")
        return m

    # ------------------------------------------------------------------ restore on exit
    def restore(self) -> StepResult:
        """Default caps, release held jobs, wake all nodes (GEOPM's restore-on-exit): the safe
        plan through the same reconcile and act phases (in shadow mode: recorded only)."""
        ledger = self.ledger
        started = self.clock.now()
        start = self.slot_start()
        phase_s = dict.fromkeys(PHASES, 0.0)
        errors: list[dict] = []
        step_id = ledger.begin_step(started, start, self.mode.value)
        obs = self.observe(errors)
        doc = safe_plan(self._cfg, start, obs.failed)
        doc["origin"] = "restore"
        actions: list[dict] = []
        held = [j for j in obs.queue.pending]
        obs.queue = QueueState(pending=held, running=obs.queue.running, source=obs.queue.source)
        ledger.set_kv("job_decisions", {})  # every held job gets its release row
        st = self._reconcile_and_act(step_id, doc, start, obs, phase_s, errors, actions)
        metrics = self._metrics(obs, doc, None, actions)
        ledger.record_plan(step_id, doc)
        finished = self.clock.now()
        status = StepStatus.OK if st is StepStatus.OK else StepStatus.DEGRADED
        ledger.finish_step(
            step_id,
            finished,
            status=status.value,
            plan_origin="restore",
            phase_s=phase_s,
            errors=errors,
            metrics=metrics,
            epoch=self._epoch,
        )
        return StepResult(
            step_id,
            started,
            finished,
            start,
            status,
            self.mode,
            None,
            None,
            phase_s,
            {},
            actions,
            errors,
            doc,
            metrics,
            "restore",
        )
