"""Issue #14.1: every [[gpu_models]] of a config is checked (not only the bundled files):
levels monotone in the cap, power_factor <= cap / max, throughput <= 1; errors name file,
field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from greencpn.config import load_config, load_gpu_model
from greencpn.errors import ConfigError

CARBON = "datetime_utc,DE\n" + "".join(f"2026-03-02 {h:02d}:00:00,{300 + h}\n" for h in range(24))

FLEET = """
[horizon]
start = "2026-03-02T00:00:00Z"
slots = 12

[carbon]
file = "carbon.csv"

[[sites]]
name = "s1"
zone = "DE"
pue = 1.2

[[pools]]
name = "p1"
site = "s1"
nodes = 1
gpu_model = "T1"
gpus_per_node = 2
node_idle_w = 200
node_off_w = 5
node_boot_w = 250

[[jobs]]
id = "j1"
gpus = 1
work_gpu_h = 2
release = "2026-03-02T00:00:00Z"
deadline = "2026-03-02T10:00:00Z"
{job_extra}

[[gpu_models]]
name = "T1"
power_limit_min_w = 100
power_limit_max_w = 300
power_limit_default_w = 300
idle_w = 20
source = "test profile"
{levels}
"""


def _levels(*rows: tuple[float, float, float]) -> str:
    return "".join(
        f"[[gpu_models.levels]]\ncap_w = {c}\nthroughput = {t}\npower_factor = {p}\n"
        for c, t, p in rows
    )


def _load(tmp_path: Path, levels: str, job_extra: str = "") -> None:
    (tmp_path / "carbon.csv").write_text(CARBON)
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(FLEET.format(levels=levels, job_extra=job_extra))
    load_config(cfg)


def test_a_sound_inline_profile_loads(tmp_path: Path) -> None:
    # listed from the top cap down, as several configs do: order does not matter
    _load(tmp_path, _levels((300, 1.0, 0.9), (150, 0.7, 0.45)))


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        # throughput falls as the cap rises
        (((150, 0.9, 0.4), (300, 0.8, 0.9)), r"levels\[1\]\.throughput=0\.8 at 300"),
        # power falls as the cap rises
        (((150, 0.7, 0.45), (300, 1.0, 0.4)), r"levels\[1\]\.power_factor=0\.4 at 300"),
        # a 150 W cap cannot draw 0.6 x 300 = 180 W
        (
            ((150, 0.7, 0.6), (300, 1.0, 0.9)),
            r"power_factor=0\.6 exceeds cap_w / power_limit_max_w = 0\.500",
        ),
    ],
)
def test_unphysical_inline_levels_are_refused(tmp_path: Path, rows, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as e:
        _load(tmp_path, _levels(*rows))
    err = e.value
    assert str(tmp_path / "fleet.toml") in str(err)
    assert "gpu_models[0](T1)" in str(err)  # the field, with the profile's name
    assert "cap_w / power_limit_max_w" in str(err) and "do not fall" in str(err)  # the fix


def test_throughput_above_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"throughput") as e:
        _load(tmp_path, _levels((150, 1.2, 0.45), (300, 1.0, 0.9)))
    assert "gpu_models[0](T1).levels[0].throughput" in str(e.value)


def test_a_bad_profile_file_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(
        'name = "B"\npower_limit_min_w = 100\npower_limit_max_w = 200\n'
        'power_limit_default_w = 200\nidle_w = 10\nsource = "x"\n'
        "[[levels]]\ncap_w = 100\nthroughput = 0.8\npower_factor = 0.7\n"
        "[[levels]]\ncap_w = 200\nthroughput = 1.0\npower_factor = 0.9\n"
    )
    with pytest.raises(ConfigError, match="exceeds cap_w") as e:
        load_gpu_model(p)
    assert str(p) in str(e.value)


def test_class_levels_must_share_the_profile_caps(tmp_path: Path) -> None:
    levels = _levels((150, 0.7, 0.45), (300, 1.0, 0.9)) + (
        '[[gpu_models.workload_classes]]\nname = "heavy"\n'
        "[[gpu_models.workload_classes.levels]]\ncap_w = 200\nthroughput = 0.9\npower_factor = 0.6\n"
        "[[gpu_models.workload_classes.levels]]\ncap_w = 300\nthroughput = 1.0\npower_factor = 0.95\n"
    )
    with pytest.raises(ConfigError, match=r"workload_classes\[0\]\(heavy\)\.levels have caps"):
        _load(tmp_path, levels)


def test_a_job_class_no_gpu_model_knows_is_refused(tmp_path: Path) -> None:
    levels = _levels((150, 0.7, 0.45), (300, 1.0, 0.9))
    with pytest.raises(ConfigError, match="workload_class 'hevy'") as e:
        _load(tmp_path, levels, job_extra='workload_class = "hevy"')
    assert "jobs(j1).workload_class" in str(e.value)
