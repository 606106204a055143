"""Small parts of the report, each on a hand-written input with its exact expected output: the
HTML headline, the cost column's currency, the carbon plot's legend, the summary's line on
actuals, and the progress display without ``-v``. These are the cases the second seeded
mutation sample of issue 15 item 5 (seed 20261203, mutants 41–100) showed no test pinned; the
mutants are named in bench/results/mutation.md.
"""

from __future__ import annotations

import copy
import io
import logging
from pathlib import Path
from typing import Any

import matplotlib
import pytest

from greencpn.report.cli import signal_lines
from greencpn.report.elements import Table
from greencpn.report.plots import plot_carbon_load, plot_power_caps, plot_work_by_site
from greencpn.report.progress import PlanProgress
from greencpn.report.tables import comparison_table
from greencpn.report.writers import to_html
from tests.report.conftest import capture_saved_figures

matplotlib.use("Agg", force=True)


def test_html_styles_the_first_paragraph_as_the_headline() -> None:
    """The first paragraph (the headline sentence) gets ``class="headline"`` (the CSS gives it
    the green box); later paragraphs are plain."""
    blocks: list[tuple[str, Any]] = [
        ("h1", "T"),
        ("p", "first"),
        ("table", Table(["a", "n"], [["x", "1"]], [False, True])),
        ("p", "second"),
    ]
    page = to_html(blocks, {})
    assert '<p class="headline">first</p>' in page
    assert "<p>second</p>" in page
    assert page.count("headline") == 2  # the CSS rule and the one paragraph
    assert '<td>x</td><td class="num">1</td>' in page


def test_cost_row_names_the_plans_currency(tiny_plan: dict[str, Any]) -> None:
    labels = [r[0] for r in comparison_table(tiny_plan).rows]
    assert "Cost (currency not stated)" in labels
    plan = copy.deepcopy(tiny_plan)
    plan["currency"] = "EUR"
    labels = [r[0] for r in comparison_table(plan).rows]
    assert "Cost (EUR)" in labels and "Cost (currency not stated)" not in labels


def test_carbon_plot_legend_names_site_and_zone(
    tiny_plan: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Legend entries are "<site> (<zone>) intensity" / "… IT load"; a site without a zone
    shows "?"."""
    plan = copy.deepcopy(tiny_plan)
    del plan["sites"][1]["zone"]  # oslo
    saved = capture_saved_figures(monkeypatch)
    plot_carbon_load(plan, tmp_path / "carbon_load.png")
    ((_, fig),) = saved
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        "frankfurt (DE) intensity",
        "oslo (?) intensity",
        "frankfurt (DE) IT load",
        "oslo (?) IT load",
    ]


def test_summary_line_on_actuals_names_each_baseline() -> None:
    """kg rounded to whole kg with thousands separators, % to 0.1; baselines in their fixed
    order, written with hyphens; a baseline without a figure is left out."""
    doc = {
        "on_actuals": {
            "source": "csv:/data/actual.csv",
            "totals": {"carbon_kg": 1234.4},
            "savings": {
                "carbon_kg_vs_shutdown_idle": 120.0,
                "carbon_pct_vs_shutdown_idle": 8.94,
                "carbon_kg_vs_carbon_agnostic": 1300.2,
                "carbon_pct_vs_carbon_agnostic": 51.36,
            },
        }
    }
    assert signal_lines(doc) == [
        "on actuals (csv:/data/actual.csv): plan 1,234 kg, saving 1,300 kg (51.4 %) vs "
        "carbon-agnostic, 120 kg (8.9 %) vs shutdown-idle"
    ]


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_progress_without_v_sees_phases_and_restores_logging() -> None:
    """Without ``-v`` greencpn's logger is at WARNING: the progress display lowers it to INFO
    so it sees the ``progress:`` phases, keeps them off the root's handlers (raised to
    WARNING meanwhile: only the bar shows them), and puts both levels back afterwards."""
    own = logging.getLogger("greencpn")
    root_handler = _Keep()
    saved = own.level
    own.setLevel(logging.WARNING)
    logging.getLogger().addHandler(root_handler)
    try:
        with PlanProgress(enabled=True, tty=False, stream=io.StringIO()) as pr:
            assert own.level == logging.INFO and root_handler.level == logging.WARNING
            logging.getLogger("greencpn.optimize.plan").info("progress: model")
            assert pr._phase == "model"
        assert root_handler.records == []
        assert own.level == logging.WARNING and root_handler.level == logging.NOTSET
        # after the display, INFO records are dropped again
        logging.getLogger("greencpn.optimize.plan").info("progress: solve")
        assert root_handler.records == []
    finally:
        logging.getLogger().removeHandler(root_handler)
        own.setLevel(saved)


def test_work_by_site_plot_steps_end_on_the_last_slot(
    tiny_plan: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each site's panel draws the plan (solid, 2 pt) and the carbon-agnostic baseline (dashed,
    1.3 pt: thinner, so the plan stays visible where they coincide) as post-steps over the
    slot edges: the slot values in busy GPUs (GPU-h / slot hours, here 30-min slots: × 2)
    and the last value repeated at the closing edge (no drop at the end)."""
    plan = copy.deepcopy(tiny_plan)
    plan["horizon"]["slot_minutes"] = 30
    plan["work_by_site_gpu_h"] = {
        "plan": {
            "frankfurt": [4.0, 4.0, 0.0, 0.0, 1.0, 3.0],
            "oslo": [6.0, 6.0, 6.0, 2.0, 0.0, 1.0],
        },
        "carbon_agnostic": {
            "frankfurt": [4.0, 4.0, 4.0, 4.0, 0.0, 0.5],
            "oslo": [6.0, 6.0, 2.0, 0.0, 0.0, 2.0],
        },
    }
    saved = capture_saved_figures(monkeypatch)
    plot_work_by_site(plan, tmp_path / "work_by_site.png")
    ((_, fig),) = saved
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["frankfurt", "oslo"]
    want = {
        "frankfurt": ([8, 8, 0, 0, 2, 6, 6], [8, 8, 8, 8, 0, 1, 1]),
        "oslo": ([12, 12, 12, 4, 0, 2, 2], [12, 12, 4, 0, 0, 4, 4]),
    }
    for ax in axes:
        plan_line, base_line = ax.get_lines()
        assert plan_line.get_label() == "plan" and base_line.get_label() == "carbon-agnostic"
        assert list(plan_line.get_ydata()) == pytest.approx(want[ax.get_title()][0])
        assert list(base_line.get_ydata()) == pytest.approx(want[ax.get_title()][1])
        assert len(plan_line.get_xdata()) == 7  # the 6 slot starts and the horizon end
        assert (plan_line.get_linestyle(), plan_line.get_linewidth()) == ("-", 2.0)
        assert (base_line.get_linestyle(), base_line.get_linewidth()) == ("--", 1.3)


