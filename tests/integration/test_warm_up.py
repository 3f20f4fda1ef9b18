"""A server process opens its first database connection at start-up, not in its first request (which
every request arriving meanwhile would wait behind); a database that is down then does not stop it."""

from __future__ import annotations

import pytest


def test_the_pool_holds_a_connection_before_the_first_request(
    settings_env: dict[str, str], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from app.core.config import get_settings
    from app.core.db import get_engine
    from app.main import create_app

    monkeypatch.setenv("MIXLAB_EXECUTOR", "celery")  # no embedded planner threads opening connections
    get_settings.cache_clear()
    engine = get_engine(database_url)
    engine.dispose()
    assert engine.pool.checkedin() == 0
    with TestClient(create_app()):
        assert engine.pool.checkedin() == 1
