"""Kubernetes fail-safe with greencpn dead, against the fake API (tests/actuate/jobs/fake_kube.py).

``greencpn apply`` (a process) holds gated pods, writes each pod's ``greencpn.io/release-by``
(= its latest safe start) and renews the heartbeat Lease; it is then SIGKILLed. Without it:

* the webhook (real HTTPS handler, reading the Lease through the API) gates new pods while the
  lease is fresh and stops gating once it has run out;
* ``greencpn jobs release-expired`` — run every 0.5 s as a CronJob would, no state dir, no
  controller — releases every gated pod once its release-by has passed, not before, with the
  planned node affinity; a pod whose release-by is later stays gated.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from greencpn.actuate.jobs.kubernetes import GATE, RELEASE_BY, KubernetesJobActuator
from greencpn.actuate.jobs.webhook import LeaseCheck, WebhookSettings, gate_patch, make_server
from greencpn.cli import main
from greencpn.clock import SimClock, SystemClock
from tests.actuate.jobs.fake_kube import FakePodsApi, make_pod
from tests.actuate.jobs.job_plans import iso, now_s, write_fleet, write_plan

pytestmark = pytest.mark.slow  # minutes of solves / wall time: xdist hands it out first

REPO = Path(__file__).resolve().parents[3]
LIMIT_S = 60  # activeDeadlineSeconds of every pod
#: latest safe starts of the pods a, c, b, seconds after the test starts: after ``greencpn
#: apply`` has acted on them and written its lease (~3 s idle; 20 s leaves a loaded machine room)
DUE_S = {"a": 20, "c": 22, "b": 24}


def _cluster(api: FakePodsApi, token: Path, heartbeat_s: int) -> str:
    return f"""name = "k1"
