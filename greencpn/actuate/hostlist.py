"""Slurm-compatible hostlist expressions: expand and compress.

Syntax (the subset of Slurm's ``hostlist`` that node names use):

* Names are separated by commas (or whitespace) **outside** brackets: ``a1,b2``.
* A bracket group holds ranges and single numbers separated by commas **inside** the brackets:
  ``node[001-004,007]`` is ``node001 node002 node003 node004 node007``.
* Zero padding follows the lower bound as written: ``n[08-10]`` gives ``n08 n09 n10`` while
  ``n[8-10]`` gives ``n8 n9 n10`` (Slurm's rule: the width is the length of the lower bound).
* Several bracket groups in one name form the cartesian product, first group outermost:
  ``rack[1-2]-n[01-02]`` is ``rack1-n01 rack1-n02 rack2-n01 rack2-n02`` (as Slurm expands it).

:func:`compress` does what ``scontrol show hostlist`` does: it sorts the unique names and
folds names that differ only in one numeric field (the last digit run) into bracket ranges,
so that ``expand(compress(names)) == sort_hosts(set(names))``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from greencpn.errors import ConfigError

MAX_HOSTS = 1_000_000
"""Refuse expressions that expand to more names than this (a typo like ``n[1-99999999]``)."""

_LAST_DIGITS = re.compile(r"^(.*?)(\d+)(\D*)$")
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


class HostlistError(ConfigError):
    """A hostlist expression that cannot be parsed; the message quotes it and says why."""


def _bad(expr: str, why: str) -> HostlistError:
    return HostlistError(
        f"hostlist {expr!r}: {why}",
        fix="write names like 'node[001-004,007],gpu-a[1-2]' (Slurm hostlist syntax)",
    )


def _split_top(expr: str) -> list[str]:
    """Split at commas/whitespace that are outside brackets."""
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in expr:
        if ch == "[":
            if depth:
                raise _bad(expr, "nested '[' is not allowed")
            depth = 1
        elif ch == "]":
            if not depth:
                raise _bad(expr, "']' without a matching '['")
            depth = 0
        if not depth and (ch == "," or ch.isspace()):
            if cur:
                parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if depth:
        raise _bad(expr, "'[' without a matching ']'")
    if cur:
        parts.append("".join(cur))
    return parts


def _expand_group(expr: str, body: str) -> list[str]:
    """Expand the inside of one bracket group (``001-004,007``) to digit strings."""
    out: list[str] = []
    for item in body.split(","):
        item = item.strip()
        m = _RANGE.match(item)
        if not m:
            raise _bad(expr, f"'[{body}]' holds {item!r}, expected N or N-M with digits only")
        lo_s, hi_s = m.group(1), m.group(2)
        lo = int(lo_s)
        hi = int(hi_s) if hi_s is not None else lo
        if hi < lo:
            raise _bad(expr, f"range {item!r} runs backwards")
        if hi - lo + 1 > MAX_HOSTS:
            raise _bad(expr, f"range {item!r} has more than {MAX_HOSTS} names")
        width = len(lo_s)
        out.extend(str(n).zfill(width) for n in range(lo, hi + 1))
    return out


def _expand_name(expr: str, name: str) -> list[str]:
    """Expand one top-level item (may hold several bracket groups)."""
    if "[" not in name:
        if "]" in name:
            raise _bad(expr, "']' without a matching '['")
        return [name]
    pieces = re.split(r"(\[[^\]]*\])", name)
    results = [""]
    for piece in pieces:
        if piece.startswith("[") and piece.endswith("]"):
            values = _expand_group(expr, piece[1:-1])
            if len(results) * len(values) > MAX_HOSTS:
                raise _bad(expr, f"expands to more than {MAX_HOSTS} names")
            results = [r + v for r in results for v in values]
        else:
            results = [r + piece for r in results]
    return results


def expand(expr: str | Iterable[str]) -> list[str]:
    """Expand a Slurm hostlist expression to node names, in the order written, duplicates kept.

    Args:
        expr: e.g. ``"node[001-004,007],gpu-a[1-2]"``; an iterable of expressions is joined.

    Returns:
        The node names, e.g. ``["node001", ..., "node007", "gpu-a1", "gpu-a2"]``.

    Raises:
        HostlistError: unbalanced brackets, a range running backwards, non-digits in brackets,
            or more than :data:`MAX_HOSTS` names.
    """
    if not isinstance(expr, str):
        expr = ",".join(expr)
    return list(_expand_cached(expr))  # a new list each call: callers may change theirs


@functools.lru_cache(maxsize=1024)
def _expand_cached(expr: str) -> tuple[str, ...]:
    """:func:`expand` of one expression, memoised: a pure function of the text (a control
    step expands each pool's hostlist in several places, every step); an error is raised
    again on every call (``lru_cache`` keeps no exceptions)."""
    names: list[str] = []
    for item in _split_top(expr):
        names.extend(_expand_name(expr, item))
        if len(names) > MAX_HOSTS:
            raise _bad(expr, f"expands to more than {MAX_HOSTS} names")
    return tuple(names)


def _natural(text: str) -> tuple[tuple[str, int], ...]:
    return tuple((t, int(d) if d else -1) for t, d in re.findall(r"(\D*)(\d*)", text) if t or d)


_Parsed = tuple[str, str, str | None, int, str]  # prefix, suffix, digits, number, name


def _sorted_parsed(names: Iterable[str]) -> list[_Parsed]:
    """Split names at their last digit run and sort them (Slurm's hostrange order).

    Order: prefix (naturally: ``rack2`` before ``rack10``), suffix, number, digit width, name.
    The prefix/suffix pairs are ranked once, so sorting 100k names compares small tuples.
    """
    parsed: list[_Parsed] = []
    for name in names:
        m = _LAST_DIGITS.match(name)
        if m:
            prefix, digits, suffix = m.groups()
            parsed.append((prefix, suffix, digits, int(digits), name))
        else:
            parsed.append((name, "", None, -1, name))
    pairs = {(p[0], p[1]) for p in parsed}
    rank = {
        pair: i
        for i, pair in enumerate(sorted(pairs, key=lambda ps: (_natural(ps[0]), ps[0], ps[1])))
    }
    parsed.sort(key=lambda p: (rank[(p[0], p[1])], p[3], len(p[2] or ""), p[4]))
    return parsed


def sort_hosts(names: Iterable[str]) -> list[str]:
    """Natural sort of node names: ``n2`` before ``n10``; names grouped by prefix and suffix."""
    return [p[4] for p in _sorted_parsed(names)]


_BAD_NAME = re.compile(r"[\[\],\s]")


def compress(names: Iterable[str]) -> str:
    """Compress node names to a Slurm hostlist expression (sorted, duplicates dropped).

    Only the last digit run of each name is folded, e.g. ``n01-ib,n02-ib`` → ``n[01-02]-ib``
    and ``node1,node2,node3,node7`` → ``node[1-3,7]``. Widths are kept exactly: ``n009`` and
    ``n10`` stay apart (``n[009-010]`` would rename ``n10``).

    Raises:
        HostlistError: a name contains ``[``, ``]``, ``,`` or whitespace.
    """
    uniq = set(names)
    for n in uniq:
        if not n or _BAD_NAME.search(n):
            raise _bad(str(n), "a node name may not be empty or contain brackets, commas or spaces")
    # Group consecutive names sharing prefix and suffix; build ranges within each group.
    groups: list[tuple[str, str, list[tuple[str, int]]]] = []
    for prefix, suffix, digits, number, name in _sorted_parsed(uniq):
        if digits is None:
            groups.append((name, "\0", []))
            continue
        if groups and groups[-1][0] == prefix and groups[-1][1] == suffix:
            groups[-1][2].append((digits, number))
        else:
            groups.append((prefix, suffix, [(digits, number)]))
    out: list[str] = []
    for prefix, suffix, nums in groups:
        if suffix == "\0":
            out.append(prefix)
            continue
        ranges: list[str] = []
        i = 0
        while i < len(nums):
            lo_s, lo = nums[i]
            width = len(lo_s)
            j = i
            while (
                j + 1 < len(nums)
                and nums[j + 1][1] == nums[j][1] + 1
                and nums[j + 1][0] == str(nums[j + 1][1]).zfill(width)
            ):
                j += 1
            ranges.append(lo_s if j == i else f"{lo_s}-{nums[j][0]}")
            i = j + 1
        if len(nums) == 1:
            out.append(f"{prefix}{nums[0][0]}{suffix}")
        else:
            out.append(f"{prefix}[{','.join(ranges)}]{suffix}")
    return ",".join(out)


def expand_unique(expr: str | Iterable[str]) -> list[str]:
    """Expand, drop duplicates and sort (what Slurm's ``hostlist_uniq`` gives)."""
    return sort_hosts(set(expand(expr)))
