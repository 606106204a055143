"""A small controller with the shape of greencpn.controller.Controller (CONTROLLER_API.md).

It plans nothing: each step makes one ``set_cap`` action per pool (if the pool's caps lever is
on) for the slot the clock is in, calls ``fence()`` before each action exactly like the real
controller, and records what it applied. Applied actions also go, one JSON line each, to
``actions_log`` when given (the subprocess tests read it across processes); ``action_delay_s``
is slept before each action's fence call (the previous hardware call taking that long) so a
test can signal a process mid-step; ``slot_s`` overrides the config's slot length.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from greencpn.clock import Clock
from greencpn.config import FleetConfig, load_config
from greencpn.controller.types import Levers, Mode, NotLeaderError, StepResult, StepStatus


class FakeController:
    def __init__(
        self,
        config_path: Path,
        *,
        clock: Clock,
        state_dir: Path,
        mode: Mode = Mode.SHADOW,
        levers: dict[str, Levers] | None = None,
        backends: Any = None,
        fence: Any = None,
        actions_log: Path | None = None,
        action_delay_s: float = 0.0,
        saved_kg_per_step: float = 1.5,
        crash_on_step: int | None = None,
        slot_s: float | None = None,
        step_takes: timedelta | None = None,
    ) -> None:
        self._path = Path(config_path)
        self._config = load_config(self._path)  # ConfigError on a bad config, as the real one
        self.clock = clock
        self.state_dir = Path(state_dir)
        self.mode = Mode(mode)
        self.levers = levers
        self.fence = fence
        self.actions_log = actions_log
        self.action_delay_s = action_delay_s
        self.saved_kg_per_step = saved_kg_per_step
        self.crash_on_step = crash_on_step
        self.slot_s = slot_s
        self.step_takes = step_takes  # a SimClock is advanced this much by each step
        self.applied: list[dict[str, Any]] = []
        self.steps: list[StepResult] = []
        self.reloads = 0
        self.restores = 0

    @property
    def config(self) -> FleetConfig:
        return self._config

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "steps.sqlite"

    def reload(self) -> None:
        self._config = load_config(self._path)  # raises ConfigError and keeps the old one
        self.reloads += 1

    def _slot_start(self, now: datetime) -> datetime:
        slot_s = self.slot_s or self._config.raw.horizon.slot_minutes * 60
        ts = now.timestamp() // slot_s * slot_s
        return datetime.fromtimestamp(ts, UTC)

    def _act(self, actions: list[dict[str, Any]], step_id: int) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        stopped: str | None = None
        for a in actions:
            if self.mode is Mode.SHADOW:
                a["status"] = "shadow"
                continue
            lv = (self.levers or {}).get(a["pool"], Levers())
            if not getattr(lv, a["lever"]):
                a["status"] = "shadow"
                continue
            if stopped is not None:
                a["status"] = "skipped"
                continue
            if self.action_delay_s:  # the time the previous hardware call took
                time.sleep(self.action_delay_s)
            try:
                epoch = self.fence() if self.fence is not None else None
            except NotLeaderError as exc:
                stopped = str(exc)
                a["status"] = "skipped"
                errors.append({"type": "not_leader", "where": "act", "message": str(exc)})
                continue
            a["status"] = "done"
            a["epoch"] = epoch
            rec = {"step_id": step_id, "pid": os.getpid(), **a}
            self.applied.append(rec)
            if self.actions_log is not None:
                with open(self.actions_log, "a") as fh:
                    fh.write(json.dumps(rec, default=str) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
        return errors

    def step(self) -> StepResult:
        started = self.clock.now()
        step_id = len(self.steps) + 1
        if self.crash_on_step == step_id:
            self.steps.append(None)  # type: ignore[arg-type]
            raise RuntimeError("injected controller crash")
        slot = self._slot_start(started)
        actions = [
            {
                "kind": "set_cap",
                "lever": "caps",
                "pool": p.name,
                "target": p.name,
                "detail": {"slot": slot.isoformat(), "power_cap_w": 250.0},
                "status": "intended",
                "epoch": None,
            }
            for p in self._config.pools
        ]
        t0 = time.perf_counter()
        errors = self._act(actions, step_id)
        if self.step_takes is not None:
            self.clock.advance(self.step_takes)  # type: ignore[attr-defined]
        act_s = time.perf_counter() - t0
        sites = [s.name for s in self._config.sites]
        result = StepResult(
            step_id=step_id,
            started_at=started,
            finished_at=self.clock.now(),
            slot_start=slot,
            status=StepStatus.DEGRADED if errors else StepStatus.OK,
            mode=self.mode,
            solver_status="optimal",
            mip_gap=0.004,
            phase_s={"observe": 0.01, "forecast": 0.02, "optimize": 0.5, "act": act_s},
            sources={s: {"source": "csv", "issued_at": None, "freshness": "fresh"} for s in sites},
            actions=actions,
            errors=errors,
            plan={"summary": {"slot": slot.isoformat(), "pools": len(actions)}},
            metrics={
                "carbon_intensity_g_per_kwh": {s: 100.0 + 10 * i for i, s in enumerate(sites)},
                "planned_power_kw": {s: 50.0 for s in sites},
                "measured_power_kw": {s: None for s in sites},
                "nodes": {
                    p.name: {
                        "on": 3,
                        "off": 1,
                        "booting": 0,
                        "draining": 0,
                        "failed": 0,
                        "unknown": 0,
                    }
                    for p in self._config.pools
                },
                "power_cap_w": {p.name: 250.0 for p in self._config.pools},
                "jobs": {"held": 2, "released": 1, "shifted": 3},
                "saved_kg_co2e": self.saved_kg_per_step,
                "saved_kwh": 2.0,
            },
        )
        self.steps.append(result)
        return result

    def restore(self) -> StepResult:
        self.restores += 1
        now = self.clock.now()
        actions = [
            {
                "kind": "restore_cap",
                "lever": "caps",
                "pool": p.name,
                "target": p.name,
                "detail": {},
                "status": "intended",
                "epoch": None,
            }
            for p in self._config.pools
        ]
        errors = self._act(actions, 0)
        return StepResult(
            step_id=0,
            started_at=now,
            finished_at=self.clock.now(),
            slot_start=self._slot_start(now),
            status=StepStatus.DEGRADED if errors else StepStatus.OK,
            mode=self.mode,
            solver_status=None,
            mip_gap=None,
            phase_s={"act": 0.0},
            sources={},
            actions=actions,
            errors=errors,
            plan=None,
            metrics={},
        )


def write_fleet(
    dir_: Path, *, slot_minutes: int = 60, pools: tuple[str, ...] = ("p1", "p2")
) -> Path:
    """A two-pool fleet config the real loader accepts (for the fake controller)."""
    dir_.mkdir(parents=True, exist_ok=True)
    (dir_ / "carbon.csv").write_text(
        "datetime,zone,carbon_intensity\n"
        + "".join(
            f"{(datetime(2026, 3, 2, tzinfo=UTC) + timedelta(hours=h)).strftime('%Y-%m-%dT%H:%M:%SZ')},DE,{300 + h}\n"
            for h in range(48)
        )
    )
    pool_text = "".join(
        f"""
[[pools]]
name = "{name}"
site = "s1"
nodes = 4
gpu_model = "A100-SXM4-40GB"
gpus_per_node = 8
node_idle_w = 900
"""
        for name in pools
    )
    cfg = dir_ / "fleet.toml"
    cfg.write_text(
        f"""name = "t"
[horizon]
start = "2026-03-02T00:00:00Z"
slots = 24
slot_minutes = {slot_minutes}
[carbon]
file = "carbon.csv"
[[sites]]
name = "s1"
zone = "DE"
pue = 1.2
{pool_text}
[[jobs]]
id = "j1"
gpus = 8
work_gpu_h = 8
release = "2026-03-02T00:00:00Z"
deadline = "2026-03-02T12:00:00Z"
"""
    )
    return cfg
