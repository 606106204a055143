"""Safety rules enforced at apply time, whatever the plan says.

* **Shadow by default** — greencpn changes nothing unless actuation is allowed, by
  ``allow_actuation = true`` in ``control.toml`` (next to the fleet config) or by
  ``greencpn apply --allow-actuation``.
* **Running work** — a node is powered off only once it is idle: it is drained first and
  watched for at most ``drain_timeout_s``; a node still busy then is resumed (only if greencpn
  drained it), skipped and reported. A node whose hook cannot report its work
  (``running_jobs is None``) counts as busy: it is never chosen for power-off.
* **Not ours** — a node drained by someone else (maintenance) is never powered off, and
  greencpn only ever resumes nodes it drained itself (``drained_by_us`` in the ledger).
* **Spares** — ``pool.spares`` nodes always stay on: the target is never below it, and the
  designated spare nodes (``[control.spare_nodes]``, else the first ``spares`` names of the
  pool's hostlist) are never chosen for power-off.
* **Min up / min down** — a node started less than ``pool.min_up_h`` ago is not stopped; a node
  stopped less than ``pool.min_down_h`` ago is not started. The times come from the ledger; a
  node with no history counts as having been in its state for long enough.
* **Rate limit** — power operations (one per node on or off) draw from a token bucket of
  ``max_power_ops_per_min`` per minute (burst ``power_ops_burst``), driven by the injected
  clock and kept in the ledger across applies. Operations without a token are deferred.
* **Boot timeout** — a node not on within its boot timeout
  (``max(boot_timeout_min_s, boot_timeout_factor × pool.boot_time_min)``) is marked *failed*
  in the ledger and left alone (no retry storm) until an operator clears it
  (``greencpn apply --clear-failed NODE``); it is reported so its work is re-planned.

The node-choice helpers here are pure functions of observed state, ledger history and
``now``; :mod:`greencpn.actuate.apply` calls them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from greencpn.actuate.base import NodePower, NodeStatus
from greencpn.actuate.ledger import NodeRecord
from greencpn.clock import Clock
from greencpn.errors import ConfigError

CONTROL_FILE = "control.toml"
WORK_UNKNOWN = "running work unknown (the hook reports no job count): counted busy, not powered off"


_POSITIVE = Field(gt=0, allow_inf_nan=False)
_NON_NEGATIVE = Field(ge=0, allow_inf_nan=False)


class ControlFile(BaseModel):
    """``[control]`` as written in control.toml: the schema :class:`ControlSettings` is read
    through (same fields and defaults; see its docstring for their meaning)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    allow_actuation: bool = False
    max_power_ops_per_min: Annotated[float, _POSITIVE] = 10.0
    power_ops_burst: Annotated[int, Field(ge=1)] = 10
    drain_timeout_s: Annotated[float, _POSITIVE] = 300.0
    poll_interval_s: Annotated[float, _POSITIVE] = 5.0
    boot_timeout_factor: Annotated[float, _POSITIVE] = 2.0
    boot_timeout_min_s: Annotated[float, _NON_NEGATIVE] = 300.0
    wait_for_boot: bool = True
    spare_nodes: dict[str, list[str]] = {}
    retry_budget_s: Annotated[float, _NON_NEGATIVE] = 60.0
    power_off_confirm_s: Annotated[float, _POSITIVE] = 120.0


_CONTROL_FIXES = {
    "extra_forbidden": f"use only {sorted(ControlFile.model_fields)} (see docs/apply.md)",
    "bool_type": "write true or false",
    "int_type": "write a whole number, e.g. 10",
    "float_type": "write a number",
    "greater_than": "write a number above 0",
    "greater_than_equal": "write a number >= the bound named",
    "finite_number": "write a finite number",
    "dict_type": 'map pool names to lists of node names, e.g. fra-a100 = ["fra001", "fra002"]',
    "list_type": 'write a list of node names, e.g. ["fra001", "fra002"]',
    "string_type": "write node names as quoted strings",
}


def _control_error(exc: ValidationError, source: str | None) -> ConfigError:
    errs = exc.errors()
    err = errs[0]
    field = "control" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
    msg = f"{err['msg']}, got {err.get('input')!r}"
    if err["type"] == "extra_forbidden":
        msg = f"unknown key {err['loc'][-1]!r}"
    more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
    return ConfigError(
        msg + more,
        source=source,
        field=field,
        fix=_CONTROL_FIXES.get(err["type"], "see docs/apply.md"),
    )


