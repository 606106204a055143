"""``greencpn apply`` sets GPU caps on remote nodes through real node agents on 127.0.0.1.

Two agents (``gn1``, ``gn2``) run in this process with in-memory GPUs (two per node, 100-300 W,
at 300 W); the fleet config's pool uses ``hook.kind = "agent"``; apply runs through the real CLI
(``greencpn apply``), which takes each node's GPUs from ``AgentNodeHook.gpu_backend``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from greencpn.actuate.agent_hook import AgentGpuBackend, AgentNodeHook
from greencpn.actuate.base import GpuBackend
from greencpn.actuate.ledger import Ledger
from greencpn.agent.auth import load_key, write_key_file
from greencpn.agent.client import AgentAuthError, AgentRequestError, AgentUnavailableError
from greencpn.agent.server import AgentServer, AgentSettings
from greencpn.cli import main
from greencpn.errors import PermanentError, TemporaryError
from tests.agent.agent_fleet import agent_plan, write_agent_fleet
from tests.agent.conftest import TinyGpuBackend

pytestmark = pytest.mark.timeout(90)

NODES = ("gn1", "gn2")


def _held_port() -> socket.socket:
    """A socket bound to a free port and not listening: a connect to it is refused, and no
    other process (an xdist worker) or agent can take the port while it is held."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


class Fleet:
    """Keys, agents and URLs for gn1/gn2; an agent is started (or restarted) on its fixed port.

    Each node's port is held (bound, not listening) until its agent first starts, so the
    ports are distinct and a node whose agent is not running really has a closed port: two
    ports picked one after the other by bind-and-close could be the same one, and then gn1's
    agent answered for gn2 (401 bad signature instead of "unreachable")."""

    def __init__(self, tmp: Path, fake_proc: Path, gpu_cls: type) -> None:
        self.tmp = tmp
        self.fake_proc = fake_proc
        self.gpu_cls = gpu_cls
        self.keys = tmp / "keys"
        self.keys.mkdir()
        self._held = {n: _held_port() for n in NODES}
        self.ports = {n: int(s.getsockname()[1]) for n, s in self._held.items()}
        self.urls = {n: f"http://127.0.0.1:{p}" for n, p in self.ports.items()}
        self.backends = {n: gpu_cls() for n in NODES}
        self.servers: dict[str, AgentServer] = {}
        for n in NODES:
            write_key_file(self.keys / f"{n}.key")

    def start(self, node: str) -> AgentServer:
        held = self._held.pop(node, None)
        if held is not None:
            held.close()
        settings = AgentSettings(
            port=self.ports[node], node_name=node, proc_root=str(self.fake_proc)
        )
        server = AgentServer(
            self.backends[node], load_key(self.keys / f"{node}.key"), settings
        ).start()
        self.servers[node] = server
        return server

    def stop_all(self) -> None:
        for s in self.servers.values():
            s.stop()
        for held in self._held.values():
            held.close()

    def caps(self, node: str) -> list[float]:
        return list(self.backends[node].limits_w)

    def sets(self, node: str) -> int:
        return sum(1 for c in self.backends[node].calls if c[0] == "set_power_limit_w")

    def hook(self) -> AgentNodeHook:
        return AgentNodeHook.from_endpoints(
            {n: (self.urls[n], load_key(self.keys / f"{n}.key")) for n in NODES},
            retries=0,
            connect_timeout_s=0.5,
        )


@pytest.fixture
def agents_fleet(tmp_path: Path) -> Iterator[Fleet]:
    fake_proc = tmp_path / "proc"  # the agents read uptime and GPU processes from here
    fake_proc.mkdir()
    (fake_proc / "uptime").write_text("12345.67 20000.00\n")
    f = Fleet(tmp_path, fake_proc, TinyGpuBackend)
    try:
        yield f
    finally:
        f.stop_all()


def write_config_and_plan(agents_fleet: Fleet, power_cap_w: float = 200.0) -> tuple[Path, Path]:
    """A one-pool fleet whose hook is the agent, and a hand-made 2-slot plan (docs/plan-schema.md)."""
    tmp = agents_fleet.tmp
    urls = "\n".join(f'{n} = "{u}"' for n, u in agents_fleet.urls.items())
    hook = f"""key_dir = "{agents_fleet.keys}"
retries = 1
connect_timeout_s = 0.5
[pools.hook.urls]
{urls}"""
    cfg = write_agent_fleet(tmp, "gn[1-2]", 2, hook)
    plan = agent_plan(cfg, "gn[1-2]", 2, [(2, power_cap_w), (2, 300.0)])
    plan_path = tmp / "plan.json"
    plan_path.write_text(json.dumps(plan))
    return cfg, plan_path


