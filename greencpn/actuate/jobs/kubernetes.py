"""Kubernetes job actuator: pods wait behind a greencpn **scheduling gate** until their start.

Pods are created with ``spec.schedulingGates: [{name: "greencpn.io/planned-start"}]`` (stable
since Kubernetes 1.30) — by the user's manifests or by greencpn's mutating admission webhook
(:mod:`greencpn.actuate.jobs.webhook`). The scheduler ignores a gated pod, so it stays
``Pending`` until greencpn removes the gate. Kubernetes has no begin time, so greencpn works in
hold mode here: the release at the latest safe start is scheduled in the ledger and re-checked
at every step, and pods not in any plan are released at theirs.

* pending jobs: ``GET /api/v1/pods?fieldSelector=status.phase=Pending`` (or one namespace);
  pods already bound to a node are skipped. Job id ``namespace/name``; GPUs = the containers'
  ``nvidia.com/gpu`` requests (else limits); time limit = ``spec.activeDeadlineSeconds``;
  deadline = annotation ``greencpn.io/deadline`` (UTC ISO-8601); account = namespace, user =
  label ``greencpn.io/user``, qos = ``status.qosClass`` (for the exclusion rules).
* steer: ``PATCH`` (merge patch) the annotation ``greencpn.io/planned-nodes`` with the pool's
  node labels (``k=v,k2=v2``); nothing of the spec changes yet.
* release: one ``PATCH`` (JSON patch) that ``test``\\ s the gate is still at its index, adds a
  required node affinity for the planned labels (when steered) and ``remove``\\ s the gate — the
  pod is then scheduled onto the planned pool.
* hold: a gated pod is already held; a gate cannot be added to an existing pod (the API
  forbids it), so holding an ungated pod is a :class:`JobActuatorPermanentError`.
* undo (``restore``): ``held`` → the gate is removed (the pod runs as without greencpn);
  ``required_nodes`` → the annotation is put back.

**Fail-safe when greencpn is dead** (Kubernetes has no begin time that releases a pod by itself):

* every gated pod carries the annotation ``greencpn.io/release-by`` (UTC ISO-8601): the webhook
  writes it at creation (the latest safe start of a pod in no plan yet), and a hold writes the
  pod's latest safe start (:meth:`KubernetesJobActuator.hold_until`). Whoever removes the gate by
  then keeps the deadline — greencpn's step, or ``greencpn jobs release-expired`` run as a
  CronJob (:mod:`greencpn.actuate.jobs.failsafe`), which needs no state and no controller;
* while acting, every step renews a ``coordination.k8s.io/v1`` **Lease**
  (``greencpn-controller`` in ``lease_namespace``, :meth:`KubernetesJobActuator.heartbeat`);
  the webhook gates new pods only while that lease is fresh, so a dead greencpn stops adding
  gates that nobody would remove before their ``release-by``.

HTTP errors: 401/403 and other 4xx → permanent (404 → :class:`JobNotFoundError`; 409/422 on a
release → the pod changed meanwhile, temporary); 429, 5xx and connection faults → temporary.
Tested against a fake API server on 127.0.0.1 (tests/actuate/jobs), not a real cluster.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from greencpn.actuate.jobs.base import (
    HELD,
    NODES,
    JobActuatorPermanentError,
    JobActuatorTemporaryError,
    JobChange,
    JobNotFoundError,
    JobNotPendingError,
    PendingJob,
    SteerMode,
    SteerTarget,
)
from greencpn.actuate.ledger import _dt, _iso

GATE = "greencpn.io/planned-start"
PLANNED_NODES = "greencpn.io/planned-nodes"
DEADLINE = "greencpn.io/deadline"
RELEASE_BY = "greencpn.io/release-by"
LEASE_NAME = "greencpn-controller"
LEASE_HOLDER = "greencpn"
USER_LABEL = "greencpn.io/user"
GPU_RESOURCE = "nvidia.com/gpu"


def _gpus(pod: Mapping[str, Any]) -> int:
    total = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        value = (res.get("requests") or {}).get(GPU_RESOURCE) or (res.get("limits") or {}).get(
            GPU_RESOURCE
        )
        if value is not None:
            total += int(str(value))
    return total


def parse_pod(pod: Mapping[str, Any], cluster: str, gate: str = GATE) -> PendingJob:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    ann = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    gates = [g.get("name") for g in spec.get("schedulingGates") or []]
    phase = str(status.get("phase") or "Pending")
    limit = spec.get("activeDeadlineSeconds")
    created = meta.get("creationTimestamp")
    deadline = ann.get(DEADLINE)
    release_by = ann.get(RELEASE_BY)
    return PendingJob(
        id=f"{meta.get('namespace', 'default')}/{meta.get('name')}",
        cluster=cluster,
        state=phase,
        pending=phase == "Pending" and not spec.get("nodeName"),
        gpus=_gpus(pod),
        time_limit_s=None if limit is None else float(limit),
        submit_at=_dt(created) if created else None,
        begin_at=None,
        deadline=_dt(deadline) if deadline else None,
        held=gate in gates,
        gated=gate in gates,
        partition="",
        features="",
        required_nodes=str(ann.get(PLANNED_NODES) or ""),
        user=str(labels.get(USER_LABEL) or ""),
        account=str(meta.get("namespace") or ""),
        qos=str(status.get("qosClass") or ""),
        extra={
            "gates": gates,
            "resource_version": meta.get("resourceVersion"),
            "release_by": _dt(release_by) if release_by else None,
            "node_list": str(spec.get("nodeName") or ""),
            "started_at": _dt(status["startTime"]) if status.get("startTime") else None,
        },
    )


def micro_time(dt: datetime) -> str:
    """A Kubernetes ``MicroTime`` (``2026-12-01T12:00:00.000000Z``)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_fresh(lease: Mapping[str, Any] | None, now: datetime) -> tuple[bool, str]:
    """Is greencpn's heartbeat lease current at ``now``? (and why not)."""
    if not lease:
        return False, "no heartbeat lease"
    spec = lease.get("spec") or {}
    renew = spec.get("renewTime")
    duration = spec.get("leaseDurationSeconds")
    if not renew or duration is None:
        return False, "heartbeat lease has no renewTime / leaseDurationSeconds"
    try:
        renewed = _dt(str(renew))
        if renewed is None:
            raise ValueError(renew)
        expires = renewed + timedelta(seconds=float(duration))
    except (TypeError, ValueError):
        return False, f"heartbeat lease renewTime {renew!r} unreadable"
    if now >= expires:
        return False, f"heartbeat lease expired at {_iso(expires)}"
    return True, f"heartbeat lease valid until {_iso(expires)}"


