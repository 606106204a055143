"""Issue #9.8: caps the plan asks for that are not applied — below the device minimum, or on
nodes without a GPU backend — are a reported outcome (skipped step, ``partial``, exit 1)."""

from __future__ import annotations

from greencpn.actuate.apply import Backends


def test_cap_below_the_device_minimum_is_reported_not_applied(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2, gpus_per_node=2)])
    rep = w.apply(w.plan({"p": [(2, 50.0)] * 3}))
    assert w.caps("pn1") == [400.0, 400.0] and not w.ops("set_cap")
    skipped = [s for s in rep.steps if s.status == "skipped"]
    assert [(s.action, s.targets) for s in skipped] == [
        ("set_power_cap", ("pn1:gpu0", "pn1:gpu1", "pn2:gpu0", "pn2:gpu1"))
    ]
    assert "caps not applied" in skipped[0].message and "100–400 W" in skipped[0].message
    assert rep.outcome == "partial" and rep.exit_code == 1
    assert "4 GPU cap(s) not applied" in rep.format()
    # the ledger says so too
    with w.ledger() as led:
        (app,) = led.applies()
        assert app.outcome == "partial"


def test_cap_on_nodes_without_a_gpu_backend_is_reported_not_applied(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2, gpus_per_node=1)])
    w.backends = lambda: Backends(  # type: ignore[method-assign]
        hooks=dict(w.hooks), gpus=lambda n: None if n == "pn2" else w.gpu_lookup(n)
    )
    rep = w.apply(w.plan({"p": [(2, 300.0)] * 3}))
    assert w.caps("pn1") == [300.0]
    skipped = [s for s in rep.steps if s.status == "skipped"]
    assert [s.targets for s in skipped] == [("pn2",)]
    assert "no GPU backend" in skipped[0].message
    assert rep.outcome == "partial" and rep.exit_code == 1


def test_caps_inside_the_range_still_apply_cleanly(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=1, gpus_per_node=1)])
    rep = w.apply(w.plan({"p": [(1, 250.0)] * 3}))
    assert w.caps("pn1") == [250.0] and rep.exit_code == 0 and rep.outcome == "applied"
