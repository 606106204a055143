"""GPU profiles in models/gpus: they load, stay in device limits, are monotone, and the fit reproduces them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from greencpn.config import load_gpu_model, load_gpu_models

REPO = Path(__file__).resolve().parents[2]
GPUS = REPO / "models" / "gpus"
DATA = REPO.parent / "shared" / "data" / "gpu"
PROFILE_FILES = sorted(GPUS.glob("*.toml"))


def _fit_module():
    spec = importlib.util.spec_from_file_location(
        "fit_gpu_profiles", REPO / "models" / "fit_gpu_profiles.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


def test_expected_profiles_exist() -> None:
    names = {p.stem for p in PROFILE_FILES}
    assert {"v100-pcie", "v100-sxm2", "a40", "a100-sxm4-40gb", "h100-sxm5-80gb"} <= names


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_profile_loads_and_is_consistent(path: Path) -> None:
    m = load_gpu_model(path)
    assert m.source.strip()
    assert 4 <= len(m.levels) <= 6
    caps = [lv.cap_w for lv in m.levels]
    assert caps == sorted(caps), "levels are listed by increasing cap"
    assert caps[-1] == m.power_limit_max_w, "the highest level is the device maximum"
    for lv in m.levels:
        assert m.power_limit_min_w <= lv.cap_w <= m.power_limit_max_w
        # busy board power cannot exceed the cap it runs under (small tolerance for rounding)
        assert lv.power_factor * m.power_limit_max_w <= lv.cap_w * 1.001
        assert lv.power_factor * m.power_limit_max_w > m.idle_w
    thr = [lv.throughput for lv in m.levels]
    pf = [lv.power_factor for lv in m.levels]
    assert thr == sorted(thr) and thr[-1] == 1.0
    assert pf == sorted(pf)
    if m.extrapolated:
        assert "recalibrate" in (m.notes + m.source).lower()


def test_aliases_are_unique_across_files() -> None:
    seen: dict[str, str] = {}
    for path in PROFILE_FILES:
        m = load_gpu_model(path)
        for key in [m.name, *m.aliases]:
            assert key.lower() not in seen, f"{key} in {path.name} and {seen.get(key.lower())}"
            seen[key.lower()] = path.name
    models = load_gpu_models(GPUS)
    assert models["tesla v100-sxm2-32gb"].name == "V100-SXM2"
    assert models["nvidia a100-sxm4-40gb"].extrapolated
    assert not models["a40"].extrapolated


def test_measured_and_extrapolated_flags() -> None:
    models = {load_gpu_model(p).name: load_gpu_model(p) for p in PROFILE_FILES}
    for name in ("V100-PCIE", "A40", "P100-PCIE", "Quadro-RTX-6000"):
        assert not models[name].extrapolated
        assert "Zeus" in models[name].source
    for name in ("V100-SXM2", "A100-SXM4-40GB", "H100-SXM5-80GB"):
        assert models[name].extrapolated
        assert models[name].source.startswith("EXTRAPOLATED")


def test_pick_levels_by_hand() -> None:
    fit = _fit_module()
    # 25 W steps 100..300: nearest to 150, 180, 210, 240, 270, 300 (ties go up)
    assert fit.pick_levels([100, 125, 150, 175, 200, 225, 250, 275, 300], 300) == [
        150,
        175,
        200,
        250,
        275,
        300,
    ]
    assert fit.pick_levels([100, 200, 300], 300) == [200, 300]


def test_fit_sweep_by_hand() -> None:
    fit = _fit_module()
    rows = []
    # two configurations; config b is twice as slow; both lose 20 % / 50 % speed at lower caps
    for cfg, base_t in (("a", 10.0), ("b", 20.0)):
        for pl, slow, power in ((100, 2.0, 80.0), (150, 1.25, 120.0), (200, 1.0, 160.0)):
            rows.append(
                {
                    "dataset": cfg,
                    "network": "n",
                    "batch_size": "1",
                    "optimizer": "o",
                    "power_limit": str(pl),
                    "time_per_epoch": str(base_t * slow),
                    "average_power": str(power),
                }
            )
    res = fit.fit_sweep("x", rows, 200.0)
    assert res.limits == [100.0, 150.0, 200.0]
    assert res.per_limit[200.0].throughput == pytest.approx(1.0)
    assert res.per_limit[150.0].throughput == pytest.approx(0.8)
    assert res.per_limit[100.0].throughput == pytest.approx(0.5)
    assert res.per_limit[100.0].power_factor == pytest.approx(80.0 / 200.0)
    assert res.per_limit[200.0].power_factor == pytest.approx(160.0 / 200.0)


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared GPU sweep data not found at {DATA}")
def test_fit_reproduces_committed_files(tmp_path: Path) -> None:
    fit = _fit_module()
    assert fit.main(["--data", str(DATA), "--out", str(tmp_path)]) == 0
    produced = sorted(p.name for p in tmp_path.glob("*.toml"))
    assert produced == [p.name for p in PROFILE_FILES]
    for name in produced:
        assert (tmp_path / name).read_text() == (GPUS / name).read_text(), name


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared GPU sweep data not found at {DATA}")
def test_measured_knee_matches_shared_notes() -> None:
    """SOURCES.md quotes the V100 median throughput at 50 % = 0.853 and A40 at 50 % = 0.751."""
    v100 = load_gpu_models(GPUS)["v100-pcie"]
    a40 = load_gpu_models(GPUS)["a40"]
    assert {lv.cap_w: lv.throughput for lv in v100.levels}[125.0] == pytest.approx(0.853, abs=1e-3)
    assert {lv.cap_w: lv.throughput for lv in a40.levels}[150.0] == pytest.approx(0.751, abs=1e-3)
