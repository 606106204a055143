"""Device facts of the bundled GPU profiles that do not come from a sweep (limits, idle, names)."""

from __future__ import annotations

from dataclasses import dataclass

ZEUS_SOURCE = (
    "Fitted by models/fit_gpu_profiles.py from the Zeus NSDI'23 power-limit sweep "
    "summary_power_{key}.csv (ml-energy/zeus, examples/research_reproducibility/zeus_nsdi23/trace, "
    "Apache-2.0; You et al., 'Zeus: Understanding and Optimizing GPU Energy Consumption of DNN "
    "Training', NSDI 2023): {n_cfg} training configurations x {n_pl} power limits; per limit the "
    "median throughput and the median energy per epoch relative to the highest limit "
    "(power_factor = throughput x that median x the median uncapped power / max)."
)


@dataclass(frozen=True)
class Device:
    """Device facts that do not come from the sweep (limits, idle power, NVML names)."""

    key: str  # file stem
    name: str
    aliases: tuple[str, ...]
    power_limit_min_w: float
    power_limit_max_w: float
    power_limit_default_w: float
    idle_w: float
    limits_source: str
    idle_source: str
    sweep: str | None = None  # csv key when measured
    notes: str = ""


IDLE_NOTE = (
    "idle_w: typical board power of a powered, idle GPU (driver loaded, persistence mode, no "
    "process) as read with nvidia-smi; NVIDIA does not publish idle power, so this is an "
    "approximate, documented typical value - measure yours with "
    "`nvidia-smi --query-gpu=power.draw --format=csv` and override it."
)

SWEEP_LIMITS = (
    "Device limits = the NVML power-limit constraints, which the Zeus sweep spans "
    "(Zeus profiles every 25 W step from the NVML maximum down to the NVML minimum)"
)

DEVICES: tuple[Device, ...] = (
    Device(
        key="v100-pcie",
        name="V100-PCIE",
        aliases=("Tesla V100-PCIE-16GB", "Tesla V100-PCIE-32GB", "V100"),
        power_limit_min_w=100,
        power_limit_max_w=250,
        power_limit_default_w=250,
        idle_w=30,
        limits_source=SWEEP_LIMITS + ": 100-250 W, the Tesla V100 PCIe range "
        "(NVIDIA V100 datasheet: 250 W board power). The 100 W step rules out the SXM2 part, "
        "whose NVML minimum is 150 W.",
        idle_source="~25-35 W idle (P0, no load) on V100 PCIe",
        sweep="v100",
    ),
    Device(
        key="a40",
        name="A40",
        aliases=("NVIDIA A40",),
        power_limit_min_w=100,
        power_limit_max_w=300,
        power_limit_default_w=300,
        idle_w=30,
        limits_source=SWEEP_LIMITS + ": 100-300 W (NVIDIA A40 datasheet: 300 W max power).",
        idle_source="~25-35 W idle on A40",
        sweep="a40",
    ),
    Device(
        key="p100-pcie",
        name="P100-PCIE",
        aliases=("Tesla P100-PCIE-16GB", "Tesla P100-PCIE-12GB", "P100"),
        power_limit_min_w=125,
        power_limit_max_w=250,
        power_limit_default_w=250,
        idle_w=30,
        limits_source=SWEEP_LIMITS + ": 125-250 W (NVIDIA Tesla P100 PCIe datasheet: 250 W).",
        idle_source="~25-35 W idle on P100 PCIe",
        sweep="p100",
    ),
    Device(
        key="quadro-rtx-6000",
        name="Quadro-RTX-6000",
        aliases=("Quadro RTX 6000", "RTX6000"),
        power_limit_min_w=100,
        power_limit_max_w=260,
        power_limit_default_w=260,
        idle_w=20,
        limits_source=SWEEP_LIMITS + ": 100-260 W (NVIDIA Quadro RTX 6000 datasheet: 260 W "
        "max power, blower version).",
        idle_source="~15-25 W idle on Quadro RTX 6000",
        sweep="rtx6000",
    ),
    Device(
        key="v100-sxm2",
        name="V100-SXM2",
        aliases=("Tesla V100-SXM2-16GB", "Tesla V100-SXM2-32GB"),
        power_limit_min_w=150,
        power_limit_max_w=300,
        power_limit_default_w=300,
        idle_w=40,
        limits_source="NVML limits of the Tesla V100 SXM2 (DGX-1, p3 instances): 150-300 W "
        "(NVIDIA V100 datasheet: 300 W for SXM2).",
        idle_source="~40-55 W idle on V100 SXM2",
    ),
    Device(
        key="a100-sxm4-40gb",
        name="A100-SXM4-40GB",
        aliases=("NVIDIA A100-SXM4-40GB", "A100"),
        power_limit_min_w=100,
        power_limit_max_w=400,
        power_limit_default_w=400,
        idle_w=55,
        limits_source="NVML limits of the A100 SXM4 40GB: 100-400 W (NVIDIA A100 datasheet: "
        "400 W max TDP for SXM4).",
        idle_source="~50-60 W idle on A100 SXM4",
    ),
    Device(
        key="h100-sxm5-80gb",
        name="H100-SXM5-80GB",
        aliases=("NVIDIA H100 80GB HBM3", "H100"),
        power_limit_min_w=200,
        power_limit_max_w=700,
        power_limit_default_w=700,
        idle_w=70,
        limits_source="NVML limits of the H100 SXM5 80GB: 200-700 W (NVIDIA H100 datasheet: "
        "up to 700 W configurable max TDP for SXM).",
        idle_source="~60-80 W idle on H100 SXM5",
    ),
)
