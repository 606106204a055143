"""``greencpn agent``: run the node agent, make its key, or call an agent by hand.

* ``greencpn agent --listen 127.0.0.1:9123 --key-file /etc/greencpn/agent.key [--gpu nvml|fake|none]
  [--power-command 'systemctl poweroff']`` — serve;
* ``greencpn agent keygen /etc/greencpn/agent.key`` — write a fresh key (mode 0600);
* ``greencpn agent call http://node:9123 --key-file K status | power-limit 250 [--index 0] |
  power drain|resume|off`` — a signed request from the command line (prints JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from dataclasses import asdict
from typing import Any

from greencpn.actuate.base import GpuBackend
from greencpn.errors import ConfigError

log = logging.getLogger(__name__)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` → (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(
            f"--listen {text!r} is not HOST:PORT",
            field="listen",
            fix="e.g. --listen 127.0.0.1:9123",
        )
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(
            f"--listen {text!r}: bad port",
            field="listen",
            fix="a port between 1 and 65535, e.g. 9123",
        )
    return host, port


def make_backend(kind: str, fake_gpus: int = 2) -> GpuBackend | None:
    """The GPU backend named on the command line (``none``: a node without GPUs)."""
    if kind == "none":
        return None
    if kind == "fake":
        from greencpn.actuate.gpu.fake import FakeGpu, FakeGpuBackend

        return FakeGpuBackend([FakeGpu() for _ in range(fake_gpus)])
    from greencpn.actuate.gpu import get_gpu_backend

    return get_gpu_backend(kind)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> int:
    from greencpn.agent.auth import load_scoped_keys
    from greencpn.agent.server import AgentServer, AgentSettings

    host, port = parse_listen(args.listen)
    key = load_scoped_keys(args.key_file)
    settings = AgentSettings(
        host=host,
        port=port,
        max_skew_s=args.max_skew_s,
        power_command=args.power_command,
        drain_command=args.drain_command,
        resume_command=args.resume_command,
        work_command=args.work_command,
        request_timeout_s=args.request_timeout_s,
        idle_timeout_s=args.idle_timeout_s,
        max_connections=args.max_connections,
        max_connections_per_client=args.max_connections_per_client,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
    )
    if args.node_name:
        settings.node_name = args.node_name
    backend = make_backend(args.gpu, args.fake_gpus)
    server = AgentServer(backend, key, settings)
    if host not in ("127.0.0.1", "::1", "localhost") and server.httpd.ssl_context is None:
        log.warning(
            "listening on %s without TLS: requests are authenticated but not encrypted "
            "(telemetry is readable on the network); consider --tls-*",
            host,
        )
    signal.signal(signal.SIGTERM, _raise_interrupt)
    print(
        f"greencpn agent {settings.node_name} serving on {server.url} "
        f"(gpu: {args.gpu}, power off: {'enabled' if args.power_command else 'refused'})",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        close = getattr(backend, "close", None)
        if callable(close):
            close()
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from greencpn.agent.auth import write_key_file

    path = write_key_file(args.path, overwrite=args.force, scope=args.scope)
    if args.scope == "telemetry":
        print(
            f"wrote a new read-only (telemetry) key to {path} (mode 0600); append its line to "
            "the agent's key file and give this file to the monitoring side"
        )
    else:
        print(
            f"wrote a new agent key to {path} (mode 0600); copy it to the controller's key "
            "directory over a secure channel"
        )
    return 0


def _call(args: argparse.Namespace) -> int:
    from greencpn.agent.client import AgentClient

    client = AgentClient.from_key_file(
        args.url, args.key_file, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key
    )
    result: Any
    if args.action == "status":
        result = client.status()
    elif args.action == "power-limit":
        if args.value is None:
            raise ConfigError(
                "power-limit needs a value in W",
                field="value",
                fix="e.g. greencpn agent call URL --key-file K power-limit 250",
            )
        index: int | str = "all" if args.index is None else args.index
        result = [asdict(c) for c in client.set_power_limit_w(float(args.value), index)]
    elif args.action == "restore-defaults":
        result = [asdict(c) for c in client.restore_defaults()]
    else:  # power
        if args.value not in ("drain", "resume", "off"):
            raise ConfigError("power needs drain, resume or off", field="value")
        result = [asdict(c) for c in client.power(args.value, args.reason or "")]
    print(json.dumps(result, indent=2, default=str))
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    sub = getattr(args, "agent_command", None)
    if sub == "keygen":
        return _keygen(args)
    if sub == "call":
        return _call(args)
    return _serve(args)


def add_parser(subparsers: Any) -> None:
    """Register ``greencpn agent`` (serve) and its ``keygen`` / ``call`` helpers."""
    p = subparsers.add_parser(
        "agent",
        help="run the node agent (or: agent keygen PATH, agent call URL ...)",
        description="Serve the greencpn node agent: authenticated GPU caps, power actions and "
        "telemetry for this node.",
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1:9123",
        metavar="HOST:PORT",
        help="address to serve on (default 127.0.0.1:9123)",
    )
    p.add_argument(
        "--key-file",
        default="/etc/greencpn/agent.key",
        help="this node's HMAC key, mode 0600 (default /etc/greencpn/agent.key)",
    )
    p.add_argument(
        "--gpu", choices=("nvml", "fake", "none"), default="nvml", help="GPU backend (default nvml)"
    )
    p.add_argument("--fake-gpus", type=int, default=2, help="how many GPUs --gpu fake has")
    p.add_argument(
        "--power-command",
        default=None,
        help="command that powers this node off, e.g. 'systemctl poweroff' "
        "(default: none, power off is refused)",
    )
    p.add_argument(
        "--drain-command",
        default=None,
        help="command run on drain, e.g. 'scontrol update nodename=n1 state=drain reason=greencpn'",
    )
    p.add_argument("--resume-command", default=None, help="command run on resume")
    p.add_argument(
        "--work-command",
        default=None,
        help="command printing the running work (a number, or one line per job), "
        "e.g. 'squeue -h -t R -w n1 -o %%i'; default: count processes with "
        "/dev/nvidia<N> open",
    )
    p.add_argument("--node-name", default=None, help="reported node name (default: host name)")
    p.add_argument(
        "--max-skew-s",
        type=float,
        default=30.0,
        help="accepted clock difference with the controller, s (default 30)",
    )
    p.add_argument(
        "--request-timeout-s",
        type=float,
        default=5.0,
        help="a request must arrive whole within this many s of its first byte, and a new "
        "connection must start one within it (default 5)",
    )
    p.add_argument(
        "--idle-timeout-s",
        type=float,
        default=60.0,
        help="an authenticated keep-alive connection may idle this long, s (default 60)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=128,
        help="connections open at once; at the limit the oldest unauthenticated one is "
        "closed (default 128)",
    )
    p.add_argument(
        "--max-connections-per-client",
        type=int,
        default=32,
        help="the same limit per client address (default 32)",
    )
    p.add_argument("--tls-cert", default=None, help="server certificate (PEM) for mutual TLS")
    p.add_argument("--tls-key", default=None, help="server private key (PEM)")
    p.add_argument(
        "--tls-client-ca", default=None, help="CA whose client certificates are accepted (PEM)"
    )
    p.set_defaults(func=_dispatch)

    sub = p.add_subparsers(dest="agent_command", metavar="{keygen,call}")
    k = sub.add_parser("keygen", help="write a fresh agent key (mode 0600)")
    k.add_argument("path", help="where to write the key, e.g. /etc/greencpn/agent.key")
    k.add_argument("--force", action="store_true", help="replace an existing file")
    k.add_argument(
        "--scope",
        choices=("control", "telemetry"),
        default="control",
        help="control (default: everything) or telemetry (read-only: status only)",
    )
    k.set_defaults(func=_dispatch)

    c = sub.add_parser("call", help="send one signed request to an agent and print the answer")
    c.add_argument("url", help="the agent's URL, e.g. http://127.0.0.1:9123")
    c.add_argument("--key-file", required=True, help="the node's key file (mode 0600)")
    c.add_argument("action", choices=("status", "power-limit", "power", "restore-defaults"))
    c.add_argument("value", nargs="?", help="W for power-limit; drain|resume|off for power")
    c.add_argument("--index", type=int, default=None, help="GPU index (default: all)")
    c.add_argument("--reason", default=None, help="reason recorded with a power action")
    c.add_argument("--tls-ca", default=None, help="CA that signed the agent's certificate")
    c.add_argument("--tls-cert", default=None, help="client certificate for mutual TLS")
    c.add_argument("--tls-key", default=None, help="client key for mutual TLS")
    c.set_defaults(func=_dispatch)
