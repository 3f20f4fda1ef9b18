"""Run life cycle: claim, heartbeat, complete, fail, retry, reap; ask/tell for external pipelines.

Every state change is one conditional UPDATE, so two workers can never both own a run, and a worker
whose run was reclaimed (its ``claim_token`` changed) cannot overwrite the new attempt's result.
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NoReturn

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import is_postgres
from app.errors import Conflict, InvalidInput, NotFound, NotReady
from app.models import Experiment, Run, ScalePrediction, utcnow, valid_id
from app.schemas import CurvePoint, ImportedRun, RunOut, RunWithCurve, unknown
from app.services import curves
from app.services.planning import request_plan
from app.status import FINISHED, Executor, ExperimentStatus, RunOrigin, RunStatus, ScaleStatus

COMPUTED = {"weights", "eta_s", "curve"}


def run_out(experiment: Experiment, run: Run) -> RunOut:
    names = experiment.domain_names
    return RunOut(
        weights=dict(zip(names, run.weights, strict=True)),
        eta_s=curves.eta_s(run, utcnow()),
        **{k: getattr(run, k) for k in RunOut.model_fields if k not in COMPUTED},
    )


def run_with_curve(experiment: Experiment, run: Run) -> RunWithCurve:
    """One run as ``GET …/runs/{id}`` shows it: with its learning curve."""
    return RunWithCurve(**run_out(experiment, run).model_dump(), curve=run.curve)


def get_run(*, session: Session, experiment: Experiment, run_id: int) -> Run:
    q = select(Run).where(Run.id == run_id, Run.experiment_id == experiment.id)
    run = session.scalar(q) if valid_id(run_id) else None
    if run is None:
        raise NotFound(f"run {run_id} not found in experiment {experiment.id}", code="run_not_found")
    return run


@dataclass(frozen=True)
class RunQuery:
    """Which runs, in which order: the filters and sort of ``GET …/runs`` (and its CSV export)."""

    status: str | None = None
    fidelity: str | None = None
    origin: str | None = None
    sort: Literal["id", "target_loss", "finished_at"] = "id"
    order: Literal["asc", "desc"] = "asc"


def matching(query: RunQuery, experiment: Experiment) -> list[ColumnElement[bool]]:
    """The WHERE clauses of ``query``'s filters."""
    where = [Run.experiment_id == experiment.id]
    for column, value in (
        (Run.status, query.status),
        (Run.fidelity, query.fidelity),
        (Run.origin, query.origin),
    ):
        if value:
            where.append(column == value)
    return where


def count_runs(*, session: Session, experiment: Experiment, query: RunQuery) -> int:
    return session.scalar(select(func.count()).select_from(Run).where(*matching(query, experiment))) or 0


def list_runs(
    *,
    session: Session,
    experiment: Experiment,
    query: RunQuery,
    limit: int | None,
    after: int | None,
    offset: int = 0,
) -> list[Run]:
    """By id: keyset pagination (``after``), constant time per page at any depth, or ``offset``. By loss
    or finish time: ``offset`` pages, ties broken by id; runs without the value (not finished) come last."""
    q = select(Run).where(*matching(query, experiment))
    descending = query.order == "desc"
    if query.sort == "id":
        if after is not None:
            q = q.where(Run.id < after if descending else Run.id > after)
        q = q.order_by(Run.id.desc() if descending else Run.id)
    else:
        key = Run.target_loss if query.sort == "target_loss" else Run.finished_at
        q = q.order_by(key.is_(None), key.desc() if descending else key, Run.id)
    if limit is not None:
        q = q.limit(limit)
    return list(session.scalars(q.offset(offset)))


def runs_csv(*, session: Session, experiment: Experiment, query: RunQuery) -> Iterator[str]:
    """Every matching run as CSV, a row at a time: one weight and one loss column per domain."""
    names = experiment.domain_names
    head = ["id", "status", "origin", "fidelity", "seed", "attempts", "target_loss", "cost", "wall_s"]
    dates = ["created_at", "started_at", "finished_at"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*head, *(f"weight_{n}" for n in names), *(f"loss_{n}" for n in names), *dates, "error"])
    after: int | None = None
    while True:  # keyset pages of 1000: memory stays flat however many runs there are
        page_query = RunQuery(query.status, query.fidelity, query.origin)
        rows = list_runs(session=session, experiment=experiment, query=page_query, limit=1000, after=after)
        for run in rows:
            losses = run.losses or {}
            writer.writerow(
                [
                    *(getattr(run, c) for c in head),
                    *run.weights,
                    *(losses.get(n, "") for n in names),
                    *(getattr(run, c).isoformat() if getattr(run, c) else "" for c in dates),
                    run.error or "",
                ]
            )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(rows) < 1000:
            return
        after = rows[-1].id


