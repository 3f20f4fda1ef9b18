"""Experiments: create, list, read, upload corpora, start, cancel, recommendations."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import ExperimentDep, LockedExperimentDep, PageDep, ProjectDep, SessionDep, SettingsDep
from app.errors import NotFound, UnsupportedMediaType
from app.models import Experiment, Recommendation
from app.schemas import (
    TAG_PATTERN,
    TEXT_PATTERN,
    CloneIn,
    DomainOut,
    ExperimentCreate,
    ExperimentOut,
    ExperimentPatch,
    ExtendIn,
    Page,
    RecommendationOut,
    ScalePredictionIn,
    ScalePredictionOut,
)
from app.services import corpora, scale_prediction, storage
from app.services import experiments as service
from app.services.dispatch import dispatcher
from app.services.recommendations import latest_recommendation, list_recommendations, recommendation_out
from app.status import ExperimentStatus

router = APIRouter(prefix="/experiments", tags=["experiments"])
RAW_FILE = {
    "requestBody": {
        "required": True,
        "description": "the file itself as the body: UTF-8 text (.txt documents separated by blank lines, or "
        '.jsonl with a "text" field per line), optionally gzipped',
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary", "minLength": 1}}
        },
    }
}
Filename = Annotated[
    str,
    Query(
        max_length=255,
        pattern=r"\.([tT][xX][tT]|[jJ][sS][oO][nN][lL])(\.[gG][zZ])?$",
        description="tells the format: x.txt, x.jsonl, x.txt.gz, x.jsonl.gz",
    ),
]


def _out(session: SessionDep, experiment: Experiment) -> ExperimentOut:
    return service.to_out(session=session, experiments=[experiment])[0]


@router.post("", status_code=201, response_model=ExperimentOut, summary="Create an experiment (as a draft)")
def create(spec: ExperimentCreate, session: SessionDep, project: ProjectDep) -> ExperimentOut:
    experiment = service.create_experiment(session=session, project_id=project.id, spec=spec)
    return _out(session, experiment)


@router.get("", response_model=Page[ExperimentOut], summary="List experiments, newest first")
def list_(
    session: SessionDep,
    project: ProjectDep,
    page: PageDep,
    status: Annotated[ExperimentStatus | None, Query(description="only experiments in this status")] = None,
    tag: Annotated[
        str | None, Query(max_length=64, pattern=TAG_PATTERN, description="only experiments with this tag")
    ] = None,
    name: Annotated[
        str | None, Query(max_length=200, pattern=TEXT_PATTERN, description="names containing this, any case")
    ] = None,
    archived: Annotated[bool, Query(description="list the archived ones instead")] = False,
) -> Page[ExperimentOut]:
    where = service.ExperimentFilter(status=status, tag=tag, name=name, archived=archived)
    items = service.list_experiments(
        session=session, project_id=project.id, limit=page.limit, after=page.after, where=where
    )
    next_after = items[-1].id if len(items) == page.limit else None
    return Page(items=service.to_out(session=session, experiments=items), next_after=next_after)


@router.get("/{experiment_id}", response_model=ExperimentOut)
def get(experiment: ExperimentDep, session: SessionDep) -> ExperimentOut:
    return _out(session, experiment)


@router.patch("/{experiment_id}", response_model=ExperimentOut, summary="Rename, tag or annotate")
def patch(experiment: LockedExperimentDep, body: ExperimentPatch, session: SessionDep) -> ExperimentOut:
    service.update_experiment(experiment=experiment, patch=body)
    return _out(session, experiment)


@router.post("/{experiment_id}/archive", response_model=ExperimentOut, summary="Hide from lists (kept)")
def archive(experiment: LockedExperimentDep, session: SessionDep) -> ExperimentOut:
    service.set_archived(experiment=experiment, archived=True)
    return _out(session, experiment)


@router.post("/{experiment_id}/unarchive", response_model=ExperimentOut, summary="Show in lists again")
def unarchive(experiment: LockedExperimentDep, session: SessionDep) -> ExperimentOut:
    service.set_archived(experiment=experiment, archived=False)
    return _out(session, experiment)


@router.delete(
    "/{experiment_id}",
    status_code=204,
    summary="Delete the experiment, its runs and its files",
    responses={
        409: {"description": "`worker_owns_runs`: a worker is training one of its runs (?force=true)"}
    },
)
def delete(
    experiment: LockedExperimentDep,
    session: SessionDep,
    force: Annotated[bool, Query(description="cancel runs that workers are training, then delete")] = False,
) -> Response:
    files = service.delete_experiment(session=session, experiment=experiment, force=force)
    session.commit()  # files go only once the rows are gone for good
    storage.remove(files)
    return Response(status_code=204)


@router.post(
    "/{experiment_id}/clone",
    status_code=201,
    response_model=ExperimentOut,
    summary="A new draft with the same inputs and corpora, and a new seed",
)
def clone(experiment: ExperimentDep, session: SessionDep, body: CloneIn | None = None) -> ExperimentOut:
    copy = service.clone_experiment(session=session, experiment=experiment, spec=body or CloneIn())
    return _out(session, copy)


@router.post(
    "/{experiment_id}/extend",
    response_model=ExperimentOut,
    summary="Add budget; a done experiment resumes searching",
)
def extend(experiment: LockedExperimentDep, body: ExtendIn, session: SessionDep) -> ExperimentOut:
    service.extend_experiment(session=session, experiment=experiment, budget=body.budget)
    session.commit()
    dispatcher().plan(experiment.id)
    return _out(session, experiment)


@router.put(
    "/{experiment_id}/domains/{domain}/corpus",
    response_model=DomainOut,
    summary="Upload a domain's corpus as the raw request body (.txt, .jsonl, optionally .gz)",
    openapi_extra=RAW_FILE,
)
async def upload_corpus(
    experiment: ExperimentDep,
    domain: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    filename: Filename,
) -> DomainOut:
    target = service.upload_target(experiment=experiment, domain=domain)
    stored = await _receive(request, filename, settings)
    service.attach_corpus(session=session, domain=target, stored=stored)
    return DomainOut.model_validate(target)


@router.put(
    "/{experiment_id}/corpus",
    response_model=ExperimentOut,
    summary="Upload the unlabeled corpus of a clustering experiment (raw body, like a domain corpus)",
    openapi_extra=RAW_FILE,
)
async def upload_unlabeled(
    experiment: ExperimentDep,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    filename: Filename,
) -> ExperimentOut:
    service.check_unlabeled_upload(experiment=experiment)
    stored = await _receive(request, filename, settings)
    service.attach_unlabeled(session=session, experiment=experiment, stored=stored)
    return _out(session, experiment)


async def _receive(request: Request, filename: str, settings: SettingsDep) -> corpora.StoredCorpus:
    """Stream the body to a temp file, then validate and store it (nothing is kept if it is rejected).

    The file is the raw body; a multipart form or a urlencoded one is refused (415) rather than stored
    with its boundaries and headers as corpus text."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith(("multipart/", "application/x-www-form-urlencoded")):
        raise UnsupportedMediaType(
            f"send the file as the raw request body (e.g. curl --data-binary @{filename}, "
            f"Content-Type: application/octet-stream), not as {content_type.split(';')[0]}"
        )
    corpora.corpus_format(filename)
    tmp_dir = settings.storage_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
        raw = Path(tmp) / "upload"
        await corpora.receive(request.stream(), raw, settings.max_upload_bytes)
        return await run_in_threadpool(
            corpora.store_upload, raw, filename, settings.storage_dir, corpora.Limits.of(settings)
        )


