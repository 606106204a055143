"""The job-level reference MILP on tiny fleets with answers computed by hand, and properties
of every executable plan (placement, greedy, job-level) on small generated fleets."""

from __future__ import annotations

import numpy as np
import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs, make_plan
from greencpn.optimize.evaluate import evaluate
from greencpn.optimize.joblevel import choices, fix_and_optimise, joblevel_size, solve_joblevel
from greencpn.optimize.schedule import boot_steps, work_done
from tests.optimize.conftest import START
from tests.optimize.test_plan_exact import SITE, gpu_two_levels, job, pool


def inputs(path):
    return make_inputs(load_config(path), SimClock(START))


def test_rigid_job_takes_the_cleanest_contiguous_window(fleet):
    path = fleet(
        carbon={"Z": [100, 500, 100, 500, 300, 200]},
        sites=SITE,
        pools=pool(),
        jobs=[job(work=2.0, deadline=6)],
    )
    inp = inputs(path)
    res = solve_joblevel(inp)
    assert res.status == "optimal"
    assert res.schedule is not None and res.schedule.start_h[0] == pytest.approx(4.0)
    assert res.objective == pytest.approx(0.2)  # 0.4 kWh/h × (300 + 200) g/kWh
    assert evaluate(inp, res.schedule, res.n, res.u).objective == pytest.approx(res.objective)


@pytest.mark.parametrize(
    ("idle_w", "level", "energy_kwh"),
    [
        # 150 W level at 0.8 throughput: 1.25 h busy on 2 whole slots of node idle
        (10.0, 1, 2 * 0.01 + 0.15 * 1.25),  # 0.2075 < full power 0.01 + 0.3 = 0.31
        (300.0, 0, 0.3 + 0.3),  # slow: 2 × 0.3 + 0.1875 = 0.7875 > 0.6 at full power
    ],
)
def test_cap_level_only_when_the_node_hours_it_adds_are_paid_for(fleet, idle_w, level, energy_kwh):
    path = fleet(
        carbon={"Z": [100, 100, 100, 100]},
        sites=SITE,
        pools=pool(gpu="T2", idle_w=idle_w),
        jobs=[job(work=1.0, deadline=4)],
        gpu=gpu_two_levels(0.8),
    )
    inp = inputs(path)
    res = solve_joblevel(inp)
    assert res.status == "optimal" and res.schedule is not None
    p = int(res.schedule.pool[0])
    s0 = int(res.schedule.start_h[0])
    assert int(res.schedule.level[p, s0]) == level
    ev = evaluate(inp, res.schedule, res.n, res.u)
    assert ev.totals["energy_kwh"] == pytest.approx(energy_kwh)
    assert ev.objective == pytest.approx(res.objective)


def test_two_jobs_share_the_one_pool_they_fit_together_on(fleet):
    path = fleet(
        carbon={"Z": [100, 100]},
        sites=SITE,
        pools=pool("big", gpn=2) + pool("small", gpn=1),
        jobs=[job("x", deadline=1), job("y", deadline=1)],
    )
    inp = inputs(path)
    res = solve_joblevel(inp)
    assert res.schedule is not None
    assert {inp.pools[int(p)].name for p in res.schedule.pool} == {"big"}
    assert res.objective == pytest.approx(0.07)  # (0.1 idle + 2 × 0.3) kWh × 100 g/kWh


def test_booting_node_holds_no_gpu_for_its_first_slot(fleet):
    """Whole-slot holding on booted nodes: the node is off at the start, so the job cannot
    hold slot 0 (the node boots in it); it runs in slot 1 although slot 0 is cleaner."""
    path = fleet(
        carbon={"Z": [100, 500, 500, 500]},
        sites=SITE,
        pools=pool(extra="node_boot_w = 400.0\nboot_time_min = 6.0"),
        jobs=[job(work=1.0, deadline=4)],
    )
    res = solve_joblevel(inputs(path))
    assert res.schedule is not None and res.schedule.start_h[0] == pytest.approx(1.0)
    assert res.n is not None and res.n[0, 0] == 1  # started in slot 0, used from slot 1


