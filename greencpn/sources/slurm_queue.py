"""Slurm job queue → greencpn jobs: parse ``squeue --json`` and ``sacct --json``.

Both commands' JSON changed shape across Slurm releases; this module reads all of them:

* **22.05** (Debian 12, OpenAPI ``v0.0.38`` / ``dbv0.0.38``): times are plain epoch integers,
  ``time_limit`` is minutes or ``null`` (UNLIMITED), ``job_state`` is a string, GPU requests
  read ``tres_per_node: "gres:gpu:2"``, sacct's ``state.current`` is a string.
* **23.02 / 23.11 / 24.x** (``v0.0.39``–``v0.0.41``): numbers are wrapped as
  ``{"set": true, "infinite": false, "number": 60}``, ``job_state`` / ``state.current`` are lists
  (``["PENDING"]``), GPU requests read ``"gres/gpu:2"`` or ``"gres/gpu:a100:2"``.

What becomes what (see ``docs/load.md``):

* **Pending** jobs → :class:`~greencpn.config.JobConfig` with
  ``work_gpu_h = gpus × time limit``, ``release = eligible time`` (else submit time; never
  before ``now`` is required), ``deadline`` from the comment or :class:`QueueRules`.
* **Running** jobs → :class:`RunningJob` with their expanded node names, so the plan never
  powers those nodes down, and their remaining GPU-hours ``gpus × (limit − elapsed)``.
* **Finished** jobs (sacct) → JobConfig with ``work_gpu_h = gpus × elapsed``, for replay.
* Held jobs, jobs without GPUs and job states greencpn cannot plan are listed in
  :attr:`QueueSnapshot.skipped` with the reason.

Per-job hints go in the job's comment (``sbatch --comment``), e.g.
``greencpn:deadline=2026-11-27T00:00:00Z,checkpointable`` or ``greencpn:deadline=+36h``
(relative to the release). Keys: ``deadline``, ``checkpointable``, ``priority``, ``class``
(the GPU workload class, e.g. ``greencpn:class=heavy``: models/README.md 'Workload classes').

Size (~640 lines, over the ~600 of issue 13, on purpose): the shapes of every Slurm release's
JSON are read field by field side by side (22.05 … 24.x), so a difference between releases is
seen where it is handled.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from greencpn.clock import ensure_utc
from greencpn.config import JobConfig
from greencpn.domain.slurm import array_tasks, slurm_epoch, slurm_number
from greencpn.errors import ConfigError, PermanentError, TemporaryError

_PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING"}
_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}
_FINISHED = {
    "COMPLETED",
    "FAILED",
    "TIMEOUT",
    "CANCELLED",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}


@dataclass(frozen=True)
class QueueRules:
    """How queue entries become plannable jobs.

    Attributes:
        default_slack_h: deadline = release + run time + this, when the comment gives none.
        unlimited_time_limit_h: run time assumed for jobs with ``--time=UNLIMITED``.
        comment_prefix: marks greencpn hints inside the job comment.
        include_held: plan held jobs too (released at their submit time); default skips them.
        default_checkpointable: for jobs whose comment does not say.
    """

    default_slack_h: float = 24.0
    unlimited_time_limit_h: float = 72.0
    comment_prefix: str = "greencpn:"
    include_held: bool = False
    default_checkpointable: bool = False


@dataclass(frozen=True)
class RunningJob:
    """A job that holds nodes now: the plan must keep ``nodes`` powered."""

    id: str
    name: str
    partition: str
    nodes: tuple[str, ...]
    gpus: int
    start: datetime | None
    expected_end: datetime | None
    remaining_gpu_h: float


@dataclass(frozen=True)
class QueueSnapshot:
    """What a queue listing says, in greencpn's terms.

    Attributes:
        jobs: plannable jobs (pending; finished ones too when read from sacct with history).
        running: jobs running now, with their nodes.
        skipped: ``(job id, reason)`` for entries that were not turned into jobs.
        slurm_version: e.g. ``22.05.8`` from the output's ``meta``, if present.
    """

    jobs: list[JobConfig] = field(default_factory=list)
    running: list[RunningJob] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    slurm_version: str | None = None

    @property
    def busy_nodes(self) -> frozenset[str]:
        """Every node a running job is on: never power these down."""
        return frozenset(n for r in self.running for n in r.nodes)


# ----------------------------------------------------------------------------- small parsers


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand a Slurm hostlist such as ``gpu[001-003,007],login1`` into node names.

    Supports several bracket groups per name (``r[1-2]n[01-02]``) and keeps zero padding.

    Raises:
        ConfigError: unbalanced brackets or a bad range.
    """
    text = (hostlist or "").strip()
    if not text or text in {"(null)", "None assigned"}:
        return []
    names: list[str] = []
    for part in _split_top_level(text):
        names.extend(_expand_one(part, hostlist))
    return names


