"""Errors typed by what the caller should do.

* :class:`ConfigError` — the user's input is wrong; the message names the file, the field and
  the fix. The CLI prints it without a traceback and exits with status 2.
* :class:`TemporaryError` — a fault that may go away (API down, timeout, GPU lost): retry later,
  optionally after ``retry_after_s``.
* :class:`PermanentError` — retrying will not help (bad key, unknown zone, no permission); the
  message says what to change.
* :class:`SolverError` — the optimisation produced no usable plan.
"""

from __future__ import annotations


class GreencpnError(Exception):
    """Base class of every error greencpn raises on purpose."""


class ConfigError(GreencpnError):
    """Bad user input. ``source`` is the file, ``field`` the dotted field path, ``fix`` the remedy."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.source = source
        self.field = field
        self.fix = fix
        self.reason = message
        parts = []
        if source:
            parts.append(str(source))
        if field:
            parts.append(f"field '{field}'")
        head = ": ".join(parts)
        text = f"{head}: {message}" if head else message
        if fix:
            text += f" — fix: {fix}"
        super().__init__(text)


class TemporaryError(GreencpnError):
    """A fault that may clear by itself; retry after ``retry_after_s`` seconds if given."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class PermanentError(GreencpnError):
    """A fault retrying will not fix; the message says what to change."""


class SolverError(GreencpnError):
    """The solver returned no usable plan (and no incumbent to fall back to)."""