def _ready(now: datetime | ColumnElement[Any]) -> ColumnElement[bool]:
    """Queued and past any retry backoff: a run that may be claimed now."""
    return and_(Run.status == RunStatus.QUEUED, or_(Run.not_before.is_(None), Run.not_before <= now))


def _claimed(worker: str, token: Any, now: Any) -> dict[str, Any]:
    """The columns a claim sets, for a worker's run and a leased external run alike."""
    return {
        "status": RunStatus.RUNNING,
        "attempts": Run.attempts + 1,
        "worker": worker,
        "claim_token": token,
        "heartbeat_at": now,
        "started_at": now,
        "error": None,
    }


def claim(*, session: Session, run_id: int, worker: str) -> str | None:
    """queued → running for this worker; returns the claim token, or None if someone else has it."""
    token, now = uuid.uuid4().hex, utcnow()
    res = session.execute(
        update(Run).where(Run.id == run_id, _ready(now)).values(**_claimed(worker, token, now))
    )
    return token if res.rowcount == 1 else None  # type: ignore[attr-defined]


def next_queued(*, session: Session) -> int | None:
    """The oldest claimable worker run of a running experiment, or a ladder run of a done one (SKIP
    LOCKED on Postgres)."""
    q = (
        select(Run.id)
        .join(Experiment, Experiment.id == Run.experiment_id)
        .where(
            _ready(utcnow()),
            Run.origin == RunOrigin.WORKER,
            or_(
                Experiment.status == ExperimentStatus.RUNNING,
                and_(Run.ladder_id.is_not(None), Experiment.status == ExperimentStatus.DONE),
            ),
        )
        .order_by(Run.id)
        .limit(1)
    )
    if is_postgres(session):
        q = q.with_for_update(skip_locked=True, of=Run)
    return session.scalar(q)


def heartbeat(
    *, session: Session, run_id: int, token: str, progress: dict[str, Any], points: Sequence[CurvePoint] = ()
) -> bool:
    """Record progress and curve points; False: the run is no longer ours (cancelled or reclaimed), stop."""
    mine = (Run.id == run_id, Run.claim_token == token, Run.status == RunStatus.RUNNING)
    values: dict[str, Any] = {"heartbeat_at": utcnow(), "progress": curves.with_last_step(progress, points)}
    if points:
        stored = session.scalar(select(Run.curve).where(*mine))
        if stored is None:
            return False
        values["curve"] = curves.extend_curve(stored, points)
    res = session.execute(update(Run).where(*mine).values(**values))
    return res.rowcount == 1  # type: ignore[attr-defined]


def complete(
    *,
    session: Session,
    experiment: Experiment,
    run_id: int,
    token: str | None,
    losses: dict[str, float],
    cost: float | None,
    wall_s: float | None,
    extra: dict[str, Any] | None = None,
    origin: RunOrigin | None = None,
) -> Saved | None:
    """running → succeeded with validated losses, and planning requested, in one UPDATE … RETURNING;
    None if the run is not a running run of this experiment (and ``origin``), or its claim was lost."""
    target_loss = result_target_loss(experiment.domain_names, experiment.target, losses)
    if not valid_id(run_id):
        return None
    run = session.scalars(
        update(Run)
        .where(*result_conditions(run_id, experiment.id, token, origin))
        .values(
            **succeeded(
                losses=losses,
                target_loss=target_loss,
                cost=cost if cost is not None else fidelity_cost(experiment),
                wall_s=wall_s,
                extra=extra or {},
                now=utcnow(),
            )
        )
        .returning(Run),
        execution_options={"synchronize_session": False, "populate_existing": True},
    ).one_or_none()
    if run is None:
        return None
    return Saved(run=run, nudge=request_plan(session, experiment.id))


