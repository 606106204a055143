"""The apply ledger's memoised helpers (timestamp parsing and writing, the node upsert's SQL)
cannot give stale records: a row changed between two reads reads changed, and a bad field
is refused on every call, not only the first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from greencpn.actuate import ledger as ledmod
from greencpn.actuate.ledger import Ledger, NodeRecord

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_node_records_follow_every_update(tmp_path):
    with Ledger.open(tmp_path) as led:
        led.update_node("n1", pool="a", power="on", seen_at=T0, on_since=T0)
        first = led.node_records()["n1"]
        # read twice (the memoised parse is used the second time), then changed
        assert led.node_records()["n1"] == first
        later = T0 + timedelta(minutes=7, microseconds=3)
        led.update_node("n1", power="off", seen_at=later, off_since=later)
        led.update_node("n1", boot_deadline=None, failed=True, failed_reason="x")
        rec = led.node_records()["n1"]
        assert rec == NodeRecord(
            name="n1",
            pool="a",
            power="off",
            seen_at=later,
            on_since=T0,
            off_since=later,
            failed=True,
            failed_reason="x",
        )
        assert led.node("n1") == rec  # the single-node read gives the same record
        assert led.node("absent") == NodeRecord(name="absent")
        # the same field set in another order is another statement, and still right
        led.update_node("n1", off_since=T0, power="on")
        rec2 = led.node_records()["n1"]
        assert (rec2.power, rec2.off_since, rec2.seen_at) == ("on", T0, later)


def test_unknown_node_field_is_refused_every_time(tmp_path):
    with Ledger.open(tmp_path) as led:
        for _ in range(2):  # lru_cache keeps no exception: the second call raises too
            with pytest.raises(ValueError, match="unknown node field"):
                led.update_node("n1", colour="red")


def test_timestamp_text_is_a_function_of_the_instant():
    a = datetime(2026, 3, 1, 10, 0, 0, 250, tzinfo=UTC)
    b = a + timedelta(microseconds=1)
    assert ledmod._iso(a) == "2026-03-01T10:00:00.000250Z"
    assert ledmod._iso(b) == "2026-03-01T10:00:00.000251Z"  # a changed input, a changed text
    # the same instant in another zone is the same UTC text
    assert ledmod._iso(a.astimezone(timezone(timedelta(hours=2)))) == ledmod._iso(a)
    assert ledmod._dt(ledmod._iso(b)) == b
    assert ledmod._dt("2026-03-01T10:00:00Z") != ledmod._dt("2026-03-01T10:00:01Z")
    assert ledmod._dt(None) is None and ledmod._iso(None) is None
    for _ in range(2):  # a naive time is refused on every call
        with pytest.raises(ValueError, match="no timezone"):
            ledmod._iso(datetime(2026, 3, 1, 10, 0))


def test_step_ledger_timestamp_text_follows_the_instant():
    from greencpn.controller import ledger as steps

    a = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert steps._iso(a) == "2026-03-01T10:00:00Z"
    assert steps._iso(a + timedelta(microseconds=5)) == "2026-03-01T10:00:00.000005Z"
    assert steps._iso(a.astimezone(timezone(timedelta(hours=9)))) == "2026-03-01T10:00:00Z"
    for _ in range(2):
        with pytest.raises(ValueError, match="no timezone"):
            steps._iso(datetime(2026, 3, 1, 10, 0))
