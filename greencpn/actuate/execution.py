"""The one place where an apply step's exception becomes an outcome.

Every hook call and GPU cap write of an apply runs through :func:`execute` (as kopf's
``execution.py`` turns every handler exception into an ``Outcome``): it returns an
:class:`Outcome` — the call's result, or the exception it ended with — and never raises an
:class:`Exception` (a :class:`BaseException` such as ``KeyboardInterrupt`` still surfaces).

**Retry.** A :class:`~greencpn.errors.TemporaryError` that carries ``retry_after_s`` (the hook
says when to come back: a Kubernetes disruption budget, an agent's ``Retry-After``) is retried
after that delay, as long as the retry still starts within the step's budget
(``budget_s`` after the first attempt, :attr:`ControlSettings.retry_budget_s`). A temporary
error without a delay, a :class:`~greencpn.errors.PermanentError` or any other exception ends
the step at once: retrying those is the next apply's job, after a fresh observation. Time is
read from the clock and waited through ``sleep``, both passed in, so tests never wait.

**Backoff** (the daemon's act phase, :mod:`greencpn.controller.actuation`): with ``retries``
set, a TemporaryError *without* a delay is retried too, after ``backoff_s`` doubling at each
attempt, at most ``retries`` times (and still within ``budget_s``); ``on_retry`` is told of
each retry before the wait, so the caller can record it.

Observation reads (a hook's ``status``, a node's GPU list) go through :func:`capture`: one
attempt, its exception as the outcome (the node then reads as unknown, the caps are left).

Retrying a whole hook call is safe because hooks read before they write: the nodes already
changed by the failed attempt report ``changed = false`` the second time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from greencpn.actuate.outcomes import StepStatus
from greencpn.clock import Clock
from greencpn.errors import TemporaryError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one step's call came to.

    Attributes:
        result: the call's return value (None when it raised).
        exception: the exception the last attempt raised, or None.
        attempts: how many times the call was made (1 without retries).
        waited_s: total time slept between attempts, s.
        retry_after_s: the delay the last TemporaryError asked for (None otherwise); set when
            the budget did not allow that retry.
    """

    result: T | None = None
    exception: Exception | None = None
    attempts: int = 1
    waited_s: float = 0.0
    retry_after_s: float | None = None

    @property
    def status(self) -> StepStatus:
        return StepStatus.OK if self.exception is None else StepStatus.ERROR

    @property
    def error(self) -> str:
        """``"Type: message"`` of the exception (with the retries made), or ``""``."""
        if self.exception is None:
            return ""
        text = f"{type(self.exception).__name__}: {self.exception}"
        if self.attempts > 1:
            text += f" (after {self.attempts} attempts, {self.waited_s:g} s of retry waits)"
        return text


def execute(
    fn: Callable[[], T],
    *,
    clock: Clock,
    sleep: Callable[[float], None],
    budget_s: float,
    what: str = "step",
    retries: int | None = None,
    backoff_s: float = 0.0,
    on_retry: Callable[[TemporaryError, int, float], None] | None = None,
) -> Outcome[T]:
    """Run ``fn`` and turn what it raises into an :class:`Outcome` (see the module docstring).

    Args:
        fn: the call (no arguments; bind them with :func:`functools.partial`).
        clock: tells the time the budget is measured in.
        sleep: waits between attempts (a test passes one that advances a SimClock).
        budget_s: a retry may start at most this many seconds after the first attempt began.
        what: names the step in the log.
        retries: with backoff: at most this many retries of any TemporaryError (None: only
            errors that carry ``retry_after_s`` are retried, as many as the budget allows).
        backoff_s: first backoff delay for a TemporaryError without ``retry_after_s``, doubles.
        on_retry: called ``(exception, retry number, delay_s)`` before each retry's wait.
    """
    started = clock.now()
    attempts = 0
    waited = 0.0
    while True:
        attempts += 1
        try:
            return Outcome(result=fn(), attempts=attempts, waited_s=waited)
        except TemporaryError as exc:
            delay = exc.retry_after_s
            if retries is not None:
                if attempts > retries:
                    return Outcome(exception=exc, attempts=attempts, waited_s=waited)
                if delay is None or delay < 0:
                    delay = backoff_s * 2 ** (attempts - 1)
            if delay is None or delay < 0:
                return Outcome(exception=exc, attempts=attempts, waited_s=waited)
            elapsed = (clock.now() - started).total_seconds()
            if elapsed + delay > budget_s:
                log.warning(
                    "%s: %s; a retry in %g s would pass the step's budget of %g s",
                    what,
                    exc,
                    delay,
                    budget_s,
                )
                return Outcome(
                    exception=exc, attempts=attempts, waited_s=waited, retry_after_s=delay
                )
            log.info("%s: %s; retrying in %g s (attempt %d)", what, exc, delay, attempts + 1)
            if on_retry is not None:
                on_retry(exc, attempts, delay)
            sleep(delay)
            waited += delay
        except Exception as exc:
            return Outcome(exception=exc, attempts=attempts, waited_s=waited)


def capture(fn: Callable[[], T]) -> Outcome[T]:
    """One attempt of ``fn``, its :class:`Exception` as the outcome (no retry, no waiting)."""
    try:
        return Outcome(result=fn())
    except Exception as exc:
        return Outcome(exception=exc)
