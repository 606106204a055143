"""PrometheusClient against a REAL Prometheus on 127.0.0.1 with backfilled GPU utilisation.

The server is Debian's ``prometheus`` (2.42); its data is written by
``promtool tsdb create-blocks-from openmetrics`` before it starts. Skips when the binary is absent.

Backfilled series, one sample a minute over ``[T0, T0 + 6 h]`` (T0 on the hour, ≥ 9 h ago):

======== === ==========================================
Hostname gpu DCGM_FI_DEV_GPU_UTIL
======== === ==========================================
gpu01    0   100 before T0+2h, 0 from then on
gpu01    1   50
gpu02    0   0 before T0+3h, 80 from then on
gpu02    1   5   (below the 10 % "busy" threshold)
gpu03    0   100
======== === ==========================================
"""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from greencpn.errors import ConfigError, PermanentError, TemporaryError
from greencpn.sources.prometheus import PrometheusClient, busy_gpus, gpu_utilisation

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
H = timedelta(hours=1)


def _value(host: str, gpu: int, t: int, t0: int) -> float:
    if host == "gpu01":
        return (100.0 if t < t0 + 7200 else 0.0) if gpu == 0 else 50.0
    if host == "gpu02":
        return (0.0 if t < t0 + 3 * 3600 else 80.0) if gpu == 0 else 5.0
    return 100.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusClient, datetime]]:
    if not PROMETHEUS or not PROMTOOL:
        pytest.skip(
            "prometheus/promtool not installed (Debian package 'prometheus'; .ci/run installs it)"
        )
    tmp = tmp_path_factory.mktemp("prom")
    # the test only places its fixture data relative to the real clock: Prometheus keeps
    # backfilled blocks only when they are older than its head and inside its retention
    t0 = (int(time.time()) - 9 * 3600) // 3600 * 3600
    lines = [
        "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).",
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge",
    ]
    series = [("gpu01", 0), ("gpu01", 1), ("gpu02", 0), ("gpu02", 1), ("gpu03", 0)]
    for host, gpu in series:
        for t in range(t0, t0 + 6 * 3600 + 1, 60):
            lines.append(
                f'DCGM_FI_DEV_GPU_UTIL{{Hostname="{host}",gpu="{gpu}"}} '
                f"{_value(host, gpu, t, t0):g} {t}"
            )
    lines.append("# EOF")
    om = tmp / "gpu.om"
    om.write_text("\n".join(lines) + "\n")
    data = tmp / "tsdb"
    subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(om), str(data)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    cfg = tmp / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
    port = _free_port()
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=30d",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = PrometheusClient(f"http://127.0.0.1:{port}", read_timeout_s=10)
    try:
        deadline = time.monotonic() + 20
        while not client.ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"prometheus did not start: {(tmp / 'prometheus.log').read_text()[-2000:]}"
                )
            time.sleep(0.1)
        yield client, datetime.fromtimestamp(t0, UTC)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_query_range_per_series_hand_checked(prom: tuple[PrometheusClient, datetime]) -> None:
    client, t0 = prom
    res = client.query_range("DCGM_FI_DEV_GPU_UTIL", t0, t0 + 5 * H, 3600, label=None)
    assert res.frame.shape == (6, 5)
    assert str(res.frame.index.tz) == "UTC"
    assert res.frame.index[0] == t0 and res.frame.index[-1] == t0 + 5 * H
    col = 'DCGM_FI_DEV_GPU_UTIL{Hostname="gpu01",gpu="0"}'
    assert list(res.frame[col]) == [100, 100, 0, 0, 0, 0]
    assert res.labels[col] == {"__name__": "DCGM_FI_DEV_GPU_UTIL", "Hostname": "gpu01", "gpu": "0"}


def test_gpu_utilisation_per_node(prom: tuple[PrometheusClient, datetime]) -> None:
    client, t0 = prom
    util = gpu_utilisation(client, t0, t0 + 5 * H, timedelta(hours=1))
    assert sorted(util.columns) == ["gpu01", "gpu02", "gpu03"]
    assert list(util["gpu01"]) == [75, 75, 25, 25, 25, 25]
    assert list(util["gpu02"]) == [2.5, 2.5, 2.5, 42.5, 42.5, 42.5]
    only = gpu_utilisation(client, t0, t0 + H, 3600, hosts=["gpu03"])
    assert list(only.columns) == ["gpu03"] and list(only["gpu03"]) == [100, 100]


