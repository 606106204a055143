"""Issue #10.10: the plan says which carbon signal it decided on (forecast or actual, source,
accounting) in plan.json, the summary and the report; a plan from a ``[carbon] file`` is priced
on the values it decided on — "perfect forecast"; with ``[carbon] actuals_file`` the plan is
also priced on the measured values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greencpn import cli
from tests.optimize.conftest import iso, write_fleet
from tests.optimize.test_plan_exact import SITE, job, pool

FORECAST = [100, 500, 100, 500, 300, 200]
ACTUAL = [400, 100, 450, 120, 300, 200]


def _fleet(tmp_path: Path, extra: str = "") -> Path:
    return write_fleet(
        tmp_path,
        carbon={"Z": FORECAST},
        sites=SITE,
        pools=pool(nodes=1, gpn=1),
        jobs=[job(work=2.0, deadline=6, ckpt=True)],
        extra=extra,
    )


def _run(cfg: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict, str, str]:
    assert cli.main(["plan", "--config", str(cfg), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    return json.loads((out / "plan.json").read_text()), text, (out / "report.md").read_text()


def test_a_carbon_file_plan_says_perfect_forecast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc, text, md = _run(_fleet(tmp_path, 'accounting = "lifecycle"'), tmp_path / "o", capsys)
    sig = doc["carbon_signal"]
    assert sig["perfect_forecast"] is True
    assert sig["sites"]["a"]["kind"] == "actual (file values)"
    assert sig["sites"]["a"]["accounting"] == "lifecycle"
    assert sig["sites"]["a"]["source"].endswith("carbon.csv")
    assert "carbon signal: perfect forecast: the plan decided on the file's actual values" in text
    assert "**Carbon signal: perfect forecast:" in md
    assert "on_actuals" not in doc


def test_actuals_price_a_forecast_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ["datetime_utc,Z"] + [f"{iso(i)},{v}" for i, v in enumerate(ACTUAL)]
    (tmp_path / "actuals.csv").write_text("\n".join(lines) + "\n")
    doc, text, md = _run(_fleet(tmp_path, 'actuals_file = "actuals.csv"'), tmp_path / "o", capsys)
    sig = doc["carbon_signal"]
    assert sig["perfect_forecast"] is False
    assert sig["sites"]["a"]["kind"] == "forecast (file values)"
    assert sig["sites"]["a"]["accounting"] is None
    act = doc["on_actuals"]
    # the same schedule: each slot's energy at the measured intensity
    energy = [x["energy_kwh"] for x in doc["sites"][0]["slots"]]
    assert act["totals"]["carbon_kg"] == pytest.approx(
        sum(e * a for e, a in zip(energy, ACTUAL, strict=True)) / 1000.0, abs=1e-3
    )
    assert act["totals"]["energy_kwh"] == pytest.approx(doc["totals"]["energy_kwh"])
    # the plan ran in the forecast's clean hours (0, 2), which were dirty in fact
    assert act["totals"]["carbon_kg"] > doc["totals"]["carbon_kg"]
    agn = act["baselines"]["carbon_agnostic"]["carbon_kg"]
    assert act["savings"]["carbon_kg_vs_carbon_agnostic"] == pytest.approx(
        agn - act["totals"]["carbon_kg"]
    )
    assert "on actuals (csv:" in text
    assert "Priced on actuals" in md


def test_the_summary_names_a_carbon_file_relative_to_the_working_directory(tmp_path, monkeypatch):
    from greencpn.report.cli import signal_lines

    monkeypatch.chdir(tmp_path)
    doc = {
        "carbon_signal": {
            "summary": "perfect forecast",
            "sites": {
                "a": {"kind": "actual", "source": f"csv:{tmp_path / 'd' / 'c.csv'}"},
                "b": {"kind": "actual", "source": "csv:/elsewhere/c.csv"},
            },
        }
    }
    (line,) = signal_lines(doc)
    assert "a: actual, csv:d/c.csv, accounting not stated" in line
    assert "b: actual, csv:/elsewhere/c.csv" in line  # not below the working directory: kept
