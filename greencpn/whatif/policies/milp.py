"""milp: greencpn's own control step (:class:`greencpn.controller.Controller`, the daemon's
code path) run at every slot of the replay — receding horizon, re-planned every slot.

The controller runs in ``enforce`` mode on the simulated fleet's real actuator interfaces
(``FakeNodeHook`` per pool, fake GPU backends): it observes node power through the hooks, powers
nodes on and off and sets GPU caps itself; its job actuator is this policy, which records
``release`` / ``steer`` / ``defer``; released jobs start (on the steered pool when it has room)
through the replay's fleet. Its forecast phase is replaced by the replay's forecast issued now
(``perfect=1``: actual intensities — the perfect-foresight oracle). Its queue is the replay's
queue (waiting and running jobs). The step ledger lives in a temporary directory.

Needs a fleet built from a config file (``FleetSpec.from_config``) whose pools have a
``hostlist`` (the controller only powers nodes it can name).

Parameters: ``time_limit_s`` (solver time limit per step, default the config's) and
``levers`` (``all`` or any of ``caps+power+jobs`` — the controller's per-pool opt-in).
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from greencpn.config import JobConfig
from greencpn.errors import ConfigError
from greencpn.whatif.model import Decision, FleetSpec, SimJob, View
from greencpn.whatif.policies.base import home_pools


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Milp:
    name = "milp"

    def __init__(self, time_limit_s: float = 0.0, levers: str = "all") -> None:
        self.time_limit_s = float(time_limit_s)
        wanted = {"caps", "power", "jobs"} if levers == "all" else set(str(levers).split("+"))
        if not wanted <= {"caps", "power", "jobs"} or not wanted:
            raise ConfigError(
                f"milp: unknown levers {levers!r}",
                field="--policies",
                fix="use levers=all or a '+'-joined subset of caps, power, jobs",
            )
        self.lever_set = wanted
        self.ctl: Any = None
        self.fleet: FleetSpec | None = None
        self.view: View | None = None
        self.released: dict[str, str | None] = {}  # job id -> steered pool
        self.deferred: dict[str, datetime] = {}
        self.steps: list[Any] = []
        self._state: Path | None = None
        self._cfg_jobs: dict[str, JobConfig] = {}
        self._steer_to: dict[str, str | None] = {}

    # ------------------------------------------------------------------ lifecycle
    def reset(self, fleet: FleetSpec) -> None:
        if fleet.config_path is None:
            raise ConfigError(
                "the milp policy needs a fleet built from a config file",
                field="--policies",
                fix="run it through `greencpn whatif --config ...` (FleetSpec.from_config)",
            )
        missing = [p.name for p in fleet.pools if not p.hostnames]
        if missing:
            raise ConfigError(
                f"pools {missing} have no hostlist: the controller cannot power their nodes",
                source=str(fleet.config_path),
                field="pools.hostlist",
                fix="give every pool a hostlist, e.g. hostlist = 'gpu[001-040]'",
            )
        self.fleet = fleet
        self.ctl = None
        self.released, self.deferred, self.steps, self._steer_to = {}, {}, [], {}

    def close(self) -> None:
        if self.ctl is not None:
            self.ctl.close()
        if self._state is not None:
            shutil.rmtree(self._state, ignore_errors=True)

    def _controller(self, view: View) -> Any:
        from greencpn.actuate.safety import ControlSettings
        from greencpn.controller import Controller, Levers, Mode
        from greencpn.controller import forecast as fcmod

        policy = self

        class ReplayController(Controller):
            """The controller with the replay's forecast instead of its source chain."""

            def forecast(self, start: datetime, errors: list[dict], strict: bool) -> Any:
                T = self.config.raw.horizon.slots
                v = policy.view
                assert v is not None
                zones = sorted({s.zone for s in self.config.sites})
                fc = fcmod.Forecast(start, {z: v.forecast(z, T) for z in zones})
                self._last_forecast = fc
                sources = {
                    s.name: {
                        "source": "whatif-replay",
                        "issued_at": _iso(start),
                        "freshness": "fresh",
                    }
                    for s in self.config.sites
                }
                return fc, sources

        assert self.fleet is not None and self.fleet.config_path is not None
        self._state = Path(tempfile.mkdtemp(prefix="greencpn-whatif-"))
        lv = Levers(
            caps="caps" in self.lever_set,
            power="power" in self.lever_set,
            jobs="jobs" in self.lever_set,
        )
        settings = ControlSettings(
            max_power_ops_per_min=1e9,
            power_ops_burst=10**9,
            drain_timeout_s=0.0,
        )
        clock = view.clock
        ctl = ReplayController(
            self.fleet.config_path,
            clock=clock,
            state_dir=self._state,
            mode=Mode.ENFORCE,
            levers={p.name: lv for p in self.fleet.pools},
            backends=view.backends,
            queue=self,
            job_actuator=self,
            settings=settings,
            sleep=lambda s: clock.advance(timedelta(seconds=s)),
        )
        if self.time_limit_s > 0:
            ctl.override_solver(time_limit_s=self.time_limit_s)
        return ctl

    # ------------------------------------------------------------------ the controller's queue
    def _job(self, j: SimJob) -> JobConfig:
        jc = self._cfg_jobs.get(j.id)
        if jc is None:
            jc = self._cfg_jobs[j.id] = JobConfig(
                id=j.id,
                gpus=j.gpus,
                work_gpu_h=j.work_gpu_h,
                release=j.release,
                deadline=j.deadline,
                jurisdictions=list(j.jurisdictions),
                checkpointable=j.checkpointable,
            )
        return jc

    def observe(self, now: datetime) -> Any:
        from greencpn.controller import QueueState, RunningJob

        v = self.view
        assert v is not None
        pending = [self._job(j) for j in v.waiting]
        running = [
            RunningJob(
                self._job(j),
                j.pool or "",
                j.start or now,
                j.remaining_gpu_h,
                tuple(n for n, _ in j.nodes),
            )
            for j in v.running
        ]
        return QueueState(pending=pending, running=running, source="whatif")

    # ------------------------------------------------------------------ its job actuator
    def defer(self, job_id: str, until: datetime) -> object:
        self.deferred[job_id] = until
        return None

    def steer(self, job_id: str, site: str, pool: str | None) -> object:
        self._steer_to[job_id] = pool  # where it goes once released
        return None

    def release(self, job_id: str) -> object:
        self.released[job_id] = self._steer_to.get(job_id)
        self.deferred.pop(job_id, None)
        return None

    # ------------------------------------------------------------------ one slot
    def decide(self, view: View) -> Decision:
        self.view = view
        if self.ctl is None:
            self.ctl = self._controller(view)
        result = self.ctl.step()
        self.steps.append(
            {
                "slot": _iso(result.slot_start),
                "status": str(result.status),
                "solver": result.solver_status,
                "origin": result.plan_origin,
                "errors": len(result.errors),
                "actions": [
                    (a.get("kind"), a.get("target"), a.get("status")) for a in result.actions
                ],
            }
        )
        # Released jobs start where they were steered (else the first allowed pool of their
        # home site); the fleet refuses a start without room, and the job stays released.
        # The fleet is asked after the step: the controller may have just woken nodes.
        d = Decision()
        waiting = {j.id: j for j in view.waiting}
        for jid in list(self.released):
            job = waiting.get(jid)
            if job is None:
                self.released.pop(jid)
                continue
            pool = self.released[jid]
            if pool is None or view.pools[pool].site not in job.sites:
                cands = home_pools(view, job) or [
                    p.name for p in view.pools.values() if p.site in job.sites
                ]
                pool = cands[0] if cands else None
            if pool is not None:
                d.starts.append((jid, pool))
        return d


POLICY = Milp
