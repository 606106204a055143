"""Issue #10 item 5: carbon files that used to get through silently or with a traceback.

Each test reproduces the reported input; the message must name the file, the line (or column)
and the fix."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from greencpn.cli import main
from greencpn.errors import ConfigError
from greencpn.sources.files import (
    detect_format,
    read_carbon_file,
    read_electricitymaps_export,
    read_wide,
)

REPO = Path(__file__).resolve().parents[3]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


WIDE = (
    "datetime_utc,DE,NO\n"
    "2023-04-25T00:00:00Z,300.10,50.12\n"
    "2023-04-25T01:00:00Z,301.20,50.25\n"
    "2023-04-25T02:00:00Z,302.30,50.38\n"
)


# ----------------------------------------------------------------------------- cut mid-line
def test_file_cut_inside_the_last_value_is_refused(tmp_path: Path) -> None:
    # NO's 50.38 became 5 (and the forecast 0.0 g/kWh): the file ends without a newline
    p = _write(tmp_path, "cut.csv", WIDE[: WIDE.rindex("50.38") + 1])
    with pytest.raises(ConfigError) as e:
        read_wide(p)
    msg = str(e.value)
    assert "cut.csv" in msg and "line 4" in msg and "'5'" in msg and "newline" in msg, msg


def test_file_cut_between_fields_is_refused(tmp_path: Path) -> None:
    p = _write(tmp_path, "cut.csv", WIDE[: WIDE.rindex(",50.38")])
    with pytest.raises(ConfigError) as e:
        read_wide(p)
    msg = str(e.value)
    assert "line 4" in msg and "2 of 3 fields" in msg, msg


def test_a_complete_last_row_without_newline_is_read(tmp_path: Path) -> None:
    p = _write(tmp_path, "ok.csv", WIDE.rstrip("\n"))
    got = read_wide(p)
    assert list(got["NO"].intensity_g_per_kwh) == [50.12, 50.25, 50.38]


def test_a_short_row_in_the_middle_is_refused(tmp_path: Path) -> None:
    lines = WIDE.splitlines()
    lines[2] = "2023-04-25T01:00:00Z,301.20"
    p = _write(tmp_path, "short.csv", "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"short.csv.*line 3.*2 of 3 fields"):
        read_wide(p)


# ----------------------------------------------------------------------------- header only
def test_header_only_file_is_refused_by_every_reader(tmp_path: Path) -> None:
    p = _write(tmp_path, "empty.csv", "datetime_utc,DE\n")
    with pytest.raises(ConfigError, match=r"empty.csv.*no data rows"):
        read_carbon_file(p, zone="DE")


def test_header_only_file_in_forecast_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = _write(tmp_path, "empty.csv", "datetime_utc,DE\n")
    rc = main(["forecast", "--zone", "DE", "--source", f"csv:{p}", "--no-cache"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("greencpn: error: ") and "no data rows" in err, err


# ----------------------------------------------------------------------------- Electricity Maps
EM_TAIL = (
    ",Low Carbon Percentage,Renewable Percentage,Data Source,Data Estimated,Data Estimation Method"
)
EM_ROWS = (
    "2023-01-01 00:00:00,Germany,Germany,DE,140.5,185.8,83.8,78.4,entsoe.eu,false,\n"
    "2023-01-01 01:00:00,Germany,Germany,DE,141.0,186.0,83.8,78.4,entsoe.eu,false,\n"
)


@pytest.mark.parametrize(
    ("direct", "lca"),
    [
        ("Carbon Intensity gCO2eq/kWh (direct)", "Carbon Intensity gCO2eq/kWh (LCA)"),  # ASCII
        (
            "Carbon Intensity gCOâ‚‚eq/kWh (direct)",
            "Carbon Intensity gCOâ‚‚eq/kWh (LCA)",
        ),  # mojibake
        ("Carbon intensity gCO₂eq/kWh (direct)", "Carbon intensity gCO₂eq/kWh (Life cycle)"),
    ],
)
def test_electricitymaps_header_variants_are_read(tmp_path: Path, direct: str, lca: str) -> None:
    head = f"Datetime (UTC),Country,Zone Name,Zone Id,{direct},{lca}{EM_TAIL}\n"
    p = _write(tmp_path, "DE_2023_hourly.csv", head + EM_ROWS)
    assert detect_format(p) == "electricitymaps"
    assert list(read_carbon_file(p, zone="DE").intensity_g_per_kwh) == [185.8, 186.0]
    assert list(read_electricitymaps_export(p, accounting="direct").intensity_g_per_kwh) == [
        140.5,
        141.0,
    ]


def test_electricitymaps_export_with_unknown_intensity_header_says_so(tmp_path: Path) -> None:
    head = (
        "Datetime (UTC),Country,Zone Name,Zone Id,CI direct (g/kWh),CI LCA (g/kWh)" + EM_TAIL + "\n"
    )
    p = _write(tmp_path, "DE_2023_hourly.csv", head + EM_ROWS)
    with pytest.raises(ConfigError) as e:
        read_carbon_file(p, zone="DE")
    msg = str(e.value)
    assert "looks like an Electricity Maps export" in msg and "intensity column" in msg, msg
    assert "not in the file" not in msg


# ----------------------------------------------------------------------------- DST-local times
def test_local_times_in_a_utc_column_get_a_daylight_saving_hint(tmp_path: Path) -> None:
    # Europe/Berlin wall-clock times written as UTC: 02:00 repeats on 2023-10-29
    rows = [
        "2023-10-29 00:00:00,100",
        "2023-10-29 01:00:00,101",
        "2023-10-29 02:00:00,102",
        "2023-10-29 02:00:00,103",
        "2023-10-29 03:00:00,104",
    ]
    p = _write(tmp_path, "dst.csv", "datetime_utc,DE\n" + "\n".join(rows) + "\n")
    with pytest.raises(ConfigError) as e:
        read_wide(p)
    msg = str(e.value)
    assert "duplicate timestamp 2023-10-29T02:00:00+00:00" in msg and "lines 4 and 5" in msg, msg
    assert "daylight-saving" in msg and "local time" in msg, msg


# ----------------------------------------------------------------------------- gaps
def test_gap_error_names_the_config_key_and_readable_durations(tmp_path: Path) -> None:
    rows = "".join(f"2023-01-01 {h:02d}:00:00,{'' if h == 2 else 100 + h}\n" for h in range(5))
    p = _write(tmp_path, "g.csv", "datetime_utc,DE\n" + rows)
    with pytest.raises(ConfigError) as e:
        read_wide(p, slot=timedelta(hours=1), max_gap=timedelta(0))
    msg = str(e.value)
    assert "0 days" not in msg and "max_gap_slots" in msg and "raise max_gap," not in msg, msg
    assert "2023-01-01T02:00:00+00:00 .. 2023-01-01T03:00:00+00:00 (1 h)" in msg, msg


def _example_with_gap(tmp_path: Path) -> Path:
    dest = tmp_path / "example"
    shutil.copytree(REPO / "data" / "example", dest)
    carbon = dest / "carbon.csv"
    lines = carbon.read_text().splitlines()
    head = lines[0].split(",")
    col = head.index("DE")
    row = lines[5].split(",")
    row[col] = ""  # one missing hour of DE inside the horizon
    lines[5] = ",".join(row)
    carbon.write_text("\n".join(lines) + "\n")
    return dest


def test_forecast_refuses_the_gap_plan_refuses_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = _example_with_gap(tmp_path)
    argv = ["forecast", "--zone", "DE", "--source", f"csv:{dest / 'carbon.csv'}", "--no-cache"]
    argv += ["--hours", "24"]
    assert main(argv) == 2  # plan's default is max_gap_slots = 0: forecast now agrees
    err = capsys.readouterr().err
    assert err.startswith("greencpn: error: ") and "--max-gap-slots" in err, err
    assert main([*argv, "--max-gap-slots", "1", "--json"]) == 0
    capsys.readouterr()
    # and plan refuses the same file, naming the config key
    assert main(["check", "--config", str(dest / "fleet.toml")]) == 2
    err = capsys.readouterr().err
    assert "max_gap_slots" in err, err


# ----------------------------------------------------------------------------- plausibility
@pytest.mark.parametrize("bad", ["2500", "1e9"])
def test_implausible_values_are_refused_with_their_line(tmp_path: Path, bad: str) -> None:
    p = _write(tmp_path, "big.csv", WIDE.replace("302.30", bad))
    with pytest.raises(ConfigError) as e:
        read_wide(p)
    msg = str(e.value)
    assert "big.csv" in msg and "line 4" in msg and "2000" in msg and "'DE'" in msg, msg


def test_unparseable_timestamp_names_its_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "t.csv", WIDE.replace("2023-04-25T01:00:00Z", "2023-04-25T01:00Zz"))
    with pytest.raises(ConfigError) as e:
        read_wide(p)
    assert "line 3" in str(e.value), str(e.value)


def test_electricitymaps_export_without_final_newline_is_read(tmp_path: Path) -> None:
    # its last column (Data Estimation Method) is usually empty: no false "cut" alarm
    head = (
        "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
        f"Carbon Intensity gCO₂eq/kWh (LCA){EM_TAIL}\n"
    )
    p = _write(tmp_path, "DE_2023_hourly.csv", head + EM_ROWS * 1)
    p.write_text(
        head
        + EM_ROWS
        + EM_ROWS.replace("01:00", "02:00").replace("00:00:00", "03:00:00").rstrip("\n")
    )
    assert len(read_carbon_file(p, zone="DE").intensity_g_per_kwh) == 4
