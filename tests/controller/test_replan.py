"""Re-planning a moving world, by hand-checkable cases: running jobs stay fixed, the previous
plan anchors the next one (stability penalty), min down counted from the power history."""

from __future__ import annotations

from datetime import timedelta

import pytest

from greencpn.config import JobConfig, load_config
from greencpn.controller import Mode, QueueState, RunningJob
from greencpn.controller.fakes import FakeFleet
from tests.controller.conftest import START, carbon_rows, iso, make_controller, write_tiny

pytestmark = pytest.mark.slow  # minutes of solves / wall time: xdist hands it out first


class ListQueue:
    def __init__(self, pending=(), running=()):
        self.pending, self.running = list(pending), list(running)

    def observe(self, now):
        return QueueState(pending=list(self.pending), running=list(self.running), source="test")


def job(jid, gpus=2, work=4.0, rel_h=0.0, dl_h=10.0, ckpt=False):
    return JobConfig(
        id=jid,
        gpus=gpus,
        work_gpu_h=work,
        release=START + timedelta(hours=rel_h),
        deadline=START + timedelta(hours=dl_h),
        checkpointable=ckpt,
    )


def test_a_running_job_keeps_its_pool_even_on_the_dirty_site(tmp_path, sim_clock):
    path = write_tiny(tmp_path)
    fleet = FakeFleet(load_config(path), sim_clock)
    running = RunningJob(job("r1", work=8.0), "p1", START - timedelta(hours=1), 6.0, ("a1",))
    q = ListQueue(pending=[job("n1")], running=[running])
    c = make_controller(path, sim_clock, tmp_path / "state", fleet, queue=q)
    r = c.step()
    plan = {j["id"]: j for j in r.plan["jobs"]}
    assert plan["r1"]["pool"] == "p1"  # dirty site, but it runs there: fixed
    assert plan["r1"]["start"] == iso(START)  # keeps running from now
    assert plan["n1"]["site"] == "s2"  # a new job goes to the clean site
    # the running job is never acted on; the node it runs on stays on
    assert not [a for a in r.actions if a["target"] == "r1"]
    assert r.plan["pools"][0]["slots"][0]["nodes_on"] >= 1


def test_checkpointable_running_job_moves_only_if_allowed(tmp_path, sim_clock):
    for allow, want in ((False, "p1"), (True, "p2")):
        d = tmp_path / str(allow)
        d.mkdir()
        path = write_tiny(d, controller=f"preempt_checkpointable = {str(allow).lower()}")
        fleet = FakeFleet(load_config(path), sim_clock)
        running = RunningJob(job("r1", work=8.0, dl_h=10, ckpt=True), "p1", START, 8.0, ("a1",))
        c = make_controller(path, sim_clock, d / "state", fleet, queue=ListQueue(running=[running]))
        r = c.step()
        assert {j["id"]: j for j in r.plan["jobs"]}["r1"]["pool"] == want, allow


def _two_steps(tmp_path, sim_clock, weight: float) -> tuple[str, str]:
    """Step 1 on a forecast where s2 is cleaner; step 2 on one where s1 is cleaner by 1 g/kWh."""
    ctl = f"job_move_weight_per_gpu_h = {weight}\njob_shift_weight_per_gpu_h_slot = 0.0\nnode_flap_weight = 0.0"
    path = write_tiny(tmp_path, controller=ctl)
    fleet = FakeFleet(load_config(path), sim_clock)
    q = ListQueue(pending=[job("j1", work=4.0, dl_h=11)])
    c = make_controller(path, sim_clock, tmp_path / "state", fleet, queue=q)
    (tmp_path / "carbon.csv").write_text(carbon_rows(4, {"Z1": (300, 0), "Z2": (200, 0)}))
    r1 = c.step()
    (tmp_path / "carbon.csv").write_text(carbon_rows(4, {"Z1": (299, 0), "Z2": (300, 0)}))
    sim_clock.set(r1.slot_start + timedelta(hours=1, minutes=1))
    r2 = c.step()
    s1 = {j["id"]: j for j in r1.plan["jobs"]}["j1"]["site"]
    s2 = {j["id"]: j for j in r2.plan["jobs"]}["j1"]["site"]
    return s1, s2


def test_stability_penalty_keeps_a_job_where_it_was_planned(tmp_path, sim_clock):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # without the penalty a 1 g/kWh difference moves the job (0.3 % of its carbon) ...
    assert _two_steps(tmp_path / "a", sim_clock, 0.0) == ("s2", "s1")
    # ... with it (0.05 per GPU-h moved = 0.2 units, the gain is ~0.001 kg) it stays
    sim_clock.set(START + timedelta(minutes=1))
    assert _two_steps(tmp_path / "b", sim_clock, 0.05) == ("s2", "s2")


def test_min_down_is_counted_from_the_power_history(tmp_path, sim_clock):
    path = write_tiny(tmp_path, min_down_h=3.0)
    fleet = FakeFleet(load_config(path), sim_clock)
    q = ListQueue()
    c = make_controller(path, sim_clock, tmp_path / "state", fleet, queue=q, mode=Mode.ENFORCE)
    r1 = c.step()  # nothing to run: every node goes off (recorded in the power history)
    assert all(p["slots"][0]["nodes_on"] == 0 for p in r1.plan["pools"])
    offs = {e.node for e in c.ledger.power_cycles() if e.event == "off"}
    assert len(offs) == 8
    # an hour later a job arrives that could start now; the nodes went off 1 h ago and must
    # stay off 3 h, so the plan starts it when they may come back (slot starting 03:00)
    q.pending = [job("j1", work=4.0, rel_h=1.0, dl_h=12)]
    sim_clock.set(r1.slot_start + timedelta(hours=1, minutes=1))
    r2 = c.step()
    j1 = {j["id"]: j for j in r2.plan["jobs"]}["j1"]
    assert j1["start"] >= iso(START + timedelta(hours=3, minutes=1)), j1
    for p in r2.plan["pools"]:
        assert [s["nodes_on"] for s in p["slots"][:2]] == [0, 0], p["name"]


