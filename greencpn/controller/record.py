"""The record phase's figures: the step's metrics (nodes, caps, carbon intensity, planned
power, jobs held / released / shifted, actions by status, stability) and the saving against
the carbon-agnostic baseline, priced this step or reused. Split from ``step.py`` (pure moves).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from greencpn.controller.base import ControllerBase, Observation, _iso
from greencpn.controller.jobs import failsafe_counts
from greencpn.controller.optimise import _reuse_label
from greencpn.optimize import plan as planmod


class RecordPhase(ControllerBase):
    def _baseline_saving(
        self, res: planmod.PlanResult, m: dict[str, Any], step_id: int | None, start: datetime
    ) -> None:
        """This slot's saving against the carbon-agnostic baseline (``saved_kg_co2e``,
        ``saved_kwh``) and ``m["baseline"]``: which pricing it comes from. Priced this step:
        stored as the newest priced baseline (per slot, summed over sites)."""
        ctl = self._cfg.controller
        ex = res.executed
        ex_kg = float(ex.site_carbon_kg[:, 0].sum())
        ex_kwh = float(ex.site_energy_kwh[:, 0].sum())
        base = res.baselines.get("carbon_agnostic")  # none with [controller] baselines = none
        reuse = self._baseline_reuse
        if base is not None:
            m["saved_kg_co2e"] = float(base.site_carbon_kg[:, 0].sum() - ex_kg)
            m["saved_kwh"] = float(base.site_energy_kwh[:, 0].sum() - ex_kwh)
            priced_at = _iso(self.clock.now())
            m["baseline"] = {
                "priced": True,
                "step_id": step_id,
                "priced_at": priced_at,
                "slot_start": _iso(start),
                "age_steps": 0,
                "age_s": 0.0,
                "every": ctl.baselines_every,
            }
            if ctl.baselines_every > 1 and step_id is not None:
                self.ledger.set_kv(
                    "baseline_priced",
                    {
                        "step_id": step_id,
                        "priced_at": priced_at,
                        "slot_start": _iso(start),
                        "fleet": self._baseline_fleet(res.inputs),
                        "carbon_kg": base.site_carbon_kg.sum(axis=0).tolist(),
                        "energy_kwh": base.site_energy_kwh.sum(axis=0).tolist(),
                    },
                )
        elif reuse is not None:
            k = reuse["slot_offset"]
            m["saved_kg_co2e"] = float(reuse["carbon_kg"][k]) - ex_kg
            m["saved_kwh"] = float(reuse["energy_kwh"][k]) - ex_kwh
            m["baseline"] = {**_reuse_label(reuse), "every": ctl.baselines_every}

    # ------------------------------------------------------------------ metrics
    def _metrics(
        self,
        obs: Observation,
        doc: dict[str, Any],
        res: planmod.PlanResult | None,
        actions: list[dict],
    ) -> dict[str, Any]:
        m: dict[str, Any] = {"nodes": obs.counts}
        caps = {}
        for p in doc.get("pools", []):
            if p.get("slots") and p["slots"][0].get("power_cap_w") is not None:
                caps[p["name"]] = float(p["slots"][0]["power_cap_w"])
        m["power_cap_w"] = caps
        sites = doc.get("sites") or []
        m["carbon_intensity_g_per_kwh"] = {
            s["name"]: s["slots"][0]["intensity_g_per_kwh"] for s in sites if s.get("slots")
        }
        m["planned_power_kw"] = {
            s["name"]: s["slots"][0]["meter_power_kw"] for s in sites if s.get("slots")
        }
        m["measured_power_kw"] = dict.fromkeys(m["planned_power_kw"])
        dec = self._decisions
        m["jobs"] = {
            "held": sum(1 for d in dec if d.kind == "defer"),
            "released": sum(1 for d in dec if d.kind == "release"),
            "shifted": sum(1 for d in dec if d.kind == "steer"),
            "running": len(obs.queue.running),
        }
        m["jobs_failsafe_released"], counted = failsafe_counts(
            self._failsafe, self.ledger.get_kv("failsafe_released", []) or []
        )
        self.ledger.set_kv("failsafe_released", counted)
        m["degraded_pools"] = list(self._degraded_pools)
        m["actions_by_status"] = {}
        for a in actions:
            m["actions_by_status"][a["status"]] = m["actions_by_status"].get(a["status"], 0) + 1
        if self._moves is not None:
            # against the newest plan: the chosen candidate's stability cost, jobs moved
            m["stability"] = {k: v for k, v in self._moves.items() if k != "moved_ids"}
        if res is not None:
            self._baseline_saving(res, m, self._step_id, res.inputs.start)
            m["solve_s"] = float(res.outcome.solve_s)
            m["model_reused"] = bool(res.outcome.warm)
            ws = (res.document.get("solver") or {}).get("warm_start") or {}
            m["warm_start_feasible"] = ws.get("feasible")
        return m
