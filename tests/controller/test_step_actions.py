"""StepLedger.step_actions (the step result's action list, read without parsing details a
message replaces) gives exactly what the list built from actions() gave."""

from __future__ import annotations

from datetime import UTC, datetime

from greencpn.controller.ledger import StepLedger

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _old_way(led: StepLedger, step_id: int) -> list[dict]:
    return [
        {
            "kind": a.kind,
            "target": a.target,
            "pool": a.pool,
            "detail": a.message or a.detail,
            "status": a.status,
            "epoch": a.epoch,
        }
        for a in led.actions(step_id)
    ]


def test_step_actions_match_the_action_rows(tmp_path):
    led = StepLedger.open(tmp_path)
    s1 = led.begin_step(T0, T0, "enforce")
    s2 = led.begin_step(T0, T0, "enforce")
    a = led.intend(s1, T0, "set_power_cap", "n1:gpu0", "p", {"before_w": 300.0, "after_w": 200})
    b = led.intend(s1, T0, "power_off", "n2", "p")
    c = led.intend(s1, T0, "job.defer", "j1", None, {"until": "2026-01-05T14:00:00Z"})
    led.intend(s2, T0, "power_on", "n3", "q", {"x": 1})
    led.start(a, T0, 7)
    led.finish(a, T0, "done", None)  # no message: the detail is shown
    led.finish(b, T0, "failed", "RuntimeError: boom")  # a message replaces the detail
    led.finish(c, T0, "shadow", "")  # an empty message: the detail again
    got = led.step_actions(s1)
    assert got == _old_way(led, s1)
    assert [x["detail"] for x in got] == [
        {"before_w": 300.0, "after_w": 200},
        "RuntimeError: boom",
        {"until": "2026-01-05T14:00:00Z"},
    ]
    assert got[0]["epoch"] == 7 and got[0]["status"] == "done"
    assert led.step_actions(s2) == _old_way(led, s2) and len(led.step_actions(s2)) == 1
    assert led.step_actions(s2 + 1) == []
    led.close()
