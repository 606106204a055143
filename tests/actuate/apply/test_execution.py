"""Exceptions become outcomes in one place (greencpn/actuate/execution.py), and a hook's
``TemporaryError(retry_after_s)`` is retried after that delay within the step's budget.

Time is a SimClock; ``sleep`` advances it, so the waits cost no real time.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from greencpn.actuate.execution import execute
from greencpn.actuate.outcomes import StepStatus
from greencpn.clock import SimClock
from greencpn.errors import PermanentError, TemporaryError

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


class Flaky:
    """Raises the given errors in turn, then returns ``"done"``; counts its calls."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def _run(fn: Flaky, budget_s: float) -> tuple[object, SimClock, list[float]]:
    clock = SimClock(T0)
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock.advance(timedelta(seconds=s))

    return execute(fn, clock=clock, sleep=sleep, budget_s=budget_s), clock, slept


def test_temporary_error_with_retry_after_is_retried_after_that_delay() -> None:
    fn = Flaky(TemporaryError("PDB blocks eviction", retry_after_s=7.0))
    out, clock, slept = _run(fn, budget_s=60)
    assert out.result == "done" and out.exception is None and out.status == StepStatus.OK  # type: ignore[attr-defined]
    assert fn.calls == 2 and slept == [7.0] and clock.now() == T0 + timedelta(seconds=7)
    assert out.attempts == 2 and out.waited_s == 7.0  # type: ignore[attr-defined]


def test_retries_stop_at_the_step_budget() -> None:
    # 3 temporary failures asking 25 s each: retries at 0+25 and 25+25 fit a 60 s budget, a
    # third (50+25 = 75 s) would not; the last error is the outcome
    errs = [TemporaryError(f"busy {i}", retry_after_s=25.0) for i in range(3)]
    fn = Flaky(*errs)
    out, clock, slept = _run(fn, budget_s=60)
    assert fn.calls == 3 and slept == [25.0, 25.0]
    assert out.exception is errs[2] and out.status == StepStatus.ERROR  # type: ignore[attr-defined]
    assert out.retry_after_s == 25.0 and out.attempts == 3  # type: ignore[attr-defined]
    assert "busy 2" in out.error and "after 3 attempts" in out.error  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "exc",
    [TemporaryError("no delay given"), PermanentError("BMC said no"), RuntimeError("bug")],
)
def test_other_errors_end_the_step_at_once(exc: Exception) -> None:
    fn = Flaky(exc)
    out, clock, slept = _run(fn, budget_s=600)
    assert fn.calls == 1 and slept == [] and clock.now() == T0
    assert out.exception is exc and out.error == f"{type(exc).__name__}: {exc}"  # type: ignore[attr-defined]


def test_zero_budget_never_retries() -> None:
    fn = Flaky(TemporaryError("later", retry_after_s=1.0))
    out, _, slept = _run(fn, budget_s=0)
    assert fn.calls == 1 and slept == [] and out.exception is not None  # type: ignore[attr-defined]


def test_base_exceptions_are_not_outcomes() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(interrupted, clock=SimClock(T0), sleep=lambda s: None, budget_s=10)


# ----------------------------------------------------------------------- through apply


def test_apply_retries_a_hook_that_asks_to_retry_once(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2)])
    w.hooks["p"].fail(
        "power_off", TemporaryError("BMC busy", retry_after_s=30.0), node="pn2", times=1
    )
    start = w.clock.now()
    rep = w.apply(w.plan({"p": [(0, None)] * 3}))
    assert w.hooks["p"].nodes["pn1"].power.value == "off"
    assert w.hooks["p"].nodes["pn2"].power.value == "off"
    step = next(s for s in w.ledger().steps(rep.apply_id) if s.action == "power_off")
    assert step.status == "ok" and step.result["attempts"] == 2
    assert step.result["retry_waits_s"] == 30.0
    assert w.clock.now() - start >= timedelta(seconds=30)
    assert w.ledger().node("pn2").power == "off" and rep.exit_code == 0
    ok = next(s for s in rep.steps if s.action == "power_off")
    assert ok.status == StepStatus.OK and ok.message == "after 2 attempts"


def test_apply_gives_up_when_the_delay_is_over_the_budget(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=2)])
    w.hooks["p"].fail(
        "power_off", TemporaryError("BMC busy", retry_after_s=300.0), node="pn2", times=1
    )
    settings = replace(w.settings, retry_budget_s=60.0)
    rep = w.apply(w.plan({"p": [(0, None)] * 3}), settings=settings)
    step = next(s for s in w.ledger().steps(rep.apply_id) if s.action == "power_off")
    assert step.status == "error" and "BMC busy" in step.result["error"]
    assert "attempts" not in step.result  # one attempt: the 300 s retry would pass 60 s
    assert w.hooks["p"].nodes["pn2"].power.value == "on" and rep.exit_code == 1


def test_gpu_cap_write_is_retried_too(make_world):  # type: ignore[no-untyped-def]
    w = make_world([dict(name="p", nodes=1, gpus_per_node=1)], gpu_limit_w=400.0)
    orig = w.gpu("pn1").set_power_limit_w
    calls: list[float] = []

    def once_busy(index, watts, **kw):  # type: ignore[no-untyped-def]
        calls.append(watts)
        if len(calls) == 1:
            raise TemporaryError("GPU busy", retry_after_s=2.0)
        return orig(index, watts, **kw)

    w.gpu("pn1").set_power_limit_w = once_busy  # type: ignore[method-assign]
    rep = w.apply(w.plan({"p": [(1, 300.0)] * 3}))
    assert calls == [300.0, 300.0] and w.caps("pn1") == [300.0] and rep.exit_code == 0


def test_control_file_reads_the_budget(tmp_path):  # type: ignore[no-untyped-def]
    from greencpn.actuate.safety import ControlSettings
    from greencpn.errors import ConfigError

    assert ControlSettings.from_mapping({"retry_budget_s": 0}).retry_budget_s == 0.0
    assert ControlSettings().retry_budget_s == 60.0
    with pytest.raises(ConfigError, match="control.retry_budget_s"):
        ControlSettings.from_mapping({"retry_budget_s": -1})


def test_backoff_mode_retries_errors_without_a_delay_doubling_up_to_the_count() -> None:
    # the daemon's act phase: retries=2, backoff 2 s → waits 2 s, 4 s; a third failure is the
    # outcome (3 attempts); each retry is reported before its wait
    fn = Flaky(*(TemporaryError(f"BMC busy {i}") for i in range(3)))
    clock = SimClock(T0)
    slept: list[float] = []
    seen: list[tuple[str, int, float]] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock.advance(timedelta(seconds=s))

    out = execute(
        fn,
        clock=clock,
        sleep=sleep,
        budget_s=float("inf"),
        retries=2,
        backoff_s=2.0,
        on_retry=lambda e, n, d: seen.append((str(e), n, d)),
    )
    assert slept == [2.0, 4.0] and fn.calls == 3
    assert out.attempts == 3 and str(out.exception) == "BMC busy 2"
    assert seen == [("BMC busy 0", 1, 2.0), ("BMC busy 1", 2, 4.0)]
    # a retry_after_s still wins over the backoff, and success ends the retries
    fn2 = Flaky(TemporaryError("agent 503", retry_after_s=9.0))
    out2 = execute(fn2, clock=clock, sleep=sleep, budget_s=60, retries=2, backoff_s=2.0)
    assert out2.result == "done" and slept[-1] == 9.0 and out2.attempts == 2
