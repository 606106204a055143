"""report.md / report.html from a hand-made plan: the figures match the dict, the HTML is self-contained."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from greencpn.errors import ConfigError
from greencpn.report.plots import PLOTS
from greencpn.report.render import fmt_num, pct_diff, render_report


def _md_table(md: str, first_header: str) -> list[list[str]]:
    """Rows (cells stripped) of the Markdown table whose header starts with ``first_header``."""
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and line.split("|")[1].strip() == first_header:
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                cells = re.split(r"(?<!\\)\|", row)[1:-1]
                rows.append([c.strip() for c in cells])
            return rows
    raise AssertionError(f"no table headed {first_header!r}")


def _num(cell: str) -> float:
    return float(cell.replace(",", "").replace(" %", ""))


def test_render_writes_all_files(tiny_report: dict[str, Any]) -> None:
    out = tiny_report["paths"]
    assert set(out) == {"md", "html", *PLOTS}
    for name in PLOTS:
        data = out[name].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        # not "not empty" by size (a blank 2 × 2 grid is ~30 KB): the series' own colours are
        # drawn, in more pixels than a legend swatch holds
        for colour in SERIES_COLOURS[name]:
            assert _colour_pixels(out[name], colour) > 400, (name, colour)


#: colours each plot draws its data series in (matplotlib's C0 blue, C1/tab:orange, tab:red)
SERIES_COLOURS = {
    "carbon_load.png": ("#1f77b4", "#ff7f0e"),  # one site each
    "nodes_on.png": ("#1f77b4",),
    "power_caps.png": ("#ff7f0e",),
    "site_power.png": ("#1f77b4", "#d62728"),  # meter power, frankfurt's budget
    "work_by_site.png": ("#1f77b4", "#ff7f0e"),  # plan, carbon-agnostic
    "cumulative_carbon.png": ("#1f77b4", "#ff7f0e"),  # plan, carbon-agnostic
}


def _colour_pixels(png: Path, hex_colour: str, tol: float = 0.08) -> int:
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(png)[:, :, :3]
    rgb = np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(img - rgb).max(axis=2) < tol).sum())


def test_comparison_table_matches_the_plan(tiny_report: dict[str, Any]) -> None:
    tiny_plan = tiny_report["plan"]
    md = tiny_report["paths"]["md"].read_text()
    rows = {r[0]: r[1:] for r in _md_table(md, "")}
    t, ca, si, gr = (
        tiny_plan["totals"],
        tiny_plan["baselines"]["carbon_agnostic"],
        tiny_plan["baselines"]["shutdown_idle"],
        tiny_plan["baselines"]["carbon_aware_greedy"],
    )
    for label, key, tol in (
        ("Energy (kWh)", "energy_kwh", 0.05),
        ("Carbon (kg CO2e)", "carbon_kg", 0.05),
        ("Cost (currency not stated)", "cost", 0.005),
        ("Late jobs", "late_jobs", 0),
        ("Late work (GPU-h)", "late_gpu_h", 0.05),
        ("Unserved work (GPU-h)", "unserved_gpu_h", 0.05),
    ):
        plan_v, ca_v, ca_pct, si_v, si_pct, gr_v, gr_pct = rows[label]
        assert _num(gr_v) == pytest.approx(gr[key], abs=tol)
        assert _num(gr_pct) == pytest.approx(100 * (t[key] - gr[key]) / gr[key], abs=0.05)
        assert _num(plan_v) == pytest.approx(t[key], abs=tol)
        assert _num(ca_v) == pytest.approx(ca[key], abs=tol)
        assert _num(si_v) == pytest.approx(si[key], abs=tol)
        assert _num(ca_pct) == pytest.approx(100 * (t[key] - ca[key]) / ca[key], abs=0.05)
        assert _num(si_pct) == pytest.approx(100 * (t[key] - si[key]) / si[key], abs=0.05)
    # hand check: carbon 5.3 kg vs 40 kg → -86.7 %
    assert rows["Carbon (kg CO2e)"][2] == "-86.7 %"


def test_site_pool_and_late_tables(tiny_report: dict[str, Any]) -> None:
    tiny_plan = tiny_report["plan"]
    md = tiny_report["paths"]["md"].read_text()
    sites = {r[0]: r for r in _md_table(md, "site")}
    fra = tiny_plan["sites"][0]
    energy = sum(s["energy_kwh"] for s in fra["slots"])
    carbon = sum(s["carbon_kg"] for s in fra["slots"])
    row = sites["frankfurt (DE)"]
    assert row[1] == "1"  # one job placed there
    assert _num(row[2]) == pytest.approx(energy, abs=0.05)
    assert _num(row[3]) == pytest.approx(carbon, abs=0.05)
    assert row[6] == "250–420"
    # lowest budget 2 kW; slot 1 exactly at its budget, slot 4 (2.08 kW) over its 2 kW budget
    assert row[8] == "2.0" and row[9] == "1" and row[10] == "1"
    assert sites["oslo (NO)"][8] == "–"  # no budget
    pools = {r[0]: r for r in _md_table(md, "pool")}
    assert pools["fra-a100"][4] == "0–1"
    assert pools["fra-a100"][5] == "1"  # one startup
    assert _num(pools["osl-a40"][6]) == pytest.approx(12 + 12 + 12 + 4)  # busy GPU-h
    assert pools["fra-a100"][8] == "400"
    late = {r[0].replace("\\|", "|"): r for r in _md_table(md, "job")}
    assert set(late) == {"gdpr|b", "big<c>"}  # train-a is on time
    assert late["big<c>"][6] == "not placed" and _num(late["big<c>"][8]) == 12.0
    assert "- capacity: job big<c> could not be placed" in md  # diagnostics listed
    assert "carbon_weight_per_kg = 1" in md
    trade = _md_table(md, "carbon weight (per kg)")
    assert [_num(r[2]) for r in trade] == [9.0, 14.0]
    assert "GPU power cap per pool" in md
    for name in PLOTS:
        assert f"]({name})" in md


def test_html_is_self_contained(tiny_report: dict[str, Any]) -> None:
    html = tiny_report["paths"]["html"].read_text()
    assert 'src="http' not in html and "src='http" not in html
    assert "<link" not in html
    assert "url(" not in html  # no external fonts or backgrounds in the CSS
    assert "@import" not in html
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(srcs) == len(PLOTS)
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    # user text is escaped
    assert "big&lt;c&gt;" in html and "big<c>" not in html
    # same figures as the Markdown
    assert "-86.7 %" in html and "5.3 kg CO2e" in html


def test_no_trade_off_section_when_empty(tiny_plan: dict[str, Any], tmp_path: Path) -> None:
    tiny_plan["tradeoff"] = []
    tiny_plan["jobs"] = [j for j in tiny_plan["jobs"] if j["id"] == "train-a"]
    tiny_plan["totals"].update(late_jobs=0, late_gpu_h=0.0, unserved_gpu_h=0.0)
    md = render_report(tiny_plan, tmp_path)["md"].read_text()
    assert "trade-off" not in md.lower()
    assert "None: every job finishes by its deadline." in md
    assert "Every job meets its deadline." in md


def test_time_limit_warning(tiny_plan: dict[str, Any], tmp_path: Path) -> None:
    tiny_plan["solver"].update(status="time_limit", incumbent_used_on_time_limit=True)
    md = render_report(tiny_plan, tmp_path)["md"].read_text()
    assert "time limit" in md and "incumbent" in md


def test_bad_plan_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="schema"):
        render_report({"schema": "other/1"}, tmp_path)
    with pytest.raises(ConfigError, match="pools"):
        render_report(
            {"schema": "greencpn.plan/1", "horizon": {}, "sites": [], "totals": {}}, tmp_path
        )


def test_a_plan_that_is_not_an_object_is_a_clear_error(tmp_path: Path) -> None:
    """A JSON list (or any non-object) handed in as the plan: one ConfigError naming the
    source ("plan"), what is wrong and the fix — nothing written."""
    with pytest.raises(ConfigError) as err:
        render_report([1, 2], tmp_path / "out")  # type: ignore[arg-type]
    assert str(err.value) == (
        "plan: the plan is not a JSON object — fix: pass the dict read from plan.json"
    )
    assert not (tmp_path / "out").exists()


def test_formatting_helpers() -> None:
    assert fmt_num(12345.678) == "12,345.7"
    assert fmt_num(None) == "–"
    assert fmt_num(float("nan")) == "–"
    assert pct_diff(90, 100) == "-10.0 %"
    assert pct_diff(0, 0) == "±0.0 %"
    assert pct_diff(1, 0) == "–"


def test_import_greencpn_does_not_load_matplotlib() -> None:
    code = "import sys, greencpn, greencpn.report.render; print('matplotlib' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_trade_off_rows_are_labelled_milp(tiny_plan: dict[str, Any], tmp_path: Path) -> None:
    """Issue #10.11: the trade-off table showed MILP figures under "each row is the plan's
    carbon" (1,043 kg beside a headline of 1,848 kg); they are labelled MILP figures."""
    tiny_plan["tradeoff"][0]["status"] = "configured"
    md = render_report(tiny_plan, tmp_path)["md"].read_text()
    assert "each row is the plan's carbon" not in md
    header = next(line for line in md.splitlines() if line.startswith("| carbon weight"))
    assert "| MILP carbon (kg) | MILP cost |" in header
    assert "Each row is the **MILP's** carbon and cost" in md
    row = _md_table(md, "carbon weight (per kg)")[0]
    total = fmt_num(tiny_plan["totals"]["carbon_kg"])
    assert row[4] == f"configured weights: the executed plan emits {total} kg"
