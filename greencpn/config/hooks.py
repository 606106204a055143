"""``[pools.hook]``: how a pool's nodes are powered (read by ``greencpn apply``).

One strict pydantic model per ``kind`` (:data:`HOOK_MODELS`), joined into :data:`HookConfig`, a
union discriminated on ``kind`` (a table without ``kind`` is ``kind = "none"``). Each model
forbids keys its kind does not read, so a typo is refused at load, not ignored at apply. Its
``Field`` defaults are the ones the hook builders in :mod:`greencpn.actuate.hooks` use, and each
field's ``examples`` give the fix an error shows (``write timeout_s = 120.0``).

A problem a field's type cannot express (``ipmi`` needs ``bmcs`` or ``bmc_template``) is raised
with :func:`hook_error`, which names the key, so :mod:`greencpn.config.errors` reports it as
``pools[i](name).hook.<key>`` with its fix, like any type error. Credentials, kubeconfigs and the
network are never touched here: that is apply's work.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

#: the command hook's operations (``greencpn.actuate.hooks.command.OPERATIONS``)
COMMAND_OPERATIONS = ("power_on", "power_off", "drain", "resume", "status")
_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-]?)[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$")

NonEmptyStr = Annotated[str, Field(min_length=1)]
#: a command: one shell-like string (split with shlex) or a list of strings
Argv = Annotated[
    NonEmptyStr | Annotated[list[str], Field(min_length=1)], Field(union_mode="left_to_right")
]


def hook_error(key: str, message: str, fix: str) -> PydanticCustomError:
    """A validation error about ``hook.<key>`` carrying its fix (read by config.errors)."""
    return PydanticCustomError("hook", "{message}", {"message": message, "key": key, "fix": fix})


class _Hook(BaseModel):
    # strict: a string is not a number here, as in the hook builders (TOML has real types)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)
    kind: str
    advisory: bool = Field(
        default=False,
        description="kind 'none' only: plan the pool's nodes freely although greencpn cannot "
        "switch them (the plan is advice for an operator); default: planned always on",
    )

    @model_validator(mode="after")
    def _advisory_is_for_none(self) -> _Hook:
        if self.advisory and self.kind != "none":
            raise hook_error(
                "advisory",
                f"advisory applies to kind 'none' only (this pool's hook is '{self.kind}', "
                "which greencpn switches)",
                "remove it",
            )
        return self

    def as_table(self) -> dict[str, Any]:
        """The table as written (``kind`` and the keys set, nested hooks as tables): what the
        builders of :mod:`greencpn.actuate.hooks` read, with their own defaults for the rest."""
        out: dict[str, Any] = {"kind": self.kind}
        for key in sorted(self.model_fields_set - {"kind", "advisory"}):
            value = getattr(self, key)
            out[key] = value.as_table() if isinstance(value, _Hook) else value
        return out


class NoneHookConfig(_Hook):
    """``kind = "none"``: greencpn does not switch the pool (planned always on unless
    ``advisory``). Takes no other key."""

    kind: Literal["none"] = "none"


class CommandHookConfig(_Hook):
    """``kind = "command"``: your scripts, called with a hostlist (docs/node-hooks.md)."""

    kind: Literal["command"] = "command"
    power_on: Argv | None = Field(default=None, examples=["/opt/fleet/on.sh"])
    power_off: Argv | None = Field(default=None, examples=["/opt/fleet/off.sh"])
    drain: Argv | None = Field(default=None, examples=["/opt/fleet/drain.sh"])
    resume: Argv | None = Field(default=None, examples=["/opt/fleet/resume.sh"])
    status: Argv | None = Field(default=None, examples=["/opt/fleet/status.sh"])
    timeout_s: float = Field(default=120.0, ge=0.001, description="per command, s")
    timeouts_s: dict[Literal["power_on", "power_off", "drain", "resume", "status"], float] = Field(
        default_factory=dict, examples=[{"power_on": 600}]
    )
    permanent_exit_codes: list[int] = Field(default_factory=list, examples=[[2]])
    env: dict[str, str] = Field(default_factory=dict, examples=[{"SITE": "osl"}])

    @model_validator(mode="after")
    def _names_a_command(self) -> CommandHookConfig:
        for op, t in self.timeouts_s.items():
            if t <= 0:
                raise hook_error(
                    f"timeouts_s.{op}", f"must be > 0, got {t!r}", "write a number of seconds"
                )
        if all(getattr(self, op) is None for op in COMMAND_OPERATIONS):
            raise hook_error(
                "power_on",
                f"hook kind 'command' names no command (none of {', '.join(COMMAND_OPERATIONS)}), "
                "so greencpn could switch nothing",
                'add power_on = "/path/to/on.sh" and the others the pool needs; a pool to plan '
                'freely without switching it is kind = "none" with advisory = true',
            )
        return self


class SlurmHookConfig(_Hook):
    """``kind = "slurm"``: Slurm's power saving (``scontrol power_down`` / ``power_up``)."""

    kind: Literal["slurm"] = "slurm"
    scontrol: NonEmptyStr = "scontrol"
    sinfo: NonEmptyStr = "sinfo"
    squeue: NonEmptyStr = "squeue"
    slurm_conf: NonEmptyStr | None = Field(default=None, examples=["/etc/slurm/slurm.conf"])
    timeout_s: float = Field(default=30.0, ge=0.001, description="per Slurm command, s")
    power_down_mode: Literal["power_down", "power_down_asap", "power_down_force"] = "power_down"
    status_format: Literal["auto", "json", "text"] = "auto"
    verify: bool = True