def result_conditions(run_id: Any, experiment_id: Any, token: Any, origin: RunOrigin | None) -> list[Any]:
    """Which run takes a result: running, of this experiment, still under ``token``'s claim (if given)
    and of ``origin`` (if given). Values or bind parameters (``ask_tell``'s prepared statement)."""
    cond = [Run.id == run_id, Run.experiment_id == experiment_id, Run.status == RunStatus.RUNNING]
    if token is not None:
        cond.append(Run.claim_token == token)
    if origin is not None:
        cond.append(Run.origin == origin)
    return cond


def succeeded(
    *, losses: Any, target_loss: Any, cost: Any, wall_s: Any, extra: Any, now: Any
) -> dict[str, Any]:
    """The columns a stored result sets (values or bind parameters)."""
    return {
        "status": RunStatus.SUCCEEDED,
        "losses": losses,
        "target_loss": target_loss,
        "cost": cost,
        "wall_s": wall_s,
        "extra": extra,
        "finished_at": now,
        "lease_expires_at": None,
    }


def result_target_loss(names: Sequence[str], target: dict[str, float], losses: dict[str, float]) -> float:
    """The target loss of a reported result; 422 if it names an unknown domain or lacks a target one."""
    bad = unknown(losses, names)
    if bad:
        raise InvalidInput(f"losses name unknown domains {bad}; known: {list(names)}", code="unknown_domain")
    missing = sorted(set(target) - set(losses))
    if missing:
        raise InvalidInput(f"losses lack target domains {missing}", code="missing_losses")
    return float(sum(w * losses[d] for d, w in target.items()))


def refuse_result(session: Session, experiment: Experiment, run_id: int, token: str) -> NoReturn:
    """Say why a result was not stored: unknown run, a worker's run, a lost lease, or told already."""
    run = get_run(session=session, experiment=experiment, run_id=run_id)
    if run.origin != RunOrigin.EXTERNAL:
        raise Conflict(f"run {run_id} is trained by mixlab's workers; it takes no results", code="bad_origin")
    check_lease(run, token)
    raise Conflict(
        f"run {run_id} is {run.status}; only a leased (running) run takes a result", code="bad_status"
    )


@dataclass(frozen=True)
class Saved:
    """A stored result. ``nudge``: no planner holds the experiment's lease, so dispatch one after commit."""

    run: Run
    nudge: bool


def fidelity_cost(experiment: Experiment) -> ColumnElement[float]:
    """The run's fidelity's cost, as SQL (a run of an unknown fidelity costs a target-fidelity run)."""
    costs = {f.name: f.cost for f in experiment.fidelities}
    return case(costs, value=Run.fidelity, else_=experiment.target_fidelity.cost)


def fail(*, session: Session, run_id: int, token: str | None, error: str, retryable: bool) -> str | None:
    """running → queued (with backoff) while attempts remain and the error is retryable, else failed
    (which frees budget, so planning is requested)."""
    settings = get_settings()
    run = session.get(Run, run_id, populate_existing=True)
    if run is None or run.status != RunStatus.RUNNING or (token is not None and run.claim_token != token):
        return None
    if retryable and run.attempts < settings.max_run_attempts:
        run.status = RunStatus.QUEUED
        run.not_before = utcnow() + timedelta(seconds=settings.retry_backoff_s * 2 ** (run.attempts - 1))
    else:
        run.status = RunStatus.FAILED
        run.finished_at = utcnow()
        request_plan(session, run.experiment_id)
    run.error = error[:10_000]
    run.claim_token = None
    run.lease_expires_at = None
    session.flush()
    return run.status


def retry(*, session: Session, experiment: Experiment, run: Run) -> list[int]:
    """Put a failed or cancelled run back in the queue with a fresh set of attempts."""
    if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        raise Conflict(
            f"run {run.id} is {run.status}; only failed or cancelled runs can be retried", code="bad_status"
        )
    if run.ladder_id is not None:  # a ladder rung: its scale prediction runs again, the search stays as it is
        session.execute(
            update(ScalePrediction)
            .where(ScalePrediction.id == run.ladder_id)
            .values(status=ScaleStatus.RUNNING, error=None, finished_at=None)
        )
    elif experiment.status in FINISHED:
        experiment.status = ExperimentStatus.RUNNING
        experiment.finished_at = None
        experiment.error = None
    run.status, run.attempts, run.error, run.not_before = RunStatus.QUEUED, 0, None, None
    request_plan(session, experiment.id)
    session.flush()
    return [run.id] if run.origin == RunOrigin.WORKER else []