def _split_top_level(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            if cur.strip():
                parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise ConfigError(
            f"unbalanced brackets in hostlist {text!r}",
            field="hostlist",
            fix="write it like gpu[001-004,010]",
        )
    if cur.strip():
        parts.append(cur.strip())
    return parts


def _expand_one(part: str, whole: str) -> list[str]:
    m = re.search(r"\[([^\]]*)\]", part)
    if not m:
        return [part]
    head, tail = part[: m.start()], part[m.end() :]
    out: list[str] = []
    for rng in m.group(1).split(","):
        rng = rng.strip()
        lo, _, hi = rng.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ConfigError(
                f"bad range {rng!r} in hostlist {whole!r}",
                field="hostlist",
                fix="ranges are numbers like 001-004",
            )
        width = len(lo)
        for i in range(int(lo), int(hi or lo) + 1):
            for rest in _expand_one(tail, whole):
                out.append(f"{head}{i:0{width}d}{rest}")
    return out


def _is_infinite(value: Any) -> bool:
    return value is None or (isinstance(value, Mapping) and bool(value.get("infinite")))


def _state(value: Any) -> str:
    if isinstance(value, Mapping):  # sacct: {"current": ..., "reason": ...}
        value = value.get("current")
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value or "").upper()


_GPU_ITEM = re.compile(r"^(?:gres[:/])?gpu(?:[:/](?P<type>[^:=]+?))?(?:[:=](?P<count>\d+))?$")


def parse_gpu_count(spec: str | None) -> int | None:
    """GPUs in a TRES/GRES string, or None when it names no GPU.

    Handles ``gres/gpu=4`` (TRES), ``gres/gpu:4``, ``gres/gpu:a100:2``, ``gres:gpu:2`` (22.05),
    ``gpu:4``, ``gpu`` (count 1) and lists like ``cpu=1,mem=1000M,gres/gpu=2,gres/gpu:a100=2``
    (an untyped total wins over typed entries; typed entries alone are summed).
    """
    if not spec:
        return None
    untyped: int | None = None
    typed = 0
    seen_typed = False
    for item in spec.split(","):
        item = item.strip()
        m = _GPU_ITEM.match(item)
        if not m:
            continue
        gtype, count = m.group("type"), m.group("count")
        if gtype is not None and gtype.isdigit() and count is None:
            gtype, count = None, gtype  # "gpu:4": the last field is the count
        n = int(count) if count is not None else 1
        if gtype is None:
            untyped = (untyped or 0) + n
        else:
            typed += n
            seen_typed = True
    if untyped is not None:
        return untyped
    return typed if seen_typed else None


def _gres_detail_count(details: Any) -> int | None:
    """Sum of ``gpu:2(IDX:0-1)`` / ``gpu:a100:2(IDX:0-1)`` entries (one per node)."""
    if not isinstance(details, list) or not details:
        return None
    total = 0
    for d in details:
        n = parse_gpu_count(re.sub(r"\(.*\)$", "", str(d)))
        total += n or 0
    return total or None


def parse_comment(comment: str | None, prefix: str = "greencpn:") -> dict[str, str]:
    """The ``key=value`` hints after ``prefix`` in a job comment (``checkpointable`` → ``"true"``)."""
    out: dict[str, str] = {}
    if not comment or prefix not in comment:
        return out
    hints = comment.split(prefix, 1)[1].split()[0] if comment.split(prefix, 1)[1].strip() else ""
    for item in re.split(r"[,;]", hints):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        out[key.strip().lower()] = value.strip() if sep else "true"
    return out


_REL = re.compile(r"^\+(\d+(?:\.\d+)?)\s*([hmd])$")


def _deadline_from_hint(hint: str, release: datetime) -> datetime:
    m = _REL.match(hint)
    if m:
        unit = {"h": 1.0, "m": 1 / 60, "d": 24.0}[m.group(2)]
        return release + timedelta(hours=float(m.group(1)) * unit)
    text = hint[:-1] + "+00:00" if hint.endswith(("Z", "z")) else hint
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError("no timezone")
    return dt.astimezone(UTC)


