"""``greencpn apply`` records a node as off only once its agent says the power command ran.

The agent answers a power-off with 202 and re-checks the running work after its settle time
(``power_off_delay_s``), under its lock, just before the power command; work that appeared
meanwhile aborts the power-off (``last_power_off.outcome == "aborted"``, the node stays on and
drained). Here a real agent runs on 127.0.0.1 (threads in this process, as in the other agent
tests) with a work command that reads a file and a power command that touches one; the test
makes a job land on the node right after the agent's 202 (a scheduler racing the drain), and
another where nothing lands.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from greencpn.actuate.agent_hook import AgentNodeHook
from greencpn.actuate.apply import Backends, apply_plan
from greencpn.actuate.base import Change
from greencpn.actuate.ledger import Ledger
from greencpn.actuate.safety import ControlSettings
from greencpn.agent.auth import load_key, write_key_file
from greencpn.agent.server import AgentServer, AgentSettings
from greencpn.clock import SystemClock
from greencpn.config import load_config
from tests.agent.agent_fleet import agent_plan, write_agent_fleet

pytestmark = pytest.mark.timeout(60)


class JobLandsAfter202:
    """The agent hook, except that right after a power-off is accepted a job starts on the
    node (the work file then says 1), as a scheduler racing the drain would do."""

    def __init__(self, hook: AgentNodeHook, work_file: Path, land: bool) -> None:
        self.hook = hook
        self.work_file = work_file
        self.land = land

    def power_off(self, nodes: Sequence[str]) -> list[Change]:
        changes = self.hook.power_off(nodes)
        if self.land:
            self.work_file.write_text("1\n")
        return changes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.hook, name)


@pytest.fixture
def agent_node(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "uptime").write_text("12345.67 20000.00\n")
    work = tmp_path / "work"
    work.write_text("0\n")
    off_marker = tmp_path / "powered-off"
    key_file = write_key_file(tmp_path / "gn1.key")
    settings = AgentSettings(
        port=0,
        node_name="gn1",
        proc_root=str(proc),
        work_command=f"cat {work}",
        power_command=f"touch {off_marker}",
        power_off_delay_s=getattr(request, "param", 0.5),
    )
    server = AgentServer(None, load_key(key_file), settings).start()
    try:
        yield {
            "server": server,
            "url": f"http://127.0.0.1:{server.port}",
            "key_file": key_file,
            "work": work,
            "off_marker": off_marker,
        }
    finally:
        server.stop()


def _config_and_plan(tmp: Path, url: str, key_file: Path) -> tuple[Path, dict[str, Any]]:
    cfg = write_agent_fleet(
        tmp, "gn1", 1, f'key_files = {{ gn1 = "{key_file}" }}\nurls = {{ gn1 = "{url}" }}'
    )
    return cfg, agent_plan(cfg, "gn1", 1, [(0, None), (0, None)])


def _apply(tmp: Path, node: dict[str, Any], land: bool, confirm_s: float = 10.0) -> Any:
    cfg, plan = _config_and_plan(tmp, node["url"], node["key_file"])
    hook = AgentNodeHook.from_endpoints(
        {"gn1": (node["url"], load_key(node["key_file"]))}, retries=0, connect_timeout_s=0.5
    )
    settings = ControlSettings(
        allow_actuation=True,
        drain_timeout_s=5.0,
        poll_interval_s=0.1,
        power_off_confirm_s=confirm_s,
    )
    return apply_plan(
        plan,
        0,
        load_config(cfg),
        Backends(hooks={"gp": JobLandsAfter202(hook, node["work"], land)}, gpus=lambda n: None),  # type: ignore[dict-item]
        clock=SystemClock(),
        state_dir=tmp / "state",
        settings=settings,
        sleep=time.sleep,
        allow_other_slot=True,
    )


def _final_outcome(agent: Any, within_s: float = 10.0) -> str:
    """The agent's power-off outcome once it is no longer pending (its thread decides it)."""
    deadline = time.monotonic() + within_s
    while (agent.last_power_off or {}).get("outcome") == "pending":
        assert time.monotonic() < deadline, "the agent never decided the power-off"
        time.sleep(0.05)
    return str((agent.last_power_off or {}).get("outcome"))


def test_power_off_aborted_by_the_agent_is_not_recorded_as_off(
    tmp_path: Path, agent_node: dict[str, Any]
) -> None:
    rep = _apply(tmp_path, agent_node, land=True)
    agent = agent_node["server"].agent
    # the agent aborted at its final check: the command never ran, the node is on
    assert _final_outcome(agent) == "aborted"
    assert not agent_node["off_marker"].exists() and agent.power_state == "on"
    # ... and apply says so: the node is not recorded as off, the step is not ok
    with Ledger.open_readonly(tmp_path / "state") as led:
        rec = led.node("gn1")
        assert rec.power != "off" and rec.off_since is None
        steps = [s for s in led.steps(rep.apply_id) if s.action == "power_off"]
    assert any(s.status == "error" and "aborted" in json.dumps(s.result) for s in steps)
    bad = [s for s in rep.steps if s.action == "power_off" and not s.status.is_ok]
    assert bad and "aborted at the final check" in bad[0].message and bad[0].targets == ("gn1",)
    assert rep.exit_code == 1
    # greencpn drained it: it is given back to the scheduler
    assert agent.drained is False


def test_power_off_the_agent_carried_out_is_recorded_as_off(
    tmp_path: Path, agent_node: dict[str, Any]
) -> None:
    rep = _apply(tmp_path, agent_node, land=False)
    agent = agent_node["server"].agent
    assert _final_outcome(agent) == "command_ran" and agent_node["off_marker"].exists()
    with Ledger.open_readonly(tmp_path / "state") as led:
        rec = led.node("gn1")
        assert rec.power == "off" and rec.off_since is not None
    ok = [s for s in rep.steps if s.action == "power_off"]
    assert ok and all(s.status.is_ok for s in ok) and rep.exit_code == 0


@pytest.mark.parametrize("agent_node", [30.0], indirect=True)  # the agent decides in 30 s
def test_power_off_still_pending_at_the_deadline_is_not_recorded_as_off(
    tmp_path: Path, agent_node: dict[str, Any]
) -> None:
    t0 = time.monotonic()
    rep = _apply(tmp_path, agent_node, land=False, confirm_s=0.5)
    assert time.monotonic() - t0 < 10  # bounded by power_off_confirm_s, not the agent's 30 s
    assert agent_node["server"].agent.last_power_off["outcome"] == "pending"
    with Ledger.open_readonly(tmp_path / "state") as led:
        assert led.node("gn1").power == "shutting_down"
    bad = [s for s in rep.steps if s.action == "power_off" and not s.status.is_ok]
    assert bad and "not reported done after 0.5 s" in bad[0].message and rep.exit_code == 1


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ({"power": "shutting_down", "last_power_off": {"outcome": "command_ran"}}, "done"),
        ({"power": "shutting_down", "last_power_off": {"outcome": "pending"}}, "pending"),
        ({"power": "on", "last_power_off": {"outcome": "aborted", "message": "x"}}, "aborted"),
        ({"power": "on", "last_power_off": {"outcome": "failed", "message": "x"}}, "aborted"),
        ({"power": "on", "last_power_off": None}, "aborted"),  # agent restarted: nothing pending
    ],
)
def test_agent_status_to_power_off_state(status: dict[str, Any], state: str) -> None:
    from greencpn.actuate.agent_hook import power_off_result

    assert power_off_result("gn1", status).state == state
