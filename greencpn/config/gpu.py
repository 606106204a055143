"""GPU power/performance profiles (``models/gpus/*.toml`` and ``[[gpu_models]]``) and where the
bundled ones are found."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from greencpn.config.base import NonNegFloat, PositiveFloat, _Strict
from greencpn.config.errors import _raise_validation
from greencpn.errors import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # greencpn/
# GPU/node profiles: the repository's top-level models/ (source checkout, editable install),
# else the copy a wheel ships as package data (setup.py copies models/ to greencpn/_models/).
SOURCE_MODELS_ROOT = PACKAGE_ROOT.parent / "models"
PACKAGED_MODELS_ROOT = PACKAGE_ROOT / "_models"


def default_models_dir(kind: str = "gpus") -> Path:
    """Where the bundled ``kind`` profiles (``gpus`` or ``nodes``) are.

    The source tree's ``models/<kind>`` when greencpn runs from a checkout, else the packaged
    ``greencpn/_models/<kind>`` of a wheel install. ``models_dir`` in the config overrides it.
    """
    for root in (SOURCE_MODELS_ROOT, PACKAGED_MODELS_ROOT):
        cand = root / kind
        if cand.is_dir() and any(cand.glob("*.toml")):
            return cand
    return PACKAGED_MODELS_ROOT / kind


DEFAULT_MODELS_DIR = default_models_dir("gpus")


class GpuLevel(_Strict):
    """One discrete power-cap level of a GPU model."""

    cap_w: PositiveFloat = Field(description="power limit set through NVML, W")
    throughput: float = Field(gt=0, le=1.0, description="work rate relative to the highest level")
    power_factor: float = Field(
        gt=0,
        le=1.0,
        description="average board power of a busy GPU at this cap / power_limit_max_w",
    )
    throughput_low: float | None = Field(
        default=None,
        ge=0,
        le=1.0,
        description="a lower confidence bound of throughput from the spread of the metered runs "
        "(written by `greencpn models fit --from-ledger --per-workload`; 0: no bound, e.g. a cap "
        'below every measured one); with solver.job_cap_slowdown = "bound" a job\'s own cap '
        "must meet its deadline at this throughput; none: the chooser uses throughput",
    )


def _check_levels(levels: list[GpuLevel], gm: GpuModelConfig, where: str) -> None:
    """Physical sanity of one level list (raised as a 'gpu_profile' error with its fix)."""
    for i, lv in enumerate(levels):
        if not gm.power_limit_min_w <= lv.cap_w <= gm.power_limit_max_w:
            raise ValueError(
                f"{where}[{i}].cap_w={lv.cap_w} W is outside the device range "
                f"{gm.power_limit_min_w}–{gm.power_limit_max_w} W"
            )
        if lv.power_factor * gm.power_limit_max_w < gm.idle_w:
            raise ValueError(f"{where}[{i}]: busy power is below idle_w")
        # 0.5 % slack: published factors are rounded to 3 decimals
        if lv.power_factor > lv.cap_w / gm.power_limit_max_w * 1.005:
            raise PydanticCustomError(
                "gpu_profile",
                "{where}[{i}].power_factor={pf} exceeds cap_w / power_limit_max_w = {lim} "
                "(a GPU capped at {cap} W cannot draw {w} W)",
                {
                    "where": where,
                    "i": i,
                    "pf": lv.power_factor,
                    "lim": f"{lv.cap_w / gm.power_limit_max_w:.3f}",
                    "cap": lv.cap_w,
                    "w": f"{lv.power_factor * gm.power_limit_max_w:.0f}",
                },
            )
        if lv.throughput_low is not None and lv.throughput_low > lv.throughput + 1e-12:
            raise PydanticCustomError(
                "gpu_profile_bound",
                "{where}[{i}].throughput_low={lo} is above its throughput={thr} (a lower "
                "confidence bound cannot exceed the estimate)",
                {"where": where, "i": i, "lo": lv.throughput_low, "thr": lv.throughput},
            )
    caps = [lv.cap_w for lv in levels]
    if len(set(caps)) != len(caps):
        raise ValueError(f"{where} must have distinct cap_w values")
    order = sorted(range(len(levels)), key=lambda i: levels[i].cap_w)
    for name in ("throughput", "power_factor"):
        for lo, hi in zip(order, order[1:], strict=False):
            a, b = getattr(levels[lo], name), getattr(levels[hi], name)
            if b < a:
                raise PydanticCustomError(
                    "gpu_profile",
                    "{where}[{hi}].{name}={b} at {cap} W is below {a} at the lower cap "
                    "{pcap} W ({where}[{lo}]): levels must not lose {name} as the cap rises",
                    {
                        "where": where,
                        "hi": hi,
                        "lo": lo,
                        "name": name,
                        "b": b,
                        "a": a,
                        "cap": levels[hi].cap_w,
                        "pcap": levels[lo].cap_w,
                    },
                )


class WorkloadClassProfile(_Strict):
    """The levels of one workload class (same caps as the profile's own levels)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    description: str = ""
    uncapped_power_share_min: float = Field(default=0.0, ge=0, le=1)
    uncapped_power_share_max: float = Field(default=1.0, gt=0, le=1)
    configs: int = Field(default=0, ge=0, description="configurations the fit used (0: none)")
    extrapolated: bool = False
    levels: list[GpuLevel] = Field(min_length=1)


class GpuModelConfig(_Strict):
    """Power/performance profile of a GPU model (see models/gpus/*.toml)."""

    name: str
    aliases: list[str] = Field(default_factory=list, description="NVML names that map to it")
    power_limit_min_w: PositiveFloat
    power_limit_max_w: PositiveFloat
    power_limit_default_w: PositiveFloat
    idle_w: NonNegFloat = Field(description="board power of an idle GPU, W")
    levels: list[GpuLevel] = Field(min_length=1)
    extrapolated: bool = False
    source: str = Field(min_length=1, description="where the numbers come from")
    notes: str = ""
    workload_classes: list[WorkloadClassProfile] = Field(
        default_factory=list,
        description="per-class levels (jobs name theirs with workload_class); "
        "jobs without a class, or with one this model lacks, use `levels`",
    )

    @model_validator(mode="after")
    def _check(self) -> GpuModelConfig:
        if not self.power_limit_min_w <= self.power_limit_default_w <= self.power_limit_max_w:
            raise ValueError(
                "need power_limit_min_w <= power_limit_default_w <= power_limit_max_w "
                f"(got {self.power_limit_min_w}, {self.power_limit_default_w}, {self.power_limit_max_w})"
            )
        _check_levels(self.levels, self, "levels")
        caps = [lv.cap_w for lv in self.levels]
        seen: set[str] = set()
        for j, wc in enumerate(self.workload_classes):
            if wc.name in seen:
                raise ValueError(f"workload_classes[{j}]: duplicate class name {wc.name!r}")
            seen.add(wc.name)
            _check_levels(wc.levels, self, f"workload_classes[{j}]({wc.name}).levels")
            if sorted(lv.cap_w for lv in wc.levels) != sorted(caps):
                raise PydanticCustomError(
                    "gpu_profile",
                    "workload_classes[{j}]({name}).levels have caps {got}, not the profile's "
                    "levels {caps} (a pool's cap applies to every class)",
                    {"j": j, "name": wc.name, "got": [lv.cap_w for lv in wc.levels], "caps": caps},
                )
        return self

    def levels_for(self, workload_class: str | None) -> list[GpuLevel]:
        """The levels of a job's class (the profile's own levels when it has no such class)."""
        if workload_class:
            for wc in self.workload_classes:
                if wc.name == workload_class:
                    return wc.levels
        return self.levels

    def levels_for_mix(self, work_by_class: dict[str | None, float]) -> list[GpuLevel]:
        """The levels of a GPU running a mix of classes (work in full-power GPU-h per class).

        At each cap the mix needs Σ_k w_k / θ_k GPU-hours and draws Σ_k (w_k / θ_k) × π_k:
        θ = Σ w / Σ (w / θ_k) and power_factor = that energy ÷ those GPU-hours. One class (or
        none) gives its own levels unchanged."""
        mix = {k: w for k, w in work_by_class.items() if w > 0}
        curves = {k: self.levels_for(k) for k in mix}
        distinct = {id(c) for c in curves.values()}
        if len(distinct) <= 1:
            return next(iter(curves.values()), self.levels)
        out: list[GpuLevel] = []
        for lv in self.levels:
            gpu_h = energy = 0.0
            for k, w in mix.items():
                ck = {x.cap_w: x for x in curves[k]}[lv.cap_w]
                gpu_h += w / ck.throughput
                energy += w / ck.throughput * ck.power_factor
            out.append(
                GpuLevel(
                    cap_w=lv.cap_w,
                    throughput=min(1.0, sum(mix.values()) / gpu_h),
                    power_factor=min(1.0, energy / gpu_h),
                )
            )
        return out

    @property
    def class_names(self) -> list[str]:
        return [wc.name for wc in self.workload_classes]


def load_gpu_model(path: Path) -> GpuModelConfig:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"not valid TOML: {exc}", source=str(path), fix="fix the TOML syntax"
        ) from None
    try:
        return GpuModelConfig.model_validate(data)
    except ValidationError as exc:
        _raise_validation(exc, str(path), data)
        raise  # unreachable


def load_gpu_models(models_dir: Path) -> dict[str, GpuModelConfig]:
    """All GPU profiles in ``models_dir``, keyed by name and by each alias (case-insensitive)."""
    out: dict[str, GpuModelConfig] = {}
    if not models_dir.is_dir():
        return out
    for path in sorted(models_dir.glob("*.toml")):
        model = load_gpu_model(path)
        for key in [model.name, *model.aliases]:
            out[key.lower()] = model
    return out
