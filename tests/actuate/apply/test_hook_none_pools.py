"""Issue #9.7: a pool with ``hook = { kind = "none" }`` cannot be switched by greencpn, so it
is planned always on (no saving credited for nodes apply can never switch off); with
``advisory = true`` it is planned freely and shown as advisory, with a warning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_plan
from greencpn.errors import ConfigError

START = datetime(2026, 1, 5, tzinfo=UTC)


def fleet(tmp: Path, hook_b: str) -> Path:
    rows = ["datetime_utc,Z"] + [
        f"{(START + timedelta(hours=i)):%Y-%m-%dT%H:%M:%SZ},{c}"
        for i, c in enumerate([100, 500, 500, 100])
    ]
    (tmp / "carbon.csv").write_text("\n".join(rows) + "\n")
    pools = ""
    for name, hook in (("a", '{ kind = "command", power_on = "/bin/true" }'), ("b", hook_b)):
        pools += f"""
[[pools]]
name = "{name}"
site = "s"
nodes = 2
gpu_model = "A100-SXM4-40GB"
gpus_per_node = 1
node_idle_w = 400.0
hostlist = "{name}[1-2]"
hook = {hook}
"""
    path = tmp / "fleet.toml"
    path.write_text(f"""
name = "none-pools"
[horizon]
start = "{START:%Y-%m-%dT%H:%M:%SZ}"
slots = 4
slot_minutes = 60
[carbon]
file = "carbon.csv"
[[sites]]
name = "s"
zone = "Z"
pue = 1.0
{pools}""")
    return path


def nodes_on(cfg_path: Path) -> dict[str, list[int]]:
    doc = make_plan(load_config(cfg_path), SimClock(START)).document
    return {p["name"]: [s["nodes_on"] for s in p["slots"]] for p in doc["pools"]}


def test_hook_none_pool_is_planned_always_on(tmp_path: Path) -> None:
    on = nodes_on(fleet(tmp_path, '{ kind = "none" }'))
    assert on["a"] == [0, 0, 0, 0]  # no jobs: the switchable pool is off
    assert on["b"] == [2, 2, 2, 2]  # greencpn cannot switch it: always on


def test_advisory_hook_none_pool_is_planned_freely(tmp_path: Path) -> None:
    on = nodes_on(fleet(tmp_path, '{ kind = "none", advisory = true }'))
    assert on["b"] == [0, 0, 0, 0]


def test_advisory_only_with_kind_none(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pools\[1\]\(b\)\.hook\.advisory"):
        load_config(fleet(tmp_path, '{ kind = "command", advisory = true }'))


def test_apply_marks_an_advisory_pool_and_shows_the_plan_target(make_world) -> None:  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=3), dict(name="q", nodes=2, hook="none")])
    text = w.config_path.read_text().replace(
        'hook = { kind = "none" }', 'hook = { kind = "none", advisory = true }'
    )
    w.config_path.write_text(text)
    w.config = load_config(w.config_path)
    w.hooks.pop("q")
    b = w.backends()
    b.hooks["q"] = None  # type: ignore[index]
    w.backends = lambda: b  # type: ignore[method-assign]
    rep = w.apply(w.plan({"p": [(3, None)] * 3, "q": [(0, None)] * 3}), dry_run=True)
    d = {x.name: x for x in rep.diffs}["q"]
    assert d.target_nodes_on == 0 and d.hook_kind == "none (advisory)"
    text = w.printed[-1]
    assert "advisory" in text and "plan wants 0 of 2 on" in text
