"""The kubernetes hook, through the REAL ``kubernetes`` client, against a small fake of the
Kubernetes API on 127.0.0.1.

The fake speaks the documented request/response shapes of the four endpoints the hook uses
(read node, patch node, list pods by ``spec.nodeName`` field selector, create a policy/v1
Eviction), checks the bearer token, records every request, and answers 429 with the API's
``TooManyRequests`` Status for pods protected by a PodDisruptionBudget. Not a real cluster.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from greencpn.actuate.base import NodePower
from greencpn.actuate.hooks import NodeHookPermanentError, NodeHookTemporaryError, make_hook
from greencpn.actuate.hooks.kubernetes import DRAIN_REASON_ANNOTATION, KubernetesHook
from greencpn.errors import PermanentError

TOKEN = "test-token-123"


def _pod(
    ns: str,
    name: str,
    node: str,
    owner: str | None = None,
    phase: str = "Running",
    mirror: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{name}"}
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": owner,
                "name": f"{name}-owner",
                "uid": f"uid-{name}-owner",
                "controller": True,
            }
        ]
    if mirror:
        meta["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": phase},
    }


def _merge(dst: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch (RFC 7386): null deletes a key."""
    for k, v in patch.items():
        if v is None:
            dst.pop(k, None)
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


@dataclass
class FakeKubeApi:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pdb_refusals: dict[tuple[str, str], int] = field(default_factory=dict)  # -1 = always
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    patch_types: list[str] = field(default_factory=list)
    url: str = ""

    def evictions(self) -> list[str]:
        return [
            p.split("/")[4] + "/" + p.split("/")[6]
            for m, p, _ in self.requests
            if m == "POST" and p.endswith("/eviction")
        ]

    def patches(self) -> list[tuple[str, Any]]:
        return [(p.rsplit("/", 1)[1], b) for m, p, b in self.requests if m == "PATCH"]


def _handler(api: FakeKubeApi) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, obj: dict[str, Any]) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _status(
            self, code: int, reason: str, message: str, causes: list[dict[str, str]] | None = None
        ) -> None:
            body: dict[str, Any] = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": reason,
                "code": code,
            }
            if causes:
                body["details"] = {"causes": causes}
            self._send(code, body)

        def _handle(self, method: str) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            api.requests.append((method, url.path, body))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._status(401, "Unauthorized", "Unauthorized")
            parts = url.path.strip("/").split("/")
            if parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4:
                node = api.nodes.get(parts[3])
                if node is None:
                    return self._status(404, "NotFound", f'nodes "{parts[3]}" not found')
                if method == "PATCH":
                    ctype = self.headers.get("Content-Type", "")
                    api.patch_types.append(ctype)
                    if ctype != "application/merge-patch+json":  # the merge semantics we model
                        return self._status(415, "UnsupportedMediaType", ctype)
                    _merge(node, body)
                return self._send(200, node)
            if url.path == "/api/v1/pods" and method == "GET":
                sel = parse_qs(url.query).get("fieldSelector", [""])[0]
                want = sel.split("=", 1)[1] if sel.startswith("spec.nodeName=") else None
                items = [
                    p for p in api.pods.values() if want is None or p["spec"]["nodeName"] == want
                ]
                return self._send(
                    200,
                    {
                        "apiVersion": "v1",
                        "kind": "PodList",
                        "metadata": {"resourceVersion": "1"},
                        "items": items,
                    },
                )
            if (
                method == "POST"
                and len(parts) == 7
                and parts[:3] == ["api", "v1", "namespaces"]
                and parts[4] == "pods"
                and parts[6] == "eviction"
            ):
                key = (parts[3], parts[5])
                if key not in api.pods:
                    return self._status(404, "NotFound", f'pods "{parts[5]}" not found')
                assert body["kind"] == "Eviction" and body["apiVersion"] == "policy/v1"
                assert body["metadata"]["name"] == parts[5]
                left = api.pdb_refusals.get(key, 0)
                if left != 0:
                    api.pdb_refusals[key] = left - 1 if left > 0 else -1
                    return self._status(
                        429,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        [
                            {
                                "reason": "DisruptionBudget",
                                "message": "The disruption budget web-pdb needs 2 healthy pods and "
                                "has 2 currently",
                            }
                        ],
                    )
                del api.pods[key]
                return self._send(
                    201,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "code": 201,
                    },
                )
            return self._status(404, "NotFound", f"no route {method} {url.path}")

        def do_GET(self) -> None:
            self._handle("GET")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

        def do_POST(self) -> None:
            self._handle("POST")

    return H


