"""Tiny fleets, a simulated world (jobs arriving from a trace, a scheduler that starts the jobs
the controller releases on the fake nodes) and helpers for the controller tests."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from greencpn.clock import SimClock
from greencpn.config import JobConfig, load_config
from greencpn.controller import Controller, Mode, QueueState, RunningJob
from greencpn.controller.fakes import FakeFleet
from tests.common import START


def iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


GPU = """
[[gpu_models]]
name = "T1"
power_limit_min_w = 100
power_limit_max_w = 300
power_limit_default_w = 300
idle_w = 30
source = "test profile"
[[gpu_models.levels]]
cap_w = 300
throughput = 1.0
power_factor = 1.0
[[gpu_models.levels]]
cap_w = 200
throughput = 0.9
power_factor = 0.66  # <= cap_w / power_limit_max_w (a capped GPU cannot draw more than its cap)
"""


def carbon_rows(days: int, zones: dict[str, tuple[float, float]]) -> str:
    """Hourly intensities: a daily sine per zone (mean, amplitude), from START."""
    lines = ["datetime_utc," + ",".join(zones)]
    for h in range(days * 24):
        vals = [m + a * math.sin(2 * math.pi * (h % 24) / 24) for m, a in zones.values()]
        lines.append(iso(START + timedelta(hours=h)) + "," + ",".join(f"{v:.1f}" for v in vals))
    return "\n".join(lines) + "\n"


def write_tiny(
    tmp: Path,
    *,
    days: int = 4,
    slots: int = 12,
    nodes: int = 4,
    jobs: list[dict] | None = None,
    controller: str = "",
    min_up_h: float = 0.0,
    min_down_h: float = 0.0,
    time_limit_s: float = 20,
    spares: int = 0,
) -> Path:
    """Two sites (clean s2, dirty s1), one pool each of ``nodes`` nodes × 2 GPUs."""
    (tmp / "carbon.csv").write_text(carbon_rows(days, {"Z1": (400, 100), "Z2": (150, 120)}))
    cols = ["id", "gpus", "work_gpu_h", "release", "deadline", "checkpointable"]
    rows = [",".join(cols)]
    for j in jobs or []:
        rows.append(",".join(str(j.get(c, "")) for c in cols))
    (tmp / "jobs.csv").write_text("\n".join(rows) + "\n")
    pools = ""
    for name, site, host in (("p1", "s1", "a"), ("p2", "s2", "b")):
        pools += f"""
[[pools]]
name = "{name}"
site = "{site}"
nodes = {nodes}
gpu_model = "T1"
gpus_per_node = 2
node_idle_w = 200
node_off_w = 10
node_boot_w = 300
boot_time_min = 5
min_up_h = {min_up_h}
min_down_h = {min_down_h}
spares = {spares}
hostlist = "{host}[1-{nodes}]"
"""
    text = f"""
