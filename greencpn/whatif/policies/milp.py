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
``levers`` (``all``, ``none`` or a ``+``-joined subset of the four levers):

* ``time`` — temporal shifting: jobs may wait for greener hours. Off: the controller is told
  each job's *planning* deadline is its earliest finish at full power plus one slot
  (``min(deadline, ceil_slot(release) + ceil_slot(run time) + 1 slot)``), so the plan has no room to wait
  (the job's real deadline still counts in the metrics). A side effect: with little slack, caps
  that slow a job are less useful too.
* ``space`` — spatial shifting: jobs may run at any site their residency allows. Off: each job
  may only run at its home site (a per-site jurisdiction tag is added to the sites of the
  controller's world config and the job's allowed jurisdictions become its home site's tag).
* ``power`` — node shutdown (the controller's ``power`` lever).
* ``caps`` — GPU power caps (the controller's ``caps`` lever).

The controller's ``jobs`` lever stays on in every case (it releases the jobs); time and space
are restricted through the jobs it is shown. ``jobs`` is accepted as ``time+space``.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from greencpn.config import FleetConfig, JobConfig
from greencpn.errors import ConfigError
from greencpn.whatif.model import Decision, FleetSpec, SimJob, View
from greencpn.whatif.policies.base import home_pools

LEVERS = ("time", "space", "power", "caps")
SITE_TAG = "greencpn-whatif-site:"  # per-site jurisdiction tag used when space is off


def parse_levers(levers: str) -> set[str]:
    """``all`` / ``none`` / ``a+b+...`` (of :data:`LEVERS`; ``jobs`` = ``time+space``).

    Raises:
        ConfigError: an unknown lever name.
    """
    text = str(levers).strip()
    if text == "all":
        return set(LEVERS)
    if text == "none":
        return set()
    out: set[str] = set()
    for part in filter(None, text.split("+")):
        if part == "jobs":
            out |= {"time", "space"}
        elif part in LEVERS:
            out.add(part)
        else:
            raise ConfigError(
                f"milp: unknown lever {part!r} in levers={levers!r}",
                field="--policies",
                fix="use levers=all, levers=none or a '+'-joined subset of " + ", ".join(LEVERS),
            )
    return out


def _ceil_to(ts: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    k = -((epoch - ts) // step)  # ceil((ts - epoch) / step)
    return epoch + k * step


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Milp:
    name = "milp"

    def __init__(
        self, time_limit_s: float = 0.0, levers: str = "all", baselines: bool = False
    ) -> None:
        self.time_limit_s = float(time_limit_s)
        self.baselines = bool(baselines)
        self.lever_set = parse_levers(levers)
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
            """The controller with the replay's forecast instead of its source chain (and,
            with ``space`` off, one jurisdiction tag per site so jobs can be held home)."""

            def world_config(self, obs: Any, start: datetime) -> FleetConfig:
                cfg = super().world_config(obs, start)
                if "space" in policy.lever_set:
                    return cfg
                sites = [
                    s.model_copy(update={"jurisdictions": [*s.jurisdictions, SITE_TAG + s.name]})
                    for s in cfg.sites
                ]
                return cfg.with_sections(sites=sites)

            def forecast(self, start: datetime, errors: list[dict], strict: bool) -> Any:
                T = self.config.horizon.slots
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
        lv = Levers(caps="caps" in self.lever_set, power="power" in self.lever_set, jobs=True)
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
        # the report baselines decide nothing (the greedy is still built when it competes as
        # a candidate); a replay measures its own baselines as separate policies; with them on,
        # every step prices them (baselines_every = 1, whatever the config says)
        ctl.override_controller(baselines="all" if self.baselines else "none", baselines_every=1)
        return ctl

    # ------------------------------------------------------------------ the controller's queue
    def _job(self, j: SimJob) -> JobConfig:
        jc = self._cfg_jobs.get(j.id)
        if jc is None:
            deadline = j.deadline
            if "time" not in self.lever_set:  # no room to wait: earliest finish + one slot
                assert self.view is not None
                step = self.view.step
                slots = math.ceil(timedelta(hours=j.duration_h) / step - 1e-9)
                deadline = min(deadline, _ceil_to(j.release, step) + (slots + 1) * step)
            juris = list(j.jurisdictions)
            if "space" not in self.lever_set:
                juris = [SITE_TAG + j.home_site]
            jc = self._cfg_jobs[j.id] = JobConfig(
                id=j.id,
                gpus=j.gpus,
                work_gpu_h=j.work_gpu_h,
                release=j.release,
                deadline=deadline,
                jurisdictions=juris,
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
                "phase_s": dict(result.phase_s),
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