@pytest.fixture
def kube() -> Iterator[FakeKubeApi]:
    api = FakeKubeApi()
    for name in ("worker-1", "worker-2"):
        api.nodes[name] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "annotations": {}},
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
    for p in (
        _pod("default", "web-1", "worker-1", "ReplicaSet"),
        _pod("default", "batch-1", "worker-1", "Job"),
        _pod("kube-system", "fluentd-x", "worker-1", "DaemonSet"),
        _pod("kube-system", "kube-proxy-worker-1", "worker-1", mirror=True),
        _pod("default", "done-1", "worker-1", "Job", phase="Succeeded"),
        _pod("default", "db-0", "worker-2", "StatefulSet"),
    ):
        api.pods[(p["metadata"]["namespace"], p["metadata"]["name"])] = p
    api.pdb_refusals[("default", "web-1")] = 2  # the PDB blocks twice, then allows
    api.pdb_refusals[("default", "db-0")] = -1  # the PDB always blocks
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


def _hook(kube: FakeKubeApi, tmp_path: Path, token: str = TOKEN, **extra: Any) -> KubernetesHook:
    tok = tmp_path / "token"
    tok.write_text(token + "\n")
    cfg: dict[str, Any] = {
        "kind": "kubernetes",
        "host": kube.url,
        "token_file": str(tok),
        "node_names": {"k1": "worker-1", "k2": "worker-2"},
        "eviction_attempts": 3,
        "eviction_retry_interval_s": 0.01,
        "request_timeout_s": 5,
    }
    cfg.update(extra)
    hook = make_hook(cfg)
    assert isinstance(hook, KubernetesHook)
    return hook


def test_status_counts_evictable_pods(kube: FakeKubeApi, tmp_path: Path) -> None:
    st = _hook(kube, tmp_path).status(["k1", "k2"])
    assert [(s.name, s.power, s.drained, s.running_jobs) for s in st] == [
        ("k1", NodePower.ON, False, 2),
        ("k2", NodePower.ON, False, 1),
    ]
    assert st[0].extra["pods"] == ["default/web-1", "default/batch-1"]
    # the list call used the field selector, not a full listing filtered client side
    assert ("GET", "/api/v1/pods", None) in kube.requests


def test_drain_cordons_and_evicts_respecting_pdb(kube: FakeKubeApi, tmp_path: Path) -> None:
    hook = _hook(kube, tmp_path)
    sleeps: list[float] = []
    hook._sleep = sleeps.append
    changes = hook.drain(["k1"], "greencpn: low-carbon plan")
    assert [(c.what, c.before, c.changed) for c in changes] == [
        ("drained", False, True),
        ("evicted_pod", "default/web-1", True),
        ("evicted_pod", "default/batch-1", True),
    ]
    assert "attempt 3" in changes[1].message  # 429, 429, then 201
    assert kube.evictions() == ["default/web-1"] * 3 + ["default/batch-1"]  # no DaemonSet/mirror
    assert sleeps == [0.01, 0.01]
    ((name, body),) = kube.patches()
    assert name == "worker-1" and body["spec"] == {"unschedulable": True}
    assert body["metadata"]["annotations"][DRAIN_REASON_ANNOTATION] == "greencpn: low-carbon plan"
    st = hook.status(["k1"])[0]
    assert st.drained and st.running_jobs == 0 and st.extra["reason"] == "greencpn: low-carbon plan"
    # draining again is a no-op: no PATCH, no evictions
    before = len(kube.requests)
    again = hook.drain(["k1"], "again")
    assert [c.changed for c in again] == [False]
    assert [m for m, _, _ in kube.requests[before:]] == ["GET", "GET"]


