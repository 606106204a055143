"""Fixtures for the daemon tests: a fake-controller fleet, a real etcd per session."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # fake_controller, run_fake_daemon

ETCD = shutil.which("etcd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EtcdServer:
    port: int
    proc: subprocess.Popen[bytes]
    data_dir: Path

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"


def _start_etcd(tmp: Path) -> EtcdServer:
    port, peer = free_port(), free_port()
    data = tmp / "etcd-data"
    log = (tmp / "etcd.log").open("wb")
    proc = subprocess.Popen(
        [
            str(ETCD),
            "--data-dir",
            str(data),
            "--name",
            "t1",
            "--listen-client-urls",
            f"http://127.0.0.1:{port}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{port}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"t1=http://127.0.0.1:{peer}",
            "--log-level",
            "warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    import requests

    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"etcd did not start: {(tmp / 'etcd.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return EtcdServer(port, proc, data)


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A real etcd 3.4 on 127.0.0.1 (free ports, data in tmp), stopped by its pid."""
    if not ETCD:
        pytest.skip("etcd not installed (Debian package 'etcd-server'; .ci/run installs it)")
    tmp = tmp_path_factory.mktemp("etcd")
    srv = _start_etcd(tmp)
    try:
        yield srv
    finally:
        srv.proc.terminate()
        try:
            srv.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.proc.kill()
            srv.proc.wait()
        shutil.rmtree(srv.data_dir, ignore_errors=True)


@pytest.fixture
def etcd_key(request: pytest.FixtureRequest) -> str:
    """A leader key of its own for each test (they share the session's etcd)."""
    return f"/greencpn-test/{request.node.name}/{time.monotonic_ns()}"
