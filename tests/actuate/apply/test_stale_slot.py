"""Issue #9.10: ``--slot N`` of a slot that is not the current one (e.g. a years-old plan) is
warned about, and refused when actuation is allowed unless ``--allow-other-slot`` is given."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from greencpn.errors import ConfigError

_spec = importlib.util.spec_from_file_location(
    "busy_scenarios", Path(__file__).resolve().parent / "busy_scenarios.py"
)
assert _spec and _spec.loader
bs = sys.modules.setdefault("busy_scenarios", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(bs)


def test_years_old_plan_slot_is_refused_in_enforce_mode(tmp_path: Path) -> None:
    c = bs.make_cluster(tmp_path, nodes={"n1": 0, "n2": 0})
    plan = bs.write_plan(
        tmp_path / "plan.json",
        c.config,
        [{"name": "p", "nodes": 2, "nodes_on": [0, 0]}],
        start=datetime(2021, 3, 1, tzinfo=UTC),
    )
    state = str(tmp_path / "s")
    rc, out, err = bs.run_cli(
        ["apply", str(plan), "--slot", "0", "--state-dir", state, "--allow-actuation"]
    )
    assert rc == 2 and "greencpn: error:" in err and "not the current slot" in err, out + err
    assert "--allow-other-slot" in err
    assert c.calls() == [] and c.node("n1")["power"] == "on"
    # dry run and shadow: a warning, nothing refused
    for extra in (["--dry-run"], []):
        rc, out, err = bs.run_cli(["apply", str(plan), "--slot", "0", "--state-dir", state, *extra])
        assert rc == 0 and "warning: slot 0 [2021-03-01 00:00Z" in out + err, out + err
    # the explicit override applies it, still with the warning
    rc, out, err = bs.run_cli(
        [
            "apply",
            str(plan),
            "--slot",
            "0",
            "--state-dir",
            state,
            "--allow-actuation",
            "--allow-other-slot",
        ]
    )
    assert rc == 0 and "warning: slot 0" in out and "result: applied" in out, out + err
    assert c.node("n1")["power"] == "off"


def test_current_slot_by_index_is_not_warned(make_world) -> None:  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2)])
    rep = w.apply(w.plan({"p": [(2, None)] * 3}), slot=0)
    assert not any("not the current slot" in x for x in rep.interrupted)


def test_future_slot_is_refused_in_act_mode_unless_overridden(make_world) -> None:  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2)])
    plan = w.plan({"p": [(2, None), (2, None), (1, None)]})
    with pytest.raises(ConfigError, match="not the current slot.*current is slot 0"):
        w.apply(plan, slot=2)
    assert w.ops("drain", "power_off") == []
    from greencpn.actuate.apply import apply_plan

    rep = apply_plan(
        plan,
        2,
        w.config,
        w.backends(),
        clock=w.clock,
        state_dir=w.state_dir,
        settings=w.settings,
        sleep=w.sleep,
        allow_other_slot=True,
    )
    assert rep.outcome == "applied" and any("not the current slot" in x for x in rep.warnings)
