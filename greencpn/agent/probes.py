"""Probes of the node: the running work (GPU processes from /proc, or a work command), and
running commands safely (own process group, killed as one at the timeout).

An unknown count is never a low one: a process whose open files cannot be read may be a GPU
job, so :func:`count_gpu_processes` raises rather than counting it idle.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from greencpn.errors import PermanentError, TemporaryError

log = logging.getLogger(__name__)

_GPU_DEVICE_RE = re.compile(r"^/dev/nvidia[0-9]+$")


def count_gpu_processes(proc_root: str = "/proc", *, exclude_pid: int | None = None) -> int:
    """Count processes holding a GPU device (``/dev/nvidia<N>``) open, by reading ``proc_root``.

    A process whose open files cannot be read (another user's, when the agent is not root) may
    be a GPU job, so the count is then unknown: :class:`TemporaryError` is raised rather than
    counting it idle. Processes that exit while being read are skipped.

    Raises:
        TemporaryError: ``proc_root`` cannot be listed, or some process cannot be inspected.
    """
    count = 0
    seen = 0
    unreadable: list[str] = []
    try:
        entries = os.listdir(proc_root)
    except OSError as exc:
        raise TemporaryError(f"cannot list {proc_root}: {exc.strerror}") from None
    for entry in entries:
        if not entry.isdigit() or (exclude_pid is not None and int(entry) == exclude_pid):
            continue
        seen += 1
        fd_dir = os.path.join(proc_root, entry, "fd")
        try:
            fds = os.listdir(fd_dir)
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        except OSError:
            unreadable.append(entry)
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except (FileNotFoundError, ProcessLookupError):
                continue  # closed or exited meanwhile
            except OSError:
                unreadable.append(entry)
                break
            if _GPU_DEVICE_RE.match(target):
                count += 1
                break
    if unreadable:
        shown = ", ".join(unreadable[:5]) + (", ..." if len(unreadable) > 5 else "")
        raise TemporaryError(
            f"open files of {len(unreadable)} of {seen} processes in {proc_root} are not "
            f"readable (pid {shown}); any of them may be a GPU job"
        )
    return count


def parse_work_output(text: str) -> int:
    """A work command's output → running work: first token if an integer, else non-empty lines."""
    stripped = text.strip()
    if not stripped:
        return 0
    first = stripped.split()[0]
    if first.isdigit() and len(stripped.split()) == 1:
        return int(first)
    return sum(1 for line in stripped.splitlines() if line.strip())


def run_command(
    command: str, timeout_s: float, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (split like a shell would, no shell) in its own process group.

    At the timeout the whole group is killed (SIGKILL), so a hung command's children and
    grandchildren do not outlive it.

    Raises:
        TemporaryError: the command timed out.
        PermanentError: the command cannot be started.
    """
    env = dict(os.environ)
    env.update(env_extra or {})
    argv = shlex.split(command)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # its own process group: killed as one at the timeout
        )
    except OSError as exc:
        raise PermanentError(f"cannot run command {command!r}: {exc.strerror}") from None
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise TemporaryError(
            f"command timed out after {timeout_s:g} s (its process group was killed): {command}"
        ) from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.communicate(timeout=5)  # reap it; its pipes close once the group is gone
    except subprocess.TimeoutExpired:  # a member that left the group still holds a pipe
        log.error("command %d: output pipes still open after killing its group", proc.pid)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()


class FreshCounter:
    """Calls ``count`` for concurrent callers at most once at a time, sharing results, yet never
    hands a caller a result whose call began before the caller arrived: as fresh as calling
    ``count`` itself, cheaper when status requests come in together.
    """

    def __init__(self, count: Callable[[], dict[str, Any]]) -> None:
        self._count = count
        self._cond = threading.Condition()
        self._running = False
        self._started = 0  # generations begun
        self._done = 0  # newest generation finished
        self._result: dict[str, Any] = {}
        self.calls = 0

    def __call__(self) -> dict[str, Any]:
        with self._cond:
            need = self._started + 1  # the first generation that begins after we arrived
            while self._done < need:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                mine = self._started
                self._cond.release()
                try:
                    result = self._count()
                finally:
                    self._cond.acquire()
                    self._running = False
                    self.calls += 1
                    self._cond.notify_all()
                self._result, self._done = result, mine
            return self._result