class KubernetesHookConfig(_Hook):
    """``kind = "kubernetes"``: cordon/drain through the API; ``power`` switches the machines."""

    kind: Literal["kubernetes"] = "kubernetes"
    power: HookConfig | None = Field(default=None, examples=[{"kind": "ipmi"}])
    host: NonEmptyStr | None = Field(default=None, examples=["https://api.k8s:6443"])
    token_file: NonEmptyStr | None = Field(default=None, examples=["/etc/greencpn/k8s.token"])
    ca_file: NonEmptyStr | None = Field(default=None, examples=["/etc/greencpn/k8s-ca.pem"])
    insecure_skip_tls_verify: bool = False
    kubeconfig: NonEmptyStr | None = Field(default=None, examples=["~/.kube/config"])
    context: NonEmptyStr | None = Field(default=None, examples=["prod"])
    request_timeout_s: float = Field(default=10.0, ge=0.001)
    grace_period_s: int | None = Field(default=None, ge=0, examples=[30])
    eviction_attempts: int = Field(default=5, ge=1)
    eviction_retry_interval_s: float = Field(default=5.0, ge=0)
    node_names: dict[str, str] = Field(default_factory=dict, examples=[{"gpu001": "gpu001.k8s"}])
    evict_unmanaged: bool = False


class IpmiHookConfig(_Hook):
    """``kind = "ipmi"``: ``ipmitool`` against each node's BMC."""

    kind: Literal["ipmi"] = "ipmi"
    drain_hook: HookConfig | None = Field(default=None, examples=[{"kind": "slurm"}])
    bmcs: dict[str, str] = Field(default_factory=dict, examples=[{"node01": "10.0.0.101"}])
    bmc_template: NonEmptyStr | None = Field(default=None, examples=["{node}-ipmi"])
    user: NonEmptyStr | None = Field(default=None, examples=["greencpn"])
    password_env: NonEmptyStr = "IPMI_PASSWORD"
    password_file: NonEmptyStr | None = Field(default=None, examples=["/etc/greencpn/ipmi.pw"])
    port: int = Field(default=623, ge=1)
    interface: NonEmptyStr = "lanplus"
    cipher_suite: int | None = Field(default=3, examples=[17])
    privilege: NonEmptyStr = "ADMINISTRATOR"
    ipmitool: NonEmptyStr = "ipmitool"
    timeout_s: float = Field(default=20.0, ge=0.001)
    soft_off_timeout_s: float = Field(default=300.0, ge=0)
    poll_interval_s: float = Field(default=5.0, ge=0.01)
    hard_off: bool = True
    parallel: int = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _addresses_and_user(self) -> IpmiHookConfig:
        if not self.bmcs and not self.bmc_template:
            raise hook_error(
                "bmcs",
                "hook kind 'ipmi' needs 'bmcs' (node → BMC address) or 'bmc_template'",
                '[pools.hook.bmcs] node01 = "10.0.0.101"',
            )
        if self.bmc_template and "{node}" not in self.bmc_template:
            raise hook_error(
                "bmc_template",
                f"must contain {{node}}, got {self.bmc_template!r}",
                'write bmc_template = "{node}-ipmi"',
            )
        if self.user is None:
            raise hook_error(
                "user",
                "hook kind 'ipmi' needs 'user'",
                'add user = "..." to the pool\'s [pools.hook] table',
            )
        return self


