"""Issue #9.9: hook and hostlist settings are checked when the config is loaded (so ``greencpn
plan`` refuses them too), all problems in one error, each naming the pool."""

from __future__ import annotations

from pathlib import Path

import pytest

from greencpn.cli import main
from greencpn.config import load_config
from greencpn.errors import ConfigError

HEAD = """
name = "t"
[carbon]
file = "carbon.csv"
[[sites]]
name = "s1"
zone = "DE"
pue = 1.2
"""


def pool(name: str, nodes: int, hostlist: str | None, hook: str) -> str:
    hl = f'hostlist = "{hostlist}"\n' if hostlist is not None else ""
    return f"""
[[pools]]
name = "{name}"
site = "s1"
nodes = {nodes}
gpu_model = "A100-SXM4-40GB"
gpus_per_node = 1
node_idle_w = 400.0
{hl}hook = {hook}
"""


def write(tmp: Path, *pools: str) -> Path:
    (tmp / "carbon.csv").write_text("timestamp,DE\n")
    p = tmp / "fleet.toml"
    p.write_text(HEAD + "".join(pools))
    return p


def test_every_hook_and_hostlist_problem_at_load_naming_the_pool(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        pool("ok", 2, "ok[1-2]", '{ kind = "command", power_on = "/bin/true" }'),
        pool("osl-h100", 2, "osl[1-2]", '{ kind = "ipmi" }'),  # no bmcs, no user
        pool("lon-a100", 6, "lon-a[01-06", '{ kind = "slurm" }'),  # broken
        pool("short", 4, "s[1-3]", '{ kind = "slurm" }'),  # 3 names for 4 nodes
        pool("none-hl", 2, None, '{ kind = "slurm" }'),  # a hook, but no node names
        pool("typo", 1, "t1", '{ kind = "command", timout_s = 5 }'),
    )
    with pytest.raises(ConfigError) as ei:
        load_config(cfg)
    msg = str(ei.value)
    assert str(cfg) in msg
    for needle in (
        "pools[1](osl-h100).hook.bmcs",
        "pools[2](lon-a100).hostlist",
        "lon-a[01-06",
        "pools[3](short).hostlist",
        "3 name(s) for nodes = 4",
        "pools[4](none-hl).hostlist",
        "pools[5](typo).hook.timout_s",
    ):
        assert needle in msg, (needle, msg)
    assert "pools[0](ok)" not in msg
    assert ei.value.field == "pools[1](osl-h100).hook.bmcs"


def test_pool_without_a_hook_needs_no_hostlist_and_nodes_listed_twice_are_refused(
    tmp_path: Path,
) -> None:
    load_config(write(tmp_path, pool("adv", 3, None, '{ kind = "none" }')))
    cfg = write(
        tmp_path,
        pool("a", 2, "n[1-2]", '{ kind = "command", power_on = "/bin/true" }'),
        pool("b", 2, "n[2-3]", '{ kind = "command", power_on = "/bin/true" }'),
    )
    with pytest.raises(ConfigError, match=r"pools\[1\]\(b\)\.hostlist.*n2.*pools\[0\]\(a\)"):
        load_config(cfg)


def test_checked_without_credentials_or_network(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # a valid ipmi table whose password file lives on the control host only, and a kubernetes
    # pool without a kubeconfig here: the config still loads (credentials are read at apply)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    load_config(
        write(
            tmp_path,
            pool(
                "i",
                1,
                "i1",
                '{ kind = "ipmi", user = "admin", bmc_template = "{node}-bmc", '
                'password_file = "/etc/greencpn/ipmi.pw" }',
            ),
            pool("k", 1, "k1", '{ kind = "kubernetes" }'),
        )
    )


def test_plan_cli_refuses_the_config_with_exit_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = write(tmp_path, pool("lon-a100", 6, "lon-a[01-06", '{ kind = "slurm" }'))
    assert main(["plan", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("greencpn: error:") and "pools[0](lon-a100).hostlist" in err
