"""On-disk SQLite cache of fetched carbon series, with TTLs and daily request budgets.

Rows are keyed by ``(source, zone, signal, endpoint, key)`` where ``key`` identifies the
request within the endpoint (the issue time of a forecast, or the range of a history query).
Each row stores the series and when it was fetched. A row is *fresh* while
``now - fetched_at <= ttl`` for its endpoint; past that it is *stale* but is still served when
the live API fails, tagged with ``stale_age_s``.

The same database counts HTTP requests per source per UTC day so free tiers are not exceeded
(:meth:`SeriesCache.consume_budget`). Time always comes from the injected clock.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greencpn.clock import Clock, SystemClock

if TYPE_CHECKING:
    from greencpn.sources.base import CarbonSeries

log = logging.getLogger(__name__)

#: Seconds to wait for another process's lock on the database before going on without it.
LOCK_TIMEOUT_S = 5.0

# pandas/numpy/requests are imported inside the functions that need them: a fresh cache hit
# printed by ``greencpn forecast`` then needs only the standard library (start-up time).

#: Default time-to-live per endpoint kind, seconds. Forecasts are re-issued hourly by the
#: providers (WattTime every 5 min); history is revised for about a day.
DEFAULT_TTL_S: dict[str, float] = {
    "latest": 300.0,
    "forecast": 1800.0,
    "history": 6 * 3600.0,
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    source TEXT NOT NULL, zone TEXT NOT NULL, signal TEXT NOT NULL,
    endpoint TEXT NOT NULL, key TEXT NOT NULL,
    fetched_at REAL NOT NULL, first_ts REAL, last_ts REAL, payload TEXT NOT NULL,
    PRIMARY KEY (source, zone, signal, endpoint, key)
);
CREATE INDEX IF NOT EXISTS series_fresh ON series (source, zone, signal, endpoint, fetched_at);
CREATE TABLE IF NOT EXISTS budget (
    source TEXT NOT NULL, day TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (source, day)
);
"""


@dataclass(frozen=True)
class CacheHit:
    """A cached series with its fetch time; ``age_s`` is measured against the cache's clock."""

    series: CarbonSeries
    fetched_at: datetime
    age_s: float
    fresh: bool


def default_cache_path() -> Path:
    """``$GREENCPN_CACHE_DIR/sources.sqlite`` or ``~/.cache/greencpn/sources.sqlite``."""
    import os

    base = os.environ.get("GREENCPN_CACHE_DIR") or "~/.cache/greencpn"
    return Path(base).expanduser() / "sources.sqlite"


