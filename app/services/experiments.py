"""Create, read, list, start and cancel experiments, always scoped to one project."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Select, String, cast, delete, func, or_, select, update
from sqlalchemy.orm import Session, joinedload, selectinload

from app.core.config import get_settings
from app.core.security import hash_key
from app.errors import Conflict, InvalidInput, NotFound
from app.models import (
    ApiKey,
    Domain,
    Experiment,
    FidelityInfo,
    OnlineSession,
    PlannerJob,
    Recommendation,
    Run,
    search_run,
    utcnow,
    valid_id,
)
from app.schemas import (
    MAX_SEED,
    CloneIn,
    DomainOut,
    ExperimentCreate,
    ExperimentOut,
    ExperimentPatch,
    FidelitySpec,
)
from app.services import storage
from app.services.corpora import StoredCorpus
from app.services.planning import finish, new_jobs, request_plan
from app.services.projects import project_for_key
from app.services.strategies import check_params
from app.status import FINISHED, LIVE_RUNS, Executor, ExperimentStatus, RunOrigin, RunStatus
from strategies import StrategyError, available_strategies, get_strategy


def resolve_fidelities(specs: list[FidelitySpec], executor: str) -> list[FidelityInfo]:
    """Fill in tokens and FLOP cost; worker runs need a known preset, external ones tokens and cost."""
    out = []
    for i, f in enumerate(specs):
        if executor == Executor.WORKER or f.preset:
            from proxy_models.presets import PRESETS, run_flops

            if f.preset not in PRESETS:
                raise InvalidInput(
                    f"fidelity {i}: preset {f.preset!r} is unknown; choose one of {sorted(PRESETS)}",
                    code="unknown_preset",
                )
            tokens = f.tokens or PRESETS[f.preset].tokens
            cost = f.cost or run_flops(f.preset, tokens)
            out.append(FidelityInfo(name=f.name or f.preset, preset=f.preset, tokens=tokens, cost=cost))
        else:
            if not (f.name and f.tokens):
                raise InvalidInput(
                    f"fidelity {i}: external fidelities need a name and tokens", code="bad_fidelity"
                )
            if f.cost is None:  # no silent default: the budget and multi-fidelity search both weigh by it
                raise InvalidInput(
                    f"fidelity {i} ({f.name!r}): external fidelities need `cost`, the FLOPs of one run "
                    "(about 6 × parameters × tokens), so runs of different sizes are charged fairly",
                    code="missing_cost",
                )
            out.append(FidelityInfo(name=f.name, tokens=f.tokens, cost=f.cost))
    names = [f.name for f in out]
    if len(set(names)) != len(names):
        raise InvalidInput(f"fidelity names must be unique; got {names}", code="bad_fidelity")
    return sorted(out, key=lambda f: f.cost)


def create_experiment(*, session: Session, project_id: int, spec: ExperimentCreate) -> Experiment:
    settings = get_settings()
    if len(spec.domains) > settings.max_domains:
        raise InvalidInput(f"at most {settings.max_domains} domains are allowed", code="too_many_domains")
    if spec.strategy not in available_strategies():
        raise InvalidInput(
            f"unknown strategy {spec.strategy!r}; available: {', '.join(available_strategies())}",
            code="unknown_strategy",
        )
    check_params("offline", spec.strategy, spec.strategy_params, "strategy_params")
    try:
        get_strategy(spec.strategy, **spec.strategy_params)  # the constructor's own range checks
    except StrategyError as e:
        raise InvalidInput(str(e), code="bad_strategy_params") from e
    if spec.executor == Executor.EXTERNAL and spec.cluster is not None:
        raise InvalidInput("clustering needs worker execution", code="bad_executor")
    if spec.executor == Executor.EXTERNAL and any(d.tokens is None for d in spec.domains):
        raise InvalidInput("external experiments need `tokens` for every domain", code="missing_tokens")
    names = [d.name for d in spec.domains]
    experiment = Experiment(
        project_id=project_id,
        name=spec.name,
        executor=spec.executor,
        strategy=spec.strategy,
        strategy_params=spec.strategy_params,
        target=spec.target or ({n: 1 / len(names) for n in names} if names else {}),
        fidelities=resolve_fidelities(spec.fidelities, spec.executor),
        max_epochs=spec.max_epochs,
        target_tokens=spec.target_tokens,
        target_params=spec.target_params,
        budget=spec.budget,
        parallelism=spec.parallelism,
        seed=spec.seed,
        cluster=spec.cluster.model_dump() if spec.cluster else None,
        domains=[
            Domain(name=d.name, position=i, lower=d.lower, upper=d.upper, tokens=d.tokens)
            for i, d in enumerate(spec.domains)
        ],
    )
    session.add(experiment)
    session.flush()
    session.add_all(new_jobs(experiment))
    session.flush()
    return experiment


def get_experiment(
    *, session: Session, project_id: int, experiment_id: int, lock: bool = False
) -> Experiment:
    q = select(Experiment).where(Experiment.id == experiment_id, Experiment.project_id == project_id)
    experiment = _one_experiment(session, q, lock) if valid_id(experiment_id) else None
    if experiment is None:
        raise NotFound(f"experiment {experiment_id} not found in this project", code="experiment_not_found")
    return experiment


def experiment_for_key(*, session: Session, key: str, experiment_id: int, lock: bool = False) -> Experiment:
    """The experiment, if the key's project owns it: authentication and lookup in one query, since every
    ask and tell starts with them (401 for a bad key, 404 for another project's experiment)."""
    q = (
        select(Experiment)
        .join(ApiKey, ApiKey.project_id == Experiment.project_id)
        .where(Experiment.id == experiment_id, ApiKey.key_hash == hash_key(key))
    )
    experiment = _one_experiment(session, q, lock) if valid_id(experiment_id) else None
    if experiment is None:
        project = project_for_key(session=session, key=key)  # raises Unauthorized for a bad key
        return get_experiment(session=session, project_id=project.id, experiment_id=experiment_id)
    return experiment


def _one_experiment(session: Session, q: Select[Any], lock: bool) -> Experiment | None:
    if lock:
        q = q.with_for_update(of=Experiment)
    return session.scalars(q.options(joinedload(Experiment.domains))).unique().one_or_none()


@dataclass(frozen=True)
class ExperimentFilter:
    status: str | None = None
    tag: str | None = None
    name: str | None = None  # a substring, any case
    archived: bool = False  # False: hide archived experiments; True: only those


def list_experiments(
    *, session: Session, project_id: int, limit: int, after: int | None, where: ExperimentFilter | None = None
) -> list[Experiment]:
    where = where or ExperimentFilter()
    q = select(Experiment).where(Experiment.project_id == project_id)
    q = q.where(Experiment.archived_at.is_not(None) if where.archived else Experiment.archived_at.is_(None))
    if where.status:
        q = q.where(Experiment.status == where.status)
    if where.name:
        q = q.where(func.lower(Experiment.name).contains(where.name.lower(), autoescape=True))
    if where.tag:  # in the stored JSON list: TAG_PATTERN leaves nothing to escape, so '"tag"' is exact
        q = q.where(cast(Experiment.tags, String).contains(f'"{where.tag}"', autoescape=True))
    if after is not None:
        q = q.where(Experiment.id < after)
    q = q.order_by(Experiment.id.desc()).limit(limit).options(selectinload(Experiment.domains))
    return list(session.scalars(q))


@dataclass(frozen=True)
class RunStats:
    """What an experiment's summary, its dashboard and its planner read of its runs."""

    counts: dict[str, int]  # runs per status, a scale prediction's ladder included
    search_counts: dict[str, int]  # runs per status of the search alone (what the planner plans)
    best_loss: float | None  # lowest target loss of a succeeded search run
    spent: float  # budget used, in target-fidelity-equivalent runs (see ``run_stats``)
    newest_succeeded: int | None  # id of the newest succeeded run: with the count, names the set


def run_stats(*, session: Session, experiments: list[Experiment]) -> dict[int, RunStats]:
    """Run counts, best loss and spent budget for many experiments, in one grouped pass over their runs.

    Such a pass reads the experiment's whole heap; at a 10,000-run history it was the database's largest
    cost under ``bench/api_load.py``. Every dashboard GET and every planning pass reads these fresh, so
    each reads them once.

    Spent budget counts live and finished runs (imported ones are free unless imported with
    ``count_budget``) in target-fidelity-equivalent runs; a scale prediction's ladder runs count their
    FLOPs (planned, then measured).
    """
    by_id = {e.id: e for e in experiments}
    counts: dict[int, dict[str, int]] = {i: {} for i in by_id}
    search_counts: dict[int, dict[str, int]] = {i: {} for i in by_id}
    best: dict[int, float] = {}
    newest: dict[int, int] = {}
    spent = dict.fromkeys(by_id, 0.0)
    charged = or_(Run.origin != RunOrigin.IMPORT, Run.counts_budget).label("charged")
    search = search_run().label("search")
    rows = session.execute(
        select(Run.experiment_id, Run.status, Run.fidelity, charged, search)
        .add_columns(func.count(), func.min(Run.target_loss), func.sum(Run.cost), func.max(Run.id))
        .where(Run.experiment_id.in_(by_id))
        .group_by(Run.experiment_id, Run.status, Run.fidelity, charged, search)
    )
    for exp_id, status, fid, is_charged, is_search, n, lowest, flops, last_id in rows:
        counts[exp_id][status] = counts[exp_id].get(status, 0) + n
        if is_search:
            search_counts[exp_id][status] = search_counts[exp_id].get(status, 0) + n
        if status == RunStatus.SUCCEEDED:
            newest[exp_id] = max(newest.get(exp_id, last_id), last_id)
            if is_search and lowest is not None:
                best[exp_id] = min(best.get(exp_id, lowest), lowest)
        if is_charged and status in (*LIVE_RUNS, RunStatus.SUCCEEDED):
            experiment = by_id[exp_id]
            if is_search:
                spent[exp_id] += experiment.run_units(fid) * n
            else:
                spent[exp_id] += float(flops or 0.0) / experiment.target_fidelity.cost
    return {i: RunStats(counts[i], search_counts[i], best.get(i), spent[i], newest.get(i)) for i in by_id}


def to_out(
    *, session: Session, experiments: list[Experiment], stats: dict[int, RunStats] | None = None
) -> list[ExperimentOut]:
    """The experiments as the API shows them (``stats``: their ``run_stats``, if already read)."""
    if stats is None:
        stats = run_stats(session=session, experiments=experiments)
    out = []
    for e in experiments:
        data = {c: getattr(e, c) for c in ExperimentOut.model_fields if hasattr(e, c) and c != "domains"}
        data["domains"] = [DomainOut.model_validate(d) for d in e.domains]
        data["run_counts"] = stats[e.id].counts
        data["best_loss"] = stats[e.id].best_loss
        data["spent"] = stats[e.id].spent
        out.append(ExperimentOut(**data))
    return out


def _check_draft(experiment: Experiment) -> None:
    if experiment.status != ExperimentStatus.DRAFT:
        raise Conflict(
            f"experiment is {experiment.status}; corpora can only change in a draft", code="bad_status"
        )


def upload_target(*, experiment: Experiment, domain: str) -> Domain:
    """The domain a corpus upload is for; checked before a byte is read."""
    _check_draft(experiment)
    if experiment.executor != Executor.WORKER:
        raise Conflict("external experiments train elsewhere; they take no corpora", code="bad_executor")
    for d in experiment.domains:
        if d.name == domain:
            return d
    raise NotFound(
        f"experiment {experiment.id} has no domain {domain!r}; known: {[d.name for d in experiment.domains]}",
        code="unknown_domain",
    )


def attach_corpus(*, session: Session, domain: Domain, stored: StoredCorpus) -> None:
    domain.path, domain.sha256 = str(stored.path), stored.sha256
    domain.bytes, domain.documents = stored.bytes, stored.documents
    session.flush()


def check_unlabeled_upload(*, experiment: Experiment) -> None:
    _check_draft(experiment)
    if experiment.cluster is None:
        raise Conflict(
            "this experiment has named domains; upload to /domains/{name}/corpus", code="not_clustering"
        )


def attach_unlabeled(*, session: Session, experiment: Experiment, stored: StoredCorpus) -> None:
    experiment.cluster = {
        **(experiment.cluster or {}),
        "path": str(stored.path),
        "sha256": stored.sha256,
        "bytes": stored.bytes,
        "documents": stored.documents,
    }
    session.flush()


def start_experiment(*, session: Session, experiment: Experiment) -> None:
    """draft → preparing (worker) or running (external, with a planning pass requested).

    Worker experiments need every domain's corpus (or the corpus to cluster)."""
    if experiment.status != ExperimentStatus.DRAFT:
        raise Conflict(f"experiment is {experiment.status}; only a draft can be started", code="bad_status")
    if experiment.executor == Executor.WORKER:
        missing = [d.name for d in experiment.domains if d.path is None]
        if experiment.cluster is not None and "path" not in experiment.cluster:
            missing = ["the unlabeled corpus (PUT /experiments/{id}/corpus)"]
        if missing:
            raise Conflict(
                f"upload a corpus for every domain first; missing: {missing}", code="missing_corpus"
            )
    if experiment.executor == Executor.WORKER:
        experiment.status = ExperimentStatus.PREPARING
    else:
        experiment.status = ExperimentStatus.RUNNING
        request_plan(session, experiment.id)
    experiment.started_at = utcnow()
    experiment.heartbeat_at = None
    session.flush()


def stalled_preparations(*, session: Session) -> list[int]:
    """Preparations to send again, and those to give up on (failed with the reason).

    Sent again: claimed by a worker that stopped heartbeating, or never claimed at all (the message was
    lost, or the broker was down at start). Failed: still preparing ``prepare_timeout_s`` after start.
    """
    settings = get_settings()
    now = utcnow()
    stale = now - timedelta(seconds=settings.stale_after_s)
    overdue = now - timedelta(seconds=settings.prepare_timeout_s)
    preparing = list(
        session.scalars(select(Experiment).where(Experiment.status == ExperimentStatus.PREPARING))
    )
    resend = []
    for experiment in preparing:
        if experiment.started_at is not None and experiment.started_at < overdue:
            finish(
                session,
                experiment,
                ExperimentStatus.FAILED,
                f"preparation did not finish within {settings.prepare_timeout_s:g} s "
                "(MIXLAB_PREPARE_TIMEOUT_S): are workers running and is the broker reachable?",
            )
        elif (experiment.heartbeat_at or experiment.started_at or now) < stale:
            experiment.heartbeat_at = None  # a cleared heartbeat makes the preparation claimable again
            resend.append(experiment.id)
    session.flush()
    return resend


def update_experiment(*, experiment: Experiment, patch: ExperimentPatch) -> None:
    for field in patch.model_fields_set:
        value = getattr(patch, field)
        if value is not None or field == "notes":  # a name or tag list cannot be null: null means "keep"
            setattr(experiment, field, value)


def set_archived(*, experiment: Experiment, archived: bool) -> None:
    experiment.archived_at = utcnow() if archived else None


def clone_experiment(*, session: Session, experiment: Experiment, spec: CloneIn) -> Experiment:
    """A new draft with the same inputs (domains with their uploaded corpora, target, strategy,
    fidelities, budget) and a new seed; its runs start from nothing."""
    clone = Experiment(
        project_id=experiment.project_id,
        name=spec.name or f"{experiment.name[:192]} (clone)",  # within the 200 characters a name has
        executor=experiment.executor,
        strategy=experiment.strategy,
        strategy_params=dict(experiment.strategy_params),
        target=dict(experiment.target),
        fidelities=list(experiment.fidelities),
        max_epochs=experiment.max_epochs,
        target_tokens=experiment.target_tokens,
        target_params=experiment.target_params,
        budget=experiment.budget,
        parallelism=experiment.parallelism,
        seed=spec.seed if spec.seed is not None else min(experiment.seed + 1, MAX_SEED),
        cluster=dict(experiment.cluster) if experiment.cluster else None,
        tags=list(experiment.tags),
        domains=[
            Domain(
                name=d.name,
                position=d.position,
                lower=d.lower,
                upper=d.upper,
                tokens=d.tokens if experiment.executor == Executor.EXTERNAL else None,
                **{c: getattr(d, c) for c in ("path", "sha256", "bytes", "documents")},
            )
            for d in experiment.domains
            if experiment.cluster is None  # a clustering experiment discovers its domains again
        ],
    )
    session.add(clone)
    session.flush()
    session.add_all(new_jobs(clone))
    session.flush()
    return clone


def extend_experiment(*, session: Session, experiment: Experiment, budget: float) -> None:
    """More budget; a done experiment resumes (the planner proposes the next runs)."""
    if experiment.status in (ExperimentStatus.FAILED, ExperimentStatus.CANCELLED):
        raise Conflict(f"experiment is {experiment.status}; clone it to run it again", code="bad_status")
    experiment.budget += budget
    if experiment.status == ExperimentStatus.DONE:
        experiment.status = ExperimentStatus.RUNNING
        experiment.finished_at = None
        request_plan(session, experiment.id)
    session.flush()


def delete_experiment(*, session: Session, experiment: Experiment, force: bool) -> list[Path]:
    """Delete the experiment and its rows; returns its files, to remove once the delete is committed.

    While a worker is training one of its runs this is a 409 unless ``force``: the run is cancelled,
    and the worker finds out at its next heartbeat and stops."""
    training = session.scalars(
        select(Run.id).where(
            Run.experiment_id == experiment.id,
            Run.status == RunStatus.RUNNING,
            Run.origin == RunOrigin.WORKER,
        )
    ).all()
    if training and not force:
        raise Conflict(
            f"workers are training runs {list(training)}; cancel the experiment first, or pass ?force=true",
            code="worker_owns_runs",
        )
    run_ids = list(session.scalars(select(Run.id).where(Run.experiment_id == experiment.id)))
    files = storage.files_of(session, experiment, run_ids)
    for table in (Run, Recommendation, OnlineSession, PlannerJob):
        session.execute(delete(table).where(table.experiment_id == experiment.id))
    session.delete(experiment)
    session.flush()
    return files


def cancel_experiment(*, session: Session, experiment: Experiment) -> None:
    if experiment.status in FINISHED:
        raise Conflict(f"experiment is already {experiment.status}", code="bad_status")
    experiment.status = ExperimentStatus.CANCELLED
    experiment.finished_at = utcnow()
    session.execute(
        update(Run)
        .where(Run.experiment_id == experiment.id, Run.status.in_(LIVE_RUNS))
        .values(status=RunStatus.CANCELLED, finished_at=utcnow())
    )
    session.flush()
