"""Property tests on small random fleets (issue 15, item 2; hypothesis).

Each example writes a random fleet (1–2 sites with PUE, budgets and jurisdictions; a pool per
site with boot power and boot time; a GPU with two cap levels; 1–4 jobs with priorities and
residency) as real TOML + CSV files and plans it. The checks recompute what the plan claims
from its own schedule with a few independent lines of arithmetic here — they do not call
``greencpn.optimize.evaluate`` — and check the MILP alone against its rows:

* the executed plan's energy and carbon, recomputed from ``plan.json``'s job schedules, nodes on,
  start-ups and power caps, equal what ``plan.json`` reports (per site and slot and in total);
* no work on a booting node's GPUs (nor on an off node's), and each placed job's work is done;
* the executed objective is never below the MILP bound;
* the MILP's own solution keeps every site budget and every job's residency, its meter energy
  is the physics above applied to its own n, g, u, and its work fits its capacity.

Examples are few, derandomised and not shrunk (the same fleets each run, so CI is reproducible): set
``GREENCPN_HYPOTHESIS_EXAMPLES`` for more, ``GREENCPN_HYPOTHESIS_RANDOM=1`` for new ones and
``GREENCPN_HYPOTHESIS_SHRINK=1`` to shrink a failing fleet to a minimal one (slow).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs, make_plan
from greencpn.optimize.milp import PlanModel
from tests.optimize.conftest import START, iso, write_fleet

# hypothesis writes failing-example patches (and a cache of constants) under its home folder:
# keep it out of the repo, in a temporary folder removed when the test run ends — unless a
# failing example's patch is there (hypothesis prints its path)
HYPOTHESIS_HOME = Path(tempfile.mkdtemp(prefix="greencpn-hypothesis-"))
set_hypothesis_home_dir(str(HYPOTHESIS_HOME))


@atexit.register
def _remove_hypothesis_home() -> None:
    if not (HYPOTHESIS_HOME / "patches").exists():
        shutil.rmtree(HYPOTHESIS_HOME, ignore_errors=True)


EXAMPLES = int(os.environ.get("GREENCPN_HYPOTHESIS_EXAMPLES", "12"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("GREENCPN_HYPOTHESIS_RANDOM") != "1",
    database=None,
    # shrinking a failing fleet re-plans it hundreds of times (minutes here): off unless asked
    phases=[Phase.explicit, Phase.generate]
    + ([Phase.shrink] if os.environ.get("GREENCPN_HYPOTHESIS_SHRINK") == "1" else []),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

GPU_MAX_W, GPU_IDLE_W = 300.0, 20.0
#: cap (W) -> (throughput, board power W when busy)
LEVELS = {300.0: (1.0, 300.0), 150.0: (0.6, 150.0)}
GPU = f"""
[[gpu_models]]
name = "T2"
power_limit_min_w = 100
power_limit_max_w = {GPU_MAX_W:g}
power_limit_default_w = {GPU_MAX_W:g}
idle_w = {GPU_IDLE_W:g}
source = "test profile"
[[gpu_models.levels]]
cap_w = 300
throughput = 1.0
power_factor = 1.0
[[gpu_models.levels]]
cap_w = 150
throughput = 0.6
power_factor = 0.5
"""
TOL = 2e-3  # plan.json rounds busy fractions to 4 and energies to 4 decimals


@dataclass
class SiteSpec:
    name: str
    pue: float
    jur: str
    budget_kw: float | None
    intensity: list[int]


@dataclass
class PoolSpec:
    site: int
    nodes: int
    gpn: int
    idle_w: float
    initial_on: int
    boot_w: float
    boot_min: float

    @property
    def name(self) -> str:
        return f"p{self.site}"

    @property
    def boot_frac(self) -> float:
        return min(1.0, self.boot_min / 60.0)


@dataclass
class JobSpec:
    id: str
    gpus: int
    work: float
    release: int
    deadline: int
    ckpt: bool
    priority: int
    jur: str  # "" = anywhere


@dataclass
class Fleet:
    T: int
    sites: list[SiteSpec]
    pools: list[PoolSpec]
    jobs: list[JobSpec] = field(default_factory=list)

    def write(self, tmp: Path) -> Path:
        sites = "".join(
            f'\n[[sites]]\nname = "{s.name}"\nzone = "Z{i}"\njurisdictions = ["{s.jur}"]\n'
            f"pue = {s.pue}\n" + (f"power_budget_kw = {s.budget_kw}\n" if s.budget_kw else "")
            for i, s in enumerate(self.sites)
        )
        pools = "".join(
            f'\n[[pools]]\nname = "{p.name}"\nsite = "{self.sites[p.site].name}"\n'
            f'nodes = {p.nodes}\ngpu_model = "T2"\ngpus_per_node = {p.gpn}\n'
            f"node_idle_w = {p.idle_w}\nnode_boot_w = {p.boot_w}\nboot_time_min = {p.boot_min}\n"
            f"min_up_h = 1.0\nmin_down_h = 1.0\ninitial_on = {p.initial_on}\nspares = 0\n"
            for p in self.pools
        )
        jobs = [
            {
                "id": j.id,
                "gpus": j.gpus,
                "work_gpu_h": j.work,
                "release": iso(j.release),
                "deadline": iso(j.deadline),
                "checkpointable": str(j.ckpt).lower(),
                "priority": j.priority,
                "jurisdictions": j.jur,
            }
            for j in self.jobs
        ]
        return write_fleet(
            tmp,
            carbon={f"Z{i}": s.intensity for i, s in enumerate(self.sites)},
            sites=sites,
            pools=pools,
            jobs=jobs,
            gpu=GPU,
        )


@st.composite
def fleets(draw) -> Fleet:
    T = draw(st.integers(3, 5))
    n_sites = draw(st.integers(1, 2))
    sites, pools = [], []
    for s in range(n_sites):
        nodes = draw(st.integers(1, 2))
        gpn = draw(st.integers(1, 2))
        idle_w = draw(st.sampled_from([50.0, 100.0]))
        pue = draw(st.sampled_from([1.0, 1.2, 1.5]))
        boot_min = draw(st.sampled_from([0.0, 15.0, 30.0]))
        full_kw = pue * nodes * (idle_w + gpn * GPU_MAX_W) / 1000.0
        # no budget, or one between a single busy node and the whole pool at full power
        share = draw(st.sampled_from([None, 0.55, 0.8]))
        sites.append(
            SiteSpec(
                name=f"s{s}",
                pue=pue,
                jur=["EU", "US"][s],
                budget_kw=None if share is None else round(max(share * full_kw, 0.05), 3),
                intensity=draw(st.lists(st.integers(20, 800), min_size=T, max_size=T)),
            )
        )
        pools.append(
            PoolSpec(
                site=s,
                nodes=nodes,
                gpn=gpn,
                idle_w=idle_w,
                initial_on=draw(st.integers(0, nodes)),
                boot_w=draw(st.sampled_from([idle_w, 400.0])),
                boot_min=boot_min,
            )
        )
    max_gpus = min(p.gpn for p in pools)
    jobs = []
    for i in range(draw(st.integers(1, 4))):
        release = draw(st.integers(0, T - 1))
        jobs.append(
            JobSpec(
                id=f"j{i}",
                gpus=draw(st.integers(1, max_gpus)),
                work=draw(st.sampled_from([0.5, 1.0, 1.5, 2.0])),
                release=release,
                deadline=draw(st.integers(release + 1, T)),
                ckpt=draw(st.booleans()),
                priority=draw(st.sampled_from([1, 2])),
                jur=draw(st.sampled_from(["", *[s.jur for s in sites]])),
            )
        )
    return Fleet(T, sites, pools, jobs)


def busy_by_pool_slot(doc: dict, fleet: Fleet) -> np.ndarray:
    """[P, T] time-averaged busy GPUs, from the jobs' own schedules in plan.json."""
    pidx = {p.name: i for i, p in enumerate(fleet.pools)}
    busy = np.zeros((len(fleet.pools), fleet.T))
    for j in doc["jobs"]:
        for run in j["schedule"]:
            if run["slot"] < fleet.T:
                busy[pidx[j["pool"]], run["slot"]] += run["gpus"] * run["busy_fraction"]
    return busy


