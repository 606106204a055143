"""A small fake of the Kubernetes API on 127.0.0.1 for job-actuation tests (not a real cluster).

It speaks the documented shapes of: list pods (field selector ``status.phase=<phase>``), get a
pod, PATCH a pod with ``application/merge-patch+json`` and ``application/json-patch+json``
(``test`` / ``add`` / ``remove``, RFC 6902); and ``coordination.k8s.io/v1`` Leases (get, create,
merge-patch, delete). Like the real API it refuses (422) adding a gate to an existing pod and
answers 409 when a ``test`` op fails. Every request is logged with the time it came.
Used by tests/actuate/jobs (fixtures ``kube`` and ``tls_cert`` in its conftest.py).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from greencpn.actuate.jobs.kubernetes import GATE

TOKEN = "k8s-token-abc"


def make_pod(
    ns: str,
    name: str,
    *,
    gated: bool = True,
    gpus: int = 1,
    limit_s: int | None = 3600,
    phase: str = "Pending",
    node: str | None = None,
    created: str = "2026-12-01T12:00:00Z",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pod as the API returns it (gated: another gate first, then greencpn's)."""
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "c",
                "image": "busybox",
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
            }
        ]
    }
    if gated:
        spec["schedulingGates"] = [{"name": "other.io/x"}, {"name": GATE}]
    if limit_s is not None:
        spec["activeDeadlineSeconds"] = limit_s
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "creationTimestamp": created,
            "resourceVersion": "1",
            "labels": {"greencpn.io/user": "alice"},
            **({"annotations": dict(annotations)} if annotations else {}),
        },
        "spec": spec,
        "status": {"phase": phase, "qosClass": "BestEffort"},
    }


def _json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if op["op"] == "test":
            cur = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if cur != op["value"]:
                raise KeyError("test failed")
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif op["op"] == "add":
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else int(last), op["value"])
            else:
                parent[last] = op["value"]
    return doc


