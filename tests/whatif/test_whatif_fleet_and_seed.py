"""The simulated fleet: boots take their time and energy, caps set throughput and power from the
GPU model, failures requeue jobs, and the same seed gives the same numbers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from greencpn.actuate.base import NodePower
from greencpn.clock import SimClock
from greencpn.sources.replay import ReplayCarbonSource
from greencpn.whatif.engine import ReplaySettings, run_replay
from greencpn.whatif.fleet import SimFleet
from greencpn.whatif.metrics import summarise
from greencpn.whatif.model import Decision, FleetSpec, PoolSpec, SimJob, SiteSpec

from .conftest import T0, gpu_model, two_zone_series


def _fleet(nodes: int = 1, **kw: object) -> FleetSpec:
    return FleetSpec(
        (SiteSpec("A", "ZA"),),
        (PoolSpec("pa", "A", nodes, 1, gpu_model(), node_idle_w=100.0, **kw),),  # type: ignore[arg-type]
    )


def test_boot_delay_energy_and_power_cycle():
    clock = SimClock(T0)
    sim = SimFleet(_fleet(node_boot_w=400.0, boot_time_min=30.0), clock, initially_on=False)
    step = timedelta(hours=1)
    sim.begin_slot(T0, step, {})
    sim.apply(Decision(power_on={"pa": 1}), {}, T0)
    assert sim.power("pa", "pa-0000") == NodePower.BOOTING
    e, _ = sim.run_slot(T0, step, [])
    # 30 min booting at 400 W + 30 min idle at 100 W = 0.25 kWh
    assert e["A"] == pytest.approx(0.25)
    t1 = T0 + step
    clock.set(t1)
    sim.begin_slot(t1, step, {})
    assert sim.power("pa", "pa-0000") == NodePower.ON
    assert sim.stats.power_cycles["pa-0000"] == 1
    # a job cannot be started on a node that was booting at the slot start: it is now on
    job = SimJob("j", 1, 1.0, T0, T0 + 5 * step, ("A",), "A")
    assert sim.apply(Decision(starts=[("j", "pa")]), {"j": job}, t1) == [job]


def test_power_cap_sets_throughput_and_power():
    clock = SimClock(T0)
    sim = SimFleet(_fleet(), clock)
    step = timedelta(hours=1)
    job = SimJob("j", 1, 1.0, T0, T0 + 5 * step, ("A",), "A")
    sim.apply(Decision(caps_w={"pa": 100.0}, starts=[("j", "pa")]), {"j": job}, T0)
    # the cap went through the GPU backend (NVML semantics, read before write)
    assert sim.gpus["pa"].backend("pa-0000").list_gpus()[0].power_limit_current_w == 100.0
    e, done = sim.run_slot(T0, step, [job])
    # at 100 W: half throughput -> 0.5 GPU-h done in the hour; GPU draws 100 W on top of idle
    assert not done and job.remaining_gpu_h == pytest.approx(0.5)
    assert e["A"] == pytest.approx(0.1 + 0.1)
    # an out-of-range cap is refused by the fleet, the cap stays
    sim.apply(Decision(caps_w={"pa": 50.0}), {}, T0)
    assert sim.cap_w["pa"] == 100.0 and sim.stats.refused_caps == 1


def test_busy_nodes_are_never_powered_off():
    clock = SimClock(T0)
    sim = SimFleet(_fleet(), clock)
    job = SimJob("j", 1, 5.0, T0, T0 + timedelta(hours=10), ("A",), "A")
    sim.apply(Decision(starts=[("j", "pa")]), {"j": job}, T0)
    sim.apply(Decision(power_off={"pa": ["pa-0000"]}), {"j": job}, T0)
    assert sim.power("pa", "pa-0000") == NodePower.ON
    assert sim.stats.refused_power_off_busy == 1 and sim.killed_jobs == 0


def _failing_run(seed: int):
    series = two_zone_series()
    src = ReplayCarbonSource(series, mode="perfect")
    jobs = [
        SimJob(f"j{k}", 1, 3.0, T0 + timedelta(hours=k), T0 + timedelta(hours=k + 30), ("A",), "A")
        for k in range(20)
    ]
    st = ReplaySettings(
        T0,
        T0 + timedelta(hours=24),
        drain=timedelta(hours=48),
        seed=seed,
        failure_rate_per_node_h=0.05,
        repair_h=2.0,
    )
    return run_replay(
        _fleet(nodes=4), jobs, "carbon-agnostic", forecasts=src, actuals=src, settings=st
    )


def test_same_seed_same_numbers_and_failures_requeue_jobs():
    a, b, c = _failing_run(7), _failing_run(7), _failing_run(8)
    sa, sb, sc = summarise(a), summarise(b), summarise(c)
    for key in ("energy_kwh", "carbon_kg", "mean_wait_h", "node_failures", "job_restarts"):
        assert sa[key] == sb[key]
    assert sa["node_failures"] > 0 and sa["job_restarts"] > 0
    assert (sa["node_failures"], sa["energy_kwh"]) != (sc["node_failures"], sc["energy_kwh"])
    # requeued jobs still finish (restarted from scratch: not checkpointable)
    assert sa["unfinished_jobs"] == 0
