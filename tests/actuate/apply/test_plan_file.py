"""Issue #9.11: tampered plan.json files. Each must give ``greencpn: error: …`` naming the file
and the field, exit 2, no traceback — and be refused before any hook is called."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from greencpn.actuate.plan_file import MAX_DEPTH, parse_plan
from greencpn.errors import ConfigError

_spec = importlib.util.spec_from_file_location(
    "busy_scenarios", Path(__file__).resolve().parent / "busy_scenarios.py"
)
assert _spec and _spec.loader
bs = sys.modules.setdefault("busy_scenarios", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(bs)

Edit = Callable[[dict[str, Any]], Any]


def _slot0(p: dict[str, Any]) -> dict[str, Any]:
    return p["pools"][0]["slots"][0]  # type: ignore[no-any-return]


def _deep(n: int) -> Any:
    x: Any = 0
    for _ in range(n):
        x = [x]
    return x


TAMPERS: dict[str, tuple[Edit | str, str]] = {
    # name: (edit of the plan dict, or raw file text; a word the error must contain)
    "nodes_on string": (lambda p: _slot0(p).update(nodes_on="2"), "nodes_on"),
    "nodes_on null": (lambda p: _slot0(p).update(nodes_on=None), "nodes_on"),
    "nodes_on float": (lambda p: _slot0(p).update(nodes_on=1.5), "nodes_on"),
    "nodes_on negative": (lambda p: _slot0(p).update(nodes_on=-1), "nodes_on"),
    "nodes_on bool": (lambda p: _slot0(p).update(nodes_on=True), "nodes_on"),
    "nodes_on list": (lambda p: _slot0(p).update(nodes_on=[1]), "nodes_on"),
    "nodes_on missing": (lambda p: _slot0(p).pop("nodes_on"), "nodes_on"),
    "nodes_on above pool size": (lambda p: _slot0(p).update(nodes_on=9), "nodes_on"),
    "power_cap_w string": (lambda p: _slot0(p).update(power_cap_w="300"), "power_cap_w"),
    "power_cap_w negative": (lambda p: _slot0(p).update(power_cap_w=-5), "power_cap_w"),
    "power_cap_w zero": (lambda p: _slot0(p).update(power_cap_w=0), "power_cap_w"),
    "power_cap_w object": (lambda p: _slot0(p).update(power_cap_w={"w": 1}), "power_cap_w"),
    "power_cap_w NaN": ("NaN-cap", "NaN"),
    "power_cap_w Infinity": ("Infinity-cap", "Infinity"),
    "nodes_on NaN": ("NaN-nodes", "NaN"),
    # per-job caps (issue #14.3, cap_mode = "job"): jobs[].power_cap_w
    "job power_cap_w string": (
        lambda p: p.update(jobs=[{"id": "j1", "power_cap_w": "200"}]),
        "jobs",
    ),
    "job power_cap_w zero": (lambda p: p.update(jobs=[{"id": "j1", "power_cap_w": 0}]), "jobs"),
    "job power_cap_w bool": (lambda p: p.update(jobs=[{"id": "j1", "power_cap_w": True}]), "jobs"),
    "job power_cap_w NaN": ("NaN-job-cap", "NaN"),
    "jobs not a list": (lambda p: p.update(jobs={"j1": 200}), "jobs"),
    "job power_cap_w above its pool's range": (
        lambda p: (
            p["pools"][0].update(power_limit_min_w=100, power_limit_max_w=300),
            p.update(jobs=[{"id": "j1", "pool": "p", "power_cap_w": 350}]),
        ),
        "j1",
    ),
    "slot string": (lambda p: _slot0(p).update(slot="0"), "slot"),
    "slot duplicated": (lambda p: p["pools"][0]["slots"][1].update(slot=0), "slot"),
    "slot missing entry": (lambda p: p["pools"][0]["slots"].pop(), "missing"),
    "slot outside horizon": (lambda p: p["pools"][0]["slots"][1].update(slot=5), "outside"),
    "slots empty": (lambda p: p["pools"][0].update(slots=[]), "slots"),
    "slots not a list": (lambda p: p["pools"][0].update(slots="x"), "slots"),
    "slot entry not an object": (lambda p: p["pools"][0]["slots"].__setitem__(0, 3), "slots"),
    "unknown pool": (lambda p: p["pools"][0].update(name="ghost"), "ghost"),
    "pool name missing": (lambda p: p["pools"][0].pop("name"), "name"),
    "pool name number": (lambda p: p["pools"][0].update(name=7), "name"),
    "pool missing": (lambda p: p.update(pools=[]), "pools"),
    "pools not a list": (lambda p: p.update(pools={"p": 1}), "pools"),
    "pool entry not an object": (lambda p: p.update(pools=["p"]), "pools"),
    "pool duplicated": (lambda p: p["pools"].append(copy.deepcopy(p["pools"][0])), "duplicated"),
    "hostlist extra node": (lambda p: p["pools"][0].update(hostlist="n[1-2],x9"), "x9"),
    "hostlist broken": (lambda p: p["pools"][0].update(hostlist="n[1-2"), "hostlist"),
    "nodes differ": (lambda p: p["pools"][0].update(nodes=5), "nodes"),
    "schema 1x": (lambda p: p.update(schema="greencpn.plan/1x"), "schema"),
    "schema 2": (lambda p: p.update(schema="greencpn.plan/2"), "schema"),
    "schema missing": (lambda p: p.pop("schema"), "schema"),
    "schema number": (lambda p: p.update(schema=1), "schema"),
    "horizon missing": (lambda p: p.pop("horizon"), "horizon"),
    "slot_starts missing": (lambda p: p["horizon"].pop("slot_starts"), "slot_starts"),
    "slot_starts not dates": (lambda p: p["horizon"].update(slot_starts=["x", "y"]), "slot_starts"),
    "slot_starts numbers": (lambda p: p["horizon"].update(slot_starts=[1, 2]), "slot_starts"),
    "slot_starts naive": (
        lambda p: p["horizon"].update(slot_starts=["2026-11-25T10:00:00", "2026-11-25T11:00:00"]),
        "slot_starts",
    ),
    "slot_starts unordered": (lambda p: p["horizon"]["slot_starts"].reverse(), "slot_starts"),
    "slot_starts empty": (lambda p: p["horizon"].update(slot_starts=[]), "slot_starts"),
    "slot_minutes zero": (lambda p: p["horizon"].update(slot_minutes=0), "slot_minutes"),
    "slot_minutes string": (lambda p: p["horizon"].update(slot_minutes="60"), "slot_minutes"),
    "deep nesting": ("deep", "nested deeper"),
    "deep nesting in an extra field": (lambda p: p.update(junk=_deep(MAX_DEPTH + 5)), "nested"),
    "top level list": ("[]", "not an object"),
    "not JSON": ("{", "not valid JSON"),
}


def _write(tmp: Path, c: Any, how: Edit | str) -> Path:
    path = tmp / "plan.json"
    plan = json.loads(
        bs.write_plan(
            path,
            c.config,
            [{"name": "p", "nodes": 2, "hostlist": "n[1-2]", "nodes_on": [1, 2]}],
            start=bs.this_hour(),
        ).read_text()
    )
    if callable(how):
        how(plan)
        path.write_text(json.dumps(plan))
        return path
    text = json.dumps(plan)
    if how == "NaN-cap":
        text = text.replace('"power_cap_w": null', '"power_cap_w": NaN', 1)
    elif how == "Infinity-cap":
        text = text.replace('"power_cap_w": null', '"power_cap_w": Infinity', 1)
    elif how == "NaN-job-cap":
        text = text[:-1] + ', "jobs": [{"id": "j1", "power_cap_w": NaN}]}'
    elif how == "NaN-nodes":
        text = text.replace('"nodes_on": 1', '"nodes_on": NaN', 1)
    elif how == "deep":
        text = text[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    else:
        text = how
    path.write_text(text)
    return path


def test_plan_with_valid_job_caps_is_accepted() -> None:
    """jobs[].power_cap_w inside the pool's range (or null) passes; the jobs pass through."""
    from greencpn.actuate.plan_file import validate_plan

    plan = {
        "schema": "greencpn.plan/1",
        "horizon": {"slot_minutes": 60, "slot_starts": ["2026-11-25T10:00:00+00:00"]},
        "pools": [
            {
                "name": "p",
                "power_limit_min_w": 100,
                "power_limit_max_w": 300,
                "slots": [{"slot": 0, "nodes_on": 1}],
            }
        ],
        "jobs": [
            {"id": "j1", "pool": "p", "power_cap_w": 175, "extra": 1},
            {"id": "j2", "pool": "p", "power_cap_w": None},
        ],
    }
    validate_plan(plan, "plan.json")
    plan["jobs"][0]["power_cap_w"] = 99.5
    with pytest.raises(ConfigError, match=r"jobs\[0\]\(j1\)\.power_cap_w=99.5 W is outside"):
        validate_plan(plan, "plan.json")


