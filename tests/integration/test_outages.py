"""Dependency outages: a database that does not answer gives 503 with Retry-After (not 500), and a broker
that is down when an experiment starts leaves it recoverable: the start answers, the reaper sends the
preparation again, and one that never finishes is failed with a reason, not left `preparing` forever.
Real connections to ports where nothing listens; no mocks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.helpers import MixlabProcess, error_code, free_port, serving, upload_corpora, wait_for


def test_database_down_answers_503_with_retry_after(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from app.core.config import get_settings
    from app.main import create_app

    monkeypatch.setenv("MIXLAB_DATABASE_URL", f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    monkeypatch.setenv("MIXLAB_EXECUTOR", "celery")  # no embedded threads polling the dead database
    get_settings.cache_clear()
    with TestClient(create_app(), raise_server_exceptions=False) as api:
        auth = {"Authorization": "Bearer mlx_any"}
        for method, path in [("GET", "/api/v1/experiments"), ("POST", "/api/v1/experiments/1/ask")]:
            resp = api.request(method, path, headers=auth)
            assert resp.status_code == 503 and error_code(resp) == "database_unavailable", resp.text
            assert int(resp.headers["Retry-After"]) > 0
        assert api.get("/readyz").status_code == 503 and api.get("/healthz").status_code == 200


@pytest.mark.slow
def test_broker_down_at_start_is_recovered_by_the_reaper(
    settings_env: dict[str, str], key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.core.config import get_settings
    from app.core.db import session_scope
    from app.models import Experiment
    from app.services.experiments import stalled_preparations

    port = free_port()
    env = {
        **settings_env,
        "MIXLAB_EXECUTOR": "celery",
        "MIXLAB_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    server = MixlabProcess(["serve", "--port", str(port), "--no-migrate"], env, tmp_path / "serve.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: serving(url), "the server", logs=[tmp_path / "serve.log"])
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, timeout=30) as api:
            spec = {"name": "w", "domains": [{"name": "code"}, {"name": "sports"}]}
            exp = api.post("/api/v1/experiments", json=spec, headers=auth).json()
            base = f"/api/v1/experiments/{exp['id']}"
            upload_corpora(api, base, auth, tmp_path, max_chars=2_000)
            started = time.monotonic()
            resp = api.post(f"{base}/start", headers=auth)
            assert resp.status_code == 200 and resp.json()["status"] == "preparing", resp.text
            assert time.monotonic() - started < 20  # the dead broker is not retried inside the request
    finally:
        server.stop()
    assert "not sent (the reaper re-sends it)" in (tmp_path / "serve.log").read_text()

    monkeypatch.setenv("MIXLAB_STALE_AFTER_S", "0")
    get_settings.cache_clear()
    with session_scope() as session:
        assert stalled_preparations(session=session) == [exp["id"]]  # never claimed: sent again
    monkeypatch.setenv("MIXLAB_PREPARE_TIMEOUT_S", "0")
    get_settings.cache_clear()
    with session_scope() as session:
        assert stalled_preparations(session=session) == []
        failed: Any = session.get(Experiment, exp["id"])
        assert failed.status == "failed" and "MIXLAB_PREPARE_TIMEOUT_S" in failed.error


def test_a_pooled_connection_cut_while_idle_is_replaced_before_use(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ping per checkout (a round trip per request), but one that sat idle is checked first: a
    backend terminated meanwhile (as a database restart does) never reaches a request."""
    import psycopg
    from sqlalchemy import create_engine, text

    from app.core import db
    from tests.conftest import PG_ADMIN

    if not settings_env["MIXLAB_DATABASE_URL"].startswith("postgresql"):
        pytest.skip("SQLite has no server connection to lose")
    engine = create_engine(settings_env["MIXLAB_DATABASE_URL"], pool_size=1, max_overflow=0)
    db._ping_when_idle(engine)
    with engine.connect() as conn:
        pid = conn.execute(text("select pg_backend_pid()")).scalar_one()
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        assert admin.execute("select pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)  # it has been idle long enough
    with engine.connect() as conn:
        assert conn.execute(text("select pg_backend_pid()")).scalar_one() != pid
    engine.dispose()
