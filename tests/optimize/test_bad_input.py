"""Bad input gets a clear error naming the file, the field and the fix — never a traceback."""

from __future__ import annotations

import pytest

from greencpn.cli import main
from tests.optimize.conftest import iso
from tests.optimize.test_plan_tiny import ONE_SITE, job, pool


def run_cli(path, tmp_path, capsys):
    code = main(["plan", "--config", str(path), "--out", str(tmp_path / "out"), "--no-report"])
    err = capsys.readouterr().err
    return code, err


def assert_clear(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err
    assert "fix:" in err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"


def test_missing_field(fleet, tmp_path, capsys):
    path = fleet(
        carbon={"Z": [1, 2]},
        sites=ONE_SITE.replace("pue = 1.0\n", ""),
        pools=pool(),
        jobs=[job(deadline=2)],
    )
    assert_clear(
        *run_cli(path, tmp_path, capsys), "fleet.toml", "sites[0](a).pue", "add this field"
    )


def test_unknown_gpu_model(fleet, tmp_path, capsys):
    path = fleet(
        carbon={"Z": [1, 2]}, sites=ONE_SITE, pools=pool(gpu="Z9000"), jobs=[job(deadline=2)]
    )
    assert_clear(*run_cli(path, tmp_path, capsys), "pools[0](p).gpu_model", "Z9000", "models/gpus")


def test_negative_power(fleet, tmp_path, capsys):
    path = fleet(
        carbon={"Z": [1, 2]}, sites=ONE_SITE, pools=pool(idle_w=-5.0), jobs=[job(deadline=2)]
    )
    assert_clear(*run_cli(path, tmp_path, capsys), "pools[0](p).node_idle_w", "greater than 0")


def test_deadline_before_release(fleet, tmp_path, capsys):
    path = fleet(
        carbon={"Z": [1, 2]}, sites=ONE_SITE, pools=pool(), jobs=[job(release=2, deadline=1)]
    )
    assert_clear(*run_cli(path, tmp_path, capsys), "jobs.csv:2", "job j", "not after release")


def test_non_utc_timestamp_in_jobs(fleet, tmp_path, capsys):
    path = fleet(
        carbon={"Z": [1, 2]},
        sites=ONE_SITE,
        pools=pool(),
        jobs=[{**job(deadline=2), "release": "2026-01-05T00:00:00"}],
    )
    assert_clear(*run_cli(path, tmp_path, capsys), "jobs.csv:2", "release", "no timezone")


def test_offset_timestamp_is_converted_to_utc(fleet):
    from greencpn.config import load_config

    path = fleet(
        carbon={"Z": [1, 2]},
        sites=ONE_SITE,
        pools=pool(),
        jobs=[{**job(deadline=2), "release": "2026-01-05T01:00:00+01:00"}],
    )
    cfg = load_config(path)
    assert cfg.jobs[0].release.isoformat() == "2026-01-05T00:00:00+00:00"


def test_non_utc_horizon_start(fleet, tmp_path, capsys):
    path = fleet(carbon={"Z": [1, 2]}, sites=ONE_SITE, pools=pool(), jobs=[job(deadline=2)])
    path.write_text(
        path.read_text().replace(f'start = "{iso(0)}"', 'start = "2026-01-05T00:00:00"')
    )
    assert_clear(*run_cli(path, tmp_path, capsys), "horizon.start", "no timezone")


def test_gap_in_carbon_series(fleet, tmp_path, capsys):
    path = fleet(
        carbon={"Z": [100, 200, 300, 400, 500, 600]},
        sites=ONE_SITE,
        pools=pool(),
        jobs=[job(deadline=2)],
    )
    carbon = tmp_path / "carbon.csv"
    lines = carbon.read_text().splitlines()
    carbon.write_text("\n".join(lines[:3] + lines[4:]) + "\n")  # drop 02:00
    code, err = run_cli(path, tmp_path, capsys)
    assert_clear(code, err, "carbon.csv")
    assert "gap" in err.lower() or "missing" in err.lower() or "no carbon" in err.lower()


def test_carbon_file_too_short_for_the_horizon(fleet, tmp_path, capsys):
    path = fleet(
        carbon={"Z": [100, 200]}, sites=ONE_SITE, pools=pool(), jobs=[job(deadline=2)], slots=4
    )
    assert_clear(
        *run_cli(path, tmp_path, capsys), "carbon.csv", "zone Z", "first 2026-01-05T02:00:00Z"
    )


def test_job_no_site_may_run(fleet, tmp_path, capsys):
    path = fleet(
        carbon={"Z": [1, 2]},
        sites=ONE_SITE,
        pools=pool(),
        jobs=[job(deadline=2, jurisdictions="US")],
    )
    assert_clear(*run_cli(path, tmp_path, capsys), "jobs(j)", "no site may run job 'j'")


def test_unknown_key_is_named(fleet, tmp_path, capsys):
    path = fleet(
        carbon={"Z": [1, 2]},
        sites=ONE_SITE.replace("pue = 1.0", "pue = 1.0\npeu = 1.2"),
        pools=pool(),
        jobs=[job(deadline=2)],
    )
    assert_clear(*run_cli(path, tmp_path, capsys), "sites[0](a).peu", "spelling")


def test_pool_on_unknown_site(fleet, tmp_path, capsys):
    path = fleet(
        carbon={"Z": [1, 2]}, sites=ONE_SITE, pools=pool(site="nowhere"), jobs=[job(deadline=2)]
    )
    assert_clear(*run_cli(path, tmp_path, capsys), "pools[0](p).site", "nowhere")


def test_missing_config_file(tmp_path, capsys):
    code = main(["plan", "--config", str(tmp_path / "nope.toml")])
    err = capsys.readouterr().err
    assert_clear(code, err, "nope.toml", "not found")


@pytest.mark.parametrize("bad", ["gpus = 0", "spares = 9"])
def test_pool_values_checked(fleet, tmp_path, capsys, bad):
    text = pool()
    if bad.startswith("gpus"):
        text = text.replace("gpus_per_node = 1", "gpus_per_node = 0")
    else:
        text = text.replace("spares = 0", "spares = 9")
    path = fleet(carbon={"Z": [1, 2]}, sites=ONE_SITE, pools=text, jobs=[job(deadline=2)])
    assert_clear(*run_cli(path, tmp_path, capsys), "pools[0](p)")


def test_unknown_carbon_source(fleet, tmp_path, capsys):
    sites = ONE_SITE.replace('zone = "Z"', 'zone = "Z"\ncarbon_source = "carbonoracle"')
    path = fleet(carbon={"Z": [1, 2]}, sites=sites, pools=pool(), jobs=[job(deadline=2)])
    code, err = run_cli(path, tmp_path, capsys)
    assert_clear(code, err, "carbonoracle")


def test_no_carbon_for_a_site(fleet, tmp_path, capsys):
    path = fleet(carbon={"Z": [1, 2]}, sites=ONE_SITE, pools=pool(), jobs=[job(deadline=2)])
    text = path.read_text()
    path.write_text(text.replace('[carbon]\nfile = "carbon.csv"', ""))
    assert_clear(*run_cli(path, tmp_path, capsys), "field 'carbon'", "carbon_source")


def test_unreadable_load_history(fleet, tmp_path, capsys):
    (tmp_path / "load.csv").write_text("time,busy_gpus\nyesterday,3\n")
    p = pool().replace('name = "p"', 'name = "p"\nload_history = "load.csv"')
    path = fleet(carbon={"Z": [1, 2]}, sites=ONE_SITE, pools=p, jobs=[job(deadline=2)])
    assert_clear(*run_cli(path, tmp_path, capsys), "load_history")