# ----------------------------------------------------------------------------- normalising


@dataclass(frozen=True)
class _Entry:
    id: str
    name: str
    partition: str
    state: str
    reason: str
    gpus: int | None
    nodes: str
    submit: datetime | None
    eligible: datetime | None
    start: datetime | None
    end: datetime | None
    limit_min: float | None  # None = unlimited
    elapsed_s: float | None
    comment: str


def _squeue_entries(job: Mapping[str, Any]) -> list[_Entry]:
    state = _state(job.get("job_state"))
    node_count = slurm_number(job.get("node_count")) or 1.0
    gpus = None
    for key in ("tres_alloc_str", "tres_req_str", "tres_per_job"):
        gpus = parse_gpu_count(job.get(key))
        if gpus is not None:
            break
    if gpus is None:
        per_node = parse_gpu_count(job.get("tres_per_node"))
        if per_node is not None:
            gpus = int(per_node * node_count)
    if gpus is None:
        per_task = parse_gpu_count(job.get("tres_per_task"))
        if per_task is not None:
            gpus = int(per_task * (slurm_number(job.get("tasks")) or 1))
    if gpus is None:
        gpus = _gres_detail_count(job.get("gres_detail"))
    limit = job.get("time_limit")
    base = dict(
        name=str(job.get("name") or ""),
        partition=str(job.get("partition") or ""),
        state=state,
        reason=str(job.get("state_reason") or ""),
        gpus=gpus,
        nodes=str(job.get("nodes") or ""),
        submit=slurm_epoch(job.get("submit_time")),
        eligible=slurm_epoch(job.get("eligible_time")),
        start=slurm_epoch(job.get("start_time")),
        end=slurm_epoch(job.get("end_time")),
        limit_min=None if _is_infinite(limit) else slurm_number(limit),
        elapsed_s=None,
        comment=str(job.get("comment") or ""),
    )
    job_id = str(int(slurm_number(job.get("job_id")) or 0))
    array_id = slurm_number(job.get("array_job_id"))
    task_id = slurm_number(job.get("array_task_id"))
    task_str = str(job.get("array_task_string") or "")
    if array_id and task_id is not None:
        return [_Entry(id=f"{int(array_id)}_{int(task_id)}", **base)]  # type: ignore[arg-type]
    if array_id and task_str:  # a pending array record stands for many tasks
        tasks = array_tasks(task_str)
        return [_Entry(id=f"{int(array_id)}_{t}", **base) for t in tasks]  # type: ignore[arg-type]
    return [_Entry(id=job_id, **base)]  # type: ignore[arg-type]


def _sacct_entries(job: Mapping[str, Any]) -> list[_Entry]:
    t = job.get("time") or {}
    tres = job.get("tres") or {}
    gpus = None
    for key in ("allocated", "requested"):
        items = tres.get(key) or []
        counts = [
            slurm_number(i.get("count"))
            for i in items
            if i.get("type") == "gres" and str(i.get("name") or "").split(":")[0] == "gpu"
        ]
        found = [c for c in counts if c]
        if found:
            gpus = int(max(found))
            break
    comment = job.get("comment")
    if isinstance(comment, Mapping):
        comment = comment.get("job")
    limit = t.get("limit")
    array = job.get("array") or {}
    array_id = slurm_number(array.get("job_id"))
    task_id = slurm_number(array.get("task_id"))
    ids = [str(int(slurm_number(job.get("job_id")) or 0))]
    if array_id and task_id is not None:
        ids = [f"{int(array_id)}_{int(task_id)}"]
    elif array_id and array.get("task"):  # a pending array record: "0x7" bitmap or "0-2"
        ids = [f"{int(array_id)}_{t}" for t in array_tasks(str(array["task"]))]
    return [
        _Entry(
            id=job_id,
            name=str(job.get("name") or ""),
            partition=str(job.get("partition") or ""),
            state=_state(job.get("state")),
            reason=str((job.get("state") or {}).get("reason") or ""),
            gpus=gpus,
            nodes=str(job.get("nodes") or ""),
            submit=slurm_epoch(t.get("submission")),
            eligible=slurm_epoch(t.get("eligible")),
            start=slurm_epoch(t.get("start")),
            end=slurm_epoch(t.get("end")),
            limit_min=None if _is_infinite(limit) else slurm_number(limit),
            elapsed_s=slurm_number(t.get("elapsed")),
            comment=str(comment or ""),
        )
        for job_id in ids
    ]


