"""Engine and sessions. One engine per database URL; SQLite gets WAL and foreign keys."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, configure_mappers, sessionmaker

from app.core.config import get_settings

log = logging.getLogger(__name__)


@lru_cache
def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().database_url
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    size = get_settings().db_pool_size
    engine = create_engine(url, pool_size=size, max_overflow=size)
    _ping_when_idle(engine)
    return engine


PING_AFTER_IDLE_S = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use if it sat idle for a second or more.

    ``pool_pre_ping`` pings on every checkout: one more round trip for every request. A
    connection in constant use proves itself alive; one that sat idle may have been cut (a database
    restart), and is replaced before a request sees it. A connection that dies mid-load fails its one
    request (503) and the pool then drops every connection older than the failure."""

    @event.listens_for(engine, "checkin")
    def _idle_since(dbapi_conn, record):  # type: ignore[no-untyped-def]
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn, record, proxy):  # type: ignore[no-untyped-def]
        if time.monotonic() - record.info.get("idle_since", 0.0) < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as e:
            raise DisconnectionError(f"pooled connection is dead: {e}") from e  # the pool reconnects


def warm_up() -> None:
    """Configure the ORM and open the pool's first connection before the first request. In a fresh
    server process the first request paid for both (the first connection also initialises the
    dialect), and every request that arrived meanwhile waited behind it: after a start, or in a second
    ``--workers`` process, the first burst of asks queued for hundreds of milliseconds."""
    configure_mappers()
    try:
        with get_engine(get_settings().database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as e:
        log.warning("the database is not reachable at start-up; requests will retry: %s", e)


@lru_cache
def _factory(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


def new_session() -> Session:
    return _factory(get_settings().database_url)()


@contextmanager
def autocommit_connection() -> Iterator[Connection]:
    """A pooled connection on which each statement commits on its own, for requests that are one
    statement at a time (the fast ask and tell): in a transaction each also paid a BEGIN and a COMMIT,
    two more round trips. Never for work whose statements must commit together."""
    with get_engine(get_settings().database_url).connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
