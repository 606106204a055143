"""The job phase inside ``apply_plan``: fake nodes (tests/actuate/apply World) and the fake job
actuator. A pool whose nodes are still booting is "not ready", so a job due now waits until the
next step; once its nodes are on it is left to start; shadow mode records and changes nothing."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from greencpn.actuate.base import NodePower
from greencpn.actuate.jobs import JobBackends, PendingJob
from greencpn.actuate.jobs.fake import FakeJobActuator
from greencpn.config import JobActuationConfig
from tests.actuate.apply.conftest import T0, World


def _jobs(job_start_min: int) -> tuple[FakeJobActuator, JobBackends]:
    fake = FakeJobActuator(
        [PendingJob(id="42", cluster="c1", gpus=2, time_limit_s=3600.0, submit_at=T0, begin_at=T0)],
        cluster="c1",
    )
    cfg = JobActuationConfig.model_validate(
        {"default_slack_h": 6, "clusters": [{"name": "c1", "kind": "fake", "sites": ["s1"]}]}
    )
    return fake, JobBackends(config=cfg, actuators={"c1": fake})


def _plan(world: World, start_min: int) -> dict[str, object]:
    plan = world.plan({"a": [(4, None), (4, None), (4, None)]})
    start = (T0 + timedelta(minutes=start_min)).isoformat().replace("+00:00", "Z")
    plan["jobs"] = [{"id": "42", "site": "s1", "pool": "a", "start": start}]
    return plan


def test_job_waits_for_a_booting_pool_until_the_next_step(tmp_path: Path) -> None:
    world = World(tmp_path, [{"name": "a", "nodes": 4}], node_power=NodePower.OFF)
    fake, backends = _jobs(0)
    settings = dataclasses.replace(world.settings, wait_for_boot=False)
    from greencpn.actuate.apply import apply_plan

    rep = apply_plan(
        _plan(world, 0),
        "now",
        world.config,
        world.backends(),
        clock=world.clock,
        state_dir=world.state_dir,
        settings=settings,
        sleep=world.sleep,
        jobs=backends,
    )
    assert [o.action for o in rep.jobs.outcomes] == ["defer"]
    assert fake.jobs["42"].begin_at == T0 + timedelta(hours=1)  # the slot's end: the next step
    defer = [s for s in world.ledger().steps() if s.action == "defer"]
    assert (
        defer[0].intent["reason"].startswith("pool a not ready: waits until 2026-11-25T11:00:00Z")
    )
    summary = [s for s in world.ledger().steps() if s.action == "summary"]
    assert summary and summary[0].intent["counts"] == {"defer_ok": 1}
    assert summary[0].intent["pools_ready"] == {"a": False}
    assert "jobs        defer" in rep.format()


def test_job_deferred_then_left_to_start_once_the_pool_is_up(tmp_path: Path) -> None:
    world = World(tmp_path, [{"name": "a", "nodes": 4}], node_power=NodePower.ON)
    fake, backends = _jobs(30)
    plan = _plan(world, 30)
    from greencpn.actuate.apply import apply_plan

    rep = apply_plan(
        plan,
        "now",
        world.config,
        world.backends(),
        clock=world.clock,
        state_dir=world.state_dir,
        settings=world.settings,
        sleep=world.sleep,
        jobs=backends,
    )
    assert [(o.action, o.status) for o in rep.jobs.outcomes] == [("defer", "ok")]
    assert fake.jobs["42"].begin_at == T0 + timedelta(minutes=30)
    world.clock.set(T0 + timedelta(minutes=30))
    rep = apply_plan(
        plan,
        "now",
        world.config,
        world.backends(),
        clock=world.clock,
        state_dir=world.state_dir,
        settings=world.settings,
        sleep=world.sleep,
        jobs=backends,
    )
    assert rep.jobs.outcomes == []  # begin time == now, pool ready: the scheduler starts it
    assert fake.start_due(world.clock.now()) == ["42"]


def test_shadow_apply_records_job_rows_only(tmp_path: Path) -> None:
    world = World(tmp_path, [{"name": "a", "nodes": 4}], node_power=NodePower.ON)
    fake, backends = _jobs(30)
    settings = dataclasses.replace(world.settings, allow_actuation=False)
    from greencpn.actuate.apply import apply_plan

    rep = apply_plan(
        _plan(world, 30),
        "now",
        world.config,
        world.backends(),
        clock=world.clock,
        state_dir=world.state_dir,
        settings=settings,
        sleep=world.sleep,
        jobs=backends,
    )
    assert rep.mode == "shadow"
    assert [(o.action, o.status) for o in rep.jobs.outcomes] == [("defer", "shadow")]
    assert fake.jobs["42"].begin_at == T0 and world.ledger().jobs() == []
