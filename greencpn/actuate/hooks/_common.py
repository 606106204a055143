"""Shared pieces of the node power hooks: config access, subprocess runs, typed errors."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from greencpn.actuate.base import Change, NodePower, NodeStatus
from greencpn.errors import ConfigError, PermanentError, TemporaryError

log = logging.getLogger("greencpn.actuate.hooks")

STDERR_TAIL_CHARS = 800

STATIC_CHECK: contextvars.ContextVar[bool] = contextvars.ContextVar("STATIC_CHECK", default=False)
"""True while a config is being checked (:func:`greencpn.actuate.hooks.check_hook_table`):
builders then check keys and values only, and skip what depends on this machine (credential
files, a kubeconfig, the optional kubernetes client)."""


# --------------------------------------------------------------------------------------------
# Typed errors
# --------------------------------------------------------------------------------------------


class CommandTemporaryError(TemporaryError):
    """A command failed in a way that may clear (timeout, non-zero exit by default)."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        returncode: int | None = None,
        stderr_tail: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        super().__init__(message, retry_after_s=retry_after_s)


class CommandPermanentError(PermanentError):
    """A command cannot succeed as configured (not found, not executable, a permanent code)."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        returncode: int | None = None,
        stderr_tail: str = "",
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        super().__init__(message)


class NodeHookTemporaryError(TemporaryError):
    """Some nodes failed with temporary faults; ``changes`` lists what did happen."""

    def __init__(
        self,
        message: str,
        *,
        changes: list[Change],
        failures: dict[str, Exception],
        retry_after_s: float | None = None,
    ) -> None:
        self.changes = changes
        self.failures = failures
        super().__init__(message, retry_after_s=retry_after_s)


class NodeHookPermanentError(PermanentError):
    """At least one node failed permanently; ``changes`` lists what did happen."""

    def __init__(
        self, message: str, *, changes: list[Change], failures: dict[str, Exception]
    ) -> None:
        self.changes = changes
        self.failures = failures
        super().__init__(message)


def in_order(nodes: Sequence[str], changes: list[Change]) -> list[Change]:
    """Changes in the order the nodes were asked for (stable: a node's own order is kept)."""
    pos = {n: i for i, n in reversed(list(enumerate(nodes)))}
    return sorted(changes, key=lambda c: pos.get(c.target, len(pos)))


def raise_if_failed(
    op: str,
    changes: list[Change],
    failures: dict[str, Exception],
    nodes: Sequence[str] | None = None,
) -> list[Change]:
    """Return ``changes`` if nothing failed, else raise one error naming every failed node.

    The error is temporary only if every failure was temporary; it carries ``changes`` (what
    was done) and ``failures`` (node → error) so the caller can record a consistent state.
    With ``nodes``, changes are put in the order of ``nodes``.
    """
    if nodes is not None:
        changes = in_order(nodes, changes)
    if not failures:
        return changes
    detail = "; ".join(f"{n}: {e}" for n, e in sorted(failures.items()))
    msg = f"{op} failed on {len(failures)} node(s): {detail}"
    if all(isinstance(e, TemporaryError) for e in failures.values()):
        raise NodeHookTemporaryError(msg, changes=changes, failures=failures)
    raise NodeHookPermanentError(msg, changes=changes, failures=failures)


# --------------------------------------------------------------------------------------------
# Config access
# --------------------------------------------------------------------------------------------


class HookSettings:
    """Typed access to the per-kind keys of a hook table (``HookConfig.as_table()``).

    Every getter records the key as known; :meth:`check_unknown` then refuses typos.
    """

    def __init__(self, kind: str, extra: Mapping[str, Any], source: str | None = None) -> None:
        self.kind = kind
        self.extra = dict(extra)
        self.source = source
        self.known: set[str] = set()
        self.static = STATIC_CHECK.get()

    def error(self, key: str, msg: str, fix: str) -> ConfigError:
        """A ConfigError for ``hook.<key>`` with the message and the fix."""
        return ConfigError(msg, source=self.source, field=f"hook.{key}", fix=fix)

    def get(self, key: str, default: Any = None) -> Any:
        self.known.add(key)
        return self.extra.get(key, default)

    def str_(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.get(key, default)
        if value is None:
            if required:
                raise self.error(
                    key,
                    f"hook kind '{self.kind}' needs '{key}'",
                    f'add {key} = "..." to the pool\'s [pools.hook] table',
                )
            return None
        if not isinstance(value, str) or not value:
            raise self.error(
                key, f"must be a non-empty string, got {value!r}", f'write {key} = "..."'
            )
        return value

    def float_(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.error(
                key, f"must be a number >= {minimum}, got {value!r}", f"write {key} = {default}"
            )
        return float(value)

    def int_(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(
                key, f"must be an integer >= {minimum}, got {value!r}", f"write {key} = {default}"
            )
        return value

    def bool_(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.error(
                key,
                f"must be true or false, got {value!r}",
                f"write {key} = {str(default).lower()}",
            )
        return value

    def argv(self, key: str) -> list[str] | None:
        """A command as a list of strings or one shell-like string (split with shlex)."""
        value = self.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                parts = shlex.split(value)
            except ValueError as exc:
                raise self.error(
                    key,
                    f"cannot split command {value!r}: {exc}",
                    "quote it like a shell command, or give a list of strings",
                ) from exc
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            parts = list(value)
        else:
            raise self.error(
                key,
                f"must be a command string or a list of strings, got {value!r}",
                f'write {key} = ["/path/to/script", "--flag"]',
            )
        if not parts:
            raise self.error(key, "is empty", f'write {key} = "/path/to/script"')
        return parts

    def str_map(self, key: str) -> dict[str, str]:
        value = self.get(key, {})
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self.error(
                key,
                f"must be a table of strings, got {value!r}",
                f'write [pools.hook.{key}] with lines like node01 = "..."',
            )
        return dict(value)

    def int_list(self, key: str, default: Sequence[int]) -> list[int]:
        value = self.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
            raise self.error(
                key, f"must be a list of integers, got {value!r}", f"write {key} = [2]"
            )
        return list(value)

    def check_unknown(self, allowed_extra: Sequence[str] = ()) -> None:
        unknown = set(self.extra) - self.known - set(allowed_extra)
        if unknown:
            raise self.error(
                sorted(unknown)[0],
                f"unknown key(s) {sorted(unknown)} for hook kind '{self.kind}'",
                f"use only {sorted(self.known)} (see docs/node-hooks.md)",
            )


# --------------------------------------------------------------------------------------------
# Running commands
# --------------------------------------------------------------------------------------------


@dataclass
class HookLifecycle:
    """What ``greencpn apply`` needs to know about the hook processes it starts.

    Hook commands run in their own session (a timeout kills their whole process group), so they
    outlive an apply that is killed. ``pass_fds`` (the apply lock) is inherited by every hook
    process, so the lock is held while one still runs; ``on_start(pgid, argv)`` /
    ``on_end(pgid)`` let apply keep a lease of the live process groups (see
    :meth:`greencpn.actuate.ledger.Ledger.open`).
    """

    pass_fds: tuple[int, ...] = ()
    on_start: Callable[[int, list[str]], None] | None = None
    on_end: Callable[[int], None] | None = None


_LIFECYCLE = HookLifecycle()


@contextlib.contextmanager
def hook_lifecycle(lifecycle: HookLifecycle) -> Iterator[None]:
    """Use ``lifecycle`` for every command started inside the ``with`` block."""
    global _LIFECYCLE
    old, _LIFECYCLE = _LIFECYCLE, lifecycle
    try:
        yield
    finally:
        _LIFECYCLE = old


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration_s: float


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= STDERR_TAIL_CHARS else "…" + text[-STDERR_TAIL_CHARS:]


def _kill_group(proc: subprocess.Popen[str], grace_s: float) -> None:
    """SIGTERM the process group, then SIGKILL it after ``grace_s``."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_command(
    argv: Sequence[str],
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    permanent_exit_codes: Sequence[int] = (),
    redact: Sequence[str] = (),
    kill_grace_s: float = 2.0,
    monotonic: Callable[[], float] = time.monotonic,
) -> CommandResult:
    """Run ``argv`` in its own process group with a timeout; typed errors on failure.

    Args:
        argv: the command and its arguments (no shell).
        timeout_s: after this the whole process group is sent SIGTERM, then SIGKILL.
        env: extra environment variables (added to the current environment).
        check: raise on a non-zero exit status.
        permanent_exit_codes: exit statuses that mean "retrying will not help".
        redact: strings (passwords) never to show in a message or log line.
        kill_grace_s: time between SIGTERM and SIGKILL.
        monotonic: clock for the duration (measurement only).

    Raises:
        CommandPermanentError: the program is missing or not executable, or it exited with one
            of ``permanent_exit_codes`` (or 126/127, the shell's "cannot run").
        CommandTemporaryError: it timed out or exited non-zero otherwise.
    """
    argv = [str(a) for a in argv]

    def shown(text: str) -> str:
        for secret in redact:
            if secret:
                text = text.replace(secret, "***")
        return text

    cmd_text = shown(shlex.join(argv))
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    start = monotonic()
    lifecycle = _LIFECYCLE
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=full_env,
            start_new_session=True,
            pass_fds=lifecycle.pass_fds,
        )
    except FileNotFoundError as exc:
        raise CommandPermanentError(
            f"command not found: {argv[0]} (in `{cmd_text}`)", argv=argv
        ) from exc
    except PermissionError as exc:
        raise CommandPermanentError(
            f"command not executable: {argv[0]} (in `{cmd_text}`)", argv=argv
        ) from exc
    if lifecycle.on_start is not None:
        lifecycle.on_start(proc.pid, [shown(a) for a in argv])  # pgid == pid (new session)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc, kill_grace_s)
        try:
            stdout, stderr = proc.communicate(timeout=5.0)
        except (subprocess.TimeoutExpired, ValueError):
            stdout, stderr = "", ""
        tail = shown(_tail(stderr or ""))
        raise CommandTemporaryError(
            f"`{cmd_text}` timed out after {timeout_s:g} s and was killed"
            + (f"; stderr: {tail}" if tail else ""),
            argv=argv,
            stderr_tail=tail,
        ) from None
    finally:
        if lifecycle.on_end is not None:
            lifecycle.on_end(proc.pid)
    duration_s = monotonic() - start
    log.debug("ran `%s` → %s in %.2f s", cmd_text, proc.returncode, duration_s)
    if check and proc.returncode != 0:
        tail = shown(_tail(stderr or stdout or ""))
        msg = f"`{cmd_text}` exited with status {proc.returncode}" + (
            f"; stderr: {tail}" if tail else ""
        )
        if proc.returncode in (126, 127) or proc.returncode in permanent_exit_codes:
            raise CommandPermanentError(
                msg, argv=argv, returncode=proc.returncode, stderr_tail=tail
            )
        raise CommandTemporaryError(msg, argv=argv, returncode=proc.returncode, stderr_tail=tail)
    return CommandResult(argv, proc.returncode, stdout, stderr, duration_s)


# --------------------------------------------------------------------------------------------
# Change helpers
# --------------------------------------------------------------------------------------------


def power_change(node: str, before: NodePower, after: NodePower, message: str = "") -> Change:
    return Change(
        target=node,
        what="power",
        before=before.value,
        after=after.value,
        changed=before != after,
        message=message,
    )


def noop(node: str, what: str, value: object, message: str) -> Change:
    return Change(target=node, what=what, before=value, after=value, changed=False, message=message)


POWER_ON_LIKE = (NodePower.ON, NodePower.BOOTING)
POWER_OFF_LIKE = (NodePower.OFF, NodePower.SHUTTING_DOWN)


def status_map(statuses: Sequence[NodeStatus]) -> dict[str, NodeStatus]:
    return {s.name: s for s in statuses}