@dataclass
class FakePodsApi:
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    leases: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None, Any]] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)  # when each request came (UTC)
    url: str = ""

    def add(self, pod: dict[str, Any]) -> None:
        self.pods[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = pod

    def writes(self) -> list[tuple[str, str, str | None, Any]]:
        return [r for r in self.requests if r[0] != "GET"]

    def log(self, method: str, path: str, ctype: str | None, body: Any) -> None:
        self.requests.append((method, path, ctype, body))
        self.times.append(datetime.now(UTC))

    def pod_writes(self) -> list[tuple[str, str, str | None, Any]]:
        return [r for r in self.writes() if "/leases" not in r[1]]

    def gated(self, ns: str, name: str) -> bool:
        gates = self.pods[(ns, name)]["spec"].get("schedulingGates") or []
        return GATE in [g["name"] for g in gates]

    def released_at(self, ns: str, name: str) -> datetime | None:
        """When the JSON patch that removed greencpn's gate from the pod came."""
        for (method, path, ctype, body), at in zip(self.requests, self.times, strict=True):
            if (
                method == "PATCH"
                and path == f"/api/v1/namespaces/{ns}/pods/{name}"
                and ctype == "application/json-patch+json"
                and any(op.get("op") == "remove" for op in body)
            ):
                return at
        return None


def _handler(api: FakePodsApi) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def _send(self, code: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _status(self, code: int, reason: str, message: str) -> None:
            self._send(
                code,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": reason,
                    "message": message,
                    "code": code,
                },
            )

        def _auth(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._status(401, "Unauthorized", "Unauthorized")
                return False
            return True

        def do_GET(self) -> None:  # noqa: N802
            u = urlparse(self.path)
            api.log("GET", unquote(self.path), None, None)
            if not self._auth():
                return
            parts = u.path.strip("/").split("/")
            if parts[:3] == ["apis", "coordination.k8s.io", "v1"]:
                lease = api.leases.get((parts[4], parts[6])) if len(parts) == 7 else None
                if lease is None:
                    self._status(
                        404, "NotFound", f'leases.coordination.k8s.io "{parts[-1]}" not found'
                    )
                    return
                self._send(200, lease)
                return
            if u.path == "/api/v1/pods" or (len(parts) == 5 and parts[4] == "pods"):
                sel = parse_qs(u.query).get("fieldSelector", [""])[0]
                items = [
                    p
                    for p in api.pods.values()
                    if not sel.startswith("status.phase=")
                    or p["status"]["phase"] == sel.removeprefix("status.phase=")
                ]
                if len(parts) == 5:
                    items = [p for p in items if p["metadata"]["namespace"] == parts[3]]
                self._send(200, {"kind": "PodList", "apiVersion": "v1", "items": items})
                return
            pod = api.pods.get((parts[3], parts[5])) if len(parts) == 6 else None
            if pod is None:
                self._status(404, "NotFound", f'pods "{parts[-1]}" not found')
                return
            self._send(200, pod)

        def do_PATCH(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            ctype = self.headers.get("Content-Type")
            api.log("PATCH", unquote(self.path), ctype, body)
            if not self._auth():
                return
            parts = urlparse(self.path).path.strip("/").split("/")
            if parts[:3] == ["apis", "coordination.k8s.io", "v1"]:
                lease = api.leases.get((parts[4], parts[6]))
                if lease is None:
                    self._status(404, "NotFound", "not found")
                    return
                if ctype != "application/merge-patch+json":
                    self._status(415, "UnsupportedMediaType", str(ctype))
                    return
                lease["spec"].update(body.get("spec") or {})
                self._send(200, lease)
                return
            key = (parts[3], parts[5])
            pod = api.pods.get(key)
            if pod is None:
                self._status(404, "NotFound", "not found")
                return
            if ctype == "application/merge-patch+json":
                ann = pod["metadata"].setdefault("annotations", {})
                for k, v in body.get("metadata", {}).get("annotations", {}).items():
                    if v is None:
                        ann.pop(k, None)
                    else:
                        ann[k] = v
            elif ctype == "application/json-patch+json":
                before = len(pod["spec"].get("schedulingGates") or [])
                try:
                    new = _json_patch(pod, body)
                except (KeyError, IndexError):
                    self._status(409, "Conflict", "the test operation failed")
                    return
                if len(new["spec"].get("schedulingGates") or []) > before:
                    self._status(
                        422, "Invalid", "spec.schedulingGates: Forbidden: only deletion is allowed"
                    )
                    return
                if not new["spec"].get("schedulingGates"):
                    new["spec"].pop("schedulingGates", None)
                api.pods[key] = pod = new
            else:
                self._status(415, "UnsupportedMediaType", str(ctype))
                return
            self._send(200, pod)

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            api.log("POST", unquote(self.path), self.headers.get("Content-Type"), body)
            if not self._auth():
                return
            parts = urlparse(self.path).path.strip("/").split("/")
            if parts[:3] != ["apis", "coordination.k8s.io", "v1"] or len(parts) != 6:
                self._status(404, "NotFound", "not found")
                return
            key = (parts[4], body["metadata"]["name"])
            if key in api.leases:
                self._status(409, "AlreadyExists", "already exists")
                return
            api.leases[key] = body
            self._send(201, body)

        def do_DELETE(self) -> None:  # noqa: N802
            api.log("DELETE", unquote(self.path), None, None)
            if not self._auth():
                return
            parts = urlparse(self.path).path.strip("/").split("/")
            lease = parts[:3] == ["apis", "coordination.k8s.io", "v1"] and len(parts) == 7
            if lease and api.leases.pop((parts[4], parts[6]), None) is not None:
                self._send(200, {"kind": "Status", "status": "Success"})
                return
            self._status(404, "NotFound", "not found")

    return H


@contextmanager
def serve_fake_api(tmp_path: Path) -> Iterator[tuple[FakePodsApi, Path]]:
    """The fake on a free 127.0.0.1 port (a thread) and a token file for it."""
    api = FakePodsApi()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.url = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    try:
        yield api, token
    finally:
        srv.shutdown()
        srv.server_close()


def make_tls_cert(tmp_path: Path) -> tuple[Path, Path] | None:
    """A self-signed certificate for 127.0.0.1 (None: openssl missing)."""
    if shutil.which("openssl") is None:
        return None
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
            "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key
