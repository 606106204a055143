"""Issue #13: the hook tables are one strict pydantic model per kind (greencpn.config.hooks), and
each model holds exactly the keys its builder in greencpn.actuate.hooks reads — the two
readings of a ``[pools.hook]`` table cannot drift apart silently."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from greencpn.actuate.hooks import _resolve
from greencpn.actuate.hooks._common import STATIC_CHECK, HookSettings
from greencpn.config import HOOK_MODELS, HookConfig, KubernetesHookConfig, NoneHookConfig
from greencpn.config.errors import describe, pick
from greencpn.config.hooks import hook_keys

#: the smallest valid table of each switching kind
MINIMAL: dict[str, dict[str, Any]] = {
    "command": {"power_on": "/bin/true"},
    "slurm": {},
    "kubernetes": {},
    "ipmi": {"user": "admin", "bmc_template": "{node}-bmc"},
    "wol": {"macs": {"n1": "aa:bb:cc:dd:ee:01"}},
    "agent": {"url": "http://{node}:9123", "key_dir": "/etc/greencpn/agent-keys"},
}
HOOK = TypeAdapter(HookConfig)


def test_every_kind_has_a_model_and_a_minimal_table() -> None:
    assert set(HOOK_MODELS) == {"none", *MINIMAL}


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_the_model_holds_exactly_the_keys_the_builder_reads(kind: str) -> None:
    settings = HookSettings(kind, MINIMAL[kind], source="fleet.toml")
    token = STATIC_CHECK.set(True)
    try:
        settings.static = True
        _resolve(kind)(settings)
    finally:
        STATIC_CHECK.reset(token)
    assert sorted(settings.known) == hook_keys(kind)


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_a_minimal_table_validates_and_round_trips_as_written(kind: str) -> None:
    model = HOOK.validate_python({"kind": kind, **MINIMAL[kind]})
    assert type(model) is HOOK_MODELS[kind]
    assert model.as_table() == {"kind": kind, **MINIMAL[kind]}


def test_a_table_without_kind_is_kind_none_and_takes_only_advisory() -> None:
    assert HOOK.validate_python({}) == NoneHookConfig()
    assert HOOK.validate_python({"advisory": True}).advisory is True
    assert hook_keys("none") == ["advisory"]


def _problem(table: dict[str, Any]) -> tuple[str, str, str]:
    with pytest.raises(ValidationError) as ei:
        HOOK.validate_python(table)
    return describe(pick(ei.value.errors()), table)


def test_a_nested_hook_problem_names_its_path_and_fix() -> None:
    field, msg, fix = _problem({"kind": "kubernetes", "power": {"kind": "ipmi", "user": "u"}})
    assert field == "power.bmcs" and "bmcs" in msg and "10.0.0.101" in fix
    field, msg, fix = _problem({"kind": "agent", "url": "http://{node}", "power": {"kind": "x"}})
    assert field == "power.kind" and "'x'" in msg and "ipmi" in fix
    nested = KubernetesHookConfig.model_validate(
        {"power": {"kind": "ipmi", "user": "u", "bmc_template": "{node}-bmc"}}
    )
    assert nested.as_table() == {
        "kind": "kubernetes",
        "power": {"kind": "ipmi", "user": "u", "bmc_template": "{node}-bmc"},
    }


def test_numbers_are_not_read_from_strings_and_the_fix_shows_the_default() -> None:
    field, msg, fix = _problem({"kind": "slurm", "timeout_s": "30"})
    assert field == "timeout_s" and "'30'" in msg and fix == "write timeout_s = 30.0"
    field, msg, fix = _problem({"kind": "ipmi", "user": "u", "bmc_template": "x", "port": True})
    assert field == "port" and fix == "write port = 623"


def test_a_command_hook_must_name_a_command_and_only_known_operations_get_timeouts() -> None:
    field, msg, fix = _problem({"kind": "command", "timeout_s": 5})
    assert field == "power_on" and "names no command" in msg and 'kind = "none"' in fix
    field, msg, fix = _problem(
        {"kind": "command", "power_on": "/bin/true", "timeouts_s": {"poweron": 5}}
    )
    assert field == "timeouts_s.poweron" and "power_on" in msg
