"""Validate a ``plan.json`` (schema ``greencpn.plan/1``) before ``greencpn apply`` observes or
touches anything.

Two checks, both before the first hook call:

1. :func:`load_plan_file` — the file against its schema (pydantic): a known schema version,
   finite numbers where numbers belong (``nodes_on`` a whole number >= 0, ``power_cap_w`` a
   positive number or null), a name and one entry per slot for every pool, no pool twice,
   ``slot_starts`` timezone-aware, strictly increasing, ``slot_minutes`` apart, and nesting no
   deeper than :data:`MAX_DEPTH`. Every problem is reported at once, each with its JSON path.
2. :func:`check_plan_against_config` — the fleet config is the authority for which pools and
   nodes exist: a plan pool the config does not have, a config pool the plan does not have,
   or a plan pool whose ``hostlist``/``nodes`` differ from the config's (a stale or edited
   plan) is refused. ``apply`` then only ever uses the config's hostlist.

Only the fields ``apply`` reads are typed; others (``sites``, ``totals``…) pass through. Of
``jobs`` (optional), each entry's per-job GPU cap ``power_cap_w`` (issue #14.3,
``cap_mode = "job"``: a positive number of watts or null, inside its pool's
``power_limit_min_w``..``power_limit_max_w`` when the plan gives them) are checked.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from greencpn.actuate.hostlist import expand
from greencpn.config import FleetConfig
from greencpn.errors import ConfigError

SCHEMA_RE = re.compile(r"greencpn\.plan/1(\.\d+)?")
"""Versions this greencpn reads: ``greencpn.plan/1`` and its additive minor versions ``/1.N``."""
MAX_DEPTH = 32
"""Deepest nesting of objects/arrays accepted (a real plan is 5 deep)."""
MAX_BYTES = 256 * 1024 * 1024
FIX = "pass a plan.json written by 'greencpn plan' (re-run it)"


class _Open(BaseModel):
    """Typed fields are checked; other fields pass through untouched."""

    model_config = ConfigDict(extra="allow", frozen=True)


def _watts_or_null(v: Any) -> Any:
    if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
        raise ValueError(f"must be a number of watts or null, got {v!r}")
    return v


class PlanJob(_Open):
    """A job of the plan; ``power_cap_w`` is its own GPU cap (``cap_mode = "job"``)."""

    id: str | None = None  # older plans' and hand-made jobs may lack fields: only caps bind
    pool: str | None = None
    power_cap_w: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="the job's GPU cap, W; null = pool's"
    )

    _number = field_validator("power_cap_w", mode="before")(_watts_or_null)


class PlanSlot(_Open):
    slot: StrictInt = Field(ge=0)
    nodes_on: StrictInt = Field(ge=0, description="nodes to keep on in this slot")
    power_cap_w: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="GPU power cap, W; null = leave"
    )

    _number = field_validator("power_cap_w", mode="before")(_watts_or_null)


class PlanPool(_Open):
    name: str = Field(min_length=1)
    site: str | None = None
    nodes: StrictInt | None = Field(default=None, ge=1)
    hostlist: str | None = None
    hook: dict[str, Any] | None = None
    power_limit_min_w: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    power_limit_max_w: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    power_limit_default_w: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    gpus_per_node: StrictInt | None = Field(default=None, ge=1)
    slots: list[PlanSlot] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_slots(self) -> PlanPool:
        seen = [s.slot for s in self.slots]
        dup = sorted({s for s in seen if seen.count(s) > 1})
        if dup:
            raise ValueError(f"slot(s) {dup} appear more than once")
        return self


class PlanHorizon(_Open):
    slot_minutes: StrictInt = Field(gt=0)
    slot_starts: list[AwareDatetime] = Field(min_length=1)

    @field_validator("slot_starts", mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        if isinstance(v, list):
            for i, s in enumerate(v):
                if not isinstance(s, str):
                    raise ValueError(f"[{i}] must be an ISO-8601 UTC string, got {s!r}")
        return v

    @model_validator(mode="after")
    def _spacing(self) -> PlanHorizon:
        step = timedelta(minutes=self.slot_minutes)
        for i in range(1, len(self.slot_starts)):
            if self.slot_starts[i] - self.slot_starts[i - 1] != step:
                raise ValueError(
                    f"slot_starts[{i}] is not slot_minutes={self.slot_minutes} after "
                    f"slot_starts[{i - 1}]"
                )
        return self


class PlanFile(_Open):
    schema_: str = Field(alias="schema")
    config: str | None = None
    horizon: PlanHorizon
    pools: list[PlanPool] = Field(min_length=1)
    jobs: list[PlanJob] = Field(default_factory=list)

    @field_validator("schema_")
    @classmethod
    def _version(cls, v: str) -> str:
        if not SCHEMA_RE.fullmatch(v):
            raise ValueError(
                f"schema {v!r} is not one this greencpn reads (greencpn.plan/1 or /1.N)"
            )
        return v

    @model_validator(mode="after")
    def _pools(self) -> PlanFile:
        names = [p.name for p in self.pools]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"pool(s) {dup} duplicated: each pool must appear once")
        n = len(self.horizon.slot_starts)
        for p in self.pools:
            missing = sorted(set(range(n)) - {s.slot for s in p.slots})
            extra = sorted({s.slot for s in p.slots} - set(range(n)))
            if missing or extra:
                raise ValueError(
                    f"pool {p.name!r}: slots must be 0..{n - 1} (one per horizon.slot_starts)"
                    + (f"; missing {missing}" if missing else "")
                    + (f"; outside the horizon {extra}" if extra else "")
                )
        by_name = {p.name: p for p in self.pools}
        for i, j in enumerate(self.jobs):
            pool = by_name.get(j.pool) if j.pool is not None else None
            if j.power_cap_w is None or pool is None:
                continue
            lo, hi = pool.power_limit_min_w, pool.power_limit_max_w
            if (lo is not None and j.power_cap_w < lo) or (hi is not None and j.power_cap_w > hi):
                raise ValueError(
                    f"jobs[{i}]({j.id}).power_cap_w={j.power_cap_w:g} W is outside pool "
                    f"{pool.name!r}'s range [{lo:g}, {hi:g}] W"
                    if lo is not None and hi is not None
                    else f"jobs[{i}]({j.id}).power_cap_w={j.power_cap_w:g} W is outside pool "
                    f"{pool.name!r}'s power limit range"
                )
        return self


def _depth(obj: Any) -> int:
    """Nesting depth, iteratively (a hostile file cannot blow the stack)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict | list):
            deepest = max(deepest, d)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


