"""The apply ledger's per-step queries: filtered in SQL (the control step opens the ledger
every step, so a query that reads the whole history makes each step slower than the last),
and the ``synchronous`` setting the control step opens it with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from greencpn.actuate.ledger import Ledger

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _history(led: Ledger, applies: int) -> tuple[int, int]:
    """``applies`` finished applies of 3 finished steps each, then one unfinished apply with
    one pending and one finished step; returns (unfinished apply id, pending step id)."""
    for i in range(applies):
        a = led.begin_apply(
            T0 + timedelta(hours=i), plan_path=None, slot=0, slot_start=T0, mode="act"
        )
        for k in range(3):
            led.record(a, T0, phase="p", action=f"a{k}", pool="x", targets=["n1"], status="ok")
        led.finish_apply(a, T0 + timedelta(hours=i, minutes=1), "applied")
    a = led.begin_apply(T0 + timedelta(days=1), plan_path=None, slot=0, slot_start=T0, mode="act")
    sid = led.intent(a, T0, phase="p", action="power_off", pool="x", targets=["n2"])
    led.record(a, T0, phase="p", action="drain", pool="x", targets=["n2"], status="ok")
    return a, sid


def test_unfinished_reads_only_unfinished_rows(tmp_path):
    with Ledger.open(tmp_path) as led:
        a, sid = _history(led, 20)
        statements: list[str] = []
        assert led._conn is not None
        led._conn.set_trace_callback(statements.append)
        applies, steps = led.unfinished()
        led._conn.set_trace_callback(None)
    assert [x.id for x in applies] == [a]
    assert [(s.id, s.status, s.action) for s in steps] == [(sid, "pending", "power_off")]
    # every SELECT over the two history tables is filtered (no scan of the whole history)
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert reads and all("WHERE" in s.upper() for s in reads), reads


def test_unfinished_uses_the_partial_indexes(tmp_path):
    with Ledger.open(tmp_path) as led:
        _history(led, 5)
        assert led._conn is not None
        plans = [
            " ".join(str(r[-1]) for r in led._conn.execute("EXPLAIN QUERY PLAN " + sql))
            for sql in (
                "SELECT * FROM steps WHERE status='pending' ORDER BY id",
                "SELECT * FROM applies WHERE finished_at IS NULL ORDER BY id",
            )
        ]
    assert "steps_pending" in plans[0], plans[0]
    assert "applies_unfinished" in plans[1], plans[1]


def test_close_unfinished_closes_only_the_open_ones(tmp_path):
    with Ledger.open(tmp_path) as led:
        a, sid = _history(led, 3)
        led.close_unfinished(T0 + timedelta(days=2), {"n2": "on"})
        assert led.unfinished() == ([], [])
        closed = {s.id: s for s in led.steps(a)}
        assert closed[sid].status == "interrupted"
        assert closed[sid].result["observed"] == {"n2": "on"}
        assert sum(1 for s in led.steps() if s.status == "interrupted") == 1
        assert [x.outcome for x in led.applies()] == ["applied"] * 3 + ["interrupted"]


@pytest.mark.parametrize(("mode", "code"), [("FULL", 2), ("NORMAL", 1)])
def test_open_synchronous(tmp_path, mode, code):
    with Ledger.open(tmp_path, synchronous=mode) as led:
        assert led._conn is not None
        assert led._conn.execute("PRAGMA synchronous").fetchone()[0] == code
        assert led._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_open_default_is_full(tmp_path):
    with Ledger.open(tmp_path) as led:
        assert led._conn is not None
        assert led._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_open_rejects_other_synchronous(tmp_path):
    with pytest.raises(ValueError, match="synchronous='OFF'"):
        Ledger.open(tmp_path, synchronous="OFF")