class WolHookConfig(_Hook):
    """``kind = "wol"``: Wake-on-LAN on; ``off`` (another hook) switches the nodes off."""

    kind: Literal["wol"] = "wol"
    macs: dict[str, str] = Field(default_factory=dict, examples=[{"node01": "aa:bb:cc:dd:ee:01"}])
    off: HookConfig | None = Field(default=None, examples=[{"kind": "command"}])
    address: NonEmptyStr = "255.255.255.255"
    port: int = Field(default=9, ge=1)
    repeat: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _macs(self) -> WolHookConfig:
        if not self.macs:
            raise hook_error(
                "macs",
                "hook kind 'wol' needs a 'macs' table (node → MAC)",
                '[pools.hook.macs] node01 = "aa:bb:cc:dd:ee:01"',
            )
        for node, mac in self.macs.items():
            if not _MAC.match(mac.strip()):
                raise hook_error(
                    f"macs.{node}",
                    f"{mac!r} is not a MAC address like aa:bb:cc:dd:ee:ff",
                    "write it as aa:bb:cc:dd:ee:ff",
                )
        return self


class AgentHookConfig(_Hook):
    """``kind = "agent"``: greencpn's node agent over HTTPS (docs/agent.md)."""

    kind: Literal["agent"] = "agent"
    url: NonEmptyStr | None = Field(default=None, examples=["http://{node}:9123"])
    urls: dict[str, str] = Field(
        default_factory=dict, examples=[{"node01": "http://10.0.0.1:9123"}]
    )
    key_dir: NonEmptyStr | None = Field(default=None, examples=["/etc/greencpn/agent-keys"])
    key_files: dict[str, str] = Field(
        default_factory=dict, examples=[{"node01": "/etc/k/node01.key"}]
    )
    tls_ca: NonEmptyStr | None = Field(default=None, examples=["/etc/greencpn/ca.pem"])
    tls_cert: NonEmptyStr | None = Field(default=None, examples=["/etc/greencpn/client.pem"])
    tls_key: NonEmptyStr | None = Field(default=None, examples=["/etc/greencpn/client.key"])
    connect_timeout_s: float = Field(default=2.0, ge=0.001)
    read_timeout_s: float = Field(default=10.0, ge=0.001)
    retries: int = Field(default=2, ge=0)
    max_parallel: int = Field(default=16, ge=1)
    power: HookConfig | None = Field(default=None, examples=[{"kind": "ipmi"}])

    @model_validator(mode="after")
    def _endpoints(self) -> AgentHookConfig:
        if self.url is None and not self.urls:
            raise hook_error(
                "url",
                "hook kind 'agent' needs 'url' (a template with {node}) or 'urls'",
                'add url = "http://{node}:9123"',
            )
        if self.url is not None and "{node}" not in self.url:
            raise hook_error(
                "url",
                f"url {self.url!r} has no {{node}} placeholder",
                'write url = "http://{node}:9123" or list nodes in [pools.hook.urls]',
            )
        if self.key_dir is None and not self.key_files:
            raise hook_error(
                "key_dir",
                "hook kind 'agent' needs 'key_dir' or 'key_files'",
                'add key_dir = "/etc/greencpn/agent-keys" holding <node>.key files',
            )
        return self


def _default_kind(value: Any) -> Any:
    """A hook table without ``kind`` is ``kind = "none"`` (as before the union)."""
    if isinstance(value, dict) and "kind" not in value:
        return {"kind": "none", **value}
    return value


AnyHookConfig = (
    NoneHookConfig
    | CommandHookConfig
    | SlurmHookConfig
    | KubernetesHookConfig
    | IpmiHookConfig
    | WolHookConfig
    | AgentHookConfig
)
#: a pool's hook table: one model per ``kind`` (the discriminator)
HookConfig = Annotated[AnyHookConfig, Field(discriminator="kind"), BeforeValidator(_default_kind)]

#: kind → its model
HOOK_MODELS: dict[str, type[_Hook]] = {
    m.model_fields["kind"].default: m
    for m in (
        NoneHookConfig,
        CommandHookConfig,
        SlurmHookConfig,
        KubernetesHookConfig,
        IpmiHookConfig,
        WolHookConfig,
        AgentHookConfig,
    )
}

for _m in HOOK_MODELS.values():
    _m.model_rebuild()


def hook_keys(kind: str) -> list[str]:
    """The keys a table of ``kind`` may hold besides ``kind`` (``advisory`` for none only)."""
    model = HOOK_MODELS[kind]
    skip = {"kind"} if kind == "none" else {"kind", "advisory"}
    return sorted(set(model.model_fields) - skip)
