"""Whole-apply behaviour: idempotence, dry run, shadow mode, GPU faults, order, interruptions."""

from __future__ import annotations

import pytest

from greencpn.actuate.base import NodePower
from greencpn.actuate.gpu import errors as gpu_mod
from greencpn.actuate.ledger import Ledger
from greencpn.actuate.safety import ControlSettings
from greencpn.errors import ConfigError, PermanentError, TemporaryError


def test_reapplying_the_same_plan_changes_nothing_and_says_so(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=3)])
    plan = w.plan({"p": [(2, 250.0)] * 3})
    rep = w.apply(plan)
    assert rep.outcome == "applied" and rep.changed
    n_ops = len(w.ops("drain", "power_off", "power_on", "resume", "set_cap"))
    rep2 = w.apply(plan)
    assert rep2.outcome == "nothing_to_do" and not rep2.changed and rep2.exit_code == 0
    assert len(w.ops("drain", "power_off", "power_on", "resume", "set_cap")) == n_ops
    assert "nothing to do: the fleet already matches the plan" in w.printed[-1]
    assert "nothing changed" in rep2.format()


def test_dry_run_changes_nothing_and_writes_nothing(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=3)], gpu_limit_w=400.0)
    plan = w.plan({"p": [(1, 200.0)] * 3})
    rep = w.apply(plan, dry_run=True)
    assert rep.mode == "dry-run" and rep.exit_code == 0
    assert {fn.power for fn in w.hooks["p"].nodes.values()} == {NodePower.ON}
    assert all(w.caps(n) == [400.0, 400.0] for n in ("pn1", "pn2", "pn3"))
    assert w.ops("drain", "power_off", "power_on", "resume", "set_cap") == []
    assert not w.state_dir.exists()  # not even the ledger was created
    d = rep.diffs[0]
    assert d.power_off == ["pn1", "pn2"] and len(d.cap_lower) == 2  # pn3 stays: its 2 GPUs
    assert "mode: dry-run" in w.printed[0] and "dry run: nothing changed" in rep.format()


def test_shadow_mode_records_but_does_not_act(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2)])
    shadow = ControlSettings(**{**w.settings.__dict__, "allow_actuation": False})
    rep = w.apply(w.plan({"p": [(1, 300.0)] * 3}), settings=shadow)
    assert rep.mode == "shadow" and rep.exit_code == 0
    assert w.ops("drain", "power_off", "set_cap") == []
    led = w.ledger()
    assert [a.outcome for a in led.applies()] == ["shadow"]
    assert {(s.action, s.status) for s in led.steps()} == {
        ("set_power_cap", "shadow"),
        ("power_off", "shadow"),
    }
    assert "shadow mode: nothing changed" in rep.format()


def test_gpu_error_mid_apply_rolls_back_the_pool_and_records_it(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2), dict(name="q", nodes=2)], gpu_limit_w=400.0)
    w.hooks["q"].set("qn2", power=NodePower.OFF)
    plan = w.plan({"p": [(2, 300.0)] * 3, "q": [(2, 400.0)] * 3})
    w.gpu("pn1")
    w.gpu("pn2").inject_error("set_limit", gpu_mod.NVML_ERROR_GPU_IS_LOST)  # pn2:gpu0 fails
    rep = w.apply(plan)
    # pn1's two GPUs had been set to 300 W, then were restored to 400 W
    assert w.ops("set_cap") == [
        ("set_cap", "pn1:gpu0", 300.0),
        ("set_cap", "pn1:gpu1", 300.0),
        ("set_cap", "pn2:gpu0", 300.0),
        ("set_cap", "pn1:gpu1", 400.0),
        ("set_cap", "pn1:gpu0", 400.0),
    ]
    assert w.caps("pn1") == [400.0, 400.0] and w.caps("pn2") == [400.0, 400.0]
    # same site: power-raising steps are skipped (qn2 stays off)
    assert w.hooks["q"].nodes["qn2"].power == NodePower.OFF
    assert rep.outcome == "partial" and rep.exit_code == 1
    led = w.ledger()
    steps = led.steps(rep.apply_id)
    assert [s.status for s in steps if s.status == "pending"] == []
    cap = next(s for s in steps if s.action == "set_power_cap")
    assert cap.status == "error" and cap.result["failed_at"] == "pn2:gpu0"
    assert "GpuLostError" in cap.result["error"]
    assert cap.result["set_then_rolled_back"] == ["pn1:gpu1", "pn1:gpu0"]
    rb = next(s for s in steps if s.action == "rollback_power_cap")
    assert rb.status == "ok" and rb.result["restored"] == ["pn1:gpu1", "pn1:gpu0"]
    skip = next(s for s in steps if s.action == "power_on")
    assert (
        skip.status == "skipped"
        and "power-reducing step failed at site s1" in skip.intent["message"]
    )
    assert led.applies()[-1].outcome == "partial"


