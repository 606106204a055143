"""Slurm state → greencpn NodeStatus, by hand, on outputs seen from the real Slurm 22.05."""

from __future__ import annotations

import json

import pytest

from greencpn.actuate.base import NodePower
from greencpn.actuate.hooks.slurm import parse_sinfo_json, parse_sinfo_text, parse_squeue


@pytest.mark.parametrize(
    ("line", "power", "drained"),
    [
        ("n1|idle|none", NodePower.ON, False),
        ("n1|mixed|none", NodePower.ON, False),
        ("n1|allocated|none", NodePower.ON, False),
        ("n1|idle~|none", NodePower.OFF, False),
        ("n1|idle#|none", NodePower.BOOTING, False),
        ("n1|idle%|none", NodePower.SHUTTING_DOWN, False),
        ("n1|idle!|none", NodePower.SHUTTING_DOWN, False),
        ("n1|down~|ResumeTimeout reached", NodePower.FAILED, False),
        ("n1|down#|ResumeTimeout reached", NodePower.BOOTING, False),  # Slurm retrying a boot
        ("n1|idle*|none", NodePower.FAILED, False),
        ("n1|drained|maintenance", NodePower.ON, True),
        ("n1|draining|plan", NodePower.ON, True),
        ("n1|drained~|plan", NodePower.OFF, True),
        ("n1|future|none", NodePower.UNKNOWN, False),
    ],
)
def test_sinfo_text_states(line: str, power: NodePower, drained: bool) -> None:
    got = parse_sinfo_text(line + "\n")["n1"]
    assert (got[0], got[1]) == (power, drained)


def test_sinfo_text_reason_and_flags() -> None:
    got = parse_sinfo_text("fake2|down~|ResumeTimeout reached\nfake1|idle|none\n")
    assert got["fake2"][3] == "ResumeTimeout reached" and got["fake1"][3] == ""
    assert got["fake2"][4] == {"POWERED_DOWN"}


def test_sinfo_json_22_05_and_23_02_shapes() -> None:
    # 22.05: state is a word, flags separate (as printed by the test cluster)
    old = {
        "nodes": [
            {
                "name": "fake1",
                "state": "idle",
                "state_flags": ["CLOUD", "POWERED_DOWN"],
                "reason": "",
            },
            {
                "name": "fake2",
                "state": "idle",
                "state_flags": ["CLOUD", "POWERED_DOWN", "POWER_UP"],
            },
            {
                "name": "fake3",
                "state": "down",
                "state_flags": ["CLOUD", "NOT_RESPONDING", "POWERED_DOWN"],
                "reason": "ResumeTimeout reached",
            },
            {"name": "node1", "state": "idle", "state_flags": ["DRAIN"], "reason": "plan"},
        ]
    }
    got = parse_sinfo_json(json.dumps(old))
    assert {n: (v[0], v[1]) for n, v in got.items()} == {
        "fake1": (NodePower.OFF, False),
        "fake2": (NodePower.BOOTING, False),
        "fake3": (NodePower.FAILED, False),
        "node1": (NodePower.ON, True),
    }
    # 23.02+: state is a list of words
    new = {"nodes": [{"name": "n1", "state": ["IDLE", "DRAIN", "POWERED_DOWN"], "reason": "x"}]}
    assert parse_sinfo_json(json.dumps(new))["n1"][:2] == (NodePower.OFF, True)


def test_squeue_counts_jobs_per_node() -> None:
    text = "101|node[1-2]\n102|node2\n103|\n104|(null)\n"
    assert parse_squeue(text) == {"node1": 1, "node2": 2}
