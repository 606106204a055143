"""The memoised timestamp parsers of the anchor and the stability cost are functions of the
text only: a changed text gives a changed time, and a caller cannot change a cached one
(datetimes are immutable). plan_nodes_on (its slot lookup now found once for all pools)
still moves a plan onto this horizon slot by slot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np

from greencpn.controller import base
from greencpn.optimize import stability


def test_parsers_follow_the_text():
    for parse in (base._parse, stability._parse):
        a = parse("2026-03-01T10:00:00Z")
        assert a == datetime(2026, 3, 1, 10, tzinfo=UTC)
        assert parse("2026-03-01T10:00:01Z") == a + timedelta(seconds=1)
        assert parse("2026-03-01T12:00:00+02:00") == a
        assert parse("2026-03-01T10:00:00Z") == a  # asked again
    assert stability._parse("2026-03-01T12:00:00+02:00").utcoffset() == timedelta(0)


def test_plan_nodes_on_moves_slots_per_pool():
    t0 = datetime(2026, 3, 1, 10, tzinfo=UTC)
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    doc = {
        "horizon": {"slot_starts": [iso(t0 + timedelta(hours=h)) for h in range(3)]},
        "pools": [
            {"name": "a", "slots": [{"slot": i, "nodes_on": 10 + i} for i in range(3)]},
            {"name": "b", "slots": [{"slot": 2, "nodes_on": 9}]},
        ],
    }
    # this horizon starts one slot later and runs one slot past the document
    inp = SimpleNamespace(
        pools=[SimpleNamespace(name="a", nodes=11), SimpleNamespace(name="b", nodes=4)],
        T=3,
        slot_starts=[t0 + timedelta(hours=h) for h in (1, 2, 3)],
    )
    got = stability.plan_nodes_on(inp, doc)
    want = np.array([[11.0, 11.0, np.nan], [np.nan, 4.0, np.nan]])
    assert np.array_equal(got, want, equal_nan=True)
