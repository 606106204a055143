"""``solver.window_rounding_slots``: job windows widened to multiples of the window when the
jobs are grouped for the MILP (optimize/inputs.py ``group_jobs``) — release rounded down,
deadline slot rounded up to the window's last slot, never past the horizon; a job due after
the horizon keeps the horizon's last slot. Widening only relaxes the MILP (a group's window
holds each member's own), so no member may lose a slot of its real window.
"""

from __future__ import annotations

from pathlib import Path

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs
from tests.optimize.conftest import START, write_fleet
from tests.optimize.test_plan_exact import SITE, job, pool


def _groups(tmp: Path, window: int) -> list[tuple[int, int, list[str], bool]]:
    """(release slot, deadline slot, member ids, due after the horizon) of each group: six
    hourly slots, one 4-GPU pool, jobs (release h, deadline h, work GPU-h):
    a (1, 3, 1), b (0, 4, 1), c (2, 5, 1), e (0, 8, 3) — e due 2 h after the 6-h horizon, so
    3 − 1 GPU × 2 h = 1 GPU-h of it must run inside."""
    path = write_fleet(
        tmp,
        carbon={"Z": [100.0] * 6},
        sites=SITE,
        pools=pool(gpn=4),
        jobs=[
            job("a", release=1, deadline=3),
            job("b", release=0, deadline=4),
            job("c", release=2, deadline=5),
            job("e", work=3.0, release=0, deadline=8),
        ],
    )
    text = path.read_text().replace(
        "mip_rel_gap = 0.0", f"mip_rel_gap = 0.0\nwindow_rounding_slots = {window}"
    )
    path.write_text(text)
    inp = make_inputs(load_config(path), SimClock(START))
    return [
        (g.release_slot, g.deadline_slot, [inp.jobs[i].id for i in g.jobs], bool(g.key[-1]))
        for g in inp.groups
    ]


def test_without_rounding_each_window_is_its_own_group(tmp_path: Path) -> None:
    """Slots: a 1–2 (deadline 3 h ends slot 2), b 0–3, c 2–4, e 0–5 (the horizon's last):
    four windows, four groups, sorted by (release, deadline)."""
    assert _groups(tmp_path, 1) == [
        (0, 3, ["b"], False),
        (0, 5, ["e"], True),
        (1, 2, ["a"], False),
        (2, 4, ["c"], False),
    ]


def test_two_slot_rounding_widens_windows_outwards(tmp_path: Path) -> None:
    """window 2: a 1–2 → 0–3 (release ⌊1/2⌋·2 = 0, deadline (⌊2/2⌋ + 1)·2 − 1 = 3), the same
    window as b (0–3: (⌊3/2⌋ + 1)·2 − 1 = 3), so a and b share a group; c 2–4 → 2–5
    ((⌊4/2⌋ + 1)·2 − 1 = 5 = T − 1); e, due after the horizon, keeps 0–5. Every group's window
    holds each member's own."""
    assert _groups(tmp_path, 2) == [
        (0, 3, ["a", "b"], False),
        (0, 5, ["e"], True),
        (2, 5, ["c"], False),
    ]
