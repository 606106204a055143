"""A simulated fleet behind greencpn's real actuator interfaces.

Node power goes through one :class:`~greencpn.actuate.fake_nodes.FakeNodeHook` per pool (the
``NodePowerHook`` the daemon drives): ``power_on`` starts a boot that the hook completes after
the pool's ``boot_time_min`` on the simulated clock; ``power_off`` turns an idle node off. GPU
power caps go through :class:`~greencpn.actuate.gpu.fake.FakeFleetGpus` (one ``GpuBackend`` per
node, with the device's NVML range, so an out-of-range cap is refused exactly as on hardware).

Time advances in slots. Within a slot:

* a job starts at the slot start, on powered-on nodes with free GPUs (first fit; a job may span
  nodes of one pool); a node that is still booting at the slot start is not used before the next
  slot start;
* a running job does ``gpus × throughput(cap) × time`` GPU-hours of work and finishes inside
  the slot when its work is done (its GPUs draw busy power only until then);
* node power: off → ``node_off_w``; booting → ``node_boot_w`` until the boot is over, then
  ``node_idle_w``; on → ``node_idle_w`` + per busy GPU ``(busy power at the cap − GPU idle_w)``;
  failed → ``node_off_w``;
* failures: each powered-on node fails with probability ``failure_rate_per_node_h × slot
  hours`` (one seeded ``numpy`` generator: the same seed gives the same failures); its jobs are
  requeued (from scratch unless checkpointable) and the node is back, off, after ``repair_h``.

Energy is IT energy × the site's PUE; the accountant multiplies it by the **actual** intensity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from greencpn.actuate.apply import Backends
from greencpn.actuate.base import NodePower
from greencpn.actuate.fake_nodes import FakeNodeHook
from greencpn.actuate.gpu.fake import FakeFleetGpus, FakeGpu, FakeGpuBackend
from greencpn.clock import SimClock
from greencpn.whatif.model import Decision, FleetSpec, PoolSpec, PoolView, SimJob


@dataclass
class _Node:
    name: str
    free_gpus: int
    idle_since: datetime
    boot_at: datetime | None = None  # boot started
    repair_at: datetime | None = None  # failed until
    jobs: set[str] = field(default_factory=set)
    last_power: NodePower = NodePower.ON  # as this fleet last saw it (to spot outside changes)
    boot_surcharge_h: float = 0.0  # a boot that happened inside a controller's step


@dataclass
class FleetStats:
    power_cycles: dict[str, int] = field(default_factory=dict)  # node -> completed wake-ups
    failures: int = 0
    refused_power_off_busy: int = 0
    refused_starts: int = 0
    refused_caps: int = 0


class SimFleet:
    """The simulated fleet (see the module docstring).

    Args:
        spec: sites and pools.
        clock: the replay's clock (shared with the node hooks).
        seed: seed of the failure generator.
        failure_rate_per_node_h: probability per powered-on node-hour of a failure.
        repair_h: how long a failed node stays failed.
        initially_on: nodes start powered on (else off).
    """

    def __init__(
        self,
        spec: FleetSpec,
        clock: SimClock,
        *,
        seed: int = 0,
        failure_rate_per_node_h: float = 0.0,
        repair_h: float = 4.0,
        initially_on: bool = True,
    ) -> None:
        self.spec = spec
        self.clock = clock
        self.rng = np.random.default_rng(seed)
        self.failure_rate_per_node_h = failure_rate_per_node_h
        self.repair_h = repair_h
        self.stats = FleetStats()
        now = clock.now()
        self.pools: dict[str, PoolSpec] = {p.name: p for p in spec.pools}
        self.hooks: dict[str, FakeNodeHook] = {}
        self.gpus: dict[str, FakeFleetGpus] = {}
        self.nodes: dict[str, dict[str, _Node]] = {}
        self.cap_w: dict[str, float] = {}
        self.site_zone = {s.name: s.zone for s in spec.sites}
        self.site_pue = {s.name: s.pue for s in spec.sites}
        for p in spec.pools:
            names = p.node_names()
            self.hooks[p.name] = FakeNodeHook(
                names,
                clock,
                power=NodePower.ON if initially_on else NodePower.OFF,
                boot_delay_s=p.boot_time_min * 60.0,
                name=f"sim-{p.name}",
            )
            g = p.gpu
            self.gpus[p.name] = FakeFleetGpus(
                gpus_per_node=p.gpus_per_node,
                template=FakeGpu(
                    name=g.name,
                    min_w=g.power_limit_min_w,
                    max_w=g.power_limit_max_w,
                    default_w=g.power_limit_default_w,
                ),
            )
            first_power = NodePower.ON if initially_on else NodePower.OFF
            self.nodes[p.name] = {
                n: _Node(n, p.gpus_per_node, now, last_power=first_power) for n in names
            }
            self.cap_w[p.name] = p.full_cap_w
            for n in names:
                self.stats.power_cycles[n] = 0

    # ------------------------------------------------------------------ state
    def power(self, pool: str, node: str) -> NodePower:
        return self.hooks[pool].nodes[node].power

    def view(self, pool: str) -> PoolView:
        p = self.pools[pool]
        hook = self.hooks[pool]
        on = booting = off = failed = free = busy = booting_gpus = 0
        idle: list[tuple[str, datetime]] = []
        offs: list[str] = []
        for n, st in self.nodes[pool].items():
            pw = hook.nodes[n].power
            if pw == NodePower.ON:
                on += 1
                free += st.free_gpus
                busy += p.gpus_per_node - st.free_gpus
                if not st.jobs:
                    idle.append((n, st.idle_since))
            elif pw == NodePower.BOOTING:
                booting += 1
                booting_gpus += p.gpus_per_node
            elif pw == NodePower.FAILED:
                failed += 1
            else:
                off += 1
                offs.append(n)
        return PoolView(
            name=pool,
            site=p.site,
            zone=self.site_zone[p.site],
            nodes=p.nodes,
            gpus_per_node=p.gpus_per_node,
            on=on,
            booting=booting,
            off=off,
            failed=failed,
            free_gpus=free,
            busy_gpus=busy,
            idle_nodes=tuple(idle),
            off_nodes=tuple(offs),
            booting_gpus=booting_gpus,
            spares=p.spares,
            cap_w=self.cap_w[pool],
            boot_time_min=p.boot_time_min,
        )

    # ------------------------------------------------------------------ slot start
    def begin_slot(self, now: datetime, step: timedelta, jobs: dict[str, SimJob]) -> list[SimJob]:
        """Finish boots and repairs, draw failures. Returns the jobs a failure requeued."""
        requeued: list[SimJob] = []
        for pool, hook in self.hooks.items():
            states = self.nodes[pool]
            booting = [n for n, st in states.items() if st.boot_at is not None]
            if booting:
                for s in hook.status(booting):
                    if s.power == NodePower.ON:
                        st = states[s.name]
                        st.boot_at = None
                        st.idle_since = now
                        st.last_power = NodePower.ON
                        self.stats.power_cycles[s.name] += 1
            for n, st in states.items():
                if st.repair_at is not None and now >= st.repair_at:
                    st.repair_at = None
                    st.last_power = NodePower.OFF
                    hook.set(n, power=NodePower.OFF)
            if self.failure_rate_per_node_h > 0:
                on = [n for n in states if hook.nodes[n].power == NodePower.ON]
                p_fail = min(1.0, self.failure_rate_per_node_h * step / timedelta(hours=1))
                draws = self.rng.random(len(on))
                for n, u in zip(on, draws, strict=True):
                    if u < p_fail:
                        requeued += self._fail(pool, n, now, jobs)
        return requeued

    def _fail(self, pool: str, node: str, now: datetime, jobs: dict[str, SimJob]) -> list[SimJob]:
        self.stats.failures += 1
        st = self.nodes[pool][node]
        out = []
        for jid in list(st.jobs):
            job = jobs[jid]
            self.release(job)
            if not job.checkpointable:
                job.remaining_gpu_h = job.work_gpu_h
            job.restarts += 1
            job.start = None
            out.append(job)
        self.hooks[pool].set(node, power=NodePower.FAILED, running_jobs=0, boot_started_at=None)
        st.boot_at = None
        st.last_power = NodePower.FAILED
        st.repair_at = now + timedelta(hours=self.repair_h)
        return out

    def release(self, job: SimJob) -> None:
        """Give a job's GPUs back (it finished or was requeued)."""
        if job.pool is None:
            return
        pool = job.pool
        when = job.finish or self.clock.now()
        for n, g in job.nodes:
            st = self.nodes[pool][n]
            st.free_gpus += g
            st.jobs.discard(job.id)
            if not st.jobs:
                st.idle_since = when
            self.hooks[pool].nodes[n].running_jobs = len(st.jobs)
        job.pool, job.nodes = None, ()

    # ------------------------------------------------------------------ outside actors
    @property
    def backends(self) -> Backends:
        """The fleet as :class:`~greencpn.actuate.apply.Backends` (what the controller acts
        through); call :meth:`sync_from_hooks` after anyone acted on them."""
        node_pool = {n: p for p, states in self.nodes.items() for n in states}

        def gpus(node: str) -> FakeGpuBackend | None:
            pool = node_pool.get(node)
            return None if pool is None else self.gpus[pool].backend(node)

        return Backends(hooks=dict(self.hooks), gpus=gpus)

    def sync_from_hooks(self, now: datetime, jobs: dict[str, SimJob]) -> list[SimJob]:
        """Take over what another actor (the controller) did through the hooks and GPU
        backends: boots it started, nodes it powered off (their jobs are requeued and counted
        as killed by the hook), and the pool's GPU cap (read from the pool's first GPU)."""
        requeued: list[SimJob] = []
        for pool, hook in self.hooks.items():
            states = self.nodes[pool]
            booting = [n for n in states if hook.nodes[n].power == NodePower.BOOTING]
            if booting:  # advance the hook: a boot may be over (short or zero boot time)
                hook.status(booting)
            p = self.pools[pool]
            for n, st in states.items():
                fn = hook.nodes[n]
                cur = fn.power
                if cur == NodePower.BOOTING:
                    if st.boot_at is None:
                        st.boot_at = fn.boot_started_at or now
                elif cur == NodePower.ON and st.last_power != NodePower.ON:
                    if st.last_power != NodePower.BOOTING:  # booted inside the step
                        st.boot_surcharge_h = p.boot_time_min / 60.0
                    st.boot_at, st.idle_since = None, now
                    self.stats.power_cycles[n] += 1
                elif cur in (NodePower.OFF, NodePower.SHUTTING_DOWN, NodePower.FAILED):
                    st.boot_at = None
                    for jid in list(st.jobs):
                        job = jobs[jid]
                        self.release(job)
                        job.remaining_gpu_h = job.work_gpu_h
                        job.restarts += 1
                        job.start = None
                        requeued.append(job)
                st.last_power = cur
            fleet = self.gpus[pool]
            first = next(iter(states))
            if first in fleet.nodes:
                limit = fleet.nodes[first].gpus[0].limit_w
                if limit is not None:
                    self.cap_w[pool] = float(limit)
        return requeued

    # ------------------------------------------------------------------ decisions
    def apply(self, d: Decision, jobs: dict[str, SimJob], now: datetime) -> list[SimJob]:
        """Carry out a decision as far as the fleet allows. Returns the jobs started."""
        for pool, names in d.power_off.items():
            hook, states = self.hooks[pool], self.nodes[pool]
            ok = []
            for n in names:
                if states[n].jobs:
                    self.stats.refused_power_off_busy += 1
                elif hook.nodes[n].power in (NodePower.ON, NodePower.BOOTING):
                    ok.append(n)
            if ok:
                hook.power_off(ok)
                for n in ok:
                    states[n].boot_at = None
                    states[n].last_power = NodePower.OFF
        for pool, count in d.power_on.items():
            if count <= 0:
                continue
            hook, states = self.hooks[pool], self.nodes[pool]
            offs = [n for n in states if hook.nodes[n].power == NodePower.OFF][:count]
            if offs:
                changes = hook.power_on(offs)
                for c in changes:
                    if c.changed:
                        states[c.target].boot_at = now
                        states[c.target].last_power = NodePower.BOOTING
                # a zero boot time is on at once
                for s in hook.status(offs):
                    if s.power == NodePower.ON:
                        states[s.name].boot_at = None
                        states[s.name].idle_since = now
                        states[s.name].last_power = NodePower.ON
                        self.stats.power_cycles[s.name] += 1
        for pool, cap in d.caps_w.items():
            self.set_cap(pool, cap)
        started = []
        for jid, pool in d.starts:
            job = jobs.get(jid)
            if job is None or job.pool is not None or job.finish is not None:
                continue
            if self._place(job, pool, now):
                started.append(job)
            else:
                self.stats.refused_starts += 1
        return started

    def set_cap(self, pool: str, cap_w: float) -> None:
        """Set every GPU of the pool to ``cap_w`` through the GPU backends (on change only)."""
        if abs(cap_w - self.cap_w[pool]) < 1e-9:
            return
        p = self.pools[pool]
        g = p.gpu
        if not g.power_limit_min_w <= cap_w <= g.power_limit_max_w:
            self.stats.refused_caps += 1
            return
        fleet = self.gpus[pool]
        for n in self.nodes[pool]:
            be = fleet.backend(n)
            for i in range(p.gpus_per_node):
                be.set_power_limit_w(i, cap_w)
        self.cap_w[pool] = cap_w

    def _place(self, job: SimJob, pool: str, now: datetime) -> bool:
        p = self.pools.get(pool)
        if p is None or p.site not in job.sites:
            return False
        hook, states = self.hooks[pool], self.nodes[pool]
        need = job.gpus
        take: list[tuple[str, int]] = []
        # prefer the fullest nodes that still fit (packs small jobs, keeps nodes free to sleep)
        cands = [
            st
            for n, st in states.items()
            if st.free_gpus > 0
            and hook.nodes[n].power == NodePower.ON
            and not hook.nodes[n].drained
        ]
        cands.sort(key=lambda st: (st.free_gpus, st.name))
        whole = [st for st in cands if st.free_gpus >= need]
        if whole:
            take = [(whole[0].name, need)]
        else:
            for st in sorted(cands, key=lambda s: (-s.free_gpus, s.name)):
                g = min(st.free_gpus, need)
                take.append((st.name, g))
                need -= g
                if need == 0:
                    break
            if need > 0:
                return False
        for n, g in take:
            st = states[n]
            st.free_gpus -= g
            st.jobs.add(job.id)
            hook.nodes[n].running_jobs = len(st.jobs)
        job.pool, job.nodes, job.start, job.ran_pool = pool, tuple(take), now, pool
        if job.first_start is None:
            job.first_start = now
        return True

    # ------------------------------------------------------------------ the slot itself
    def run_slot(
        self, now: datetime, step: timedelta, running: list[SimJob]
    ) -> tuple[dict[str, float], list[SimJob]]:
        """Advance running jobs by one slot. Returns (IT+PUE energy kWh per site, finished)."""
        dt_h = step / timedelta(hours=1)
        energy_kwh = {s: 0.0 for s in self.site_zone}
        finished: list[SimJob] = []
        busy_gpu_h: dict[str, float] = {p: 0.0 for p in self.pools}
        for job in running:
            p = self.pools[job.pool or ""]
            rate = job.gpus * p.throughput(self.cap_w[p.name])  # GPU-h of work per hour
            need_h = job.remaining_gpu_h / rate
            if need_h <= dt_h + 1e-12:
                busy_gpu_h[p.name] += job.gpus * need_h
                job.remaining_gpu_h = 0.0
                job.finish = now + timedelta(hours=need_h)
                finished.append(job)
            else:
                busy_gpu_h[p.name] += job.gpus * dt_h
                job.remaining_gpu_h -= rate * dt_h
        end = now + step
        for name, p in self.pools.items():
            hook, states = self.hooks[name], self.nodes[name]
            wh = 0.0
            for n, st in states.items():
                pw = hook.nodes[n].power
                if pw == NodePower.ON:
                    wh += p.node_idle_w * dt_h
                    if st.boot_surcharge_h > 0:  # booted inside this slot's controller step
                        wh += (p.node_boot_w - p.node_idle_w) * min(dt_h, st.boot_surcharge_h)
                        st.boot_surcharge_h = 0.0
                elif pw == NodePower.BOOTING and st.boot_at is not None:
                    done = st.boot_at + timedelta(minutes=p.boot_time_min)
                    boot_h = max(0.0, (min(done, end) - max(st.boot_at, now)) / timedelta(hours=1))
                    wh += p.node_boot_w * boot_h + p.node_idle_w * (dt_h - boot_h)
                else:  # off, failed, or booting forever
                    wh += p.node_off_w * dt_h
            extra_w = max(0.0, p.gpu_busy_w(self.cap_w[name]) - p.gpu.idle_w)
            wh += extra_w * busy_gpu_h[name]
            energy_kwh[p.site] += wh / 1000.0 * self.site_pue[p.site]
        for job in finished:
            self.release(job)
        return energy_kwh, finished

    @property
    def killed_jobs(self) -> int:
        return sum(h.killed_jobs for h in self.hooks.values())
