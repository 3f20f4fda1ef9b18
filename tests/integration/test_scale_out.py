"""Two real `mixlab worker` processes (and `mixlab beat`) share one experiment on PostgreSQL + Redis.

Runs are synthetic (``MIXLAB_SYNTHETIC_TRAIN_S``: sleep, then losses from a fixed mixing law), so the
test exercises the service path only: claims, results, planning requests, planner passes and dispatch
with two consumers racing for the same messages. Behaviour only, no timing (``bench/scale_out.py``
measures throughput): every run trained exactly once, nothing left queued or running, and the
experiment done with a final recommendation, both workers having trained.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL, _create_pg_database, _drop_pg_database, pg_url

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]
ROOT = Path(__file__).resolve().parents[2]
BUDGET = 8


@pytest.fixture
def service_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    import redis

    from app.core.config import get_settings
    from app.core.db import get_engine
    from app.core.migrate import upgrade

    name = _create_pg_database()
    url = pg_url(name)
    upgrade(url)
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {
        "MIXLAB_DATABASE_URL": url,
        "MIXLAB_BROKER_URL": REDIS_URL,
        "MIXLAB_EXECUTOR": "celery",
        "MIXLAB_STORAGE_DIR": str(tmp_path / "storage"),
        "MIXLAB_SYNTHETIC_TRAIN_S": "0.3",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()
    get_engine(url).dispose()
    _drop_pg_database(name)


class Proc:
    """A `mixlab` subprocess in its own process group, logging to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path, self.log = log, log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.log_path.read_text()[-4000:]
        return b" ready." in self.log_path.read_bytes()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def _wait(pred, timeout: float, what: str, logs: list[Path]):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def test_two_workers_share_an_experiment(service_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from app.core.db import session_scope
    from app.main import create_app
    from app.models import Run
    from app.services.projects import create_project
    from proxy_models.corpora import documents, take, write_jsonl

    with session_scope() as session:
        _, key = create_project(session=session, name="scale")
    auth = {"Authorization": f"Bearer {key}"}
    logs = [tmp_path / "worker-0.log", tmp_path / "worker-1.log", tmp_path / "beat.log"]
    procs: list[Proc] = []
    try:
        for log in logs[:2]:
            procs.append(Proc(["worker", "--concurrency", "1"], service_env, log))
        procs.append(Proc(["beat"], service_env, logs[2]))
        _wait(lambda: all(p.ready() for p in procs[:2]), 60, "both workers to be ready", logs)
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
            for name in ("sports", "code"):
                path = write_jsonl(tmp_path / f"{name}.jsonl", take(documents(name), max_chars=30_000))
                resp = api.put(
                    f"{base}/domains/{name}/corpus",
                    params={"filename": path.name},
                    content=path.read_bytes(),
                    headers=auth,
                )
                assert resp.status_code == 200, resp.text
            assert api.post(f"{base}/start", headers=auth).json()["status"] == "preparing"

            def finished():  # type: ignore[no-untyped-def]
                data = api.get(base, headers=auth).json()
                return data if data["status"] in ("done", "failed", "cancelled") else None

            final = _wait(finished, 60, "the experiment to finish", logs)
            assert final["status"] == "done", final["error"]
            rec = api.get(f"{base}/recommendation", headers=auth).json()
            assert rec["final"] and rec["n_runs"] == BUDGET
    finally:
        for p in procs:
            p.stop()

    with session_scope() as session:
        runs = session.execute(
            select(Run.status, Run.attempts, Run.losses, Run.started_at, Run.finished_at, Run.worker).where(
                Run.experiment_id == exp["id"]
            )
        ).all()
    assert len(runs) == BUDGET
    for status, attempts, losses, started, done, worker in runs:
        assert (status, attempts) == ("succeeded", 1)  # trained once: no reclaim, no double claim
        assert set(losses) == {"sports", "code"} and started is not None and done is not None and worker
    assert len({worker for *_, worker in runs}) == 2  # parallelism 2 and one task per worker: both trained
    errors = [line for p in logs for line in p.read_text().splitlines() if "ERROR/" in line]
    assert not errors, errors