def test_busy_gpus_counts_and_gaps(prom: tuple[PrometheusClient, datetime]) -> None:
    client, t0 = prom
    busy = busy_gpus(client, t0 - H, t0 + 5 * H, 1800, hosts=["gpu01", "gpu02"])
    # no data an hour before T0 (outside the 5-minute lookback): NaN, not 0
    assert np.isnan(busy.iloc[0]) and np.isnan(busy.iloc[1])
    assert list(busy.iloc[2:]) == [2, 2, 2, 2, 1, 1, 2, 2, 2, 2, 2]
    # a threshold nobody reaches still reports 0 where GPUs report
    idle = busy_gpus(client, t0, t0 + H, 3600, threshold=101)
    assert list(idle) == [0, 0]


def test_instant_query_and_long_range_is_chunked(prom: tuple[PrometheusClient, datetime]) -> None:
    client, t0 = prom
    now_vals = client.query('DCGM_FI_DEV_GPU_UTIL{Hostname="gpu01"}', at=t0 + H, label="gpu")
    assert now_vals.to_dict() == {"0": 100.0, "1": 50.0}
    assert client.query("1 + 1").to_dict() == {"scalar": 2.0}
    assert client.query('nothing_here{job="x"}').empty
    # 6 h at a 1 s step is 21,601 points: more than Prometheus' 11,000 per query
    res = client.query_range('DCGM_FI_DEV_GPU_UTIL{Hostname="gpu03"}', t0, t0 + 6 * H, 1)
    assert res.frame.shape == (21601, 1)
    assert res.frame.iloc[:, 0].notna().all() and (res.frame.iloc[:, 0] == 100).all()


def test_bad_query_is_a_config_error_with_prometheus_text(
    prom: tuple[PrometheusClient, datetime],
) -> None:
    client, t0 = prom
    with pytest.raises(ConfigError, match="parse error") as exc:
        client.query_range("sum(DCGM_FI_DEV_GPU_UTIL", t0, t0 + H, 60)
    assert "bad_data" in str(exc.value) and "PromQL" in str(exc.value)
    with pytest.raises(ConfigError, match="before start"):
        client.query_range("up", t0 + H, t0, 60)
    with pytest.raises(ConfigError, match="positive"):
        client.query_range("up", t0, t0 + H, 0)
    wrong_prefix = PrometheusClient(client.base_url + "/not-prometheus")
    with pytest.raises(PermanentError, match="404"):
        wrong_prefix.query("up")


def test_connection_refused_is_temporary() -> None:
    client = PrometheusClient(f"http://127.0.0.1:{_free_port()}", connect_timeout_s=1)
    with pytest.raises(TemporaryError, match="cannot reach"):
        client.query("up")
    assert client.ready() is False
    with pytest.raises(ConfigError, match="http://"):
        PrometheusClient("127.0.0.1:9090")


class _Faulty(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        if "slow" in self.path:
            time.sleep(1.0)
        if "busy" in self.path or "slow" in self.path:
            body = b'{"status":"error","errorType":"unavailable","error":"overloaded"}'
            self.send_response(503)
            self.send_header("Retry-After", "7")
        elif "denied" in self.path:
            body = b"forbidden"
            self.send_response(403)
        else:
            body = b"<html>proxy error page</html>"
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        try:
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the /slow client timed out and left, as the test wants

    def log_message(self, *args: object) -> None:
        pass


class _JoiningServer(http.server.ThreadingHTTPServer):
    # server_close() waits for the handler threads: a late /slow answer must not print into
    # the next test's captured stderr (it did: a BrokenPipe traceback in a whatif CLI test)
    daemon_threads = False
    block_on_close = True


@pytest.fixture()
def faulty() -> Iterator[str]:
    server = _JoiningServer(("127.0.0.1", 0), _Faulty)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_faults_are_typed(faulty: str) -> None:
    with pytest.raises(TemporaryError, match="HTTP 503 unavailable: overloaded") as exc:
        PrometheusClient(faulty + "/busy").query("up")
    assert exc.value.retry_after_s == 7.0
    with pytest.raises(PermanentError, match="403"):
        PrometheusClient(faulty + "/denied").query("up")
    with pytest.raises(TemporaryError, match="unexpected answer"):
        PrometheusClient(faulty).query("up")
    t0 = time.monotonic()
    with pytest.raises(TemporaryError, match="timed out"):
        PrometheusClient(faulty + "/slow", read_timeout_s=0.2).query("up")
    assert time.monotonic() - t0 < 1.0
