"""The fail-safe release is a ledger row AND a Prometheus counter (issue #12, "Safety and
visibility"): the daemon's REAL controller plans three 8-GPU jobs queued on a (fake) scheduler
whose only pool has room for one at a time; the two it plans later than their latest start
are released at once anyway — ``job.release`` rows with the fail-safe reason, and
``greencpn_jobs_failsafe_released_total{site,pool,backend}`` counts them once per job,
scraped from the daemon's own HTTP server by a REAL Prometheus."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from greencpn.actuate.jobs.base import PendingJob
from greencpn.actuate.jobs.fake import FakeJobActuator
from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.fakes import FakeFleet
from greencpn.daemon.core import Daemon
from greencpn.daemon.http import DaemonHttp
from tests.actuate.jobs.test_controller_bridge import JOB_ACTUATION
from tests.controller.conftest import START, write_tiny
from tests.prometheus_server import PROMETHEUS, scraping_prometheus, wait_for

SERIES = "greencpn_jobs_failsafe_released_total"


def _daemon(tmp: Path) -> tuple[Daemon, FakeJobActuator, SimClock]:
    path = write_tiny(tmp, days=3, slots=12, time_limit_s=20)
    text = path.read_text()
    for site in ("s1", "s2"):
        text = text.replace(f'name = "{site}"\n', f'name = "{site}"\njurisdictions = ["{site}"]\n')
    # half an hour of slack: a 2 h job submitted at START must start by START + 30 min
    path.write_text(text + JOB_ACTUATION.replace("default_slack_h = 20", "default_slack_h = 0.5"))
    with (tmp / "control.toml").open("a") as fh:
        fh.write("allow_actuation = true\n[daemon]\nmode = 'enforce'\n")
    clock = SimClock(START + timedelta(minutes=1))
    fleet = FakeFleet(load_config(path), clock)
    d = Daemon(path, state_dir=tmp / "state", clock=clock, backends=fleet.backends)
    c1 = d.controller.queue.backends.actuators["c1"]
    assert isinstance(c1, FakeJobActuator)
    # pool p1 (site s1, cluster c1) has 4 nodes x 2 GPUs: one of these 8-GPU jobs at a time
    for i in range(3):
        c1.jobs[f"j{i}"] = PendingJob(
            id=f"j{i}", cluster="c1", gpus=8, time_limit_s=7200.0, submit_at=START
        )
    return d, c1, clock


def _count(text: str) -> dict[str, float]:
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith(SERIES + "{")
    }


def test_jobs_planned_past_their_latest_start_are_released_a_ledger_row_and_a_counter(
    tmp_path: Path,
) -> None:
    d, c1, clock = _daemon(tmp_path)
    res = d.run_step("test")
    assert res is not None, d.state
    starts = {j["id"]: j["start"] for j in res.plan["jobs"]}
    late = sorted(j for j, s in starts.items() if s > "2026-01-05T01:00")
    assert len(late) == 2, (starts, res.plan.get("diagnostics"))
    rows = [a for a in d.controller.ledger.actions(res.step_id) if a.kind == "job.release"]
    failsafe = sorted(a.target for a in rows if "never held past it" in str(a.detail))
    assert failsafe == late and all(a.status == "done" for a in rows)
    assert (
        res.metrics["jobs_failsafe_released"]
        == [{"site": "s1", "pool": "p1", "backend": "fake"}] * 2
    )
    # nothing of greencpn's holds them: the scheduler starts them (as far as room allows)
    assert all(c1.jobs[j].begin_at is None and c1.jobs[j].pending for j in late)
    key = f'{SERIES}{{backend="fake",pool="p1",site="s1"}}'
    assert _count(generate_latest(d.metrics.registry).decode()) == {key: 2.0}
    # the next step releases them again (still queued): counted once per job, not per step
    clock.advance(timedelta(minutes=5))
    assert d.run_step("test") is not None
    assert _count(generate_latest(d.metrics.registry).decode()) == {key: 2.0}


@pytest.mark.slow
def test_a_real_prometheus_scrapes_the_failsafe_counter(tmp_path: Path) -> None:
    if not PROMETHEUS:
        pytest.skip("prometheus not installed (Debian package 'prometheus'; .ci/run installs it)")
    d, _c1, _clock = _daemon(tmp_path)
    assert d.run_step("test") is not None
    http = DaemonHttp(
        "127.0.0.1",
        0,
        registry=d.metrics.registry,
        health=d.health,
        ready=d.ready,
        trigger=lambda _why: None,
        reload=lambda: None,
    )
    http.start()
    host, port = http.host, http.port
    try:
        with scraping_prometheus(tmp_path, host, port) as query:
            got = wait_for(query, SERIES, "the counter", 40, tmp_path / "prometheus.log")
            assert [
                (r["metric"]["site"], r["metric"]["pool"], r["metric"]["backend"]) for r in got
            ] == [("s1", "p1", "fake")]
            assert float(got[0]["value"][1]) == 2.0
            by_site = query(f"sum by (site) ({SERIES})")
            assert float(by_site[0]["value"][1]) == 2.0
    finally:
        http.stop()