def reap(*, session: Session) -> list[int]:
    """Re-queue (or fail) worker runs with no heartbeat and external runs whose lease expired.

    Returns the runs to dispatch. A run that fails for good requests planning itself (see ``fail``);
    planner jobs whose lease ran out are found by ``planning.due_jobs``, stalled preparations by
    ``experiments.stalled_preparations``.
    """
    settings = get_settings()
    now = utcnow()
    stale = now - timedelta(seconds=settings.stale_after_s)
    lost = list(
        session.scalars(
            select(Run).where(
                Run.status == RunStatus.RUNNING,
                or_(
                    and_(Run.origin == RunOrigin.WORKER, Run.heartbeat_at < stale),
                    and_(Run.origin == RunOrigin.EXTERNAL, Run.lease_expires_at < now),
                ),
            )
        )
    )
    requeued: list[int] = []
    for run in lost:
        status = fail(
            session=session,
            run_id=run.id,
            token=run.claim_token,
            error=f"lost: no heartbeat since {run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC "
            f"(attempt {run.attempts})",
            retryable=True,
        )
        if status == RunStatus.QUEUED:
            run.not_before = None
            if run.origin == RunOrigin.WORKER:
                requeued.append(run.id)
    # Messages can be lost with a broker restart: re-send worker runs queued for too long.
    requeued += list(
        session.scalars(
            select(Run.id).where(
                Run.status == RunStatus.QUEUED,
                Run.origin == RunOrigin.WORKER,
                Run.created_at < stale,
                or_(Run.not_before.is_(None), Run.not_before < stale),
            )
        )
    )
    session.flush()
    return sorted(set(requeued))


def ask(*, session: Session, experiment: Experiment, wait_s: float = 0.0) -> Run:
    """Lease the oldest proposed run to an external pipeline: one conditional UPDATE, no fitting.

    With nothing ready it polls until ``wait_s`` has passed, then raises ``NotReady`` (409
    ``no_run_ready`` with Retry-After). At most ``parallelism`` runs are leased at once; under concurrent
    asks on PostgreSQL that cap is approximate, but no run is ever leased twice.
    """
    if experiment.executor != Executor.EXTERNAL:
        raise Conflict("ask/tell is for experiments with executor='external'", code="bad_executor")
    experiment_id, parallelism = experiment.id, experiment.parallelism
    deadline = time.monotonic() + max(wait_s, 0.0)
    delay = 0.02
    while True:
        run = _lease(session, experiment_id, parallelism)
        if run is not None:
            return run
        status = session.scalar(select(Experiment.status).where(Experiment.id == experiment_id))
        if status == ExperimentStatus.DONE:
            raise Conflict("the budget is spent; read the recommendation", code="budget_spent")
        if status != ExperimentStatus.RUNNING:
            raise Conflict(
                f"experiment is {status}; only a running experiment hands out runs", code="bad_status"
            )
        session.rollback()  # end the snapshot, so the next try sees the planner's commits
        if time.monotonic() + delay > deadline:
            raise NotReady(
                "no proposed run is ready: the planner is catching up, or every run is leased "
                "(parallelism); retry after Retry-After seconds, or pass ?wait=SECONDS",
                retry_after=1.0,
                code="no_run_ready",
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)


def _lease(session: Session, experiment_id: int, parallelism: int) -> Run | None:
    """One UPDATE … RETURNING: the oldest ready run of a running experiment, below the parallelism cap."""
    now = utcnow()
    running = select(Experiment.id).where(
        Experiment.id == experiment_id, Experiment.status == ExperimentStatus.RUNNING
    )
    return session.scalars(
        update(Run)
        .where(*lease_conditions(experiment_id, now, parallelism), running.exists())
        .values(**leased(uuid.uuid4().hex, now, now + timedelta(seconds=get_settings().lease_s)))
        .returning(Run),
        execution_options={"synchronize_session": False, "populate_existing": True},
    ).one_or_none()


