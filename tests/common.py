"""Constants every test folder shares (the fixtures are in tests/conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime

#: the tests' common start: the tiny fleets' horizons and the simulated clocks begin here
START = datetime(2026, 1, 5, tzinfo=UTC)