# ----------------------------------------------------------------------------- to greencpn


def _build(
    entries: Sequence[_Entry],
    now: datetime,
    rules: QueueRules,
    source: str,
    version: str | None,
    include_finished: bool,
) -> QueueSnapshot:
    now = ensure_utc(now, "now")
    snap = QueueSnapshot(slurm_version=version)
    seen: set[str] = set()
    for e in entries:
        if e.id in seen:
            continue
        seen.add(e.id)
        base_state = e.state.split()[0] if e.state else ""
        limit_h = rules.unlimited_time_limit_h if e.limit_min is None else e.limit_min / 60.0
        if base_state in _RUNNING:
            nodes = tuple(expand_hostlist(e.nodes))
            gpus = e.gpus or 0
            started = e.start
            elapsed_h = ((now - started).total_seconds() / 3600.0) if started else 0.0
            remaining_h = max(limit_h - elapsed_h, 0.0)
            end = None
            if e.limit_min is not None:
                end = e.end or (started + timedelta(minutes=e.limit_min) if started else None)
            snap.running.append(
                RunningJob(
                    id=e.id,
                    name=e.name,
                    partition=e.partition,
                    nodes=nodes,
                    gpus=gpus,
                    start=started,
                    expected_end=end,
                    remaining_gpu_h=gpus * remaining_h,
                )
            )
            continue
        if base_state in _FINISHED:
            if not include_finished:
                continue
            if not e.elapsed_s or e.start is None:
                snap.skipped.append((e.id, f"{base_state.lower()} without running"))
                continue
            if not e.gpus:
                snap.skipped.append((e.id, "no GPUs in its TRES"))
                continue
            job = _make_job(
                e,
                e.gpus * e.elapsed_s / 3600.0,
                e.submit or e.start,
                e.elapsed_s / 3600.0,
                rules,
                source,
            )
            if isinstance(job, str):
                snap.skipped.append((e.id, job))
            else:
                snap.jobs.append(job)
            continue
        if base_state not in _PENDING:
            snap.skipped.append((e.id, f"state {e.state or '?'} is not plannable"))
            continue
        if not e.gpus:
            snap.skipped.append((e.id, "requests no GPUs"))
            continue
        held = "Held" in e.reason or (
            e.eligible is None and e.reason in {"JobHeldAdmin", "JobHeldUser"}
        )
        if held and not rules.include_held:
            snap.skipped.append((e.id, f"held ({e.reason})"))
            continue
        release = e.eligible or e.submit or now
        job = _make_job(e, e.gpus * limit_h, release, limit_h, rules, source)
        if isinstance(job, str):
            snap.skipped.append((e.id, job))
        else:
            snap.jobs.append(job)
    return snap


def _make_job(
    e: _Entry, work_gpu_h: float, release: datetime, run_h: float, rules: QueueRules, source: str
) -> JobConfig | str:
    hints = parse_comment(e.comment, rules.comment_prefix)
    deadline = release + timedelta(hours=run_h + rules.default_slack_h)
    if "deadline" in hints:
        try:
            deadline = _deadline_from_hint(hints["deadline"], release)
        except ValueError:
            raise ConfigError(
                f"job {e.id}: comment deadline {hints['deadline']!r} is not a UTC timestamp or +Nh",
                source=source,
                field="comment",
                fix="write greencpn:deadline=2026-11-27T00:00:00Z or greencpn:deadline=+36h",
            ) from None
    checkpointable = rules.default_checkpointable
    if "checkpointable" in hints:
        checkpointable = hints["checkpointable"].lower() in {"true", "1", "yes"}
    priority = 1.0
    if "priority" in hints:
        try:
            priority = float(hints["priority"])
        except ValueError:
            return f"comment priority {hints['priority']!r} is not a number"
    if work_gpu_h <= 0 or not math.isfinite(work_gpu_h):
        return "no work (zero time limit or elapsed)"
    wclass = hints.get("class") or hints.get("workload_class") or None
    try:
        return JobConfig(
            id=e.id,
            gpus=int(e.gpus or 0),
            work_gpu_h=work_gpu_h,
            release=release,
            deadline=deadline,
            checkpointable=checkpointable,
            priority=priority,
            workload_class=wclass,
        )
    except ValidationError as exc:
        return exc.errors()[0]["msg"].removeprefix("Value error, ")


