"""Benchmark: cached forecast lookups and a full ``greencpn forecast`` served from the cache.

Targets (issue 3): a cached forecast lookup ≤ 5 ms; a full ``greencpn forecast`` from cache
≤ 1 s wall including interpreter start-up.

Method:
1. A local replay server on 127.0.0.1 serves the recorded Electricity Maps v3 forecast
   (``../shared/data/api_samples``). One ``greencpn forecast`` run fills a fresh cache.
2. In-process: ``SourceChain.forecast(zone, issued, 48 h)`` answered from the fresh cache
   (SQLite lookup + decode + cut), repeated; also the bare ``SeriesCache.latest`` lookup.
3. Subprocess: ``python -m greencpn.cli forecast ...`` with the API base URL pointing at a
   closed port, so the answer can only come from the cache; wall time per run, repeated.
   Interpreter start-up alone and ``greencpn --help`` are timed for reference.

Usage: ``.venv/bin/python bench/bench_sources_cache.py [--runs 15] [--write]``
(``--write`` writes ``bench/results/sources_api.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = (REPO / ".." / "shared" / "data" / "api_samples").resolve()
FORECAST = SAMPLES / "electricitymaps_v3_carbon-intensity_forecast_DE_2023-05-02.json"
TOKEN = "bench-token"
NOW = "2023-05-02T19:55Z"


def serve_recorded() -> ThreadingHTTPServer:
    body = FORECAST.read_bytes()

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            ok = self.headers.get("auth-token") == TOKEN
            data = body if ok else b'{"message":"bad token"}'
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cli(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "greencpn.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    return time.perf_counter() - t, proc


def stats_ms(xs: list[float]) -> str:
    xs = sorted(x * 1000 for x in xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return f"median {statistics.median(xs):.2f} ms, p95 {p95:.2f} ms, min {xs[0]:.2f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="subprocess runs (15)")
    ap.add_argument("--lookups", type=int, default=2000, help="in-process lookups (2000)")
    ap.add_argument("--write", action="store_true", help="write bench/results/sources_api.md")
    a = ap.parse_args()
    if not FORECAST.exists():
        print(f"skip: recorded samples not found at {SAMPLES}")
        return 0

    with tempfile.TemporaryDirectory(prefix="greencpn-bench-") as d:
        return run(a, Path(d))


SOURCES_ONLY = """
import argparse, sys
from greencpn.sources.cli import add_parser
p = argparse.ArgumentParser(prog="greencpn")
add_parser(p.add_subparsers())
args = p.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def run(a: argparse.Namespace, tmp: Path) -> int:
    cache_path = tmp / "cache.sqlite"
    env = {
        **os.environ,
        "GREENCPN_ELECTRICITYMAPS_TOKEN": TOKEN,
        "PYTHONPATH": str(REPO),
        "HOME": str(tmp),
    }
    srv = serve_recorded()
    base = [
        "forecast",
        "--zone",
        "DE",
        "--source",
        "electricitymaps",
        "--hours",
        "48",
        "--issued",
        NOW,
        "--now",
        NOW,
        "--cache",
        str(cache_path),
    ]
    t_fill, proc = cli(
        [*base, "--base-url", f"http://127.0.0.1:{srv.server_address[1]}/v3", "--json"], env
    )
    srv.shutdown()
    if proc.returncode != 0:
        print(proc.stderr)
        return 1
    filled = json.loads(proc.stdout)
    assert filled["fallback"] is None and len(filled["points"]) == 48

    # ---- in-process lookups
    sys.path.insert(0, str(REPO))
    from greencpn.clock import SimClock
    from greencpn.sources.cache import SeriesCache
    from greencpn.sources.chain import SourceChain

    clock = SimClock(datetime(2023, 5, 2, 19, 55, tzinfo=UTC))
    cache = SeriesCache(cache_path, clock)
    chain = SourceChain(None, cache, clock=clock, source_name="electricitymaps", signal="average")
    issued = clock.now()

    class NoLive:  # the chain must not need the network for a fresh hit
        name = "electricitymaps"

        def forecast(self, *a: object) -> None:
            raise AssertionError("live source called")

        def history(self, *a: object) -> None:
            raise AssertionError("live source called")

    chain.live = NoLive()  # type: ignore[assignment]
    for _ in range(50):  # warm-up
        chain.forecast("DE", issued, timedelta(hours=48))
    lookups, raw = [], []
    for _ in range(a.lookups):
        t = time.perf_counter()
        fc = chain.forecast("DE", issued, timedelta(hours=48))
        lookups.append(time.perf_counter() - t)
        t = time.perf_counter()
        cache.latest("electricitymaps", "DE", "average", "forecast", covering=issued)
        raw.append(time.perf_counter() - t)
    assert fc.fallback is None and len(fc.intensity_g_per_kwh) == 48

    # ---- subprocess: full CLI from cache, API unreachable
    dead = [*base, "--base-url", f"http://127.0.0.1:{dead_port()}/v3"]
    walls = []
    for _ in range(a.runs):
        wall, proc = cli(dead, env)
        assert proc.returncode == 0 and "fallback    none (live)" in proc.stdout, proc.stderr
        walls.append(wall)
    example = proc.stdout
    # past the TTL, API down: the full path (pandas, one refused connection, stale cache)
    stale_cmd = [
        *dead[: dead.index("--now")],
        "--now",
        "2023-05-02T22:55Z",
        *dead[dead.index("--now") + 2 :],
        "--retries",
        "1",
    ]
    stale = []
    for _ in range(max(3, a.runs // 3)):
        wall, p3 = cli(stale_cmd, env)
        assert p3.returncode == 0 and "fallback    cache" in p3.stdout, p3.stderr
        stale.append(wall)
    # the same command with only this area's subcommand registered (no other area's imports)
    own = []
    for _ in range(a.runs):
        t = time.perf_counter()
        p2 = subprocess.run(
            [sys.executable, "-c", SOURCES_ONLY, *dead],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=120,
        )
        own.append(time.perf_counter() - t)
        assert p2.returncode == 0 and p2.stdout == example, p2.stderr
    t_py = [cli_time([sys.executable, "-c", "pass"], env) for _ in range(5)]
    t_help = [cli(["--help"], env)[0] for _ in range(5)]
    t_pandas = [cli_time([sys.executable, "-c", "import pandas, requests"], env) for _ in range(5)]

    nproc = os.cpu_count()
    lines = [
        "## Sources: live-API cache (`bench/bench_sources_cache.py`)",
        "",
        f"Machine: {nproc} cores (`nproc` = {nproc}), shared with other workers; "
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}. "
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, load average "
        f"{os.getloadavg()[0]:.1f} at the end of the run.",
        "",
        "| measurement | result | target |",
        "|---|---|---|",
        f"| cached 48 h forecast lookup, `SourceChain.forecast` fresh hit ({a.lookups} runs) "
        f"| {stats_ms(lookups)} | ≤ 5 ms |",
        f"| bare `SeriesCache.latest` SQLite lookup + decode | {stats_ms(raw)} | — |",
        f"| full `greencpn forecast --source electricitymaps --hours 48` from cache, API down, "
        f"subprocess wall ({a.runs} runs) | {stats_ms(walls)} | ≤ 1000 ms |",
        f"| the same, 3 h later (past the TTL): stale cache via the full pandas path, one "
        f"refused connection ({len(stale)} runs) | {stats_ms(stale)} | — |",
        f"| the same command with only `greencpn.sources.cli` registered (no other area's "
        f"imports) | {stats_ms(own)} | — |",
        f"| reference: `python -c pass` | {stats_ms(t_py)} | — |",
        f"| reference: `python -c 'import pandas, requests'` | {stats_ms(t_pandas)} | — |",
        f"| reference: `greencpn --help` (imports every area's CLI) | {stats_ms(t_help)} | — |",
        f"| first run filling the cache from the 127.0.0.1 replay server | {t_fill * 1000:.0f} ms "
        "| — |",
        "",
        "Output of the cached run:",
        "",
        "```",
        *example.splitlines()[:12],
        "...",
        "```",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if a.write:
        out = REPO / "bench" / "results" / "sources_api.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"written {out}")
    return 0


def cli_time(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, capture_output=True, env=env, cwd=REPO, timeout=60, check=True)
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