class SeriesCache:
    """SQLite-backed cache of :class:`CarbonSeries`.

    Args:
        path: database file (created with its parent folder), or ``":memory:"``.
        clock: tells ``now`` for TTLs, ages and budget days.
        ttl_s: per-endpoint TTL overrides (endpoint kinds: ``latest``, ``forecast``,
            ``history``; an unknown endpoint uses the ``forecast`` TTL).
        daily_budget: per-source maximum HTTP requests per UTC day (missing = unlimited).
    """

    def __init__(
        self,
        path: str | Path,
        clock: Clock | None = None,
        *,
        ttl_s: dict[str, float] | None = None,
        daily_budget: dict[str, int] | None = None,
    ) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock or SystemClock()
        self.ttl_s = {**DEFAULT_TTL_S, **(ttl_s or {})}
        self.daily_budget = dict(daily_budget or {})
        self._lock = threading.Lock()
        self.problem: str | None = None  # why the on-disk cache is not used, if it is not
        self._warned = False
        self._db = self._open()

    def _connect(self, path: str) -> sqlite3.Connection:
        db = sqlite3.connect(path, check_same_thread=False, timeout=LOCK_TIMEOUT_S)
        try:
            db.executescript(_SCHEMA)
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def _open(self) -> sqlite3.Connection:
        """Open the database; a corrupt file is moved aside and a new one started, a locked
        or unwritable one is replaced by an in-memory cache for this process (logged)."""
        try:
            return self._connect(self.path)
        except sqlite3.OperationalError as exc:  # locked, read-only, disk full...
            what = "is locked by another process" if "locked" in str(exc) else "cannot be used"
            self.problem = f"{self.path} {what} ({exc})"
            log.warning(
                "carbon cache %s; running without the on-disk cache this time (fix: check "
                "that no other greencpn process hangs on it, and its permissions)",
                self.problem,
            )
        except sqlite3.DatabaseError as exc:  # "file is not a database", malformed image
            stamp = self.clock.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
            aside = f"{self.path}.corrupt-{stamp}"
            try:
                os.replace(self.path, aside)
            except OSError as move_exc:
                self.problem = f"{self.path} is corrupt ({exc}) and cannot be moved ({move_exc})"
                log.warning("carbon cache %s; running without it", self.problem)
            else:
                log.warning(
                    "carbon cache %s is corrupt (%s); moved it to %s and started a new one",
                    self.path,
                    exc,
                    aside,
                )
                try:
                    return self._connect(self.path)
                except sqlite3.DatabaseError as exc2:
                    self.problem = f"{self.path}: a new cache cannot be created ({exc2})"
                    log.warning("carbon cache %s; running without it", self.problem)
        return self._connect(":memory:")

    def _failed(self, exc: sqlite3.Error, doing: str) -> None:
        """A database error during use: logged (once per cache), the operation is skipped."""
        if not self._warned:
            self._warned = True
            log.warning(
                "carbon cache %s: %s failed (%s); going on without the cached data",
                self.path,
                doing,
                exc,
            )

    def close(self) -> None:
        self._db.close()

    # ---------------------------------------------------------------------------- series
    def ttl_for(self, endpoint: str) -> float:
        return self.ttl_s.get(endpoint, self.ttl_s["forecast"])

    def put(
        self,
        source: str,
        zone: str,
        signal: str,
        endpoint: str,
        key: str,
        series: CarbonSeries,
        fetched_at: datetime | None = None,
    ) -> None:
        """Store ``series`` (replacing an earlier row with the same key)."""
        fetched = (fetched_at or self.clock.now()).timestamp()
        idx = series.intensity_g_per_kwh.index
        first = idx[0].timestamp() if len(idx) else None
        last = idx[-1].timestamp() if len(idx) else None
        payload = encode_series(series)
        with self._lock:
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO series VALUES (?,?,?,?,?,?,?,?,?)",
                    (source, zone, signal, endpoint, key, fetched, first, last, payload),
                )
                self._db.commit()
            except sqlite3.Error as exc:
                self._failed(exc, "storing a series")

    def get(self, source: str, zone: str, signal: str, endpoint: str, key: str) -> CacheHit | None:
        """The row with exactly this key, fresh or stale, or None."""
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT fetched_at, payload FROM series WHERE source=? AND zone=? AND "
                    "signal=? AND endpoint=? AND key=?",
                    (source, zone, signal, endpoint, key),
                ).fetchone()
            except sqlite3.Error as exc:
                self._failed(exc, "reading a series")
                return None
        return self._hit(row, endpoint)

    def latest(
        self,
        source: str,
        zone: str,
        signal: str,
        endpoint: str,
        *,
        covering: datetime | None = None,
    ) -> CacheHit | None:
        """The most recently fetched row for the endpoint (any key), fresh or stale.

        Args:
            covering: if given, only rows whose series reaches past this time qualify.
        """
        row = self._latest_row(source, zone, signal, endpoint, covering)
        return self._hit(row, endpoint)

    def latest_raw(
        self,
        source: str,
        zone: str,
        signal: str,
        endpoint: str,
        *,
        covering: datetime | None = None,
    ) -> tuple[dict[str, Any], float, bool] | None:
        """Like :meth:`latest` but without pandas: ``(payload dict, age_s, fresh)``; the
        payload is the JSON of :func:`encode_series` (``t`` epoch seconds, ``v`` values...)."""
        row = self._latest_row(source, zone, signal, endpoint, covering)
        if row is None:
            return None
        age = self.clock.now().timestamp() - row[0]
        return json.loads(row[1]), age, age <= self.ttl_for(endpoint)

    def _latest_row(
        self, source: str, zone: str, signal: str, endpoint: str, covering: datetime | None
    ) -> tuple[float, str] | None:
        sql = (
            "SELECT fetched_at, payload FROM series WHERE source=? AND zone=? AND signal=? "
            "AND endpoint=?"
        )
        args: list[object] = [source, zone, signal, endpoint]
        if covering is not None:
            sql += " AND last_ts >= ?"
            args.append(covering.timestamp())
        sql += " ORDER BY fetched_at DESC LIMIT 1"
        with self._lock:
            try:
                row = self._db.execute(sql, args).fetchone()
            except sqlite3.Error as exc:
                self._failed(exc, "reading a series")
                return None
        return row

    def history_rows(self, zone: str, *, source: str | None = None) -> list[CarbonSeries]:
        """Every cached series of ``zone`` (all endpoints), oldest fetch first — the raw
        material for a fallback forecaster when the API is down."""
        sql = "SELECT payload FROM series WHERE zone=?"
        args: list[object] = [zone]
        if source is not None:
            sql += " AND source=?"
            args.append(source)
        sql += " ORDER BY fetched_at ASC"
        with self._lock:
            try:
                rows = self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                self._failed(exc, "reading the history")
                return []
        return [decode_series(r[0]) for r in rows]

    def _hit(self, row: tuple[float, str] | None, endpoint: str) -> CacheHit | None:
        if row is None:
            return None
        fetched = datetime.fromtimestamp(row[0], UTC)
        age = (self.clock.now() - fetched).total_seconds()
        return CacheHit(
            series=decode_series(row[1]),
            fetched_at=fetched,
            age_s=age,
            fresh=age <= self.ttl_for(endpoint),
        )

    # ---------------------------------------------------------------------------- budget
    def consume_budget(self, source: str) -> int:
        """Count one request against ``source``'s budget for today (UTC).

        Returns:
            The number of requests made today including this one.

        Raises:
            BudgetExceededError: the budget is used up; ``retry_after_s`` is the time until
                the next UTC midnight. The request is not counted. (A database error is
                logged and the request allowed, uncounted: returns 0.)
        """
        now = self.clock.now().astimezone(UTC)
        day = now.date().isoformat()
        limit = self.daily_budget.get(source)
        with self._lock:
            try:
                return self._consume(source, day, limit, now)
            except sqlite3.Error as exc:
                self._failed(exc, "counting the request budget")
                return 0

    def _consume(self, source: str, day: str, limit: int | None, now: datetime) -> int:
        from greencpn.sources.http import BudgetExceededError

        row = self._db.execute(
            "SELECT count FROM budget WHERE source=? AND day=?", (source, day)
        ).fetchone()
        used = row[0] if row else 0
        if limit is not None and used >= limit:
            midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
            raise BudgetExceededError(
                f"{source}: daily request budget of {limit} used up ({day} UTC); serving "
                "cached data. Fix: raise the budget in the config if your plan allows more",
                retry_after_s=(midnight - now).total_seconds(),
            )
        self._db.execute(
            "INSERT INTO budget VALUES (?,?,1) ON CONFLICT(source, day) "
            "DO UPDATE SET count = count + 1",
            (source, day),
        )
        self._db.commit()
        return used + 1

    def budget_used(self, source: str) -> int:
        day = self.clock.now().astimezone(UTC).date().isoformat()
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT count FROM budget WHERE source=? AND day=?", (source, day)
                ).fetchone()
            except sqlite3.Error as exc:
                self._failed(exc, "reading the request budget")
                return 0
        return int(row[0]) if row else 0


