"""Inputs: traces in the Philly / PAI formats and greencpn job files, slack rules, residency,
site rules, policy specs; bad files give a clear error naming file, line and fix."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from greencpn.cli import main
from greencpn.errors import ConfigError
from greencpn.whatif.jobs import deadlines, load_jobs
from greencpn.whatif.lwa import read_half_hourly
from greencpn.whatif.policies import available, parse_spec
from greencpn.whatif.policies.carbon_time import carbon_time_start
from greencpn.whatif.policies.lets_wait_awhile import greenest_start

from .conftest import two_site_fleet

ROOT = Path(__file__).resolve().parents[2]


def test_policies_are_discovered_and_specs_checked():
    assert {"carbon-agnostic", "shutdown-idle", "lets-wait-awhile", "carbon-time"} <= set(
        available()
    )
    spec = parse_spec("shutdown-idle:timeout_min=10,spares=2,perfect=1")
    assert spec.params == {"timeout_min": 10, "spares": 2} and spec.perfect
    with pytest.raises(ConfigError, match="unknown policy 'nope'.*fix: use one of"):
        parse_spec("nope")
    with pytest.raises(ConfigError, match="has no parameter 'bogus'"):
        parse_spec("carbon-agnostic:bogus=1")


def test_window_rules_by_hand():
    fc = [5.0, 4.0, 9.0, 1.0, 1.0, 8.0]
    assert greenest_start(fc, 2, 4) == 3  # (1+1)/2 is the lowest two-slot mean
    assert greenest_start(fc, 2, 1) == 0  # deadline allows starts 0..1: 4.5 vs 6.5
    # carbon-time: C(0)=4.5; s=3 saves 3.5 over 5 slots = 0.7/slot, s=1 saves -2 -> 3
    assert carbon_time_start(fc, 2, 4) == 3
    assert carbon_time_start([1.0, 2.0, 3.0], 1, 2) == 0  # nothing greener later: now


def test_slack_rules():
    rel = pd.Series(pd.to_datetime(["2024-01-05 16:00", "2024-01-06 10:00"], utc=True))  # Fri, Sat
    dur = pd.Series([2.0, 1.0])
    d8 = deadlines(rel, dur, "+8h")
    assert list(d8) == [rel[0] + pd.Timedelta(hours=10), rel[1] + pd.Timedelta(hours=9)]
    x2 = deadlines(rel, dur, "x2")
    assert list(x2) == [rel[0] + pd.Timedelta(hours=4), rel[1] + pd.Timedelta(hours=2)]
    nw = deadlines(rel, dur, "next-workday")
    # Fri 18:00 natural end -> Mon? no: after 17:00 on Friday -> Saturday 09:00 per LWA's rule
    assert nw[0] == pd.Timestamp("2024-01-06 09:00", tz="UTC")
    assert nw[1] == pd.Timestamp("2024-01-08 09:00", tz="UTC")  # Saturday -> Monday 09:00
    with pytest.raises(ConfigError, match="--slack"):
        deadlines(rel, dur, "soon")


def test_philly_trace_with_residency_and_site_rules(tmp_path):
    p = tmp_path / "philly.csv"
    p.write_text(
        "timestamp,duration,num_gpus,gpu_time,cluster\n"
        "2024-01-01 00:10:00,3600,1,3600,c1\n"
        "2024-01-01 00:20:00,7200,2,14400,c1\n"
        "2024-01-01 00:30:00,1800,1,1800,c2\n"
        "2024-01-01 00:40:00,1800,1,1800,c2\n"
    )
    fleet = two_site_fleet()
    jobs = load_jobs(p, fleet, slack="+8h", assign="hash")
    # philly-1 asks 2 GPUs, more than any pool has: skipped (it could run nowhere)
    assert [j.id for j in jobs] == ["philly-0", "philly-2", "philly-3"]
    assert jobs[1].home_site == jobs[2].home_site  # same virtual cluster, same site
    assert jobs[0].deadline == datetime(2024, 1, 1, 9, 10, tzinfo=UTC)  # 00:10 + 1 h + 8 h
    rr = load_jobs(p, fleet, assign="round-robin", residency=["1.0:EU"])
    assert all(j.sites == ("A",) and j.home_site == "A" for j in rr)  # only A is in the EU
    with pytest.raises(ConfigError, match="--assign"):
        load_jobs(p, fleet, assign="mars")


def test_gaia_trace_and_greencpn_jobs_file(tmp_path):
    g = tmp_path / "pai.csv"
    g.write_text("arrival_time,length,cpus\n0.5,2.0,1\n3.25,1.0,1\n")
    jobs = load_jobs(g, two_site_fleet(), gaia_epoch=datetime(2024, 1, 1, tzinfo=UTC))
    assert jobs[0].release == datetime(2024, 1, 1, 0, 30, tzinfo=UTC)
    assert jobs[0].work_gpu_h == 2.0 and jobs[0].deadline == datetime(2024, 1, 2, 2, 30, tzinfo=UTC)
    own = tmp_path / "jobs.csv"
    own.write_text(
        "id,gpus,work_gpu_h,release,deadline,jurisdictions\n"
        "a,1,2,2024-01-01T00:00:00Z,2024-01-01T06:00:00Z,US\n"
    )
    (job,) = load_jobs(own, two_site_fleet())
    assert job.sites == ("B",) and job.deadline == datetime(2024, 1, 1, 6, tzinfo=UTC)


def test_bad_trace_names_file_line_and_fix(tmp_path):
    p = tmp_path / "philly.csv"
    p.write_text(
        "timestamp,duration,num_gpus,gpu_time,cluster\n"
        "2024-01-01 00:10:00,3600,1,3600,c1\n"
        "2024-01-01 00:20:00,lots,1,3600,c1\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_jobs(p, two_site_fleet())
    assert f"{p}:3" in str(exc.value) and "fix:" in str(exc.value)
    unknown = tmp_path / "x.csv"
    unknown.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match=r"x.csv:1: unknown jobs file format.*fix: give a Philly"):
        load_jobs(unknown, two_site_fleet())


def test_bad_carbon_file_names_file_line_and_fix(tmp_path):
    p = tmp_path / "de_ci.csv"
    p.write_text("Time,Carbon Intensity\n2020-01-01 00:00:00,100\n2020-01-01 00:30:00,abc\n")
    with pytest.raises(ConfigError) as exc:
        read_half_hourly(p)
    msg = str(exc.value)
    assert str(p) in msg and "3" in msg and "fix:" in msg


def test_cli_bad_input_exits_2_without_traceback(tmp_path, capsys):
    cfg = ROOT / "data" / "example" / "fleet.toml"
    bad = tmp_path / "carbon.csv"
    bad.write_text("datetime_utc,DE,NO,ES,US-CAL-CISO\n2023-04-25T00:00:00Z,1,2,x,4\n")
    rc = main(
        [
            "whatif",
            "--config",
            str(cfg),
            "--carbon",
            str(bad),
            "--from",
            "2023-04-25T00:00Z",
            "--to",
            "2023-04-26T00:00Z",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("greencpn: error:") and "Traceback" not in err
    assert str(bad) in err
    rc = main(
        [
            "whatif",
            "--config",
            str(cfg),
            "--from",
            "2023-04-25T00:00Z",
            "--to",
            "2023-04-26T00:00Z",
            "--policies",
            "nope",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    assert rc == 2 and "unknown policy" in capsys.readouterr().err


@pytest.mark.parametrize("sub", [[], ["sweep"]])
@pytest.mark.parametrize(
    ("start", "end", "needle"),
    [
        ("2023-04-25", "2023-04-26T00:00Z", "--from 2023-04-25 has no timezone"),
        ("2023-04-25T00:00Z", "tomorrow", "--to 'tomorrow' is not an ISO-8601 timestamp"),
    ],
)
def test_cli_bad_replay_times_exit_2_without_traceback(tmp_path, capsys, sub, start, end, needle):
    """A date without a zone (the commonest slip) or a word for a time: one line naming the
    option and the fix, exit 2 — in `whatif` and in `whatif sweep` (was a ValueError traceback)."""
    cfg = ROOT / "data" / "example" / "fleet.toml"
    common = ["--from", start, "--to", end, "--out", str(tmp_path / "o"), "--no-progress"]
    rc = main(["whatif", *sub, "--config", str(cfg), *common])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("greencpn: error:") and "Traceback" not in err
    assert needle in err and "fix:" in err and "2026-03-02T00:00:00Z" in err
    assert not (tmp_path / "o").exists()


def test_cli_writes_csv_and_json(tmp_path, capsys):
    import csv
    import json

    cfg = ROOT / "data" / "example" / "fleet.toml"
    out = tmp_path / "o"
    rc = main(
        [
            "whatif",
            "--config",
            str(cfg),
            "--from",
            "2023-04-25T00:00Z",
            "--to",
            "2023-04-25T12:00Z",
            "--drain-h",
            "24",
            "--policies",
            "carbon-agnostic",
            "shutdown-idle",
            "lets-wait-awhile:perfect=1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader((out / "whatif.csv").open()))
    assert [r["policy"] for r in rows] == [
        "carbon-agnostic",
        "shutdown-idle",
        "lets-wait-awhile:perfect=1",
    ]
    base, sd, lwa = rows
    assert float(base["unfinished_gpu_h"]) == 0.0  # every job done inside the window
    assert float(base["energy_kwh"]) > float(sd["energy_kwh"]) > 0  # idle nodes were turned off
    assert float(lwa["share_of_oracle_saving"]) == 1.0
    doc = json.loads((out / "whatif.json").read_text())
    assert doc["oracle"] == "lets-wait-awhile:perfect=1" and doc["baseline"] == "carbon-agnostic"
    assert set(doc["rows"][0]["carbon_kg_by_site"]) == {"frankfurt", "oslo", "madrid", "california"}
