"""Issue #10.9: the carbon-agnostic baseline starts each job at its submit site — the job's
``submit_site`` field, else the allowed site with the most GPUs — not at the first allowed site
in the TOML's order: writing the sites in another order must not change the baseline."""

from __future__ import annotations

from pathlib import Path

import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_plan
from greencpn.errors import ConfigError
from tests.optimize.conftest import START, write_fleet
from tests.optimize.test_plan_exact import job

BIG = """
[[sites]]
name = "big"
zone = "DIRTY"
jurisdictions = ["EU"]
pue = 1.0
"""
SMALL = """
[[sites]]
name = "small"
zone = "CLEAN"
jurisdictions = ["EU"]
pue = 1.0
"""
POOLS = """
[[pools]]
name = "p-big"
site = "big"
nodes = 2
gpu_model = "T1"
gpus_per_node = 4
node_idle_w = 100
initial_on = 0
spares = 0
[[pools]]
name = "p-small"
site = "small"
nodes = 1
gpu_model = "T1"
gpus_per_node = 2
node_idle_w = 100
initial_on = 0
spares = 0
"""
CARBON = {"DIRTY": [500.0] * 6, "CLEAN": [50.0] * 6}


def _plan(tmp: Path, sites: str, jobs: list[dict]) -> dict:
    tmp.mkdir()
    path = write_fleet(tmp, carbon=CARBON, sites=sites, pools=POOLS, jobs=jobs)
    return make_plan(load_config(path), SimClock(START)).document


def _sites(doc: dict, key: str = "carbon_agnostic") -> dict:
    return {j["id"]: j["submit_site"] for j in doc["jobs"]}


def test_site_order_in_the_toml_does_not_change_the_baseline(tmp_path: Path) -> None:
    jobs = [job(id="a", work=2.0, deadline=6), job(id="b", work=1.0, deadline=6)]
    small_first = _plan(tmp_path / "1", SMALL + BIG, jobs)
    big_first = _plan(tmp_path / "2", BIG + SMALL, jobs)
    for key in ("carbon_agnostic", "shutdown_idle"):
        assert small_first["baselines"][key] == pytest.approx(big_first["baselines"][key])
    # the default rule: the site with the most GPUs (big: 8 GPUs, small: 2)
    assert _sites(small_first) == _sites(big_first) == {"a": "big", "b": "big"}
    # the baseline ran there: carbon at the dirty site's 500 g/kWh, none at the clean one
    agn = small_first["baselines"]["carbon_agnostic"]
    assert agn["carbon_kg"] > 0
    rules = small_first["baseline_rules"]["submit_site"]
    assert rules["jobs_by_rule"] == {"most GPUs": 2}
    assert "the allowed site with the most GPUs" in rules["rule"]


def test_the_submit_site_field_is_used(tmp_path: Path) -> None:
    jobs = [job(id="a", work=2.0, deadline=6) | {"submit_site": "small"}]
    doc = _plan(tmp_path / "1", BIG + SMALL, jobs)
    assert _sites(doc) == {"a": "small"}
    assert doc["baseline_rules"]["submit_site"]["jobs_by_rule"] == {"job field submit_site": 1}
    default = _plan(tmp_path / "2", BIG + SMALL, [job(id="a", work=2.0, deadline=6)])
    # at the clean site the carbon-agnostic baseline emits less than at the big dirty one
    assert (
        doc["baselines"]["carbon_agnostic"]["carbon_kg"]
        < default["baselines"]["carbon_agnostic"]["carbon_kg"]
    )


def test_a_submit_site_the_job_may_not_use_is_refused(tmp_path: Path) -> None:
    jobs = [job(id="a", work=2.0, deadline=6) | {"submit_site": "mars"}]
    with pytest.raises(ConfigError, match=r"submit_site 'mars'.*fix: use one of"):
        _plan(tmp_path / "1", BIG + SMALL, jobs)