@router.post(
    "/{experiment_id}/start", response_model=ExperimentOut, summary="Prepare data and start the search"
)
def start(experiment: LockedExperimentDep, session: SessionDep) -> ExperimentOut:
    service.start_experiment(session=session, experiment=experiment)
    session.commit()
    if experiment.status == ExperimentStatus.PREPARING:
        dispatcher().prepare(experiment.id)
    else:
        dispatcher().plan(experiment.id)
    return _out(session, experiment)


@router.post(
    "/{experiment_id}/cancel", response_model=ExperimentOut, summary="Cancel the experiment and its runs"
)
def cancel(experiment: LockedExperimentDep, session: SessionDep) -> ExperimentOut:
    service.cancel_experiment(session=session, experiment=experiment)
    return _out(session, experiment)


@router.get(
    "/{experiment_id}/recommendation",
    response_model=RecommendationOut,
    summary="The latest recommended mixture (final once the experiment is done)",
)
def recommendation(experiment: ExperimentDep, session: SessionDep) -> RecommendationOut:
    rec: Recommendation | None = latest_recommendation(session=session, experiment=experiment)
    if rec is None:
        raise NotFound(
            "no recommendation yet: the planner writes one once the first results are in",
            code="no_recommendation",
        )
    return recommendation_out(experiment, rec, scale_prediction.predicted_for(session, rec))


@router.post(
    "/{experiment_id}/scale-prediction",
    status_code=202,
    response_model=ScalePredictionOut,
    summary="Predict the recommended mixture's loss at your target scale (trains a ladder of runs)",
    description="Queues a ladder of runs: the recommended mixture (and the natural and uniform ones) at "
    "each preset × token scale. As rungs finish, a law L(N, D) = E + A/N^α + B/D^β is fitted per mixture and "
    "`GET …/scale-prediction` (and `predicted_target_loss` on the recommendation) shows the loss it "
    "predicts at target_params / target_tokens, with a band. Ladder runs are charged to the budget "
    "(`cost_units`). Only for a done experiment whose runs mixlab's workers train.",
)
def start_scale_prediction(
    experiment: LockedExperimentDep, session: SessionDep, spec: ScalePredictionIn | None = None
) -> ScalePredictionOut:
    row, run_ids = scale_prediction.start(
        session=session, experiment=experiment, spec=spec or ScalePredictionIn()
    )
    out = scale_prediction.to_out(session=session, experiment=experiment, row=row)
    session.commit()
    dispatcher().runs(run_ids)
    return out


@router.get(
    "/{experiment_id}/scale-prediction",
    response_model=ScalePredictionOut,
    summary="The latest scale prediction: its ladder, fitted laws and predicted losses",
)
def get_scale_prediction(experiment: ExperimentDep, session: SessionDep) -> ScalePredictionOut:
    row = scale_prediction.latest(session=session, experiment=experiment)
    return scale_prediction.to_out(session=session, experiment=experiment, row=row)


@router.post(
    "/{experiment_id}/scale-prediction/cancel",
    response_model=ScalePredictionOut,
    summary="Cancel the running scale prediction (finished ladder runs are kept)",
)
def cancel_scale_prediction(experiment: LockedExperimentDep, session: SessionDep) -> ScalePredictionOut:
    row = scale_prediction.cancel(session=session, experiment=experiment)
    return scale_prediction.to_out(session=session, experiment=experiment, row=row)


@router.get(
    "/{experiment_id}/recommendations",
    response_model=Page[RecommendationOut],
    summary="Every refit, oldest first (the audit trail)",
)
def recommendations(experiment: ExperimentDep, session: SessionDep, page: PageDep) -> Page[RecommendationOut]:
    rows = list_recommendations(session=session, experiment=experiment, limit=page.limit, after=page.after)
    return Page(
        items=[recommendation_out(experiment, r) for r in rows],
        next_after=rows[-1].id if len(rows) == page.limit else None,
    )
