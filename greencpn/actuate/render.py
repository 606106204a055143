"""Rendering: the diff as a table before anything is changed, and the report after.

Text only; nothing here observes or changes the fleet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from greencpn.actuate.hostlist import compress
from greencpn.actuate.outcomes import EXIT_NOT_OBSERVABLE, ApplyOutcome
from greencpn.actuate.plan_slot import SlotRef
from greencpn.actuate.reconcile import CAP_TOLERANCE_W, PoolDiff, unobservable

if TYPE_CHECKING:
    from greencpn.actuate.report import ApplyReport


def _range_w(values: Sequence[float]) -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{lo:g}" if abs(hi - lo) < CAP_TOLERANCE_W else f"{lo:g}-{hi:g}"


def format_diff(
    diffs: Sequence[PoolDiff], slot: SlotRef, *, plan_path: str | None, mode: str
) -> str:
    """The diff as a fixed-width table plus per-pool notes."""
    head = (
        f"plan {plan_path or '-'}  slot {slot.index} "
        f"[{slot.start:%Y-%m-%d %H:%M}Z, {slot.end:%H:%M}Z)  mode: {mode}"
    )
    cols = (
        "pool",
        "site",
        "hook",
        "on now",
        "unknown",
        "target",
        "power off",
        "power on",
        "cap now W",
        "cap target W",
        "GPUs to cap",
    )
    rows = [cols]
    for d in diffs:
        caps = [w for ws in d.caps_now_w.values() for w in ws]
        n_lower = len(d.cap_lower) + sum(len(j.lower) for j in d.job_caps)
        n_raise = len(d.cap_raise) + sum(len(j.raise_) for j in d.job_caps)
        cap_txt = (
            "-"
            if not n_lower + n_raise
            else " ".join(
                t
                for t in (
                    f"{n_lower} lower" if n_lower else "",
                    f"{n_raise} raise" if n_raise else "",
                )
                if t
            )
        )
        rows.append(
            (
                d.name,
                d.site,
                d.hook_kind,
                f"{d.on_now}/{len(d.nodes)}",
                str(len(d.unknown)) if d.unknown else "-",
                str(d.target_nodes_on),
                compress(d.power_off) if d.power_off else "-",
                compress(d.power_on) if d.power_on else "-",
                _range_w(caps),
                "-" if d.target_cap_w is None else f"{d.target_cap_w:g}",
                cap_txt,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = [head, ""]
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    extra = []
    for d in diffs:
        for h in d.mark_failed:
            extra.append(f"  {d.name}: mark {h.node} failed: {h.reason}")
        if d.resume:
            extra.append(f"  {d.name}: resume {compress(d.resume)} (drained by greencpn, on again)")
        for h in d.held:
            extra.append(f"  {d.name}: held {h.node}: {h.reason}")
        for j in d.job_caps:
            moves = [
                t
                for t in (
                    f"{len(j.lower)} lower" if j.lower else "",
                    f"{len(j.raise_)} raise" if j.raise_ else "",
                )
                if t
            ]
            now = sorted({c.before_w for c in j.lower + j.raise_})
            extra.append(
                f"  {d.name}: job {j.job_id}: own cap {j.cap_w:g} W on {','.join(j.targets)}"
                + (
                    f" ({', '.join(moves)}; now {'/'.join(f'{w:g}' for w in now)} W)"
                    if moves
                    else " (already set)"
                )
            )
        for h in d.job_caps_held:
            extra.append(f"  {d.name}: {h.node}: own cap not applied: {h.reason}")
        for n in d.notes:
            extra.append(f"  {d.name}: {n}")
    if extra:
        lines += ["", "notes:", *extra]
    unknown = unobservable(diffs)
    if unknown:
        lines += ["", unobservable_line(diffs)]
    elif not any(d.actions for d in diffs):
        off_target = [d.name for d in diffs if d.actuated and d.on_now != d.target_nodes_on]
        if off_target:
            lines += [
                "",
                f"nothing can be switched now, but {len(off_target)} pool(s) differ from the "
                f"plan: {', '.join(off_target)} (see the held nodes above)",
            ]
        else:
            lines += ["", "nothing to do: the fleet already matches the plan for this slot"]
    return "\n".join(lines)


def unobservable_line(diffs: Sequence[PoolDiff]) -> str:
    unknown = unobservable(diffs)
    total = sum(len(d.nodes) for d in diffs)
    pools = ", ".join(f"{d.name}: {compress(d.unknown)}" for d in diffs if d.unknown)
    return (
        f"fleet not observable: {len(unknown)} of {total} node(s) not observable "
        f"(status unknown; denominator: all nodes of the plan's pools) — {pools}; they are not "
        f"switched and their caps not set (exit {EXIT_NOT_OBSERVABLE})"
    )


def format_report(report: ApplyReport) -> str:
    """The steps done (or not), the warnings and the verdict, one line each."""
    lines = []
    for note in [*report.warnings, *report.interrupted]:
        lines.append(f"warning: {note}")
    for s in report.steps:
        tgt = (
            compress(list(s.targets))
            if s.targets and all(":" not in t for t in s.targets)
            else ",".join(s.targets[:4])
            + (f",…(+{len(s.targets) - 4})" if len(s.targets) > 4 else "")
        )
        lines.append(
            f"  [{s.status:8}] {s.phase:11} {s.action:15} {s.pool or '-':12} {tgt}"
            + (f"  — {s.message}" if s.message else "")
        )
    if report.jobs is not None:
        lines.append(report.jobs.format() or "  jobs: nothing to do")
    if report.failed_nodes:
        lines.append(f"re-plan needed: node(s) marked failed: {compress(report.failed_nodes)}")
    if report.caps_not_applied:
        lines.append(
            f"{len(report.caps_not_applied)} GPU cap(s) not applied (the plan's cap is outside "
            "the device range)"
        )
    if report.caps_not_read:
        lines.append(
            f"{len(report.caps_not_read)} node(s) whose GPU caps were not read or set: "
            + compress(report.caps_not_read)
        )
    if report.job_caps_not_applied:
        lines.append(
            f"{len(report.job_caps_not_applied)} job cap(s) not applied (their GPUs kept the "
            "pool's cap): " + ", ".join(report.job_caps_not_applied)
        )
    if report.unknown_nodes:
        lines.append(unobservable_line(report.diffs))
    verdict = {
        ApplyOutcome.DRY_RUN: "dry run: nothing changed",
        ApplyOutcome.SHADOW: "shadow mode: nothing changed (allow actuation with --allow-actuation or "
        "allow_actuation = true in control.toml)",
        ApplyOutcome.APPLIED: "applied",
        ApplyOutcome.NOTHING_TO_DO: (
            "nothing changed on the nodes greencpn can see"
            if report.unknown_nodes
            else "nothing changed: the fleet already matched the plan"
        ),
        ApplyOutcome.PARTIAL: f"partial: {len(report.problems)} step(s) not done — recorded in the ledger",
    }[report.outcome]
    ref = f" (ledger apply #{report.apply_id})" if report.apply_id is not None else ""
    lines.append(f"result: {verdict}{ref}")
    return "\n".join(lines)
