"""The bundled example (data/example): it loads, is reproducible, and has the intended shape."""

from __future__ import annotations

import csv
import importlib.util
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greencpn.config import allowed_sites, load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "data" / "example"
SHARED = REPO.parent / "shared" / "data"


def _make_example():
    spec = importlib.util.spec_from_file_location("make_example", EXAMPLE / "make_example.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cfg():
    return load_config(EXAMPLE / "fleet.toml")


def test_example_loads(cfg) -> None:
    assert len(cfg.sites) == 4
    assert 6 <= len(cfg.pools) <= 10
    assert 200 <= sum(p.nodes for p in cfg.pools) <= 400
    assert 300 <= len(cfg.jobs) <= 800
    models = {cfg.gpu_models[p.gpu_model.lower()].name for p in cfg.pools}
    assert {"A100-SXM4-40GB", "H100-SXM5-80GB", "A40"} <= models


def test_residency_tags(cfg) -> None:
    gdpr = [j for j in cfg.jobs if j.jurisdictions == ["EU", "EEA"]]
    assert gdpr
    for j in gdpr:
        assert "california" not in allowed_sites(j, cfg.sites)
    plain = [j for j in gdpr if j.user_region is None]
    assert plain
    assert set(allowed_sites(plain[0], cfg.sites)) == {"frankfurt", "oslo", "madrid"}
    us_only = [j for j in cfg.jobs if j.jurisdictions == ["US"]]
    assert us_only and all(allowed_sites(j, cfg.sites) == ["california"] for j in us_only)


def test_jobs_shape(cfg) -> None:
    start = cfg.raw.horizon.start
    end = start + timedelta(hours=cfg.raw.horizon.slots)
    gpus = [j.gpus for j in cfg.jobs]
    assert sum(g == 1 for g in gpus) > len(gpus) / 3
    assert max(gpus) <= 32 and any(g >= 16 for g in gpus)
    for j in cfg.jobs:
        dur = j.work_gpu_h / j.gpus
        assert 1.0 <= dur <= 12.0
        assert start <= j.release <= start + timedelta(hours=30)
        assert j.deadline <= end
        assert j.deadline >= j.release + timedelta(hours=dur)
    share_ckpt = sum(j.checkpointable for j in cfg.jobs) / len(cfg.jobs)
    assert 0.2 <= share_ckpt <= 0.4
    util = sum(j.work_gpu_h for j in cfg.jobs) / (
        sum(p.nodes * p.gpus_per_node for p in cfg.pools) * cfg.raw.horizon.slots
    )
    assert 0.30 <= util <= 0.45


def test_carbon_csv(cfg) -> None:
    with cfg.carbon_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 72
    assert set(rows[0]) == {"datetime_utc"} | {s.zone for s in cfg.sites}
    times = [datetime.fromisoformat(r["datetime_utc"].replace("Z", "+00:00")) for r in rows]
    assert all(r["datetime_utc"].endswith("Z") for r in rows)
    assert times[0] == cfg.raw.horizon.start.astimezone(UTC)
    assert all(b - a == timedelta(hours=1) for a, b in zip(times, times[1:], strict=False))
    de = [float(r["DE"]) for r in rows[:48]]
    assert max(de) - min(de) > 150, "the excerpt should show a clear daily swing"


def test_budget_binds_somewhere(cfg) -> None:
    """At least one site's budget is below its full-load meter power (so it can bind)."""
    mk = _make_example()
    fleet_text, _ = mk.build_fleet_toml()
    assert "full load would be" in fleet_text
    shares = mk.BUDGET_SHARE
    assert min(shares.values()) < 0.7


def test_generator_reproduces_committed_files(tmp_path: Path) -> None:
    mk = _make_example()
    files, _ = mk.build_all()
    for name, text in files.items():
        assert (EXAMPLE / name).read_text() == text, f"{name} differs: rerun make_example.py"
    if not (SHARED / "carbon").is_dir():
        pytest.skip(f"carbon.csv not re-derived: {SHARED / 'carbon'} absent")
    assert "carbon.csv" in files


def test_stored_philly_histogram_matches_trace() -> None:
    mk = _make_example()
    if not mk.PHILLY_SRC.is_file():
        pytest.skip(f"Philly trace not found at {mk.PHILLY_SRC}")
    assert mk.philly_gpu_counts() == mk.PHILLY_GPU_COUNTS
