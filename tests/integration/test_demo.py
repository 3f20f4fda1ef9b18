"""`mixlab demo` end to end (embedded mode): real uploads, real proxy training, recommendation over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from app.core.config import get_settings
    from app.demo import run_demo

    for var in ("MIXLAB_DATABASE_URL", "MIXLAB_STORAGE_DIR", "MIXLAB_EXECUTOR"):
        monkeypatch.setenv(var, "")  # run_demo sets them; monkeypatch restores them afterwards
    monkeypatch.setenv("MIXLAB_TRAIN_THREADS", "1")
    try:
        rec = run_demo(budget=2, workdir=tmp_path / "demo", tokens=24_000, parallelism=2)
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert rec["final"] and rec["n_runs"] == 2
    assert set(rec["weights"]) == {"sports", "politics", "code", "legal"}
    assert abs(sum(rec["weights"].values()) - 1) < 1e-6
    assert "recommended mixture" in out and "runs done   2/2" in out
    assert "warning (few_runs): 2 runs" in out  # two runs for four domains: the demo says not to trust it
