"""Issue #10.6: a job entirely before the horizon (released and due before its start) got the
false diagnostic "needs 2.00 h … but has 0.00 h between its release and deadline" — it had
four hours; it is overdue. The diagnostic says so."""

from __future__ import annotations

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_plan
from tests.optimize.conftest import START, write_fleet
from tests.optimize.test_plan_exact import SITE, job, pool


def test_a_job_due_before_the_horizon_is_reported_overdue(tmp_path) -> None:
    path = write_fleet(
        tmp_path,
        carbon={"Z": [100, 500, 100, 500, 300, 200]},
        sites=SITE,
        pools=pool(),
        jobs=[job(id="old", work=2.0, release=-6.0, deadline=-2.0), job(id="ok", work=1.0)],
    )
    doc = make_plan(load_config(path), SimClock(START)).document
    diags = [d for d in doc["diagnostics"] if "job old" in d]
    assert not any("between its release and deadline" in d for d in diags), diags
    assert (
        "deadline: job old was due 2026-01-04T22:00:00Z, 2.00 h before the horizon starts "
        "(2026-01-05T00:00:00Z): it is already overdue" in diags[0]
    )
    assert not any("job ok" in d for d in doc["diagnostics"])