def test_a_running_job_with_a_far_deadline_is_not_paused(tmp_path, sim_clock):
    """Its deadline is past the horizon, yet it is running: the plan keeps it running now."""
    path = write_tiny(tmp_path)
    fleet = FakeFleet(load_config(path), sim_clock)
    running = RunningJob(job("r1", work=8.0, dl_h=40), "p1", START, 8.0, ("a1",))
    c = make_controller(
        path, sim_clock, tmp_path / "state", fleet, queue=ListQueue(running=[running])
    )
    r = c.step()
    r1 = {j["id"]: j for j in r.plan["jobs"]}["r1"]
    assert (r1["pool"], r1["start"]) == ("p1", iso(START))
    assert [s["gpus"] for s in r1["schedule"]][:4] == [2, 2, 2, 2]


def _plan_churn(
    tmp_path, sim_clock, flap_weight: float, seed: int = 0, extra: str = ""
) -> tuple[int, int]:
    """Σ |nodes on| differences between consecutive plans over the slots both cover, across 4
    hourly steps whose forecasts carry ±15 % noise (the same noise for both weights): in the
    new plan's first slot (the one the step acts on) and in the later slots.
    ``extra``: more ``[controller]`` lines."""
    import random

    ctl = (
        f"node_flap_weight = {flap_weight}\njob_move_weight_per_gpu_h = 0\n"
        "job_shift_weight_per_gpu_h_slot = 0\njoblevel_candidate = false\n" + extra
    )
    path = write_tiny(tmp_path, controller=ctl)
    fleet = FakeFleet(load_config(path), sim_clock)
    rnd = random.Random(seed)
    jobs = [
        job(
            f"j{i}",
            gpus=rnd.choice([1, 2]),
            work=rnd.uniform(2, 6),
            dl_h=rnd.uniform(8, 14),
            ckpt=True,
        )
        for i in range(8)
    ]
    c = make_controller(path, sim_clock, tmp_path / "state", fleet, queue=ListQueue(pending=jobs))
    first = later = 0
    prev = None
    for _ in range(4):
        lines = carbon_rows(4, {"Z1": (300, 80), "Z2": (280, 80)}).splitlines()
        out = [lines[0]]
        for line in lines[1:]:
            t, a, b = line.split(",")
            out.append(
                f"{t},{float(a) * (1 + rnd.uniform(-0.15, 0.15)):.1f},"
                f"{float(b) * (1 + rnd.uniform(-0.15, 0.15)):.1f}"
            )
        (tmp_path / "carbon.csv").write_text("\n".join(out) + "\n")
        r = c.step()
        n = {p["name"]: [s["nodes_on"] for s in p["slots"]] for p in r.plan["pools"]}
        if prev:
            for p in n:
                d = [abs(a - b) for a, b in zip(n[p][:-1], prev[p][1:], strict=True)]
                first += d[0]
                later += sum(d[1:])
        prev = n
        sim_clock.set(r.slot_start + timedelta(hours=1, minutes=1))
    return first, later


def test_node_flap_penalty_calms_consecutive_plans(tmp_path, sim_clock):
    """The node-flap penalty cuts the churn between consecutive plans.

    The job-level MILP candidate is off here (``joblevel_candidate = false``): under its time
    limit its incumbent depends on the machine's load, which made this comparison flaky (37 → 25
    on a loaded machine, 81 → 29 on a quiet one). Without it the step is deterministic:
    measured churn 46 → 36 (seed 0) and 31 → 17 (seed 1) at weight 0.5, the same at weights 2
    and 5 (the rest comes from placement and node repair, which do not see the penalty)."""
    free = calm = 0
    for seed in (0, 1):
        for weight, sub in ((0.0, "a"), (0.5, "b")):
            (tmp_path / f"{sub}{seed}").mkdir()
            sim_clock.set(START + timedelta(minutes=1))
            churn = sum(_plan_churn(tmp_path / f"{sub}{seed}", sim_clock, weight, seed=seed))
            if weight:
                calm += churn
            else:
                free += churn
    # measured 77 -> 53; require at least a fifth less
    assert calm <= 0.8 * free, (free, calm)


def test_node_flap_horizon_charges_only_the_slots_about_to_be_acted_on(tmp_path, sim_clock):
    """``node_flap_horizon_h = 1`` (hourly slots: the first slot only) keeps the slot the step
    acts on as calm as the whole-horizon penalty does, and leaves the later slots free to follow
    the new forecast. Measured (seeds 0 and 1, weight 5): first-slot churn 13 unpenalised, 2
    with the whole-horizon penalty, 2 with the 1 h window; later-slot churn 64 / 37 / 65."""
    first = {"free": 0, "whole": 0, "window": 0}
    later = dict(first)
    for seed in (0, 1):
        for name, weight, extra in (
            ("free", 0.0, ""),
            ("whole", 5.0, ""),
            ("window", 5.0, "node_flap_horizon_h = 1"),
        ):
            (tmp_path / f"{name}{seed}").mkdir()
            sim_clock.set(START + timedelta(minutes=1))
            f, rest = _plan_churn(tmp_path / f"{name}{seed}", sim_clock, weight, seed, extra)
            first[name] += f
            later[name] += rest
    assert first["window"] <= first["whole"] + 1 and first["window"] <= 0.5 * first["free"], first
    assert later["window"] >= 1.5 * later["whole"], later
