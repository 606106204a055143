"""The daemon on a simulated clock with the fake controller: days of steps, no sleeping."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_controller import FakeController, write_fleet

from greencpn.clock import SimClock
from greencpn.controller.types import Levers, Mode
from greencpn.daemon.cli import collect_status, format_status
from greencpn.daemon.core import Daemon

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def make(tmp: Path, control: str = "", clock: SimClock | None = None, **fake: Any) -> Daemon:
    cfg = write_fleet(tmp / "fleet")
    if control:
        (tmp / "fleet" / "control.toml").write_text(control)
    clock = clock or SimClock(T0 + timedelta(minutes=7))
    made: list[FakeController] = []

    def factory(path: Path, **kw: Any) -> FakeController:
        c = FakeController(path, **kw, **fake)
        made.append(c)
        return c

    d = Daemon(cfg, state_dir=tmp / "state", clock=clock, controller_factory=factory)
    d._made = made  # type: ignore[attr-defined]
    return d


def test_three_days_of_hourly_steps_on_slot_boundaries_plus_offset(tmp_path: Path) -> None:
    clock = SimClock(T0 + timedelta(minutes=7))
    d = make(tmp_path, "[daemon]\noffset_s = 90\n", clock)
    results = d.simulate(clock, T0 + timedelta(days=3, minutes=5))
    # first fire is the next boundary + 90 s after 00:07, i.e. 01:01:30; last is day 3 00:01:30
    assert len(results) == 72
    fired = [r.started_at for r in results]
    assert fired[0] == T0 + timedelta(hours=1, seconds=90)
    assert all(b - a == timedelta(hours=1) for a, b in zip(fired, fired[1:], strict=False))
    assert [r.slot_start for r in results] == [T0 + timedelta(hours=h) for h in range(1, 73)]
    # shadow by default: the controller was built in shadow mode and applied nothing
    ctl = d.controller
    assert ctl.mode is Mode.SHADOW and ctl.applied == []
    assert {a["status"] for r in results for a in r.actions} == {"shadow"}
    # savings: 1.5 kg per slot, each slot once; exported and persisted
    assert d.state["savings"]["kg_co2e"] == pytest.approx(72 * 1.5)
    assert d.metrics.saved_co2e._value.get() == pytest.approx(108.0)
    st = json.loads((tmp_path / "state" / "daemon.json").read_text())
    assert st["savings"]["kwh"] == pytest.approx(144.0)
    assert len(st["steps"]) == 50 and st["steps"][-1]["step_id"] == 72


def test_extra_step_in_the_same_slot_replaces_that_slots_savings(tmp_path: Path) -> None:
    clock = SimClock(T0 + timedelta(minutes=1))
    d = make(tmp_path, clock=clock)
    d.run_step("schedule")
    d.controller.saved_kg_per_step = 4.0
    clock.advance(timedelta(minutes=20))
    d.run_step("sighup")  # same slot: its 1.5 kg is replaced by 4.0, not added
    assert d.state["savings"]["kg_co2e"] == pytest.approx(4.0)
    clock.advance(timedelta(hours=1))
    d.run_step("schedule")
    assert d.state["savings"]["kg_co2e"] == pytest.approx(8.0)


def test_savings_survive_a_restart(tmp_path: Path) -> None:
    clock = SimClock(T0 + timedelta(minutes=7))
    d = make(tmp_path, clock=clock)
    d.simulate(clock, T0 + timedelta(hours=5, minutes=1))
    d2 = make(tmp_path, clock=clock)
    assert d2.state["savings"]["kg_co2e"] == pytest.approx(5 * 1.5)
    d2.simulate(clock, T0 + timedelta(hours=7, minutes=1))
    assert d2.state["savings"]["kg_co2e"] == pytest.approx(7 * 1.5)
    assert d2.metrics.saved_co2e._value.get() == pytest.approx(10.5)


def test_enforce_with_levers_passes_mode_and_levers_and_acts(tmp_path: Path) -> None:
    control = (
        "[control]\nallow_actuation = true\n"
        "[daemon]\nmode = 'enforce'\nonly_listed_pools = true\n"
        "[daemon.levers.p1]\ncaps = true\npower = false\njobs = false\n"
    )
    clock = SimClock(T0)
    d = make(tmp_path, control, clock)
    ctl = d.controller
    assert ctl.mode is Mode.ENFORCE
    assert ctl.levers == {"p1": Levers(True, False, False), "p2": Levers(False, False, False)}
    d.simulate(clock, T0 + timedelta(hours=3))  # fires 00:00:30, 01:00:30, 02:00:30
    # p1 caps applied each slot (epoch 0: single instance); p2 opted out -> shadow only
    assert [(a["target"], a["epoch"]) for a in ctl.applied] == [("p1", 0)] * 3
    assert d.metrics.enforce._value.get() == 1


def test_allow_actuation_alone_means_enforce(tmp_path: Path) -> None:
    d = make(tmp_path, "[control]\nallow_actuation = true\n")
    assert d.controller.mode is Mode.ENFORCE and d.settings.mode == "enforce"


def test_bad_config_on_reload_keeps_the_old_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = SimClock(T0)
    d = make(tmp_path, clock=clock)
    old = d.controller
    cfg = tmp_path / "fleet" / "fleet.toml"
    good = cfg.read_text()
    cfg.write_text(good.replace("pue = 1.2", "pue = 9"))
    with caplog.at_level(logging.ERROR, logger="greencpn.daemon"):
        err = d.reload()
    assert err is not None and "pue" in err and "fleet.toml" in err
    assert "config reload refused, keeping the previous config" in caplog.text
    assert d.metrics.reload_ok._value.get() == 0
    assert d.metrics.errors.labels(type="config_reload")._value.get() == 1
    assert d.controller is old and old.reloads == 0
    res = d.run_step("sighup")  # the old config still steps
    assert res is not None and res.status == "ok"
    # a bad control.toml is refused the same way
    (tmp_path / "fleet" / "control.toml").write_text("[daemon]\nmode = 'yolo'\n")
    err = d.reload()
    assert err is not None and "daemon.mode" in err
    assert d.settings.mode == "shadow"
    # fixed: reload works again, the metric says so
    cfg.write_text(good)
    (tmp_path / "fleet" / "control.toml").write_text("[daemon]\noffset_s = 10\n")
    assert d.reload() is None
    assert d.metrics.reload_ok._value.get() == 1 and old.reloads == 1
    assert d.trigger.offset_s == 10


def test_reload_to_enforce_builds_a_new_controller(tmp_path: Path) -> None:
    d = make(tmp_path)
    old = d.controller
    (tmp_path / "fleet" / "control.toml").write_text(
        "[control]\nallow_actuation = true\n[daemon]\nmode = 'enforce'\n"
    )
    assert d.reload() is None
    assert d.controller is not old and d.controller.mode is Mode.ENFORCE


def test_a_crashing_controller_is_counted_and_the_daemon_goes_on(tmp_path: Path) -> None:
    clock = SimClock(T0)
    d = make(tmp_path, clock=clock, crash_on_step=2)
    results = d.simulate(clock, T0 + timedelta(hours=3))
    assert [r is None for r in results] == [False, True, False]
    assert d.metrics.errors.labels(type="step")._value.get() == 1
    assert d.state["failures"][-1]["message"] == "RuntimeError: injected controller crash"


def test_readyz_follows_the_last_step(tmp_path: Path) -> None:
    clock = SimClock(T0)
    d = make(tmp_path, clock=clock)
    ok, detail = d.ready()
    assert not ok and detail["reason"] == "no step finished yet"
    d.run_step()
    assert d.ready()[0]
    clock.advance(timedelta(hours=3))  # 2 periods + 300 s grace = 2 h 5 min
    ok, detail = d.ready()
    assert not ok and "ago" in detail["reason"]


def test_status_shows_mode_steps_savings_and_failures(tmp_path: Path) -> None:
    clock = SimClock(T0)
    d = make(tmp_path, clock=clock, crash_on_step=2)
    d.simulate(clock, T0 + timedelta(hours=4))
    doc = collect_status(tmp_path / "state", steps=3)
    assert doc["mode"] == "shadow"
    assert [s["step_id"] for s in doc["last_steps"]] == [1, 3, 4]
    assert doc["savings"]["kg_co2e"] == pytest.approx(4.5)
    assert doc["jobs"] == {"held": 2, "released": 1, "shifted": 3}
    assert doc["failures"][-1]["type"] == "step"
    text = format_status(doc)
    assert "mode        shadow" in text and "4.5 kg CO2e" in text
    assert "single instance (no etcd)" in text and "injected controller crash" in text


def test_etcd_unreachable_the_daemon_steps_but_acts_on_nothing_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from conftest import free_port

    control = (
        "[control]\nallow_actuation = true\n[daemon]\nmode = 'enforce'\n"
        f"[daemon.etcd]\nendpoints = ['127.0.0.1:{free_port()}']\nttl_s = 5\ntimeout_s = 0.5\n"
    )
    clock = SimClock(T0)
    d = make(tmp_path, control, clock)
    assert d.elector.campaign_once() is False
    with caplog.at_level(logging.WARNING, logger="greencpn.daemon"):
        res = d.run_step()
    assert res is not None and d.controller.applied == []
    assert {a["status"] for a in res.actions} == {"skipped"}
    assert "not the leader — etcd unreachable" in caplog.text
    assert "shadow only, no action will be taken" in caplog.text
    assert d.metrics.leader._value.get() == 0
    assert d.metrics.errors.labels(type="not_leader")._value.get() == 1
    assert d.metrics.errors.labels(type="leader")._value.get() == 1
    st = json.loads((tmp_path / "state" / "daemon.json").read_text())
    assert st["leader"]["etcd_reachable"] is False and st["leader"]["is_leader"] is False
    assert st["failures"] == []  # a non-leader's refused actions are expected, not failures


def test_steps_that_outlast_slots_are_coalesced_and_the_clock_never_goes_back(
    tmp_path: Path,
) -> None:
    clock = SimClock(T0)
    # each step "takes" 2 h 2 min (waits inside the step advance the simulated clock)
    d = make(
        tmp_path,
        "[daemon]\nmisfire_grace_s = 300\n",
        clock,
        step_takes=timedelta(hours=2, minutes=2),
    )
    results = d.simulate(clock, T0 + timedelta(hours=10))
    starts = [r.started_at for r in results]
    assert starts == sorted(starts)
    assert all(
        b - a >= timedelta(hours=2, minutes=2) for a, b in zip(starts, starts[1:], strict=False)
    )
    # 00:00:30 runs until 02:02:30: the 01:00:30 and 02:00:30 fires coalesce into one step at
    # 02:02:30 (2 min late, inside the 5 min grace), and so on
    assert starts[:3] == [
        T0 + timedelta(seconds=30),
        T0 + timedelta(hours=2, minutes=2, seconds=30),
        T0 + timedelta(hours=4, minutes=4, seconds=30),
    ]
    # grace 60 s: a 2 min late coalesced fire is skipped; the next on-time one runs
    clock2 = SimClock(T0)
    d2 = make(
        tmp_path / "b",
        "[daemon]\nmisfire_grace_s = 60\n",
        clock2,
        step_takes=timedelta(hours=1, minutes=2),
    )
    r2 = d2.simulate(clock2, T0 + timedelta(hours=6))
    assert [r.started_at for r in r2] == [
        T0 + timedelta(seconds=30),
        T0 + timedelta(hours=2, seconds=30),
        T0 + timedelta(hours=4, seconds=30),
    ]
