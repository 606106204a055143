"""``make lint``'s module size check (tools/module_sizes.py, issue 13)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("module_sizes", ROOT / "tools" / "module_sizes.py")
assert _spec is not None and _spec.loader is not None
sizes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sizes)


def _module(path: Path, doc: str, lines: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"x{i} = {i}\n" for i in range(lines))
    path.write_text(f'"""{doc}"""\n\n{body}', encoding="utf-8")


def test_a_long_module_needs_a_size_line(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    _module(pkg / "short.py", "Short.", 10)
    _module(pkg / "long.py", "Long, no reason.\n\nSize matters here.\n", sizes.LIMIT + 5)
    _module(pkg / "why.py", "Long.\n\nSize (~610 lines): one state machine.\n", sizes.LIMIT + 5)
    problems, notes = sizes.check(pkg, tmp_path, {})
    assert len(problems) == 1 and problems[0].startswith("pkg/long.py: ")
    assert "fix: split it by role, or add a line 'Size: " in problems[0]
    assert notes == []


def test_pending_entries_are_printed_and_cannot_rot(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    _module(pkg / "big.py", "Big.", sizes.LIMIT + 1)
    _module(pkg / "small.py", "Small now.", 3)
    pending = {"pkg/big.py": "split elsewhere", "pkg/small.py": "was big", "pkg/gone.py": "?"}
    problems, notes = sizes.check(pkg, tmp_path, pending)
    n = (pkg / "big.py").read_text().count("\n")
    assert n > sizes.LIMIT
    assert notes == [f"pkg/big.py: {n} lines, PENDING — split elsewhere"]
    assert sorted(p.split(":")[0] for p in problems) == ["pkg/gone.py", "pkg/small.py"]


def test_the_tree_passes() -> None:
    problems, _notes = sizes.check(ROOT / "greencpn", ROOT, sizes.PENDING)
    assert problems == []
