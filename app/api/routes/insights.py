"""Dashboard data: everything the experiment page draws, as JSON read from stored rows."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from app.api.deps import ExperimentDep, SessionDep
from app.schemas import TEXT_PATTERN
from app.schemas.dashboard import Dashboard, RunDetail, RunsTable, ScalePlot
from app.services import dashboard as service
from app.services.export import ExportFormat, export_mixture
from app.services.runs import RunQuery
from app.status import RunOrigin, RunStatus

router = APIRouter(prefix="/experiments/{experiment_id}/dashboard", tags=["dashboard"])


@router.get("", response_model=Dashboard, summary="Every plot of the experiment page, as data")
def dashboard(experiment: ExperimentDep, session: SessionDep) -> Dashboard:
    return service.dashboard(session=session, experiment=experiment)


@router.get(
    "/scale",
    response_model=ScalePlot | None,
    summary="The latest scale prediction as the loss-vs-compute plot (null before the first)",
)
def scale(experiment: ExperimentDep, session: SessionDep) -> ScalePlot | None:
    return service.scale_plot(session=session, experiment=experiment)


@router.get("/runs", response_model=RunsTable, summary="A page of the runs table, and live learning curves")
def runs(
    experiment: ExperimentDep,
    session: SessionDep,
    status: Annotated[RunStatus | None, Query(description="only runs in this status")] = None,
    fidelity: Annotated[
        str | None, Query(max_length=100, pattern=TEXT_PATTERN, description="only runs at this fidelity")
    ] = None,
    origin: Annotated[RunOrigin | None, Query(description="worker, external or import")] = None,
    sort: Annotated[Literal["id", "target_loss", "finished_at"], Query(description="sort key")] = "id",
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="rows to skip")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="rows to return")] = 50,
) -> RunsTable:
    query = RunQuery(status=status, fidelity=fidelity, origin=origin, sort=sort, order=order)
    return service.runs_table(session=session, experiment=experiment, query=query, offset=offset, limit=limit)


@router.get("/runs/{run_id:int}", response_model=RunDetail, summary="One run and its sampler trajectory")
def run(experiment: ExperimentDep, run_id: int, session: SessionDep) -> RunDetail:
    return service.run_detail(session=session, experiment=experiment, run_id=run_id)


@router.get(
    "/export",
    summary="Download the latest recommended mixture as JSON, YAML or a HF interleave_datasets snippet",
    responses={200: {"content": {"application/json": {}, "application/yaml": {}, "text/x-python": {}}}},
)
def export(
    experiment: ExperimentDep,
    session: SessionDep,
    fmt: Annotated[ExportFormat, Query(alias="format", description="json, yaml or hf")] = "json",
) -> Response:
    body, media_type, filename = export_mixture(session=session, experiment=experiment, fmt=fmt)
    return Response(
        body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
