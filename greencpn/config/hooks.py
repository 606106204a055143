"""``[pools.hook]``: how a pool's nodes are powered (read by ``greencpn apply``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class HookConfig(BaseModel):
    """How a pool's nodes are powered (used by ``greencpn apply``); extra keys are per kind."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    kind: Literal["none", "command", "slurm", "kubernetes", "ipmi", "wol", "agent"] = "none"
    advisory: bool = Field(
        default=False,
        description="kind 'none' only: plan the pool's nodes freely although greencpn cannot "
        "switch them (the plan is advice for an operator); default: planned always on",
    )
