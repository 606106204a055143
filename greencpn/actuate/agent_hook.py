"""``kind = "agent"``: a NodePowerHook that talks to greencpn node agents.

Each node runs ``greencpn agent``; the controller holds one key per node and reaches the agents
over HTTP(S) with signed requests (:class:`greencpn.agent.client.AgentClient`). Requests to
several nodes run in parallel (``max_parallel``). A node whose agent fails does not stop the
others: the hook raises one typed error naming every failed node and carrying the changes that
did happen (:func:`greencpn.actuate.hooks._common.raise_if_failed`).

The hook also hands ``greencpn apply`` each node's GPUs: :meth:`AgentNodeHook.gpu_backend`
returns an :class:`AgentGpuBackend`, so a pool's GPU power caps are read and set through the
agents (``/v1/status``, ``/v1/gpu/power-limit``).

An agent answers a power-off with 202 and decides after its settle time (work that appeared
aborts it): the hook is a :class:`~greencpn.actuate.base.DeferredPowerOff`, and
:meth:`AgentNodeHook.power_off_results` reads each agent's ``last_power_off`` so that
``greencpn apply`` records a node as off only once the power command ran.

An agent cannot switch on the machine it runs on, so ``power_on`` (and the power state of
nodes whose agent does not answer) goes to a nested hook (``[pools.hook.power]``, e.g. ``ipmi``
or ``wol``) when one is configured.

Pool configuration (``[pools.hook]``)::

    kind = "agent"
    url = "https://{node}.cluster:9123"       # {node} is replaced by the node name
    key_dir = "/etc/greencpn/agent-keys"      # one key per node: <key_dir>/<node>.key (0600)
    # optional: urls / key_files tables per node, tls_ca, tls_cert, tls_key,
    # connect_timeout_s (2), read_timeout_s (10), retries (2), max_parallel (16)
    [pools.hook.power]                        # optional, for power_on
    kind = "wol"
    ...

Importing this module registers the ``agent`` kind with :func:`greencpn.actuate.hooks.make_hook`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from greencpn.actuate.base import (
    Change,
    GpuBackend,
    GpuInfo,
    NodePower,
    NodePowerHook,
    NodeStatus,
    PowerOffResult,
    PowerOffState,
)
from greencpn.agent.client import AgentClient
from greencpn.errors import ConfigError, GreencpnError, PermanentError, TemporaryError

log = logging.getLogger(__name__)

T = TypeVar("T")

_POWER_STATES = {"on": NodePower.ON, "shutting_down": NodePower.SHUTTING_DOWN}


class AgentNodeHook:
    """Drain, resume, power off and read status of nodes through their agents.

    Args:
        client_for: returns the :class:`AgentClient` of a node (called once per node, cached);
            may raise :class:`~greencpn.errors.ConfigError` (e.g. no key for that node).
        power_hook: powers nodes on (and tells the power of nodes whose agent is silent).
        max_parallel: at most this many agents are asked at once.
    """

    name = "agent"

    def __init__(
        self,
        client_for: Callable[[str], AgentClient],
        *,
        power_hook: NodePowerHook | None = None,
        max_parallel: int = 16,
    ) -> None:
        self._client_for = client_for
        self._clients: dict[str, AgentClient] = {}
        self._lock = threading.Lock()
        self.power_hook = power_hook
        self.max_parallel = max(1, max_parallel)

    # ------------------------------------------------------------------------- construction

    @classmethod
    def from_endpoints(
        cls,
        endpoints: Mapping[str, tuple[str, bytes]],
        *,
        power_hook: NodePowerHook | None = None,
        max_parallel: int = 16,
        **client_options: Any,
    ) -> AgentNodeHook:
        """A hook over fixed nodes: ``{node: (url, key)}``; ``client_options`` go to AgentClient."""

        def client_for(node: str) -> AgentClient:
            if node not in endpoints:
                raise ConfigError(
                    f"no agent configured for node {node!r}",
                    field="hook.urls",
                    fix="add the node's URL and key",
                )
            url, key = endpoints[node]
            return AgentClient(url, key, **client_options)

        return cls(client_for, power_hook=power_hook, max_parallel=max_parallel)

    @classmethod
    def from_settings(cls, s: Any) -> AgentNodeHook:
        """Build from a pool's ``[pools.hook]`` table (a ``HookSettings``); see the module doc."""
        from greencpn.actuate.hooks import make_hook_from_mapping
        from greencpn.agent.auth import load_key

        url_template = s.str_("url")
        urls = s.str_map("urls")
        key_dir = s.str_("key_dir")
        key_files = s.str_map("key_files")
        tls_ca, tls_cert, tls_key = s.str_("tls_ca"), s.str_("tls_cert"), s.str_("tls_key")
        options = {
            "connect_timeout_s": s.float_("connect_timeout_s", 2.0, minimum=0.001),
            "read_timeout_s": s.float_("read_timeout_s", 10.0, minimum=0.001),
            "retries": s.int_("retries", 2),
            "tls_ca": tls_ca,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
        }
        max_parallel = s.int_("max_parallel", 16, minimum=1)
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
        s.check_unknown()
        if url_template is None and not urls:
            raise ConfigError(
                "hook kind 'agent' needs 'url' (a template with {node}) or 'urls'",
                source=s.source,
                field="hook.url",
                fix='add url = "http://{node}:9123"',
            )
        if url_template is not None and "{node}" not in url_template:
            raise ConfigError(
                f"url {url_template!r} has no {{node}} placeholder",
                source=s.source,
                field="hook.url",
                fix='write url = "http://{node}:9123" or list nodes in [pools.hook.urls]',
            )
        if key_dir is None and not key_files:
            raise ConfigError(
                "hook kind 'agent' needs 'key_dir' or 'key_files'",
                source=s.source,
                field="hook.key_dir",
                fix='add key_dir = "/etc/greencpn/agent-keys" holding <node>.key files',
            )
        source = s.source

        def client_for(node: str) -> AgentClient:
            url = urls.get(node) or (url_template.replace("{node}", node) if url_template else None)
            if url is None:
                raise ConfigError(
                    f"no agent URL for node {node!r}",
                    source=source,
                    field="hook.urls",
                    fix=f'add {node} = "http://..." to [pools.hook.urls]',
                )
            key_path = key_files.get(node) or str(Path(key_dir or ".", f"{node}.key"))
            return AgentClient(url, load_key(key_path), **options)

        return cls(client_for, power_hook=power_hook, max_parallel=max_parallel)

    # ------------------------------------------------------------------------------ plumbing

    def client(self, node: str) -> AgentClient:
        with self._lock:
            client = self._clients.get(node)
        if client is None:
            client = self._client_for(node)
            with self._lock:
                client = self._clients.setdefault(node, client)
        return client

    def _each(
        self, nodes: Sequence[str], fn: Callable[[str], T]
    ) -> tuple[dict[str, T], dict[str, Exception]]:
        results: dict[str, T] = {}
        failures: dict[str, Exception] = {}

        def run(node: str) -> None:
            try:
                results[node] = fn(node)
            except GreencpnError as exc:
                failures[node] = exc

        if len(nodes) <= 1:
            for node in nodes:
                run(node)
        else:
            with ThreadPoolExecutor(
                max_workers=min(self.max_parallel, len(nodes)), thread_name_prefix="agent-hook"
            ) as pool:
                list(pool.map(run, nodes))
        return results, failures

    def _act(
        self, op: str, nodes: Sequence[str], fn: Callable[[str], list[Change]]
    ) -> list[Change]:
        from greencpn.actuate.hooks._common import raise_if_failed

        results, failures = self._each(nodes, fn)
        changes = [c for node in nodes for c in results.get(node, [])]
        return raise_if_failed(op, changes, failures, nodes)

    @staticmethod
    def _retarget(node: str, changes: list[Change]) -> list[Change]:
        """Name the controller's node in each change (GPU changes become ``node/gpuN``)."""
        out = []
        for c in changes:
            target = node if c.what in ("drained", "power") else f"{node}/{c.target}"
            out.append(Change(target, c.what, c.before, c.after, c.changed, c.message))
        return out

    # ------------------------------------------------------------------------ NodePowerHook

    def drain(self, nodes: Sequence[str], reason: str) -> list[Change]:
        return self._act(
            "drain", nodes, lambda n: self._retarget(n, self.client(n).power("drain", reason[:200]))
        )

    def resume(self, nodes: Sequence[str]) -> list[Change]:
        return self._act(
            "resume", nodes, lambda n: self._retarget(n, self.client(n).power("resume"))
        )

    def power_off(self, nodes: Sequence[str]) -> list[Change]:
        """Ask each agent to power its node off; agents refuse (409) nodes with running work."""
        return self._act(
            "power off",
            nodes,
            lambda n: self._retarget(n, self.client(n).power("off", "greencpn plan")),
        )

    def power_off_results(self, nodes: Sequence[str]) -> list[PowerOffResult]:
        """Where each node's power-off stands, from its agent's ``last_power_off`` and power.

        The agent answers ``off`` with 202 and re-checks the running work after its settle
        time; only ``outcome == "command_ran"`` means the node is going down. ``aborted`` /
        ``failed`` (work appeared, the command failed) mean it stays on (and drained). An agent
        that no longer answers after accepting counts as done when the nested power hook sees
        the node off, or when there is no nested hook (the machine is going down); otherwise
        it is still pending.
        """
        results, failures = self._each(nodes, lambda n: self.client(n).status())
        silent = [n for n in nodes if n in failures]
        seen_off: set[str] = set()
        if silent and self.power_hook is not None:
            try:
                seen_off = {
                    st.name for st in self.power_hook.status(silent) if st.power == NodePower.OFF
                }
            except GreencpnError as exc:
                log.warning("power hook status failed: %s", exc)
        out = []
        for node in nodes:
            if node in failures:
                failure = failures[node]
                if node in seen_off:
                    out.append(PowerOffResult(node, PowerOffState.DONE, "nested hook: off"))
                elif self.power_hook is None and isinstance(failure, TemporaryError):
                    out.append(
                        PowerOffResult(
                            node, PowerOffState.DONE, f"agent silent after accepting: {failure}"
                        )
                    )
                else:
                    out.append(PowerOffResult(node, PowerOffState.PENDING, str(failure)))
                continue
            out.append(power_off_result(node, results[node]))
        return out

    def power_on(self, nodes: Sequence[str]) -> list[Change]:
        """Nodes whose agent answers are already on; the others go to the nested power hook."""
        statuses = {s.name: s for s in self.status(nodes)}
        already = [n for n in nodes if statuses[n].power == NodePower.ON]
        rest = [n for n in nodes if n not in already]
        changes = [
            Change(n, "power", "on", "on", changed=False, message="agent answers: already on")
            for n in already
        ]
        if not rest:
            return changes
        if self.power_hook is None:
            from greencpn.actuate.hooks._common import raise_if_failed

            err = PermanentError(
                "an agent cannot power on its own node — add a [pools.hook.power] "
                'table (kind = "ipmi" or "wol")'
            )
            return raise_if_failed("power on", changes, dict.fromkeys(rest, err), nodes)
        return changes + self.power_hook.power_on(rest)

    def status(self, nodes: Sequence[str]) -> list[NodeStatus]:
        """Each node's agent status; silent agents fall back to the nested power hook's view."""
        results, failures = self._each(nodes, lambda n: self.client(n).status())
        silent = [n for n in nodes if n in failures]
        fallback: dict[str, NodeStatus] = {}
        if silent and self.power_hook is not None:
            try:
                fallback = {s.name: s for s in self.power_hook.status(silent)}
            except GreencpnError as exc:
                log.warning("power hook status failed: %s", exc)
        out = []
        for node in nodes:
            if node in results:
                out.append(status_from_agent(node, results[node]))
                continue
            failure = failures[node]
            kind = "unreachable" if isinstance(failure, TemporaryError) else "refused"
            detail = f"agent {kind}: {failure}"
            if node in fallback:
                fb = fallback[node]
                out.append(
                    NodeStatus(
                        node,
                        fb.power,
                        drained=fb.drained,
                        running_jobs=fb.running_jobs,
                        detail=f"{detail}; power from the nested hook",
                    )
                )
            else:
                out.append(NodeStatus(node, NodePower.UNKNOWN, detail=detail))
        return out

    # ------------------------------------------------------------------------------- GPUs

    def gpu_backend(self, node: str) -> GpuBackend:
        """The GPUs of ``node`` as a :class:`~greencpn.actuate.base.GpuBackend` over its agent.

        ``greencpn apply`` sets a pool's caps through this when the pool's hook offers it. The
        node's client is made on first use, so a node without a key fails in the call (as a
        typed error), not here.
        """
        return AgentGpuBackend(node, lambda: self.client(node))

    def set_gpu_power_limit_w(
        self, nodes: Sequence[str], power_limit_w: float, index: int | str = "all"
    ) -> list[Change]:
        """Set GPU power limits (W) on each node through its agent (read before write)."""
        return self._act(
            "set GPU power limit",
            nodes,
            lambda n: self._retarget(n, self.client(n).set_power_limit_w(power_limit_w, index)),
        )


