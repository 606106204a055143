"""The cyclic garbage collector is paused while a plan is made and during a control step, and
restored as it was afterwards — also when the run fails (builder.paused_gc). The control
step's pause: tests/controller/test_step_basic.py."""

from __future__ import annotations

import gc

import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs
from greencpn.optimize.builder import paused_gc
from greencpn.optimize.milp import PlanModel
from greencpn.optimize.plan import make_plan
from tests.optimize.conftest import START, write_fleet
from tests.optimize.test_plan_exact import SITE, job, pool


@pytest.fixture
def gc_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_paused_gc_restores_the_collector_as_it_was(gc_on):
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():  # nested: stays off, and the outer pause still restores
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()  # a caller who had it off keeps it off
    with paused_gc():
        assert not gc.isenabled()
    assert not gc.isenabled()
    gc.enable()


def test_paused_gc_restores_the_collector_on_an_exception(gc_on):
    with pytest.raises(RuntimeError, match="boom"), paused_gc():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_make_plan_builds_and_solves_with_the_collector_paused(tmp_path, gc_on):
    path = write_fleet(
        tmp_path,
        carbon={"Z": [100.0, 500.0, 100.0, 500.0]},
        sites=SITE,
        pools=pool(nodes=1, gpn=1, idle_w=100.0),
        jobs=[job(work=1.0, release=0.0, deadline=4.0)],
    )
    seen: list[bool] = []

    def new_model(inp):
        seen.append(gc.isenabled())
        return PlanModel(inp)

    cfg, clock = load_config(path), SimClock(START)
    res = make_plan(cfg, clock, inputs=make_inputs(cfg, clock), new_model=new_model)
    assert seen == [False]
    assert gc.isenabled()
    assert [j["id"] for j in res.document["jobs"]] == ["j"]


def test_make_plan_that_fails_restores_the_collector(tmp_path, gc_on):
    path = write_fleet(
        tmp_path,
        carbon={"Z": [100.0, 500.0]},
        sites=SITE,
        pools=pool(nodes=1, gpn=1, idle_w=100.0),
        jobs=[job(work=1.0, release=0.0, deadline=2.0)],
    )

    def new_model(inp):
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        cfg, clock = load_config(path), SimClock(START)
        make_plan(cfg, clock, inputs=make_inputs(cfg, clock), new_model=new_model)
    assert gc.isenabled()