def _loc(loc: tuple[Any, ...], data: Any) -> str:
    """``('pools', 2, 'slots', 0, 'nodes_on')`` → ``pools[2](fra-a100).slots[0].nodes_on``."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                out += f"({node['name']})"
        else:
            part = "schema" if part == "schema_" else str(part)
            out += ("." if out else "") + part
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_plan(text: str, source: str) -> dict[str, Any]:
    """Parse and validate plan text; return the plan as a plain dict (as written)."""
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ConfigError(
            f"nested deeper than {MAX_DEPTH} levels", source=source, fix=FIX
        ) from None
    except ValueError as exc:  # JSONDecodeError and NaN/Infinity literals
        raise ConfigError(f"not valid JSON: {exc}", source=source, fix=FIX) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level is a {type(data).__name__}, not an object", source=source, fix=FIX
        )
    validate_plan(data, source)
    return data


def validate_plan(data: dict[str, Any], source: str | None) -> None:
    """Check a parsed plan against the schema; every problem in one :class:`ConfigError`."""
    if _depth(data) > MAX_DEPTH:
        raise ConfigError(f"nested deeper than {MAX_DEPTH} levels", source=source, fix=FIX)
    try:
        PlanFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(f"{_loc(tuple(e['loc']), data)}: {msg}")
        first = exc.errors()[0]
        raise ConfigError(
            "; ".join(problems),
            source=source,
            field=_loc(tuple(first["loc"]), data),
            fix=FIX,
        ) from None


def load_plan_file(path: str | Path) -> dict[str, Any]:
    """Read and validate ``plan.json`` (see the module docstring)."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_BYTES:
            raise ConfigError(f"larger than {MAX_BYTES // 2**20} MiB", source=str(p), fix=FIX)
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(
            "plan file not found",
            source=str(p),
            fix="run 'greencpn plan' first or pass the path of its plan.json",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it: {exc}", source=str(p), fix=FIX) from None
    return parse_plan(text, str(p))


def check_plan_against_config(
    plan: dict[str, Any], config: FleetConfig, source: str | None = None
) -> None:
    """Refuse a plan whose pools or nodes are not the config's (all problems at once)."""
    cfg = {p.name: p for p in config.pools}
    problems: list[str] = []
    first_field: str | None = None
    seen: set[str] = set()
    for i, pool in enumerate(plan.get("pools", [])):
        name = pool.get("name")
        where = f"pools[{i}]({name})"
        if name in seen:
            problems.append(f"{where}: pool {name!r} duplicated")
            first_field = first_field or where
            continue
        seen.add(name)
        pcfg = cfg.get(name)
        if pcfg is None:
            problems.append(f"{where}: pool {name!r} is not in the config {config.path}")
            first_field = first_field or where
            continue
        cfg_nodes = expand(pcfg.hostlist) if pcfg.hostlist else []
        plan_hl = pool.get("hostlist")
        if plan_hl:
            try:
                plan_nodes = expand(plan_hl)
            except ConfigError as exc:
                problems.append(f"{where}.hostlist: {exc.reason}")
                first_field = first_field or f"{where}.hostlist"
                continue
            extra = [n for n in plan_nodes if n not in set(cfg_nodes)]
            gone = [n for n in cfg_nodes if n not in set(plan_nodes)]
            if extra or gone:
                problems.append(
                    f"{where}.hostlist {plan_hl!r} is not the config's "
                    f"{pcfg.hostlist!r}"
                    + (f"; node(s) the config does not list: {', '.join(extra)}" if extra else "")
                    + (f"; config node(s) missing from the plan: {', '.join(gone)}" if gone else "")
                )
                first_field = first_field or f"{where}.hostlist"
        n = pool.get("nodes")
        if n is not None and n != pcfg.nodes:
            problems.append(f"{where}.nodes = {n}, the config says {pcfg.nodes}")
            first_field = first_field or f"{where}.nodes"
        size = len(cfg_nodes) or pcfg.nodes
        for j, s in enumerate(pool.get("slots", [])):
            if isinstance(s.get("nodes_on"), int) and s["nodes_on"] > size:
                problems.append(
                    f"{where}.slots[{j}].nodes_on = {s['nodes_on']} is more than the pool's "
                    f"{size} node(s)"
                )
                first_field = first_field or f"{where}.slots[{j}].nodes_on"
                break
    missing = [n for n in cfg if n not in seen]
    if missing:
        problems.append(f"config pool(s) {missing} are not in the plan")
        first_field = first_field or "pools"
    if problems:
        raise ConfigError(
            "the plan does not match the fleet config (the config is the authority for which "
            "pools and nodes exist): " + "; ".join(problems),
            source=source,
            field=first_field,
            fix=f"re-run 'greencpn plan' with {config.path}, or pass --config with the plan's config",
        )


__all__ = [
    "MAX_DEPTH",
    "PlanFile",
    "check_plan_against_config",
    "load_plan_file",
    "parse_plan",
    "validate_plan",
]