def lease_conditions(experiment_id: Any, now: Any, limit: Any) -> tuple[ColumnElement[bool], ...]:
    """Which run an ask leases: the experiment's oldest ready one, skipping those another ask is leasing
    now, while fewer than ``limit`` of its runs are leased (a NULL limit leases nothing). Values or bind
    parameters (``ask_tell``'s prepared statement)."""
    oldest_ready = (
        select(Run.id)
        .where(Run.experiment_id == experiment_id, _ready(now))
        .order_by(Run.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    running = (
        select(func.count())
        .select_from(Run)
        .where(Run.experiment_id == experiment_id, Run.status == RunStatus.RUNNING)
        .scalar_subquery()
    )
    return Run.id == oldest_ready, running < limit


def leased(token: Any, now: Any, until: Any) -> dict[str, Any]:
    """The columns a lease sets: a claim by the external pipeline, until ``until``."""
    return {**_claimed(RunOrigin.EXTERNAL.value, token, now), "lease_expires_at": until}


def extend_lease(
    *,
    session: Session,
    experiment: Experiment,
    run_id: int,
    token: str,
    progress: dict[str, Any],
    points: Sequence[CurvePoint] = (),
) -> Run:
    """A lessee's heartbeat: record progress and curve points, and push the lease's end back."""
    run = get_run(session=session, experiment=experiment, run_id=run_id)
    check_lease(run, token)
    now = utcnow()
    run.heartbeat_at = now
    run.progress = curves.with_last_step(progress, points)
    if points:
        curves.check_domains(points, experiment.domain_names)
        run.curve = curves.extend_curve(run.curve, points)
    if run.origin == RunOrigin.EXTERNAL:
        run.lease_expires_at = now + timedelta(seconds=get_settings().lease_s)
    session.flush()
    return run


def check_lease(run: Run, token: str) -> None:
    """409 unless ``token`` is the lease ask handed out for the run's current attempt.

    ``lease_lost``: the lease ran out and the run went back to the queue or to another lessee, whose
    result is the one that counts. ``bad_status``: this lease did finish (told or failed) already.
    """
    if run.claim_token != token:
        raise Conflict(
            f"run {run.id}: this lease is no longer valid (it expired and the run was handed out again); "
            "drop this result and ask for a new run",
            code="lease_lost",
        )
    if run.status != RunStatus.RUNNING:
        raise Conflict(f"run {run.id} is {run.status}; only a running run takes this", code="bad_status")


def import_runs(
    *, session: Session, experiment: Experiment, runs: list[ImportedRun], count_budget: bool = False
) -> list[int]:
    """Add runs trained elsewhere as succeeded observations (all or nothing); ``count_budget`` charges
    them to the budget like runs the search made."""
    names = experiment.domain_names
    rows = []
    for i, r in enumerate(runs):
        bad = unknown(r.weights, names) or unknown(r.losses, names)
        if bad:
            raise InvalidInput(f"run {i}: unknown domains {bad}; known: {names}", code="unknown_domain")
        missing = sorted(set(experiment.target) - set(r.losses))
        if missing:
            raise InvalidInput(f"run {i}: losses lack target domains {missing}", code="missing_losses")
        fid = r.fidelity or experiment.target_fidelity.name
        info = experiment.fidelity(fid)
        if info is None:
            known = [f.name for f in experiment.fidelities]
            raise InvalidInput(f"run {i}: unknown fidelity {fid!r}; known: {known}", code="unknown_fidelity")
        now = utcnow()
        rows.append(
            Run(
                experiment_id=experiment.id,
                weights=[r.weights.get(n, 0.0) for n in names],
                fidelity=fid,
                origin=RunOrigin.IMPORT,
                counts_budget=count_budget,
                status=RunStatus.SUCCEEDED,
                losses=r.losses,
                target_loss=sum(w * r.losses[d] for d, w in experiment.target.items()),
                cost=r.cost or info.cost,
                started_at=now,
                finished_at=now,
            )
        )
    session.add_all(rows)
    request_plan(session, experiment.id)
    session.flush()
    return [r.id for r in rows]