def apply_cli(
    agents_fleet: Fleet, plan: Path, slot: int, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    rc = main(
        [
            "apply",
            str(plan),
            "--slot",
            str(slot),
            "--state-dir",
            str(agents_fleet.tmp / "state"),
            "--allow-actuation",
            "--allow-other-slot",  # the plan is for a fixed date (issue #9.10)
        ]
    )
    return rc, capsys.readouterr().out


def test_apply_sets_caps_on_both_agents_and_reapply_changes_nothing(agents_fleet, capsys) -> None:  # noqa: ANN001
    for n in NODES:
        agents_fleet.start(n)
    _, plan = write_config_and_plan(agents_fleet, power_cap_w=200.0)

    rc, out = apply_cli(agents_fleet, plan, 0, capsys)
    assert rc == 0, out
    assert agents_fleet.caps("gn1") == [200.0, 200.0]
    assert agents_fleet.caps("gn2") == [200.0, 200.0]
    assert "result: applied" in out
    assert "4 GPU(s) to 200 W" in out

    rc, out = apply_cli(agents_fleet, plan, 0, capsys)  # again: the agents already hold the caps
    assert rc == 0, out
    assert "nothing changed: the fleet already matched the plan" in out
    assert (agents_fleet.sets("gn1"), agents_fleet.sets("gn2")) == (
        2,
        2,
    )  # no write the second time

    rc, out = apply_cli(agents_fleet, plan, 1, capsys)  # slot 1 raises the caps back to 300 W
    assert rc == 0, out
    assert agents_fleet.caps("gn1") == [300.0, 300.0] and agents_fleet.caps("gn2") == [300.0, 300.0]
    with Ledger.open_readonly(agents_fleet.tmp / "state") as led:
        assert [a.outcome for a in led.applies()] == ["applied", "nothing_to_do", "applied"]
        phases = [(s.phase, s.status) for s in led.steps() if s.action == "set_power_cap"]
    assert phases == [("lower_caps", "ok"), ("raise_caps", "ok")]


def test_unreachable_agent_is_reported_and_recorded_the_other_node_is_capped(
    agents_fleet, capsys
) -> None:  # noqa: ANN001
    agents_fleet.start("gn1")  # gn2's agent is not running: its port is closed
    _, plan = write_config_and_plan(agents_fleet, power_cap_w=150.0)

    rc, out = apply_cli(agents_fleet, plan, 0, capsys)
    assert rc == 3, out  # a node not observable: exit 3 (issue #9.6), the others still applied
    assert agents_fleet.caps("gn1") == [150.0, 150.0]
    assert agents_fleet.caps("gn2") == [300.0, 300.0]  # untouched (its agent is down)
    assert "result: partial: 1 step(s) not done" in out
    assert "status unknown (not switched): gn2" in out
    with Ledger.open_readonly(agents_fleet.tmp / "state") as led:
        (app,) = led.applies()
        steps = led.steps(app.id)
    assert app.outcome == "partial"
    ok = [s for s in steps if s.action == "set_power_cap" and s.status == "ok"]
    assert [s.targets for s in ok] == [["gn1:gpu0", "gn1:gpu1"]]
    (skipped,) = [s for s in steps if s.status == "skipped"]
    assert skipped.targets == ["gn2"] and "unreachable" in skipped.intent["message"]

    rc, out = apply_cli(agents_fleet, plan, 0, capsys)  # again, gn2 still down: gn1 is not touched
    assert rc == 3 and agents_fleet.sets("gn1") == 2

    agents_fleet.start("gn2")  # the agent is back: the next apply caps it
    rc, out = apply_cli(agents_fleet, plan, 0, capsys)
    assert rc == 0, out
    assert agents_fleet.caps("gn2") == [150.0, 150.0] and agents_fleet.sets("gn1") == 2


def test_agent_gpu_backend_speaks_the_gpu_protocol(agents_fleet) -> None:  # noqa: ANN001
    agents_fleet.start("gn1")
    gb = agents_fleet.hook().gpu_backend("gn1")
    assert isinstance(gb, AgentGpuBackend) and isinstance(gb, GpuBackend)
    gpus = gb.list_gpus()
    assert [(g.index, g.uuid, g.power_limit_min_w, g.power_limit_max_w) for g in gpus] == [
        (0, "GPU-tiny-0", 100.0, 300.0),
        (1, "GPU-tiny-1", 100.0, 300.0),
    ]
    assert [g.power_limit_current_w for g in gpus] == [300.0, 300.0]

    ch = gb.set_power_limit_w(1, 250.0)
    assert (ch.target, ch.what, ch.before, ch.after, ch.changed) == (
        "gn1/gpu1",
        "power_limit_w",
        300.0,
        250.0,
        True,
    )
    assert gb.set_power_limit_w(1, 250.0).changed is False  # read before write, on the agent
    assert agents_fleet.caps("gn1") == [300.0, 250.0]
    assert gb.power_w(1) == 125.0 and gb.energy_j(1) == 2000.0  # TinyGpuBackend: half the cap

    assert gb.lock_clocks_mhz(0, 900, 1410).changed is True
    assert gb.lock_clocks_mhz(0, 900, 1410).changed is False
    assert agents_fleet.backends["gn1"].clocks[0] == (900, 1410)
    assert gb.reset_clocks(0).changed is True and agents_fleet.backends["gn1"].clocks[0] is None

    restored = gb.restore_defaults()
    assert [(c.target, c.changed) for c in restored] == [("gn1/gpu0", False), ("gn1/gpu1", True)]
    assert agents_fleet.caps("gn1") == [300.0, 300.0]

    with pytest.raises(AgentRequestError, match="outside") as ei:  # 400 -> permanent
        gb.set_power_limit_w(0, 50.0)
    assert isinstance(ei.value, PermanentError) and ei.value.status == 400
    with pytest.raises(PermanentError, match="no GPU 7"):
        gb.power_w(7)


def test_agent_gpu_backend_errors_are_typed(agents_fleet) -> None:  # noqa: ANN001
    agents_fleet.start("gn1")
    down = agents_fleet.hook().gpu_backend("gn2")  # no agent on gn2's port
    with pytest.raises(AgentUnavailableError) as ei:
        down.list_gpus()
    assert isinstance(ei.value, TemporaryError)
    with pytest.raises(TemporaryError):
        down.set_power_limit_w(0, 200.0)

    wrong_key = AgentNodeHook.from_endpoints(
        {"gn1": (agents_fleet.urls["gn1"], b"x" * 32)}, retries=0
    ).gpu_backend("gn1")
    with pytest.raises(AgentAuthError) as ai:
        wrong_key.list_gpus()
    assert isinstance(ai.value, PermanentError) and ai.value.status == 401
    assert agents_fleet.sets("gn1") == 0
