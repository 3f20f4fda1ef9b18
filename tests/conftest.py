"""Shared fixtures: a real database per backend (SQLite file and a fresh PostgreSQL database), settings
pointed at it, an API client and a project key. No mocks of our own database or queue."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN = os.environ.get("MIXLAB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MIXLAB_TEST_REDIS", "redis://127.0.0.1:6379/15")

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _create_pg_database() -> str:
    import psycopg

    name = f"mixlab_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as e:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN} ({e}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        )
    return name


def _drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_url(name: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}"


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated, empty database; every test module of the suite runs on both backends."""
    from app.core.db import get_engine
    from app.core.migrate import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'mixlab.sqlite'}"
        upgrade(url)
        yield url
        return
    name = _create_pg_database()
    url = pg_url(name)
    upgrade(url)
    yield url
    get_engine(url).dispose()
    _drop_pg_database(name)


@pytest.fixture
def settings_env(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Point mixlab's settings at the test database and a fresh storage dir."""
    from app.core.config import get_settings

    env = {
        "MIXLAB_DATABASE_URL": database_url,
        "MIXLAB_STORAGE_DIR": str(tmp_path / "storage"),
        "MIXLAB_EXECUTOR": "embedded",
        "MIXLAB_BROKER_URL": REDIS_URL,
        # The app's embedded worker plans (as in production); tests that train call the task bodies.
        "MIXLAB_EMBEDDED_TRAINER": "false",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


@pytest.fixture
def api(settings_env: dict[str, str]) -> Iterator[object]:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client


def _new_key() -> str:
    from app.core.db import session_scope
    from app.services.projects import create_project

    with session_scope() as session:
        _, key = create_project(session=session, name=f"p-{uuid.uuid4().hex[:8]}")
    return key


@pytest.fixture
def key(settings_env: dict[str, str]) -> str:
    return _new_key()


@pytest.fixture
def other_key(settings_env: dict[str, str]) -> str:
    return _new_key()


@pytest.fixture
def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