kind = "kubernetes"
sites = ["s1"]
host = "{api.url}"
token_file = "{token}"
steer = "nodes"
lease_namespace = "greencpn"
heartbeat_s = {heartbeat_s}
timeout_s = 5
[job_actuation.clusters.pools.p-main]
node_selector = {{ "greencpn.io/pool" = "p-main" }}
[job_actuation.clusters.pools.p-green]
node_selector = {{ "greencpn.io/pool" = "p-green" }}
"""


def _pod_due(name: str, created: datetime, release_in_s: float) -> dict[str, Any]:
    """A gated pod whose latest safe start (deadline − activeDeadlineSeconds) is in
    ``release_in_s`` seconds."""
    deadline = created + timedelta(seconds=LIMIT_S + release_in_s)
    return make_pod(
        "ml",
        name,
        limit_s=LIMIT_S,
        created=iso(created),
        annotations={"greencpn.io/deadline": iso(deadline)},
    )


def _admit(url: str, ctx: ssl.SSLContext, pod: dict[str, Any]) -> dict[str, Any]:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-" + pod["metadata"]["name"],
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod["metadata"]["name"],
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": pod,
        },
    }
    req = urllib.request.Request(
        url + "/mutate",
        data=json.dumps(review).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        return dict(json.loads(resp.read())["response"])


def test_killed_greencpn_gates_nothing_new_and_every_pod_released_by_its_release_by(
    kube: tuple[FakePodsApi, Path],
    tls_cert: tuple[Path, Path],
    tmp_path: Path,
    capsys: Any,
) -> None:
    api, token = kube
    t0 = now_s()
    # a, b: planned 30 min ahead, latest safe start in 20 s / 24 s; c: in no plan, 22 s;
    # later: planned, latest safe start in 1 h (must stay gated)
    for name, due in (*DUE_S.items(), ("later", 3600)):
        api.add(_pod_due(name, t0, due))
    heartbeat_s = 6
    cfg = write_fleet(
        tmp_path, _cluster(api, token, heartbeat_s), job_actuation="default_slack_h = 1"
    )
    planned = t0 + timedelta(minutes=30)
    plan = write_plan(
        tmp_path,
        cfg,
        t0,
        [
            ("ml/a", "p-green", planned),
            ("ml/b", "p-main", planned),
            ("ml/later", "p-main", planned),
        ],
    )
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "greencpn.cli", "apply", str(plan), "--slot", "0"]
        + ["--allow-actuation", "--state-dir", str(state)],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    until = time.monotonic() + 90
    while time.monotonic() < until and ("greencpn", "greencpn-controller") not in api.leases:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # greencpn is dead from here on
    proc.wait(timeout=10)
    killed_at = datetime.now(UTC)
    lease = api.leases.get(("greencpn", "greencpn-controller"))
    assert lease is not None, proc.stderr.read().decode() if proc.stderr else ""
    assert lease["spec"]["holderIdentity"] == "greencpn"
    assert lease["spec"]["leaseDurationSeconds"] == heartbeat_s
    # the lease is written after the cluster's pods were acted on: a, b, later carry their
    # latest safe start and the planned pool; c (no plan) keeps the gate, no mark yet
    assert killed_at < t0 + timedelta(seconds=min(DUE_S.values())), (
        f"greencpn apply took {(killed_at - t0).total_seconds():.1f} s to write its lease, "
        "past the first pod's latest safe start: raise DUE_S"
    )
    ann = {n: api.pods[("ml", n)]["metadata"].get("annotations", {}) for n in ("a", "b", "later")}
    assert ann["a"][RELEASE_BY] == iso(t0 + timedelta(seconds=DUE_S["a"]))
    assert ann["b"][RELEASE_BY] == iso(t0 + timedelta(seconds=DUE_S["b"]))
    assert ann["later"][RELEASE_BY] == iso(t0 + timedelta(seconds=3600))
    assert ann["a"]["greencpn.io/planned-nodes"] == "greencpn.io/pool=p-green"
    assert all(api.gated("ml", n) for n in ("a", "b", "c", "later"))

    # --- the webhook, reading the lease through the API (no cache), real TLS
    cert, key = tls_cert
    reader = KubernetesJobActuator(
        cluster="webhook", host=api.url, token_file=str(token), lease_namespace="greencpn"
    )
    clock = SystemClock()
    settings = WebhookSettings(
        default_slack_h=1, controller_alive=LeaseCheck(reader, clock, cache_s=0), clock=clock
    )
    srv = make_server("127.0.0.1", 0, str(cert), str(key), settings)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{srv.server_address[1]}"
    ctx = ssl.create_default_context(cafile=str(cert))
    expires = datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))
    expires += timedelta(seconds=heartbeat_s)
    try:
        if datetime.now(UTC) < expires - timedelta(seconds=1):
            r = _admit(url, ctx, make_pod("ml", "fresh", gated=False))
            patch = json.loads(base64.b64decode(r["patch"]))
            assert patch[0] == {
                "op": "add",
                "path": "/spec/schedulingGates",
                "value": [{"name": GATE}],
            }
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)
        r = _admit(url, ctx, make_pod("ml", "after-death", gated=False))
        assert r["allowed"] is True and "patch" not in r  # not gated: nobody would release it
    finally:
        srv.shutdown()
        srv.server_close()

    # --- the CronJob: greencpn jobs release-expired every 0.5 s, no state dir
    # each run's (start, end): a pod must be released by the first run that starts after its
    # release-by — an outcome of the runs, not of how fast a loaded machine makes them
    # (CI at 718bdf8 failed here: the run releasing the last pod started just before its
    # release-by, so no run started after it)
    capsys.readouterr()
    runs: list[tuple[datetime, datetime]] = []
    stop = time.monotonic() + 120
    while time.monotonic() < stop and any(api.gated("ml", n) for n in DUE_S):
        started = datetime.now(UTC)
        assert main(["jobs", "release-expired", "--config", str(cfg)]) == 0
        runs.append((started, datetime.now(UTC)))
        time.sleep(0.5)
    out = capsys.readouterr().out
    due = {n: t0 + timedelta(seconds=s) for n, s in DUE_S.items()}
    for name, by in due.items():
        at = api.released_at("ml", name)
        assert at is not None, (name, out)
        # released by the first run that starts after its release-by at the latest; a run
        # that started just before it may already see it passed (then no later run exists,
        # because nothing was left gated) — then that run, the last, released it
        after = [end for start, end in runs if start >= by]
        bound = after[0] if after else runs[-1][1]
        assert by <= at <= bound, (name, at, by, bound, after)
        assert f"failsafe_release k1           ml/{name}  — release-by {iso(by)} passed" in out
    assert killed_at < min(api.released_at("ml", n) for n in due)  # type: ignore[type-var]
    # released onto the planned pool; the other gate stays; "later" is still gated
    aff = api.pods[("ml", "a")]["spec"]["affinity"]["nodeAffinity"]
    terms = aff["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {"matchExpressions": [{"key": "greencpn.io/pool", "operator": "In", "values": ["p-green"]}]}
    ]
    assert api.pods[("ml", "c")]["spec"]["schedulingGates"] == [{"name": "other.io/x"}]
    assert api.gated("ml", "later")
    # the standalone command as a CronJob runs it (a fresh process): nothing more to release
    run = subprocess.run(
        [sys.executable, "-m", "greencpn.cli", "jobs", "release-expired", "--config", str(cfg)],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "nothing to release" in run.stdout
    assert api.gated("ml", "later")


def test_webhook_fails_open_when_the_lease_cannot_be_read(kube: tuple[FakePodsApi, Path]) -> None:
    api, token = kube
    t = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    clock = SimClock(t)
    good = KubernetesJobActuator(
        cluster="k", host=api.url, token_file=str(token), heartbeat_s=60, lease_namespace="g"
    )
    check = LeaseCheck(good, clock, cache_s=0)
    settings = WebhookSettings(controller_alive=check, clock=clock)
    pod = make_pod("ml", "p", gated=False)
    ops, why = gate_patch(pod, settings)
    assert ops == [] and why == "not gated: greencpn is not running (no heartbeat lease)"
    good.heartbeat(t)  # the renewal (merge PATCH) finds none (404): created (POST)
    assert gate_patch(pod, settings)[1] == "gated, release-by 2026-12-02T12:00:00Z"
    clock.set(t + timedelta(seconds=30))
    good.heartbeat(clock.now())
    assert [r[0] for r in api.requests if "/leases" in r[1] and r[0] != "GET"] == [
        "PATCH",
        "POST",
        "PATCH",
    ]
    clock.set(t + timedelta(seconds=89))
    assert gate_patch(pod, settings)[0] != []  # renewed at +30 s for 60 s: fresh until +90 s
    clock.set(t + timedelta(seconds=90))
    assert gate_patch(pod, settings)[1] == (
        "not gated: greencpn is not running (heartbeat lease expired at 2026-12-01T12:01:30Z)"
    )
    # a reader the API refuses (no token: 401) never gates
    bad = KubernetesJobActuator(cluster="k", host=api.url, lease_namespace="g")
    ops, why = gate_patch(pod, WebhookSettings(controller_alive=LeaseCheck(bad, clock, 0)))
    assert ops == [] and "heartbeat lease unreadable" in why and "401" in why
