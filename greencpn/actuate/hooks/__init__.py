"""Node power hooks and their factory.

``make_hook(pool.hook)`` returns a :class:`~greencpn.actuate.base.NodePowerHook` for the
pool's ``[pools.hook]`` table; ``kind`` picks the implementation and the other keys are read
by that kind (see docs/node-hooks.md). Unknown keys are refused with a :class:`ConfigError`.

Kinds: ``none`` (not actuated), ``command``, ``slurm``, ``kubernetes``, ``ipmi``, ``wol``;
``agent`` is registered by the agent package through :func:`register_hook_kind`.
Importing this package needs no network and no optional dependency (the ``kubernetes``
client is imported only when a kubernetes hook is built).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from greencpn.actuate.base import Change, NodePower, NodePowerHook, NodeStatus
from greencpn.actuate.hooks._common import (
    STATIC_CHECK,
    CommandPermanentError,
    CommandTemporaryError,
    HookSettings,
    NodeHookPermanentError,
    NodeHookTemporaryError,
)
from greencpn.errors import ConfigError, PermanentError

if TYPE_CHECKING:
    from greencpn.config import HookConfig

__all__ = [
    "CommandPermanentError",
    "CommandTemporaryError",
    "NodeHookPermanentError",
    "NodeHookTemporaryError",
    "NullHook",
    "check_hook_table",
    "make_hook",
    "make_hook_from_mapping",
    "register_hook_kind",
]

Builder = Callable[[HookSettings], NodePowerHook]

# kind → "module:function" (imported lazily) or a callable registered at run time
_BUILDERS: dict[str, str | Builder] = {
    "command": "greencpn.actuate.hooks.command:build",
    "slurm": "greencpn.actuate.hooks.slurm:build",
    "kubernetes": "greencpn.actuate.hooks.kubernetes:build",
    "ipmi": "greencpn.actuate.hooks.ipmi:build",
    "wol": "greencpn.actuate.hooks.wol:WolHook.from_settings",
}


class NullHook:
    """``kind = "none"``: the pool is not actuated. Status is unknown; actions are refused."""

    name = "none"

    def status(self, nodes: Sequence[str]) -> list[NodeStatus]:
        return [NodeStatus(n, NodePower.UNKNOWN, detail="pool has no hook") for n in nodes]

    def _refuse(self, op: str) -> list[Change]:
        raise PermanentError(
            f"cannot {op}: the pool's hook kind is 'none' — set [pools.hook] kind = "
            '"slurm" | "command" | "ipmi" | "wol" | "kubernetes" | "agent"'
        )

    def drain(self, nodes: Sequence[str], reason: str) -> list[Change]:
        return self._refuse("drain") if nodes else []

    def resume(self, nodes: Sequence[str]) -> list[Change]:
        return self._refuse("resume") if nodes else []

    def power_off(self, nodes: Sequence[str]) -> list[Change]:
        return self._refuse("power off") if nodes else []

    def power_on(self, nodes: Sequence[str]) -> list[Change]:
        return self._refuse("power on") if nodes else []


def register_hook_kind(kind: str, builder: Builder) -> None:
    """Register (or replace) the builder for a hook kind, e.g. ``agent``.

    ``builder`` takes a :class:`HookSettings` (read keys with its typed getters, then call
    ``check_unknown()``) and returns a :class:`NodePowerHook`.
    """
    _BUILDERS[kind] = builder


def _resolve(kind: str) -> Builder:
    target = _BUILDERS.get(kind)
    if target is None and kind == "agent":
        # The agent package registers itself on import; try its usual homes.
        for mod in ("greencpn.agent.hook", "greencpn.actuate.agent_hook", "greencpn.agent.client"):
            try:
                importlib.import_module(mod)
            except ImportError:
                continue
            target = _BUILDERS.get(kind)
            if target is not None:
                break
    if target is None:
        raise ConfigError(
            f"hook kind {kind!r} is not available",
            field="hook.kind",
            fix=f"use one of {sorted(['none', *_BUILDERS])}",
        )
    if callable(target):
        return target
    module_name, attr = target.split(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def make_hook_from_mapping(
    table: Mapping[str, Any], *, source: str | None = None, field_prefix: str = "hook"
) -> NodePowerHook:
    """Build a hook from a plain table (``{"kind": "ipmi", ...}``), e.g. a nested hook."""
    data = dict(table)
    kind = data.pop("kind", "none")
    if not isinstance(kind, str):
        raise ConfigError(
            f"kind must be a string, got {kind!r}",
            source=source,
            field=f"{field_prefix}.kind",
            fix='write kind = "command"',
        )
    if kind == "none":
        if data:
            raise ConfigError(
                f"hook kind 'none' takes no keys, got {sorted(data)}",
                source=source,
                field=field_prefix,
                fix="remove them or set a kind",
            )
        return NullHook()
    settings = HookSettings(kind, data, source)
    try:
        return _resolve(kind)(settings)
    except ConfigError as exc:
        if field_prefix != "hook" and exc.field and exc.field.startswith("hook."):
            raise ConfigError(
                exc.reason,
                source=exc.source or source,
                field=field_prefix + exc.field[4:],
                fix=exc.fix,
            ) from None
        raise


def check_hook_table(
    table: Mapping[str, Any], *, source: str | None = None, field_prefix: str = "hook"
) -> None:
    """Check a hook table the way :func:`make_hook_from_mapping` would build it, without
    touching this machine (no credential files, kubeconfig or network): raises the same
    :class:`ConfigError` a build would (used at config load, :mod:`greencpn.config`)."""
    token = STATIC_CHECK.set(True)
    try:
        make_hook_from_mapping(table, source=source, field_prefix=field_prefix)
    finally:
        STATIC_CHECK.reset(token)


def make_hook(
    hook_config: HookConfig | Mapping[str, Any], *, source: str | None = None
) -> NodePowerHook:
    """Build the hook a pool's :class:`greencpn.config.HookConfig` describes.

    Args:
        hook_config: a validated ``HookConfig`` (one model per kind) or a plain mapping.
        source: the config file, named in error messages.

    Raises:
        ConfigError: unknown kind, a missing or malformed key, or an unknown key.
    """
    table = dict(hook_config) if isinstance(hook_config, Mapping) else hook_config.as_table()
    return make_hook_from_mapping(table, source=source)
