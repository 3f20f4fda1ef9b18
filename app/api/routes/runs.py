"""Runs: list and read; ask/tell for external pipelines; heartbeat, fail, retry; bulk import."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import PageDep, ProjectDep, SessionDep
from app.api.routes.experiments import ExperimentId
from app.errors import Conflict
from app.schemas import AskOut, FailIn, HeartbeatIn, ImportIn, ImportOut, Page, ResultIn, RunOut
from app.services import experiments as experiment_service
from app.services import runs as service
from app.services.dispatch import dispatch_runs
from app.services.loop import advance

router = APIRouter(prefix="/experiments/{experiment_id}", tags=["runs"])
Status = Annotated[str | None, Query(pattern="^(queued|running|succeeded|failed|cancelled)$")]


@router.get("/runs", response_model=Page[RunOut], summary="List runs in creation order (keyset pagination)")
def list_runs(
    experiment_id: ExperimentId,
    session: SessionDep,
    project: ProjectDep,
    page: PageDep,
    status: Status = None,
) -> Page[RunOut]:
    experiment = experiment_service.get_experiment(
        session=session, project_id=project.id, experiment_id=experiment_id
    )
    rows = service.list_runs(
        session=session, experiment=experiment, limit=page.limit, after=page.after, status=status
    )
    return Page(
        items=[service.run_out(experiment, r) for r in rows],
        next_after=rows[-1].id if len(rows) == page.limit else None,
    )


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(experiment_id: ExperimentId, run_id: int, session: SessionDep, project: ProjectDep) -> RunOut:
    experiment = experiment_service.get_experiment(
        session=session, project_id=project.id, experiment_id=experiment_id
    )
    return service.run_out(experiment, service.get_run(session=session, experiment=experiment, run_id=run_id))


@router.post("/ask", response_model=AskOut, summary="Lease the next mixture to train (external pipelines)")
def ask(experiment_id: ExperimentId, session: SessionDep, project: ProjectDep) -> AskOut:
    experiment = experiment_service.get_experiment(
        session=session, project_id=project.id, experiment_id=experiment_id
    )
    run = service.ask(session=session, experiment=experiment)
    assert run.lease_expires_at is not None
    return AskOut(run=service.run_out(experiment, run), lease_expires_at=run.lease_expires_at)


@router.post(
    "/runs/{run_id}/result", response_model=RunOut, summary="Report a leased run's per-domain losses"
)
def tell(
    experiment_id: ExperimentId, run_id: int, body: ResultIn, session: SessionDep, project: ProjectDep
) -> RunOut:
    experiment = experiment_service.get_experiment(
        session=session, project_id=project.id, experiment_id=experiment_id
    )
    run = service.get_run(session=session, experiment=experiment, run_id=run_id)
    if run.origin != "external":
        raise Conflict(f"run {run_id} is trained by mixlab's workers; it takes no results", code="bad_origin")
    saved = service.complete(
        session=session,
        run=run,
        experiment=experiment,
        token=None,
        losses=body.losses,
        cost=body.cost,
        wall_s=body.wall_s,
    )
    if not saved:
        raise Conflict(
            f"run {run_id} is {run.status}; only a leased (running) run takes a result", code="bad_status"
        )
    advance(session, experiment.id)
    session.refresh(run)
    return service.run_out(experiment, run)


@router.post(
    "/runs/{run_id}/heartbeat", response_model=RunOut, summary="Extend a leased run and record progress"
)
def heartbeat(
    experiment_id: ExperimentId, run_id: int, body: HeartbeatIn, session: SessionDep, project: ProjectDep
) -> RunOut:
    experiment = experiment_service.get_experiment(
        session=session, project_id=project.id, experiment_id=experiment_id
    )
    run = service.get_run(session=session, experiment=experiment, run_id=run_id)
    return service.run_out(experiment, service.extend_lease(session=session, run=run, progress=body.progress))


@router.post("/runs/{run_id}/fail", response_model=RunOut, summary="Report that a leased run failed")
def fail(
    experiment_id: ExperimentId, run_id: int, body: FailIn, session: SessionDep, project: ProjectDep
) -> RunOut:
    experiment = experiment_service.get_experiment(
        session=session, project_id=project.id, experiment_id=experiment_id
    )
    run = service.get_run(session=session, experiment=experiment, run_id=run_id)
    if service.fail(session=session, run_id=run.id, token=None, error=body.error, retryable=False) is None:
        raise Conflict(f"run {run_id} is {run.status}; only a running run can fail", code="bad_status")
    advance(session, experiment.id)
    session.refresh(run)
    return service.run_out(experiment, run)


@router.post("/runs/{run_id}/retry", response_model=RunOut, summary="Re-queue a failed or cancelled run")
def retry(experiment_id: ExperimentId, run_id: int, session: SessionDep, project: ProjectDep) -> RunOut:
    experiment = experiment_service.get_experiment(
        session=session, project_id=project.id, experiment_id=experiment_id, lock=True
    )
    run = service.get_run(session=session, experiment=experiment, run_id=run_id)
    to_dispatch = service.retry(session=session, experiment=experiment, run=run)
    session.commit()
    dispatch_runs(to_dispatch)
    return service.run_out(experiment, run)


@router.post(
    "/runs/import", response_model=ImportOut, status_code=201, summary="Bulk-import runs trained elsewhere"
)
def import_runs(
    experiment_id: ExperimentId, body: ImportIn, session: SessionDep, project: ProjectDep
) -> ImportOut:
    experiment = experiment_service.get_experiment(
        session=session, project_id=project.id, experiment_id=experiment_id
    )
    ids = service.import_runs(session=session, experiment=experiment, runs=body.runs)
    return ImportOut(imported=len(ids), run_ids=ids)
