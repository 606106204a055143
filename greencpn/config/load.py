"""Loading a fleet file: TOML → :class:`FleetFile` → :class:`FleetConfig` with its files
resolved, then the cross-field checks (one rule each)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from greencpn.config.errors import _raise_validation, describe, pick
from greencpn.config.fleet import (
    SUBMIT_SITE_RULE,
    FleetConfig,
    FleetFile,
    PoolConfig,
    allowed_sites,
)
from greencpn.config.gpu import default_models_dir, load_gpu_models
from greencpn.config.hooks import AnyHookConfig, HookConfig
from greencpn.config.jobs import JOB_FILE_READERS, load_jobs_csv
from greencpn.errors import ConfigError


def load_config(path: str | Path) -> FleetConfig:
    """Load, validate and cross-check a fleet config file."""
    path = Path(path).resolve()
    src = str(path)
    if not path.is_file():
        raise ConfigError(
            "config file not found", source=src, fix="pass --config PATH to a TOML file"
        )
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=src, fix="fix the TOML syntax") from None
    check_hooks_and_hostlists(data, src)
    try:
        raw = FleetFile.model_validate(data)
    except ValidationError as exc:
        _raise_validation(exc, src, data)
        raise
    base = path.parent

    if raw.models_dir:
        models_dir = base / raw.models_dir
        if not models_dir.is_dir():
            raise ConfigError(
                f"models_dir {str(models_dir)!r} is not a directory",
                source=src,
                field="models_dir",
                fix="point it at a folder of GPU profile *.toml files, or remove it to use the "
                f"bundled profiles ({default_models_dir('gpus')})",
            )
    else:
        models_dir = default_models_dir("gpus")
    gpu_models = load_gpu_models(models_dir)
    for m in raw.gpu_models:
        for key in [m.name, *m.aliases]:
            gpu_models[key.lower()] = m

    jobs = list(raw.jobs)
    if raw.jobs_file:
        jobs_path = base / raw.jobs_file
        reader = JOB_FILE_READERS.get(jobs_path.suffix.lower())
        if reader is not None:
            # e.g. .json: a list of jobs, {"jobs": [...]}, or saved `squeue --json` output
            jobs = reader(jobs_path, raw.horizon.start) + jobs
        elif jobs_path.suffix.lower() != ".csv":
            raise ConfigError(
                f"no reader for {jobs_path.suffix or 'extension-less'} job files",
                source=src,
                field="jobs_file",
                fix="use a .csv file, or a .json file (its reader is registered by "
                "greencpn.sources.load, which the CLI and the control step import)",
            )
        else:
            jobs = load_jobs_csv(jobs_path) + jobs

    if raw.carbon is not None and (base / raw.carbon.file).is_dir():
        raise ConfigError(
            f"{base / raw.carbon.file} is a directory, not a carbon CSV file",
            source=src,
            field="carbon.file",
            fix="name the CSV file inside it (paths are relative to the config file)",
        )
    if raw.carbon is None and any(s.carbon_source is None for s in raw.sites):
        raise ConfigError(
            "no carbon data for some sites",
            source=src,
            field="carbon",
            fix='add [carbon] file = "carbon.csv", or carbon_source on every site',
        )
    cfg = FleetConfig(
        path=path,
        raw=raw,
        gpu_models=gpu_models,
        jobs=jobs,
        carbon_path=base / raw.carbon.file if raw.carbon else base,
    )
    check_config(cfg)
    check_job_actuation(cfg)
    return cfg


def check_config(cfg: FleetConfig) -> None:
    """Cross-field checks, one rule each; the first failure raises ConfigError."""
    src = str(cfg.path)
    names = [s.name for s in cfg.sites]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(
            f"duplicate site name(s) {sorted(dup)}",
            source=src,
            field="sites",
            fix="give every site a unique name",
        )
    pnames = [p.name for p in cfg.pools]
    dup = {n for n in pnames if pnames.count(n) > 1}
    if dup:
        raise ConfigError(
            f"duplicate pool name(s) {sorted(dup)}",
            source=src,
            field="pools",
            fix="give every pool a unique name",
        )
    for i, s in enumerate(cfg.sites):
        for fld in ("power_budget_kw", "price_per_kwh"):
            val = getattr(s, fld)
            if isinstance(val, list) and len(val) != cfg.horizon.slots:
                raise ConfigError(
                    f"has {len(val)} values but the horizon has {cfg.horizon.slots} slots",
                    source=src,
                    field=f"sites[{i}]({s.name}).{fld}",
                    fix="give one value per slot or a single constant",
                )
    for i, p in enumerate(cfg.pools):
        where = f"pools[{i}]({p.name})"
        if p.site not in names:
            raise ConfigError(
                f"unknown site {p.site!r}",
                source=src,
                field=f"{where}.site",
                fix=f"use one of {names}",
            )
        if p.gpu_model.lower() not in cfg.gpu_models:
            known = sorted({m.name for m in cfg.gpu_models.values()})
            raise ConfigError(
                f"unknown GPU model {p.gpu_model!r}",
                source=src,
                field=f"{where}.gpu_model",
                fix=f"use one of {known} or add a profile under models/gpus/ or [[gpu_models]]",
            )
        gm = cfg.gpu_models[p.gpu_model.lower()]
        if p.node_idle_w < gm.idle_w * p.gpus_per_node:
            raise ConfigError(
                f"node_idle_w={p.node_idle_w} W is below {p.gpus_per_node} idle GPUs × {gm.idle_w} W",
                source=src,
                field=f"{where}.node_idle_w",
                fix="node_idle_w is the whole node powered on with idle GPUs",
            )
    ids = [j.id for j in cfg.jobs]
    dup = {n for n in ids if ids.count(n) > 1}
    if dup:
        raise ConfigError(
            f"duplicate job id(s) {sorted(dup)[:5]}",
            source=src,
            field="jobs",
            fix="give every job a unique id",
        )
    classes = sorted(
        {c for p in cfg.pools for c in cfg.gpu_models[p.gpu_model.lower()].class_names}
    )
    for j in cfg.jobs:
        if j.workload_class is not None and j.workload_class not in classes:
            raise ConfigError(
                f"workload_class {j.workload_class!r} is not a class of any pool's GPU model",
                source=src,
                field=f"jobs({j.id}).workload_class",
                fix=f"use one of {_some(classes)} (models/README.md 'Workload classes'), or "
                "leave it out to plan the job on the model's median curve; a recurring job's own "
                "curve is a class written by `greencpn models fit --from-ledger FILE "
                "--per-workload` once it has run at the maximum cap and another (then point "
                "models_dir at the output)",
            )
    pools_by_site: dict[str, list[PoolConfig]] = {}
    for p in cfg.pools:
        pools_by_site.setdefault(p.site, []).append(p)
    for j in cfg.jobs:
        allowed = allowed_sites(j, cfg.sites)
        if not allowed:
            raise ConfigError(
                f"no site may run job {j.id!r} (jurisdictions {j.jurisdictions}, "
                f"region {j.user_region}, max latency {j.max_latency_ms} ms)",
                source=src,
                field=f"jobs({j.id})",
                fix="widen its jurisdictions or latency, or add a site that satisfies them",
            )
        if j.submit_site is not None and j.submit_site not in allowed:
            raise ConfigError(
                f"job {j.id!r} has submit_site {j.submit_site!r}, which may not run it "
                f"(allowed: {allowed})",
                source=src,
                field=f"jobs({j.id}).submit_site",
                fix=f"use one of {allowed}, or leave it empty ({SUBMIT_SITE_RULE})",
            )
        biggest = max(
            (p.nodes * p.gpus_per_node for s in allowed for p in pools_by_site.get(s, [])),
            default=0,
        )
        if j.gpus > biggest:
            raise ConfigError(
                f"job {j.id!r} needs {j.gpus} GPUs but the largest pool it may use has {biggest}",
                source=src,
                field=f"jobs({j.id}).gpus",
                fix="split the job or allow more sites",
            )


def check_hooks_and_hostlists(data: Any, source: str) -> None:
    """Every pool's hook table and hostlist in the file as read (``data``, before the rest of
    the file is validated), all problems in one :class:`ConfigError`.

    Each ``hook`` table is validated as its kind's model (:data:`~greencpn.config.hooks.HookConfig`)
    and then built the way ``greencpn apply`` would, without touching this machine (no
    credential files, kubeconfig or network), so the model and the builder cannot disagree
    silently. A pool with a hook (kind other than ``none``) needs a hostlist with exactly
    ``nodes`` names; any hostlist must parse and no node may be in two pools. Each problem names
    its pool, e.g. ``pools[2](lon-a100).hook.bmcs``. Values of another type than a pool's
    ``nodes`` or ``hostlist`` are left to the file's validation.
    """
    # lazy: the hook registry lives in actuate; it needs no network or optional dependency
    from greencpn.actuate.hooks import check_hook_table
    from greencpn.actuate.hostlist import expand

    pools = data.get("pools") if isinstance(data, dict) else None
    if not isinstance(pools, list):
        return
    problems: list[tuple[str, str, str | None]] = []  # (field, message, fix)
    owner: dict[str, str] = {}
    for i, p in enumerate(pools):
        if not isinstance(p, dict):
            continue
        label = p.get("name")
        where = f"pools[{i}]({label})" if label else f"pools[{i}]"
        hook = None
        try:
            hook = _HOOK.validate_python(p.get("hook", {}))
        except ValidationError as exc:
            fld, msg, fix = describe(pick(exc.errors()), p.get("hook"))
            problems.append((f"{where}.hook" + (f".{fld}" if fld else ""), msg, fix))
        else:
            try:  # the builder apply uses: a second reading of the same table
                check_hook_table(hook.as_table(), source=source)
            except ConfigError as exc:
                fld = (exc.field or "hook").removeprefix("hook")
                problems.append((f"{where}.hook{fld}", exc.reason, exc.fix))
        table = p.get("hook")
        kind = hook.kind if hook else (table.get("kind") if isinstance(table, dict) else None)
        kind = kind or "none"
        hostlist, nodes = p.get("hostlist"), p.get("nodes")
        if hostlist is None:
            if kind != "none":
                problems.append(
                    (
                        f"{where}.hostlist",
                        f"missing: hook kind '{kind}' needs the pool's {nodes} node names "
                        '(write e.g. hostlist = "gpu[001-040]")',
                        None,
                    )
                )
        elif isinstance(hostlist, str):
            try:
                names = expand(hostlist)
            except ConfigError as exc:
                problems.append((f"{where}.hostlist", exc.reason, exc.fix))
                names = []
            else:
                if isinstance(nodes, int) and len(names) != nodes:
                    problems.append(
                        (
                            f"{where}.hostlist",
                            f"{hostlist!r} gives {len(names)} name(s) for nodes = {nodes}",
                            None,
                        )
                    )
            twice = [n for n in names if n in owner]
            if twice:
                problems.append(
                    (
                        f"{where}.hostlist",
                        f"node(s) {', '.join(twice[:5])} also in {owner[twice[0]]}",
                        "a node belongs to one pool: remove it from one hostlist",
                    )
                )
            for n in names:
                owner.setdefault(n, where)
    if len(problems) == 1:  # one problem: its own fix
        field, reason, hint = problems[0]
        raise ConfigError(reason, source=source, field=field, fix=hint or _HOSTLIST_FIX)
    if problems:
        raise ConfigError(
            f"{len(problems)} problem(s) with node hooks or hostlists: "
            + "; ".join(f"{f}: {m}" + (f" (fix: {x})" if x else "") for f, m, x in problems),
            source=source,
            field=problems[0][0],
            fix="correct each field named above (see docs/node-hooks.md)",
        )


_HOSTLIST_FIX = (
    "write the pool's node names as a Slurm hostlist with one name per node, "
    'e.g. hostlist = "gpu[001-040]" (see docs/node-hooks.md)'
)
_HOOK: TypeAdapter[AnyHookConfig] = TypeAdapter(HookConfig)


def validate_hook_table(table: Any, *, source: str, field_prefix: str = "hook") -> AnyHookConfig:
    """One hook table (``{"kind": "ipmi", ...}``) as its kind's model, as a pool's
    ``[pools.hook]`` is read: a problem raises the :class:`ConfigError` the fleet config gives
    (``<field_prefix>.<key>``, its message and its fix). Used where a hook is configured outside
    a fleet file (Slurm's Suspend/ResumeProgram, :mod:`greencpn.actuate.suspend_resume`)."""
    try:
        return _HOOK.validate_python(table)
    except ValidationError as exc:
        fld, msg, fix = describe(pick(exc.errors()), table)
        raise ConfigError(
            msg, source=source, field=field_prefix + (f".{fld}" if fld else ""), fix=fix
        ) from None


def check_job_actuation(cfg: FleetConfig) -> None:
    """``[job_actuation]``: its clusters name known sites, their pools known pools."""
    ja = cfg.job_actuation
    if ja is None:
        return
    src = str(cfg.path)
    sites = {s.name for s in cfg.sites}
    pools = {p.name: p.site for p in cfg.pools}
    for i, c in enumerate(ja.clusters):
        where = f"job_actuation.clusters[{i}]({c.name})"
        for site in c.sites:
            if site not in sites:
                raise ConfigError(
                    f"unknown site {site!r}",
                    source=src,
                    field=f"{where}.sites",
                    fix=f"use one of {sorted(sites)}",
                )
        for pool in c.pools:
            if pool not in pools:
                raise ConfigError(
                    f"unknown pool {pool!r}",
                    source=src,
                    field=f"{where}.pools.{pool}",
                    fix=f"use one of {sorted(pools)}",
                )
            if pools[pool] not in c.sites:
                raise ConfigError(
                    f"pool {pool!r} is at site {pools[pool]!r}, not one of this cluster's sites",
                    source=src,
                    field=f"{where}.pools.{pool}",
                    fix=f"add {pools[pool]!r} to sites or move the pool to its own cluster",
                )
        if c.steer != "none":
            missing = [p for p, site in pools.items() if site in c.sites and p not in c.pools]
            if missing:
                raise ConfigError(
                    f'steer = "{c.steer}" but pool(s) {missing} have no entry',
                    source=src,
                    field=f"{where}.pools",
                    fix=f"add [job_actuation.clusters.pools.{missing[0]}] with the {c.steer}",
                )


def _some(names: list[str], n: int = 12) -> str:
    """At most ``n`` names (a fleet may have one class per recurring job), then how many more."""
    return str(names) if len(names) <= n else f"{names[:n]} and {len(names) - n} more"
