"""Kubernetes job actuation (scheduling gates) against a small fake of the pods API on
127.0.0.1 (tests/actuate/jobs/fake_kube.py), with the exact requests asserted; and the gate
webhook as a real HTTPS handler given a real ``AdmissionReview`` body over TLS (certificate
made with openssl). Not a real cluster.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from greencpn.actuate.jobs import JobBackends, JobNotPendingError, act_on_jobs, undo_all_jobs
from greencpn.actuate.jobs.base import JobActuatorPermanentError, SteerMode, SteerTarget
from greencpn.actuate.jobs.kubernetes import GATE, PLANNED_NODES, KubernetesJobActuator
from greencpn.actuate.jobs.webhook import WebhookSettings, make_server
from greencpn.actuate.ledger import Ledger
from greencpn.clock import SimClock
from greencpn.config import JobActuationConfig
from tests.actuate.jobs.fake_kube import FakePodsApi, make_pod

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
_pod = make_pod


def _actuator(api: FakePodsApi, token: Path, **kw: Any) -> KubernetesJobActuator:
    return KubernetesJobActuator(
        cluster="k1", host=api.url, token_file=str(token), timeout_s=5, **kw
    )


def test_gated_pods_read_steered_and_released_with_exact_requests(
    kube: tuple[FakePodsApi, Path],
) -> None:
    api, token = kube
    api.add(_pod("ml", "train-1", gpus=4))
    api.add(_pod("ml", "ungated", gated=False))
    api.add(_pod("ml", "bound", node="gpu01"))
    act = _actuator(api, token)
    jobs = {j.id: j for j in act.pending_jobs()}
    assert sorted(jobs) == ["ml/train-1", "ml/ungated"]
    j = jobs["ml/train-1"]
    assert (j.gpus, j.time_limit_s, j.held, j.gated, j.account, j.user) == (
        4,
        3600.0,
        True,
        True,
        "ml",
        "alice",
    )
    assert api.requests[0] == ("GET", "/api/v1/pods?fieldSelector=status.phase=Pending", None, None)

    ch = act.steer("ml/train-1", SteerTarget(SteerMode.NODES, nodes="greencpn.io/pool=fra-a100"))
    assert [(c.what, c.before, c.after) for c in ch] == [
        ("required_nodes", "", "greencpn.io/pool=fra-a100")
    ]
    rel = act.release("ml/train-1")
    assert (rel.before, rel.after, rel.changed) == (True, False, True)
    assert api.writes() == [
        (
            "PATCH",
            "/api/v1/namespaces/ml/pods/train-1",
            "application/merge-patch+json",
            {"metadata": {"annotations": {PLANNED_NODES: "greencpn.io/pool=fra-a100"}}},
        ),
        (
            "PATCH",
            "/api/v1/namespaces/ml/pods/train-1",
            "application/json-patch+json",
            [
                {"op": "test", "path": "/spec/schedulingGates/1/name", "value": GATE},
                {
                    "op": "add",
                    "path": "/spec/affinity",
                    "value": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {
                                                "key": "greencpn.io/pool",
                                                "operator": "In",
                                                "values": ["fra-a100"],
                                            }
                                        ]
                                    }
                                ]
                            }
                        }
                    },
                },
                {"op": "remove", "path": "/spec/schedulingGates/1"},
            ],
        ),
    ]
    pod = api.pods[("ml", "train-1")]
    assert pod["spec"]["schedulingGates"] == [{"name": "other.io/x"}]  # the other gate stays
    # an ungated pod cannot be held (gates cannot be added); a bound pod is not pending
    with pytest.raises(JobActuatorPermanentError, match="cannot be added"):
        act.hold("ml/ungated")
    with pytest.raises(JobNotPendingError):
        act.release("ml/bound")
    bad = KubernetesJobActuator(cluster="k1", host=api.url, token_file=None)
    with pytest.raises(JobActuatorPermanentError, match="401"):
        bad.pending_jobs()


def test_engine_keeps_gate_until_planned_start_then_failsafe_and_undo(
    kube: tuple[FakePodsApi, Path],
    tmp_path: Path,
) -> None:
    api, token = kube
    for name in ("a", "b", "c", "new"):
        api.add(_pod("ml", name))
    act = _actuator(api, token)
    cfg = JobActuationConfig.model_validate(
        {
            "default_slack_h": 2,
            "clusters": [
                {
                    "name": "k1",
                    "kind": "kubernetes",
                    "sites": ["s1"],
                    "host": api.url,
                    "steer": "nodes",
                    "pools": {"p": {"node_selector": {"greencpn.io/pool": "p"}}},
                }
            ],
        }
    )
    backends = JobBackends(config=cfg, actuators={"k1": act})
    plan = {
        "jobs": [
            {"id": "ml/a", "site": "s1", "pool": "p", "start": "2026-12-01T14:00:00Z"},
            {"id": "ml/b", "site": "s1", "pool": "p", "start": "2026-12-01T12:00:00Z"},
            {"id": "ml/c", "site": "s1", "pool": "p", "start": "2026-12-01T13:00:00Z"},
        ]
    }

    def step(now: datetime, ready: bool) -> list[tuple[str, str, str]]:
        aid = ledger.begin_apply(now, plan_path=None, slot=0, slot_start=now, mode="act")
        rep = act_on_jobs(
            plan,
            backends,
            ledger,
            aid,
            clock_now=lambda: now,
            next_step_at=now + timedelta(hours=1),
            pool_ready=lambda p: ready,
            shadow=False,
        )
        return [(o.job_id, o.action, o.status) for o in rep.outcomes]

    with Ledger.open(tmp_path / "state") as ledger:
        # 12:00: a waits (release scheduled at 14:00), b is due and its pool is ready: released
        got = step(T0, True)
        assert got == [
            ("ml/a", "steer", "ok"),
            ("ml/a", "hold", "ok"),
            ("ml/b", "steer", "ok"),
            ("ml/b", "release", "ok"),
            ("ml/c", "steer", "ok"),
            ("ml/c", "hold", "ok"),
        ]
        assert GATE in [g["name"] for g in api.pods[("ml", "a")]["spec"]["schedulingGates"]]
        assert [g["name"] for g in api.pods[("ml", "b")]["spec"]["schedulingGates"]] == [
            "other.io/x"
        ]
        rec = ledger.job("k1", "ml/a")
        assert rec is not None and rec.release_at == T0 + timedelta(hours=2)
        # 13:00, pool not ready: c waits (hold until 14:00); "new" (in no plan) still gated
        assert step(T0 + timedelta(hours=1), False) == [("ml/c", "hold", "ok")]
        # 14:00 = c's and a's latest safe start (created 12:00 + 1 h + 2 h slack - 1 h): released
        # although the pool is still not ready; "new" too (its latest safe start passed)
        got = step(T0 + timedelta(hours=2), False)
        assert sorted(got) == [
            ("ml/a", "failsafe_release", "ok"),
            ("ml/c", "failsafe_release", "ok"),
            ("ml/new", "failsafe_release", "ok"),
        ]
        assert all(
            GATE not in [g["name"] for g in p["spec"].get("schedulingGates", [])]
            for p in api.pods.values()
        )
        aff = api.pods[("ml", "a")]["spec"]["affinity"]["nodeAffinity"]
        assert aff["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
            "matchExpressions"
        ] == [{"key": "greencpn.io/pool", "operator": "In", "values": ["p"]}]


def test_undo_on_kubernetes_removes_annotation_then_gate(
    kube: tuple[FakePodsApi, Path], tmp_path: Path
) -> None:
    api, token = kube
    api.add(_pod("ml", "a"))
    act = _actuator(api, token)
    cfg = JobActuationConfig.model_validate(
        {
            "clusters": [
                {
                    "name": "k1",
                    "kind": "kubernetes",
                    "sites": ["s1"],
                    "host": api.url,
                    "steer": "nodes",
                    "pools": {"p": {"node_selector": {"pool": "p"}}},
                }
            ]
        }
    )
    backends = JobBackends(config=cfg, actuators={"k1": act})
    plan = {"jobs": [{"id": "ml/a", "site": "s1", "pool": "p", "start": "2026-12-01T15:00:00Z"}]}
    with Ledger.open(tmp_path / "state") as ledger:
        aid = ledger.begin_apply(T0, plan_path=None, slot=0, slot_start=T0, mode="act")
        act_on_jobs(
            plan,
            backends,
            ledger,
            aid,
            clock_now=lambda: T0,
            next_step_at=T0 + timedelta(hours=1),
            pool_ready=lambda p: True,
            shadow=False,
        )
        n = len(api.writes())
        rep = undo_all_jobs(backends, ledger, aid, clock_now=lambda: T0)
        assert [(o.action, o.status) for o in rep.outcomes] == [("restore", "ok")]
    undo_writes = api.writes()[n:]
    assert [
        (w[2], w[3] if w[2].endswith("merge-patch+json") else [o["op"] for o in w[3]])
        for w in undo_writes
    ] == [
        ("application/merge-patch+json", {"metadata": {"annotations": {PLANNED_NODES: None}}}),
        ("application/json-patch+json", ["test", "remove"]),
    ]
    pod = api.pods[("ml", "a")]
    assert "affinity" not in pod["spec"] and PLANNED_NODES not in pod["metadata"]["annotations"]


# --------------------------------------------------------------------------- webhook over TLS


def _review(pod: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod["metadata"]["name"],
            "namespace": pod["metadata"]["namespace"],
            "operation": operation,
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def test_webhook_adds_the_gate_over_tls(tls_cert: tuple[Path, Path]) -> None:
    cert, key = tls_cert
    settings = WebhookSettings(gpu_only=True, default_slack_h=6, clock=SimClock(T0))
    srv = make_server("127.0.0.1", 0, str(cert), str(key), settings)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    url = f"https://127.0.0.1:{srv.server_address[1]}"
    ctx = ssl.create_default_context(cafile=str(cert))  # verifies the certificate and its IP SAN

    def post(body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            url + "/mutate",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            assert resp.status == 200
            return json.loads(resp.read())

    try:
        plain = _pod("ml", "p1", gated=False)
        out = post(_review(plain))
        assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
        r = out["response"]
        assert r["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002" and r["allowed"] is True
        assert r["patchType"] == "JSONPatch"
        # the gate, and the fail-safe mark: admitted at 12:00 + 6 h slack (no deadline)
        assert json.loads(base64.b64decode(r["patch"])) == [
            {"op": "add", "path": "/spec/schedulingGates", "value": [{"name": GATE}]},
            {
                "op": "add",
                "path": "/metadata/annotations",
                "value": {"greencpn.io/release-by": "2026-12-01T18:00:00Z"},
            },
        ]
        # a pod with another gate gets ours appended; with a deadline annotation, release-by
        # is the deadline minus activeDeadlineSeconds (1 h); one with our gate, no patch
        other = _pod(
            "ml", "p2", gated=False, annotations={"greencpn.io/deadline": "2026-12-01T15:30:00Z"}
        )
        other["spec"]["schedulingGates"] = [{"name": "other.io/x"}]
        r = post(_review(other))["response"]
        assert json.loads(base64.b64decode(r["patch"])) == [
            {"op": "add", "path": "/spec/schedulingGates/-", "value": {"name": GATE}},
            {
                "op": "add",
                "path": "/metadata/annotations/greencpn.io~1release-by",
                "value": "2026-12-01T14:30:00Z",
            },
        ]
        assert "patch" not in post(_review(_pod("ml", "p3")))["response"]
        # excluded namespace, no GPU (gpu_only), an UPDATE: allowed without a patch
        assert "patch" not in post(_review(_pod("kube-system", "p4", gated=False)))["response"]
        assert (
            "patch"
            not in post(
                _review(
                    _pod("ml", "p5", gated=False, gpus=0)
                    | {"spec": {"containers": [{"name": "c"}]}}
                )
            )["response"]
        )
        assert "patch" not in post(_review(plain, "UPDATE"))["response"]
        # a broken body is a 400, and the server lives on
        req = urllib.request.Request(url + "/mutate", data=b"{not json", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, context=ctx, timeout=10)
        assert info.value.code == 400
        with urllib.request.urlopen(url + "/healthz", context=ctx, timeout=10) as resp:
            assert resp.read() == b"ok"
        # a client that does not trust the certificate is refused
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(
                url + "/healthz", context=ssl.create_default_context(), timeout=10
            )
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_controller_queue_reads_running_pods_from_the_api(
    kube: tuple[FakePodsApi, Path], tmp_path: Path
) -> None:
    """The daemon's observe phase on Kubernetes: running pods (``status.phase=Running``) are
    the controller's running jobs — pool by the node affinity greencpn gave them, work left
    from ``status.startTime`` and ``activeDeadlineSeconds``; pending pods stay pending."""
    from greencpn.actuate.jobs.controller_bridge import controller_job_kwargs
    from greencpn.config import load_config
    from tests.actuate.jobs.job_plans import write_fleet

    api, token = kube
    steered = _pod("ml", "steered", gated=False, phase="Running", node="gpu07", gpus=2)
    steered["metadata"]["annotations"] = {PLANNED_NODES: "greencpn.io/pool=p-green"}
    steered["status"]["startTime"] = "2026-12-01T12:10:00Z"
    api.add(steered)
    stray = _pod("ml", "stray", gated=False, phase="Running", node="cpu01")
    stray["status"]["startTime"] = "2026-12-01T12:00:00Z"
    api.add(stray)
    api.add(_pod("ml", "waiting", gpus=4))
    cluster = f"""name = "k1"
