"""The step ledger: one SQLite file (WAL) recording every control step.

``<state dir>/steps.sqlite`` holds

* ``steps`` — one row per step: when, the slot, mode, status, where the plan came from
  (``optimized`` / ``previous_shifted`` / ``safe``), solver status and gap, the leader epoch,
  phase times, per-site input provenance, errors and metrics (JSON);
* ``inputs`` — per step and site: the carbon source, when it was issued and its freshness
  (``fresh`` / ``stale`` / ``fallback``);
* ``plans`` — the plan document of the step (zlib-compressed JSON; the newest ``keep_plans``
  are kept, older ones pruned);
* ``actions`` — every action the step meant to take, one row per target: ``intended`` (from the
  reconcile diff) → ``started`` (written before the hardware call) → ``done`` / ``failed``,
  or ``skipped`` / ``shadow`` / ``abandoned``; with the leader epoch it was taken under;
* ``power_cycles`` — each node power-on / power-off that was carried out (the history min up /
  min down are counted from);
* ``failures`` — one row per failure (source down, solver error, actuator error, …);
* ``kv`` — small state (degraded pools, the previous forecast).

Every write is its own transaction, committed before the next hardware call, so a ``kill -9``
at any point leaves either no row or a row whose status says how far it got. :meth:`recover`
closes what an interrupted process left open: unfinished steps become ``interrupted``; actions
``started`` but not finished are re-observed by the caller (never repeated); ``intended`` ones
become ``abandoned``.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from greencpn.clock import ensure_utc, utc_text

LEDGER_FILE = "steps.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    slot_start TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT,
    plan_origin TEXT,
    solver_status TEXT,
    mip_gap REAL,
    epoch INTEGER,
    phase_s TEXT,
    sources TEXT,
    errors TEXT,
    metrics TEXT
);
CREATE TABLE IF NOT EXISTS inputs (
    step_id INTEGER NOT NULL REFERENCES steps(id),
    site TEXT NOT NULL,
    source TEXT,
    issued_at TEXT,
    freshness TEXT NOT NULL,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS plans (
    step_id INTEGER PRIMARY KEY REFERENCES steps(id),
    plan BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    step_id INTEGER NOT NULL REFERENCES steps(id),
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    pool TEXT,
    detail TEXT,
    status TEXT NOT NULL,
    epoch INTEGER,
    intended_at TEXT,
    started_at TEXT,
    finished_at TEXT,
    message TEXT
);
CREATE INDEX IF NOT EXISTS actions_step ON actions(step_id);
CREATE INDEX IF NOT EXISTS actions_status ON actions(status);
CREATE INDEX IF NOT EXISTS actions_lookup ON actions(step_id, kind, target, status);
CREATE TABLE IF NOT EXISTS power_cycles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    pool TEXT,
    event TEXT NOT NULL,
    at TEXT NOT NULL,
    step_id INTEGER,
    action_id INTEGER,
    epoch INTEGER
);
CREATE INDEX IF NOT EXISTS power_cycles_node ON power_cycles(node, at);
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    step_id INTEGER,
    at TEXT NOT NULL,
    type TEXT NOT NULL,
    "where" TEXT,
    message TEXT
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else utc_text(dt)


def _dt(text: str | None) -> datetime | None:
    if text is None:
        return None
    return ensure_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


@dataclass(frozen=True)
class ActionRow:
    id: int
    step_id: int
    kind: str
    target: str
    pool: str | None
    detail: dict[str, Any]
    status: str
    epoch: int | None
    message: str | None


@dataclass(frozen=True)
class PowerCycle:
    node: str
    pool: str | None
    event: str  # "on" | "off"
    at: datetime


class StepLedger:
    """The controller's SQLite step ledger (one writer: the controller process)."""

    def __init__(self, path: Path, keep_plans: int = 336) -> None:
        self.path = path
        self.keep_plans = keep_plans
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    @classmethod
    def open(cls, state_dir: str | Path, keep_plans: int = 336) -> StepLedger:
        return cls(Path(state_dir) / LEDGER_FILE, keep_plans)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[None]:
        """Group writes into one transaction (committed, durably in WAL, at the end)."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------------ steps
    def begin_step(self, at: datetime, slot_start: datetime, mode: str) -> int:
        cur = self.db.execute(
            "INSERT INTO steps(started_at, slot_start, mode) VALUES (?, ?, ?)",
            (_iso(at), _iso(slot_start), mode),
        )
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def record_inputs(self, step_id: int, sources: dict[str, dict]) -> None:
        with self.tx():
            for site, s in sources.items():
                self.db.execute(
                    "INSERT INTO inputs VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        step_id,
                        site,
                        s.get("source"),
                        s.get("issued_at"),
                        s.get("freshness", "fresh"),
                        json.dumps(s.get("detail") or {}, default=str),
                    ),
                )

    def record_plan(self, step_id: int, plan: dict[str, Any]) -> int:
        # check_circular=False: a plan document is a tree (the same text, without the id()
        # bookkeeping of every dict and list in it)
        text = json.dumps(plan, separators=(",", ":"), check_circular=False)
        blob = zlib.compress(text.encode(), 6)
        self.db.execute("INSERT OR REPLACE INTO plans VALUES (?, ?)", (step_id, blob))
        if self.keep_plans > 0:
            self.db.execute("DELETE FROM plans WHERE step_id <= ?", (step_id - self.keep_plans,))
        return len(blob)

    def plan(self, step_id: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT plan FROM plans WHERE step_id = ?", (step_id,)).fetchone()
        return None if row is None else json.loads(zlib.decompress(row[0]))

    def latest_plan(self) -> tuple[int, dict[str, Any]] | None:
        row = self.db.execute(
            "SELECT p.step_id, p.plan FROM plans p JOIN steps s ON s.id = p.step_id "
            "WHERE s.plan_origin IN ('optimized', 'previous_shifted') "
            "ORDER BY p.step_id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (int(row[0]), json.loads(zlib.decompress(row[1])))

    def finish_step(self, step_id: int, at: datetime, **fields: Any) -> None:
        cols = ["finished_at = ?"]
        vals: list[Any] = [_iso(at)]
        for k, v in fields.items():
            cols.append(f"{k} = ?")
            vals.append(json.dumps(v, default=str) if isinstance(v, dict | list) else v)
        vals.append(step_id)
        self.db.execute(f"UPDATE steps SET {', '.join(cols)} WHERE id = ?", vals)

    def steps(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM steps ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            for k in ("phase_s", "sources", "errors", "metrics"):
                if d.get(k):
                    d[k] = json.loads(d[k])
            out.append(d)
        return out

    # ------------------------------------------------------------------ failures
    def failure(self, step_id: int | None, at: datetime, type_: str, where: str, msg: str) -> None:
        self.db.execute(
            'INSERT INTO failures(step_id, at, type, "where", message) VALUES (?, ?, ?, ?, ?)',
            (step_id, _iso(at), type_, where, msg),
        )

    def failures(self, step_id: int | None = None) -> list[dict[str, Any]]:
        if step_id is None:
            rows = self.db.execute("SELECT * FROM failures ORDER BY id").fetchall()
        else:
            rows = self.db.execute(
                "SELECT * FROM failures WHERE step_id = ? ORDER BY id", (step_id,)
            ).fetchall()
        return [dict(r) for r in rows]

    # ------------------------------------------------------------------ actions
    def intend(
        self,
        step_id: int,
        at: datetime,
        kind: str,
        target: str,
        pool: str | None,
        detail: dict[str, Any] | None = None,
        status: str = "intended",
        epoch: int | None = None,
        message: str | None = None,
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO actions(step_id, kind, target, pool, detail, status, epoch, intended_at, "
            "message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                step_id,
                kind,
                target,
                pool,
                json.dumps(detail or {}, default=str),
                status,
                epoch,
                _iso(at),
                message,
            ),
        )
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def find_intended(self, step_id: int, kind: str, target: str) -> int | None:
        row = self.db.execute(
            "SELECT id FROM actions WHERE step_id = ? AND kind = ? AND target = ? "
            "AND status = 'intended' ORDER BY id LIMIT 1",
            (step_id, kind, target),
        ).fetchone()
        return None if row is None else int(row[0])

    def start(self, action_id: int, at: datetime, epoch: int | None) -> None:
        """Written (and committed) before the hardware call."""
        self.db.execute(
            "UPDATE actions SET status = 'started', started_at = ?, epoch = ? WHERE id = ?",
            (_iso(at), epoch, action_id),
        )

    def finish(self, action_id: int, at: datetime, status: str, message: str | None = None) -> None:
        self.db.execute(
            "UPDATE actions SET status = ?, finished_at = ?, message = ? WHERE id = ?",
            (status, _iso(at), message, action_id),
        )

    def close_intended(
        self, step_id: int, at: datetime, status: str, message: str, jobs: bool | None = None
    ) -> int:
        """Close the step's still-``intended`` actions (``jobs``: only job actions, only
        hardware actions, or all when ``None``)."""
        extra = (
            ""
            if jobs is None
            else (" AND kind LIKE 'job.%'" if jobs else " AND kind NOT LIKE 'job.%'")
        )
        cur = self.db.execute(
            "UPDATE actions SET status = ?, finished_at = ?, message = ? "
            "WHERE step_id = ? AND status = 'intended'" + extra,
            (status, _iso(at), message, step_id),
        )
        return cur.rowcount

    def skip_pool(self, step_id: int, pool: str, at: datetime, message: str) -> int:
        """Mark a pool's intended hardware actions of this step skipped (pool degraded)."""
        cur = self.db.execute(
            "UPDATE actions SET status = 'skipped', finished_at = ?, message = ? "
            "WHERE step_id = ? AND pool = ? AND status = 'intended' AND kind NOT LIKE 'job.%'",
            (_iso(at), message, step_id, pool),
        )
        return cur.rowcount

    def actions(self, step_id: int | None = None, status: str | None = None) -> list[ActionRow]:
        sql = "SELECT * FROM actions WHERE 1=1"
        args: list[Any] = []
        if step_id is not None:
            sql += " AND step_id = ?"
            args.append(step_id)
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        rows = self.db.execute(sql + " ORDER BY id", args).fetchall()
        return [
            ActionRow(
                int(r["id"]),
                int(r["step_id"]),
                r["kind"],
                r["target"],
                r["pool"],
                json.loads(r["detail"] or "{}"),
                r["status"],
                r["epoch"],
                r["message"],
            )
            for r in rows
        ]

    def step_actions(self, step_id: int) -> list[dict[str, Any]]:
        """The step's actions as :class:`~greencpn.controller.types.StepResult` lists them
        (kind, target, pool, detail = the message, else the detail, status, epoch), in id
        order: :meth:`actions` without parsing a detail the message replaces."""
        rows = self.db.execute(
            "SELECT kind, target, pool, detail, status, epoch, message FROM actions "
            "WHERE step_id = ? ORDER BY id",
            (step_id,),
        ).fetchall()
        return [
            {
                "kind": kind,
                "target": target,
                "pool": pool,
                "detail": message or json.loads(detail or "{}"),
                "status": status,
                "epoch": epoch,
            }
            for kind, target, pool, detail, status, epoch, message in rows
        ]

    # ------------------------------------------------------------------ power history
    def power_cycle(
        self,
        node: str,
        pool: str | None,
        event: str,
        at: datetime,
        step_id: int | None,
        action_id: int | None,
        epoch: int | None,
    ) -> None:
        self.db.execute(
            "INSERT INTO power_cycles(node, pool, event, at, step_id, action_id, epoch) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (node, pool, event, _iso(at), step_id, action_id, epoch),
        )

    def last_power_events(self, since: datetime) -> dict[str, PowerCycle]:
        """Per node, its newest power event at or after ``since``."""
        rows = self.db.execute(
            "SELECT node, pool, event, MAX(at) AS at FROM power_cycles WHERE at >= ? GROUP BY node",
            (_iso(since),),
        ).fetchall()
        out = {}
        for r in rows:
            at = _dt(r["at"])
            assert at is not None
            out[r["node"]] = PowerCycle(r["node"], r["pool"], r["event"], at)
        return out

    def power_cycles(self, limit: int = 1000) -> list[PowerCycle]:
        rows = self.db.execute(
            "SELECT node, pool, event, at FROM power_cycles ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [PowerCycle(r[0], r[1], r[2], _dt(r[3]) or datetime.min) for r in rows]

    # ------------------------------------------------------------------ kv
    def get_kv(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_kv(self, key: str, value: Any) -> None:
        self.db.execute(
            "INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
            "excluded.value",
            (key, json.dumps(value, default=str)),
        )

    # ------------------------------------------------------------------ recovery
    def recover(self, at: datetime) -> tuple[list[int], list[ActionRow]]:
        """Close what a killed process left open.

        Returns the ids of steps that never finished (now ``interrupted``) and the actions that
        were ``started`` but have no result: the caller re-observes each and calls
        :meth:`finish` with what it sees. ``intended`` actions of unfinished steps were never
        started; they become ``abandoned`` (the next step's diff re-decides them).
        """
        rows = self.db.execute("SELECT id FROM steps WHERE finished_at IS NULL").fetchall()
        ids = [int(r[0]) for r in rows]
        for sid in ids:
            self.close_intended(sid, at, "abandoned", "process ended before this action started")
            self.db.execute(
                "UPDATE steps SET finished_at = ?, status = 'interrupted' WHERE id = ?",
                (_iso(at), sid),
            )
            self.failure(sid, at, "interrupted", "step", "the step did not finish (process ended)")
        return ids, self.actions(status="started")

    def bytes(self) -> int:
        """Size of the ledger on disk (database + WAL)."""
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total


def since_hours(now: datetime, hours: float) -> datetime:
    return now - timedelta(hours=hours)