@dataclass(frozen=True)
class ControlSettings:
    """Controller settings from ``[control]`` in ``control.toml`` (every field optional).

    Attributes:
        allow_actuation: act on hardware; ``False`` = shadow mode (show and record only).
        max_power_ops_per_min: sustained node power operations per minute (token refill rate).
        power_ops_burst: token bucket size: operations allowed back to back.
        drain_timeout_s: how long to wait for a drained node to become idle, s.
        poll_interval_s: how often to re-read node status while waiting, s.
        boot_timeout_factor: boot timeout as a multiple of ``pool.boot_time_min``.
        boot_timeout_min_s: the boot timeout is never shorter than this, s.
        wait_for_boot: wait (bounded by the boot timeout) for started nodes in this apply, then
            resume them and set their caps; otherwise a later apply finishes the job.
        spare_nodes: per pool, the node names that are the spares.
        retry_budget_s: how long one step may keep retrying a hook or GPU call that failed
            with a ``TemporaryError`` carrying ``retry_after_s`` (a retry starts only if it
            starts within this many seconds of the first attempt; 0: never retry), s.
        power_off_confirm_s: how long to wait, after a hook accepted a power-off it carries
            out later (the node agent's 202), for the hook to say whether it ran, s.
    """

    allow_actuation: bool = False
    max_power_ops_per_min: float = 10.0
    power_ops_burst: int = 10
    drain_timeout_s: float = 300.0
    poll_interval_s: float = 5.0
    boot_timeout_factor: float = 2.0
    boot_timeout_min_s: float = 300.0
    wait_for_boot: bool = True
    spare_nodes: dict[str, list[str]] = field(default_factory=dict)
    retry_budget_s: float = 60.0
    power_off_confirm_s: float = 120.0
    source: str | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> ControlSettings:
        """Read ``[control]`` from a TOML file; unknown keys and bad values raise ConfigError."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(
                "control file not found", source=str(p), fix="create it or drop --control"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"not valid TOML: {exc}", source=str(p), fix="fix the TOML syntax"
            ) from None
        ctl = data.get("control")
        if not isinstance(ctl, dict):
            raise ConfigError(
                "missing [control] table",
                source=str(p),
                field="control",
                fix="put the settings under a [control] header",
            )
        return cls.from_mapping(ctl, source=str(p))

    @classmethod
    def from_mapping(cls, ctl: dict[str, Any], source: str | None = None) -> ControlSettings:
        """Validate a ``[control]`` table through :class:`ControlFile` (strict pydantic: unknown
        keys, wrong types and out-of-range values refused with file / field / fix)."""
        try:
            valid = ControlFile.model_validate(ctl)
        except ValidationError as exc:
            raise _control_error(exc, source) from None
        return cls(source=source, **valid.model_dump(exclude_unset=True))

    @classmethod
    def for_config(
        cls, config_path: str | Path, control_path: str | Path | None = None
    ) -> ControlSettings:
        """``control_path`` if given, else ``control.toml`` beside the config, else defaults."""
        if control_path is not None:
            return cls.from_file(control_path)
        beside = Path(config_path).resolve().parent / CONTROL_FILE
        return cls.from_file(beside) if beside.is_file() else cls()

    def with_actuation(self, allowed: bool) -> ControlSettings:
        return replace(self, allow_actuation=self.allow_actuation or allowed)


# --------------------------------------------------------------------------- token bucket


class TokenBucket:
    """Rate limit for power operations: ``rate_per_min`` tokens per minute, at most ``capacity``.

    Refills from the injected clock; :meth:`state` / :meth:`from_state` persist it (ledger).
    """

    def __init__(
        self,
        rate_per_min: float,
        capacity: int,
        clock: Clock,
        tokens: float | None = None,
        updated_at: datetime | None = None,
    ) -> None:
        self.rate_per_min = float(rate_per_min)
        self.capacity = int(capacity)
        self._clock = clock
        self._tokens = float(capacity if tokens is None else min(tokens, capacity))
        self._updated_at = updated_at or clock.now()

    def _refill(self) -> None:
        now = self._clock.now()
        elapsed_min = max(0.0, (now - self._updated_at).total_seconds() / 60.0)
        self._tokens = min(float(self.capacity), self._tokens + elapsed_min * self.rate_per_min)
        self._updated_at = max(now, self._updated_at)

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def take(self, n: int = 1) -> bool:
        """Take ``n`` tokens if there are enough; otherwise take none and return False."""
        self._refill()
        if self._tokens + 1e-9 >= n:
            self._tokens -= n
            return True
        return False

    def give_back(self, n: int = 1) -> None:
        """Return tokens for an operation that was reserved but not carried out."""
        self._refill()
        self._tokens = min(float(self.capacity), self._tokens + n)

    def seconds_until(self, n: int = 1) -> float:
        """How long until ``n`` tokens are available."""
        missing = n - self.tokens
        return 0.0 if missing <= 0 else missing / self.rate_per_min * 60.0

    def state(self) -> dict[str, Any]:
        self._refill()
        return {"tokens": self._tokens, "updated_at": self._updated_at.isoformat()}

    @classmethod
    def from_state(
        cls, state: dict[str, Any] | None, rate_per_min: float, capacity: int, clock: Clock
    ) -> TokenBucket:
        if not state:
            return cls(rate_per_min, capacity, clock)
        return cls(
            rate_per_min,
            capacity,
            clock,
            tokens=float(state["tokens"]),
            updated_at=datetime.fromisoformat(state["updated_at"]),
        )


# --------------------------------------------------------------------------- node choice


@dataclass(frozen=True)
class Held:
    """A node the safety rules kept from being switched, and why."""

    node: str
    reason: str


def designated_spares(
    pool: str, nodes: Sequence[str], spares: int, settings: ControlSettings
) -> list[str]:
    """The pool's spare nodes: from ``[control.spare_nodes]``, else its first ``spares`` names."""
    named = settings.spare_nodes.get(pool)
    if named is not None:
        unknown = [n for n in named if n not in set(nodes)]
        if unknown:
            raise ConfigError(
                f"spare node(s) {unknown} are not in pool {pool!r}",
                source=settings.source,
                field=f"control.spare_nodes.{pool}",
                fix="name nodes from the pool's hostlist",
            )
        return list(named)
    return list(nodes[:spares])


