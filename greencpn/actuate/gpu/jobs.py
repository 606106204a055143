"""Per-job GPU caps (issue #14.3, building block): which GPUs a Slurm job runs on, and the
per-node, per-GPU-index caps that follow from each job's planned cap.

``scontrol show job -d ID`` lists, per node group, the GPU indices a job was given::

       Nodes=gpu[01-02] CPU_IDs=0-15 Mem=128000 GRES=gpu:a100:2(IDX:0-1)
       Nodes=gpu03 CPU_IDs=0-7 Mem=64000 GRES=gpu:1(IDX:3)

(Slurm 20.11+; older releases write ``GRES_IDX=gpu(IDX:0-1)``). :func:`parse_job_gpus` turns
that into ``{node: (indices...)}``; :func:`per_gpu_caps` merges several jobs' caps into one
``{node: {index: cap_w}}`` map for the node agents (``/v1/gpu/power-limit`` takes a GPU index)
or the local NVML backend, refusing two jobs that claim the same GPU.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from greencpn.actuate import hostlist
from greencpn.domain.slurm import array_tasks
from greencpn.errors import ConfigError

_NODES = re.compile(r"(?:^|\s)Nodes=(\S+)")
_STATE = re.compile(r"(?:^|\s)JobState=(\S+)")
_IDX = re.compile(r"\(IDX:([0-9,\-]*)\)")


def _indices(spec: str, source: str) -> tuple[int, ...]:
    try:
        return tuple(sorted(set(array_tasks(spec))))  # the same "0-1,3" lists as array specs
    except ValueError:
        raise ConfigError(
            f"bad GPU index list {spec!r}",
            source=source,
            fix="give the output of `scontrol show job -d ID`",
        ) from None


def parse_job_gpus(text: str, source: str = "scontrol show job -d") -> dict[str, tuple[int, ...]]:
    """GPU indices per node of one job from ``scontrol show job -d`` text (one or many lines)."""
    out: dict[str, tuple[int, ...]] = {}
    for line in text.splitlines():
        m = _NODES.search(line)
        if not m or "IDX:" not in line:
            continue
        idx: list[int] = []
        for spec in _IDX.findall(line):
            idx.extend(_indices(spec, source))
        for node in hostlist.expand(m.group(1)):
            out[node] = tuple(sorted(set(out.get(node, ()) + tuple(idx))))
    return out


def running_job_gpus(
    text: str, source: str = "scontrol show job -d"
) -> dict[str, tuple[int, ...]] | None:
    """A job's GPU indices per node if ``scontrol show job -d`` shows it RUNNING, else None.

    Raises:
        ConfigError: the text has no ``JobState``, or the job runs but no GPU index is given
            (a job that holds GPUs Slurm does not index cannot be capped per GPU).
    """
    states = _STATE.findall(text)
    if not states:
        raise ConfigError(
            "no JobState in the job's description",
            source=source,
            fix="give the output of `scontrol show job -d ID` (Slurm 20.11+)",
        )
    if states[0].upper() != "RUNNING":
        return None
    gpus = parse_job_gpus(text, source)
    if not gpus:
        raise ConfigError(
            "the job is RUNNING but no GPU index (IDX:...) is listed",
            source=source,
            fix="request GPUs as GRES (--gres=gpu:N / --gpus) so Slurm records their indices",
        )
    return gpus


def per_gpu_caps(
    jobs: Iterable[tuple[str, float, Mapping[str, tuple[int, ...]]]],
) -> dict[str, dict[int, float]]:
    """``(job id, cap W, {node: indices})`` for each running job → ``{node: {index: cap}}``."""
    caps: dict[str, dict[int, float]] = {}
    owner: dict[tuple[str, int], str] = {}
    for job_id, cap_w, gpus in jobs:
        for node, indices in gpus.items():
            for i in indices:
                prev = owner.get((node, i))
                if prev is not None and prev != job_id:
                    raise ConfigError(
                        f"GPU {i} of {node} is claimed by jobs {prev} and {job_id}",
                        source="scontrol show job -d",
                        fix="read every job's GPUs in one pass; a GPU runs one job at a time",
                    )
                owner[(node, i)] = job_id
                caps.setdefault(node, {})[i] = cap_w
    return caps
