"""``[job_actuation]``: the schedulers greencpn steers pending jobs through (docs/jobs.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from greencpn.config.base import NonNegFloat, PositiveFloat, _Strict


class JobPoolTarget(_Strict):
    """How a plan pool is named to the scheduler (only the cluster's ``steer`` field is used)."""

    partition: str | None = Field(default=None, min_length=1, description="Slurm partition")
    features: str | None = Field(
        default=None, min_length=1, description="Slurm --constraint, e.g. 'a100&green'"
    )
    nodes: str | None = Field(default=None, min_length=1, description="Slurm hostlist")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Kubernetes node labels the pod must match"
    )


class JobClusterConfig(_Strict):
    """One scheduler greencpn acts on (``[[job_actuation.clusters]]``)."""

    name: str = Field(min_length=1, description="cluster name (Slurm ClusterName)")
    kind: Literal["slurm", "kubernetes", "command", "fake"]
    sites: list[str] = Field(min_length=1, description="plan sites whose jobs this cluster runs")
    steer: Literal["none", "partition", "features", "nodes"] = Field(
        default="none", description="how a job is sent to its planned pool"
    )
    pools: dict[str, JobPoolTarget] = Field(
        default_factory=dict, description="plan pool name -> scheduler names"
    )
    timeout_s: PositiveFloat = Field(default=30.0, description="per scheduler call, s")
    # slurm
    slurm_conf: str | None = Field(default=None, description="this cluster's slurm.conf")
    # kubernetes
    host: str | None = Field(default=None, description="API server URL")
    token_file: str | None = None
    ca_file: str | None = None
    insecure_skip_tls_verify: bool = False
    namespace: str | None = Field(default=None, description="only this namespace (default all)")
    gate: str = Field(default="greencpn.io/planned-start", description="scheduling gate name")
    lease_namespace: str = Field(
        default="default", min_length=1, description="namespace of greencpn's heartbeat Lease"
    )
    heartbeat_s: PositiveFloat = Field(
        default=7200.0,
        description="heartbeat lease duration, s (the webhook stops gating when it runs out): "
        "about twice the step period",
    )
    # command
    command: list[str] | None = Field(default=None, min_length=1, description="argv")

    @model_validator(mode="after")
    def _check(self) -> JobClusterConfig:
        if self.kind == "command" and not self.command:
            raise ValueError('kind "command" needs command = ["/path/to/script"]')
        if self.kind == "kubernetes" and not self.host:
            raise ValueError('kind "kubernetes" needs host = "https://API:6443"')
        if self.kind != "kubernetes" and self.host is not None:
            raise ValueError(f'host is for kind "kubernetes", not {self.kind!r}')
        if self.kind != "slurm" and self.slurm_conf is not None:
            raise ValueError(f'slurm_conf is for kind "slurm", not {self.kind!r}')
        if self.kind != "command" and self.command is not None:
            raise ValueError(f'command is for kind "command", not {self.kind!r}')
        if self.kind == "kubernetes" and self.steer not in ("none", "nodes"):
            raise ValueError('kubernetes steers with node affinity: write steer = "nodes"')
        if self.steer != "none":
            for pool, t in self.pools.items():
                if self.kind == "kubernetes":
                    if not t.node_selector:
                        raise ValueError(f"pools.{pool} needs node_selector = {{label = value}}")
                elif getattr(t, self.steer) is None:
                    raise ValueError(f'steer = "{self.steer}" but pools.{pool} has no {self.steer}')
        return self


class JobActuationConfig(_Strict):
    """``[job_actuation]``: make pending jobs start where and when the plan says.

    Deadlines: the scheduler's own (Slurm ``--deadline``) when set, else release + time limit +
    slack (by QOS, else by partition, else ``default_slack_h``). The latest safe start is the
    deadline minus the time limit (the job at full power); greencpn never defers past it.
    """

    defer_with: Literal["begin_time", "hold"] = Field(
        default="begin_time",
        description="begin_time: the scheduler starts the job on its own even if greencpn dies; "
        "hold: greencpn releases it (at the latest safe start at the latest)",
    )
    excluded_users: list[str] = Field(default_factory=list)
    excluded_accounts: list[str] = Field(default_factory=list)
    excluded_partitions: list[str] = Field(default_factory=list)
    excluded_qos: list[str] = Field(default_factory=list)
    default_slack_h: NonNegFloat = Field(
        default=24.0, description="deadline slack for jobs without their own deadline, h"
    )
    slack_h_per_partition: dict[str, NonNegFloat] = Field(default_factory=dict)
    slack_h_per_qos: dict[str, NonNegFloat] = Field(default_factory=dict)
    min_defer_s: NonNegFloat = Field(
        default=60.0, description="a begin time less than this ahead is not worth a change, s"
    )
    clusters: list[JobClusterConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> JobActuationConfig:
        names = [c.name for c in self.clusters]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate cluster name(s) {dup}")
        sites = [s for c in self.clusters for s in c.sites]
        dup = sorted({s for s in sites if sites.count(s) > 1})
        if dup:
            raise ValueError(f"site(s) {dup} are in more than one cluster")
        return self
