"""Issue #13 (one settings system): every hook kind with a wrong or missing field is refused by
``greencpn check`` with ONE clear error naming the file, the pool, the field and a fix — no
traceback. The example fleet with one pool's ``hook`` line replaced."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from greencpn import cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "data" / "example"
POOL = "cal-h100"  # the first pool whose example hook is kind "none"
ORIGINAL = 'hook = { kind = "none" }'

#: (hook table, the field the error must name, words its fix must contain)
CASES: dict[str, tuple[str, str, str]] = {
    # a command hook that names no command could switch nothing: refused at load (a pool to
    # plan freely without switching it is kind "none" with advisory = true)
    "command-no-command": ('{ kind = "command" }', "hook.power_on", "advisory = true"),
    "command-no-command-only-timeout": (
        '{ kind = "command", timeout_s = 5 }',
        "hook.power_on",
        "power_on =",
    ),
    "command-bad-timeout": (
        '{ kind = "command", power_on = "/bin/true", timeout_s = "long" }',
        "hook.timeout_s",
        "timeout_s",
    ),
    "command-unknown-key": (
        '{ kind = "command", power_on = "/bin/true", poweroff = "/bin/true" }',
        "hook.poweroff",
        "power_off",
    ),
    "slurm-unknown-key": ('{ kind = "slurm", partition = "gpu" }', "hook.partition", "use only"),
    "slurm-bad-timeout": ('{ kind = "slurm", timeout_s = -1 }', "hook.timeout_s", "timeout_s"),
    "kubernetes-bad-grace": (
        '{ kind = "kubernetes", grace_period_s = "x" }',
        "hook.grace_period_s",
        "grace_period_s = 30",
    ),
    "ipmi-no-bmcs": ('{ kind = "ipmi", user = "greencpn" }', "hook.bmcs", "bmcs"),
    "wol-no-macs": ('{ kind = "wol" }', "hook.macs", "macs"),
    "agent-no-url": ('{ kind = "agent" }', "hook.url", "url ="),
    "none-with-keys": ('{ kind = "none", power_on = "/bin/true" }', "hook", "remove"),
    "unknown-kind": ('{ kind = "ssh" }', "hook.kind", "one of"),
    "kind-not-a-string": ("{ kind = 3 }", "hook.kind", ""),
}


def _fleet(tmp_path: Path, hook: str) -> Path:
    dest = tmp_path / "example"
    shutil.copytree(EXAMPLE, dest)
    cfg = dest / "fleet.toml"
    text = cfg.read_text()
    assert ORIGINAL in text
    cfg.write_text(text.replace(ORIGINAL, f"hook = {hook}", 1))
    return cfg


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_hook_kind_with_a_bad_field_is_one_clear_error(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hook, field, fix = CASES[case]
    cfg = _fleet(tmp_path, hook)
    assert cli.main(["check", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("greencpn: error: "), err
    assert str(cfg) in err, err  # the file
    assert f"({POOL}).{field}" in err, err  # the pool and the field
    assert "fix" in err and fix in err.split("fix", 1)[1], err
    assert "Traceback" not in err


def test_the_unchanged_example_passes_the_same_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control: the replacement above is what each error is about."""
    cfg = _fleet(tmp_path, ORIGINAL.removeprefix("hook = "))
    assert cli.main(["check", "--config", str(cfg)]) == 0, capsys.readouterr().err


def test_a_bad_hook_through_the_installed_command_has_no_traceback(tmp_path: Path) -> None:
    cfg = _fleet(tmp_path, '{ kind = "wol" }')
    res = subprocess.run(
        [sys.executable, "-m", "greencpn", "check", "--config", str(cfg)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("greencpn: error: ") and "Traceback" not in res.stderr
    assert f"({POOL}).hook.macs" in res.stderr
