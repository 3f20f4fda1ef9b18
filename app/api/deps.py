"""Dependencies shared by the routes: a DB session per request and the caller's project."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi import Path as PathParam
from sqlalchemy.orm import Session

from app.core.config import Settings, get_settings
from app.core.db import session_scope
from app.errors import Unauthorized
from app.models import Experiment, Project
from app.services.experiments import experiment_for_key
from app.services.projects import project_for_key

COOKIE = "mixlab_key"


def get_db() -> Iterator[Session]:
    with session_scope() as session:
        yield session


# scope="function": commit before the response is sent, so a client never races its own write.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def api_key(request: Request) -> str:
    """The key from ``Authorization: Bearer …`` (or the dashboard's cookie)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if cookie := request.cookies.get(COOKIE):
        return cookie
    raise Unauthorized("send your project key as `Authorization: Bearer <key>`")


def current_project(session: SessionDep, key: Annotated[str, Depends(api_key)]) -> Project:
    return project_for_key(session=session, key=key)


ProjectDep = Annotated[Project, Depends(current_project)]
ExperimentId = Annotated[int, PathParam(description="experiment id")]


def current_experiment(
    experiment_id: ExperimentId, session: SessionDep, key: Annotated[str, Depends(api_key)]
) -> Experiment:
    """The path's experiment, if it belongs to the caller's project (404 otherwise)."""
    return experiment_for_key(session=session, key=key, experiment_id=experiment_id)


def locked_experiment(
    experiment_id: ExperimentId, session: SessionDep, key: Annotated[str, Depends(api_key)]
) -> Experiment:
    """Like ``current_experiment``, holding the row lock until the request's commit (state changes)."""
    return experiment_for_key(session=session, key=key, experiment_id=experiment_id, lock=True)


ExperimentDep = Annotated[Experiment, Depends(current_experiment)]
LockedExperimentDep = Annotated[Experiment, Depends(locked_experiment)]


class PageParams:
    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=500, description="items per page")] = 50,
        after: Annotated[int | None, Query(description="`next_after` of the previous page")] = None,
    ) -> None:
        self.limit = limit
        self.after = after


PageDep = Annotated[PageParams, Depends()]