def recompute(doc: dict, fleet: Fleet) -> tuple[np.ndarray, np.ndarray]:
    """[S, T] meter energy (kWh) and carbon (kg) of the executed plan, by hand."""
    busy = busy_by_pool_slot(doc, fleet)
    energy = np.zeros((len(fleet.sites), fleet.T))
    for i, p in enumerate(fleet.pools):
        slots = doc["pools"][i]["slots"]
        for t in range(fleet.T):
            n, u, cap = slots[t]["nodes_on"], slots[t]["startups"], slots[t]["power_cap_w"]
            busy_w = LEVELS[cap][1]
            it_kw = (
                p.idle_w * n
                + (busy_w - GPU_IDLE_W) * busy[i, t]
                + max(0.0, p.boot_w - p.idle_w) * p.boot_min / 60.0 * u  # 1-h slots
            ) / 1000.0
            energy[p.site, t] += fleet.sites[p.site].pue * it_kw * 1.0
    inten = np.array([s.intensity for s in fleet.sites], dtype=float)
    return energy, energy * inten / 1000.0


def plan_fleet(fleet: Fleet):
    with tempfile.TemporaryDirectory(prefix="greencpn-prop-") as tmp:
        path = fleet.write(Path(tmp))
        return make_plan(load_config(path), SimClock(START))


