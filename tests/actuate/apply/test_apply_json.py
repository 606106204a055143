"""Issue #10.2: ``greencpn apply --json`` prints one JSON document (schema
``greencpn.apply-report/1``, docs/apply.md) and nothing else on stdout; progress goes to
stderr."""

from __future__ import annotations

import json

from greencpn.cli import main
from tests.actuate.apply.test_apply_cli import write_fleet


def test_apply_json_is_one_document(tmp_path, capsys):  # type: ignore[no-untyped-def]
    _, plan = write_fleet(tmp_path, nodes=4, caps=(300.0, 400.0))
    argv = ["apply", str(plan), "--slot", "0", "--dry-run", "--fake-backends"]
    assert main([*argv, "--state-dir", str(tmp_path / "s"), "--json"]) == 0
    cap = capsys.readouterr()
    doc = json.loads(cap.out)  # stdout is exactly one JSON document
    assert doc["schema"] == "greencpn.apply-report/1"
    assert doc["mode"] == "dry-run" and doc["exit_code"] == 0
    assert doc["slot"]["index"] == 0 and doc["slot"]["start"].endswith("Z")
    (pool,) = doc["pools"]
    # the same diff the text report shows: 4 nodes on, the plan wants 1
    assert pool["on_now"] == 4 and sorted(pool["power_off"]) == ["n2", "n3", "n4"]
    assert set(doc) >= {"steps", "warnings", "failed_nodes", "caps_not_applied", "jobs"}
    # and the text report says the same
    assert main([*argv, "--state-dir", str(tmp_path / "s2")]) == 0
    assert "n[2-4]" in capsys.readouterr().out
