"""The controller interface the daemon drives (greencpn/controller, see CONTROLLER_API.md).

The types are re-exported from :mod:`greencpn.controller.types` so the daemon's modules import
them from one place; the ``Controller`` class itself is imported when a daemon builds one
(:func:`controller_class`), so importing the daemon does not load the optimiser.
"""

from __future__ import annotations

from typing import Any

from greencpn.controller.types import Levers, Mode, NotLeaderError, StepResult, StepStatus

__all__ = ["Levers", "Mode", "NotLeaderError", "StepResult", "StepStatus", "controller_class"]


def controller_class() -> Any:
    from greencpn.controller import Controller

    return Controller
