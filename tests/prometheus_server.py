"""A real Prometheus server that scrapes given targets, for the tests (Debian package
``prometheus``; .ci/run installs it). One helper for every test that checks series end to end."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from tests.slurm_cluster import free_port

PROMETHEUS = shutil.which("prometheus")

Query = Callable[[str], list[dict[str, Any]]]


@contextlib.contextmanager
def scraping_prometheus(tmp_path: Path, host: str, port: int) -> Iterator[Query]:
    """Start Prometheus scraping ``host:port`` every second (job ``greencpn``); yield a function
    running an instant query (the result list). The server is stopped on exit."""
    assert PROMETHEUS, "prometheus not installed: skip before calling"
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
        f"  - job_name: greencpn\n    static_configs:\n      - targets: ['{host}:{port}']\n"
    )
    pport = free_port()
    log_path = tmp_path / "prometheus.log"
    plog = log_path.open("w")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{pport}",
        ],
        stdout=plog,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{pport}/api/v1/query"

    def query(q: str) -> list[dict[str, Any]]:
        if proc.poll() is not None:
            raise AssertionError("prometheus exited: " + log_path.read_text()[-1500:])
        doc = requests.get(api, params={"query": q}, timeout=5).json()
        assert doc["status"] == "success", doc
        return list(doc["data"]["result"])

    try:
        yield query
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        plog.close()


def wait_for(query: Query, q: str, what: str, timeout_s: float, log: Path) -> list[dict[str, Any]]:
    """Poll ``q`` until it returns a series (Prometheus still starting or not yet scraped)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(requests.RequestException):
            got = query(q)
            if got:
                return got
        if time.monotonic() > deadline:
            raise AssertionError(f"prometheus never scraped {what}: " + log.read_text()[-1500:])
        time.sleep(0.5)
