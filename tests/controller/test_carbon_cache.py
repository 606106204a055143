"""The step's carbon file is parsed once while it is unchanged, and again as soon as it is
rewritten (the daemon reads the same file every step; whatever feeds it may rewrite it)."""

from __future__ import annotations

import os

import pytest

from greencpn.config import load_config
from greencpn.controller import forecast
from greencpn.errors import ConfigError
from tests.controller.conftest import START, carbon_rows, write_tiny


@pytest.fixture
def parses(monkeypatch):
    forecast._parse_carbon_cached.cache_clear()
    calls: list[str] = []
    real = forecast._parse_carbon

    def counting(path, *a, **k):
        calls.append(str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(forecast, "_parse_carbon", counting)
    yield calls
    forecast._parse_carbon_cached.cache_clear()


def test_unchanged_file_is_parsed_once(tmp_path, parses):
    cfg = load_config(write_tiny(tmp_path))
    a = forecast.load_carbon(cfg, START, 12)
    b = forecast.load_carbon(cfg, START, 12)
    assert len(parses) == 1
    assert a.keys() == b.keys() == {"Z1", "Z2"}
    for z in a:
        assert (a[z] == b[z]).all()
    # the first hour of carbon_rows' sine: the zone's mean (Z1 400, Z2 150 g/kWh)
    assert a["Z1"][0] == pytest.approx(400.0) and a["Z2"][0] == pytest.approx(150.0)


def test_rewritten_file_is_parsed_again_with_its_new_values(tmp_path, parses):
    path = write_tiny(tmp_path)
    cfg = load_config(path)
    first = forecast.load_carbon(cfg, START, 12)
    carbon = tmp_path / "carbon.csv"
    carbon.write_text(carbon_rows(4, {"Z1": (500, 100), "Z2": (150, 120)}))  # same size
    st = carbon.stat()
    os.utime(carbon, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a coarse clock
    second = forecast.load_carbon(cfg, START, 12)
    assert len(parses) == 2
    assert first["Z1"][0] == pytest.approx(400.0) and second["Z1"][0] == pytest.approx(500.0)
    assert (second["Z2"] == first["Z2"]).all()


def test_a_vanished_file_is_still_a_clear_error(tmp_path, parses):
    cfg = load_config(write_tiny(tmp_path))
    forecast.load_carbon(cfg, START, 12)
    (tmp_path / "carbon.csv").unlink()
    with pytest.raises(ConfigError) as err:
        forecast.load_carbon(cfg, START, 12)
    assert "carbon.csv" in str(err.value)
