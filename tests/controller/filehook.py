"""A node power hook whose state lives in a JSON file, so it survives a SIGKILLed controller
process; every operation is appended to a log file. ``GREENCPN_TEST_SLOW=op:node`` makes the
hook write a marker file and hang when ``op`` reaches ``node`` (before changing it), so a test
can kill the process exactly there."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from greencpn.actuate.base import Change, NodePower, NodeStatus


class FileHook:
    name = "file"

    def __init__(self, state: Path, nodes: Sequence[str] = ()) -> None:
        self.state = state
        self.log = state.with_suffix(".log")
        if not state.exists():
            self._write({n: {"power": "on", "drained": False} for n in nodes})
        self.slow = os.environ.get("GREENCPN_TEST_SLOW", "")

    def _read(self) -> dict:
        return json.loads(self.state.read_text())

    def _write(self, data: dict) -> None:
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.state)

    def _op(self, op: str, nodes: Sequence[str], field: str, value: object) -> list[Change]:
        out = []
        for n in nodes:
            if self.slow == f"{op}:{n}":
                self.state.with_suffix(".marker").write_text(op)
                time.sleep(120)  # the test kills the process here
            data = self._read()
            before = data[n][field]
            data[n][field] = value
            self._write(data)
            with self.log.open("a") as fh:
                fh.write(f"{op} {n}\n")
                fh.flush()
                os.fsync(fh.fileno())
            out.append(Change(n, field, before, value, changed=before != value))
        return out

    def drain(self, nodes: Sequence[str], reason: str) -> list[Change]:
        return self._op("drain", nodes, "drained", True)

    def resume(self, nodes: Sequence[str]) -> list[Change]:
        return self._op("resume", nodes, "drained", False)

    def power_off(self, nodes: Sequence[str]) -> list[Change]:
        return self._op("power_off", nodes, "power", "off")

    def power_on(self, nodes: Sequence[str]) -> list[Change]:
        return self._op("power_on", nodes, "power", "on")  # boots at once

    def status(self, nodes: Sequence[str]) -> list[NodeStatus]:
        if self.slow == "status:any":
            self.state.with_suffix(".marker").write_text("status")
            time.sleep(120)
        data = self._read()
        return [
            NodeStatus(
                n,
                NodePower(data[n]["power"]),
                drained=bool(data[n]["drained"]),
                running_jobs=int(data[n].get("jobs", 0)),  # None would mean "unknown" = busy
            )
            for n in nodes
        ]

    def ops(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []
