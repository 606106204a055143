"""Progress of ``greencpn plan`` on stderr: the phase (model, solve, placement, baselines,
report) and, while HiGHS runs, its elapsed time, incumbent and gap.

Shown only when stderr is a terminal (a tqdm status bar) or with ``-v`` (log lines, at most one
every :data:`EVERY_S` seconds while solving); never on stdout, so ``--json`` output stays one
document. The solve's figures come from HiGHS's own log, which greencpn has it write to a
temporary file (``GREENCPN_SOLVER_LOG_FILE``, read by :mod:`greencpn.optimize.milp`) and tails
here; the phases come from greencpn's ``progress:`` log records.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("greencpn.progress")

EVERY_S = 2.0
_TIME = re.compile(r"^\d+(\.\d+)?s$")


def parse_highs_line(line: str) -> tuple[str, str, str] | None:
    """(best bound, incumbent, gap) from one branch-and-bound line of HiGHS's MIP log, or None
    for any other line. The columns end ``… BestBound BestSol Gap | Cuts InLp Confl. |
    LpIters Time``."""
    tok = line.split()
    if len(tok) < 9 or not _TIME.match(tok[-1]):
        return None
    bound, best, gap = tok[-8], tok[-7], tok[-6]
    if not (gap.endswith("%") or gap in ("inf", "Large")):
        return None
    return bound, best, gap


class PlanProgress:
    """Context manager: ``with PlanProgress(enabled=...) as pr: ...; pr.phase("report")``."""

    def __init__(self, enabled: bool, *, tty: bool | None = None, stream: IO[str] | None = None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        self._phase = "start"
        self._t0 = time.perf_counter()
        self._phase_t0 = self._t0
        self._last_line = ""
        self._last_emit = 0.0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._log_path: Path | None = None
        self._handler: logging.Handler | None = None
        self._old_env: str | None = None
        self._raised: list[logging.Handler] = []

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> PlanProgress:
        if not self.enabled:
            return self
        self._dir = tempfile.TemporaryDirectory(prefix="greencpn-progress-")
        self._log_path = Path(self._dir.name) / "highs.log"
        self._old_env = os.environ.get("GREENCPN_SOLVER_LOG_FILE")
        os.environ["GREENCPN_SOLVER_LOG_FILE"] = str(self._log_path)
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=None, file=self.stream, bar_format="{desc}", leave=False)
        progress = self

        class _Phases(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                msg = record.getMessage()
                if msg.startswith("progress: "):
                    progress._set_phase(msg[len("progress: ") :])

        self._handler = _Phases(level=logging.INFO)
        logging.getLogger("greencpn").addHandler(self._handler)
        if logging.getLogger("greencpn").getEffectiveLevel() > logging.INFO:
            self._saved_level = logging.getLogger("greencpn").level
            logging.getLogger("greencpn").setLevel(logging.INFO)
            # INFO records reach the handlers above, the stderr handler at the root stays at
            # its level (no -v: only the bar shows them)
            for h in logging.getLogger().handlers:
                if h.level == logging.NOTSET:
                    h.setLevel(logging.WARNING)
                    self._raised.append(h)
        self._thread = threading.Thread(target=self._tail, daemon=True)
        self._thread.start()
        return self

    _saved_level: int | None = None

    def __exit__(self, *exc: Any) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._read()
        if self._handler is not None:
            logging.getLogger("greencpn").removeHandler(self._handler)
        if self._saved_level is not None:
            logging.getLogger("greencpn").setLevel(self._saved_level)
        for h in self._raised:
            h.setLevel(logging.NOTSET)
        self._raised = []
        if self._old_env is None:
            os.environ.pop("GREENCPN_SOLVER_LOG_FILE", None)
        else:
            os.environ["GREENCPN_SOLVER_LOG_FILE"] = self._old_env
        if self._bar is not None:
            self._bar.close()
        if self._dir is not None:
            self._dir.cleanup()

    # ------------------------------------------------------------------ updates
    def phase(self, name: str) -> None:
        """A phase of the command itself (e.g. the report)."""
        if self.enabled:
            log.info("progress: %s", name)

    def _set_phase(self, name: str) -> None:
        self._phase = name
        self._phase_t0 = time.perf_counter()
        self._show(force=True)

    def _status(self) -> str:
        now = time.perf_counter()
        text = f"greencpn plan: {self._phase} ({now - self._phase_t0:.1f} s, total {now - self._t0:.1f} s)"
        if self._phase.startswith("solve") and self._last_line:
            got = parse_highs_line(self._last_line)
            if got:
                bound, best, gap = got
                text += f" — incumbent {best}, bound {bound}, gap {gap}"
        return text

    def _show(self, force: bool = False) -> None:
        text = self._status()
        if self._bar is not None:
            self._bar.set_description_str(text)
            self._bar.refresh()
        elif force or time.perf_counter() - self._last_emit >= EVERY_S:
            if not force:  # phase changes are logged by the planner itself
                log.info("%s", text)
            self._last_emit = time.perf_counter()

    _pos = 0

    def _read(self) -> None:
        """New branch-and-bound lines of the HiGHS log since the last read."""
        path = self._log_path
        if path is None or not path.exists():
            return
        with path.open("r", errors="replace") as fh:
            fh.seek(self._pos)
            chunk = fh.read()
            self._pos = fh.tell()
        for line in chunk.splitlines():
            if parse_highs_line(line):
                self._last_line = line
                self.solver_lines += 1

    solver_lines = 0  # branch-and-bound lines read from HiGHS's log (the test checks it)

    def _tail(self) -> None:
        while not self._stop.wait(0.3 if self._bar is not None else 0.5):
            self._read()
            if self._phase.startswith("solve"):
                self._show()
