"""Experiments: create, list, read, upload corpora, start, cancel, recommendations."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from app.api.deps import PageDep, ProjectDep, SessionDep, SettingsDep
from app.errors import NotFound
from app.models import Recommendation
from app.schemas import DomainOut, ExperimentCreate, ExperimentOut, Page, RecommendationOut
from app.services import corpora
from app.services import experiments as service
from app.services.dispatch import dispatch_prepare
from app.services.recommendations import latest_recommendation, list_recommendations, recommendation_out

router = APIRouter(prefix="/experiments", tags=["experiments"])
ExperimentId = Annotated[int, PathParam(description="experiment id")]


def _out(session: SessionDep, experiment) -> ExperimentOut:  # type: ignore[no-untyped-def]
    return service.to_out(session=session, experiments=[experiment])[0]


@router.post("", status_code=201, response_model=ExperimentOut, summary="Create an experiment (as a draft)")
def create(spec: ExperimentCreate, session: SessionDep, project: ProjectDep) -> ExperimentOut:
    experiment = service.create_experiment(session=session, project_id=project.id, spec=spec)
    return _out(session, experiment)


@router.get("", response_model=Page[ExperimentOut], summary="List experiments, newest first")
def list_(session: SessionDep, project: ProjectDep, page: PageDep) -> Page[ExperimentOut]:
    items = service.list_experiments(
        session=session, project_id=project.id, limit=page.limit, after=page.after
    )
    next_after = items[-1].id if len(items) == page.limit else None
    return Page(items=service.to_out(session=session, experiments=items), next_after=next_after)


@router.get("/{experiment_id}", response_model=ExperimentOut)
def get(experiment_id: ExperimentId, session: SessionDep, project: ProjectDep) -> ExperimentOut:
    return _out(
        session, service.get_experiment(session=session, project_id=project.id, experiment_id=experiment_id)
    )


@router.put(
    "/{experiment_id}/domains/{domain}/corpus",
    response_model=DomainOut,
    summary="Upload a domain's corpus as the raw request body (.txt, .jsonl, optionally .gz)",
)
async def upload_corpus(
    experiment_id: ExperimentId,
    domain: str,
    request: Request,
    session: SessionDep,
    project: ProjectDep,
    settings: SettingsDep,
    filename: Annotated[str, Query(description="tells the format: x.txt, x.jsonl, x.txt.gz, x.jsonl.gz")],
) -> DomainOut:
    experiment = service.get_experiment(session=session, project_id=project.id, experiment_id=experiment_id)
    target = service.upload_target(experiment=experiment, domain=domain)
    stored = await _receive(request, filename, settings)
    service.attach_corpus(session=session, domain=target, stored=stored)
    return DomainOut.model_validate(target)


@router.put(
    "/{experiment_id}/corpus",
    response_model=ExperimentOut,
    summary="Upload the unlabeled corpus of a clustering experiment (raw body, like a domain corpus)",
)
async def upload_unlabeled(
    experiment_id: ExperimentId,
    request: Request,
    session: SessionDep,
    project: ProjectDep,
    settings: SettingsDep,
    filename: Annotated[str, Query(description="tells the format: x.txt, x.jsonl, x.txt.gz, x.jsonl.gz")],
) -> ExperimentOut:
    experiment = service.get_experiment(session=session, project_id=project.id, experiment_id=experiment_id)
    service.check_unlabeled_upload(experiment=experiment)
    stored = await _receive(request, filename, settings)
    service.attach_unlabeled(session=session, experiment=experiment, stored=stored)
    return _out(session, experiment)


async def _receive(request: Request, filename: str, settings: SettingsDep) -> corpora.StoredCorpus:
    """Stream the body to a temp file, then validate and store it (nothing is kept if it is rejected)."""
    corpora.corpus_format(filename)
    tmp_dir = settings.storage_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
        raw = Path(tmp) / "upload"
        await corpora.receive(request.stream(), raw, settings.max_upload_bytes)
        return await run_in_threadpool(
            corpora.store_upload, raw, filename, settings.storage_dir, settings.max_upload_bytes
        )


@router.post(
    "/{experiment_id}/start", response_model=ExperimentOut, summary="Prepare data and start the search"
)
def start(experiment_id: ExperimentId, session: SessionDep, project: ProjectDep) -> ExperimentOut:
    experiment = service.get_experiment(
        session=session, project_id=project.id, experiment_id=experiment_id, lock=True
    )
    service.start_experiment(session=session, experiment=experiment)
    session.commit()
    if experiment.status == "preparing":
        dispatch_prepare(experiment.id)
    return _out(session, experiment)


@router.post(
    "/{experiment_id}/cancel", response_model=ExperimentOut, summary="Cancel the experiment and its runs"
)
def cancel(experiment_id: ExperimentId, session: SessionDep, project: ProjectDep) -> ExperimentOut:
    experiment = service.get_experiment(
        session=session, project_id=project.id, experiment_id=experiment_id, lock=True
    )
    service.cancel_experiment(session=session, experiment=experiment)
    return _out(session, experiment)


@router.get(
    "/{experiment_id}/recommendation",
    response_model=RecommendationOut,
    summary="The latest recommended mixture (final once the experiment is done)",
)
def recommendation(
    experiment_id: ExperimentId, session: SessionDep, project: ProjectDep
) -> RecommendationOut:
    experiment = service.get_experiment(session=session, project_id=project.id, experiment_id=experiment_id)
    rec: Recommendation | None = latest_recommendation(session=session, experiment=experiment)
    if rec is None:
        raise NotFound(
            "no recommendation yet: it appears after the first batch of runs", code="no_recommendation"
        )
    return recommendation_out(experiment, rec)


@router.get(
    "/{experiment_id}/recommendations",
    response_model=Page[RecommendationOut],
    summary="Every refit, oldest first (the audit trail)",
)
def recommendations(
    experiment_id: ExperimentId, session: SessionDep, project: ProjectDep, page: PageDep
) -> Page[RecommendationOut]:
    experiment = service.get_experiment(session=session, project_id=project.id, experiment_id=experiment_id)
    rows = list_recommendations(session=session, experiment=experiment, limit=page.limit, after=page.after)
    return Page(
        items=[recommendation_out(experiment, r) for r in rows],
        next_after=rows[-1].id if len(rows) == page.limit else None,
    )