def test_pdb_that_never_allows_is_reported_after_bounded_retries(
    kube: FakeKubeApi, tmp_path: Path
) -> None:
    hook = _hook(kube, tmp_path)
    hook._sleep = lambda s: None
    with pytest.raises(NodeHookTemporaryError) as info:
        hook.drain(["k1", "k2"], "plan")
    err = info.value
    assert set(err.failures) == {"k2"}
    assert "default/db-0 still refused by its PodDisruptionBudget after 3 attempts" in str(err)
    # what did happen is carried by the error: both cordons and k1's evictions
    assert [(c.target, c.what) for c in err.changes if c.changed] == [
        ("k1", "drained"),
        ("k1", "evicted_pod"),
        ("k1", "evicted_pod"),
        ("k2", "drained"),
    ]
    assert kube.evictions().count("default/db-0") == 3
    assert ("default", "db-0") in kube.pods  # never evicted


def test_resume_uncordons_and_removes_reason(kube: FakeKubeApi, tmp_path: Path) -> None:
    hook = _hook(kube, tmp_path)
    hook._sleep = lambda s: None
    hook.drain(["k1"], "plan")
    changes = hook.resume(["k1", "k2"])
    assert [(c.target, c.changed) for c in changes] == [("k1", True), ("k2", False)]
    node = kube.nodes["worker-1"]
    assert node["spec"]["unschedulable"] is False
    assert DRAIN_REASON_ANNOTATION not in node["metadata"]["annotations"]


def test_power_goes_through_nested_hook(kube: FakeKubeApi, tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="nested"):
        _hook(kube, tmp_path).power_off(["k1"])
    out = tmp_path / "power.log"
    hook = _hook(
        kube,
        tmp_path,
        power={
            "kind": "command",
            "power_off": ["sh", "-c", f"echo off $0 >> {out}"],
            "status": ["sh", "-c", "for n in $(echo $0 | tr , ' '); do echo $n on; done"],
        },
    )
    changes = hook.power_off(["k1"])
    assert changes[0].changed and out.read_text().strip() == "off k1"
    assert hook.status(["k1"])[0].power == NodePower.ON  # from the nested status command


def test_auth_and_connection_errors_are_typed(kube: FakeKubeApi, tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="401"):
        _hook(kube, tmp_path, token="wrong").drain(["k1"], "x")
    assert ("default", "web-1") in kube.pods
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    kube.url = dead
    hook = _hook(kube, tmp_path, request_timeout_s=1)
    with pytest.raises(NodeHookTemporaryError):
        hook.drain(["k1"], "x")
    assert hook.status(["k1"])[0].power == NodePower.UNKNOWN


def test_pods_without_controller_are_not_evicted_unless_asked(
    kube: FakeKubeApi, tmp_path: Path
) -> None:
    bare = _pod("default", "debug-shell", "worker-1")  # no ownerReferences
    kube.pods[("default", "debug-shell")] = bare
    kube.pdb_refusals.clear()
    hook = _hook(kube, tmp_path)
    with pytest.raises(NodeHookPermanentError) as info:
        hook.drain(["k1"], "plan")
    assert "default/debug-shell" in str(info.value) and "evict_unmanaged" in str(info.value)
    assert "default/debug-shell" not in kube.evictions()
    assert ("default", "debug-shell") in kube.pods
    assert hook.status(["k1"])[0].running_jobs == 1  # still counts as work on the node
    forced = _hook(kube, tmp_path, evict_unmanaged=True)
    changes = forced.drain(["k1"], "plan")
    assert [c.before for c in changes if c.changed] == ["default/debug-shell"]
    assert forced.status(["k1"])[0].running_jobs == 0
