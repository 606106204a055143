"""Safety rules of ``greencpn apply``, each on a tiny hand-checkable fleet of fake nodes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from greencpn.actuate.base import NodePower
from greencpn.actuate.safety import ControlSettings

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def powers(world, pool="p"):  # type: ignore[no-untyped-def]
    return {n: fn.power.value for n, fn in world.hooks[pool].nodes.items()}


def test_running_job_is_never_powered_off(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2)])
    for n in ("pn1", "pn2"):
        w.hooks["p"].run_jobs(n, 1)  # jobs that never end
    rep = w.apply(w.plan({"p": [(1, None)] * 3}))
    assert w.hooks["p"].killed_jobs == 0
    assert powers(w) == {"pn1": "on", "pn2": "on"}
    # pn1 was drained, watched for the whole drain timeout, then resumed and skipped
    assert w.ops("drain", "power_off", "resume") == [("drain", "pn1"), ("resume", "pn1")]
    assert w.hooks["p"].nodes["pn1"].drained is False
    skipped = [s for s in rep.steps if s.status == "skipped"]
    assert [(s.action, s.targets) for s in skipped] == [("power_off", ("pn1",))]
    assert "still running work after 120 s" in skipped[0].message
    assert w.clock.now() == T0 + timedelta(seconds=120)  # the drain timeout, on the sim clock
    assert rep.outcome == "partial" and rep.exit_code == 1


def test_job_that_ends_during_drain_lets_the_node_power_off(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2)])
    w.hooks["p"].run_jobs("pn1", 1, for_s=30)
    w.hooks["p"].run_jobs("pn2", 1)
    rep = w.apply(w.plan({"p": [(1, None)] * 3}))
    assert powers(w) == {"pn1": "off", "pn2": "on"}
    assert w.hooks["p"].killed_jobs == 0
    assert w.ops("drain", "power_off") == [("drain", "pn1"), ("power_off", "pn1")]
    assert rep.exit_code == 0 and rep.outcome == "applied"


def test_idle_nodes_are_chosen_before_busy_ones(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=3)])
    w.hooks["p"].run_jobs("pn1", 2)
    w.apply(w.plan({"p": [(1, None)] * 3}))
    assert powers(w) == {"pn1": "on", "pn2": "off", "pn3": "off"}
    assert w.hooks["p"].killed_jobs == 0


def test_spares_are_kept_on(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=4, spares=2)])
    rep = w.apply(w.plan({"p": [(0, None)] * 3}))
    assert powers(w) == {"pn1": "on", "pn2": "on", "pn3": "off", "pn4": "off"}
    d = rep.diffs[0]
    assert d.target_nodes_on == 2 and d.spares == ["pn1", "pn2"]
    assert "target raised from 0 to 2 nodes on to keep 2 spare(s)" in "\n".join(d.notes)


def test_named_spares_from_control_settings(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=3, spares=1)])
    s = ControlSettings(**{**w.settings.__dict__, "spare_nodes": {"p": ["pn3"]}})
    w.apply(w.plan({"p": [(1, None)] * 3}), settings=s)
    assert powers(w) == {"pn1": "off", "pn2": "off", "pn3": "on"}


def test_min_up_blocks_an_early_power_off(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2, min_up_h=1.0)], node_power=NodePower.OFF)
    # slot 0: both on (started at 10:00, up at 10:01)
    rep = w.apply(w.plan({"p": [(2, None), (1, None), (1, None)]}), slot=0)
    assert powers(w) == {"pn1": "on", "pn2": "on"} and rep.exit_code == 0
    # 10:31 — plan wants one off, but both have been up for 31 min < 1 h
    w.clock.set(w.clock.now().replace(minute=31))
    plan = w.plan({"p": [(2, None), (1, None), (1, None)]})
    rep = w.apply(plan, slot=1, allow_other_slot=True)
    assert powers(w) == {"pn1": "on", "pn2": "on"}
    held = rep.diffs[0].held
    assert [h.node for h in held] == ["pn1", "pn2"]
    assert held[0].reason.startswith("min up 1 h not met (on for 0.52 h)")
    assert not w.ops("power_off")
    # 11:01 — an hour after start: now it may go
    w.clock.set(w.clock.now().replace(hour=11, minute=1))
    w.apply(plan, slot=1, allow_other_slot=True)
    assert sorted(powers(w).values()) == ["off", "on"]


def test_min_down_blocks_an_early_power_on(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2, min_down_h=0.5)])
    plan = w.plan({"p": [(1, None), (2, None), (2, None)]})
    w.apply(plan, slot=0)
    assert powers(w) == {"pn1": "off", "pn2": "on"}
    w.clock.advance(timedelta(minutes=10))
    rep = w.apply(plan, slot=1, allow_other_slot=True)
    assert powers(w) == {"pn1": "off", "pn2": "on"}
    assert rep.diffs[0].held[0].reason.startswith("min down 0.5 h not met")
    w.clock.advance(timedelta(minutes=20))
    w.apply(plan, slot=1, allow_other_slot=True)
    assert powers(w) == {"pn1": "on", "pn2": "on"}


def test_rate_limit_defers_operations_across_applies(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=6)], node_power=NodePower.OFF, boot_delay_s=5)
    s = ControlSettings(
        **{**w.settings.__dict__, "max_power_ops_per_min": 2.0, "power_ops_burst": 2}
    )
    plan = w.plan({"p": [(6, None)] * 3})
    rep = w.apply(plan, settings=s)
    assert list(powers(w).values()).count("on") == 2
    deferred = [x for x in rep.steps if x.status == "deferred"]
    assert len(deferred) == 1 and len(deferred[0].targets) == 4
    assert "rate limit 2/min" in deferred[0].message
    assert rep.exit_code == 1
    # at once again: the bucket (kept in the ledger) is still empty → nothing new
    t = w.clock.now()
    rep = w.apply(plan, settings=s)
    assert list(powers(w).values()).count("on") == 2 and w.clock.now() == t
    # one minute later: two more tokens
    w.clock.advance(timedelta(seconds=60))
    w.apply(plan, settings=s)
    assert list(powers(w).values()).count("on") == 4


def test_boot_timeout_marks_failed_and_never_retries(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2, boot_time_min=2)], node_power=NodePower.OFF)
    w.hooks["p"].set("pn2", never_boots=True)
    plan = w.plan({"p": [(2, None)] * 3})
    rep = w.apply(plan)
    assert powers(w) == {"pn1": "on", "pn2": "booting"}
    assert rep.failed_nodes == ["pn2"] and rep.exit_code == 1
    failed = [s for s in rep.steps if s.action == "mark_failed"]
    assert failed[0].targets == ("pn2",) and "boot timeout" in failed[0].message
    # boot timeout = 2 min boot × factor 2 = 240 s, waited on the sim clock
    assert w.clock.now() == T0 + timedelta(seconds=240)
    rec = w.ledger().node("pn2")
    assert rec.failed and rec.failed_at == T0 + timedelta(seconds=240)
    n_on = len(w.ops("power_on"))
    rep2 = w.apply(plan)
    assert len(w.ops("power_on")) == n_on  # no retry storm
    assert "failed (left alone until cleared): pn2" in "\n".join(rep2.diffs[0].notes)
    # the operator fixes and clears it: the next apply starts it again
    w.hooks["p"].set("pn2", never_boots=False, power=NodePower.OFF)
    from greencpn.actuate.ledger import Ledger

    with Ledger.open(w.state_dir) as led:
        assert led.clear_failed("pn2")
    w.apply(plan)
    assert powers(w) == {"pn1": "on", "pn2": "on"}


def test_boot_timeout_found_by_a_later_apply_when_not_waiting(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=1, boot_time_min=2)], node_power=NodePower.OFF)
    w.hooks["p"].set("pn1", never_boots=True)
    s = ControlSettings(**{**w.settings.__dict__, "wait_for_boot": False})
    plan = w.plan({"p": [(1, None)] * 3})
    rep = w.apply(plan, settings=s)
    assert rep.exit_code == 0 and powers(w) == {"pn1": "booting"}
    w.clock.advance(timedelta(seconds=100))
    rep = w.apply(plan, settings=s)  # still inside the 240 s timeout: nothing to do
    assert not rep.diffs[0].mark_failed and not rep.diffs[0].power_on
    w.clock.advance(timedelta(seconds=200))
    rep = w.apply(plan, settings=s)
    assert [h.node for h in rep.diffs[0].mark_failed] == ["pn1"]
    assert rep.failed_nodes == ["pn1"] and rep.exit_code == 1
    assert len(w.ops("power_on")) == 1


def test_drained_by_someone_else_is_not_touched(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2)])
    w.hooks["p"].set("pn1", drained=True)  # an admin drained it for maintenance
    w.apply(w.plan({"p": [(1, None)] * 3}))
    assert powers(w) == {"pn1": "on", "pn2": "off"}
    assert w.hooks["p"].nodes["pn1"].drained is True  # and we did not resume it


def test_node_booted_after_power_on_is_resumed_and_capped(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2)])
    plan = w.plan({"p": [(1, 300.0), (2, 300.0), (2, 300.0)]})
    w.apply(plan, slot=0)
    assert powers(w) == {"pn1": "off", "pn2": "on"} and w.caps("pn2") == [300.0, 300.0]
    assert w.hooks["p"].nodes["pn1"].drained is True
    w.apply(plan, slot=1, allow_other_slot=True)
    assert powers(w) == {"pn1": "on", "pn2": "on"}
    assert w.hooks["p"].nodes["pn1"].drained is False
    assert w.caps("pn1") == [300.0, 300.0]


def test_hook_that_does_not_report_the_drain_flag(make_world):  # type: ignore[no-untyped-def]
    """Some hooks (IPMI without a scheduler) never report ``drained`` in status: the ledger's
    ``drained_by_us`` decides, so power-off still happens after the drain and the node is
    resumed once it is back on."""
    from greencpn.actuate.fake_nodes import FakeNodeHook

    class Mute(FakeNodeHook):
        def status(self, nodes):  # type: ignore[no-untyped-def]
            from dataclasses import replace

            return [replace(s, drained=False) for s in super().status(nodes)]

    w = make_world([dict(name="p", nodes=2)])
    w.hooks["p"] = Mute(["pn1", "pn2"], w.clock, call_log=w.log)
    plan = w.plan({"p": [(1, None), (2, None), (2, None)]})
    w.apply(plan, slot=0)
    assert powers(w) == {"pn1": "off", "pn2": "on"}
    w.apply(plan, slot=1, allow_other_slot=True)
    assert powers(w) == {"pn1": "on", "pn2": "on"}
    assert w.ops("drain", "power_off", "power_on", "resume") == [
        ("drain", "pn1"),
        ("power_off", "pn1"),
        ("power_on", "pn1"),
        ("resume", "pn1"),
    ]
    assert not w.ledger().node("pn1").drained_by_us


def test_rate_limit_tokens_go_round_robin_over_pools(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=4), dict(name="q", nodes=4)])
    s = ControlSettings(
        **{**w.settings.__dict__, "max_power_ops_per_min": 3.0, "power_ops_burst": 3}
    )
    w.apply(w.plan({"p": [(0, None)] * 3, "q": [(0, None)] * 3}), settings=s)
    assert w.ops("power_off") == [("power_off", "pn1"), ("power_off", "pn2"), ("power_off", "qn1")]


def test_drains_of_all_pools_are_waited_for_together(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2), dict(name="q", nodes=2)])
    w.hooks["p"].run_jobs("pn1", 1)
    w.hooks["p"].run_jobs("pn2", 1)
    w.hooks["q"].run_jobs("qn1", 1, for_s=50)
    w.hooks["q"].run_jobs("qn2", 1)
    rep = w.apply(w.plan({"p": [(1, None)] * 3, "q": [(1, None)] * 3}))
    assert w.clock.now() == T0 + timedelta(seconds=120)  # one 120 s drain timeout, not two
    assert w.ops("drain", "power_off", "resume") == [
        ("drain", "pn1"),
        ("drain", "qn1"),
        ("resume", "pn1"),
        ("power_off", "qn1"),
    ]
    assert [s.targets for s in rep.steps if s.status == "skipped"] == [("pn1",)]
    assert w.hooks["p"].killed_jobs == w.hooks["q"].killed_jobs == 0