name = "tiny"
jobs_file = "jobs.csv"
[horizon]
slots = {slots}
slot_minutes = 60
[objective]
carbon_weight_per_kg = 1.0
cost_weight = 0.0
lateness_weight_per_gpu_h = 10.0
[solver]
time_limit_s = {time_limit_s}
mip_rel_gap = 0.0
[carbon]
file = "carbon.csv"
[controller]
{controller}
{GPU}
[[sites]]
name = "s1"
zone = "Z1"
pue = 1.2
[[sites]]
name = "s2"
zone = "Z2"
pue = 1.2
{pools}
"""
    path = tmp / "fleet.toml"
    path.write_text(text)
    # control settings: no rate limit worth speaking of, short drain wait
    (tmp / "control.toml").write_text(
        "[control]\nmax_power_ops_per_min = 1000\npower_ops_burst = 1000\n"
        "drain_timeout_s = 30\npoll_interval_s = 5\n"
    )
    return path


@dataclass
class SimJob:
    job: JobConfig
    state: str = "pending"  # pending | running | done
    pool: str | None = None
    nodes: list[str] = field(default_factory=list)
    started_at: datetime | None = None
    ends_at: datetime | None = None
    steered: str | None = None
    gpus_on: dict[str, int] = field(default_factory=dict)


class SimWorld:
    """Queue + scheduler + job actuator over a FakeFleet: jobs become visible at their release;
    a released job starts at once on free GPUs of the pool it was steered to (else any pool
    with room at an allowed site), runs work/gpus hours, then ends."""

    def __init__(self, cfg, fleet: FakeFleet, clock: SimClock, trace: list[JobConfig]):
        self.cfg = cfg
        self.fleet = fleet
        self.clock = clock
        self.jobs = {j.id: SimJob(j) for j in trace}
        self.pools = {p.name: p for p in cfg.pools}
        self.used: dict[str, int] = {}  # node -> GPUs in use
        self.violations: list[str] = []
        self.calls: list[tuple[str, str]] = []
        self.waiting: list[str] = []  # released, waiting for GPUs

    # ---------------------------------------------------------------- queue
    def _advance(self, now: datetime) -> None:
        """Replay job ends up to ``now``; each end lets released jobs that had no room start
        at that moment (a released job waits in the scheduler's queue, as in Slurm)."""
        while True:
            ending = [
                sj
                for sj in self.jobs.values()
                if sj.state == "running" and sj.ends_at is not None and sj.ends_at <= now
            ]
            if not ending:
                break
            first = min(ending, key=lambda sj: sj.ends_at)
            first.state = "done"
            for n, g in first.gpus_on.items():
                self.used[n] -= g
            for wid in list(self.waiting):
                if self._try_start(self.jobs[wid], first.ends_at):
                    self.waiting.remove(wid)
        for hook in self.fleet.hooks.values():
            for n in hook.nodes:
                hook.set(n, running_jobs=1 if self.used.get(n, 0) > 0 else 0, jobs_end_at=None)

    def observe(self, now: datetime) -> QueueState:
        self._advance(now)
        pending = [
            sj.job for sj in self.jobs.values() if sj.state == "pending" and sj.job.release <= now
        ]
        running = []
        for sj in self.jobs.values():
            if sj.state == "running":
                left_h = max(0.0, (sj.ends_at - now).total_seconds() / 3600.0)
                running.append(
                    RunningJob(
                        sj.job, sj.pool, sj.started_at, left_h * sj.job.gpus, tuple(sj.nodes)
                    )
                )
        return QueueState(pending=pending, running=running, source="sim")

    # ---------------------------------------------------------------- job actuator
    def _check(self, job_id: str, op: str) -> SimJob:
        sj = self.jobs[job_id]
        self.calls.append((op, job_id))
        if sj.state != "pending":
            self.violations.append(f"{op} on {sj.state} job {job_id}")
        return sj

    def defer(self, job_id: str, until: datetime) -> object:
        self._check(job_id, "defer")
        return None

    def steer(self, job_id: str, site: str, pool: str | None) -> object:
        self._check(job_id, "steer").steered = pool
        return None

    def release(self, job_id: str) -> object:
        sj = self._check(job_id, "release")
        if sj.state != "pending" or job_id in self.waiting:
            return None
        if not self._try_start(sj, self.clock.now()):
            self.waiting.append(job_id)  # no room now: it starts when GPUs free up
        return None

    def _try_start(self, sj: SimJob, at: datetime) -> bool:
        order = [sj.steered] if sj.steered else []
        order += [p for p in self.pools if p not in order]
        for pname in order:
            p = self.pools[pname]
            hook = self.fleet.hooks[pname]
            st = {x.name: x for x in hook.status(list(hook.nodes))}
            free = {
                n: p.gpus_per_node - self.used.get(n, 0)
                for n in hook.nodes
                if st[n].power.value == "on" and not st[n].drained
            }
            if sum(free.values()) < sj.job.gpus:
                continue
            need, nodes = sj.job.gpus, []
            for n, f in sorted(free.items(), key=lambda kv: -kv[1]):
                if need <= 0:
                    break
                if f > 0:
                    take = min(f, need)
                    self.used[n] = self.used.get(n, 0) + take
                    sj.gpus_on[n] = take
                    nodes.append(n)
                    need -= take
                    hook.set(n, running_jobs=1)
            sj.state, sj.pool, sj.nodes, sj.started_at = "running", pname, nodes, at
            sj.ends_at = at + timedelta(hours=sj.job.work_gpu_h / sj.job.gpus)
            return True
        return False

    # ---------------------------------------------------------------- checks
    def missed_deadlines(self) -> list[str]:
        out = []
        for sj in self.jobs.values():
            end = sj.ends_at if sj.state in ("running", "done") else None
            if end is None or end > sj.job.deadline + timedelta(minutes=1):
                out.append(f"{sj.job.id}: state {sj.state}, ends {end}, deadline {sj.job.deadline}")
        return out


def trace_jobs(n: int, hours: int, seed: int = 1, gpus=(1, 2, 4)) -> list[JobConfig]:
    """Jobs arriving over ``hours``: 1–6 h of work, slack 6–20 h, some checkpointable."""
    import random

    rnd = random.Random(seed)
    out = []
    for i in range(n):
        rel = START + timedelta(hours=rnd.uniform(0, hours))
        g = rnd.choice(gpus)
        run_h = rnd.uniform(1, 6)
        out.append(
            JobConfig(
                id=f"t{i:03d}",
                gpus=g,
                work_gpu_h=round(g * run_h, 2),
                release=rel,
                deadline=rel + timedelta(hours=run_h + rnd.uniform(6, 20)),
                checkpointable=rnd.random() < 0.3,
            )
        )
    return out


def make_controller(path: Path, clock: SimClock, state: Path, fleet: FakeFleet, **kw) -> Controller:
    return Controller(
        path,
        clock=clock,
        state_dir=state,
        backends=fleet.backends if fleet is not None else None,
        sleep=lambda s: clock.advance(timedelta(seconds=s)),
        **kw,
    )


__all__ = ["Mode", "load_config"]
