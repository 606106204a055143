"""``greencpn run`` whose controller follows a plan FILE instead of solving one (subprocess
tests of leadership with real schedulers).

    python run_plan_daemon.py CONFIG STATE_DIR PLAN ACTIONS_LOG [--delay S] [--name N]

Everything but the optimisation is the real daemon: control.toml settings, the APScheduler
trigger, the etcd elector and its fence, signals, the exit path — and the real job side the
daemon hands its controller from ``[job_actuation]`` (``SchedulerQueue`` reading the real
scheduler, ``ControllerJobBridge`` changing it, the apply ledger). Each step: observe the
queue, :func:`greencpn.controller.jobs.decide_jobs` against the plan file (re-read every step),
then per decision — after ``--delay`` s (the previous call taking that long) — ``fence()`` and
the bridge call, exactly the order of the real controller's ActionGuard. Each decision is one
JSON line in ACTIONS_LOG (pid, epoch, status, wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from greencpn.actuate.ledger import Ledger
from greencpn.clock import Clock, SystemClock
from greencpn.config import FleetConfig, load_config
from greencpn.controller.jobs import decide_jobs
from greencpn.controller.types import Mode, NotLeaderError, StepResult, StepStatus
from greencpn.daemon.core import Daemon
from greencpn.daemon.logs import configure


class PlanFileController:
    def __init__(
        self,
        config_path: Path,
        *,
        clock: Clock,
        state_dir: Path,
        plan: Path,
        log: Path,
        delay_s: float,
        mode: Mode = Mode.SHADOW,
        fence: Any = None,
        queue: Any = None,
        job_actuator: Any = None,
        **_ignored: Any,
    ) -> None:
        self.path, self.plan, self.log, self.delay_s = Path(config_path), plan, log, delay_s
        self.config: FleetConfig = load_config(self.path)
        self.clock, self.state_dir, self.mode, self.fence = clock, Path(state_dir), mode, fence
        self.queue, self.bridge = queue, job_actuator
        assert self.queue is not None and self.bridge is not None, "no [job_actuation]"
        Ledger.open(self.state_dir).close()  # the apply ledger the queue reads
        self.n = 0

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "steps.sqlite"

    def reload(self) -> None:
        self.config = load_config(self.path)

    def _write(self, row: dict[str, Any]) -> None:
        with open(self.log, "a") as fh:
            fh.write(json.dumps(row, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def step(self) -> StepResult:
        self.n += 1
        now = self.clock.now()
        obs = self.queue.observe(now)
        doc = json.loads(self.plan.read_text())
        running = {r.job.id for r in obs.running}
        decisions = [
            d
            for d in decide_jobs(doc, obs.pending, running, now, now + timedelta(seconds=5))
            if d.kind != "keep"
        ]
        errors: list[dict[str, Any]] = []
        actions: list[dict[str, Any]] = []
        deposed = None
        for d in decisions:
            row = {"pid": os.getpid(), "step": self.n, "kind": d.kind, "job": d.job_id}
            if self.mode is not Mode.ENFORCE or deposed is not None:
                row["status"] = "shadow" if deposed is None else "skipped"
            else:
                time.sleep(self.delay_s)
                try:
                    row["epoch"] = self.fence() if self.fence is not None else None
                except NotLeaderError as exc:
                    deposed = str(exc)
                    errors.append({"type": "not_leader", "where": "act", "message": deposed})
                    row["status"], row["why"] = "skipped", deposed
                else:
                    if d.kind == "defer":
                        self.bridge.defer(d.job_id, _dt(d.detail["until"]))
                    elif d.kind == "steer":
                        self.bridge.steer(d.job_id, d.detail.get("site") or "", d.detail["pool"])
                    else:
                        self.bridge.release(d.job_id)
                    row["status"] = "done"
            row["at"] = time.time()
            self._write(row)
            actions.append({"kind": f"job.{d.kind}", "target": d.job_id, **row})
        end = self.clock.now()
        return StepResult(
            step_id=self.n,
            started_at=now,
            finished_at=end,
            slot_start=now,
            status=StepStatus.DEGRADED if errors else StepStatus.OK,
            mode=self.mode,
            solver_status=None,
            mip_gap=None,
            phase_s={"act": (end - now).total_seconds()},
            sources={},
            actions=actions,
            errors=errors,
            plan=doc,
            metrics={"jobs": {"held": sum(d.kind == "defer" for d in decisions)}},
        )

    def restore(self) -> StepResult:
        now = self.clock.now()
        return StepResult(
            0, now, now, now, StepStatus.OK, self.mode, None, None, {}, {}, [], [], None, {}
        )


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def main() -> int:
    ap = argparse.ArgumentParser()
    for a in ("config", "state_dir", "plan", "actions_log"):
        ap.add_argument(a)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    configure(json_logs=False)

    def factory(path: Path, **kw: Any) -> PlanFileController:
        return PlanFileController(
            path, plan=Path(args.plan), log=Path(args.actions_log), delay_s=args.delay, **kw
        )

    daemon = Daemon(
        args.config, state_dir=args.state_dir, clock=SystemClock(), controller_factory=factory
    )
    if args.name and hasattr(daemon.elector, "name"):
        daemon.elector.name = args.name
    return daemon.serve()


if __name__ == "__main__":
    sys.exit(main())
