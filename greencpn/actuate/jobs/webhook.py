"""A mutating admission webhook that gives new pods greencpn's scheduling gate.

Kubernetes sends ``POST /mutate`` with an ``admission.k8s.io/v1`` ``AdmissionReview``; the answer
allows the pod and, when it should wait for greencpn, carries a base64 ``JSONPatch`` that adds
``{"name": "greencpn.io/planned-start"}`` to ``spec.schedulingGates``. Pods are left as they are
(allowed, no patch) when: the operation is not ``CREATE``, the object is not a Pod, it is bound
to a node already, it has the gate, its namespace is excluded, it has the label
``greencpn.io/skip=true``, or (``gpu_only``) it asks for no GPU. The webhook never denies a
pod: a fault in greencpn must not stop the cluster (run it with ``failurePolicy: Ignore``).

Fail-safe: with the gate, the patch writes the annotation ``greencpn.io/release-by`` (the pod's
latest safe start: its ``greencpn.io/deadline`` minus ``activeDeadlineSeconds`` when both are
set, else now + ``default_slack_h``), which ``greencpn jobs release-expired`` honours without
greencpn. With ``--api-host`` the webhook reads greencpn's heartbeat Lease first and gates only
while it is fresh: when greencpn is dead (or in shadow mode, which does not renew it) new pods
are admitted ungated and schedule as without greencpn.

Run it (TLS is required by the API server)::

    python -m greencpn.actuate.jobs.webhook --cert tls.crt --key tls.key --port 8443 \\
        --exclude-namespace kube-system --gpu-only --default-slack-h 24 \\
        --api-host https://kubernetes.default.svc --token-file /var/run/secrets/.../token \\
        --ca-file /var/run/secrets/.../ca.crt --lease-namespace greencpn

``GET /healthz`` answers ``ok``. docs/jobs.md has the MutatingWebhookConfiguration.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from greencpn.actuate.jobs.kubernetes import (
    DEADLINE,
    GATE,
    GPU_RESOURCE,
    RELEASE_BY,
    KubernetesJobActuator,
    lease_fresh,
)
from greencpn.actuate.ledger import _dt, _iso
from greencpn.clock import Clock, SystemClock

log = logging.getLogger("greencpn.actuate.jobs.webhook")
SKIP_LABEL = "greencpn.io/skip"
MAX_BODY_BYTES = 3 * 1024 * 1024  # the API server sends at most ~3 MiB objects


@dataclass(frozen=True)
class WebhookSettings:
    gate: str = GATE
    exclude_namespaces: frozenset[str] = field(default_factory=lambda: frozenset({"kube-system"}))
    gpu_only: bool = False
    default_slack_h: float = 24.0
    """release-by of a pod without its own deadline: admission time + this."""
    controller_alive: Callable[[], tuple[bool, str]] | None = None
    """greencpn's heartbeat check (:class:`LeaseCheck`); None: always gate (no check)."""
    clock: Clock = field(default_factory=SystemClock)


class LeaseCheck:
    """Reads greencpn's heartbeat Lease through the API (cached ``cache_s``); any fault reads
    as "not alive" — the webhook then does not gate (fail open)."""

    def __init__(self, api: KubernetesJobActuator, clock: Clock, cache_s: float = 5.0) -> None:
        self.api, self.clock, self.cache_s = api, clock, cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, Any] | None = None

    def __call__(self) -> tuple[bool, str]:
        """(alive?, why). The lease document is cached; its freshness is judged at each call."""
        with self._lock:
            mono = time.monotonic()
            if self._cached is None or mono - self._cached[0] >= self.cache_s:
                try:
                    lease: Any = self.api.read_lease()
                except Exception as exc:  # API unreachable, RBAC: do not gate
                    lease = exc
                self._cached = (mono, lease)
            lease = self._cached[1]
        if isinstance(lease, Exception):
            return False, f"heartbeat lease unreadable: {lease}"
        return lease_fresh(lease, self.clock.now())