@pytest.mark.timeout(600)
@SETTINGS
@given(fleets())
def test_executed_plan_physics_from_its_own_schedule(fleet: Fleet) -> None:
    res = plan_fleet(fleet)
    doc = res.document
    energy, carbon = recompute(doc, fleet)
    # per site and slot, and in total: plan.json says what its schedule draws
    for s, site in enumerate(doc["sites"]):
        assert [x["energy_kwh"] for x in site["slots"]] == pytest.approx(energy[s], abs=TOL)
        assert [x["carbon_kg"] for x in site["slots"]] == pytest.approx(carbon[s], abs=TOL)
    if doc["totals"]["beyond_horizon_gpu_h"] == 0:  # nothing past the horizon to price
        assert doc["totals"]["energy_kwh"] == pytest.approx(energy.sum(), abs=TOL)
        assert doc["totals"]["carbon_kg"] == pytest.approx(carbon.sum(), abs=TOL)

    # no work on a booting node's GPUs, nor on an off node's
    busy = busy_by_pool_slot(doc, fleet)
    for i, p in enumerate(fleet.pools):
        for t, sl in enumerate(doc["pools"][i]["slots"]):
            n, u = sl["nodes_on"], sl["startups"]
            usable = p.gpn * (n - u) + p.gpn * u * (1.0 - p.boot_frac)
            assert busy[i, t] <= usable + 1e-3, (p.name, t, busy[i, t], n, u)

    # each job placed entirely inside the horizon delivers its work at its slots' cap levels
    pidx = {p.name: i for i, p in enumerate(fleet.pools)}
    spec = {j.id: j for j in fleet.jobs}
    for j in doc["jobs"]:
        if not j["schedule"] or any(r["slot"] >= fleet.T for r in j["schedule"]):
            continue
        slots = doc["pools"][pidx[j["pool"]]]["slots"]
        done = sum(
            r["gpus"] * r["busy_fraction"] * LEVELS[slots[r["slot"]]["power_cap_w"]][0]
            for r in j["schedule"]
        )
        assert done == pytest.approx(spec[j["id"]].work, abs=2e-3), j["id"]
        # and it ran where it may
        site = fleet.sites[fleet.pools[pidx[j["pool"]]].site]
        assert spec[j["id"]].jur in ("", site.jur), j["id"]

    # never below the MILP bound
    ex = doc["executed"]
    assert ex["milp_bound"] is not None
    assert ex["objective"] >= ex["milp_bound"] - 1e-6 * max(1.0, abs(ex["milp_bound"]))


@pytest.mark.timeout(600)
@SETTINGS
@given(fleets())
def test_milp_alone_keeps_budgets_residency_and_its_physics(fleet: Fleet) -> None:
    with tempfile.TemporaryDirectory(prefix="greencpn-prop-") as tmp:
        inp = make_inputs(load_config(fleet.write(Path(tmp))), SimClock(START))
    model = PlanModel(inp)
    out = model.solve()
    assert out.usable, out
    sol = model.extract()
    V = model.V
    S, T = len(fleet.sites), fleet.T
    thr = np.array([LEVELS[c][0] for c in sorted(LEVELS, reverse=True)])
    extra_kw = np.array([LEVELS[c][1] - GPU_IDLE_W for c in sorted(LEVELS, reverse=True)]) / 1e3

    # meter energy = PUE × (idle nodes + busy GPUs at their level + start-ups × boot energy)
    e = np.zeros((S, T))
    for i, p in enumerate(fleet.pools):
        boot_kwh = max(0.0, p.boot_w - p.idle_w) / 1000.0 * p.boot_min / 60.0
        it = p.idle_w / 1000.0 * sol.n[i] + extra_kw @ sol.g[i, :2] + boot_kwh * sol.u[i]
        e[p.site] += fleet.sites[p.site].pue * it
    assert sol.e == pytest.approx(e, abs=1e-6)

    # budgets: the whole fleet can always go dark (no spares), and an overrun costs more than
    # leaving the work unserved, so the MILP never overruns
    for s, site in enumerate(fleet.sites):
        if site.budget_kw is not None:
            assert (sol.e[s] <= site.budget_kw * 1.0 + 1e-6).all(), (s, sol.e[s])
    assert sol.v == pytest.approx(np.zeros((S, T)), abs=1e-6)

    # residency: work only where every job of the group may run
    for i in np.nonzero(sol.x > 1e-9)[0]:
        k, s = int(V.x_k[i]), int(V.x_s[i])
        for j in inp.groups[k].jobs:
            jur = fleet.jobs[j].jur
            assert jur in ("", fleet.sites[s].jur), (fleet.jobs[j].id, s)

    # capacity: GPUs busy ≤ GPUs of nodes up (less the booting share); work ≤ what they do
    work = np.zeros((S, T))
    np.add.at(work, (V.x_s, V.x_t), sol.x)
    cap_work = np.zeros((S, T))
    for i, p in enumerate(fleet.pools):
        gsum = sol.g[i, :2].sum(axis=0)
        assert (gsum <= p.gpn * (sol.n[i] - p.boot_frac * sol.u[i]) + 1e-6).all(), p.name
        cap_work[p.site] += thr @ sol.g[i, :2]
    assert (work <= cap_work + 1e-6).all()

    # completion: work done + unserved = required, per group
    done = np.zeros(len(inp.groups))
    np.add.at(done, V.x_k, sol.x)
    required = np.array([g.required_gpu_h for g in inp.groups])
    assert done + sol.q == pytest.approx(required, abs=1e-6)

    # its bound does not exceed its objective
    assert out.bound is not None and out.objective is not None
    assert out.bound <= out.objective + 1e-6 * max(1.0, abs(out.objective))