def boot_timeout_s(boot_time_min: float, settings: ControlSettings) -> float:
    return max(settings.boot_timeout_min_s, settings.boot_timeout_factor * boot_time_min * 60.0)


def _fmt_h(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.2f} h"


def counts_as_on(st: NodeStatus) -> bool:
    return st.power in (NodePower.ON, NodePower.BOOTING)


def choose_power_off(
    statuses: Sequence[NodeStatus],
    count: int,
    records: dict[str, NodeRecord],
    now: datetime,
    *,
    min_up_h: float,
    spares: Sequence[str],
) -> tuple[list[str], list[Held]]:
    """Pick ``count`` nodes to power off.

    Candidates are nodes that are on (not booting), not spares and not marked failed, and have
    been on for at least ``min_up_h``. Idle nodes come first, then those on longest (no history
    = on longest), then by name. Returns the chosen nodes and, when fewer than ``count`` could
    be chosen, the nodes held back with their reason.
    """
    if count <= 0:
        return [], []
    spare_set = set(spares)
    cands: list[tuple[int, datetime, str]] = []
    held: list[Held] = []
    min_up = timedelta(hours=min_up_h)
    for st in statuses:
        rec = records.get(st.name) or NodeRecord(name=st.name)
        if st.power != NodePower.ON or rec.failed:
            continue
        if st.name in spare_set:
            held.append(Held(st.name, "spare"))
            continue
        if st.drained and not rec.drained_by_us:
            held.append(Held(st.name, "drained by someone else (maintenance?); not touched"))
            continue
        if rec.on_since is not None and now - rec.on_since < min_up:
            held.append(
                Held(
                    st.name, f"min up {min_up_h:g} h not met (on for {_fmt_h(now - rec.on_since)})"
                )
            )
            continue
        since = rec.on_since or datetime.min.replace(tzinfo=now.tzinfo)
        if st.running_jobs is None:
            held.append(Held(st.name, WORK_UNKNOWN))
            continue
        cands.append((1 if st.running_jobs > 0 else 0, since, st.name))
    cands.sort()
    chosen = [name for _, _, name in cands[:count]]
    return chosen, (held if len(chosen) < count else [])


def choose_power_on(
    statuses: Sequence[NodeStatus],
    count: int,
    records: dict[str, NodeRecord],
    now: datetime,
    *,
    min_down_h: float,
    spares: Sequence[str],
) -> tuple[list[str], list[Held]]:
    """Pick ``count`` nodes to power on.

    Candidates are nodes that are off, not marked failed, and have been off for at least
    ``min_down_h``. Spares come first, then those off longest (no history = off longest), then
    by name. Failed nodes are reported as held.
    """
    if count <= 0:
        return [], []
    spare_set = set(spares)
    cands: list[tuple[int, datetime, str]] = []
    held: list[Held] = []
    min_down = timedelta(hours=min_down_h)
    for st in statuses:
        rec = records.get(st.name) or NodeRecord(name=st.name)
        if st.power not in (NodePower.OFF, NodePower.FAILED) and not rec.failed:
            continue
        if rec.failed or st.power == NodePower.FAILED:
            held.append(
                Held(st.name, f"failed ({rec.failed_reason or st.detail or 'reported by hook'})")
            )
            continue
        if rec.off_since is not None and now - rec.off_since < min_down:
            held.append(
                Held(
                    st.name,
                    f"min down {min_down_h:g} h not met (off for {_fmt_h(now - rec.off_since)})",
                )
            )
            continue
        since = rec.off_since or datetime.min.replace(tzinfo=now.tzinfo)
        cands.append((0 if st.name in spare_set else 1, since, st.name))
    cands.sort()
    chosen = [name for _, _, name in cands[:count]]
    return chosen, (held if len(chosen) < count else [])
