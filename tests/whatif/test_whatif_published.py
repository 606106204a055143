"""Published results on the real data (skipped when ../shared/data is absent)."""

from __future__ import annotations

import pytest

from greencpn.whatif.lwa import nightly_saving, read_half_hourly
from greencpn.whatif.node_demand import read_node_sequence, replay, spares_rule


@pytest.mark.parametrize(("stem", "published"), [("ger", 13.5), ("gb", 10.2), ("fr", 7.5)])
def test_lets_wait_awhile_nightly_within_1pp(shared_data, stem, published):
    s, _ = read_half_hourly(shared_data / "carbon" / "lets_wait_awhile_2020" / f"{stem}_ci.csv")
    r = nightly_saving(s, window_h=8.0)
    assert abs(r["saving_pct"] - published) <= 1.0
    assert nightly_saving(s, window_h=0.0)["saving_pct"] == pytest.approx(0.0)


def test_philly_idle_shutdown_matches_the_published_rule(shared_data):
    active, total = read_node_sequence(
        shared_data / "traces" / "philly_node_sequence_per_minute.csv"
    )
    r = replay(active, total, spares=spares_rule(2, 0.10), boot_min=10)
    assert r.idle_share_of_baseline_energy_pct == pytest.approx(9.6, abs=0.1)
    assert r.energy_saved_pct == pytest.approx(6.6, abs=0.2)
    assert r.waiting_minutes_pct == pytest.approx(1.3, abs=0.1)
