"""Fleet configuration: TOML files validated with pydantic.

Every validation problem becomes a :class:`~greencpn.errors.ConfigError` that names the file,
the field (dotted path, e.g. ``pools[2].gpu_model``) and how to fix it.

File layout (all paths relative to the config file)::

    [horizon]            start (UTC), slots, slot_minutes
    [objective]          carbon / cost / lateness weights
    [solver]             time_limit_s, mip_rel_gap, threads
    [carbon]             file = "carbon.csv"  (wide or long CSV, UTC)
    [[gpu_models]]       optional inline GPU profiles (else models/gpus/*.toml)
    [[sites]]            name, zone, jurisdictions, pue, power_budget_kw, price_per_kwh, latency_ms
    [[pools]]            name, site, nodes, gpu_model, gpus_per_node, node power, timing, hook
    jobs_file = "jobs.csv"  and/or  [[jobs]]

See README.md ("Config format") for every field with its unit and default.

Modules by role: :mod:`~greencpn.config.base` (strict model base, UTC parsing),
:mod:`~greencpn.config.gpu` (GPU profiles), :mod:`~greencpn.config.hooks` (``[pools.hook]``),
:mod:`~greencpn.config.jobs` (jobs and job files), :mod:`~greencpn.config.planning` (horizon,
objective, solver, carbon), :mod:`~greencpn.config.controller`,
:mod:`~greencpn.config.job_actuation`, :mod:`~greencpn.config.fleet` (sites, pools, the file),
:mod:`~greencpn.config.errors` (validation errors → ConfigError) and
:mod:`~greencpn.config.load` (loading and the cross-field checks). Import public names from
``greencpn.config``.
"""

from __future__ import annotations

from greencpn.config.base import NonNegFloat, PositiveFloat, _parse_utc, per_slot, slot_times
from greencpn.config.controller import ControllerConfig
from greencpn.config.fleet import (
    SUBMIT_SITE_RULE,
    FleetConfig,
    FleetFile,
    PoolConfig,
    SiteConfig,
    allowed_sites,
    baseline_submit_site,
)
from greencpn.config.gpu import (
    DEFAULT_MODELS_DIR,
    PACKAGE_ROOT,
    PACKAGED_MODELS_ROOT,
    SOURCE_MODELS_ROOT,
    GpuLevel,
    GpuModelConfig,
    WorkloadClassProfile,
    default_models_dir,
    load_gpu_model,
    load_gpu_models,
)
from greencpn.config.hooks import (
    HOOK_MODELS,
    AgentHookConfig,
    AnyHookConfig,
    CommandHookConfig,
    HookConfig,
    IpmiHookConfig,
    KubernetesHookConfig,
    NoneHookConfig,
    SlurmHookConfig,
    WolHookConfig,
)
from greencpn.config.job_actuation import JobActuationConfig, JobClusterConfig, JobPoolTarget
from greencpn.config.jobs import (
    JOB_FILE_READERS,
    JobConfig,
    JobFileReader,
    load_jobs_csv,
    register_job_file_reader,
)
from greencpn.config.load import (
    check_config,
    check_hooks_and_hostlists,
    check_job_actuation,
    load_config,
    validate_hook_table,
)
from greencpn.config.planning import CarbonConfig, HorizonConfig, ObjectiveConfig, SolverConfig

__all__ = [
    "DEFAULT_MODELS_DIR",
    "JOB_FILE_READERS",
    "PACKAGED_MODELS_ROOT",
    "PACKAGE_ROOT",
    "SOURCE_MODELS_ROOT",
    "SUBMIT_SITE_RULE",
    "CarbonConfig",
    "ControllerConfig",
    "FleetConfig",
    "FleetFile",
    "GpuLevel",
    "GpuModelConfig",
    "HOOK_MODELS",
    "AgentHookConfig",
    "AnyHookConfig",
    "CommandHookConfig",
    "HookConfig",
    "IpmiHookConfig",
    "KubernetesHookConfig",
    "NoneHookConfig",
    "SlurmHookConfig",
    "WolHookConfig",
    "HorizonConfig",
    "JobActuationConfig",
    "JobClusterConfig",
    "JobConfig",
    "JobFileReader",
    "JobPoolTarget",
    "NonNegFloat",
    "ObjectiveConfig",
    "PoolConfig",
    "PositiveFloat",
    "SiteConfig",
    "SolverConfig",
    "WorkloadClassProfile",
    "_parse_utc",
    "allowed_sites",
    "baseline_submit_site",
    "check_config",
    "check_hooks_and_hostlists",
    "check_job_actuation",
    "default_models_dir",
    "load_config",
    "load_gpu_model",
    "load_gpu_models",
    "load_jobs_csv",
    "per_slot",
    "register_job_file_reader",
    "validate_hook_table",
    "slot_times",
]
