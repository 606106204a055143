"""The optimise phase: the world as observed turned into the plan's inputs (running jobs
pinned, the stability anchor from the newest plans and the power history), the hand-off to
:func:`greencpn.optimize.plan.make_plan` with the kept model when only the forecast changed,
and which priced baseline a step may reuse. Split from ``step.py`` (pure moves).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from greencpn.actuate.hostlist import expand
from greencpn.config import FleetConfig
from greencpn.controller.base import ControllerBase, Observation, _iso, _parse
from greencpn.optimize import plan as planmod
from greencpn.optimize.inputs import PlanInputs, group_jobs
from greencpn.optimize.stability import Anchor, StablePlanModel, plan_nodes_on


def _chosen_stab(doc: dict[str, Any]) -> float | None:
    """The stability cost of the candidate that became the plan (plan.json's solver block)."""
    sv = doc.get("solver") or {}
    for c in sv.get("candidates") or []:
        if c.get("name") == sv.get("plan_source"):
            return float(c["stability_cost"])
    return None


def _reuse_label(reuse: Mapping[str, Any]) -> dict[str, Any]:
    """How a step that reused the baseline says so (metrics, plan.json, daemon state)."""
    return {
        "priced": False,
        "step_id": reuse["step_id"],
        "priced_at": reuse["priced_at"],
        "slot_start": reuse["slot_start"],
        "age_steps": reuse["age_steps"],
        "age_s": reuse["age_s"],
    }


class OptimizePhase(ControllerBase):
    def world_config(self, obs: Observation, start: datetime) -> FleetConfig:
        """The config as the world is now: horizon from ``start``, observed nodes on, the
        queue's jobs (running ones fixed, see :meth:`pin_running`)."""
        cfg = self._cfg
        ctl = cfg.controller
        pools = [
            p.model_copy(update={"initial_on": obs.initial_on.get(p.name, p.initial_on)})
            for p in cfg.pools
        ]
        jobs = list(obs.queue.pending)
        for r in obs.queue.running:
            if r.job.checkpointable and ctl.preempt_checkpointable:
                jobs.append(
                    r.job.model_copy(
                        update={"release": start, "work_gpu_h": max(r.remaining_gpu_h, 1e-6)}
                    )
                )
                continue
            run_h = r.remaining_gpu_h / max(r.job.gpus, 1)
            slot_h = cfg.horizon.slot_minutes / 60.0
            end = start + timedelta(hours=math.ceil(run_h / slot_h - 1e-9) * slot_h)
            jobs.append(
                r.job.model_copy(
                    update={
                        "release": start,
                        "work_gpu_h": max(r.remaining_gpu_h, 1e-6),
                        # planned to run on from now: its planning deadline is when it would
                        # end uninterrupted (a later real deadline would let the plan pause it)
                        "deadline": end,
                    }
                )
            )
        world = cfg.with_sections(
            horizon=cfg.horizon.model_copy(update={"start": start}), pools=pools
        )
        return replace(world, jobs=jobs)

    def pin_running(self, inp: PlanInputs, obs: Observation) -> PlanInputs:
        """Running jobs that keep their pool may only use that pool's site."""
        if not obs.queue.running:
            return inp
        ctl = self._cfg.controller
        pool_site = {p.name: p.site for p in inp.pools}
        pin = {
            r.job.id: pool_site[r.pool]
            for r in obs.queue.running
            if r.pool in pool_site and not (r.job.checkpointable and ctl.preempt_checkpointable)
        }
        jobs = [
            replace(j, sites=(pin[j.id],), release_slot=0) if j.id in pin else j for j in inp.jobs
        ]
        return replace(
            inp, jobs=jobs, groups=group_jobs(jobs, inp.T, inp.solver.window_rounding_slots)
        )

    def anchor(
        self,
        inp: PlanInputs,
        prev: dict[str, Any] | None,
        now: datetime,
        latest: dict[str, Any] | None = None,
    ) -> Anchor:
        """The re-planning anchor: min up / min down from the power history; the MILP's
        stability terms against ``prev`` (the newest plan made for an earlier slot, the same
        for every step of a slot, so the built model can be kept); and ``latest`` (the newest
        plan, also one made earlier in this slot), which every candidate is scored against and
        the kept-placement candidate starts from (optimize/plan.py)."""
        ctl = self._cfg.controller
        P, T, K, S = len(inp.pools), inp.T, len(inp.groups), len(inp.sites)
        a = Anchor(
            flap_weight=ctl.node_flap_weight,
            flap_slots=(
                0
                if ctl.node_flap_horizon_h is None
                else max(1, math.ceil(ctl.node_flap_horizon_h / inp.slot_h - 1e-9))
            ),
            site_weight_per_gpu_h=ctl.job_move_weight_per_gpu_h,
            shift_weight_per_gpu_h_slot=ctl.job_shift_weight_per_gpu_h_slot,
        )
        # min up / min down from the power history of the step ledger
        hist = self.ledger.last_power_events(now - timedelta(hours=48))
        must_on = np.zeros((P, T), dtype=int)
        must_off = np.zeros((P, T), dtype=int)
        pools_cfg = {p.name: p for p in self._cfg.pools}
        epoch, us = datetime(1970, 1, 1, tzinfo=UTC), timedelta(microseconds=1)
        # slot 0 began before now: a node is held in it only if it is held now (exact µs)
        from_us = np.array([(max(ts, now) - epoch) // us for ts in inp.slot_starts], dtype=np.int64)
        for p, pool in enumerate(inp.pools):
            pc = pools_cfg[pool.name]
            for n in expand(pc.hostlist) if pc.hostlist else []:
                ev = hist.get(n)
                if ev is None:
                    continue
                hold_h = pc.min_up_h if ev.event == "on" else pc.min_down_h
                until_us = (ev.at + timedelta(hours=hold_h) - epoch) // us
                (must_on if ev.event == "on" else must_off)[p] += from_us < until_us
        a.must_on, a.must_off = must_on, must_off
        if latest is not None:
            a.latest = latest
            a.latest_nodes_on = plan_nodes_on(inp, latest)
        if prev is None:
            return a
        a.prev_nodes_on = (
            a.latest_nodes_on.copy()  # the same document (the first step of a slot): read once
            if prev is latest and a.latest_nodes_on is not None
            else plan_nodes_on(inp, prev)
        )
        prev_jobs = {j["id"]: j for j in prev.get("jobs", [])}
        site_idx = {s.name: i for i, s in enumerate(inp.sites)}
        moved = np.zeros((K, S))
        shift = np.zeros((K, T))
        slots = np.arange(T)
        for k, g in enumerate(inp.groups):
            tot = 0.0
            for j in g.jobs:
                job = inp.jobs[j]
                pj = prev_jobs.get(job.id)
                w = job.required_gpu_h
                tot += w
                if pj is None or pj.get("site") is None or pj.get("start") is None:
                    continue
                s_prev = site_idx.get(pj["site"])
                if s_prev is not None:
                    moved[k] += w
                    moved[k, s_prev] -= w
                t0 = (_parse(pj["start"]) - inp.start).total_seconds() / 3600.0 / inp.slot_h
                shift[k] += w * np.abs(slots - t0)
            if tot > 0:
                moved[k] /= tot
                shift[k] /= tot
        a.moved_share, a.shift_slots = moved, shift
        return a

    def optimize(
        self, cfg2: FleetConfig, inp: PlanInputs, failed: dict[str, int], anchor: Anchor | None
    ) -> planmod.PlanResult:
        """Plan on a new model, or re-solve the kept one (new carbon Params, warm persistent
        solver) when nothing but the forecast changed: same slot, job groups, pools' initial
        state and reserves, and the same anchor (e.g. a second step in one slot)."""
        key = self._model_signature(inp, anchor)
        model = self._model if key == self._model_key else None
        if isinstance(model, StablePlanModel):
            # same MILP terms (the signature covers them); the newest plan is this step's
            model.anchor = anchor
        built: list[StablePlanModel] = []

        def new_model(i: PlanInputs) -> StablePlanModel:
            built.append(StablePlanModel(i, anchor))
            return built[-1]

        self._model, self._model_key = None, None  # not kept if the solve fails
        ctl = self._cfg.controller
        candidates = ctl.candidates
        skipped = None
        if candidates and 0 < ctl.candidates_max_jobs < len(inp.jobs):
            # bounded on big fleets: the per-job cap-level and greedy placements cost seconds
            # each there (measured in bench/results/controller.md)
            candidates = False
            skipped = (
                f"{len(inp.jobs)} jobs > controller.candidates_max_jobs = {ctl.candidates_max_jobs}"
            )
        reuse = self._baseline_to_reuse(inp)
        self._baseline_reuse = reuse
        res = planmod.make_plan(
            cfg2,
            self.clock,
            model=model,
            failed_nodes=failed,
            inputs=inp,
            new_model=new_model,
            tradeoff_curve=False,
            joblevel=self._cfg.controller.joblevel_candidate,
            candidates=candidates,
            incremental=len(inp.jobs) >= ctl.incremental_min_jobs,
            improve=False,  # the re-insertion pass is for one-off plans (no stability cost)
            baselines="none" if reuse is not None else ctl.baselines,
            baseline_worker=self.baseline_worker(len(inp.jobs)),
        )
        if skipped:
            res.document.setdefault("solver", {})["candidates_skipped"] = skipped
        if reuse is not None:
            sv = res.document.setdefault("solver", {})
            sv["baselines"] = ctl.baselines
            sv["baselines_reused"] = _reuse_label(reuse)
            res.document.setdefault("diagnostics", []).append(
                f"baselines: not priced this step (controller.baselines_every = "
                f"{ctl.baselines_every}); the saving figures use the carbon-agnostic baseline "
                f"priced by step #{reuse['step_id']} at {reuse['priced_at']} for slot "
                f"{reuse['slot_start']} ({reuse['age_steps']} step(s), "
                f"{reuse['age_s'] / 3600.0:g} h old)"
            )
        self._model, self._model_key = (built[-1] if built else model), key
        used = self._model
        if isinstance(used, StablePlanModel):
            res.document.setdefault("solver", {})["warm_start"] = dict(used.warm_start_info)
        return res

    def _baseline_to_reuse(self, inp: PlanInputs) -> dict[str, Any] | None:
        """The newest priced baseline (ledger kv ``baseline_priced``) when this step may use it
        instead of pricing (``[controller] baselines_every``): priced fewer than N steps ago,
        for the same fleet, and its horizon still covers this slot. ``None``: price now."""
        ctl = self._cfg.controller
        if ctl.baselines == "none" or ctl.baselines_every <= 1 or self._step_id is None:
            return None
        kv = self.ledger.get_kv("baseline_priced")
        if not kv or kv.get("fleet") != self._baseline_fleet(inp):
            return None
        age_steps = self._step_id - int(kv["step_id"])
        if not 0 < age_steps < ctl.baselines_every:
            return None
        k = (inp.start - _parse(kv["slot_start"])).total_seconds() / 3600.0 / inp.slot_h
        if abs(k - round(k)) > 1e-9 or not 0 <= round(k) < len(kv["carbon_kg"]):
            return None
        return {
            **kv,
            "slot_offset": int(round(k)),
            "age_steps": age_steps,
            "age_s": (self.clock.now() - _parse(kv["priced_at"])).total_seconds(),
        }

    @staticmethod
    def _model_signature(inp: PlanInputs, anchor: Anchor | None) -> tuple:
        import hashlib

        h = hashlib.sha1()
        for g in inp.groups:
            h.update(repr((g.key, round(g.required_gpu_h, 6), g.gpus)).encode())
        for p in inp.pools:
            h.update(repr((p.nodes, p.initial_on, p.spares)).encode())
            h.update(np.asarray(p.reserve_gpus, dtype=float).tobytes())
        if anchor is not None:
            for arr in (
                anchor.prev_nodes_on,
                anchor.moved_share,
                anchor.shift_slots,
                anchor.must_on,
                anchor.must_off,
            ):
                h.update(b"-" if arr is None else np.asarray(arr, dtype=float).tobytes())
            h.update(
                repr(
                    (
                        anchor.flap_weight,
                        anchor.flap_slots,
                        anchor.site_weight_per_gpu_h,
                        anchor.shift_weight_per_gpu_h_slot,
                    )
                ).encode()
            )
        return (inp.start, inp.T, len(inp.jobs), h.hexdigest())

    def _previous_plan(self, start: datetime, earlier_slot: bool) -> dict[str, Any] | None:
        """The newest usable plan; with ``earlier_slot`` only one made for an earlier slot
        (the stability anchor, the same for every step of a slot)."""
        sid = self._previous_plan_id(start, earlier_slot)
        return None if sid is None else self.ledger.plan(sid)

    def _previous_plan_id(self, start: datetime, earlier_slot: bool) -> int | None:
        """The step id of :meth:`_previous_plan`'s plan (``None``: there is none)."""
        sql = (
            "SELECT p.step_id FROM plans p JOIN steps s ON s.id = p.step_id WHERE "
            "s.plan_origin IN ('optimized', 'previous_shifted')"
        )
        args: tuple = ()
        if earlier_slot:
            sql += " AND s.slot_start < ?"
            args = (_iso(start),)
        row = self.ledger.db.execute(sql + " ORDER BY p.step_id DESC LIMIT 1", args).fetchone()
        return None if row is None else int(row[0])