def test_plan_without_config_is_argparses_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """``greencpn plan`` with no ``--config``: argparse's own usage error (exit status 2, the
    missing option named), before anything is loaded or planned."""
    from greencpn import cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["plan"])
    assert stop.value.code == 2
    assert "the following arguments are required: --config" in capsys.readouterr().err


def test_progress_log_lines_while_solving_at_most_one_every_2_s(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a terminal (``-v``) the solve's status is a log line at most every
    EVERY_S = 2 s; a phase change logs nothing itself (the planner logs the phase) but restarts
    the 2 s. The clock is a hand-set counter (``time.perf_counter`` of the module), the HiGHS
    line is test_progress's LATER (bound 1.148, incumbent 1.163, gap 1.29 %):

    t = 10 s: 10 − 0 ≥ 2 → logged; t = 11: 1 s since → not; t = 12.5: 2.5 s → logged;
    t = 13: phase change (nothing logged, restarts); t = 14.5: 1.5 s → not; t = 15: 2 s → logged.
    """
    from types import SimpleNamespace

    import greencpn.report.progress as progress
    from tests.report.test_progress import LATER

    now = [0.0]
    monkeypatch.setattr(progress, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    pr = PlanProgress(enabled=True, tty=False, stream=io.StringIO())
    pr._phase = "solve (HiGHS)"
    pr._last_line = LATER
    caplog.set_level(logging.INFO, logger="greencpn.progress")
    shown = []
    for t, force in [(10.0, False), (11.0, False), (12.5, False), (13.0, True)]:
        now[0] = t
        pr._show(force=force)
        shown.append(len(caplog.records))
    for t in (14.5, 15.0):
        now[0] = t
        pr._show()
        shown.append(len(caplog.records))
    assert shown == [1, 1, 2, 2, 2, 3]
    assert [r.getMessage() for r in caplog.records] == [
        "greencpn plan: solve (HiGHS) (10.0 s, total 10.0 s) — incumbent 1.163, bound 1.148, "
        "gap 1.29%",
        "greencpn plan: solve (HiGHS) (12.5 s, total 12.5 s) — incumbent 1.163, bound 1.148, "
        "gap 1.29%",
        "greencpn plan: solve (HiGHS) (15.0 s, total 15.0 s) — incumbent 1.163, bound 1.148, "
        "gap 1.29%",
    ]


def test_power_cap_plot_of_13_pools_is_written_where_asked(
    tiny_plan: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More than 12 pools: one panel per site, one cap line per pool, saved at the path asked
    (seed-20261206 sample: x_plot_power_caps__mutmut_3 passed ``None`` as the path). The hand
    plan's two pools, copied to 7 + 6 pools named by site and number."""
    plan = copy.deepcopy(tiny_plan)
    fra, osl = plan["pools"]
    plan["pools"] = [
        {**copy.deepcopy(base), "name": f"{base['site']}-{k}"}
        for base, n in ((fra, 7), (osl, 6))
        for k in range(n)
    ]
    saved = capture_saved_figures(monkeypatch)
    out = tmp_path / "power_caps.png"
    assert plot_power_caps(plan, out) == out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ((name, fig),) = saved
    assert name == "power_caps.png"
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["frankfurt (7 pools)", "oslo (6 pools)"]
    assert [len(ax.get_lines()) for ax in axes] == [7, 6]
