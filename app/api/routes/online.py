"""Online sessions: re-weight domains during one external training run."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ExperimentDep, SessionDep
from app.schemas import OnlineSessionCreate, OnlineSessionOut, OnlineUpdateIn
from app.services import online as service

router = APIRouter(prefix="/experiments/{experiment_id}/online-sessions", tags=["online"])


@router.post(
    "", status_code=201, response_model=OnlineSessionOut, summary="Start a session; returns first weights"
)
def create(experiment: ExperimentDep, body: OnlineSessionCreate, session: SessionDep) -> OnlineSessionOut:
    return service.session_out(
        experiment, service.create_session(session=session, experiment=experiment, spec=body)
    )


@router.get("", response_model=list[OnlineSessionOut], summary="Sessions of this experiment")
def list_(experiment: ExperimentDep, session: SessionDep) -> list[OnlineSessionOut]:
    return [
        service.session_out(experiment, r)
        for r in service.list_sessions(session=session, experiment=experiment)
    ]


@router.get("/{session_id:int}", response_model=OnlineSessionOut)
def get(experiment: ExperimentDep, session_id: int, session: SessionDep) -> OnlineSessionOut:
    row = service.get_session(session=session, experiment=experiment, session_id=session_id)
    return service.session_out(experiment, row)


@router.post(
    "/{session_id:int}/update", response_model=OnlineSessionOut, summary="Report losses; get new weights"
)
def update(
    experiment: ExperimentDep, session_id: int, body: OnlineUpdateIn, session: SessionDep
) -> OnlineSessionOut:
    row = service.get_session(session=session, experiment=experiment, session_id=session_id, lock=True)
    row = service.update_session(session=session, experiment=experiment, row=row, body=body)
    return service.session_out(experiment, row)
