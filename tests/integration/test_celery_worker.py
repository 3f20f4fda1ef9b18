"""Service mode for real: PostgreSQL + Redis + `celery worker` subprocesses training real proxy LMs.

The fault test SIGKILLs the worker in the middle of a run; the reaper of a fresh worker puts the run back
in the queue, and the experiment still finishes with every run succeeded and nothing stuck.
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
        "MIXLAB_STALE_AFTER_S": "6",
        "MIXLAB_REAP_EVERY_S": "2",
        "MIXLAB_RETRY_BACKOFF_S": "0.5",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()
    get_engine(url).dispose()
    _drop_pg_database(name)


class Worker:
    """A `mixlab worker` (or, with ``command="beat"``, the one `mixlab beat`) in its own process group,
    so a kill takes its children too."""

    def __init__(self, env: dict[str, str], log: Path, command: str = "worker") -> None:
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", command, "--loglevel", "INFO"],
            cwd=ROOT,
            env={**os.environ, **env, "OMP_NUM_THREADS": "1", "MIXLAB_TRAIN_THREADS": "1"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def _wait(pred, timeout: float, what: str, log: Path):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{log.read_text()[-4000:]}")


def test_worker_survives_sigkill_mid_run(service_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.core.db import session_scope
    from app.main import create_app
    from app.services.projects import create_project
    from proxy_models.corpora import documents, take, write_jsonl

    with session_scope() as session:
        _, key = create_project(session=session, name="svc")
    auth = {"Authorization": f"Bearer {key}"}
    log = tmp_path / "worker.log"
    beat = Worker(service_env, tmp_path / "beat.log", command="beat")  # the reaper, apart from workers
    worker = Worker(service_env, log)
    try:
        with TestClient(create_app()) as api:
            spec = {
                "name": "svc",
                "domains": [{"name": "sports"}, {"name": "code"}],
                "strategy": "random",
                "fidelities": [{"preset": "xs", "tokens": 120_000}],
                "budget": 3,
                "parallelism": 1,
            }
            exp = api.post("/api/v1/experiments", json=spec, headers=auth).json()
            base = f"/api/v1/experiments/{exp['id']}"
            for name in ("sports", "code"):
                path = write_jsonl(tmp_path / f"{name}.jsonl", take(documents(name), max_chars=150_000))
                assert (
                    api.put(
                        f"{base}/domains/{name}/corpus",
                        params={"filename": path.name},
                        content=path.read_bytes(),
                        headers=auth,
                    ).status_code
                    == 200
                )
            assert api.post(f"{base}/start", headers=auth).json()["status"] == "preparing"

            def running_with_progress():  # type: ignore[no-untyped-def]
                items = api.get(f"{base}/runs", params={"status": "running"}, headers=auth).json()["items"]
                return items[0] if items and items[0]["progress"].get("step") else None

            victim = _wait(running_with_progress, 240, "a run to make progress", log)
            worker.kill()
            worker = Worker(service_env, log)

            def finished():  # type: ignore[no-untyped-def]
                data = api.get(base, headers=auth).json()
                return data if data["status"] in ("done", "failed") else None

            final = _wait(finished, 300, "the experiment to finish", log)
            assert final["status"] == "done", final["error"]
            runs = api.get(f"{base}/runs", headers=auth).json()["items"]
            assert [r["status"] for r in runs] == ["succeeded"] * 3
            again = next(r for r in runs if r["id"] == victim["id"])
            assert again["attempts"] >= 2 and set(again["losses"]) == {"sports", "code"}
            rec = api.get(f"{base}/recommendation", headers=auth).json()
            assert rec["final"] and rec["n_runs"] == 3
    finally:
        worker.stop()
        beat.stop()
