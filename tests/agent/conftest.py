"""Fixtures for the node agent tests: a real agent on 127.0.0.1 with an in-memory GPU backend."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from greencpn.actuate.base import Change, GpuInfo
from greencpn.agent.auth import write_key_file
from greencpn.agent.server import AgentServer, AgentSettings


class TinyGpuBackend:
    """The smallest GpuBackend: n GPUs with a 100-300 W range; records every call."""

    name = "tiny"

    def __init__(self, n: int = 2, min_w: float = 100.0, max_w: float = 300.0) -> None:
        self.min_w, self.max_w = min_w, max_w
        self.limits_w = [max_w] * n
        self.clocks: list[tuple[int, int] | None] = [None] * n
        self.calls: list[tuple[str, int, object]] = []

    def list_gpus(self) -> list[GpuInfo]:
        return [
            GpuInfo(
                i,
                f"GPU-tiny-{i}",
                "Tiny GPU",
                self.min_w,
                self.max_w,
                self.max_w,
                lim,
                (300, 900, 1410),
            )
            for i, lim in enumerate(self.limits_w)
        ]

    def set_power_limit_w(self, index: int, power_limit_w: float) -> Change:
        before = self.limits_w[index]
        self.calls.append(("set_power_limit_w", index, power_limit_w))
        self.limits_w[index] = power_limit_w
        return Change(
            f"gpu{index}", "power_limit_w", before, power_limit_w, changed=before != power_limit_w
        )

    def lock_clocks_mhz(self, index: int, min_mhz: int, max_mhz: int) -> Change:
        before = self.clocks[index]
        self.clocks[index] = (min_mhz, max_mhz)
        return Change(
            f"gpu{index}",
            "clocks_mhz",
            before,
            (min_mhz, max_mhz),
            changed=before != (min_mhz, max_mhz),
        )

    def reset_clocks(self, index: int) -> Change:
        before = self.clocks[index]
        self.clocks[index] = None
        return Change(f"gpu{index}", "clocks_mhz", before, None, changed=before is not None)

    def power_w(self, index: int) -> float:
        return 0.5 * self.limits_w[index]

    def energy_j(self, index: int) -> float:
        return 1000.0 * (index + 1)

    def restore_defaults(self) -> list[Change]:
        return [self.set_power_limit_w(i, self.max_w) for i in range(len(self.limits_w))]


class MutableClock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.t


@dataclass
class RunningAgent:
    server: AgentServer
    backend: TinyGpuBackend
    key_file: Path
    key: bytes
    url: str


@pytest.fixture
def tiny_gpu_cls() -> type[TinyGpuBackend]:
    """The in-test GPU backend class, for tests that build their own agents."""
    return TinyGpuBackend


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return write_key_file(tmp_path / "agent.key")


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    (root / "uptime").write_text("12345.67 20000.00\n")
    return root


@pytest.fixture
def agent(key_file: Path, fake_proc: Path) -> Iterator[RunningAgent]:
    from greencpn.agent.auth import load_key

    backend = TinyGpuBackend()
    settings = AgentSettings(port=0, node_name="node001", proc_root=str(fake_proc))
    key = load_key(key_file)
    server = AgentServer(backend, key, settings).start()
    try:
        yield RunningAgent(server, backend, key_file, key, server.url)
    finally:
        server.stop()