def _random_fleet(fleet, seed: int):
    rng = np.random.default_rng(seed)
    T = 12
    carbon = {"Z": rng.integers(50, 600, T).tolist()}
    pools = pool(
        "p1", nodes=3, gpn=2, gpu="T2", initial=1, extra="node_boot_w = 500.0\nboot_time_min = 6.0"
    )
    pools += pool(
        "p2",
        nodes=2,
        gpn=4,
        gpu="T2",
        idle_w=250.0,
        extra="node_boot_w = 400.0\nboot_time_min = 20.0",
    )
    jobs = []
    for i in range(8):
        r = int(rng.integers(0, 6))
        g = int(rng.choice([1, 2, 4]))
        dur = float(rng.choice([0.75, 1.0, 1.5, 2.5]))
        jobs.append(
            job(
                f"j{i}",
                gpus=g,
                work=g * dur,
                release=r + float(rng.choice([0, 0.25])),
                deadline=min(T, r + dur + int(rng.integers(2, 6))),
                ckpt=bool(rng.integers(0, 2)),
            )
        )
    return fleet(carbon=carbon, sites=SITE, pools=pools, jobs=jobs, gpu=gpu_two_levels(0.8))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_executable_plan_keeps_the_physics(fleet, seed):
    """Placement, greedy and job-level schedules: no GPU held on a booting node, no job run past
    its work, every job's work done, and carbon never below the proven (fluid) bound."""
    path = _random_fleet(fleet, seed)
    res = make_plan(load_config(path), SimClock(START))
    inp = res.inputs
    bound = res.outcome.bound
    jl = solve_joblevel(inp, time_limit_s=20)
    assert jl.schedule is not None
    cands = {
        "plan": (res.schedule, res.nodes_on, res.startups),
        **{k: v for k, v in res.baseline_schedules.items() if k != "carbon_agnostic"},
        "job-level": (jl.schedule, jl.n, jl.u),
    }
    for name, (sched, n, u) in cands.items():
        k = sched.subslots
        for p, pl in enumerate(inp.pools):
            nb = boot_steps(inp, p, k)
            for t in range(inp.T):
                held = sched.alloc_fine[p, t * k : (t + 1) * k]
                assert held.max() <= pl.gpus_per_node * n[p, t] + 1e-9, (name, p, t)
                if nb:
                    assert held[:nb].max() <= pl.gpus_per_node * (n[p, t] - u[p, t]) + 1e-9, (
                        name,
                        p,
                        t,
                    )
        for j, jb in enumerate(inp.jobs):
            assert work_done(inp, sched, j) == pytest.approx(jb.work_gpu_h, abs=1e-6), (name, jb.id)
        ev = evaluate(inp, sched, n, u)
        assert ev.objective >= bound - 1e-6 * max(1.0, abs(bound)), name
    assert res.executed.objective <= res.baselines["carbon_aware_greedy"].objective + 1e-9
    assert jl.bound is not None and jl.objective is not None and jl.objective >= jl.bound - 1e-6


def test_fix_and_optimise_never_worsens_and_keeps_choices(fleet):
    path = _random_fleet(fleet, 3)
    inp = inputs(path)
    # generous limits: HiGHS stops at its gap (about a second on an idle machine); a 5 s limit
    # on a loaded machine left a non-optimal incumbent, whose node counts the held-choices
    # re-solve below could then beat — a failure of the limit, not of the code
    first = solve_joblevel(inp, time_limit_s=120)
    assert first.status == "optimal", first.status
    assert first.schedule is not None and first.objective is not None
    fx = choices(inp, first.schedule)
    again = solve_joblevel(inp, fixed=fx)  # every job held to its choice: the same plan
    assert again.objective == pytest.approx(first.objective, rel=1e-6)
    best, log = fix_and_optimise(inp, first, block_jobs=3, time_budget_s=120)
    assert log and best.objective is not None and best.objective <= first.objective + 1e-9


def test_half_hour_slots_start_end_and_size_in_hours(fleet):
    """30-minute slots over 3 h of carbon (500, 100, 500 g/kWh: slots 2–3 are the clean
    hour). A rigid 0.75 GPU-h job due at 3 h runs 1:00–1:45 — two slots, the second half
    busy: start_h 1.0, end_h 1.75 (hours, not slots). Node 0.1 kW × 1 h + GPU 0.3 kW ×
    0.75 h = 0.325 kWh × 100 g/kWh = 0.0325 kg. Its window reaches the horizon's end, so
    its binaries are one start per slot of the horizon at the pool's one level: 6."""
    path = fleet(
        carbon={"Z": [500, 100, 500]},
        sites=SITE,
        pools=pool(),
        jobs=[job(work=0.75, deadline=3.0)],
        slots=6,
    )
    path.write_text(path.read_text().replace("slot_minutes = 60", "slot_minutes = 30"))
    inp = inputs(path)
    assert (inp.T, inp.slot_h) == (6, 0.5)
    res = solve_joblevel(inp)
    assert res.status == "optimal" and res.schedule is not None
    assert float(res.schedule.start_h[0]) == pytest.approx(1.0)
    assert float(res.schedule.end_h[0]) == pytest.approx(1.75)
    assert res.schedule.runs[0] == [(2, 1, 1.0), (3, 1, pytest.approx(0.5))]
    assert res.objective == pytest.approx(0.0325)
    assert joblevel_size(inp) == 6
