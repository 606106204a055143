"""The realised share of the planned job-timing saving (greencpn/whatif/realised.py): tiny
hand-computed cases where the actuators follow the plan, where the scheduler's capacity delays
a job, and where a queued job cannot move to the site the plan chose."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from greencpn.whatif.realised import ReplayJob, ReplayPool, realised_share

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _iso(h: float) -> str:
    return (T0 + timedelta(hours=h)).isoformat().replace("+00:00", "Z")


def _plan(jobs: list[tuple[str, str, str, float]], a: list[float], b: list[float]) -> dict:
    return {
        "horizon": {
            "start": _iso(0),
            "slot_minutes": 60,
            "slots": len(a),
            "slot_starts": [_iso(h) for h in range(len(a))],
        },
        "sites": [
            {
                "name": n,
                "slots": [{"slot": i, "intensity_g_per_kwh": v} for i, v in enumerate(vals)],
            }
            for n, vals in (("A", a), ("B", b))
        ],
        "jobs": [{"id": i, "site": s, "pool": p, "start": _iso(h)} for i, s, p, h in jobs],
    }


POOLS = [ReplayPool("pa", "A", gpus=1, gpu_kw=1.0, pue=1.0), ReplayPool("pb", "B", 1, 1.0, 1.0)]
# A: dirty now, clean from hour 2; B: clean all along
A = [500.0, 500.0, 100.0, 100.0, 100.0, 500.0]
B = [50.0] * 6


def _job(i: str, sites: tuple[str, ...] = ("A",)) -> ReplayJob:
    return ReplayJob(i, 1, 1.0, T0, T0 + timedelta(hours=6), sites)


def test_deferred_job_starts_at_its_planned_hour_whole_saving_realised() -> None:
    res = realised_share(_plan([("j1", "A", "pa", 2)], A, B), [_job("j1")], POOLS)
    assert res.starts == {"j1": ("pa", T0 + timedelta(hours=2))}
    assert (res.baseline_kg, res.planned_kg, res.realised_kg) == pytest.approx((0.5, 0.1, 0.1))
    assert res.share == pytest.approx(1.0) and res.on_plan == 1 and res.late_jobs == 0
    assert res.actions == {"defer_ok": 1}


def test_capacity_delays_the_second_job_one_hour() -> None:
    # both planned at hour 2 on a 1-GPU pool: the second starts when the first ends (hour 3)
    plan = _plan([("j1", "A", "pa", 2), ("j2", "A", "pa", 2)], A, B)
    res = realised_share(plan, [_job("j1"), _job("j2")], POOLS)
    assert res.starts["j1"] == ("pa", T0 + timedelta(hours=2))
    assert res.starts["j2"] == ("pa", T0 + timedelta(hours=3))
    # baseline: j1 at 0 (0.5 kg), j2 at 1 (0.5 kg); planned 0.1 + 0.1; realised 0.1 + 0.1
    assert res.realised_kg == pytest.approx(0.2) and res.share == pytest.approx(1.0)
    # a plan hour dirtier than planned: A's hour 3 = 500 -> the delayed job loses its saving
    a2 = [500.0, 500.0, 100.0, 500.0, 500.0, 500.0]
    res = realised_share(_plan([("j1", "A", "pa", 2), ("j2", "A", "pa", 2)], a2, B),
                         [_job("j1"), _job("j2")], POOLS)  # fmt: skip
    assert (res.baseline_kg, res.planned_kg, res.realised_kg) == pytest.approx((1.0, 0.2, 0.6))
    assert res.share == pytest.approx(0.5) and res.on_plan == 1


def test_a_move_to_another_site_happens_only_when_queued_there() -> None:
    plan = _plan([("j1", "B", "pb", 0)], A, B)
    job = _job("j1", ("A", "B"))
    home = realised_share(plan, [job], POOLS, queue="home")
    assert home.starts == {"j1": ("pa", T0)}  # skipped: a queued job cannot change cluster
    assert home.share == pytest.approx(0.0) and home.actions == {"skip_skipped": 1}
    there = realised_share(plan, [job], POOLS, queue="planned")
    assert there.starts == {"j1": ("pb", T0)} and there.share == pytest.approx(1.0)
