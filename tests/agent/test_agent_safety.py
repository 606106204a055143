"""Issue #9, agent items 3, 4 and 14: the agent never powers off under a job it could see.

Each test reproduces a reported scenario against a real agent on 127.0.0.1 (or the real
probe), and failed on the code before the fix.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from greencpn.agent.auth import load_key
from greencpn.agent.client import AgentClient, AgentRequestError
from greencpn.agent.server import AgentServer, AgentSettings, NodeAgent, count_gpu_processes
from greencpn.errors import ConfigError, TemporaryError

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[2]


def _script(path: Path, text: str) -> str:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return str(path)


def _wait_for(predicate, timeout_s: float = 5.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ------------------------------------------------------------------ 3: re-check before power off


@pytest.fixture
def node(
    tmp_path: Path, key_file: Path, fake_proc: Path
) -> Iterator[tuple[AgentServer, Path, Path, Path]]:
    """An agent whose work is the lines of jobs.txt, whose power command touches a marker and
    whose drain / resume commands append to actions.log."""
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("")
    marker = tmp_path / "powered-off"
    actions = tmp_path / "actions.log"
    settings = AgentSettings(
        port=0,
        node_name="node-safe",
        proc_root=str(fake_proc),
        power_off_delay_s=2.0,  # wide: the test's 0.3 s must fall well inside it on a busy machine
        power_command=_script(tmp_path / "off.sh", f"touch {marker}\n"),
        drain_command=_script(tmp_path / "drain.sh", f"echo drain >> {actions}\n"),
        resume_command=_script(tmp_path / "resume.sh", f"echo resume >> {actions}\n"),
        work_command=f"cat {jobs}",
    )
    with AgentServer(None, load_key(key_file), settings) as server:
        yield server, jobs, marker, actions


def test_a_job_arriving_after_the_off_check_is_not_powered_off(node) -> None:  # noqa: ANN001
    server, jobs, marker, _ = node
    client = AgentClient(server.url, server.verifier._keys[0])
    [change] = client.power("off", reason="plan")
    assert change.changed and change.after == "off"
    time.sleep(0.3)
    jobs.write_text("4711\n4712\n")  # two jobs land 0.3 s after the agent's first check
    # The power command would have run 2 s after the answer; give it ample time to (not) happen.
    assert _wait_for(lambda: client.status()["power"] == "on", timeout_s=6.0)
    time.sleep(0.3)
    assert not marker.exists(), "the node was powered off under a running job"
    status = client.status()
    assert status["running_work"]["count"] == 2
    assert status["drained"] is True  # still refusing new work; the controller decides next
    assert status["last_power_off"]["outcome"] == "aborted"
    assert "2 running" in status["last_power_off"]["message"]


def test_status_reports_work_counted_now_not_a_cached_count(node) -> None:  # noqa: ANN001
    server, jobs, _, _ = node
    client = AgentClient(server.url, server.verifier._keys[0])
    assert client.status()["running_work"]["count"] == 0
    jobs.write_text("1\n2\n")
    assert client.status()["running_work"]["count"] == 2  # was the 2 s old 0


def test_off_drains_first_and_a_resume_during_the_wait_cancels_it(node) -> None:  # noqa: ANN001
    server, _, marker, actions = node
    client = AgentClient(server.url, server.verifier._keys[0])
    client.power("off", reason="plan")
    assert actions.read_text().splitlines() == ["drain"]  # drained before anything else
    assert client.status()["drained"] is True
    client.power("resume")
    time.sleep(2.5)  # past the 2 s settle time
    assert not marker.exists()
    status = client.status()
    assert (status["power"], status["drained"]) == ("on", False)
    assert status["last_power_off"]["outcome"] == "cancelled"
    assert actions.read_text().splitlines() == ["drain", "resume"]


def test_gpu_changes_are_refused_while_powering_off(
    tmp_path: Path, key_file: Path, fake_proc: Path, tiny_gpu_cls
) -> None:  # noqa: ANN001
    marker = tmp_path / "off"
    settings = AgentSettings(
        port=0,
        proc_root=str(fake_proc),
        power_off_delay_s=0.5,
        power_command=_script(tmp_path / "off.sh", f"touch {marker}\n"),
        work_command="echo 0",
    )
    backend = tiny_gpu_cls()
    key = load_key(key_file)
    with AgentServer(backend, key, settings) as server:
        client = AgentClient(server.url, key)
        client.power("off")
        with pytest.raises(AgentRequestError) as ei:
            client.set_power_limit_w(150)
        assert (ei.value.status, ei.value.code) == (409, "powering_off")
        assert backend.calls == []
        assert _wait_for(marker.exists)


def test_an_idle_node_is_still_powered_off(node) -> None:  # noqa: ANN001
    server, _, marker, actions = node
    client = AgentClient(server.url, server.verifier._keys[0])
    client.power("off", reason="plan")
    assert _wait_for(marker.exists)
    assert actions.read_text().splitlines() == ["drain"]
    # the outcome is recorded once the power command has returned, a moment after it ran
    assert _wait_for(lambda: client.status()["last_power_off"]["outcome"] == "command_ran")


# ------------------------------------------------------------- 4: unreadable /proc means busy


def _make_proc(root: Path, pids: dict[int, list[str]]) -> None:
    for pid, targets in pids.items():
        fd = root / str(pid) / "fd"
        fd.mkdir(parents=True)
        for i, target in enumerate(targets):
            os.symlink(target, fd / str(i))


def test_an_unreadable_proc_entry_makes_the_count_unknown(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    _make_proc(tmp_path, {10: ["/dev/null"], 11: ["/dev/null"]})
    real_listdir = os.listdir
    hidden = str(tmp_path / "11" / "fd")

    def listdir(path):  # noqa: ANN001, ANN202 - what a non-root agent sees for another user's job
        if str(path) == hidden:
            raise PermissionError(13, "Permission denied", str(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    with pytest.raises(TemporaryError, match="1 of 2 processes"):
        count_gpu_processes(str(tmp_path))


def test_processes_that_exit_while_counted_are_not_unknown(tmp_path: Path) -> None:
    _make_proc(tmp_path, {10: ["/dev/nvidia0"]})
    (tmp_path / "12").mkdir()  # a process that exited between listing /proc and reading fd/
    assert count_gpu_processes(str(tmp_path)) == 1


def _world_readable_tmp() -> tempfile.TemporaryDirectory[str]:
    d = tempfile.TemporaryDirectory(prefix="greencpn-agent-")
    os.chmod(d.name, 0o755)
    return d


_AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _can_drop_privileges() -> bool:
    if os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists():
        return False
    probe = subprocess.run(
        [*_AS_NOBODY, sys.executable, "-c", "import greencpn"],
        capture_output=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        cwd="/",
        timeout=30,
    )
    return probe.returncode == 0


needs_setpriv = pytest.mark.skipif(
    not _can_drop_privileges(),
    reason="needs root, setpriv and a checkout readable by uid 65534 (runs the probe as nobody)",
)


@needs_setpriv
def test_as_a_non_root_user_the_real_proc_count_is_unknown_not_zero() -> None:
    code = (
        "from greencpn.agent.server import count_gpu_processes\n"
        "from greencpn.errors import TemporaryError\n"
        "try:\n    print('count', count_gpu_processes('/proc'))\n"
        "except TemporaryError as exc:\n    print('unknown', exc)\n"
    )
    proc = subprocess.run(
        [*_AS_NOBODY, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        cwd="/",
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("unknown"), proc.stdout
    assert "not readable" in proc.stdout


@needs_setpriv
def test_as_a_non_root_user_the_agent_refuses_to_start_power_control() -> None:
    from greencpn.agent.auth import write_key_file

    with _world_readable_tmp() as tmp:
        key = write_key_file(Path(tmp) / "agent.key")
        os.chown(key, 65534, 65534)
        base = [
            *_AS_NOBODY, sys.executable, "-m", "greencpn.cli", "agent", "--listen", "127.0.0.1:0",
            "--key-file", str(key), "--gpu", "none",
        ]  # fmt: skip
        proc = subprocess.run(
            [*base, "--power-command", "true"],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            cwd="/",
            timeout=20,
        )
    assert proc.returncode == 2, proc.stderr
    assert "greencpn: error:" in proc.stderr and "Traceback" not in proc.stderr
    assert "--work-command" in proc.stderr and "root" in proc.stderr


def test_power_control_with_an_untrusted_count_is_refused_at_start(
    key_file: Path, tmp_path: Path, monkeypatch
) -> None:  # noqa: ANN001
    _make_proc(tmp_path, {10: ["/dev/null"]})
    real_listdir = os.listdir
    hidden = str(tmp_path / "10" / "fd")

    def listdir(path):  # noqa: ANN001, ANN202
        if str(path) == hidden:
            raise PermissionError(13, "Permission denied", str(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    key = load_key(key_file)
    with pytest.raises(ConfigError) as ei:
        AgentServer(None, key, AgentSettings(port=0, proc_root=str(tmp_path), power_command="true"))
    assert "--work-command" in str(ei.value)
    # Without power control the agent starts, and reports the count as unknown (= busy).
    server = AgentServer(None, key, AgentSettings(port=0, proc_root=str(tmp_path)))
    try:
        assert server.agent.running_work()["count"] is None
    finally:
        server.httpd.server_close()


# ------------------------------------------------------------- 14: hung command's process group


def test_a_hung_work_commands_children_are_killed_at_the_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    cmd = _script(tmp_path / "hang.sh", f"sleep 300 &\necho $! > {pidfile}\nsleep 300\n")
    agent = NodeAgent(None, AgentSettings(work_command=cmd, command_timeout_s=0.5))
    grandchild = None
    try:
        t0 = time.monotonic()
        work = agent.running_work()
        assert time.monotonic() - t0 < 5
        assert work["count"] is None and "timed out" in work["error"]
        grandchild = int(pidfile.read_text())
        assert _wait_for(lambda: not _alive(grandchild), timeout_s=2.0), "grandchild outlived"
    finally:
        if grandchild is not None and _alive(grandchild):
            os.kill(grandchild, 9)


def test_concurrent_counts_are_shared_but_never_older_than_the_caller() -> None:
    import threading

    from greencpn.agent.server import FreshCounter

    began: list[float] = []

    def count() -> dict[str, object]:
        began.append(time.monotonic())
        time.sleep(0.3)
        return {"count": len(began)}

    counter = FreshCounter(count)
    results: dict[str, tuple[float, dict[str, object]]] = {}

    def call(name: str) -> None:
        arrived = time.monotonic()
        results[name] = (arrived, counter())

    a = threading.Thread(target=call, args=("a",))
    a.start()
    time.sleep(0.1)  # b and c arrive while a's count runs: they must not get it
    b = threading.Thread(target=call, args=("b",))
    c = threading.Thread(target=call, args=("c",))
    b.start()
    c.start()
    for t in (a, b, c):
        t.join(timeout=5)
    assert results["a"][1] == {"count": 1}
    assert results["b"][1] == results["c"][1] == {"count": 2}  # one shared, newer count
    assert counter.calls == 2
    for arrived, result in results.values():
        assert began[int(result["count"]) - 1] >= arrived  # began after the caller arrived
