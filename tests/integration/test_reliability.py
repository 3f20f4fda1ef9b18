"""A short run of `bench/reliability.py` (the full one is `make bench-reliability`): on its own PostgreSQL
and Redis, workers killed mid-run and both dependencies restarted under API load lose no result, duplicate
none, leave nothing stuck, and answer no 5xx outside the outages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.helpers import run_bench


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server to run its own instance")
def test_kills_and_restarts_lose_nothing(tmp_path: Path) -> None:
    args = ["bench/reliability.py", "--kills", "2", "--restarts", "1", "--workdir", str(tmp_path)]
    figures, log = run_bench(args, timeout=600)
    assert figures["kills"] == 2 and figures["survived"] == 2, figures
    bad = ("lost_results", "duplicate_results", "stuck_runs", "stuck_experiments", "api_5xx_outside_outage")
    assert {k: figures[k] for k in bad} == dict.fromkeys(bad, 0), f"{figures}\n{log}"
