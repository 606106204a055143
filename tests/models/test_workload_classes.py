"""Issue #14.2: a job's workload class picks its GPU curve; a pool's curve is the mix of the
classes of the jobs that may run on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from greencpn.config import GpuLevel, GpuModelConfig, load_config
from greencpn.optimize.inputs import build_inputs

from .test_profile_validation import CARBON, FLEET

CLASSES = """
[[gpu_models.levels]]
cap_w = 150
throughput = 0.8
power_factor = 0.4
[[gpu_models.levels]]
cap_w = 300
throughput = 1.0
power_factor = 0.6
[[gpu_models.workload_classes]]
name = "light"
[[gpu_models.workload_classes.levels]]
cap_w = 150
throughput = 1.0
power_factor = 0.2
[[gpu_models.workload_classes.levels]]
cap_w = 300
throughput = 1.0
power_factor = 0.25
[[gpu_models.workload_classes]]
name = "heavy"
[[gpu_models.workload_classes.levels]]
cap_w = 150
throughput = 0.5
power_factor = 0.5
[[gpu_models.workload_classes.levels]]
cap_w = 300
throughput = 1.0
power_factor = 0.9
"""


def _gm() -> GpuModelConfig:
    def lv(c: float, t: float, p: float) -> GpuLevel:
        return GpuLevel(cap_w=c, throughput=t, power_factor=p)

    return GpuModelConfig.model_validate(
        {
            "name": "T",
            "power_limit_min_w": 100,
            "power_limit_max_w": 300,
            "power_limit_default_w": 300,
            "idle_w": 10,
            "source": "t",
            "levels": [lv(150, 0.8, 0.4), lv(300, 1.0, 0.6)],
            "workload_classes": [
                {"name": "light", "levels": [lv(150, 1.0, 0.2), lv(300, 1.0, 0.25)]},
                {"name": "heavy", "levels": [lv(150, 0.5, 0.5), lv(300, 1.0, 0.9)]},
            ],
        }
    )


def test_levels_for_a_class_and_an_unknown_class() -> None:
    gm = _gm()
    assert gm.levels_for("heavy")[0].throughput == 0.5
    assert gm.levels_for(None) is gm.levels
    assert gm.levels_for("other") is gm.levels


def test_mix_by_hand() -> None:
    gm = _gm()
    # 1 GPU-h light + 1 GPU-h heavy at 150 W: GPU-hours 1/1.0 + 1/0.5 = 3, so θ = 2/3;
    # energy 1 × 0.2 + 2 × 0.5 = 1.2 (× max) over 3 GPU-h: power_factor 0.4
    mix = gm.levels_for_mix({"light": 1.0, "heavy": 1.0})
    assert mix[0].throughput == pytest.approx(2 / 3)
    assert mix[0].power_factor == pytest.approx(0.4)
    assert mix[1].throughput == pytest.approx(1.0)
    assert mix[1].power_factor == pytest.approx((0.25 + 0.9) / 2)
    assert gm.levels_for_mix({"heavy": 3.0}) is gm.levels_for("heavy")
    assert gm.levels_for_mix({None: 2.0}) is gm.levels


def _inputs(tmp_path: Path, job_extra: str):
    (tmp_path / "carbon.csv").write_text(CARBON)
    cfg_path = tmp_path / "fleet.toml"
    cfg_path.write_text(FLEET.format(levels=CLASSES, job_extra=job_extra))
    cfg = load_config(cfg_path)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    slots = [start + timedelta(hours=h) for h in range(12)]
    return build_inputs(cfg, {"DE": np.full(12, 300.0)}, start, slots)


def test_the_plan_uses_the_jobs_class_curve(tmp_path: Path) -> None:
    # levels are sorted highest cap first in the plan's inputs
    none = _inputs(tmp_path, "").pools[0]
    assert list(none.level_thr) == pytest.approx([1.0, 0.8])
    assert list(none.level_busy_kw) == pytest.approx([0.18, 0.12])
    heavy = _inputs(tmp_path, 'workload_class = "heavy"').pools[0]
    assert list(heavy.level_thr) == pytest.approx([1.0, 0.5])
    assert list(heavy.level_busy_kw) == pytest.approx([0.27, 0.15])
    light = _inputs(tmp_path, 'workload_class = "light"').pools[0]
    assert list(light.level_thr) == pytest.approx([1.0, 1.0])
    assert list(light.level_busy_kw) == pytest.approx([0.075, 0.06])
