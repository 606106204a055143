"""Carbon file readers: tiny hand-written files, then the real files in ../shared/data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from greencpn.errors import ConfigError
from greencpn.sources.files import (
    detect_format,
    read_carbon_file,
    read_electricitymaps_export,
    read_lets_wait_awhile,
    read_long,
    read_watttime_actual,
    read_watttime_forecasts,
    read_wide,
)

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "carbon"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")

EM_HEADER = (
    "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
    "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,"
    "Data Source,Data Estimated,Data Estimation Method"
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_electricitymaps_export_lca_direct_and_estimated(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "DE_2023_hourly.csv",
        EM_HEADER + "\n"
        "2023-01-01 00:00:00,Germany,Germany,DE,140.5,185.8,83.8,78.4,entsoe.eu,false,\n"
        "2023-01-01 01:00:00,Germany,Germany,DE,141.0,186.0,83.8,78.4,entsoe.eu,true,"
        "ESTIMATED_FORECASTS_HIERARCHY\n"
        "2023-01-01 02:00:00,Germany,Germany,DE,142.0,187.0,83.8,78.4,entsoe.eu,false,\n",
    )
    assert detect_format(p) == "electricitymaps"
    lca = read_electricitymaps_export(p)
    assert lca.zone == "DE" and lca.accounting == "lifecycle" and lca.signal == "average"
    assert list(lca.intensity_g_per_kwh) == [185.8, 186.0, 187.0]
    assert str(lca.intensity_g_per_kwh.index.tz) == "UTC"
    assert lca.intensity_g_per_kwh.index[0] == pd.Timestamp("2023-01-01", tz="UTC")
    assert lca.estimated is not None and list(lca.estimated) == [False, True, False]
    direct = read_electricitymaps_export(p, accounting="direct")
    assert list(direct.intensity_g_per_kwh) == [140.5, 141.0, 142.0]
    assert direct.accounting == "direct"


def test_wide_and_long(tmp_path: Path) -> None:
    wide = _write(
        tmp_path,
        "w.csv",
        "datetime_utc,DE,GB\n2023-01-01 00:00:00,100,50\n"
        "2023-01-01 01:00:00,110,55\n2023-01-01 02:00:00,120,60\n",
    )
    got = read_wide(wide)
    assert list(got) == ["DE", "GB"]
    assert list(got["GB"].intensity_g_per_kwh) == [50, 55, 60]
    long = _write(
        tmp_path,
        "l.csv",
        "datetime,zone,intensity_g_per_kwh\n"
        "2023-01-01T00:00:00Z,DE,100\n2023-01-01T00:00:00Z,FR,20\n"
        "2023-01-01T01:00:00Z,DE,110\n2023-01-01T01:00:00Z,FR,22\n",
    )
    assert detect_format(long) == "long"
    lz = read_long(long)
    assert list(lz["FR"].intensity_g_per_kwh) == [20, 22]
    assert read_carbon_file(long, zone="DE").intensity_g_per_kwh.iloc[1] == 110


def test_offsets_are_converted_to_utc(tmp_path: Path) -> None:
    p = _write(
        tmp_path, "o.csv", "time,DE\n2023-03-26T01:00:00+01:00,100\n2023-03-26T03:00:00+02:00,200\n"
    )  # DST day in Berlin: consecutive hours
    s = read_wide(p)["DE"].intensity_g_per_kwh
    assert list(s.index) == [
        pd.Timestamp("2023-03-26 00:00", tz="UTC"),
        pd.Timestamp("2023-03-26 01:00", tz="UTC"),
    ]
    p2 = _write(tmp_path, "u.csv", "time,DE\n2023-01-01 00:00:00 UTC,1\n2023-01-01T01:00:00Z,2\n")
    assert read_wide(p2)["DE"].intensity_g_per_kwh.index[1] == pd.Timestamp(
        "2023-01-01 01:00", tz="UTC"
    )


def test_naive_times_need_utc_column_or_flag(tmp_path: Path) -> None:
    p = _write(tmp_path, "n.csv", "datetime,DE\n2023-01-01 00:00:00,100\n2023-01-01 01:00:00,1\n")
    with pytest.raises(ConfigError) as e:
        read_wide(p)
    msg = str(e.value)
    assert "n.csv" in msg and "'datetime'" in msg and "assume_utc=True" in msg
    assert "datetime_utc" in msg  # the fix names the column rename
    assert len(read_wide(p, assume_utc=True)["DE"].intensity_g_per_kwh) == 2
    # a date-only value ends in "-01": that is not an offset
    d = _write(tmp_path, "d.csv", "date,DE\n2023-01-01,100\n2023-01-02,1\n")
    with pytest.raises(ConfigError, match="no time zone"):
        read_wide(d)


def test_bad_number_and_negative_name_file_line_column(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "b.csv",
        "datetime_utc,DE,GB\n2023-01-01 00:00:00,100,50\n2023-01-01 01:00:00,abc,55\n",
    )
    with pytest.raises(ConfigError) as e:
        read_wide(p)
    assert "b.csv" in str(e.value) and "line 3" in str(e.value) and "'DE'" in str(e.value)
    p2 = _write(
        tmp_path,
        "neg.csv",
        "datetime_utc,DE\n2023-01-01 00:00:00,100\n"
        "2023-01-01 01:00:00,100\n2023-01-01 02:00:00,-5\n",
    )
    with pytest.raises(ConfigError, match=r"neg.csv.*'DE'.*line 4: negative"):
        read_wide(p2)


def test_missing_cells_filled_up_to_max_gap(tmp_path: Path) -> None:
    rows = "".join(f"2023-01-01 {h:02d}:00:00,{'' if h in (2, 3) else h * 10}\n" for h in range(6))
    p = _write(tmp_path, "g.csv", "datetime_utc,DE\n" + rows)
    s = read_wide(p)["DE"].intensity_g_per_kwh
    assert list(s) == pytest.approx([0, 10, 20, 30, 40, 50])
    with pytest.raises(ConfigError, match="gap"):
        read_wide(p, max_gap=timedelta(hours=1))


def test_duplicate_timestamp_refused(tmp_path: Path) -> None:
    p = _write(tmp_path, "d.csv", "datetime_utc,DE\n2023-01-01 00:00:00,1\n2023-01-01 00:00:00,2\n")
    with pytest.raises(ConfigError, match="duplicate"):
        read_wide(p)


def test_irregular_file_resampled(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "gb_ci.csv",
        "Time,Carbon Intensity\n2020-01-01 00:00:00,100\n"
        "2020-01-01 00:15:00,200\n2020-01-01 00:45:00,400\n2020-01-01 01:00:00,300\n"
        "2020-01-01 01:15:00,300\n2020-01-01 01:30:00,300\n2020-01-01 01:45:00,300\n",
    )
    assert detect_format(p) == "letswaitawhile"
    cs = read_lets_wait_awhile(p)
    assert cs.zone == "GB"
    assert list(cs.intensity_g_per_kwh) == pytest.approx([225, 300])


def test_watttime_forecast_archive(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "f.csv",
        "request_time,forecast_time,Caiso_North\n"
        "2023-06-08 00:00:00,2023-06-08 00:05:00,1\n2023-06-08 00:00:00,2023-06-08 00:10:00,2\n"
        "2023-06-08 00:05:00,2023-06-08 00:10:00,3\n2023-06-08 00:05:00,2023-06-08 00:15:00,4\n",
    )
    arch = read_watttime_forecasts(p)
    assert arch.zone == "CAISO_NORTH" and len(arch.issue_times) == 2
    f = arch.latest(datetime(2023, 6, 8, 0, 7, tzinfo=UTC))
    assert f.issued_at == datetime(2023, 6, 8, 0, 5, tzinfo=UTC)
    assert list(f.intensity_g_per_kwh) == [3, 4] and f.signal == "marginal"
    with pytest.raises(KeyError):
        arch.latest(datetime(2023, 6, 7, tzinfo=UTC))


def test_not_found_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        read_carbon_file(tmp_path / "nope.csv")


@needs_data
def test_real_wide_file() -> None:
    z = read_wide(DATA / "electricitymaps_hourly_lca_2021-2023.csv")
    assert len(z) == 10
    de = z["DE"].intensity_g_per_kwh
    assert len(de) == 26280 and de.index[0] == pd.Timestamp("2021-01-01", tz="UTC")
    assert z["DE"].step == timedelta(hours=1)


@needs_data
def test_real_export_matches_wide_file() -> None:
    em = read_electricitymaps_export(DATA / "raw_electricitymaps" / "DE_2023_hourly.csv")
    wide = read_carbon_file(DATA / "electricitymaps_hourly_lca_2021-2023.csv", zone="DE")
    a = em.intensity_g_per_kwh
    assert len(a) == 8760
    assert (a - wide.intensity_g_per_kwh.reindex(a.index)).abs().max() == 0
    assert em.estimated is not None and int(em.estimated.sum()) == 30


@needs_data
def test_real_irregular_gb_2020() -> None:
    raw = pd.read_csv(DATA / "lets_wait_awhile_2020" / "gb_ci.csv")
    cs = read_lets_wait_awhile(DATA / "lets_wait_awhile_2020" / "gb_ci.csv")
    s = cs.intensity_g_per_kwh
    assert cs.step == timedelta(hours=1) and s.notna().all()
    # the hourly mean stays within the raw value range and close to the raw mean
    assert raw["Carbon Intensity"].min() <= s.min() and s.max() <= raw["Carbon Intensity"].max()
    # resampling conserves the time integral: the hourly mean equals the raw time-weighted mean
    t = pd.to_datetime(raw["Time"])
    dt = t.diff().shift(-1).dt.total_seconds().fillna(900).to_numpy()
    tw_mean = float((raw["Carbon Intensity"].to_numpy() * dt).sum() / dt.sum())
    assert s.mean() == pytest.approx(tw_mean, abs=0.5)


@needs_data
def test_real_watttime() -> None:
    act = read_watttime_actual(
        DATA / "watttime_caiso_north_2023" / "watttime2023_caiso-north_actual.csv"
    )
    assert act.step == timedelta(minutes=5) and act.signal == "marginal"
    assert len(act.intensity_g_per_kwh) == 8928
