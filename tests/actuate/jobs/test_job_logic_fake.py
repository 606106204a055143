"""Job actuation logic (decide / execute / undo) with the in-memory FakeJobActuator.

Times are hand-checkable: the clock starts at 12:00Z, slots are 1 h, every job asks for 1 h.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greencpn.actuate.jobs import (
    JobActuatorTemporaryError,
    JobBackends,
    JobPolicy,
    PendingJob,
    PlannedJob,
    SteerMode,
    SteerTarget,
    act_on_jobs,
    decide,
    latest_safe_start,
    undo_all_jobs,
)
from greencpn.actuate.jobs.fake import FakeJobActuator
from greencpn.actuate.ledger import Ledger
from greencpn.config import JobActuationConfig

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def _job(i: str, **kw: object) -> PendingJob:
    base: dict[str, object] = dict(
        id=i,
        cluster="c1",
        gpus=1,
        time_limit_s=3600.0,
        submit_at=T0,
        begin_at=T0,
        partition="main",
        user="alice",
        account="physics",
    )
    base.update(kw)
    return PendingJob(**base)  # type: ignore[arg-type]


def _plan(*entries: tuple[str, str, datetime | None]) -> dict[str, object]:
    return {
        "jobs": [
            {"id": i, "site": "s1", "pool": pool, "start": None if s is None else s.isoformat()}
            for i, pool, s in entries
        ]
    }


def _backends(fake: FakeJobActuator, **cfg: object) -> JobBackends:
    data: dict[str, object] = {
        "default_slack_h": 6,
        "clusters": [
            {
                "name": "c1",
                "kind": "fake",
                "sites": ["s1"],
                "steer": "partition",
                "pools": {"p-green": {"partition": "green"}, "p-main": {"partition": "main"}},
            }
        ],
    }
    data.update(cfg)
    return JobBackends(config=JobActuationConfig.model_validate(data), actuators={"c1": fake})


def _step(
    fake: FakeJobActuator,
    plan: dict[str, object],
    ledger: Ledger,
    now: datetime,
    *,
    shadow: bool = False,
    ready: bool = True,
    **cfg: object,
):
    apply_id = ledger.begin_apply(now, plan_path=None, slot=0, slot_start=now, mode="act")
    return act_on_jobs(
        plan,
        _backends(fake, **cfg),
        ledger,
        apply_id,
        clock_now=lambda: now,
        next_step_at=now + H,
        pool_ready=lambda pool: ready,
        shadow=shadow,
    )


def test_latest_safe_start_uses_slurm_deadline_else_slack_by_qos_then_partition() -> None:
    policy = JobPolicy(
        default_slack_h=6, slack_h_per_partition={"main": 2}, slack_h_per_qos={"low": 10}
    )
    # its own deadline 16:00, 1 h limit -> 15:00
    assert latest_safe_start(_job("1", deadline=T0 + 4 * H), policy) == T0 + 3 * H
    # partition slack 2 h: deadline 12:00 + 1 h + 2 h = 15:00 -> 14:00
    assert latest_safe_start(_job("2"), policy) == T0 + 2 * H
    # QOS wins over partition: 12 + 1 + 10 -> 22:00
    assert latest_safe_start(_job("3", qos="low"), policy) == T0 + 10 * H
    # default slack for another partition: 12 + 1 + 6 - 1 -> 18:00
    assert latest_safe_start(_job("4", partition="other"), policy) == T0 + 6 * H
    # no time limit: unbounded, never deferred
    assert latest_safe_start(_job("5", time_limit_s=None), policy) is None


def test_defer_clamps_to_latest_safe_start_steers_and_skips_excluded(tmp_path: Path) -> None:
    fake = FakeJobActuator(
        [
            _job("1"),  # planned 15:00 on p-green
            _job("2", deadline=T0 + 3 * H),  # planned 16:00, lss 14:00 -> clamped
            _job("3", user="root"),  # excluded user
            _job("4", held=True),  # held by its user
            _job("5", time_limit_s=None),  # unlimited: not deferred
            _job("6"),  # not in the plan: untouched
        ],
        cluster="c1",
    )
    plan = _plan(
        ("1", "p-green", T0 + 3 * H),
        ("2", "p-main", T0 + 4 * H),
        ("3", "p-main", T0 + 2 * H),
        ("4", "p-main", T0 + 2 * H),
        ("5", "p-main", T0 + H),
    )
    with Ledger.open(tmp_path) as ledger:
        rep = _step(fake, plan, ledger, T0, excluded_users=["root"])
        got = [(o.job_id, o.action, o.status) for o in rep.outcomes]
        assert got == [
            ("1", "steer", "ok"),
            ("1", "defer", "ok"),
            ("2", "defer", "ok"),
            ("3", "skip", "skipped"),
            ("4", "skip", "skipped"),
            ("5", "skip", "skipped"),
        ]
        assert fake.jobs["1"].begin_at == T0 + 3 * H and fake.jobs["1"].partition == "green"
        assert fake.jobs["2"].begin_at == T0 + 2 * H  # its latest safe start, not the plan's 16:00
        for untouched in ("3", "4", "5", "6"):
            assert fake.jobs[untouched].begin_at == T0 and fake.jobs[untouched].partition == "main"
        # the originals are on record before any change
        rec = ledger.job("c1", "1")
        assert rec is not None and rec.originals == {
            "partition": "main",
            "begin_at": "2026-12-01T12:00:00Z",
        }
        # a second step is a no-op (read before write)
        again = _step(fake, plan, ledger, T0 + timedelta(minutes=5), excluded_users=["root"])
        assert [o.action for o in again.outcomes if o.status != "skipped"] == []


def test_shadow_records_per_job_and_changes_nothing(tmp_path: Path) -> None:
    fake = FakeJobActuator([_job("1")], cluster="c1")
    with Ledger.open(tmp_path) as ledger:
        rep = _step(fake, _plan(("1", "p-green", T0 + 3 * H)), ledger, T0, shadow=True)
        assert [(o.action, o.status) for o in rep.outcomes] == [
            ("steer", "shadow"),
            ("defer", "shadow"),
        ]
        assert fake.jobs["1"].begin_at == T0 and fake.jobs["1"].partition == "main"
        rows = [s for s in ledger.steps() if s.phase == "jobs"]
        assert [(r.action, r.status, r.targets) for r in rows] == [
            ("steer", "shadow", ["1"]),
            ("defer", "shadow", ["1"]),
        ]
        assert rows[1].intent["begin_at"] == "2026-12-01T15:00:00Z"
        assert ledger.jobs() == []


def test_pool_not_ready_waits_then_failsafe_release_at_latest_safe_start(tmp_path: Path) -> None:
    fake = FakeJobActuator([_job("1")], cluster="c1")  # lss = 12 + 1 + 6 - 1 = 18:00
    plan = _plan(("1", "p-main", T0 + 2 * H))
    with Ledger.open(tmp_path) as ledger:
        _step(fake, plan, ledger, T0)
        assert fake.jobs["1"].begin_at == T0 + 2 * H
        # 14:00: planned start reached but the pool's nodes are not up: waits until the next step
        rep = _step(
            fake,
            plan,
            ledger,
            T0 + 2 * H - timedelta(seconds=1) + timedelta(seconds=2),
            ready=False,
        )
        assert [(o.action, o.status) for o in rep.outcomes] == [("defer", "ok")]
        assert fake.jobs["1"].begin_at == T0 + 3 * H + timedelta(seconds=1)
        # ... and never past its latest safe start
        _step(fake, plan, ledger, T0 + 5 * H + timedelta(minutes=30), ready=False)
        assert fake.jobs["1"].begin_at == T0 + 6 * H
        # 18:00, its latest safe start: released although the pool is still not ready — one
        # ledger row and the counter; the next step does not repeat it
        rep = _step(fake, plan, ledger, T0 + 6 * H, ready=False)
        assert [(o.action, o.status) for o in rep.outcomes] == [("failsafe_release", "ok")]
        assert rep.counts == {"failsafe_release_ok": 1}
        assert (
            _step(fake, plan, ledger, T0 + 6 * H + timedelta(minutes=1), ready=False).outcomes == []
        )
        assert fake.start_due(T0 + 6 * H + timedelta(minutes=1)) == ["1"]


def test_failsafe_release_when_deferred_past_a_latest_safe_start_that_moved(tmp_path: Path) -> None:
    """The job got a deadline after being deferred: at its new latest safe start it is released
    even though the pool is not ready (ledger row + counter)."""
    fake = FakeJobActuator([_job("1")], cluster="c1")
    plan = _plan(("1", "p-main", T0 + 4 * H))
    with Ledger.open(tmp_path) as ledger:
        _step(fake, plan, ledger, T0)
        assert fake.jobs["1"].begin_at == T0 + 4 * H
        import dataclasses

        fake.jobs["1"] = dataclasses.replace(fake.jobs["1"], deadline=T0 + 3 * H)  # lss 14:00
        plan2 = _plan(("1", "p-main", T0 + 2 * H))
        rep = _step(fake, plan2, ledger, T0 + 2 * H, ready=False)
        assert [(o.action, o.status) for o in rep.outcomes] == [("failsafe_release", "ok")]
        assert rep.counts == {"failsafe_release_ok": 1}
        assert fake.jobs["1"].begin_at == T0 + 2 * H
        row = [s for s in ledger.steps() if s.action == "failsafe_release"][0]
        assert "not ready at the latest safe start" in row.intent["reason"]


def test_hold_mode_schedules_release_in_ledger_and_releases_when_due(tmp_path: Path) -> None:
    fake = FakeJobActuator([_job("1")], cluster="c1")
    plan = _plan(("1", "p-main", T0 + 2 * H))
    with Ledger.open(tmp_path) as ledger:
        _step(fake, plan, ledger, T0, defer_with="hold")
        assert fake.jobs["1"].held and fake.jobs["1"].begin_at == T0
        rec = ledger.job("c1", "1")
        assert rec is not None and rec.held_by_us and rec.release_at == T0 + 2 * H
        # a new plan without the job: released (greencpn never keeps a job it held for nothing)
        rep = _step(fake, {"jobs": []}, ledger, T0 + H, defer_with="hold")
        assert [(o.action, o.status) for o in rep.outcomes] == [("release", "ok")]
        assert not fake.jobs["1"].held
        # held again, pool never ready: released at the latest safe start (18:00)
        _step(fake, _plan(("1", "p-main", T0 + 2 * H)), ledger, T0 + H, defer_with="hold")
        assert fake.jobs["1"].held
        rep = _step(fake, plan, ledger, T0 + 6 * H, ready=False, defer_with="hold")
        assert [(o.action, o.status) for o in rep.outcomes] == [("failsafe_release", "ok")]
        assert not fake.jobs["1"].held


def test_undo_restores_every_touched_field_and_skips_started_jobs(tmp_path: Path) -> None:
    fake = FakeJobActuator([_job("1"), _job("2", begin_at=T0 + H)], cluster="c1")
    plan = _plan(("1", "p-green", T0 + 3 * H), ("2", "p-green", T0 + 3 * H))
    with Ledger.open(tmp_path) as ledger:
        _step(fake, plan, ledger, T0)
        assert fake.jobs["2"].begin_at == T0 + 3 * H and fake.jobs["2"].partition == "green"
        fake.jobs["1"] = __import__("dataclasses").replace(
            fake.jobs["1"], pending=False, state="RUNNING"
        )
        apply_id = ledger.begin_apply(T0, plan_path=None, slot=None, slot_start=None, mode="undo")
        rep = undo_all_jobs(
            _backends(fake), ledger, apply_id, clock_now=lambda: T0 + timedelta(minutes=1)
        )
        assert [(o.job_id, o.status) for o in rep.outcomes] == [("1", "skipped"), ("2", "ok")]
        # job 2's own begin time (13:00, still ahead) and partition are back
        assert fake.jobs["2"].begin_at == T0 + H and fake.jobs["2"].partition == "main"
        rec = ledger.job("c1", "2")
        assert rec is not None and rec.restored_at is not None
        # undo twice is a no-op
        rep = undo_all_jobs(
            _backends(fake), ledger, apply_id, clock_now=lambda: T0 + timedelta(minutes=2)
        )
        assert rep.outcomes == []


def test_scheduler_down_is_reported_not_raised(tmp_path: Path) -> None:
    fake = FakeJobActuator([_job("1")], cluster="c1")
    fake.fail("pending_jobs", JobActuatorTemporaryError("slurmctld unreachable"))
    with Ledger.open(tmp_path) as ledger:
        rep = _step(fake, _plan(("1", "p-main", T0 + 2 * H)), ledger, T0)
        assert [(o.action, o.status) for o in rep.outcomes] == [("read_pending", "error")]
        fake.clear_failures()
        fake.fail("defer", JobActuatorTemporaryError("busy"), job_id="1")
        rep = _step(fake, _plan(("1", "p-main", T0 + 2 * H)), ledger, T0)
        assert [(o.action, o.status) for o in rep.outcomes] == [("defer", "error")]
        assert fake.jobs["1"].begin_at == T0


def test_decide_leaves_a_later_user_begin_time_alone() -> None:
    job = _job("1", begin_at=T0 + 5 * H)
    acts = decide(
        [job],
        {"1": PlannedJob("1", "s1", "p", T0 + 2 * H)},
        JobPolicy(),
        now=T0,
        next_step_at=T0 + H,
        pool_ready=lambda p: True,
        targets={},
        records={},
    )
    assert acts == []


def test_config_is_strict() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="no partition"):
        JobActuationConfig.model_validate(
            {
                "clusters": [
                    {
                        "name": "c",
                        "kind": "slurm",
                        "sites": ["s"],
                        "steer": "partition",
                        "pools": {"p": {"features": "x"}},
                    }
                ]
            }
        )
    with pytest.raises(ValidationError, match="needs command"):
        JobActuationConfig.model_validate(
            {"clusters": [{"name": "c", "kind": "command", "sites": ["s"]}]}
        )
    with pytest.raises(ValidationError, match="Extra inputs"):
        JobActuationConfig.model_validate(
            {"clusters": [{"name": "c", "kind": "fake", "sites": ["s"], "typo": 1}]}
        )
    assert SteerTarget(SteerMode.FEATURES, features="a100").value == "a100"


FLEET = """
name = "x"
[carbon]
file = "carbon.csv"
[[sites]]
name = "s1"
zone = "DE"
pue = 1.2
[[pools]]
name = "p"
site = "s1"
nodes = 1
gpu_model = "A100-SXM4-40GB"
gpus_per_node = 1
node_idle_w = 400.0
[[job_actuation.clusters]]
name = "c"
kind = "slurm"
sites = ["s1"]
steer = "partition"
"""


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("", "field 'job_actuation.clusters[0](c).pools': steer = \"partition\" but pool(s) ['p']"),
        ("steer_typo = 1\n", "field 'job_actuation.clusters[0](c).steer_typo': Extra inputs"),
        ('[job_actuation.clusters.pools.q]\npartition = "x"\n', "pools.q': unknown pool 'q'"),
    ],
)
def test_bad_job_actuation_config_names_file_field_and_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, needle: str
) -> None:
    from greencpn.cli import main

    (tmp_path / "carbon.csv").write_text("timestamp,DE\n")
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(FLEET + extra)
    plan = tmp_path / "plan.json"
    plan.write_text('{"schema": "greencpn.plan/1", "horizon": {}, "pools": []}')
    assert main(["apply", str(plan), "--config", str(cfg), "--undo-jobs"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"greencpn: error: {cfg}: ") and needle in err and "fix:" in err
