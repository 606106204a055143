"""Lever attribution: how much of the MILP policy's carbon saving each lever brings.

Method (the runs are ordinary replays of the ``milp`` policy, see
:mod:`greencpn.whatif.policies.milp` for what switching a lever off means):

* ``levers=none`` — the same controller step with no lever: the attribution's reference;
* ``levers=<lever>`` for each of ``time``, ``space``, ``power``, ``caps`` — that lever alone;
* ``levers=all`` — every lever;
* optionally (``leave_one_out``) ``levers=all`` minus one lever.

A lever's **alone saving** is ``carbon(none) − carbon(lever alone)``; its **leave-one-out
saving** is ``carbon(all but lever) − carbon(all)`` (what is lost without it). The alone
savings need not add up to the all-lever saving ``carbon(none) − carbon(all)``: levers interact
(waiting for a green hour at another site needs both ``time`` and ``space``; a node that is off
cannot be capped). The difference is reported as ``interaction_kg`` = all − sum of alone
savings (positive: the levers do more together than apart).
"""

from __future__ import annotations

from typing import Any

from greencpn.whatif.policies.milp import LEVERS

ALL = "all"
NONE = "none"


def _spec(base: str, levers: str) -> str:
    name, _, rest = base.partition(":")
    parts = [p for p in rest.split(",") if p and not p.startswith("levers=")]
    return f"{name}:" + ",".join([*parts, f"levers={levers}"])


def attribution_specs(base: str = "milp", *, leave_one_out: bool = False) -> list[str]:
    """The policy specs of an attribution of ``base`` (a ``milp[:...]`` spec; its own
    ``levers=`` is replaced)."""
    specs = [_spec(base, NONE)] + [_spec(base, lv) for lv in LEVERS] + [_spec(base, ALL)]
    if leave_one_out:
        for lv in LEVERS:
            specs.append(_spec(base, "+".join(x for x in LEVERS if x != lv)))
    return specs


def attribute(rows: list[dict[str, Any]], base: str = "milp") -> dict[str, Any]:
    """Attribution table from comparison rows (``metrics.compare``) that include
    :func:`attribution_specs` of ``base``.

    Returns:
        ``{"reference", "all", "reference_carbon_kg", "all_saving_kg", "levers": [...],
        "sum_alone_kg", "interaction_kg"}``; each lever row has ``alone_saving_kg``,
        ``alone_share_of_all_saving`` (denominator: the all-lever saving) and, when run,
        ``leave_one_out_saving_kg``.

    Raises:
        KeyError: a required run is missing from ``rows``.
    """
    by = {r["policy"]: r for r in rows}
    ref_spec, all_spec = _spec(base, NONE), _spec(base, ALL)
    for s in (ref_spec, all_spec, *(_spec(base, lv) for lv in LEVERS)):
        if s not in by:
            raise KeyError(f"attribution needs the run {s!r}")
    ref = by[ref_spec]["carbon_kg"]
    all_kg = by[all_spec]["carbon_kg"]
    all_saving = ref - all_kg
    out = []
    for lv in LEVERS:
        alone = ref - by[_spec(base, lv)]["carbon_kg"]
        row: dict[str, Any] = {
            "lever": lv,
            "policy": _spec(base, lv),
            "alone_saving_kg": alone,
            "alone_saving_pct_of_reference": 100.0 * alone / ref if ref else None,
            "alone_share_of_all_saving": alone / all_saving if abs(all_saving) > 1e-12 else None,
            "leave_one_out_saving_kg": None,
        }
        loo = _spec(base, "+".join(x for x in LEVERS if x != lv))
        if loo in by:
            row["leave_one_out_saving_kg"] = by[loo]["carbon_kg"] - all_kg
        out.append(row)
    sum_alone = sum(r["alone_saving_kg"] for r in out)
    return {
        "reference": ref_spec,
        "all": all_spec,
        "reference_carbon_kg": ref,
        "all_saving_kg": all_saving,
        "all_saving_pct_of_reference": 100.0 * all_saving / ref if ref else None,
        "levers": out,
        "sum_alone_kg": sum_alone,
        "interaction_kg": all_saving - sum_alone,
        "method": "alone saving = carbon(levers=none) - carbon(lever alone); leave-one-out = "
        "carbon(all but lever) - carbon(all); alone savings need not sum to the all-lever "
        "saving (interaction = all - sum of alone)",
    }
