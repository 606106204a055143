"""``kubernetes`` hook: cordon and drain through the official ``kubernetes`` client.

* **drain** = cordon (``PATCH /api/v1/nodes/{node}`` with ``spec.unschedulable = true`` and the
  reason in the annotation ``greencpn.io/drain-reason``), then one **eviction**
  (``POST /api/v1/namespaces/{ns}/pods/{pod}/eviction``, a ``policy/v1`` ``Eviction``) for every
  pod on the node except DaemonSet pods, mirror (static) pods and finished pods. The API
  answers **429** when a PodDisruptionBudget forbids an eviction; the hook retries that pod up
  to ``eviction_attempts`` times, ``eviction_retry_interval_s`` apart, then reports it (a
  :class:`TemporaryError` that lists the blocked pods and carries what was done).
  Evicted pods terminate asynchronously: ``status().running_jobs`` counts the pods still on
  the node, so the caller waits for it to reach 0 before powering off.
* **resume** = uncordon (``spec.unschedulable = false``; the annotation is removed).
* **power_on / power_off** go to a nested hook (``power`` table: ``command`` or ``ipmi``).
* **status**: ``drained`` = ``spec.unschedulable``; ``running_jobs`` = pods that drain would
  evict; power from the nested hook, or from the ``Ready`` condition without one
  (``True`` → on, otherwise unknown).

Config keys (``kind = "kubernetes"``):

* ``kubeconfig`` (default ``~/.kube/config``, or the in-cluster service account when
  ``KUBERNETES_SERVICE_HOST`` is set), ``context`` — which cluster to talk to; or ``host``
  (API URL) with ``token_file`` and ``ca_file`` (``insecure_skip_tls_verify``, default false).
* ``node_names`` — table greencpn node → Kubernetes node name (default: the same name).
* ``evict_unmanaged`` (default false) — like ``kubectl drain`` without ``--force``, pods with
  no controller (they would not be recreated) are not evicted: the drain reports them as a
  :class:`PermanentError` for that node and they keep counting as running work.
* ``request_timeout_s`` (default 10), ``eviction_attempts`` (default 5),
  ``eviction_retry_interval_s`` (default 5), ``grace_period_s`` (default: the pod's own).
* ``power`` — nested hook table used for power_on / power_off (and power in status).

Tested against a small fake of the API on 127.0.0.1 (tests/actuate/nodes), **not** against a
real cluster.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from greencpn.actuate.base import Change, NodePower, NodePowerHook, NodeStatus
from greencpn.actuate.hooks._common import HookSettings, log, noop, raise_if_failed
from greencpn.errors import ConfigError, PermanentError, TemporaryError

DRAIN_REASON_ANNOTATION = "greencpn.io/drain-reason"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


def _api_error(exc: Exception, what: str) -> Exception:
    """Map a client exception to TemporaryError / PermanentError."""
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", "") or type(exc).__name__
    if status in (401, 403):
        return PermanentError(
            f"kubernetes {what}: {status} {reason} — check the credentials "
            "and RBAC (nodes: get/patch; pods: list; pods/eviction: create)"
        )
    if status == 404:
        return PermanentError(f"kubernetes {what}: not found (404)")
    if status is None or status == 429 or status >= 500:
        return TemporaryError(f"kubernetes {what}: {status or ''} {reason}".replace("  ", " "))
    return PermanentError(f"kubernetes {what}: {status} {reason}")


def _has_controller(pod: Any) -> bool:
    return any(ref.controller for ref in (pod.metadata.owner_references or []))


def _evictable(pod: Any) -> bool:
    meta = pod.metadata
    if MIRROR_ANNOTATION in (meta.annotations or {}):
        return False
    if any(ref.kind == "DaemonSet" and ref.controller for ref in (meta.owner_references or [])):
        return False
    phase = pod.status.phase if pod.status else None
    return phase not in ("Succeeded", "Failed")


class KubernetesHook:
    """Cordons, evicts and uncordons through the Kubernetes API (see the module docstring)."""

    name = "kubernetes"

    def __init__(
        self,
        api: Any,
        *,
        node_names: Mapping[str, str] | None = None,
        request_timeout_s: float = 10.0,
        eviction_attempts: int = 5,
        eviction_retry_interval_s: float = 5.0,
        grace_period_s: int | None = None,
        evict_unmanaged: bool = False,
        power_hook: NodePowerHook | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api  # a kubernetes.client.CoreV1Api
        self.node_names = dict(node_names or {})
        self.request_timeout_s = request_timeout_s
        self.eviction_attempts = eviction_attempts
        self.eviction_retry_interval_s = eviction_retry_interval_s
        self.grace_period_s = grace_period_s
        self.evict_unmanaged = evict_unmanaged
        self.power_hook = power_hook
        self._sleep = sleep

    @classmethod
    def from_settings(cls, s: HookSettings) -> KubernetesHook:
        from greencpn.actuate.hooks import make_hook_from_mapping

        try:
            from kubernetes import client, config
        except ImportError:
            if s.static:  # checking a config: the client is only needed where apply runs
                client = config = None  # type: ignore[assignment]
            else:
                raise ConfigError(
                    "hook kind 'kubernetes' needs the kubernetes client",
                    source=s.source,
                    field="hook.kind",
                    fix="pip install 'greencpn[kubernetes]'",
                ) from None
        nested = s.get("power")
        power_hook = None
        if nested is not None:
            if not isinstance(nested, Mapping):
                raise s.error(
                    "power",
                    f"must be a hook table, got {nested!r}",
                    '[pools.hook.power] kind = "ipmi"',
                )
            power_hook = make_hook_from_mapping(nested, source=s.source, field_prefix="hook.power")
        host = s.str_("host")
        token_file = s.str_("token_file")
        ca_file = s.str_("ca_file")
        insecure = s.bool_("insecure_skip_tls_verify", False)
        kubeconfig = s.str_("kubeconfig")
        context = s.str_("context")
        timeout_s = s.float_("request_timeout_s", 10.0, minimum=0.001)
        grace = s.get("grace_period_s")
        if grace is not None and (
            isinstance(grace, bool) or not isinstance(grace, int) or grace < 0
        ):
            raise s.error(
                "grace_period_s",
                f"must be an integer >= 0, got {grace!r}",
                "write grace_period_s = 30",
            )
        attempts = s.int_("eviction_attempts", 5, minimum=1)
        interval = s.float_("eviction_retry_interval_s", 5.0)
        node_names = s.str_map("node_names")
        evict_unmanaged = s.bool_("evict_unmanaged", False)
        s.check_unknown()
        if s.static:  # keys checked; credentials are read where apply runs, not at config load
            return cls.__new__(cls)

        cfg = client.Configuration()
        try:
            if host:
                cfg.host = host
                if token_file:
                    with open(token_file, encoding="utf-8") as fh:
                        cfg.api_key = {"BearerToken": fh.read().strip()}
                    cfg.api_key_prefix = {"BearerToken": "Bearer"}
                cfg.ssl_ca_cert = ca_file
                cfg.verify_ssl = not insecure
            elif os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig:
                config.load_incluster_config(client_configuration=cfg)
            else:
                config.load_kube_config(
                    config_file=kubeconfig, context=context, client_configuration=cfg
                )
        except (OSError, config.ConfigException) as exc:
            raise ConfigError(
                f"cannot load Kubernetes credentials: {exc}",
                source=s.source,
                field="hook.kubeconfig",
                fix="set kubeconfig (and context), or host + token_file",
            ) from None
        cfg.retries = 1
        api = client.CoreV1Api(client.ApiClient(cfg))
        return cls(
            api,
            node_names=node_names,
            request_timeout_s=timeout_s,
            eviction_attempts=attempts,
            eviction_retry_interval_s=interval,
            grace_period_s=grace,
            evict_unmanaged=evict_unmanaged,
            power_hook=power_hook,
        )

    # ----------------------------------------------------------------------------------------

    def _k8s(self, node: str) -> str:
        return self.node_names.get(node, node)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _request_timeout=self.request_timeout_s, **kwargs)
        except Exception as exc:  # ApiException, urllib3 errors, timeouts
            if isinstance(exc, TemporaryError | PermanentError):
                raise
            raise _api_error(exc, what) from exc

    def _pods(self, node: str) -> list[Any]:
        name = self._k8s(node)
        pods = self._call(
            f"list pods on {name}",
            self.api.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={name}",
        )
        return [p for p in pods.items if _evictable(p)]

    def _read_node(self, node: str) -> Any:
        name = self._k8s(node)
        return self._call(f"read node {name}", self.api.read_node, name)

    def status(self, nodes: Sequence[str]) -> list[NodeStatus]:
        nodes = list(nodes)
        power: dict[str, NodeStatus] = {}
        if self.power_hook is not None and nodes:
            power = {s.name: s for s in self.power_hook.status(nodes)}
        out = []
        for n in nodes:
            try:
                obj = self._read_node(n)
                pods = self._pods(n)
            except (TemporaryError, PermanentError) as exc:
                p = power.get(n)
                out.append(NodeStatus(n, p.power if p else NodePower.UNKNOWN, detail=str(exc)))
                continue
            ready = (
                next(
                    (c.status for c in (obj.status.conditions or []) if c.type == "Ready"),
                    "Unknown",
                )
                if obj.status
                else "Unknown"
            )
            if n in power:
                pw = power[n].power
            else:
                pw = NodePower.ON if ready == "True" else NodePower.UNKNOWN
            drained = bool(obj.spec.unschedulable) if obj.spec else False
            out.append(
                NodeStatus(
                    n,
                    pw,
                    drained,
                    len(pods),
                    detail=f"Ready={ready} unschedulable={drained} pods={len(pods)}",
                    extra={
                        "pods": [f"{p.metadata.namespace}/{p.metadata.name}" for p in pods],
                        "reason": (
                            (obj.metadata.annotations or {}).get(DRAIN_REASON_ANNOTATION, "")
                            if obj.metadata
                            else ""
                        ),
                    },
                )
            )
        return out

    def _evict(self, node: str, pod: Any) -> Change:
        """Evict one pod, retrying while a PodDisruptionBudget answers 429."""
        from kubernetes import client

        ns, name = pod.metadata.namespace, pod.metadata.name
        body = client.V1Eviction(
            api_version="policy/v1",
            kind="Eviction",
            metadata=client.V1ObjectMeta(name=name, namespace=ns),
            delete_options=(
                client.V1DeleteOptions(grace_period_seconds=self.grace_period_s)
                if self.grace_period_s is not None
                else None
            ),
        )
        for attempt in range(1, self.eviction_attempts + 1):
            try:
                self.api.create_namespaced_pod_eviction(
                    name, ns, body, _request_timeout=self.request_timeout_s
                )
                return Change(
                    node,
                    "evicted_pod",
                    f"{ns}/{name}",
                    None,
                    True,
                    f"eviction created (attempt {attempt})",
                )
            except Exception as exc:
                status = getattr(exc, "status", None)
                if status == 404:
                    return noop(node, "evicted_pod", f"{ns}/{name}", "pod already gone")
                if status != 429:
                    raise _api_error(exc, f"evict {ns}/{name}") from exc
                log.info(
                    "kubernetes: eviction of %s/%s refused (429, disruption budget), attempt %d/%d",
                    ns,
                    name,
                    attempt,
                    self.eviction_attempts,
                )
                if attempt < self.eviction_attempts:
                    self._sleep(self.eviction_retry_interval_s)
        raise TemporaryError(
            f"eviction of {ns}/{name} still refused by its PodDisruptionBudget after "
            f"{self.eviction_attempts} attempts",
            retry_after_s=self.eviction_retry_interval_s,
        )

    def _cordon(self, node: str, unschedulable: bool, reason: str | None) -> None:
        name = self._k8s(node)
        body = {
            "spec": {"unschedulable": unschedulable},
            "metadata": {"annotations": {DRAIN_REASON_ANNOTATION: reason}},
        }
        # JSON merge patch (RFC 7386): a null annotation value removes the annotation
        self._call(
            f"{'cordon' if unschedulable else 'uncordon'} {name}",
            self.api.patch_node,
            name,
            body,
            _content_type="application/merge-patch+json",
        )

    def drain(self, nodes: Sequence[str], reason: str) -> list[Change]:
        changes: list[Change] = []
        failures: dict[str, Exception] = {}
        for n in nodes:
            try:
                obj = self._read_node(n)
                if obj.spec and obj.spec.unschedulable:
                    changes.append(noop(n, "drained", True, "already cordoned"))
                else:
                    self._cordon(n, True, reason)
                    changes.append(Change(n, "drained", False, True, True, f"cordoned: {reason}"))
                blocked: list[str] = []
                unmanaged: list[str] = []
                for pod in self._pods(n):
                    if not self.evict_unmanaged and not _has_controller(pod):
                        unmanaged.append(f"{pod.metadata.namespace}/{pod.metadata.name}")
                        continue
                    try:
                        changes.append(self._evict(n, pod))
                    except TemporaryError as exc:
                        blocked.append(str(exc))
                if unmanaged:
                    failures[n] = PermanentError(
                        f"pods without a controller would not be recreated elsewhere: "
                        f"{', '.join(unmanaged)} — stop them yourself or set "
                        "evict_unmanaged = true"
                        + (f"; also: {'; '.join(blocked)}" if blocked else "")
                    )
                elif blocked:
                    failures[n] = TemporaryError("; ".join(blocked))
            except (TemporaryError, PermanentError) as exc:
                failures[n] = exc
        return raise_if_failed("kubernetes drain", changes, failures, nodes)

    def resume(self, nodes: Sequence[str]) -> list[Change]:
        changes: list[Change] = []
        failures: dict[str, Exception] = {}
        for n in nodes:
            try:
                obj = self._read_node(n)
                if not (obj.spec and obj.spec.unschedulable):
                    changes.append(noop(n, "drained", False, "not cordoned"))
                    continue
                self._cordon(n, False, None)
                changes.append(Change(n, "drained", True, False, True, "uncordoned"))
            except (TemporaryError, PermanentError) as exc:
                failures[n] = exc
        return raise_if_failed("kubernetes resume", changes, failures, nodes)

    def _power(self) -> NodePowerHook:
        if self.power_hook is None:
            raise PermanentError(
                "kubernetes hook cannot switch power: add a nested [pools.hook.power] table "
                '(kind = "ipmi" or "command")'
            )
        return self.power_hook

    def power_on(self, nodes: Sequence[str]) -> list[Change]:
        return self._power().power_on(nodes)

    def power_off(self, nodes: Sequence[str]) -> list[Change]:
        return self._power().power_off(nodes)


def build(s: HookSettings) -> KubernetesHook:
    return KubernetesHook.from_settings(s)
