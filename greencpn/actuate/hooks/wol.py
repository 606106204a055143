"""``wol`` hook: Wake-on-LAN magic packets to power nodes on.

A magic packet is 6 bytes ``0xFF`` followed by the target MAC address repeated 16 times
(102 bytes), sent as one UDP datagram (to the broadcast address, port 9 by default).

Config keys (``kind = "wol"``):

* ``macs`` (required) — table node name → MAC (``aa:bb:cc:dd:ee:ff``, ``-`` or no separator).
* ``address`` (default ``"255.255.255.255"``) — where to send (a subnet broadcast address,
  or a unicast address when a router forwards directed broadcasts).
* ``port`` (default 9) — UDP port (7 and 9 are the usual ones).
* ``repeat`` (default 3) — packets per node (UDP can drop one).
* ``off`` — optional nested hook table (e.g. ``kind = "command"``) used for power_off, drain,
  resume and status; without it power_off/drain/resume raise :class:`PermanentError` and
  status is ``unknown`` (a wake packet is then always sent: waking an awake node is harmless).

Set ``GREENCPN_LOOPBACK_ONLY=1`` (the test suite does) to refuse any non-loopback address.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping, Sequence

from greencpn.actuate.base import Change, NodePower, NodePowerHook, NodeStatus
from greencpn.actuate.hooks._common import POWER_ON_LIKE, HookSettings, log, noop, power_change
from greencpn.errors import ConfigError, PermanentError, TemporaryError

_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-]?)[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$")


def parse_mac(mac: str) -> bytes:
    """``aa:bb:cc:dd:ee:ff`` (or with ``-``, or none) → 6 bytes.

    Raises:
        ValueError: not a 48-bit MAC address.
    """
    if not isinstance(mac, str) or not _MAC.match(mac.strip()):
        raise ValueError(f"{mac!r} is not a MAC address like aa:bb:cc:dd:ee:ff")
    return bytes.fromhex(re.sub(r"[:-]", "", mac.strip()))


def magic_packet(mac: str) -> bytes:
    """The 102-byte Wake-on-LAN payload for ``mac``."""
    return b"\xff" * 6 + parse_mac(mac) * 16


def loopback_only() -> bool:
    return os.environ.get("GREENCPN_LOOPBACK_ONLY", "") not in ("", "0", "false", "no")


class WolHook:
    """Wakes nodes with magic packets; other operations go to an optional nested hook."""

    name = "wol"

    def __init__(
        self,
        macs: Mapping[str, str],
        *,
        address: str = "255.255.255.255",
        port: int = 9,
        repeat: int = 3,
        off_hook: NodePowerHook | None = None,
        require_loopback: bool | None = None,
    ) -> None:
        self.macs = dict(macs)
        for mac in self.macs.values():
            parse_mac(mac)  # validate early
        self.address = address
        self.port = port
        self.repeat = repeat
        self.off_hook = off_hook
        self.require_loopback = loopback_only() if require_loopback is None else require_loopback
        if self.require_loopback:
            try:
                ok = ipaddress.ip_address(address).is_loopback
            except ValueError:
                ok = False
            if not ok:
                raise PermanentError(
                    f"wol hook: refusing to send to {address}: only loopback targets are allowed "
                    "here (GREENCPN_LOOPBACK_ONLY is set)"
                )

    @classmethod
    def from_settings(cls, s: HookSettings) -> WolHook:
        from greencpn.actuate.hooks import make_hook_from_mapping

        macs = s.str_map("macs")
        if not macs:
            raise s.error(
                "macs",
                "hook kind 'wol' needs a 'macs' table (node → MAC)",
                '[pools.hook.macs] node01 = "aa:bb:cc:dd:ee:01"',
            )
        for node, mac in macs.items():
            try:
                parse_mac(mac)
            except ValueError as exc:
                raise s.error(f"macs.{node}", str(exc), "write it as aa:bb:cc:dd:ee:ff") from None
        off = s.get("off")
        off_hook = None
        if off is not None:
            if not isinstance(off, Mapping):
                raise s.error(
                    "off",
                    f"must be a hook table, got {off!r}",
                    '[pools.hook.off] kind = "command" ...',
                )
            off_hook = make_hook_from_mapping(off, source=s.source, field_prefix="hook.off")
        hook = cls(
            macs,
            address=s.str_("address", "255.255.255.255") or "255.255.255.255",
            port=s.int_("port", 9, minimum=1),
            repeat=s.int_("repeat", 3, minimum=1),
            off_hook=off_hook,
            # checking a config sends nothing: GREENCPN_LOOPBACK_ONLY is for hooks that will send
            require_loopback=False if s.static else None,
        )
        s.check_unknown()
        return hook

    def _send(self, node: str) -> str:
        mac = self.macs.get(node)
        if mac is None:
            raise ConfigError(
                f"wol hook has no MAC address for node {node!r}",
                field=f"hook.macs.{node}",
                fix=f'add {node} = "aa:bb:cc:dd:ee:ff"',
            )
        payload = magic_packet(mac)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                for _ in range(self.repeat):
                    sock.sendto(payload, (self.address, self.port))
        except OSError as exc:
            raise TemporaryError(
                f"wol: sending to {self.address}:{self.port} failed: {exc}"
            ) from exc
        log.info(
            "wol: magic packet for %s (%s) sent to %s:%d ×%d",
            node,
            mac,
            self.address,
            self.port,
            self.repeat,
        )
        return mac

    def status(self, nodes: Sequence[str]) -> list[NodeStatus]:
        if self.off_hook is not None:
            return self.off_hook.status(nodes)
        return [
            NodeStatus(n, NodePower.UNKNOWN, detail="wol cannot read power state") for n in nodes
        ]

    def power_on(self, nodes: Sequence[str]) -> list[Change]:
        before = {s.name: s.power for s in self.status(nodes)}
        changes: list[Change] = []
        for n in nodes:
            if before[n] in POWER_ON_LIKE:
                changes.append(noop(n, "power", before[n].value, f"already {before[n].value}"))
                continue
            mac = self._send(n)
            changes.append(
                power_change(
                    n,
                    before[n],
                    NodePower.BOOTING,
                    f"magic packet for {mac} sent to {self.address}:{self.port}",
                )
            )
        return changes

    def _nested(self, op: str) -> NodePowerHook:
        if self.off_hook is None:
            raise PermanentError(
                f"wol hook cannot {op}: Wake-on-LAN only wakes nodes — add a nested "
                '[pools.hook.off] table (e.g. kind = "command") for power_off/drain/resume'
            )
        return self.off_hook

    def power_off(self, nodes: Sequence[str]) -> list[Change]:
        return self._nested("power off").power_off(nodes)

    def drain(self, nodes: Sequence[str], reason: str) -> list[Change]:
        return self._nested("drain").drain(nodes, reason)

    def resume(self, nodes: Sequence[str]) -> list[Change]:
        return self._nested("resume").resume(nodes)
