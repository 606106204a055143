"""Hostlist expansion/compression: hand cases from Slurm's docs plus randomised round trips."""

from __future__ import annotations

import random

import pytest

from greencpn.actuate.hostlist import (
    HostlistError,
    compress,
    expand,
    expand_unique,
    sort_hosts,
)
from greencpn.errors import ConfigError


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        # slurm.conf(5): "NodeName=linux[0-64,128]" style and the scontrol(1) examples
        ("linux[0-3,128]", ["linux0", "linux1", "linux2", "linux3", "linux128"]),
        (
            "node[001-004,007],gpu-a[1-2]",
            ["node001", "node002", "node003", "node004", "node007", "gpu-a1", "gpu-a2"],
        ),
        ("tux[1-3]", ["tux1", "tux2", "tux3"]),
        ("n[08-10]", ["n08", "n09", "n10"]),
        ("n[8-10]", ["n8", "n9", "n10"]),  # width follows the lower bound
        ("n[098-101]", ["n098", "n099", "n100", "n101"]),
        ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
        ("a[1-2]b[3,5]c", ["a1b3c", "a1b5c", "a2b3c", "a2b5c"]),
        ("single", ["single"]),
        ("a,b c\td", ["a", "b", "c", "d"]),
        ("x[7]", ["x7"]),
        ("", []),
        ("[1-3]", ["1", "2", "3"]),
        ("n[1-2]-ib", ["n1-ib", "n2-ib"]),
    ],
)
def test_expand_hand_cases(expr: str, names: list[str]) -> None:
    assert expand(expr) == names


@pytest.mark.parametrize(
    ("names", "expr"),
    [
        (
            ["node001", "node002", "node003", "node004", "node007", "gpu-a2", "gpu-a1"],
            "gpu-a[1-2],node[001-004,007]",
        ),
        (["tux3", "tux1", "tux2", "tux2"], "tux[1-3]"),
        (["n9", "n10"], "n[9-10]"),
        (["n09", "n10"], "n[09-10]"),
        (["n009", "n10"], "n[009,10]"),  # widths differ: n[009-010] would rename n10
        (["n2", "n10", "n1"], "n[1-2,10]"),  # natural order, not string order
        (["login", "n1"], "login,n1"),
        (["n01-ib", "n02-ib", "n03-ib"], "n[01-03]-ib"),
        (["rack1-n01", "rack1-n02", "rack2-n01"], "rack1-n[01-02],rack2-n01"),
        ([], ""),
    ],
)
def test_compress_hand_cases(names: list[str], expr: str) -> None:
    assert compress(names) == expr
    assert expand(expr) == sort_hosts(set(names))


@pytest.mark.parametrize(
    "bad",
    ["n[1-3", "n1-3]", "n[3-1]", "n[a-b]", "n[1-2[3]]", "n[]", "n[1--2]", "n[0-9999999]"],
)
def test_bad_expressions_are_config_errors(bad: str) -> None:
    with pytest.raises(HostlistError) as info:
        expand(bad)
    assert isinstance(info.value, ConfigError)
    assert repr(bad) in str(info.value) and "fix:" in str(info.value)


def test_compress_refuses_names_with_brackets() -> None:
    with pytest.raises(HostlistError):
        compress(["ok1", "bad[1]"])


def _random_name(rng: random.Random) -> str:
    prefix = rng.choice(["n", "node", "gpu-a", "rack1-n", "rack12-n", "x", "login", ""])
    suffix = rng.choice(["", "", "", "-ib", "b"])
    if prefix == "login":
        return prefix
    number = rng.randint(0, 130)
    width = rng.choice([1, 1, 2, 3])
    return f"{prefix}{str(number).zfill(width)}{suffix}" or "0"


@pytest.mark.parametrize("seed", range(200))
def test_roundtrip_property(seed: int) -> None:
    rng = random.Random(seed)
    names = [_random_name(rng) for _ in range(rng.randint(0, 60))]
    expr = compress(names)
    assert expand(expr) == sort_hosts(set(names))
    assert expand_unique(expr) == sort_hosts(set(names))
    # compressing is idempotent
    assert compress(expand(expr)) == expr


def test_compress_real_range_is_compact() -> None:
    names = [f"gpu{i:03d}" for i in range(1, 1025)]
    assert compress(names) == "gpu[001-1024]"
    assert expand("gpu[001-1024]") == names


def test_expand_memo_cannot_go_stale() -> None:
    """expand() is memoised per expression: each call still returns its own list (a caller
    changing it changes no later answer), another expression another answer, and a bad one
    is refused on every call."""
    a = expand("n[1-3]")
    a.append("intruder")
    a[0] = "changed"
    assert expand("n[1-3]") == ["n1", "n2", "n3"]
    assert expand("n[1-4]") == ["n1", "n2", "n3", "n4"]
    assert expand(["n[1-2]", "m1"]) == ["n1", "n2", "m1"]
    for _ in range(2):
        with pytest.raises(ConfigError):
            expand("n[3-1]")