@pytest.mark.parametrize("name", list(TAMPERS))
def test_tampered_plan_is_refused_before_anything_is_observed(tmp_path: Path, name: str) -> None:
    how, word = TAMPERS[name]
    c = bs.make_cluster(tmp_path, nodes={"n1": 0, "n2": 0})
    plan = _write(tmp_path, c, how)
    rc, out, err = bs.run_cli(
        [
            "apply",
            str(plan),
            "--slot",
            "0",
            "--state-dir",
            str(tmp_path / "s"),
            "--allow-actuation",
        ],
        env={"PYTHONPATH": str(bs.ROOT)},
    )
    assert "Traceback" not in out + err
    assert rc == 2, out + err
    assert err.startswith("greencpn: error: ") and str(plan) in err and word in err, err
    assert not (tmp_path / "cluster" / "calls.log").exists(), "a hook ran before validation"


def test_a_real_plan_shape_passes_and_errors_name_the_pool() -> None:
    good = {
        "schema": "greencpn.plan/1",
        "horizon": {"slot_minutes": 60, "slot_starts": ["2026-11-25T10:00:00Z"]},
        "pools": [{"name": "lon-a100", "slots": [{"slot": 0, "nodes_on": 2, "power_cap_w": 250}]}],
        "jobs": [{"anything": ["passes", {"through": 1}]}],
    }
    assert parse_plan(json.dumps(good), "plan.json")["pools"][0]["name"] == "lon-a100"
    good["pools"][0]["slots"][0]["nodes_on"] = "2"  # type: ignore[index]
    with pytest.raises(ConfigError) as ei:
        parse_plan(json.dumps(good), "plan.json")
    assert ei.value.field == "pools[0](lon-a100).slots[0].nodes_on"
