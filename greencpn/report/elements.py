"""The report's neutral pieces — :class:`Table`, :class:`Image`, ``Block`` — and the number
formatting every section uses; the plan dict's schema check."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from greencpn.errors import ConfigError

SCHEMA_PREFIX = "greencpn.plan/1"

# rows of the comparison table: (label, key in totals/baselines, decimals)
METRICS: list[tuple[str, str, int]] = [
    ("Energy (kWh)", "energy_kwh", 1),
    ("Carbon (kg CO2e)", "carbon_kg", 1),
    ("Cost", "cost", 2),
    ("Late jobs", "late_jobs", 0),
    ("Late work (GPU-h)", "late_gpu_h", 1),
    ("Unserved work (GPU-h)", "unserved_gpu_h", 1),
]
BASELINES = [
    ("carbon_agnostic", "carbon-agnostic"),
    ("shutdown_idle", "shutdown-idle"),
    ("carbon_aware_greedy", "carbon-aware greedy"),
]


# ----------------------------------------------------------------------------- formatting


def fmt_num(value: Any, decimals: int = 1) -> str:
    """A number with thousands separators and fixed decimals; '–' when missing."""
    if value is None:
        return "–"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞"
    return f"{x:,.{decimals}f}"


def pct_diff(plan_value: Any, base_value: Any) -> str:
    """(plan − baseline) / baseline in percent, signed; '–' when undefined."""
    try:
        p, b = float(plan_value), float(base_value)
    except (TypeError, ValueError):
        return "–"
    if b == 0:
        return "±0.0 %" if p == 0 else "–"
    d = 100.0 * (p - b) / abs(b)
    return f"{d:+.1f} %"


def _range(values: list[float], decimals: int = 0) -> str:
    """'lo–hi', or one value when they are equal, or '–' when empty."""
    if not values:
        return "–"
    lo, hi = fmt_num(min(values), decimals), fmt_num(max(values), decimals)
    return lo if lo == hi else f"{lo}–{hi}"


def _seconds(v: Any) -> str:
    return "–" if v is None else f"{float(v):.2f} s"


# ----------------------------------------------------------------------------- blocks


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)  # right-align these columns


@dataclass
class Image:
    file: str
    alt: str


Block = tuple[str, Any]  # ("h1" | "h2" | "p" | "ul" | "table" | "img", payload)


def _check_plan(plan: Any) -> None:
    if not isinstance(plan, dict):
        raise ConfigError(
            "the plan is not a JSON object", source="plan", fix="pass the dict read from plan.json"
        )
    schema = str(plan.get("schema", ""))
    if not schema.startswith(SCHEMA_PREFIX):
        raise ConfigError(
            f"unsupported plan schema {schema!r}",
            source="plan",
            field="schema",
            fix=f"render a plan written by this greencpn version ({SCHEMA_PREFIX})",
        )
    for key in ("horizon", "pools", "sites", "totals"):
        if key not in plan:
            raise ConfigError(
                f"the plan has no {key!r}",
                source="plan",
                field=key,
                fix="re-run greencpn plan to write a complete plan.json",
            )


def _sum(slots: list[dict[str, Any]], key: str) -> float:
    return sum(float(s.get(key) or 0.0) for s in slots)


def currency_label(plan: dict[str, Any]) -> str:
    cur = plan.get("currency")
    return str(cur) if cur else "currency not stated"
