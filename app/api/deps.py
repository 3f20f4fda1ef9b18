"""Dependencies shared by the routes: a DB session per request and the caller's project."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi import Path as PathParam
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.core.config import Settings, get_settings
from app.core.db import new_session
from app.errors import Forbidden, Unauthorized
from app.models import MAX_ID, Experiment, Project
from app.services.experiments import experiment_for_key
from app.services.projects import project_for_key

COOKIE = "mixlab_key"


async def get_db() -> AsyncIterator[Session]:
    """A session per request, committed when the route returns (rolled back if it raises).

    Async so that opening it costs no thread hop (a session touches the database only when first
    used); the commit, which does, runs in the thread pool, and only if a transaction is open. Routes
    that commit themselves (ask, tell) leave nothing for it to do."""
    session = new_session()
    try:
        yield session
        if session.in_transaction():
            await run_in_threadpool(session.commit)
    except BaseException:
        await run_in_threadpool(session.rollback)
        raise
    finally:
        session.close()  # no I/O: the commit or rollback above released the connection


# scope="function": commit before the response is sent, so a client never races its own write.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


async def api_key(request: Request) -> str:  # async: no I/O, so no thread hop
    """The key from ``Authorization: Bearer …``, or the dashboard's cookie for reads only.

    A cookie rides along with any request the browser makes, including a forged cross-site form post;
    a bearer header never does. So the cookie authorises GETs (all the dashboard sends) and nothing that
    changes state: no CSRF token is needed because no cookie-authorised write exists."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if cookie := request.cookies.get(COOKIE):
        if request.method not in SAFE_METHODS:
            raise Forbidden(
                "the dashboard cookie is read-only; send the key as `Authorization: Bearer <key>` to change "
                "anything",
                code="cookie_read_only",
            )
        return cookie
    raise Unauthorized("send your project key as `Authorization: Bearer <key>`")


KeyDep = Annotated[str, Depends(api_key)]


def current_project(session: SessionDep, key: KeyDep) -> Project:
    return project_for_key(session=session, key=key)


ProjectDep = Annotated[Project, Depends(current_project)]
ExperimentId = Annotated[int, PathParam(description="experiment id")]


def current_experiment(experiment_id: ExperimentId, session: SessionDep, key: KeyDep) -> Experiment:
    """The path's experiment, if it belongs to the caller's project (404 otherwise)."""
    return experiment_for_key(session=session, key=key, experiment_id=experiment_id)


def locked_experiment(experiment_id: ExperimentId, session: SessionDep, key: KeyDep) -> Experiment:
    """Like ``current_experiment``, holding the row lock until the request's commit (state changes)."""
    return experiment_for_key(session=session, key=key, experiment_id=experiment_id, lock=True)


ExperimentDep = Annotated[Experiment, Depends(current_experiment)]
LockedExperimentDep = Annotated[Experiment, Depends(locked_experiment)]


class PageParams:
    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=500, description="items per page")] = 50,
        after: Annotated[
            int | None, Query(ge=0, le=MAX_ID, description="`next_after` of the previous page")
        ] = None,
    ) -> None:
        self.limit = limit
        self.after = after


PageDep = Annotated[PageParams, Depends()]