def affinity_for(labels: str) -> dict[str, Any]:
    """A required node affinity for ``k=v,k2=v2`` (every label must match)."""
    exprs = []
    for item in labels.split(","):
        key, _, value = item.partition("=")
        exprs.append({"key": key.strip(), "operator": "In", "values": [value.strip()]})
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": exprs}]
            }
        }
    }


class KubernetesJobActuator:
    name = "kubernetes"
    supports_begin_time = False

    def __init__(
        self,
        *,
        cluster: str,
        host: str,
        token_file: str | None = None,
        ca_file: str | None = None,
        insecure_skip_tls_verify: bool = False,
        namespace: str | None = None,
        gate: str = GATE,
        timeout_s: float = 10.0,
        lease_namespace: str = "default",
        heartbeat_s: float = 7200.0,
    ) -> None:
        self.cluster = cluster
        self.lease_namespace = lease_namespace
        self.heartbeat_s = heartbeat_s
        self.host = host.rstrip("/")
        self.token_file = token_file
        self.namespace = namespace
        self.gate = gate
        self.timeout_s = timeout_s
        self._ssl: ssl.SSLContext | None = None
        if self.host.startswith("https"):
            self._ssl = ssl.create_default_context(cafile=ca_file)
            if insecure_skip_tls_verify:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE

    # ------------------------------------------------------------------ HTTP
    def _request(
        self, method: str, path: str, body: object = None, content_type: str | None = None
    ) -> Any:
        headers = {"Accept": "application/json"}
        if self.token_file:
            with open(self.token_file) as f:
                headers["Authorization"] = f"Bearer {f.read().strip()}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type or "application/json"
        req = urllib.request.Request(self.host + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=self._ssl) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read() or b"{}").get("message", "")
            except (json.JSONDecodeError, AttributeError):
                message = ""
            what = f"kubernetes {method} {path}: {exc.code} {message or exc.reason}"
            if exc.code == 404:
                raise JobNotFoundError(what) from None
            if exc.code in (401, 403):
                raise JobActuatorPermanentError(
                    what + " — check the token and RBAC (pods: list, get, patch)"
                ) from None
            if exc.code in (409, 422) and method == "PATCH":
                raise JobActuatorTemporaryError(what + " (the pod changed meanwhile)") from None
            if exc.code == 429 or exc.code >= 500:
                raise JobActuatorTemporaryError(what) from None
            raise JobActuatorPermanentError(what) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            raise JobActuatorTemporaryError(
                f"kubernetes API {self.host} unreachable: {exc}"
            ) from None

    @staticmethod
    def _split(job_id: str) -> tuple[str, str]:
        ns, sep, name = job_id.partition("/")
        if not sep or not ns or not name:
            raise JobNotFoundError(f"{job_id!r} is not namespace/name")
        return ns, name

    def _pod_path(self, job_id: str) -> str:
        ns, name = self._split(job_id)
        return f"/api/v1/namespaces/{urllib.parse.quote(ns)}/pods/{urllib.parse.quote(name)}"

    # ------------------------------------------------------------------ interface
    def _pods(self, phase: str) -> list[PendingJob]:
        base = f"/api/v1/namespaces/{self.namespace}/pods" if self.namespace else "/api/v1/pods"
        doc = self._request(
            "GET", base + "?fieldSelector=" + urllib.parse.quote(f"status.phase={phase}")
        )
        return [parse_pod(p, self.cluster, self.gate) for p in doc.get("items") or []]

    def pending_jobs(self) -> list[PendingJob]:
        return [j for j in self._pods("Pending") if j.pending]

    def running_jobs(self) -> list[PendingJob]:
        """Running pods (``status.phase=Running``; node ``spec.nodeName``, start
        ``status.startTime``): the controller's observation of what holds GPUs. Read only."""
        return [j for j in self._pods("Running") if j.state == "Running"]

    def _raw(self, job_id: str) -> dict[str, Any]:
        return dict(self._request("GET", self._pod_path(job_id)))

    def read(self, job_id: str) -> PendingJob:
        return parse_pod(self._raw(job_id), self.cluster, self.gate)

    def _pending(self, job_id: str) -> tuple[dict[str, Any], PendingJob]:
        pod = self._raw(job_id)
        job = parse_pod(pod, self.cluster, self.gate)
        if not job.pending:
            raise JobNotPendingError(f"pod {job_id} is {job.state} (bound: not changed)")
        return pod, job

    def defer(self, job_id: str, begin_at: datetime) -> JobChange:
        raise JobActuatorPermanentError(
            "Kubernetes has no begin time: greencpn holds pods with a scheduling gate instead"
        )

    def hold(self, job_id: str) -> JobChange:
        _, job = self._pending(job_id)
        if job.gated:
            return JobChange(job_id, HELD, True, True, False, "gated since creation")
        raise JobActuatorPermanentError(
            f"pod {job_id} has no {self.gate} gate and gates cannot be added to an existing pod: "
            "create it with the gate (the greencpn webhook adds it)"
        )

    def release(self, job_id: str) -> JobChange:
        pod, job = self._pending(job_id)
        if not job.gated:
            return JobChange(job_id, HELD, False, False, False, "not gated")
        gates = (pod.get("spec") or {}).get("schedulingGates") or []
        idx = next(i for i, g in enumerate(gates) if g.get("name") == self.gate)
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": f"/spec/schedulingGates/{idx}/name", "value": self.gate}
        ]
        if job.required_nodes:
            ops.append(
                {"op": "add", "path": "/spec/affinity", "value": affinity_for(job.required_nodes)}
            )
        ops.append({"op": "remove", "path": f"/spec/schedulingGates/{idx}"})
        after = parse_pod(
            self._request("PATCH", self._pod_path(job_id), ops, "application/json-patch+json"),
            self.cluster,
            self.gate,
        )
        msg = (
            f"gate removed; node affinity {job.required_nodes}"
            if job.required_nodes
            else "gate removed"
        )
        return JobChange(job_id, HELD, True, after.held, after.held is not True, msg)

    def hold_until(self, job_id: str, release_by: datetime | None) -> JobChange:
        """Hold (the gate is there since creation) and write the pod's ``release-by``
        annotation = its latest safe start, so ``greencpn jobs release-expired`` can release it
        on time without greencpn (one merge patch, only when the value changes)."""
        _, job = self._pending(job_id)
        if not job.gated:
            return self.hold(job_id)  # the permanent error: no gate on an existing pod
        current = job.extra.get("release_by")
        if release_by is None or (
            isinstance(current, datetime) and abs((current - release_by).total_seconds()) < 1
        ):
            return JobChange(job_id, HELD, True, True, False, "gated since creation")
        patch = {"metadata": {"annotations": {RELEASE_BY: _iso(release_by)}}}
        after = parse_pod(
            self._request("PATCH", self._pod_path(job_id), patch, "application/merge-patch+json"),
            self.cluster,
            self.gate,
        )
        got = after.extra.get("release_by")
        msg = f"gated; release-by {_iso(got) if isinstance(got, datetime) else got}"
        return JobChange(job_id, HELD, True, after.held, False, msg)

    # ------------------------------------------------------------------ heartbeat lease
    def _lease_path(self, name: str | None = None) -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{urllib.parse.quote(self.lease_namespace)}"
        return base + "/leases" + (f"/{urllib.parse.quote(name)}" if name else "")

    def read_lease(self) -> dict[str, Any] | None:
        """greencpn's heartbeat lease (None when it does not exist)."""
        try:
            return dict(self._request("GET", self._lease_path(LEASE_NAME)))
        except JobNotFoundError:
            return None

    def heartbeat(self, now: datetime) -> dict[str, Any]:
        """Renew the heartbeat lease (create it the first time): the webhook gates new pods
        only while ``renewTime + leaseDurationSeconds`` is ahead."""
        spec = {
            "holderIdentity": LEASE_HOLDER,
            "leaseDurationSeconds": int(round(self.heartbeat_s)),
            "renewTime": micro_time(now),
        }
        try:
            return dict(
                self._request(
                    "PATCH",
                    self._lease_path(LEASE_NAME),
                    {"spec": spec},
                    "application/merge-patch+json",
                )
            )
        except JobNotFoundError:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": LEASE_NAME, "namespace": self.lease_namespace},
                "spec": {**spec, "acquireTime": micro_time(now)},
            }
            return dict(self._request("POST", self._lease_path(), body))

    def resign(self) -> None:
        """Delete the heartbeat lease (greencpn stopping): the webhook stops gating at once."""
        with contextlib.suppress(JobNotFoundError):
            self._request("DELETE", self._lease_path(LEASE_NAME))

    def _annotate(self, job_id: str, value: str | None) -> JobChange:
        _, job = self._pending(job_id)
        patch = {"metadata": {"annotations": {PLANNED_NODES: value}}}
        after = parse_pod(
            self._request("PATCH", self._pod_path(job_id), patch, "application/merge-patch+json"),
            self.cluster,
            self.gate,
        )
        return JobChange(
            job_id,
            NODES,
            job.required_nodes,
            after.required_nodes,
            job.required_nodes != after.required_nodes,
        )

    def steer(self, job_id: str, target: SteerTarget) -> list[JobChange]:
        if target.mode == SteerMode.NONE:
            return []
        if target.mode != SteerMode.NODES or not target.value:
            raise JobActuatorPermanentError(
                'kubernetes steers by node labels: steer = "nodes" with node_selector per pool'
            )
        return [self._annotate(job_id, target.value)]

    def restore(self, job_id: str, what: str, value: object) -> JobChange:
        if what == HELD:
            return self.release(job_id)  # the gate exists only for greencpn
        if what == NODES:
            return self._annotate(job_id, str(value) if value else None)
        raise ValueError(f"kubernetes pods have no {what!r} to restore")