class AgentGpuBackend:
    """A :class:`~greencpn.actuate.base.GpuBackend` whose GPUs sit behind a node agent.

    Reads come from ``GET /v1/status`` (fresh on every call: read-before-write must see the
    device, not a cache); writes go to ``POST /v1/gpu/power-limit``, ``/v1/gpu/clocks`` and
    ``/v1/gpu/restore-defaults``, where the agent itself reads before it writes and reports
    ``changed = false`` when a GPU is already at the value. Errors keep the client's types:
    :class:`~greencpn.agent.client.AgentUnavailableError` (a TemporaryError) when the agent
    cannot be reached, :class:`~greencpn.agent.client.AgentAuthError` and
    :class:`~greencpn.agent.client.AgentRequestError` (PermanentErrors) for a refused key or a
    refused request (out-of-range value, unknown GPU, no GPU backend on the node).

    Args:
        node: the node's name (used in change targets: ``node/gpuN``, and in messages).
        client: returns the node's :class:`AgentClient` (called per operation).
    """

    def __init__(self, node: str, client: Callable[[], AgentClient]) -> None:
        self.node = node
        self.name = f"agent:{node}"
        self._client = client

    def _status_gpus(self) -> list[dict[str, Any]]:
        data = self._client().status()
        if not isinstance(data, Mapping):
            raise PermanentError(f"{self.node}: agent status is not an object: {data!r}")
        if data.get("gpu_error"):
            raise TemporaryError(
                f"{self.node}: the agent cannot read its GPUs: {data['gpu_error']}"
            )
        gpus = data.get("gpus") or []
        if not isinstance(gpus, list):
            raise PermanentError(f"{self.node}: agent status 'gpus' is not a list: {gpus!r}")
        return gpus

    def _gpu(self, index: int) -> dict[str, Any]:
        for g in self._status_gpus():
            if int(g.get("index", -1)) == index:
                if "error" in g:
                    raise TemporaryError(f"{self.node}/gpu{index}: {g['error']}")
                return g
        raise PermanentError(f"{self.node}: the agent reports no GPU {index}")

    def _one(self, op: str, index: int, changes: list[Change]) -> Change:
        changes = AgentNodeHook._retarget(self.node, changes)
        if len(changes) != 1:
            raise PermanentError(
                f"{self.node}: agent answered {len(changes)} changes to {op} on GPU {index}"
            )
        return changes[0]

    def list_gpus(self) -> list[GpuInfo]:
        out = []
        for g in self._status_gpus():
            try:
                out.append(
                    GpuInfo(
                        index=int(g["index"]),
                        uuid=str(g.get("uuid", "")),
                        name=str(g.get("name", "")),
                        power_limit_min_w=float(g["power_limit_min_w"]),
                        power_limit_max_w=float(g["power_limit_max_w"]),
                        power_limit_default_w=float(g["power_limit_default_w"]),
                        power_limit_current_w=float(g["power_limit_w"]),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise PermanentError(
                    f"{self.node}: agent status has a malformed GPU entry {g!r} ({exc})"
                ) from None
        return out

    def set_power_limit_w(self, index: int, power_limit_w: float) -> Change:
        return self._one(
            "set power limit", index, self._client().set_power_limit_w(power_limit_w, index)
        )

    def lock_clocks_mhz(self, index: int, min_mhz: int, max_mhz: int) -> Change:
        return self._one(
            "lock clocks", index, self._client().lock_clocks_mhz(min_mhz, max_mhz, index)
        )

    def reset_clocks(self, index: int) -> Change:
        return self._one("reset clocks", index, self._client().reset_clocks(index))

    def power_w(self, index: int) -> float:
        return float(self._gpu(index)["power_w"])

    def energy_j(self, index: int) -> float:
        return float(self._gpu(index)["energy_j"])

    def restore_defaults(self) -> list[Change]:
        return AgentNodeHook._retarget(self.node, self._client().restore_defaults())


def status_from_agent(node: str, data: Mapping[str, Any]) -> NodeStatus:
    """An agent's ``/v1/status`` answer → :class:`NodeStatus` (unknown work counts as busy)."""
    work = data.get("running_work") or {}
    count = work.get("count") if isinstance(work, Mapping) else None
    detail = ""
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        running = count
    else:
        running = 1  # unknown work must never look idle
        detail = f"running work unknown ({work.get('error', '?') if isinstance(work, Mapping) else '?'}); counted as busy"
    extra = {
        k: data.get(k) for k in ("gpu_power_w", "gpu_energy_j", "uptime_s", "gpus", "time", "node")
    }
    return NodeStatus(
        node,
        _POWER_STATES.get(str(data.get("power")), NodePower.UNKNOWN),
        drained=bool(data.get("drained")),
        running_jobs=running,
        detail=detail,
        extra=extra,
    )


def power_off_result(node: str, data: Mapping[str, Any]) -> PowerOffResult:
    """An agent's ``/v1/status`` answer after a power-off request → where the power-off stands."""
    record = data.get("last_power_off")
    record = record if isinstance(record, Mapping) else {}
    outcome = str(record.get("outcome") or "")
    message = str(record.get("message") or "")
    if outcome == "command_ran":
        return PowerOffResult(node, PowerOffState.DONE, message)
    if outcome in ("aborted", "failed"):
        return PowerOffResult(node, PowerOffState.ABORTED, f"agent: {message or outcome}")
    if outcome == "pending" or data.get("power") == "shutting_down":
        return PowerOffResult(node, PowerOffState.PENDING, message)
    return PowerOffResult(
        node,
        PowerOffState.ABORTED,
        f"agent reports power {data.get('power')!r} and no pending power-off (restarted?)",
    )


def _register() -> None:
    from greencpn.actuate.hooks import register_hook_kind

    register_hook_kind("agent", AgentNodeHook.from_settings)


_register()
