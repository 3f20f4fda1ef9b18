"""Run life cycle: claim, heartbeat, complete, fail, retry, reap; ask/tell for external pipelines.

Every state change is one conditional UPDATE, so two workers can never both own a run, and a worker
whose run was reclaimed (its ``claim_token`` changed) cannot overwrite the new attempt's result.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import is_postgres
from app.errors import Conflict, InvalidInput, NotFound, NotReady
from app.models import Experiment, Run, utcnow
from app.schemas import ImportedRun, RunOut, unknown
from app.services.loop import advance, domain_names, fidelity_info
from strategies import StrategyError


def run_out(experiment: Experiment, run: Run) -> RunOut:
    names = domain_names(experiment)
    return RunOut(
        weights=dict(zip(names, run.weights, strict=True)),
        **{k: getattr(run, k) for k in RunOut.model_fields if k != "weights"},
    )


def get_run(*, session: Session, experiment: Experiment, run_id: int) -> Run:
    run = session.scalar(select(Run).where(Run.id == run_id, Run.experiment_id == experiment.id))
    if run is None:
        raise NotFound(f"run {run_id} not found in experiment {experiment.id}", code="run_not_found")
    return run


def list_runs(
    *, session: Session, experiment: Experiment, limit: int, after: int | None, status: str | None = None
) -> list[Run]:
    """Keyset pagination by id: constant time per page however many runs there are."""
    q = select(Run).where(Run.experiment_id == experiment.id)
    if after is not None:
        q = q.where(Run.id > after)
    if status:
        q = q.where(Run.status == status)
    return list(session.scalars(q.order_by(Run.id).limit(limit)))


def claim(*, session: Session, run_id: int, worker: str) -> str | None:
    """queued → running for this worker; returns the claim token, or None if someone else has it."""
    token = uuid.uuid4().hex
    now = utcnow()
    res = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "queued", or_(Run.not_before.is_(None), Run.not_before <= now))
        .values(
            status="running",
            attempts=Run.attempts + 1,
            worker=worker,
            claim_token=token,
            heartbeat_at=now,
            started_at=now,
            error=None,
        )
    )
    return token if res.rowcount == 1 else None  # type: ignore[attr-defined]


def next_queued(*, session: Session) -> int | None:
    """The oldest claimable worker run of a running experiment (SKIP LOCKED on Postgres)."""
    q = (
        select(Run.id)
        .join(Experiment, Experiment.id == Run.experiment_id)
        .where(
            Run.status == "queued",
            Run.origin == "worker",
            Experiment.status == "running",
            or_(Run.not_before.is_(None), Run.not_before <= utcnow()),
        )
        .order_by(Run.id)
        .limit(1)
    )
    if is_postgres(session):
        q = q.with_for_update(skip_locked=True, of=Run)
    return session.scalar(q)


def heartbeat(*, session: Session, run_id: int, token: str, progress: dict[str, Any]) -> bool:
    """Record progress; False means the run is no longer ours (cancelled or reclaimed): stop."""
    res = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.claim_token == token, Run.status == "running")
        .values(heartbeat_at=utcnow(), progress=progress)
    )
    return res.rowcount == 1  # type: ignore[attr-defined]


def complete(
    *,
    session: Session,
    run: Run,
    experiment: Experiment,
    token: str | None,
    losses: dict[str, float],
    cost: float | None,
    wall_s: float | None,
    extra: dict[str, Any] | None = None,
) -> bool:
    """running → succeeded with validated losses. False if the claim was lost meanwhile."""
    bad = unknown(losses, domain_names(experiment))
    if bad:
        raise InvalidInput(
            f"losses name unknown domains {bad}; known: {domain_names(experiment)}", code="unknown_domain"
        )
    missing = sorted(set(experiment.target) - set(losses))
    if missing:
        raise InvalidInput(f"losses lack target domains {missing}", code="missing_losses")
    target_loss = sum(w * losses[d] for d, w in experiment.target.items())
    cond = [Run.id == run.id, Run.status == "running"]
    if token is not None:
        cond.append(Run.claim_token == token)
    res = session.execute(
        update(Run)
        .where(and_(*cond))
        .values(
            status="succeeded",
            losses=losses,
            target_loss=float(target_loss),
            cost=cost if cost is not None else float(fidelity_info(experiment, run.fidelity)["cost"]),
            wall_s=wall_s,
            extra=extra or {},
            finished_at=utcnow(),
            lease_expires_at=None,
        )
    )
    return res.rowcount == 1  # type: ignore[attr-defined]


def fail(*, session: Session, run_id: int, token: str | None, error: str, retryable: bool) -> str | None:
    """running → queued (with backoff) while attempts remain and the error is retryable, else failed."""
    settings = get_settings()
    run = session.get(Run, run_id, populate_existing=True)
    if run is None or run.status != "running" or (token is not None and run.claim_token != token):
        return None
    if retryable and run.attempts < settings.max_run_attempts:
        run.status = "queued"
        run.not_before = utcnow() + timedelta(seconds=settings.retry_backoff_s * 2 ** (run.attempts - 1))
    else:
        run.status = "failed"
        run.finished_at = utcnow()
    run.error = error[:10_000]
    run.claim_token = None
    run.lease_expires_at = None
    session.flush()
    return run.status


def retry(*, session: Session, experiment: Experiment, run: Run) -> list[int]:
    """Put a failed or cancelled run back in the queue with a fresh set of attempts."""
    if run.status not in ("failed", "cancelled"):
        raise Conflict(
            f"run {run.id} is {run.status}; only failed or cancelled runs can be retried", code="bad_status"
        )
    if experiment.status in ("done", "failed", "cancelled"):
        experiment.status = "running"
        experiment.finished_at = None
        experiment.error = None
    run.status, run.attempts, run.error, run.not_before = "queued", 0, None, None
    session.flush()
    return [run.id] if run.origin == "worker" else []


def reap(*, session: Session) -> tuple[list[int], list[int]]:
    """Re-queue (or fail) worker runs with no heartbeat and external runs whose lease expired.

    Returns (runs to dispatch, experiments whose preparation must be restarted).
    """
    settings = get_settings()
    now = utcnow()
    stale = now - timedelta(seconds=settings.stale_after_s)
    lost = list(
        session.scalars(
            select(Run).where(
                Run.status == "running",
                or_(
                    and_(Run.origin == "worker", Run.heartbeat_at < stale),
                    and_(Run.origin == "external", Run.lease_expires_at < now),
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
        if status == "queued":
            run.not_before = None
            if run.origin == "worker":
                requeued.append(run.id)
    # Messages can be lost with a broker restart: re-send worker runs queued for too long.
    requeued += list(
        session.scalars(
            select(Run.id).where(
                Run.status == "queued",
                Run.origin == "worker",
                Run.created_at < stale,
                or_(Run.not_before.is_(None), Run.not_before < stale),
            )
        )
    )
    preparing = list(
        session.scalars(
            select(Experiment.id).where(Experiment.status == "preparing", Experiment.heartbeat_at < stale)
        )
    )
    if preparing:  # a cleared heartbeat makes the preparation claimable again
        session.execute(update(Experiment).where(Experiment.id.in_(preparing)).values(heartbeat_at=None))
    session.flush()
    for exp_id in {r.experiment_id for r in lost}:
        requeued += advance(session, exp_id)
    return sorted(set(requeued)), preparing


def ask(*, session: Session, experiment: Experiment) -> Run:
    """Hand the next mixture to an external pipeline, under a lease."""
    if experiment.executor != "external":
        raise Conflict("ask/tell is for experiments with executor='external'", code="bad_executor")
    if experiment.status == "done":
        raise Conflict("the budget is spent; read the recommendation", code="budget_spent")
    if experiment.status != "running":
        raise Conflict(
            f"experiment is {experiment.status}; only a running experiment hands out runs", code="bad_status"
        )
    try:
        advance(session, experiment.id)
    except StrategyError as e:
        raise InvalidInput(str(e), code="strategy_error") from e
    session.refresh(experiment)
    now = utcnow()
    run_id = session.scalar(
        select(Run.id)
        .where(Run.experiment_id == experiment.id, Run.status == "queued")
        .order_by(Run.id)
        .limit(1)
    )
    if run_id is None or claim(session=session, run_id=run_id, worker="external") is None:
        if experiment.status != "running":
            raise Conflict("the budget is spent; read the recommendation", code="budget_spent")
        raise NotReady("every proposed run is taken; report results or retry shortly", code="no_run_ready")
    run = session.get(Run, run_id, populate_existing=True)
    assert run is not None
    run.lease_expires_at = now + timedelta(seconds=get_settings().lease_s)
    session.flush()
    return run


def extend_lease(*, session: Session, run: Run, progress: dict[str, Any]) -> Run:
    if run.status != "running":
        raise Conflict(f"run {run.id} is {run.status}; only running runs take heartbeats", code="bad_status")
    now = utcnow()
    run.heartbeat_at = now
    run.progress = progress
    if run.origin == "external":
        run.lease_expires_at = now + timedelta(seconds=get_settings().lease_s)
    session.flush()
    return run


def import_runs(*, session: Session, experiment: Experiment, runs: list[ImportedRun]) -> list[int]:
    """Add runs trained elsewhere as succeeded observations (all or nothing)."""
    names = domain_names(experiment)
    rows = []
    for i, r in enumerate(runs):
        bad = unknown(r.weights, names) or unknown(r.losses, names)
        if bad:
            raise InvalidInput(f"run {i}: unknown domains {bad}; known: {names}", code="unknown_domain")
        missing = sorted(set(experiment.target) - set(r.losses))
        if missing:
            raise InvalidInput(f"run {i}: losses lack target domains {missing}", code="missing_losses")
        fid = r.fidelity or experiment.fidelities[-1]["name"]
        try:
            info = fidelity_info(experiment, fid)
        except StrategyError as e:
            raise InvalidInput(f"run {i}: {e}", code="unknown_fidelity") from e
        now = utcnow()
        rows.append(
            Run(
                experiment_id=experiment.id,
                weights=[r.weights.get(n, 0.0) for n in names],
                fidelity=fid,
                origin="import",
                status="succeeded",
                losses=r.losses,
                target_loss=sum(w * r.losses[d] for d, w in experiment.target.items()),
                cost=r.cost or float(info["cost"]),
                started_at=now,
                finished_at=now,
            )
        )
    session.add_all(rows)
    session.flush()
    return [r.id for r in rows]
