"""Fixtures of the job-actuation tests: the fake Kubernetes API (tests/actuate/jobs/fake_kube.py)
and a TLS certificate for the webhook. The real Slurm cluster is tests/conftest.py's ``slurm``;
helpers for jobs on it are in tests/actuate/jobs/slurm_jobs.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.actuate.jobs.fake_kube import FakePodsApi, make_tls_cert, serve_fake_api


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[tuple[FakePodsApi, Path]]:
    with serve_fake_api(tmp_path) as served:
        yield served


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    got = make_tls_cert(tmp_path)
    if got is None:
        pytest.skip("openssl not installed (apt-get install openssl)")
    return got