def release_by(pod: Mapping[str, Any], now: datetime, default_slack_h: float) -> datetime:
    """The pod's latest safe start as the webhook can tell it: deadline annotation minus
    ``activeDeadlineSeconds`` when both are set, else ``now + default_slack_h``."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    deadline = (meta.get("annotations") or {}).get(DEADLINE)
    limit = spec.get("activeDeadlineSeconds")
    fallback = now + timedelta(hours=default_slack_h)
    if deadline and limit is not None:
        try:
            due = _dt(str(deadline))
            if due is not None:
                return min(due - timedelta(seconds=float(limit)), fallback)
        except (TypeError, ValueError):
            pass
    return fallback


def _wants_gpu(pod: Mapping[str, Any]) -> bool:
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            if GPU_RESOURCE in (res.get(part) or {}):
                return True
    return False


def gate_patch(
    pod: Mapping[str, Any], settings: WebhookSettings
) -> tuple[list[dict[str, Any]], str]:
    """The JSON patch for one pod (empty: leave it) and why."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return [], "already bound to a node"
    if meta.get("namespace") in settings.exclude_namespaces:
        return [], f"namespace {meta.get('namespace')} is excluded"
    if str((meta.get("labels") or {}).get(SKIP_LABEL, "")).lower() == "true":
        return [], f"label {SKIP_LABEL}=true"
    if settings.gpu_only and not _wants_gpu(pod):
        return [], "asks for no GPU"
    gates = spec.get("schedulingGates")
    if gates and any(g.get("name") == settings.gate for g in gates):
        return [], "gate present"
    if settings.controller_alive is not None:
        alive, why = settings.controller_alive()
        if not alive:
            return [], f"not gated: greencpn is not running ({why})"
    ops: list[dict[str, Any]]
    if gates:
        ops = [{"op": "add", "path": "/spec/schedulingGates/-", "value": {"name": settings.gate}}]
    else:
        ops = [{"op": "add", "path": "/spec/schedulingGates", "value": [{"name": settings.gate}]}]
    by = _iso(release_by(pod, settings.clock.now(), settings.default_slack_h))
    if meta.get("annotations"):
        key = RELEASE_BY.replace("~", "~0").replace("/", "~1")
        ops.append({"op": "add", "path": f"/metadata/annotations/{key}", "value": by})
    else:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {RELEASE_BY: by}})
    return ops, f"gated, release-by {by}"


def review_response(review: Mapping[str, Any], settings: WebhookSettings) -> dict[str, Any]:
    """The AdmissionReview answer for a request (always ``allowed``)."""
    req = review.get("request") or {}
    resp: dict[str, Any] = {"uid": req.get("uid", ""), "allowed": True}
    kind = (req.get("kind") or {}).get("kind")
    if req.get("operation") == "CREATE" and kind == "Pod":
        patch, why = gate_patch(req.get("object") or {}, settings)
        if patch:
            resp["patchType"] = "JSONPatch"
            resp["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
        log.info("pod %s/%s: %s", req.get("namespace"), req.get("name") or "", why)
    return {
        "apiVersion": review.get("apiVersion") or "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": resp,
    }


def _handler(settings: WebhookSettings) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:
            log.debug(fmt, *args)

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/healthz":
                self._send(200, b"ok", "text/plain")
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:  # noqa: N802
            if self.path.split("?")[0] != "/mutate":
                self._send(404, b"not found", "text/plain")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY_BYTES:
                self._send(400, b'{"error": "body missing or too large"}')
                return
            try:
                review = json.loads(self.rfile.read(length))
                if not isinstance(review, dict) or not isinstance(review.get("request"), dict):
                    raise ValueError("not an AdmissionReview")
            except (json.JSONDecodeError, ValueError) as exc:
                self._send(400, json.dumps({"error": f"bad AdmissionReview: {exc}"}).encode())
                return
            self._send(200, json.dumps(review_response(review, settings)).encode())

    return Handler


def make_server(
    host: str, port: int, certfile: str, keyfile: str, settings: WebhookSettings | None = None
) -> ThreadingHTTPServer:
    """An HTTPS server (TLS 1.2+) serving ``/mutate`` and ``/healthz``; call ``serve_forever``."""
    server = ThreadingHTTPServer((host, port), _handler(settings or WebhookSettings()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    return server


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m greencpn.actuate.jobs.webhook", description=__doc__)
    p.add_argument("--cert", required=True, help="TLS certificate (PEM)")
    p.add_argument("--key", required=True, help="TLS private key (PEM)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--gate", default=GATE)
    p.add_argument("--exclude-namespace", action="append", default=None)
    p.add_argument("--gpu-only", action="store_true", help="gate only pods that ask for GPUs")
    p.add_argument(
        "--default-slack-h",
        type=float,
        default=24.0,
        help="release-by of a pod without a deadline annotation: admission + this (hours)",
    )
    p.add_argument("--api-host", help="API server URL: gate only while greencpn's lease is fresh")
    p.add_argument("--token-file")
    p.add_argument("--ca-file")
    p.add_argument("--lease-namespace", default="default")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    clock = SystemClock()
    check = None
    if args.api_host:
        api = KubernetesJobActuator(
            cluster="webhook",
            host=args.api_host,
            token_file=args.token_file,
            ca_file=args.ca_file,
            lease_namespace=args.lease_namespace,
        )
        check = LeaseCheck(api, clock)
    settings = WebhookSettings(
        gate=args.gate,
        exclude_namespaces=frozenset(args.exclude_namespace or ["kube-system"]),
        gpu_only=args.gpu_only,
        default_slack_h=args.default_slack_h,
        controller_alive=check,
        clock=clock,
    )
    server = make_server(args.host, args.port, args.cert, args.key, settings)
    log.info("greencpn gate webhook on https://%s:%d/mutate", args.host, args.port)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
