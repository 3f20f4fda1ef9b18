"""Dashboard data: everything the experiment page draws, as JSON (the pages only render it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api.deps import ProjectDep, SessionDep
from app.api.routes.experiments import ExperimentId
from app.services import experiments as experiment_service
from app.services import insights as service

router = APIRouter(prefix="/experiments/{experiment_id}/dashboard", tags=["dashboard"])


@router.get("", response_model=service.Dashboard, summary="Every plot of the experiment page, as data")
def dashboard(experiment_id: ExperimentId, session: SessionDep, project: ProjectDep) -> service.Dashboard:
    experiment = experiment_service.get_experiment(
        session=session, project_id=project.id, experiment_id=experiment_id
    )
    return service.dashboard(session=session, experiment=experiment)


@router.get("/runs", response_model=service.RunsTable, summary="The latest runs, newest first (live table)")
def runs(
    experiment_id: ExperimentId,
    session: SessionDep,
    project: ProjectDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="rows to return")] = 200,
) -> service.RunsTable:
    experiment = experiment_service.get_experiment(
        session=session, project_id=project.id, experiment_id=experiment_id
    )
    return service.runs_table(session=session, experiment=experiment, limit=limit)


@router.get("/runs/{run_id}", response_model=service.RunDetail, summary="One run and its sampler trajectory")
def run(
    experiment_id: ExperimentId, run_id: int, session: SessionDep, project: ProjectDep
) -> service.RunDetail:
    experiment = experiment_service.get_experiment(
        session=session, project_id=project.id, experiment_id=experiment_id
    )
    return service.run_detail(session=session, experiment=experiment, run_id=run_id)


@router.get(
    "/export",
    summary="Download the latest recommended mixture as JSON, YAML or a HF interleave_datasets snippet",
    responses={200: {"content": {"application/json": {}, "application/yaml": {}, "text/x-python": {}}}},
)
def export(
    experiment_id: ExperimentId,
    session: SessionDep,
    project: ProjectDep,
    fmt: Annotated[service.ExportFormat, Query(alias="format", description="json, yaml or hf")] = "json",
) -> Response:
    experiment = experiment_service.get_experiment(
        session=session, project_id=project.id, experiment_id=experiment_id
    )
    body, media_type, filename = service.export_mixture(session=session, experiment=experiment, fmt=fmt)
    return Response(
        body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
