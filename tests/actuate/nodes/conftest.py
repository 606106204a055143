"""Fixtures for the node hook tests: loopback-only networking for every test here."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENCPN_LOOPBACK_ONLY", "1")