def test_failed_rollback_is_recorded_with_the_caps_left_behind(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2, gpus_per_node=1)], gpu_limit_w=400.0)
    plan = w.plan({"p": [(2, 300.0)] * 3})
    w.gpu("pn2").inject_error("set_limit", gpu_mod.NVML_ERROR_NO_PERMISSION)
    # pn1 is set to 300 W, pn2 fails, and the rollback of pn1 (2nd call) fails too
    orig = w.gpu("pn1").set_power_limit_w
    calls = []

    def flaky(index, watts, **kw):  # type: ignore[no-untyped-def]
        calls.append(watts)
        if len(calls) == 2:
            raise TemporaryError("GPU fell off the bus")
        return orig(index, watts, **kw)

    w.gpu("pn1").set_power_limit_w = flaky  # type: ignore[method-assign]
    rep = w.apply(plan)
    assert w.caps("pn1") == [300.0]  # could not restore
    steps = w.ledger().steps(rep.apply_id)
    rb = next(s for s in steps if s.action == "rollback_power_cap")
    assert rb.status == "error" and rb.result["still_at_new_cap_w"] == {"pn1:gpu0": 300.0}
    assert any(s.action == "rollback_power_cap" and s.status == "error" for s in rep.steps)


def test_order_of_operations_from_the_call_log(make_world):  # type: ignore[no-untyped-def]
    # p: lower caps 400→300 and switch one node off; q: switch one node on, raise 200→300.
    w = make_world(
        [dict(name="p", nodes=2, gpus_per_node=1), dict(name="q", nodes=2, gpus_per_node=1)]
    )
    w.hooks["q"].set("qn2", power=NodePower.OFF)
    for g in w.gpu("qn1").gpus:
        g.limit_w = 200.0
    plan = w.plan({"p": [(1, 300.0)] * 3, "q": [(2, 300.0)] * 3})
    rep = w.apply(plan)
    assert rep.outcome == "applied", rep.format()
    assert w.ops("drain", "power_off", "power_on", "resume", "set_cap") == [
        ("set_cap", "pn2:gpu0", 300.0),  # 1. lower caps (pn1 is the one going off)
        ("drain", "pn1"),  # 2. drain
        ("power_off", "pn1"),  # 3. power off
        ("power_on", "qn2"),  # 4. power on
        ("set_cap", "qn1:gpu0", 300.0),  # 7. raise caps …
        ("set_cap", "qn2:gpu0", 300.0),  # … and cap the freshly booted node (default 400 → 300)
    ]
    assert [s.phase for s in rep.steps] == [
        "lower_caps",
        "drain",
        "power_off",
        "power_on",
        "wait_boot",
        "raise_caps",
    ]


def test_hook_error_is_recorded_with_the_observed_state(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=3)])
    w.hooks["p"].fail("power_off", PermanentError("BMC said no"), node="pn2")
    rep = w.apply(w.plan({"p": [(1, None)] * 3}))
    # the fake switched pn1 before failing on pn2: the ledger says so
    step = next(s for s in w.ledger().steps(rep.apply_id) if s.action == "power_off")
    assert step.status == "error" and step.result["observed_after"] == {"pn1": "off", "pn2": "on"}
    # pn2 stayed on and is given back to the scheduler; pn1 is known to be off
    assert w.hooks["p"].nodes["pn2"].drained is False
    assert w.ledger().node("pn1").power == "off" and w.ledger().node("pn1").off_since is not None
    assert rep.exit_code == 1 and "BMC said no" in rep.format()


