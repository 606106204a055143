"""Per-job caps in the daemon's act phase: the control step hands apply the running jobs' GPU
indices (from the job actuator, as `greencpn apply` gets them from `[job_actuation]`), and a
pool whose caps lever is off gets no job cap either."""

from __future__ import annotations

from typing import Any

from greencpn.config import load_config
from greencpn.controller import Levers, Mode, RunningJob
from greencpn.controller.fakes import FakeFleet
from greencpn.controller.step import Controller
from tests.controller.conftest import START, make_controller, write_tiny
from tests.controller.test_replan import ListQueue, job

JOB_CAP_W = 150.0  # inside T1's 100–300 W range, below both of its levels (300, 200 W)


class GpuIndexReader:
    """The job side the step sees: only the GPU-index lookup (Slurm: scontrol show job -d)."""

    def __init__(self, where: dict[str, dict[str, tuple[int, ...]]]) -> None:
        self.where = where
        self.asked: list[str] = []

    def job_gpu_lookup(self) -> Any:
        def lookup(job_id: str) -> Any:
            self.asked.append(job_id)
            return self.where.get(job_id)

        return lookup


def _with_job_cap(monkeypatch, job_id: str) -> None:
    """The plan as the per-job cap mode writes it: this job carries its own cap."""
    real = Controller._levered

    def levered(self, doc):
        jobs = [{**j, "power_cap_w": JOB_CAP_W} if j["id"] == job_id else j for j in doc["jobs"]]
        return real(self, {**doc, "jobs": jobs})

    monkeypatch.setattr(Controller, "_levered", levered)


def _controller(tmp_path, sim_clock, reader, **kw):
    path = write_tiny(tmp_path)
    fleet = FakeFleet(load_config(path), sim_clock)
    fleet.hooks["p1"].set("a1", running_jobs=1)  # what Slurm would report for r1's node
    running = RunningJob(job("r1", gpus=1, work=8.0, dl_h=40), "p1", START, 8.0, ("a1",))
    c = make_controller(
        path,
        sim_clock,
        tmp_path / "state",
        fleet,
        mode=Mode.ENFORCE,
        queue=ListQueue(running=[running]),
        job_actuator=reader,
        **kw,
    )
    return c, fleet


def test_the_running_jobs_gpus_get_its_own_cap_the_others_the_pools(
    tmp_path, sim_clock, monkeypatch
):
    _with_job_cap(monkeypatch, "r1")
    reader = GpuIndexReader({"r1": {"a1": (1,)}})
    c, fleet = _controller(tmp_path, sim_clock, reader)
    r = c.step()
    assert "r1" in reader.asked
    p1 = next(p for p in r.plan["pools"] if p["name"] == "p1")
    pool_cap = p1["slots"][0]["power_cap_w"]
    assert pool_cap is not None and pool_cap != JOB_CAP_W
    caps = {g.index: g.power_limit_current_w for g in fleet.gpu("a1").list_gpus()}
    assert caps == {0: pool_cap, 1: JOB_CAP_W}, caps
    # one cap action, on exactly the job's GPU (the pool cap was already in place elsewhere)
    assert [(a["kind"], a["target"]) for a in r.actions if "cap" in a["kind"]] == [
        ("set_power_cap", "a1:gpu1")
    ]


def test_caps_lever_off_means_no_job_cap_either(tmp_path, sim_clock, monkeypatch):
    _with_job_cap(monkeypatch, "r1")
    reader = GpuIndexReader({"r1": {"a1": (1,)}})
    c, fleet = _controller(tmp_path, sim_clock, reader, levers={"p1": Levers(caps=False)})
    c.step()
    caps = {g.power_limit_current_w for g in fleet.gpu("a1").list_gpus()}
    assert JOB_CAP_W not in caps, caps


def test_without_a_reader_the_job_cap_is_not_applied(tmp_path, sim_clock, monkeypatch):
    _with_job_cap(monkeypatch, "r1")
    c, fleet = _controller(tmp_path, sim_clock, None)
    c.step()
    caps = {g.power_limit_current_w for g in fleet.gpu("a1").list_gpus()}
    assert JOB_CAP_W not in caps, caps
