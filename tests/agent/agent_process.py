"""Helpers to run the real ``greencpn agent`` command on 127.0.0.1, shared by
tests/agent (test_agent_process, test_agent_load) and bench/bench_agent.py."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_env() -> dict[str, str]:
    """The environment a child ``greencpn`` process imports this checkout's package with."""
    return dict(os.environ, PYTHONPATH=str(REPO))


def agent_argv(port: int, key_file: Path, fake_gpus: int, *extra: str) -> list[str]:
    """``python -m greencpn.cli agent`` on 127.0.0.1:``port`` with ``fake_gpus`` fake GPUs."""
    return [
        sys.executable,
        "-m",
        "greencpn.cli",
        "agent",
        "--listen",
        f"127.0.0.1:{port}",
        "--key-file",
        str(key_file),
        "--gpu",
        "fake",
        "--fake-gpus",
        str(fake_gpus),
        *extra,
    ]


def still_open(socks: Iterable[socket.socket]) -> int:
    """How many of these non-blocking client sockets the server has not closed."""
    n = 0
    for s in socks:
        try:
            n += s.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n
