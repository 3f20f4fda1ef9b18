"""Two real `mixlab worker` processes (and `mixlab beat`) share one experiment on PostgreSQL + Redis.

Runs are synthetic (``MIXLAB_SYNTHETIC_TRAIN_S``: sleep, then losses from a fixed mixing law), so the
test exercises the service path only: claims, results, planning requests, planner passes and dispatch
with two consumers racing for the same messages. Behaviour only, no timing (``bench/scale_out.py``
measures throughput): every run trained exactly once, nothing left queued or running, and the
experiment done with a final recommendation, both workers having trained.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers import MixlabProcess, upload_corpora, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]
BUDGET = 8


@pytest.fixture
def service_settings() -> dict[str, str]:
    return {"MIXLAB_SYNTHETIC_TRAIN_S": "0.3"}


def test_two_workers_share_an_experiment(service_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from app.core.db import session_scope
    from app.main import create_app
    from app.models import Run
    from app.services.projects import create_project

    with session_scope() as session:
        _, key = create_project(session=session, name="scale")
    auth = {"Authorization": f"Bearer {key}"}
    logs = [tmp_path / "worker-0.log", tmp_path / "worker-1.log", tmp_path / "beat.log"]
    procs: list[MixlabProcess] = []
    try:
        for log in logs[:2]:
            procs.append(MixlabProcess(["worker", "--concurrency", "1"], service_env, log))
        procs.append(MixlabProcess(["beat"], service_env, logs[2]))
        wait_for(lambda: all(p.ready() for p in procs[:2]), "both workers to be ready", 60, 0.2, logs)
        with TestClient(create_app()) as api:
            spec = {
                "name": "scale",
                "domains": [{"name": "sports"}, {"name": "code"}],
                "strategy": "random",
                "fidelities": [{"preset": "xs", "tokens": 20_000}],
                "max_epochs": 100,
                "budget": BUDGET,
                "parallelism": 2,
            }
            exp = api.post("/api/v1/experiments", json=spec, headers=auth).json()
            base = f"/api/v1/experiments/{exp['id']}"
            upload_corpora(api, base, auth, tmp_path, max_chars=30_000)
            assert api.post(f"{base}/start", headers=auth).json()["status"] == "preparing"

            def finished():  # type: ignore[no-untyped-def]
                data = api.get(base, headers=auth).json()
                return data if data["status"] in ("done", "failed", "cancelled") else None

            final = wait_for(finished, "the experiment to finish", 60, 0.2, logs)
            assert final["status"] == "done", final["error"]
            rec = api.get(f"{base}/recommendation", headers=auth).json()
            assert rec["final"] and rec["n_runs"] == BUDGET
    finally:
        for p in procs:
            p.stop()

    with session_scope() as session:
        runs = session.execute(
            select(
                Run.status, Run.attempts, Run.losses, Run.started_at, Run.finished_at, Run.worker, Run.curve
            ).where(Run.experiment_id == exp["id"])
        ).all()
    assert len(runs) == BUDGET
    for status, attempts, losses, started, done, worker, curve in runs:
        assert (status, attempts) == ("succeeded", 1)  # trained once: no reclaim, no double claim
        assert set(losses) == {"sports", "code"} and started is not None and done is not None and worker
        steps = [p["step"] for p in curve]  # the learning curve the heartbeats carried, to the last step
        assert steps == [1, 2, 3] and all(p["train_loss"] > 0 for p in curve)
    assert len({r.worker for r in runs}) == 2  # parallelism 2 and one task per worker: both trained
    errors = [line for p in logs for line in p.read_text().splitlines() if "ERROR/" in line]
    assert not errors, errors
