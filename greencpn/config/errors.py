"""Pydantic validation errors → one :class:`~greencpn.errors.ConfigError` naming the file, the
field (dotted path with names, e.g. ``pools[2](lon-a100).gpu_model``) and the fix."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from greencpn.errors import ConfigError

_PROFILE_FIX = (
    "give [[levels]] a throughput and power_factor that do not fall as cap_w rises, "
    "throughput <= 1 and power_factor <= cap_w / power_limit_max_w (a busy GPU cannot draw more "
    "than its cap); bundled profiles: rerun `greencpn models fit` / models/fit_gpu_profiles.py"
)


_FIX_HINTS = {
    "missing": "add this field",
    "extra_forbidden": "remove it or check its spelling against README.md 'Config format'",
    "greater_than": "use a positive value",
    "greater_than_equal": "use a value at or above the minimum",
    "less_than_equal": "use a smaller value",
    "float_parsing": "write a number",
    "finite_number": "write a finite number (inf and nan are not allowed here)",
    "int_parsing": "write a whole number",
    "bool_parsing": "write true or false",
    "literal_error": "use one of the listed values",
    "too_short": "give at least one entry",
    "gpu_profile": _PROFILE_FIX,
}


def _loc_to_field(loc: tuple[Any, ...], data: Any) -> str:
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            label = None
            if isinstance(node, list) and part < len(node) and isinstance(node[part], dict):
                label = node[part].get("name") or node[part].get("id")
            if label:
                out += f"({label})"
            node = node[part] if isinstance(node, list) and part < len(node) else None
        else:
            if _UNION_TAG.match(str(part)) and not (isinstance(node, dict) and part in node):
                continue  # pydantic's name of a union branch, not a config key
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


_UNION_TAG = re.compile(r"^(constrained-\w+|list\[.*\]|dict\[.*\]|float|int|str|bool|none)$")


def _raise_validation(exc: ValidationError, source: str, data: Any) -> None:
    errs = exc.errors()
    # a union field (constant or list) reports one error per branch: show a non-finite value
    # first, else the deepest location (the branch the user wrote, e.g. the list item)
    head = tuple(errs[0]["loc"])
    while head and _UNION_TAG.match(str(head[-1])):
        head = head[:-1]
    same = [e for e in errs if tuple(e["loc"])[: len(head)] == head] or errs[:1]
    first = next((e for e in same if e["type"] == "finite_number"), None) or max(
        same, key=lambda e: len(e["loc"])
    )
    field = _loc_to_field(tuple(first["loc"]), data)
    msg = first["msg"].removeprefix("Value error, ")
    fix = _FIX_HINTS.get(first["type"], "see README.md 'Config format'")
    more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
    raise ConfigError(msg + more, source=source, field=field or None, fix=fix) from None
