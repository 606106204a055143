"""Policy plug-ins: every module of this package that defines ``POLICY`` is one policy.

Adding a policy is adding one file here (see :mod:`greencpn.whatif.policies.base`).
:func:`load_policy` turns ``name[:key=value,...]`` into an instance; ``perfect=1`` is a replay
option, not a policy parameter: the policy is given actual intensities as its forecast.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from typing import Any

from greencpn.errors import ConfigError
from greencpn.whatif.policies.base import Policy


def available() -> dict[str, type]:
    """Policy name → class, from every module of this package that defines ``POLICY``."""
    out: dict[str, type] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        cls = getattr(mod, "POLICY", None)
        if cls is not None:
            out[cls.name] = cls
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class PolicySpec:
    text: str  # as given, e.g. "shutdown-idle:timeout_min=10"
    name: str
    params: dict[str, Any]
    perfect: bool

    @property
    def label(self) -> str:
        return self.text


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_spec(text: str) -> PolicySpec:
    """Parse ``name[:key=value,...]`` (see the module docstring).

    Raises:
        ConfigError: unknown policy or parameter (the message lists what exists).
    """
    name, _, rest = text.strip().partition(":")
    pols = available()
    if name not in pols:
        raise ConfigError(
            f"unknown policy {name!r}",
            field="--policies",
            fix=f"use one of {', '.join(pols)} (a policy is a module in greencpn/whatif/policies/)",
        )
    params: dict[str, Any] = {}
    perfect = False
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, val = part.partition("=")
        if not eq:
            raise ConfigError(
                f"policy parameter {part!r} has no value",
                field="--policies",
                fix=f"write {name}:{part}=VALUE",
            )
        if key == "perfect":
            perfect = bool(_value(val))
            continue
        params[key] = _value(val)
    accepted = list(inspect.signature(pols[name]).parameters)
    for key in params:
        if key not in accepted:
            raise ConfigError(
                f"policy {name} has no parameter {key!r}",
                field="--policies",
                fix=f"use {', '.join(accepted + ['perfect']) or 'perfect only'}",
            )
    return PolicySpec(text.strip(), name, params, perfect)


def load_policy(spec: PolicySpec | str) -> Policy:
    """An instance of the policy a spec names."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    inst: Policy = available()[spec.name](**spec.params)
    return inst
