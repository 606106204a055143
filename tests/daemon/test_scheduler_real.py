"""The real APScheduler on the wall clock with a 1 s period (fake controller): steps start on
the boundaries plus the offset, one slot each, and never overlap when a step outlasts the
period (max_instances = 1, one worker, coalesce)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fake_controller import FakeController, write_fleet

from greencpn.clock import SystemClock
from greencpn.daemon.core import Daemon


def _daemon(tmp: Path, control: str, **fake: Any) -> Daemon:
    cfg = write_fleet(tmp / "fleet")
    (tmp / "fleet" / "control.toml").write_text(control + "\n[daemon.http]\nenabled = false\n")
    return Daemon(
        cfg,
        state_dir=tmp / "state",
        clock=SystemClock(),
        controller_factory=lambda p, **kw: FakeController(p, slot_s=1.0, **kw, **fake),
    )


def _scheduled(d: Daemon) -> list[Any]:
    return [r for r in d.controller.steps if r is not None]


@pytest.mark.slow
def test_steps_fire_on_the_boundaries_plus_offset(tmp_path: Path) -> None:
    d = _daemon(tmp_path, "[daemon]\nperiod_s = 1\noffset_s = 0.25\nmisfire_grace_s = 1")
    d.start_background()
    try:
        t0 = time.monotonic()
        while len(_scheduled(d)) < 4:
            assert time.monotonic() - t0 < 15, "fewer than 4 steps in 15 s"
            time.sleep(0.05)
    finally:
        d.shutdown("test over")
    steps = _scheduled(d)[:4]
    for r in steps:
        frac = r.started_at.timestamp() % 1.0
        assert 0.25 <= frac < 0.85, f"step started {frac:.3f} s into its second (offset 0.25)"
    slots = [r.slot_start.timestamp() for r in steps]
    assert [b - a for a, b in zip(slots, slots[1:], strict=False)] == [1.0, 1.0, 1.0]


@pytest.mark.slow
def test_a_step_longer_than_the_period_never_overlaps_the_next(tmp_path: Path) -> None:
    control = (
        "[control]\nallow_actuation = true\n"
        "[daemon]\nmode = 'enforce'\nperiod_s = 1\noffset_s = 0\nmisfire_grace_s = 1"
    )
    d = _daemon(tmp_path, control, action_delay_s=0.8)  # 2 actions: a step takes ~1.6 s
    d.start_background()
    try:
        # until 3 steps have finished (~5 s idle), not a fixed 6 s: the overlap checks below
        # need consecutive steps, however slow a loaded machine makes them
        t0 = time.monotonic()
        while len(_scheduled(d)) < 3:  # a step's record is made when it has finished
            assert time.monotonic() - t0 < 60, "fewer than 3 steps finished in 60 s"
            time.sleep(0.05)
    finally:
        d.shutdown("test over")
    steps = _scheduled(d)
    assert len(steps) >= 3, len(steps)
    for a, b in zip(steps, steps[1:], strict=False):
        assert b.started_at >= a.finished_at, "two steps overlapped"
    # slots are distinct: a late fire ran once for its slot, never twice for one slot
    assert len({r.slot_start for r in steps}) == len(steps)


@pytest.mark.slow
def test_an_extra_step_requested_during_a_step_runs_after_it_and_bursts_coalesce(
    tmp_path: Path,
) -> None:
    control = "[control]\nallow_actuation = true\n[daemon]\nmode = 'enforce'"
    d = _daemon(tmp_path, control, action_delay_s=0.5)  # 2 actions: a step takes ~1 s
    d.start_background()
    try:
        d.request_step("first")
        t0 = time.monotonic()
        while not d.controller.steps and not d.controller.applied:
            assert time.monotonic() - t0 < 10
            time.sleep(0.01)
        time.sleep(0.2)  # the first step is running now
        for why in ("second", "third", "fourth"):  # a burst while the first runs
            d.request_step(why)
        t0 = time.monotonic()
        while len(d.state["steps"]) < 2:
            assert time.monotonic() - t0 < 10, [s["reason"] for s in d.state["steps"]]
            time.sleep(0.05)
        time.sleep(1.5)  # nothing else runs
    finally:
        d.shutdown("test over")
    assert [s["reason"] for s in d.state["steps"]] == ["first", "second"]
