"""Runs: list and read; ask/tell for external pipelines; heartbeat, fail, retry; bulk import.

Every route only reads and writes rows: a result is committed, then planning is requested of the
planner (``workers/planner.py``); ask leases a run the planner already proposed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import ExperimentDep, ExperimentId, KeyDep, LockedExperimentDep, PageDep, SessionDep
from app.schemas import (
    TEXT_PATTERN,
    AskOut,
    FailIn,
    HeartbeatIn,
    ImportIn,
    ImportOut,
    Page,
    ResultIn,
    RunOut,
    RunWithCurve,
)
from app.services import ask_tell
from app.services import runs as service
from app.services.dispatch import dispatcher
from app.status import RunOrigin, RunStatus

router = APIRouter(prefix="/experiments/{experiment_id}", tags=["runs"])
StatusFilter = Annotated[RunStatus | None, Query(description="only runs in this status")]
Wait = Annotated[
    float,
    Query(ge=0, le=60, description="seconds to wait for a proposed run when none is ready (long poll)"),
]
NOT_READY: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "`no_run_ready` (with Retry-After: the planner is catching up, or `parallelism` "
        "runs are leased), `budget_spent`, `bad_status` or `bad_executor`"
    }
}


@router.get(
    "/runs",
    response_model=Page[RunOut],
    summary="List runs: filter, sort, page (keyset by id, offset by loss or finish time), or export CSV",
    responses={200: {"content": {"text/csv": {}}, "description": "a page of runs, or all of them as CSV"}},
)
def list_runs(
    experiment: ExperimentDep,
    session: SessionDep,
    page: PageDep,
    status: StatusFilter = None,
    fidelity: Annotated[
        str | None, Query(max_length=100, pattern=TEXT_PATTERN, description="only runs at this fidelity")
    ] = None,
    origin: Annotated[RunOrigin | None, Query(description="worker, external or import")] = None,
    sort: Annotated[Literal["id", "target_loss", "finished_at"], Query(description="sort key")] = "id",
    order: Annotated[Literal["asc", "desc"], Query()] = "asc",
    offset: Annotated[
        int, Query(ge=0, le=10_000_000, description="rows to skip (for the id sort, `after` is faster)")
    ] = 0,
    fmt: Annotated[Literal["json", "csv"], Query(alias="format", description="csv: every match")] = "json",
) -> Any:
    query = service.RunQuery(status=status, fidelity=fidelity, origin=origin, sort=sort, order=order)
    if fmt == "csv":
        filename = f"mixlab-experiment-{experiment.id}-runs.csv"
        return StreamingResponse(
            service.runs_csv(session=session, experiment=experiment, query=query),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    rows = service.list_runs(
        session=session, experiment=experiment, query=query, limit=page.limit, after=page.after, offset=offset
    )
    full = len(rows) == page.limit
    return Page(
        items=[service.run_out(experiment, r) for r in rows],
        next_after=rows[-1].id if full and sort == "id" else None,
        next_offset=offset + len(rows) if full and sort != "id" else None,
    )


@router.get(
    "/runs/{run_id:int}", response_model=RunWithCurve, summary="One run, with its learning curve and ETA"
)
def get_run(experiment: ExperimentDep, run_id: int, session: SessionDep) -> RunWithCurve:
    run = service.get_run(session=session, experiment=experiment, run_id=run_id)
    return service.run_with_curve(experiment, run)


@router.post(
    "/ask",
    response_model=AskOut,
    responses=NOT_READY,
    summary="Lease the next proposed mixture to train (external pipelines); never waits for a fit",
)
async def ask(experiment_id: ExperimentId, key: KeyDep, wait: Wait = 0.0) -> Response:
    # async, with the work in one thread: the hottest route pays one thread hop and no response
    # re-validation (the model is built and checked here)
    out = await run_in_threadpool(ask_tell.ask, key=key, experiment_id=experiment_id, wait_s=wait)
    return Response(out.model_dump_json(), media_type="application/json")


LEASED: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "`lease_lost` (the lease expired and the run was handed out again: drop the result), "
        "`bad_status` (already told or failed) or `bad_origin` (a worker's run)"
    }
}


@router.post(
    "/runs/{run_id:int}/result",
    response_model=RunOut,
    responses=LEASED,
    summary="Report a leased run's per-domain losses",
)
async def tell(experiment_id: ExperimentId, run_id: int, body: ResultIn, key: KeyDep) -> Response:
    # as ask: one thread hop; the result is committed before planning is requested
    out = await run_in_threadpool(
        ask_tell.tell, key=key, experiment_id=experiment_id, run_id=run_id, result=body
    )
    return Response(out.model_dump_json(), media_type="application/json")


@router.post(
    "/runs/{run_id:int}/heartbeat",
    response_model=RunOut,
    responses=LEASED,
    summary="Extend a leased run and record progress and learning-curve points",
)
def heartbeat(experiment: ExperimentDep, run_id: int, body: HeartbeatIn, session: SessionDep) -> RunOut:
    run = service.extend_lease(
        session=session,
        experiment=experiment,
        run_id=run_id,
        token=body.lease_token,
        progress=body.progress,
        points=body.points,
    )
    return service.run_out(experiment, run)


@router.post(
    "/runs/{run_id:int}/fail",
    response_model=RunOut,
    responses=LEASED,
    summary="Report that a leased run failed",
)
def fail(experiment: ExperimentDep, run_id: int, body: FailIn, session: SessionDep) -> RunOut:
    run = service.get_run(session=session, experiment=experiment, run_id=run_id)
    service.check_lease(run, body.lease_token)
    service.fail(session=session, run_id=run.id, token=body.lease_token, error=body.error, retryable=False)
    session.commit()
    dispatcher().plan(experiment.id)
    session.refresh(run)
    return service.run_out(experiment, run)


@router.post("/runs/{run_id:int}/retry", response_model=RunOut, summary="Re-queue a failed or cancelled run")
def retry(experiment: LockedExperimentDep, run_id: int, session: SessionDep) -> RunOut:
    run = service.get_run(session=session, experiment=experiment, run_id=run_id)
    to_dispatch = service.retry(session=session, experiment=experiment, run=run)
    session.commit()
    dispatcher().runs(to_dispatch)
    dispatcher().plan(experiment.id)
    return service.run_out(experiment, run)


@router.post(
    "/runs/import",
    response_model=ImportOut,
    status_code=201,
    summary="Bulk-import runs trained elsewhere (a recommendation follows without an ask)",
)
def import_runs(experiment: ExperimentDep, body: ImportIn, session: SessionDep) -> ImportOut:
    ids = service.import_runs(
        session=session, experiment=experiment, runs=body.runs, count_budget=body.count_budget
    )
    session.commit()
    dispatcher().plan(experiment.id)
    return ImportOut(imported=len(ids), run_ids=ids)
