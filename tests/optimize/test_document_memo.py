"""plan.json's timestamps (``iso_utc``, memoised) are a function of the instant only: a
changed time gives a changed text, the same instant in another zone the same text, and a
naive time (read as local time) is never cached, so a changed TZ setting is followed."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from greencpn.optimize.document import iso_utc


def test_iso_utc_follows_the_instant():
    a = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert iso_utc(a) == "2026-03-01T10:00:00Z"
    assert iso_utc(a + timedelta(seconds=1)) == "2026-03-01T10:00:01Z"
    assert iso_utc(a.astimezone(timezone(timedelta(hours=-5)))) == "2026-03-01T10:00:00Z"
    assert iso_utc(a) == "2026-03-01T10:00:00Z"  # asked again after the others


@pytest.mark.skipif(not hasattr(time, "tzset"), reason="time.tzset is POSIX only")
def test_iso_utc_naive_follows_the_tz_setting(monkeypatch):
    naive = datetime(2026, 3, 1, 10, 0)
    try:
        monkeypatch.setenv("TZ", "UTC")
        time.tzset()
        assert iso_utc(naive) == "2026-03-01T10:00:00Z"
        monkeypatch.setenv("TZ", "Etc/GMT-2")  # UTC+2
        time.tzset()
        assert iso_utc(naive) == "2026-03-01T08:00:00Z"
    finally:
        monkeypatch.undo()
        time.tzset()
