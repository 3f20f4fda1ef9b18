"""Service mode for real: a fresh PostgreSQL database, Redis, and settings pointing `mixlab` processes
(workers, beat) at them. A module adds its own settings by overriding ``service_settings``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL, _create_pg_database, _drop_pg_database, pg_url


@pytest.fixture
def service_settings() -> dict[str, str]:
    """Extra ``MIXLAB_*`` settings for the service-mode processes of a test module."""
    return {}


@pytest.fixture
def service_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, service_settings: dict[str, str]
) -> Iterator[dict[str, str]]:
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
        **service_settings,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()
    get_engine(url).dispose()
    _drop_pg_database(name)
