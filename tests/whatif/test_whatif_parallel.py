"""Policies in parallel processes and the sweep: the same numbers as the serial run
(process pool and a Dask LocalCluster), and the sweep's grid and table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greencpn.sources.replay import ReplayCarbonSource
from greencpn.whatif.engine import ReplaySettings
from greencpn.whatif.metrics import compare
from greencpn.whatif.parallel import run_policies
from greencpn.whatif.sweep import make_tasks, run_sweep, write_sweep

from .conftest import T0, three_jobs, two_site_fleet, two_zone_series

ROOT = Path(__file__).resolve().parents[2]
CFG = ROOT / "data" / "example" / "fleet.toml"
POLS = ["carbon-agnostic", "shutdown-idle:timeout_min=60", "lets-wait-awhile", "carbon-time"]


def _rows(runs):
    rows = compare(runs)["rows"]
    for r in rows:
        r.pop("wall_s")
    return rows


def test_process_pool_gives_the_serial_numbers():
    fleet = two_site_fleet(node_idle_w=50.0, boot_time_min=20.0, node_boot_w=300.0)
    series = two_zone_series()
    fc = ReplayCarbonSource(series)
    act = ReplayCarbonSource(series, mode="perfect")
    st = ReplaySettings(
        T0, T0 + timedelta(hours=6), drain=timedelta(hours=12), failure_rate_per_node_h=0.05
    )
    kw = dict(forecasts=fc, actuals=act, settings=st)
    serial = run_policies(fleet, three_jobs(), POLS, workers=1, **kw)
    par = run_policies(fleet, three_jobs(), POLS, workers=2, **kw)
    assert [r.policy for r in par] == POLS
    assert _rows(serial) == _rows(par)
    # the runs differ from each other (the comparison is not of identical trivial runs)
    assert len({round(r.carbon_kg.sum(), 9) for r in serial}) > 1


def _trace(tmp_path: Path) -> Path:
    """A small GAIA/PAI-format trace (hours since 2023-01-01) released 2023-04-25 00-06 h."""
    rows = ["arrival_time,length,cpus"]
    for i in range(24):
        rows.append(f"{2736 + i * 0.25:.2f},{1 + (i % 5) * 1.5:.2f},{1 + i % 3}")
    path = tmp_path / "pai.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _tasks(tmp_path: Path, **kw):
    return make_tasks(
        [str(CFG)],
        ["+8h", "+24h"],
        ["shutdown-idle", "lets-wait-awhile:perfect=1"],
        start=datetime(2023, 4, 25, tzinfo=UTC),
        end=datetime(2023, 4, 25, 6, tzinfo=UTC),
        drain_h=24.0,
        jobs=str(_trace(tmp_path)),
        **kw,
    )


def test_sweep_grid_adds_the_baseline_and_pool_matches_serial(tmp_path):
    tasks = _tasks(tmp_path)
    assert len(tasks) == 2 * 3 and tasks[0].policy == "carbon-agnostic"
    serial = run_sweep(tasks)
    pool = run_sweep(tasks, workers=2)
    assert serial.rows == pool.rows
    assert pool.executor == "process pool(2)"
    by = {(r["slack"], r["policy"]): r for r in serial.rows}
    assert by[("+8h", "carbon-agnostic")]["carbon_saved_pct"] == 0.0
    assert by[("+24h", "lets-wait-awhile:perfect=1")]["share_of_oracle_saving"] == 1.0
    # more slack, more saving for the waiting policy (the slack axis is real)
    assert (
        by[("+24h", "lets-wait-awhile:perfect=1")]["carbon_kg"]
        < by[("+8h", "lets-wait-awhile:perfect=1")]["carbon_kg"]
    )
    path = write_sweep(serial, tmp_path)
    assert path.read_text().splitlines()[0].startswith("config,slack,policy,energy_kwh")
    assert len(path.read_text().splitlines()) == 7


def test_dask_local_cluster_gives_the_local_table(tmp_path):
    pytest.importorskip("dask.distributed", reason="dask[distributed] (greencpn[sweep]) absent")
    tasks = _tasks(tmp_path)
    local = run_sweep(tasks)
    dask = run_sweep(tasks, dask_local=2)
    assert dask.executor == "dask LocalCluster(2 workers)"
    assert dask.rows == local.rows


def test_cli_workers_html_and_sweep(tmp_path, capsys):
    import csv

    from greencpn.cli import main

    out = tmp_path / "o"
    common = ["--from", "2023-04-25T00:00Z", "--to", "2023-04-25T06:00Z", "--drain-h", "24"]
    rc = main(
        [
            "whatif",
            "--config",
            str(CFG),
            *common,
            "--policies",
            "carbon-agnostic",
            "lets-wait-awhile:perfect=1",
            "--workers",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "whatif.html" in text
    html = (out / "whatif.html").read_text()
    assert "lets-wait-awhile:perfect=1 (perfect-foresight oracle)" in html
    rows = list(csv.DictReader((out / "whatif.csv").open()))
    assert [r["policy"] for r in rows] == ["carbon-agnostic", "lets-wait-awhile:perfect=1"]

    rc = main(
        [
            "whatif",
            "sweep",
            "--config",
            str(CFG),
            *common,
            "--jobs",
            str(_trace(tmp_path)),
            "--slack",
            "+8h",
            "+24h",
            "--policies",
            "lets-wait-awhile:perfect=1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "4 replays on serial" in text
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [(r["slack"], r["policy"]) for r in rows] == [
        ("+8h", "carbon-agnostic"),
        ("+8h", "lets-wait-awhile:perfect=1"),
        ("+24h", "carbon-agnostic"),
        ("+24h", "lets-wait-awhile:perfect=1"),
    ]


def test_cli_attribution_needs_a_milp_spec(tmp_path, capsys):
    from greencpn.cli import main

    rc = main(
        [
            "whatif",
            "--config",
            str(CFG),
            "--from",
            "2023-04-25T00:00Z",
            "--to",
            "2023-04-25T02:00Z",
            "--attribution",
            "carbon-time",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "is not a milp spec" in err and "Traceback" not in err


def test_sweep_refuses_a_bad_slack_rule_before_running(tmp_path, capsys):
    """`--slack +8q` was accepted and ran the grid with the rule silently unused (the example's
    jobs carry their own deadlines); it is refused up front, like a bad policy."""
    from greencpn.cli import main

    rc = main(
        [
            "whatif",
            "sweep",
            "--config",
            str(CFG),
            "--from",
            "2023-04-25T00:00Z",
            "--to",
            "2023-04-25T02:00Z",
            "--slack",
            "+8h",
            "+8q",
            "--policies",
            "carbon-agnostic",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "unknown slack rule '+8q'" in err and "Traceback" not in err
    assert not (tmp_path / "sweep.csv").exists()


def test_whatif_refuses_a_bad_slack_rule_with_config_jobs(tmp_path, capsys):
    from greencpn.cli import main

    args = ["whatif", "--config", str(CFG), "--from", "2023-04-25T00:00Z"]
    args += ["--to", "2023-04-25T02:00Z", "--slack", "8h", "--out", str(tmp_path), "--no-progress"]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and "unknown slack rule '8h'" in err and "Traceback" not in err


def test_sweep_without_a_trace_labels_rows_with_the_jobs_own_deadlines(caplog):
    # the example config's jobs file carries deadlines: two slack rules would have run the same
    # replay twice, each row labelled with a rule that was not used
    from greencpn.whatif.sweep import JOB_DEADLINES

    with caplog.at_level("WARNING", logger="greencpn.whatif.sweep"):
        tasks = make_tasks(
            [str(CFG)],
            ["+8h", "+24h"],
            ["shutdown-idle"],
            start=datetime(2023, 4, 25, tzinfo=UTC),
            end=datetime(2023, 4, 25, 6, tzinfo=UTC),
        )
    assert [(t.slack, t.policy) for t in tasks] == [
        (JOB_DEADLINES, "carbon-agnostic"),
        (JOB_DEADLINES, "shutdown-idle"),
    ]
    assert "+8h +24h are not used" in caplog.text
    # a bad rule is still refused up front
    with pytest.raises(Exception, match="slack"):
        make_tasks([str(CFG)], ["+8q"], ["shutdown-idle"])
