"""Issue #10 item 7: carbon API answers that used to be accepted, against the 127.0.0.1 replay
server: a redirect to another origin carrying the Electricity Maps token, a dripping server
outliving every timeout, implausible values, a "live" answer three days old, an answer for
another zone, and a corrupt or locked cache database."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from greencpn.cli import main
from greencpn.clock import SimClock
from greencpn.errors import PermanentError
from greencpn.sources import cache as cache_mod
from greencpn.sources.cache import SeriesCache
from greencpn.sources.electricitymaps import ElectricityMapsSource
from greencpn.sources.http import ApiTimeoutError, BadResponseError, HttpClient, RetryPolicy
from greencpn.sources.watttime import WattTimeSource

T_EM_FC = datetime(2023, 5, 2, 19, 55, tzinfo=UTC)
EM_FC = "/v3/carbon-intensity/forecast"


def http_for(name: str, clock: SimClock, **policy: Any) -> HttpClient:
    pol = RetryPolicy(**{"max_attempts": 1, "read_timeout_s": 2.0, **policy})
    return HttpClient(name, pol, sleep=lambda s: None, clock=clock, rng=random.Random(7))


def em(replay: Any, clock: SimClock | None = None, **policy: Any) -> ElectricityMapsSource:
    clock = clock or SimClock(T_EM_FC)
    return ElectricityMapsSource(
        "em-test-token-5f3a9c1e77",
        base_url=replay.url + "/v3",
        clock=clock,
        http=http_for("electricitymaps", clock, **policy),
    )


class Recorder:
    """A second origin (another port on 127.0.0.1) that records what it is sent."""

    def __init__(self, drip_body: bytes | None = None, drip_every_s: float = 0.0) -> None:
        self.seen: list[dict[str, str]] = []
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                rec.seen.append({k.lower(): v for k, v in self.headers.items()})
                body = drip_body if drip_body is not None else b'{"zone": "DE", "forecast": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if drip_body is None:
                        self.wfile.write(body)
                        return
                    for i in range(len(body)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(drip_every_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def other_origin() -> Any:
    rec = Recorder()
    yield rec
    rec.stop()


# ----------------------------------------------------------------------------- redirects
def test_redirect_to_another_origin_does_not_carry_the_token(replay, api, other_origin) -> None:
    replay.always[EM_FC] = api.Reply(
        302, {}, headers={"Location": other_origin.url + EM_FC + "?zone=DE"}
    )
    with pytest.raises(PermanentError) as e:
        em(replay).forecast("DE", T_EM_FC, timedelta(hours=24))
    msg = str(e.value)
    assert "redirect" in msg and other_origin.url.removeprefix("http://") in msg, msg
    assert all("auth-token" not in h for h in other_origin.seen), other_origin.seen
    assert api.EM_TOKEN not in msg


def test_same_origin_redirect_is_followed_with_the_token(replay, api) -> None:
    target = EM_FC + "?zone=DE&emissionFactorType=lifecycle&horizonHours=24"
    replay.faults[EM_FC] = [api.Reply(307, {}, headers={"Location": target})]
    fc = em(replay).forecast("DE", T_EM_FC, timedelta(hours=24))
    assert len(fc.intensity_g_per_kwh) == 24
    assert replay.seen[-1].headers.get("auth-token") == api.EM_TOKEN


# ----------------------------------------------------------------------------- deadline
def test_a_dripping_server_is_cut_at_the_overall_deadline() -> None:
    body = json.dumps({"zone": "DE", "forecast": [], "pad": "x" * 30}).encode()
    rec = Recorder(drip_body=body, drip_every_s=0.2)  # every byte well inside the read timeout
    try:
        clock = SimClock(T_EM_FC)
        http = http_for("electricitymaps", clock, read_timeout_s=1.0, deadline_s=1.5)
        t0 = time.monotonic()
        with pytest.raises(ApiTimeoutError) as e:
            http.get_json(rec.url + "/slow", endpoint="slow")
        took = time.monotonic() - t0
    finally:
        rec.stop()
    assert took < 3.0, f"the call lived {took:.1f} s past its 1.5 s deadline"
    assert "deadline" in str(e.value) and "1.5" in str(e.value), str(e.value)


def test_a_server_dripping_its_headers_is_cut_at_the_deadline() -> None:
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    stop = threading.Event()

    def drip() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"x" * 40
        for i in range(len(head)):
            if stop.is_set():
                break
            try:
                conn.sendall(head[i : i + 1])
            except OSError:
                break
            time.sleep(0.2)
        conn.close()

    threading.Thread(target=drip, daemon=True).start()
    try:
        http = http_for("x", SimClock(T_EM_FC), read_timeout_s=1.0, deadline_s=1.5)
        t0 = time.monotonic()
        with pytest.raises(ApiTimeoutError, match="deadline"):
            http.get_json(f"http://127.0.0.1:{srv.getsockname()[1]}/slow", endpoint="slow")
        assert time.monotonic() - t0 < 3.0
    finally:
        stop.set()
        srv.close()


def test_the_deadline_covers_retries_and_their_waits(dead_url) -> None:
    waits: list[float] = []
    clock = SimClock(T_EM_FC)
    pol = RetryPolicy(max_attempts=50, base_delay_s=0.2, max_delay_s=0.2, deadline_s=0.5)
    http = HttpClient("x", pol, sleep=lambda s: (waits.append(s), time.sleep(s)), clock=clock)
    t0 = time.monotonic()
    with pytest.raises(Exception) as e:
        http.get_json(dead_url + "/v3", endpoint="x")
    assert time.monotonic() - t0 < 2.0
    assert len(waits) < 10, waits
    assert "deadline" in str(e.value) or "cannot connect" in str(e.value)


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("bad", [-500, 1e9])
def test_implausible_em_values_are_refused(replay, api, bad: float) -> None:
    body = api.load("electricitymaps_v3_carbon-intensity_forecast_DE_2023-05-02.json")
    body["forecast"][3]["carbonIntensity"] = bad
    replay.always[EM_FC] = api.Reply(200, body)
    with pytest.raises(BadResponseError) as e:
        em(replay).forecast("DE", T_EM_FC, timedelta(hours=24))
    msg = str(e.value)
    assert "implausible" in msg and body["forecast"][3]["datetime"][:13] in msg, msg


def test_implausible_watttime_value_is_refused(replay, api) -> None:
    body = api.load("watttime_v3_historical_CAISO_NORTH_fixture.json")
    body["data"][0]["value"] = 1e9
    replay.always["/v3/historical"] = api.Reply(200, body)
    clock = SimClock(datetime(2022, 7, 15, 0, 2, tzinfo=UTC))
    src = WattTimeSource(
        api.WT_USER, api.WT_PASSWORD, base_url=replay.url, clock=clock,
        http=http_for("watttime", clock),
    )  # fmt: skip
    with pytest.raises(BadResponseError, match="implausible"):
        src.history(
            "CAISO_NORTH",
            datetime(2022, 7, 15, tzinfo=UTC),
            datetime(2022, 7, 15, 0, 10, tzinfo=UTC),
        )


# ----------------------------------------------------------------------------- staleness
def test_a_live_forecast_three_days_old_is_refused(replay, api) -> None:
    body = api.load("electricitymaps_v3_carbon-intensity_forecast_DE_2023-05-02.json")
    body["updatedAt"] = "2023-04-29T19:52:09.141Z"  # the points still cover the request
    replay.always[EM_FC] = api.Reply(200, body)
    with pytest.raises(BadResponseError) as e:
        em(replay).forecast("DE", T_EM_FC, timedelta(hours=24))
    msg = str(e.value)
    assert "2023-04-29T19:52" in msg and "old" in msg, msg


def test_a_latest_value_three_days_old_is_refused(replay) -> None:
    # the recorded latest answer is for 2024-03-06T19:00Z
    fresh = em(replay, SimClock(datetime(2024, 3, 6, 19, 20, tzinfo=UTC))).latest("US-CAR-DUK")
    assert fresh.intensity_g_per_kwh.tolist() == [216]
    with pytest.raises(BadResponseError, match="old"):
        em(replay, SimClock(datetime(2024, 3, 9, 19, 20, tzinfo=UTC))).latest("US-CAR-DUK")


def test_watttime_live_forecast_generated_days_ago_is_refused(replay, api) -> None:
    clock = SimClock(datetime(2022, 7, 18, 0, 2, tzinfo=UTC))  # the recorded run: 07-15 00:00
    src = WattTimeSource(
        api.WT_USER, api.WT_PASSWORD, base_url=replay.url, clock=clock,
        http=http_for("watttime", clock),
    )  # fmt: skip
    body = json.loads(
        json.dumps(api.load("watttime_v3_forecast_historical_CAISO_NORTH_fixture.json"))
    )
    run = body["data"][0]
    shifted = [
        dict(
            p, point_time=(datetime.fromisoformat(p["point_time"]) + timedelta(days=3)).isoformat()
        )
        for p in run["forecast"]
    ]  # points cover "now", but the run was generated three days ago
    replay.always["/v3/forecast"] = api.Reply(
        200, {"data": shifted, "meta": dict(body["meta"], generated_at=run["generated_at"])}
    )
    with pytest.raises(BadResponseError, match="old"):
        src.forecast("CAISO_NORTH", clock.now(), timedelta(hours=1))


# ----------------------------------------------------------------------------- wrong zone
def test_an_answer_for_another_zone_is_refused(replay, api) -> None:
    body = api.load("electricitymaps_v3_carbon-intensity_forecast_DE_2023-05-02.json")
    body["zone"] = "FR"
    replay.always[EM_FC] = api.Reply(200, body)
    with pytest.raises(BadResponseError) as e:
        em(replay).forecast("DE", T_EM_FC, timedelta(hours=24))
    msg = str(e.value)
    assert "FR" in msg and "DE" in msg, msg


def test_watttime_answer_for_another_region_is_refused(replay, api) -> None:
    body = api.load("watttime_v3_historical_CAISO_NORTH_fixture.json")
    body["meta"]["region"] = "PSCO"
    replay.always["/v3/historical"] = api.Reply(200, body)
    clock = SimClock(datetime(2022, 7, 15, 0, 2, tzinfo=UTC))
    src = WattTimeSource(
        api.WT_USER, api.WT_PASSWORD, base_url=replay.url, clock=clock,
        http=http_for("watttime", clock),
    )  # fmt: skip
    with pytest.raises(BadResponseError, match="PSCO"):
        src.history(
            "CAISO_NORTH",
            datetime(2022, 7, 15, tzinfo=UTC),
            datetime(2022, 7, 15, 0, 10, tzinfo=UTC),
        )


# ----------------------------------------------------------------------------- cache db
def _forecast_argv(replay: Any, cache: Path) -> list[str]:
    return [
        "forecast", "--zone", "DE", "--source", "electricitymaps", "--hours", "24",
        "--issued", "2023-05-02T19:55Z", "--now", "2023-05-02T19:55Z", "--cache", str(cache),
        "--base-url", replay.url + "/v3", "--retries", "1", "--json",
    ]  # fmt: skip


@pytest.fixture()
def em_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, api: Any) -> Path:
    monkeypatch.setenv("GREENCPN_ELECTRICITYMAPS_TOKEN", api.EM_TOKEN)
    monkeypatch.delenv("GREENCPN_KEYS_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_a_corrupt_cache_is_set_aside_not_a_traceback(replay, em_env, capsys, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="greencpn")
    cache = em_env / "cache.sqlite"
    cache.write_bytes(b"this is not an sqlite database\n" * 200)
    assert main(_forecast_argv(replay, cache)) == 0
    out, err = capsys.readouterr()
    assert len(json.loads(out)["points"]) == 24
    assert "Traceback" not in err
    assert "corrupt" in caplog.text and str(cache) in caplog.text, caplog.text
    aside = list(em_env.glob("cache.sqlite.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    # the new cache works: a second call is served fresh from it, no second request
    n = replay.count("/v3/")
    assert main(_forecast_argv(replay, cache)) == 0
    capsys.readouterr()
    assert replay.count("/v3/") == n


def test_a_locked_cache_is_skipped_not_a_traceback(
    replay, em_env, capsys, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="greencpn")
    cache = em_env / "cache.sqlite"
    SeriesCache(cache).close()
    monkeypatch.setattr(cache_mod, "LOCK_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(cache)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert main(_forecast_argv(replay, cache)) == 0
    finally:
        holder.rollback()
        holder.close()
    out, err = capsys.readouterr()
    assert len(json.loads(out)["points"]) == 24
    assert "locked" in caplog.text and str(cache) in caplog.text, caplog.text
