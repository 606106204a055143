"""The daemon's HTTP server (/metrics /healthz /readyz, POST /step /reload, auth), and a REAL
Prometheus server scraping it, checked through Prometheus's query API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fake_controller import FakeController, write_fleet

from greencpn.clock import SystemClock
from greencpn.daemon.core import Daemon
from tests.prometheus_server import PROMETHEUS, scraping_prometheus, wait_for


def _daemon(tmp: Path, control: str = "") -> Daemon:
    cfg = write_fleet(tmp / "fleet")
    (tmp / "fleet" / "control.toml").write_text(control)

    def factory(path: Path, **kw: Any) -> FakeController:
        return FakeController(path, **kw)

    return Daemon(
        cfg,
        state_dir=tmp / "state",
        clock=SystemClock(),
        controller_factory=factory,
        http_port=0,
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = _daemon(tmp_path)
    d.start_background()
    try:
        yield d
    finally:
        d.shutdown("test over")


def _url(d: Daemon, path: str) -> str:
    host, port = d.http_address
    return f"http://{host}:{port}{path}"


def _wait_steps(d: Daemon, n: int, timeout: float = 10) -> None:
    t0 = time.monotonic()
    while len(d.state["steps"]) < n:
        assert time.monotonic() - t0 < timeout, f"only {len(d.state['steps'])} step(s)"
        time.sleep(0.05)


def test_health_ready_metrics_and_post_step(daemon: Daemon) -> None:
    assert daemon.http_address[0] == "127.0.0.1"
    h = requests.get(_url(daemon, "/healthz"), timeout=5)
    assert h.status_code == 200 and h.json()["scheduler"] == "running"
    r = requests.get(_url(daemon, "/readyz"), timeout=5)
    assert r.status_code == 503 and r.json()["reason"] == "no step finished yet"
    p = requests.post(_url(daemon, "/step"), timeout=5)
    assert p.status_code == 202
    _wait_steps(daemon, 1)
    assert daemon.state["steps"][0]["reason"] == "http"
    r = requests.get(_url(daemon, "/readyz"), timeout=5)
    assert r.status_code == 200 and r.json()["last_step"]["status"] == "ok"
    text = requests.get(_url(daemon, "/metrics"), timeout=5).text
    for line in (
        'greencpn_carbon_intensity_grams_per_kwh{site="s1"} 100.0',
        'greencpn_planned_power_watts{site="s1"} 50000.0',
        'greencpn_nodes{pool="p1",state="on"} 3.0',
        'greencpn_gpu_power_cap_watts{pool="p2"} 250.0',
        'greencpn_jobs{state="held"} 2.0',
        "greencpn_mip_gap_ratio 0.004",
        "greencpn_saved_co2e_kilograms_total 1.5",
        "greencpn_saved_energy_kilowatt_hours_total 2.0",
        "greencpn_leader 1.0",
        "greencpn_enforce 0.0",
        'greencpn_steps_total{reason="http",status="ok"} 1.0',
        "greencpn_step_duration_seconds_count 1.0",
        "greencpn_solve_duration_seconds_count 1.0",
        'greencpn_errors_total{type="config_reload"} 0.0',
    ):
        assert line in text, line
    assert "greencpn_measured_power_watts{" not in text  # no meter: no series, not a zero
    assert requests.get(_url(daemon, "/nope"), timeout=5).status_code == 404


def test_post_reload_refuses_a_bad_config_with_400(daemon: Daemon, tmp_path: Path) -> None:
    cfg = tmp_path / "fleet" / "fleet.toml"
    cfg.write_text(cfg.read_text().replace("pue = 1.2", "pue = 'high'"))
    r = requests.post(_url(daemon, "/reload"), timeout=5)
    assert r.status_code == 400 and "pue" in r.json()["error"]
    text = requests.get(_url(daemon, "/metrics"), timeout=5).text
    assert "greencpn_config_reload_success 0.0" in text
    assert 'greencpn_errors_total{type="config_reload"} 1.0' in text


def test_post_needs_the_bearer_token_when_one_is_configured(tmp_path: Path) -> None:
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "token").write_text("s3cret-token\n")
    d = _daemon(tmp_path, "[daemon.http]\ntoken_file = 'token'\n")
    d.start_background()
    try:
        assert requests.post(_url(d, "/step"), timeout=5).status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert requests.post(_url(d, "/step"), headers=bad, timeout=5).status_code == 401
        ok = {"Authorization": "Bearer s3cret-token"}
        assert requests.post(_url(d, "/step"), headers=ok, timeout=5).status_code == 202
        _wait_steps(d, 1)
        # GETs stay open (Prometheus scrapes without a token)
        assert requests.get(_url(d, "/metrics"), timeout=5).status_code == 200
    finally:
        d.shutdown("test over")


@pytest.mark.slow
def test_a_real_prometheus_scrapes_the_daemon(daemon: Daemon, tmp_path: Path) -> None:
    if not PROMETHEUS:
        pytest.skip("prometheus not installed (Debian package 'prometheus'; .ci/run installs it)")
    requests.post(_url(daemon, "/step"), timeout=5)
    _wait_steps(daemon, 1)
    host, port = daemon.http_address
    with scraping_prometheus(tmp_path, host, port) as query:
        log = tmp_path / "prometheus.log"
        wait_for(query, 'up{job="greencpn"} == 1', "the daemon", 30, log)
        wait_for(query, "greencpn_leader", "the daemon", 30, log)
        got = {
            q: float(query(q)[0]["value"][1])
            for q in (
                'greencpn_carbon_intensity_grams_per_kwh{site="s1"}',
                'greencpn_nodes{pool="p2",state="off"}',
                "greencpn_saved_co2e_kilograms_total",
                "greencpn_leader",
                "greencpn_step_duration_seconds_count",
                "greencpn_last_step_timestamp_seconds",
            )
        }
        assert got['greencpn_carbon_intensity_grams_per_kwh{site="s1"}'] == 100.0
        assert got['greencpn_nodes{pool="p2",state="off"}'] == 1.0
        assert got["greencpn_saved_co2e_kilograms_total"] == 1.5
        assert got["greencpn_leader"] == 1.0
        assert got["greencpn_step_duration_seconds_count"] == 1.0
        assert abs(got["greencpn_last_step_timestamp_seconds"] - time.time()) < 120
        # a second step shows up in Prometheus too
        requests.post(_url(daemon, "/step"), timeout=5)
        _wait_steps(daemon, 2)
        deadline = time.monotonic() + 15
        while float(query("greencpn_step_duration_seconds_count")[0]["value"][1]) < 2:
            assert time.monotonic() < deadline, "second step not seen by prometheus"
            time.sleep(0.5)
        by_site = query("sum by (state) (greencpn_nodes)")
        assert {r["metric"]["state"]: float(r["value"][1]) for r in by_site}["on"] == 6.0


def test_post_reload_of_a_good_config_reloads_then_steps(daemon: Daemon, tmp_path: Path) -> None:
    (tmp_path / "fleet" / "control.toml").write_text("[daemon]\noffset_s = 5\n")
    r = requests.post(_url(daemon, "/reload"), timeout=5)
    assert r.status_code == 202 and r.json()["accepted"] is True
    _wait_steps(daemon, 1)
    assert daemon.state["steps"][0]["reason"] == "reload"
    assert daemon.settings.offset_s == 5 and daemon.controller.reloads == 1
    assert daemon.state["reload"]["ok"] is True
