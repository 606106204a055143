"""``ipmi`` hook: chassis power through ``ipmitool`` (IPMI 2.0 / RMCP+, ``-I lanplus``).

Power off is graceful first: ``chassis power soft`` (ACPI shutdown request) to every node,
then the BMCs are polled until they report off; nodes still on after ``soft_off_timeout_s``
get ``chassis power off`` (hard) when ``hard_off`` is true, else a :class:`TemporaryError`.
Power on is ``chassis power on``; status is ``chassis power status``. Every action reads the
state first, so powering on a node that is on does nothing.

The password never appears on a command line or in a log: ipmitool reads it from the
environment variable ``IPMI_PASSWORD`` (``-E``) or from a file (``-f``).

Config keys (``kind = "ipmi"``):

* ``bmcs`` — table node → BMC address (``"10.0.0.101"`` or ``"10.0.0.101:623"``);
  or ``bmc_template`` — e.g. ``"{node}-ipmi.example.org"``. One of the two is required.
* ``user`` (required) — BMC user name.
* ``password_env`` (default ``"IPMI_PASSWORD"``) — environment variable with the password;
  or ``password_file`` — a file holding it (passed as ``ipmitool -f``; keep it mode 0600).
* ``port`` (default 623), ``interface`` (default ``"lanplus"``), ``cipher_suite`` (default 3;
  leaving ipmitool to discover it costs ~10 s per call), ``privilege`` (default ``"ADMINISTRATOR"``).
* ``ipmitool`` (default ``"ipmitool"``), ``timeout_s`` (default 20, per ipmitool call).
* ``soft_off_timeout_s`` (default 300), ``poll_interval_s`` (default 5), ``hard_off``
  (default true).
* ``parallel`` (default 16) — BMCs talked to at the same time.
* ``drain_hook`` — optional nested hook table (e.g. ``kind = "slurm"``) for drain/resume and
  for the drained/running-jobs part of status. Without it drain/resume raise
  :class:`PermanentError` (a BMC cannot drain a node).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from greencpn.actuate.base import Change, NodePower, NodePowerHook, NodeStatus
from greencpn.actuate.hooks._common import (
    HookSettings,
    log,
    noop,
    power_change,
    raise_if_failed,
    run_command,
)
from greencpn.errors import ConfigError, PermanentError, TemporaryError

T = TypeVar("T")

_STATUS = re.compile(r"Chassis Power is (on|off)", re.IGNORECASE)
_AUTH_MARKERS = (
    "unable to establish",
    "invalid user name",
    "password",
    "unauthorized",
    "insufficient privilege",
)


class IpmiHook:
    """Powers nodes through their BMCs with ipmitool (see the module docstring)."""

    name = "ipmi"

    def __init__(
        self,
        *,
        user: str,
        bmcs: Mapping[str, str] | None = None,
        bmc_template: str | None = None,
        password_env: str = "IPMI_PASSWORD",
        password_file: str | None = None,
        port: int = 623,
        interface: str = "lanplus",
        cipher_suite: int | None = 3,
        privilege: str = "ADMINISTRATOR",
        ipmitool: str = "ipmitool",
        timeout_s: float = 20.0,
        soft_off_timeout_s: float = 300.0,
        poll_interval_s: float = 5.0,
        hard_off: bool = True,
        parallel: int = 16,
        drain_hook: NodePowerHook | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not bmcs and not bmc_template:
            raise ConfigError(
                "hook kind 'ipmi' needs 'bmcs' or 'bmc_template'",
                field="hook.bmcs",
                fix='[pools.hook.bmcs] node01 = "10.0.0.101"',
            )
        self.user = user
        self.bmcs = dict(bmcs or {})
        self.bmc_template = bmc_template
        self.password_env = password_env
        self.password_file = password_file
        self.port = port
        self.interface = interface
        self.cipher_suite = cipher_suite
        self.privilege = privilege
        self.ipmitool = ipmitool
        self.timeout_s = timeout_s
        self.soft_off_timeout_s = soft_off_timeout_s
        self.poll_interval_s = poll_interval_s
        self.hard_off = hard_off
        self.parallel = parallel
        self.drain_hook = drain_hook
        self._sleep = sleep
        self._monotonic = monotonic

    @classmethod
    def from_settings(cls, s: HookSettings) -> IpmiHook:
        from greencpn.actuate.hooks import make_hook_from_mapping

        nested = s.get("drain_hook")
        drain_hook = None
        if nested is not None:
            if not isinstance(nested, Mapping):
                raise s.error(
                    "drain_hook",
                    f"must be a hook table, got {nested!r}",
                    '[pools.hook.drain_hook] kind = "slurm"',
                )
            drain_hook = make_hook_from_mapping(
                nested, source=s.source, field_prefix="hook.drain_hook"
            )
        bmcs = s.str_map("bmcs")
        template = s.str_("bmc_template")
        if not bmcs and not template:
            raise s.error(
                "bmcs",
                "hook kind 'ipmi' needs 'bmcs' (node → BMC address) or 'bmc_template'",
                '[pools.hook.bmcs] node01 = "10.0.0.101"',
            )
        if template and "{node}" not in template:
            raise s.error(
                "bmc_template",
                f"must contain {{node}}, got {template!r}",
                'write bmc_template = "{node}-ipmi"',
            )
        password_file = s.str_("password_file")
        if password_file and not s.static and not os.path.exists(password_file):
            raise s.error(
                "password_file",
                f"{password_file} does not exist",
                "create it (one line, mode 0600) or use password_env",
            )
        cipher = s.get("cipher_suite", 3)
        if cipher is not None and (isinstance(cipher, bool) or not isinstance(cipher, int)):
            raise s.error("cipher_suite", f"must be an integer, got {cipher!r}", "write 3 or 17")
        hook = cls(
            user=s.str_("user", required=True) or "",
            bmcs=bmcs,
            bmc_template=template,
            password_env=s.str_("password_env", "IPMI_PASSWORD") or "IPMI_PASSWORD",
            password_file=password_file,
            port=s.int_("port", 623, minimum=1),
            interface=s.str_("interface", "lanplus") or "lanplus",
            cipher_suite=cipher,
            privilege=s.str_("privilege", "ADMINISTRATOR") or "ADMINISTRATOR",
            ipmitool=s.str_("ipmitool", "ipmitool") or "ipmitool",
            timeout_s=s.float_("timeout_s", 20.0, minimum=0.001),
            soft_off_timeout_s=s.float_("soft_off_timeout_s", 300.0),
            poll_interval_s=s.float_("poll_interval_s", 5.0, minimum=0.01),
            hard_off=s.bool_("hard_off", True),
            parallel=s.int_("parallel", 16, minimum=1),
            drain_hook=drain_hook,
        )
        s.check_unknown()
        return hook

    # ----------------------------------------------------------------------------------------

    def _bmc(self, node: str) -> tuple[str, int]:
        addr = self.bmcs.get(node)
        if addr is None:
            if not self.bmc_template:
                raise ConfigError(
                    f"ipmi hook has no BMC address for node {node!r}",
                    field=f"hook.bmcs.{node}",
                    fix=f'add {node} = "10.0.0.x"',
                )
            addr = self.bmc_template.format(node=node)
        host, port = addr, self.port
        if addr.count(":") == 1:  # host:port (IPv6 addresses are left alone)
            host, port_s = addr.rsplit(":", 1)
            port = int(port_s)
        return host, port

    def _ipmitool(self, node: str, *args: str) -> str:
        host, port = self._bmc(node)
        argv = [
            self.ipmitool,
            "-I",
            self.interface,
            "-H",
            host,
            "-p",
            str(port),
            "-U",
            self.user,
            "-L",
            self.privilege,
        ]
        if self.cipher_suite is not None:
            argv += ["-C", str(self.cipher_suite)]
        env: dict[str, str] = {}
        secret = ""
        if self.password_file:
            argv += ["-f", self.password_file]
        else:
            secret = os.environ.get(self.password_env, "")
            if not secret:
                raise PermanentError(
                    f"ipmi hook: environment variable {self.password_env} (the BMC password) is "
                    "not set — export it or set password_file"
                )
            env["IPMI_PASSWORD"] = secret
            argv.append("-E")
        argv += list(args)
        try:
            return run_command(argv, timeout_s=self.timeout_s, env=env, redact=[secret]).stdout
        except TemporaryError as exc:
            tail = getattr(exc, "stderr_tail", "").lower()
            if any(m in tail for m in _AUTH_MARKERS) and "timeout" not in tail:
                # wrong user/password/cipher is not fixed by retrying; an unreachable BMC might be
                raise PermanentError(
                    f"ipmi {node} ({host}:{port}): {exc} — check user, password and cipher_suite"
                ) from None
            raise

    def _power_state(self, node: str) -> NodePower:
        out = self._ipmitool(node, "chassis", "power", "status")
        m = _STATUS.search(out)
        if not m:
            raise TemporaryError(f"ipmi {node}: unexpected 'chassis power status' output {out!r}")
        return NodePower.ON if m.group(1).lower() == "on" else NodePower.OFF

    def _map(self, fn: Callable[[str], T], nodes: Sequence[str]) -> dict[str, T | Exception]:
        """Run ``fn(node)`` for every node, ``parallel`` BMCs at a time; errors are returned."""

        def one(n: str) -> T | Exception:
            try:
                return fn(n)
            except (TemporaryError, PermanentError) as exc:
                return exc

        if len(nodes) <= 1 or self.parallel <= 1:
            return {n: one(n) for n in nodes}
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(nodes))) as pool:
            return dict(zip(nodes, pool.map(one, nodes), strict=True))

    def status(self, nodes: Sequence[str]) -> list[NodeStatus]:
        nodes = list(nodes)
        extra: dict[str, NodeStatus] = {}
        if self.drain_hook is not None and nodes:
            extra = {s.name: s for s in self.drain_hook.status(nodes)}
        states = self._map(self._power_state, nodes)
        out = []
        for n in nodes:
            other = extra.get(n)
            drained = other.drained if other else False
            jobs = other.running_jobs if other else None  # no nested hook: work unknown
            power = states[n]
            if isinstance(power, Exception):
                out.append(NodeStatus(n, NodePower.UNKNOWN, drained, jobs, detail=str(power)))
            else:
                out.append(
                    NodeStatus(n, power, drained, jobs, detail=f"chassis power {power.value}")
                )
        return out

    def _on_one(self, n: str) -> Change:
        before = self._power_state(n)
        if before == NodePower.ON:
            return noop(n, "power", before.value, "already on")
        self._ipmitool(n, "chassis", "power", "on")
        return power_change(n, before, self._power_state(n), "chassis power on")

    def power_on(self, nodes: Sequence[str]) -> list[Change]:
        nodes = list(nodes)
        changes: list[Change] = []
        failures: dict[str, Exception] = {}
        for n, result in self._map(self._on_one, nodes).items():
            if isinstance(result, Exception):
                failures[n] = result
            else:
                changes.append(result)
        return raise_if_failed("ipmi power on", changes, failures, nodes)

    def _soft_one(self, n: str) -> NodePower:
        """Ask for an ACPI power off unless the node is off; return the state before."""
        before = self._power_state(n)
        if before != NodePower.OFF:
            self._ipmitool(n, "chassis", "power", "soft")
        return before

    def _hard_one(self, n: str) -> NodePower:
        self._ipmitool(n, "chassis", "power", "off")
        return self._power_state(n)

    def power_off(self, nodes: Sequence[str]) -> list[Change]:
        nodes = list(nodes)
        changes: list[Change] = []
        failures: dict[str, Exception] = {}
        pending: dict[str, NodePower] = {}
        for n, before in self._map(self._soft_one, nodes).items():
            if isinstance(before, Exception):
                failures[n] = before
            elif before == NodePower.OFF:
                changes.append(noop(n, "power", before.value, "already off"))
            else:
                pending[n] = before
        start = self._monotonic()
        while pending:
            for n, state in self._map(self._power_state, list(pending)).items():
                if isinstance(state, Exception):
                    failures[n] = state
                    pending.pop(n)
                elif state == NodePower.OFF:
                    waited = self._monotonic() - start
                    changes.append(
                        power_change(
                            n,
                            pending.pop(n),
                            NodePower.OFF,
                            f"soft off (ACPI) done within {waited:.1f} s",
                        )
                    )
            if not pending or self._monotonic() - start >= self.soft_off_timeout_s:
                break
            self._sleep(self.poll_interval_s)
        waited = self._monotonic() - start
        if pending and not self.hard_off:
            for n in pending:
                failures[n] = TemporaryError(
                    f"ipmi {n}: still on {waited:.0f} s after a soft power off and hard_off is false"
                )
            pending = {}
        for n in pending:
            log.warning("ipmi %s: still on %.0f s after soft off, forcing power off", n, waited)
        for n, after in self._map(self._hard_one, list(pending)).items():
            if isinstance(after, Exception):
                failures[n] = after
            else:
                changes.append(
                    power_change(
                        n,
                        pending[n],
                        after,
                        f"soft off timed out after {waited:.0f} s; hard power off",
                    )
                )
        return raise_if_failed("ipmi power off", changes, failures, nodes)

    def _nested(self, op: str) -> NodePowerHook:
        if self.drain_hook is None:
            raise PermanentError(
                f"ipmi hook cannot {op}: a BMC only switches power — add a nested "
                '[pools.hook.drain_hook] table (e.g. kind = "slurm")'
            )
        return self.drain_hook

    def drain(self, nodes: Sequence[str], reason: str) -> list[Change]:
        return self._nested("drain").drain(nodes, reason)

    def resume(self, nodes: Sequence[str]) -> list[Change]:
        return self._nested("resume").resume(nodes)


def build(s: HookSettings) -> IpmiHook:
    return IpmiHook.from_settings(s)