def _load_json(data: str | bytes | Mapping[str, Any], source: str, what: str) -> Mapping[str, Any]:
    if isinstance(data, Mapping):
        doc = data
    else:
        try:
            doc = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"not valid JSON: {exc}", source=source, fix=f"give the output of '{what} --json'"
            ) from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("jobs"), list):
        raise ConfigError(
            "no 'jobs' list in the JSON",
            source=source,
            fix=f"give the output of '{what} --json' (Slurm 21.08 or newer)",
        )
    errors = doc.get("errors") or []
    if errors:
        first = errors[0]
        text = (
            first.get("error") or first.get("description") if isinstance(first, Mapping) else first
        )
        raise PermanentError(f"{source}: {what} reported an error: {text}")
    return doc


def _version(doc: Mapping[str, Any]) -> str | None:
    meta = doc.get("meta") or {}
    slurm = meta.get("Slurm") or meta.get("slurm") or {}
    if slurm.get("release"):
        return str(slurm["release"])
    v = slurm.get("version") or {}
    if v:
        return f"{v.get('major')}.{v.get('minor')}.{v.get('micro')}"
    return None


def parse_squeue_json(
    data: str | bytes | Mapping[str, Any],
    now: datetime,
    rules: QueueRules | None = None,
    source: str = "squeue --json",
) -> QueueSnapshot:
    """Parse ``squeue --json`` output (any Slurm ≥ 21.08) into a :class:`QueueSnapshot`.

    Args:
        data: the JSON text or the decoded document.
        now: the current time (UTC), used for running jobs' remaining work.
        rules: deadline and filtering rules.
        source: names the input in errors.
    """
    doc = _load_json(data, source, "squeue")
    entries = [e for job in doc["jobs"] for e in _squeue_entries(job)]
    return _build(
        entries, now, rules or QueueRules(), source, _version(doc), include_finished=False
    )


def parse_sacct_json(
    data: str | bytes | Mapping[str, Any],
    now: datetime,
    rules: QueueRules | None = None,
    source: str = "sacct --json",
    include_finished: bool = True,
) -> QueueSnapshot:
    """Parse ``sacct --json`` output (any Slurm ≥ 21.08) into a :class:`QueueSnapshot`.

    Finished jobs become jobs with ``work_gpu_h = gpus × elapsed`` (for replaying history);
    pass ``include_finished=False`` to keep only pending and running ones.
    """
    doc = _load_json(data, source, "sacct")
    entries = [e for job in doc["jobs"] for e in _sacct_entries(job)]
    return _build(entries, now, rules or QueueRules(), source, _version(doc), include_finished)


def read_squeue(
    now: datetime,
    rules: QueueRules | None = None,
    *,
    command: Sequence[str] = ("squeue", "--json"),
    timeout_s: float = 30.0,
) -> QueueSnapshot:
    """Run ``squeue --json`` and parse it.

    Raises:
        TemporaryError: squeue timed out or could not reach slurmctld.
        PermanentError: squeue is not installed.
    """
    try:
        proc = subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError:
        raise PermanentError(f"{command[0]} not found — install slurm-client or fix PATH") from None
    except subprocess.TimeoutExpired:
        raise TemporaryError(f"{' '.join(command)} timed out after {timeout_s} s") from None
    if proc.returncode != 0:
        raise TemporaryError(
            f"{' '.join(command)} exited {proc.returncode}: {proc.stderr.strip()[:300]}"
        )
    return parse_squeue_json(proc.stdout, now, rules, source=" ".join(command))


def read_queue_file(
    path: str | Path, now: datetime, rules: QueueRules | None = None
) -> QueueSnapshot:
    """Read a saved ``squeue --json`` or ``sacct --json`` file (which one is detected)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("file not found", source=str(path), fix="check the path")
    doc = _load_json(path.read_text(), str(path), "squeue")
    plugin = str(((doc.get("meta") or {}).get("plugin") or {}).get("type") or "")
    jobs = doc["jobs"]
    is_sacct = "dbv" in plugin or (
        bool(jobs)
        and isinstance(jobs[0], Mapping)
        and "time" in jobs[0]
        and isinstance(jobs[0]["time"], Mapping)
    )
    if is_sacct:
        return parse_sacct_json(doc, now, rules, source=str(path))
    return parse_squeue_json(doc, now, rules, source=str(path))