kind = "kubernetes"
sites = ["s1"]
host = "{api.url}"
token_file = "{token}"
steer = "nodes"
timeout_s = 5
[job_actuation.clusters.pools.p-main]
node_selector = {{ "greencpn.io/pool" = "p-main" }}
[job_actuation.clusters.pools.p-green]
node_selector = {{ "greencpn.io/pool" = "p-green" }}
"""
    cfg = load_config(write_fleet(tmp_path, cluster))
    clock = SimClock(T0 + timedelta(minutes=40))
    queue = controller_job_kwargs(cfg, tmp_path / "state", clock_now=clock.now, enforce=False)[
        "queue"
    ]
    Ledger.open(tmp_path / "state").close()
    obs = queue.observe(clock.now())
    assert [(r.job.id, r.pool, r.nodes, r.job.gpus) for r in obs.running] == [
        ("ml/steered", "p-green", ("gpu07",), 2)
    ]
    # 1 h limit, started 30 min ago: 2 GPUs x 0.5 h left
    assert obs.running[0].remaining_gpu_h == pytest.approx(1.0)
    assert ("ml/stray", "running on no pool greencpn knows (nodes, partition)") in queue.skipped
    assert [j.id for j in obs.pending] == ["ml/waiting"]
    assert ("GET", "/api/v1/pods?fieldSelector=status.phase=Running", None, None) in api.requests
