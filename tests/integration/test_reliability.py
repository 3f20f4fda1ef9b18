"""A short run of `bench/reliability.py` (the full one is `make bench-reliability`): on its own PostgreSQL
and Redis, workers killed mid-run and both dependencies restarted under API load lose no result, duplicate
none, leave nothing stuck, and answer no 5xx outside the outages."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server to run its own instance")
def test_kills_and_restarts_lose_nothing(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "bench/reliability.py",
            "--kills",
            "2",
            "--restarts",
            "1",
            "--workdir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    result = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert result.startswith("RESULT"), out.stderr[-4000:]
    figures = {k: int(v) for k, v in (kv.split("=") for kv in result.split()[1:])}
    assert figures["kills"] == 2 and figures["survived"] == 2, result
    bad = ("lost_results", "duplicate_results", "stuck_runs", "stuck_experiments", "api_5xx_outside_outage")
    assert {k: figures[k] for k in bad} == dict.fromkeys(bad, 0), f"{result}\n{out.stderr[-4000:]}"
