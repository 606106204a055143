"""Pydantic validation errors → one :class:`~greencpn.errors.ConfigError` naming the file, the
field (dotted path with names, e.g. ``pools[2](lon-a100).gpu_model``) and the fix."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from greencpn.config.hooks import HOOK_MODELS, hook_keys
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
    "int_type": "write a whole number, without quotes",
    "bool_parsing": "write true or false",
    "literal_error": "use one of the listed values",
    "too_short": "give at least one entry",
    "gpu_profile": _PROFILE_FIX,
    "gpu_profile_bound": "set throughput_low to at most throughput, or remove it (the chooser "
    "then uses throughput); refit profiles: rerun `greencpn models fit --from-ledger`",
}


def _is_hook_tag(part: Any, node: Any) -> bool:
    """``part`` is the ``kind`` pydantic put in the location of a hook table (the discriminated
    union's branch), not a key of the table."""
    return (
        isinstance(part, str)
        and part in HOOK_MODELS
        and isinstance(node, dict)
        and part not in node
        and node.get("kind", "none") == part
    )


def _loc_to_field(loc: tuple[Any, ...], data: Any) -> str:
    return _walk(loc, data)[0]


def _walk(loc: tuple[Any, ...], data: Any) -> tuple[str, Any, str | None, str | None]:
    """The dotted field of ``loc`` in ``data``; the node it ends at; the kind of the innermost
    hook table on the way and the key of that table the location goes through."""
    out = ""
    node = data
    hook_kind: str | None = None
    hook_key: str | None = None
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
            if _is_hook_tag(part, node):
                hook_kind, hook_key = str(part), None
                continue
            if _UNION_TAG.match(str(part)) and not (isinstance(node, dict) and part in node):
                continue  # pydantic's name of a union branch, not a config key
            if part == "[key]":
                continue  # pydantic's mark of a table's key (the key itself is named already)
            if hook_kind is not None and hook_key is None:
                hook_key = str(part)
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out, node, hook_kind, hook_key


_UNION_TAG = re.compile(r"^(constrained-\w+|list\[.*\]|dict\[.*\]|float|int|str|bool|none)$")


def _toml(value: Any) -> str:
    """``value`` as TOML writes it (for a fix such as ``write timeout_s = 120.0``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _example(kind: str, key: str) -> str | None:
    info = HOOK_MODELS[kind].model_fields.get(key)
    if info is None:
        return None
    if info.examples:
        return _toml(info.examples[0])
    default = info.get_default(call_default_factory=True)
    return None if default is None else _toml(default)


def describe(err: Any, data: Any) -> tuple[str, str, str]:
    """One pydantic error as (dotted field, message, fix); ``data`` is the input validated."""
    field, node, kind, key = _walk(tuple(err["loc"]), data)
    etype = err["type"]
    ctx = err.get("ctx") or {}
    msg = err["msg"].removeprefix("Value error, ")
    fix = _FIX_HINTS.get(etype, "see README.md 'Config format'")
    if etype == "hook":  # greencpn.config.hooks.hook_error: it names its key and fix
        return f"{field}.{ctx['key']}".lstrip("."), ctx["message"], ctx["fix"]
    if etype == "union_tag_invalid" and isinstance(node, dict):
        raw = node.get("kind")
        msg = (
            f"unknown hook kind {raw!r}"
            if isinstance(raw, str)
            else f"kind must be a string naming the hook kind, got {raw!r}"
        )
        fix = f"use one of {list(HOOK_MODELS)} (see docs/node-hooks.md)"
        return f"{field}.kind".lstrip("."), msg, fix
    if kind is not None and key is not None:
        if etype == "extra_forbidden":
            if kind == "none":
                msg = f"hook kind 'none' takes no keys, got {key!r}"
                fix = "remove it, or set the kind that uses it (see docs/node-hooks.md)"
            else:
                msg = f"unknown key {key!r} for hook kind '{kind}'"
                fix = f"use only {hook_keys(kind)} (see docs/node-hooks.md)"
            return field, msg, fix
        msg = f"{msg}, got {err.get('input')!r}"
        example = _example(kind, key)
        if example is not None:
            fix = f"write {key} = {example}"
    return field, msg, fix


def pick(errs: list[Any]) -> Any:
    """The error to show of one validation: a union field (constant or list) reports one error
    per branch, so a non-finite value first, else the deepest location (the branch the user
    wrote, e.g. the list item)."""
    head = tuple(errs[0]["loc"])
    while head and (_UNION_TAG.match(str(head[-1])) or str(head[-1]) in HOOK_MODELS):
        head = head[:-1]
    same = [e for e in errs if tuple(e["loc"])[: len(head)] == head] or errs[:1]
    return next((e for e in same if e["type"] == "finite_number"), None) or max(
        same, key=lambda e: len(e["loc"])
    )


def _raise_validation(exc: ValidationError, source: str, data: Any) -> None:
    errs = exc.errors()
    field, msg, fix = describe(pick(errs), data)
    more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
    raise ConfigError(msg + more, source=source, field=field or None, fix=fix) from None