def test_interrupted_apply_is_reported_and_closed(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=1)])
    with Ledger.open(w.state_dir) as led:  # an apply that crashed after writing its intent
        aid = led.begin_apply(
            w.clock.now(), plan_path="old.json", slot=0, slot_start=None, mode="act"
        )
        led.intent(
            aid, w.clock.now(), phase="power_off", action="power_off", pool="p", targets=["pn1"]
        )
    rep = w.apply(w.plan({"p": [(1, None)] * 3}))
    assert any("apply #1" in m and "never finished" in m for m in rep.interrupted)
    assert any("power_off on pn1 has no recorded result" in m for m in rep.interrupted)
    led = w.ledger()
    assert led.applies()[0].outcome == "interrupted"
    assert led.unfinished() == ([], [])


def test_second_apply_at_the_same_time_is_refused(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=1)])
    with Ledger.open(w.state_dir), pytest.raises(TemporaryError, match="another greencpn apply"):
        w.apply(w.plan({"p": [(1, None)] * 3}))


def test_slot_resolution(make_world):  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from greencpn.actuate.apply import resolve_slot

    w = make_world([dict(name="p", nodes=1)])
    plan = w.plan({"p": [(1, None)] * 3})
    w.clock.advance(timedelta(minutes=90))
    assert resolve_slot(plan, "now", w.clock).index == 1
    assert resolve_slot(plan, "2", w.clock).index == 2
    with pytest.raises(ConfigError, match="outside 0..2"):
        resolve_slot(plan, 3, w.clock)
    w.clock.advance(timedelta(hours=5))
    with pytest.raises(ConfigError, match="outside the plan's horizon"):
        resolve_slot(plan, "now", w.clock)
    with pytest.raises(ConfigError, match="is not a slot"):
        resolve_slot(plan, "soon", w.clock)


def test_cap_outside_device_range_is_left_and_noted(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=1, gpus_per_node=1)])
    rep = w.apply(w.plan({"p": [(1, 50.0)] * 3}))
    assert w.caps("pn1") == [400.0] and not w.ops("set_cap")
    assert "outside the device range 100–400 W" in "\n".join(rep.diffs[0].notes)


def test_ledger_from_a_newer_greencpn_is_refused(tmp_path):  # type: ignore[no-untyped-def]
    import sqlite3

    with Ledger.open(tmp_path) as led:
        assert led.path is not None
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(ConfigError, match="newer than this greencpn"):
        Ledger.open(tmp_path)
    with Ledger.open_readonly(tmp_path) as led:  # reading still works, and the lock was released
        assert led.applies() == []
    with Ledger.open(tmp_path / "other"):
        pass


def test_drain_error_then_next_apply_recovers(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2), dict(name="q", nodes=1)])
    w.hooks["q"].set("qn1", power=NodePower.OFF)
    w.hooks["p"].fail("drain", TemporaryError("slurmctld not answering"), node="pn1", times=1)
    plan = w.plan({"p": [(1, None)] * 3, "q": [(1, None)] * 3})
    rep = w.apply(plan)
    assert rep.exit_code == 1
    assert [(s.action, s.status) for s in rep.steps] == [
        ("drain", "error"),
        ("power_on", "skipped"),
    ]  # same site s1: no power-raising step
    assert {fn.power for fn in w.hooks["p"].nodes.values()} == {NodePower.ON}
    assert w.ledger().node("pn1").drained_by_us  # marked before the call, kept after the error
    rep = w.apply(plan)
    assert rep.outcome == "applied"
    assert w.hooks["p"].nodes["pn1"].power == NodePower.OFF
    assert w.hooks["q"].nodes["qn1"].power == NodePower.ON
