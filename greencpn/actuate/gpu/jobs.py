"""Per-job GPU caps (issue #14.3, building block): which GPUs a Slurm job runs on, and the
per-node, per-GPU-index caps that follow from each job's planned cap.

``scontrol show job -d ID`` lists, per node group, the GPU indices a job was given::

       Nodes=gpu[01-02] CPU_IDs=0-15 Mem=128000 GRES=gpu:a100:2(IDX:0-1)
       Nodes=gpu03 CPU_IDs=0-7 Mem=64000 GRES=gpu:1(IDX:3)

(Slurm 20.11+; older releases write ``GRES_IDX=gpu(IDX:0-1)``). :func:`parse_job_gpus` turns
that into ``{node: (indices...)}``. Apply's reconcile (:func:`greencpn.actuate.reconcile._job_caps`)
puts each running job's cap on those indices, whole or not at all, and refuses a job whose GPU
another job already claims.
"""

from __future__ import annotations

import re

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
