"""AgentNodeHook over real agents on 127.0.0.1, built through the hook factory."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from greencpn.actuate.base import NodePower, NodePowerHook
from greencpn.actuate.hooks import NodeHookPermanentError, NodeHookTemporaryError, make_hook
from greencpn.agent.auth import load_key, write_key_file
from greencpn.agent.server import AgentServer, AgentSettings
from greencpn.errors import ConfigError

pytestmark = pytest.mark.timeout(90)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def agent_fleet(tmp_path: Path, fake_proc: Path, tiny_gpu_cls):  # noqa: ANN001, ANN201
    """Agents for n1 and n2 (n2 runs 3 jobs); n3 has a key but no agent (port closed)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    servers, urls = {}, {}
    jobs = tmp_path / "n2-jobs"
    jobs.write_text("3\n")
    off_log = tmp_path / "off.log"
    off = tmp_path / "off.sh"
    off.write_text(f"#!/bin/sh\necho off >> {off_log}\n")
    off.chmod(0o755)
    for node in ("n1", "n2", "n3"):
        write_key_file(keys / f"{node}.key")
    for node in ("n1", "n2"):
        settings = AgentSettings(
            port=0,
            node_name=node,
            proc_root=str(fake_proc),
            power_command=str(off),
            power_off_delay_s=0.0,
            work_command=f"cat {jobs}" if node == "n2" else None,
        )
        servers[node] = AgentServer(
            tiny_gpu_cls(), load_key(keys / f"{node}.key"), settings
        ).start()
        urls[node] = servers[node].url
    urls["n3"] = f"http://127.0.0.1:{_free_port()}"
    try:
        yield {"keys": keys, "urls": urls, "servers": servers, "off_log": off_log, "tmp": tmp_path}
    finally:
        for s in servers.values():
            s.stop()


def _hook(agent_fleet, **extra) -> NodePowerHook:  # noqa: ANN001, ANN003
    table = {
        "kind": "agent",
        "urls": agent_fleet["urls"],
        "key_dir": str(agent_fleet["keys"]),
        "retries": 1,
        "connect_timeout_s": 0.5,
        **extra,
    }
    return make_hook(table, source="fleet.toml")


def test_factory_builds_agent_hook_and_status_reports_each_node(agent_fleet) -> None:  # noqa: ANN001
    hook = _hook(agent_fleet)
    assert hook.name == "agent"
    st = {s.name: s for s in hook.status(["n1", "n2", "n3"])}
    assert st["n1"].power == NodePower.ON and st["n1"].running_jobs == 0
    assert st["n1"].extra["gpu_power_w"] == 300.0
    assert st["n2"].running_jobs == 3
    assert st["n3"].power == NodePower.UNKNOWN and "unreachable" in st["n3"].detail


def test_drain_resume_and_gpu_caps_through_the_hook(agent_fleet) -> None:  # noqa: ANN001
    hook = _hook(agent_fleet)
    changes = hook.drain(["n1", "n2"], reason="carbon peak")
    assert [(c.target, c.changed) for c in changes] == [("n1", True), ("n2", True)]
    assert all(s.drained for s in hook.status(["n1", "n2"]))
    assert [c.changed for c in hook.resume(["n1", "n2"])] == [True, True]
    caps = hook.set_gpu_power_limit_w(["n1", "n2"], 200.0)  # type: ignore[attr-defined]
    assert [c.target for c in caps] == ["n1/gpu0", "n1/gpu1", "n2/gpu0", "n2/gpu1"]
    assert agent_fleet["servers"]["n1"].agent.backend.limits_w == [200.0, 200.0]
    with pytest.raises(NodeHookPermanentError) as ei:  # out of range on every node
        hook.set_gpu_power_limit_w(["n1", "n2"], 50.0)  # type: ignore[attr-defined]
    assert set(ei.value.failures) == {"n1", "n2"}


def test_power_off_refused_for_busy_node_and_reported_per_node(agent_fleet) -> None:  # noqa: ANN001
    hook = _hook(agent_fleet)
    with pytest.raises(NodeHookPermanentError) as ei:
        hook.power_off(["n1", "n2"])
    assert [c.target for c in ei.value.changes] == ["n1"]  # n1 went off
    assert "busy" in str(ei.value.failures["n2"]) or "running" in str(ei.value.failures["n2"])
    statuses = {s.name: s.power for s in hook.status(["n1", "n2"])}
    assert statuses == {"n1": NodePower.SHUTTING_DOWN, "n2": NodePower.ON}


def test_unreachable_agent_is_a_temporary_failure(agent_fleet) -> None:  # noqa: ANN001
    hook = _hook(agent_fleet)
    with pytest.raises(NodeHookTemporaryError) as ei:
        hook.drain(["n1", "n3"], reason="x")
    assert list(ei.value.failures) == ["n3"]
    assert [c.target for c in ei.value.changes] == ["n1"]


def test_power_on_goes_to_the_nested_hook_for_silent_nodes(agent_fleet) -> None:  # noqa: ANN001
    log = agent_fleet["tmp"] / "on.log"
    script = agent_fleet["tmp"] / "on.sh"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    script.chmod(0o755)
    hook = _hook(agent_fleet, power={"kind": "command", "power_on": str(script)})
    changes = hook.power_on(["n1", "n3"])
    assert [(c.target, c.changed) for c in changes][0] == ("n1", False)
    assert log.read_text().split() == ["n3"]
    without = _hook(agent_fleet)
    with pytest.raises(NodeHookPermanentError, match="cannot power on its own node"):
        without.power_on(["n3"])


def test_bad_hook_config_is_a_config_error(agent_fleet) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="url"):
        make_hook({"kind": "agent", "key_dir": "/x"}, source="fleet.toml")
    with pytest.raises(ConfigError, match="placeholder"):
        make_hook({"kind": "agent", "url": "http://a:9123", "key_dir": "/x"}, source="fleet.toml")
    with pytest.raises(ConfigError, match="key_dir"):
        make_hook({"kind": "agent", "url": "http://{node}:9123"}, source="fleet.toml")
    with pytest.raises(ConfigError, match="unknown key"):
        _hook(agent_fleet, colour="green")
    (agent_fleet["keys"] / "n1.key").chmod(0o644)  # a key readable by others is refused at use
    hook = _hook(agent_fleet)
    with pytest.raises(NodeHookPermanentError, match="chmod 600"):
        hook.drain(["n1"], reason="x")
