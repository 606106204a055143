"""``make lint``: no module of greencpn over ~600 lines without the reason in its docstring.

A module longer than :data:`LIMIT` lines (as ``wc -l`` counts them) passes only when its module
docstring has a line starting ``Size`` whose text after the first colon states why, e.g.::

    Size (~770 lines, over the ~600 of issue 13, on purpose): the five forecasters share ...

Modules in :data:`PENDING` are being split elsewhere: they are printed as pending, not failed,
and an entry that is no longer needed (the module got shorter or states its reason) fails, so
the list cannot rot. Usage: ``python tools/module_sizes.py [ROOT]`` (default ``greencpn``);
exit status 0 clean, 1 a module needs a reason or a split.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

LIMIT = 600

#: module → why it is over the limit without a reason yet (printed on every run)
PENDING: dict[str, str] = {}

_SIZE_LINE = re.compile(r"^Size\b[^:\n]*:\s*\S", re.MULTILINE)


def has_reason(source: str) -> bool:
    """True when the module docstring has a ``Size …: <reason>`` line."""
    try:
        doc = ast.get_docstring(ast.parse(source)) or ""
    except SyntaxError:
        return False
    return bool(_SIZE_LINE.search(doc))


def check(root: Path, base: Path, pending: dict[str, str]) -> tuple[list[str], list[str]]:
    """(problems, notes) for every ``*.py`` under ``root``; paths are named relative to
    ``base`` as in :data:`PENDING`."""
    problems: list[str] = []
    notes: list[str] = []
    seen: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(base).as_posix()
        text = path.read_text(encoding="utf-8")
        n = text.count("\n")
        if rel in pending:
            seen.add(rel)
            if n <= LIMIT or has_reason(text):
                problems.append(
                    f"{rel}: listed in PENDING but no longer needs it ({n} lines"
                    f"{', reason stated' if has_reason(text) else ''}); "
                    "fix: remove it from PENDING in tools/module_sizes.py"
                )
            else:
                notes.append(f"{rel}: {n} lines, PENDING — {pending[rel]}")
            continue
        if n > LIMIT and not has_reason(text):
            problems.append(
                f"{rel}: {n} lines (over {LIMIT}) and its docstring states no reason; "
                "fix: split it by role, or add a line 'Size: <why it is one module>' to "
                "its module docstring"
            )
    for rel in sorted(set(pending) - seen):
        problems.append(f"{rel}: listed in PENDING but not found; fix: remove it from PENDING")
    return problems, notes


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "greencpn")
    problems, notes = check(
        root, root.resolve().parent if root.is_absolute() else Path("."), PENDING
    )
    for line in notes:
        print(f"module size: {line}")
    for line in problems:
        print(f"module size: {line}", file=sys.stderr)
    if not problems:
        print(f"module size: ok (no module of {root} over {LIMIT} lines without a stated reason)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
