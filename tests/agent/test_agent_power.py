"""Power actions, running work and telemetry through a real agent on 127.0.0.1."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from greencpn.agent.client import AgentClient, AgentRequestError
from greencpn.agent.server import (
    AgentServer,
    AgentSettings,
    count_gpu_processes,
    parse_work_output,
)

pytestmark = pytest.mark.timeout(60)


def _script(path: Path, text: str) -> str:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return str(path)


def _make_proc(root: Path, pids: dict[int, list[str]]) -> None:
    for pid, targets in pids.items():
        fd = root / str(pid) / "fd"
        fd.mkdir(parents=True)
        for i, target in enumerate(targets):
            os.symlink(target, fd / str(i))


def test_count_gpu_processes_counts_holders_of_gpu_devices(tmp_path: Path) -> None:
    _make_proc(
        tmp_path,
        {
            10: ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"],  # a CUDA job
            11: ["/dev/nvidia1", "/dev/nvidia0"],  # one process on two GPUs counts once
            12: ["/dev/nvidiactl"],  # nvidia-persistenced-like: control device only
            13: ["/dev/null", "socket:[123]"],
            99: ["/dev/nvidia0"],  # excluded (the agent itself)
        },
    )
    (tmp_path / "self").mkdir()  # non-numeric entries are ignored
    assert count_gpu_processes(str(tmp_path), exclude_pid=99) == 2


def test_parse_work_output() -> None:
    assert parse_work_output("") == 0
    assert parse_work_output("3\n") == 3
    assert parse_work_output("1234\n1235\n") == 2  # squeue -h -o %i: one line per job
    assert parse_work_output("job a\n\njob b\n") == 2


def test_drain_resume_and_off_with_commands(
    tmp_path: Path, key_file: Path, fake_proc: Path
) -> None:
    from greencpn.agent.auth import load_key

    log = tmp_path / "actions.log"
    settings = AgentSettings(
        port=0,
        node_name="node002",
        proc_root=str(fake_proc),
        power_off_delay_s=0.05,
        power_command=_script(tmp_path / "off.sh", f'echo "off $GREENCPN_REASON" >> {log}\n'),
        drain_command=_script(tmp_path / "drain.sh", f'echo "drain $GREENCPN_REASON" >> {log}\n'),
        resume_command=_script(tmp_path / "resume.sh", f"echo resume >> {log}\n"),
    )
    key = load_key(key_file)
    with AgentServer(None, key, settings) as server:
        client = AgentClient(server.url, key)
        [c] = client.power("drain", reason="carbon")
        assert (c.what, c.before, c.after, c.changed) == ("drained", False, True, True)
        assert client.power("drain")[0].changed is False  # read before write: no command run
        assert client.status()["drained"] is True
        [c] = client.power("resume")
        assert c.changed and client.status()["drained"] is False
        [c] = client.power("off", reason="plan 2026-11-25T12:00Z")
        assert (c.what, c.after, c.changed) == ("power", "off", True)
        assert client.status()["power"] == "shutting_down"
        deadline = time.monotonic() + 5
        while (
            "off" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        assert log.read_text().splitlines() == [
            "drain carbon",
            "resume",
            "drain plan 2026-11-25T12:00Z",  # off drains a node that is not drained yet
            "off plan 2026-11-25T12:00Z",
        ]
        assert client.power("off")[0].changed is False


def test_off_refused_with_running_work_or_without_power_command(
    tmp_path: Path, key_file: Path, fake_proc: Path
) -> None:
    from greencpn.agent.auth import load_key

    marker = tmp_path / "powered-off"
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("4242\n4243\n")
    settings = AgentSettings(
        port=0,
        node_name="node003",
        proc_root=str(fake_proc),
        power_off_delay_s=0.0,
        power_command=_script(tmp_path / "off.sh", f"touch {marker}\n"),
        work_command=f"cat {jobs}",
    )
    key = load_key(key_file)
    with AgentServer(None, key, settings) as server:
        client = AgentClient(server.url, key)
        assert client.status()["running_work"]["count"] == 2
        with pytest.raises(AgentRequestError) as ei:
            client.power("off")
        assert (ei.value.status, ei.value.code) == (409, "busy")
        assert "drain" in ei.value.fix
        jobs.write_text("")
        settings.work_command = "false"  # work unknown: refuse too
        with pytest.raises(AgentRequestError) as ei:
            client.power("off")
        assert ei.value.code == "work_unknown"
        time.sleep(0.2)
        assert not marker.exists()
        assert client.status()["power"] == "on"

    settings2 = AgentSettings(port=0, proc_root=str(fake_proc))
    with AgentServer(None, key, settings2) as server:
        with pytest.raises(AgentRequestError) as ei:
            AgentClient(server.url, key).power("off")
        assert (ei.value.status, ei.value.code) == (409, "not_configured")
        assert "--power-command" in ei.value.fix


def test_agent_over_the_shared_fake_gpu_backend(key_file: Path, fake_proc: Path) -> None:
    fake_gpu = pytest.importorskip("greencpn.actuate.gpu.fake")
    from greencpn.agent.auth import load_key

    backend = fake_gpu.FakeGpuBackend(
        [fake_gpu.FakeGpu(min_w=100, max_w=300, default_w=300, demand_w=220, energy_j=5000.0)] * 1
        + [fake_gpu.FakeGpu(min_w=150, max_w=400, default_w=350)]
    )
    key = load_key(key_file)
    with AgentServer(backend, key, AgentSettings(port=0, proc_root=str(fake_proc))) as server:
        client = AgentClient(server.url, key)
        [c] = client.set_power_limit_w(200, index=0)
        assert c.changed and c.before == 300.0 and c.after == 200.0
        assert client.set_power_limit_w(200, index=0)[0].changed is False
        with pytest.raises(AgentRequestError) as ei:  # inside GPU 0's range, not GPU 1's
            client.set_power_limit_w(120)
        assert ei.value.code == "out_of_range"
        status = client.status()
        assert [g["power_limit_w"] for g in status["gpus"]] == [200.0, 350.0]
        assert status["gpus"][0]["power_w"] == 200.0  # min(demand 220, limit 200)
        assert status["gpus"][0]["energy_j"] >= 5000.0
        assert status["gpu_backend"] == "fake"


def test_gpu_faults_map_to_typed_answers(key_file: Path, fake_proc: Path) -> None:
    fake_gpu = pytest.importorskip("greencpn.actuate.gpu.fake")
    from greencpn.actuate.gpu import errors as gpu
    from greencpn.agent.auth import load_key
    from greencpn.agent.client import AgentUnavailableError

    backend = fake_gpu.FakeGpuBackend([fake_gpu.FakeGpu(min_w=100, max_w=300, default_w=300)])
    key = load_key(key_file)
    with AgentServer(backend, key, AgentSettings(port=0, proc_root=str(fake_proc))) as server:
        client = AgentClient(server.url, key, retries=1, sleep=lambda s: None)
        backend.inject_error("set_limit", gpu.NVML_ERROR_NO_PERMISSION)
        with pytest.raises(AgentRequestError) as ei:
            client.set_power_limit_w(200)
        assert (ei.value.status, ei.value.code) == (500, "no_permission")
        assert "root" in ei.value.fix
        backend.inject_error("lock_clocks", gpu.NVML_ERROR_NOT_SUPPORTED)
        with pytest.raises(AgentRequestError) as ei:
            client.lock_clocks_mhz(810, 1410)
        assert (ei.value.status, ei.value.code) == (409, "not_supported")
        backend.inject_error("set_limit", gpu.NVML_ERROR_GPU_IS_LOST, times=-1)
        with pytest.raises(AgentUnavailableError):  # 503, retried, still lost
            client.set_power_limit_w(200)
        backend.clear_errors()
        backend.inject_error("power", gpu.NVML_ERROR_GPU_IS_LOST, times=-1)
        status = client.status()  # one unreadable sensor does not fail the whole status
        assert "error" in status["gpus"][0] and status["gpus"][0]["power_limit_w"] == 300.0
        backend.clear_errors()
        assert client.set_power_limit_w(200)[0].after == 200.0
