"""Benchmark: authenticated status requests per second served by one node agent.

Starts a real ``greencpn agent`` (subprocess, ``--gpu fake`` with 8 GPUs, 127.0.0.1, ephemeral
key in a temporary folder), then sends a bounded number of signed ``GET /v1/status`` requests
from N client threads over keep-alive connections, twice:

* through :class:`greencpn.agent.client.AgentClient` (what the controller uses);
* through a lean signed ``http.client`` loop (shows the server's own headroom).

Usage: ``.venv/bin/python bench/bench_agent.py [--requests 3000] [--threads 4] [--write]``;
``--write`` stores the Markdown section in ``bench/results/agent.md``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from greencpn.agent import auth  # noqa: E402
from greencpn.agent.client import AgentClient  # noqa: E402

TARGET_RPS = 500.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(
    threads: int, total: int, make_worker: Callable[[], Callable[[], None]]
) -> tuple[float, list[float]]:
    """Run ``total`` requests split over ``threads``; return (requests/s, latencies in ms)."""
    per_thread = [total // threads + (1 if i < total % threads else 0) for i in range(threads)]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start_gate = threading.Barrier(threads + 1)

    def body(i: int) -> None:
        call = make_worker()
        call()  # open the connection outside the timed part
        start_gate.wait()
        try:
            for _ in range(per_thread[i]):
                t0 = time.perf_counter()
                call()
                latencies[i].append((time.perf_counter() - t0) * 1000)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    workers = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    flat = [x for lat in latencies for x in lat]
    return len(flat) / elapsed, flat


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="repeat each client this many times")
    ap.add_argument("--write", action="store_true", help="write bench/results/agent.md")
    args = ap.parse_args()

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        key_file = auth.write_key_file(Path(tmp) / "agent.key")
        key = auth.load_key(key_file)
        port = _free_port()
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "greencpn.cli",
                "agent",
                "--listen",
                f"127.0.0.1:{port}",
                "--key-file",
                str(key_file),
                "--gpu",
                "fake",
                "--fake-gpus",
                "8",
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    AgentClient(url, key, retries=0).status()
                    break
                except Exception:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.1)
            sample = AgentClient(url, key).status()

            def via_client() -> Callable[[], None]:
                client = AgentClient(url, key)
                return lambda: client.status() and None

            def via_http_client() -> Callable[[], None]:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

                def call() -> None:
                    conn.request(
                        "GET",
                        "/v1/status",
                        headers=auth.signed_headers(key, "GET", "/v1/status", b"", time.time()),
                    )
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}")

                return call

            results: dict[str, list[tuple[float, list[float], float]]] = {}
            for round_no in range(1, args.rounds + 1):
                for name, factory in (
                    ("AgentClient (controller path)", via_client),
                    ("bare signed http.client loop", via_http_client),
                ):
                    cpu0 = _cpu_s(proc.pid)
                    rps, lat = _run(args.threads, args.requests, factory)
                    cpu_ms = (_cpu_s(proc.pid) - cpu0) * 1000 / args.requests
                    results.setdefault(name, []).append((rps, lat, cpu_ms))
                    print(
                        f"round {round_no} {name}: {rps:.0f} req/s, p50 {_pct(lat, 50):.2f} ms, "
                        f"p99 {_pct(lat, 99):.2f} ms, agent CPU {cpu_ms:.2f} ms/request"
                    )
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    lines = [
        "## Node agent: authenticated status requests/s",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/bench_agent.py "
        f"--requests {args.requests} --threads {args.threads} --rounds {args.rounds}` on this "
        "machine: "
        f"`nproc` = {os.cpu_count()}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()} (machine shared with other work while measured).",
        "",
        "One `greencpn agent` process (stdlib `ThreadingHTTPServer`, HTTP/1.1 keep-alive, "
        "`--gpu fake --fake-gpus 8`), on 127.0.0.1; each request is a signed `GET /v1/status` "
        "(HMAC check, nonce cache, 8 GPUs read, signed answer of "
        f"{len(str(sample))} characters); the clients run in a second process.",
        "",
        "| client | threads | requests × rounds | requests/s (min / median / max) | p50 ms | "
        "p99 ms | agent CPU ms/request | target ≥ 500/s |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, runs in results.items():
        rates = sorted(r[0] for r in runs)
        lat = [x for r in runs for x in r[1]]
        cpu_ms = statistics.median(r[2] for r in runs)
        lines.append(
            f"| {name} | {args.threads} | {args.requests} × {len(runs)} | "
            f"{rates[0]:.0f} / {statistics.median(rates):.0f} / {rates[-1]:.0f} | "
            f"{_pct(lat, 50):.2f} | {_pct(lat, 99):.2f} | {cpu_ms:.2f} | "
            f"{'met' if rates[0] >= TARGET_RPS else 'NOT met in every round'} |"
        )
    lines += [
        "",
        f"Load average before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores. "
        "Agent CPU per request is read from /proc/<pid>/stat (user+system) over the timed run; "
        "requests/s depends on what else runs on the machine, CPU per request much less.",
    ]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.write:
        out = REPO / "bench" / "results" / "agent.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