# -------------------------------------------------------------------------------- encoding
def pd_index(ser: Any) -> Any:
    """The series' index (typed loosely: a tz-aware DatetimeIndex)."""
    return ser.index


def encode_series(s: CarbonSeries) -> str:
    """Compact JSON: epoch-second index, float values, flags and provenance."""
    ser = s.intensity_g_per_kwh
    idx = pd_index(ser)
    ts = (idx.as_unit("ns").asi8 // 10**9).tolist() if len(idx) else []
    vals = [None if v != v else float(v) for v in ser.to_numpy(dtype=float)]
    est = None if s.estimated is None else [bool(x) for x in s.estimated.to_numpy()]
    quant = {
        str(q): [None if v != v else float(v) for v in qs.to_numpy(dtype=float)]
        for q, qs in s.quantiles.items()
    }
    return json.dumps(
        {
            "zone": s.zone,
            "t": ts,
            "v": vals,
            "est": est,
            "signal": s.signal,
            "accounting": s.accounting,
            "source": s.source,
            "issued_at": s.issued_at.timestamp() if s.issued_at else None,
            "q": quant,
        },
        separators=(",", ":"),
    )


def decode_series(text: str) -> CarbonSeries:
    import numpy as np
    import pandas as pd

    from greencpn.sources.base import CarbonSeries

    d = json.loads(text)
    idx = pd.DatetimeIndex(
        np.asarray(d["t"], dtype="int64").astype("datetime64[s]").astype("datetime64[ns]"), tz=UTC
    )
    values = pd.Series(np.asarray(d["v"], dtype=float), index=idx, name="intensity_g_per_kwh")
    est = None if d["est"] is None else pd.Series(np.asarray(d["est"], dtype=bool), index=idx)
    quant = {
        float(q): pd.Series(np.asarray(v, dtype=float), index=idx)
        for q, v in d.get("q", {}).items()
    }
    issued = datetime.fromtimestamp(d["issued_at"], UTC) if d["issued_at"] is not None else None
    return CarbonSeries(
        zone=d["zone"],
        intensity_g_per_kwh=values,
        signal=d["signal"],
        accounting=d["accounting"],
        source=d["source"],
        issued_at=issued,
        estimated=est,
        quantiles=quant,
    )


def mark_stale(hit: CacheHit) -> CarbonSeries:
    """The cached series tagged as a cache fallback with its age."""
    return replace(hit.series, stale_age_s=hit.age_s, fallback="cache")
