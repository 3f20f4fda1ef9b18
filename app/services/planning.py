"""The planning side of the loop, as rows: requests, planner leases, proposals, recommendations, finishing.

Requests never fit a strategy. They record what changed and call ``request_plan`` in the same
transaction; after commit the dispatcher nudges a planner (``workers/planner.py``), which claims the
experiment's job, reads the newest history, fits outside any transaction, and writes back here in one
short transaction. ``requested``/``done`` counters make planning coalesce: a hundred tells during one
pass cause one more pass, not a hundred.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np
from sqlalchemy import ColumnElement, Connection, Select, Table, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from app.models import Experiment, PlannerJob, Recommendation, Run, search_run, utcnow
from app.status import LIVE_RUNS, Executor, ExperimentStatus, PlanJob, RunOrigin, RunStatus
from strategies import Candidate, Fidelity, Observation, SearchSpace, StrategyError
from strategies import Recommendation as StrategyRecommendation
from strategies.trust import TrustWarning

log = logging.getLogger(__name__)

MAX_FAILURE_RATIO = 1.0  # more failed runs than budgeted runs (+3) fails the experiment


def new_jobs(experiment: Experiment) -> list[PlannerJob]:
    """The planner rows every experiment has, one per job."""
    return [PlannerJob(experiment_id=experiment.id, job=job) for job in PlanJob]


def _free(now: datetime) -> ColumnElement[bool]:
    """Nobody holds the job's lease (never taken, released, or run out)."""
    return or_(PlannerJob.lease_until.is_(None), PlannerJob.lease_until < now)


def _held(claim: Claim) -> ColumnElement[bool]:
    """The job row, as long as ``claim`` still holds its lease."""
    return and_(
        PlannerJob.experiment_id == claim.experiment_id,
        PlannerJob.job == claim.job,
        PlannerJob.lease_token == claim.token,
    )


def request_plan(session: Session | Connection, experiment_id: int) -> bool:
    """Ask for a planning pass over the newest history; True if a planner must be nudged after commit.
    In the caller's transaction (a session), or on its own (an autocommit connection).

    No nudge is needed while a planner holds a job's lease: this UPDATE row-locks the job until commit,
    so the planner's release comes after it, and the planner then claims again (``requested > done``)."""
    now = utcnow()
    # Lock the job rows in one fixed order first: a plain multi-row UPDATE locks them in heap order,
    # which row updates reshuffle, so two concurrent tells could each hold one row and deadlock.
    ordered = (
        select(PlannerJob.job)
        .where(PlannerJob.experiment_id == experiment_id)
        .order_by(PlannerJob.job)
        .with_for_update()
    )
    leases = session.execute(
        update(PlannerJob)
        .where(PlannerJob.experiment_id == experiment_id, PlannerJob.job.in_(ordered.scalar_subquery()))
        .values(requested=PlannerJob.requested + 1)
        .returning(PlannerJob.lease_until)
    ).scalars()
    return any(until is None or until < now for until in leases)  # as ``_free``


def request_plan_after(conn: Connection, experiment_id: int) -> bool:
    """``request_plan`` for a change already committed (a tell's result), on an autocommit connection,
    without writing when every job already has a request no planner has claimed yet: that planner's
    claim comes after this read, hence after the commit, so its pass sees the change. Under a stream
    of tells most of them only read, instead of queueing on the job rows' lock through each other's
    commits."""
    waiting = conn.scalar(
        select(func.count()).where(
            PlannerJob.experiment_id == experiment_id, PlannerJob.requested > PlannerJob.claimed
        )
    )
    if waiting == len(PlanJob):
        return False  # whoever made those requests nudged the planners
    return request_plan(conn, experiment_id)


@dataclass(frozen=True)
class Claim:
    """A planner's lease on one job of one experiment, covering requests up to ``generation``."""

    experiment_id: int
    job: PlanJob
    token: str
    generation: int
    queue_target: int
    last_pass_at: datetime | None = None  # when the previous pass ended (None before the first)
    last_duration_s: float = 0.0  # how long the previous pass took


def claim_job(session: Session, experiment_id: int, job: PlanJob, lease_s: float) -> Claim | None:
    """Take the job's lease if a pass is due and nobody holds it (one conditional UPDATE)."""
    token, now = uuid.uuid4().hex, utcnow()
    res = session.execute(
        update(PlannerJob)
        .where(
            PlannerJob.experiment_id == experiment_id,
            PlannerJob.job == job,
            PlannerJob.requested > PlannerJob.done,
            _free(now),
        )
        .values(lease_token=token, lease_until=now + timedelta(seconds=lease_s), claimed=PlannerJob.requested)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return None
    row = session.get(PlannerJob, (experiment_id, job), populate_existing=True)
    assert row is not None
    return Claim(
        experiment_id,
        job,
        token,
        row.claimed,
        row.queue_target,
        row.updated_at if row.passes else None,
        row.last_duration_s or 0.0,
    )


def covering_newest(session: Session, claim: Claim) -> Claim:
    """The claim, extended to the requests that arrived since it was taken (the lease kept them from
    nudging another planner, so this pass must cover them)."""
    requested = session.scalar(
        update(PlannerJob)
        .where(_held(claim))
        .values(claimed=PlannerJob.requested)
        .returning(PlannerJob.requested)
    )
    return replace(claim, generation=requested) if requested is not None else claim


def renew_lease(session: Session, claim: Claim, lease_s: float) -> bool:
    res = session.execute(
        update(PlannerJob).where(_held(claim)).values(lease_until=utcnow() + timedelta(seconds=lease_s))
    )
    return res.rowcount == 1  # type: ignore[attr-defined]


def release_job(
    session: Session,
    claim: Claim,
    *,
    duration_s: float,
    error: str | None = None,
    queue_target: int | None = None,
) -> bool:
    """End a pass: requests up to the claim's generation are done. False if the lease was lost."""
    values: dict[str, Any] = {
        "done": claim.generation,
        "lease_token": None,
        "lease_until": None,
        "passes": PlannerJob.passes + 1,
        "last_duration_s": duration_s,
        "last_error": error,
        "updated_at": utcnow(),
    }
    if queue_target is not None:
        values["queue_target"] = queue_target
    res = session.execute(update(PlannerJob).where(_held(claim)).values(**values))
    return res.rowcount == 1  # type: ignore[attr-defined]


def holds_lease(session: Session, claim: Claim) -> bool:
    return session.scalar(select(func.count()).select_from(PlannerJob).where(_held(claim))) == 1


def due_jobs(session: Session, job: PlanJob | None = None, limit: int = 100) -> list[tuple[int, PlanJob]]:
    """Jobs of running experiments with a pass requested and no live lease, oldest first."""
    q = (
        select(PlannerJob.experiment_id, PlannerJob.job)
        .join(Experiment, Experiment.id == PlannerJob.experiment_id)
        .where(
            Experiment.status == ExperimentStatus.RUNNING,
            PlannerJob.requested > PlannerJob.done,
            _free(utcnow()),
        )
        .order_by(PlannerJob.updated_at)
        .limit(limit)
    )
    if job is not None:
        q = q.where(PlannerJob.job == job)
    return [(exp_id, PlanJob(j)) for exp_id, j in session.execute(q)]


def lock_running(session: Session, experiment_id: int) -> Experiment | None:
    """Take the experiment's row lock (a no-op UPDATE locks on Postgres and SQLite alike); the
    experiment if it is still running, else None: a planner writes nothing for a finished one."""
    # A non-key column: on Postgres this is FOR NO KEY UPDATE, which does not wait for (or block) the
    # foreign-key checks of tells and asks touching the experiment's runs; assigning the id would.
    session.execute(update(Experiment).where(Experiment.id == experiment_id).values(status=Experiment.status))
    experiment = session.get(Experiment, experiment_id, populate_existing=True)
    return experiment if experiment is not None and experiment.status == ExperimentStatus.RUNNING else None


def build_space(experiment: Experiment) -> SearchSpace:
    domains = sorted(experiment.domains, key=lambda d: d.position)
    missing = [d.name for d in domains if not d.tokens]
    if missing:
        raise StrategyError(f"token counts are not known yet for {missing}")
    return SearchSpace(
        domains=tuple(d.name for d in domains),
        tokens=tuple(int(d.tokens or 0) for d in domains),
        target=dict(experiment.target),
        fidelities=tuple(
            Fidelity(f.name, f.tokens, f.cost, {"preset": f.preset}) for f in experiment.fidelities
        ),
        lower=tuple(d.lower for d in domains),
        upper=tuple(d.upper for d in domains),
        max_epochs=experiment.max_epochs,
        target_tokens=experiment.target_tokens,
        budget=experiment.budget,
    )


def history(session: Session, experiment: Experiment) -> list[Observation]:
    """Succeeded runs as observations, in one query (fast at 10,000+ runs)."""
    rows = session.execute(_observation_rows(experiment.id).order_by(Run.id))
    return [obs for _, obs in _observations(rows) if obs is not None]


class HistoryCache:
    """A planner process's copy of each experiment's history, read incrementally.

    A succeeded run never changes, so a pass reads the ids of the succeeded runs (an index-only scan)
    and fetches only the rows it has not seen: at 10,000 runs a pass decodes a few new rows instead of
    10,000 JSON loss dicts. Keeps the ``max_experiments`` most recently planned experiments.
    """

    def __init__(self, max_experiments: int = 16) -> None:
        self.max_experiments = max_experiments
        self._lock = threading.Lock()
        self._by_experiment: OrderedDict[tuple[str, int, datetime], dict[int, Observation | None]] = (
            OrderedDict()
        )

    def read(self, session: Session, experiment: Experiment) -> list[Observation]:
        ids = list(
            session.scalars(
                select(Run.id)
                .where(Run.experiment_id == experiment.id, Run.status == RunStatus.SUCCEEDED, search_run())
                .order_by(Run.id)
            )
        )
        # The database and creation time too: tests (and users) reuse experiment ids across databases.
        key = (str(session.get_bind().engine.url), experiment.id, experiment.created_at)
        with self._lock:
            known = self._by_experiment.get(key, {})
        new_ids = [i for i in ids if i not in known]
        fetched: dict[int, Observation | None] = {}
        if 2 * len(new_ids) > len(ids):  # mostly unseen (a first read): one query for all of it
            fetched = dict(_observations(session.execute(_observation_rows(experiment.id))))
            new_ids = []
        for chunk in range(0, len(new_ids), _ID_CHUNK):
            q = _observation_rows(experiment.id).where(Run.id.in_(new_ids[chunk : chunk + _ID_CHUNK]))
            fetched.update(_observations(session.execute(q)))
        current = {i: known[i] if i in known else fetched.get(i) for i in ids}
        with self._lock:
            self._by_experiment[key] = current
            self._by_experiment.move_to_end(key)
            while len(self._by_experiment) > self.max_experiments:
                self._by_experiment.popitem(last=False)
        return [obs for obs in current.values() if obs is not None]


_ID_CHUNK = 2000  # ids per IN (...) list: well under SQLite's bound-parameter limit


def _observation_rows(experiment_id: int) -> Select[Any]:
    return select(Run.id, Run.weights, Run.fidelity, Run.losses, Run.target_loss, Run.cost).where(
        Run.experiment_id == experiment_id, Run.status == RunStatus.SUCCEEDED, search_run()
    )


def _observations(rows: Iterable[Any]) -> Iterator[tuple[int, Observation | None]]:
    """(run id, observation); None for a run whose target loss is not a finite number."""
    for run_id, w, fid, losses, tl, cost in rows:
        ok = tl is not None and math.isfinite(tl)
        yield run_id, Observation(tuple(w), fid, losses or {}, float(tl), float(cost or 0.0)) if ok else None


def pending(session: Session, experiment: Experiment) -> list[Candidate]:
    """Runs proposed or training: the strategy must not propose them again."""
    rows = session.execute(
        select(Run.weights, Run.fidelity).where(
            Run.experiment_id == experiment.id, Run.status.in_(LIVE_RUNS), search_run()
        )
    )
    return [Candidate(tuple(w), fid) for w, fid in rows]


def has_queued(session: Session, experiment_id: int) -> bool:
    """Whether any search run waits to be leased or claimed (an index lookup)."""
    queued = select(Run.id).where(
        Run.experiment_id == experiment_id, Run.status == RunStatus.QUEUED, search_run()
    )
    return bool(session.scalar(queued.exists().select()))


PACE_RUNS = 64  # the latest results that say how fast clients go


@dataclass(frozen=True)
class Pace:
    """How fast an experiment's clients go, from its latest results."""

    run_s: float  # median seconds from lease (or claim) to result
    results_per_s: float  # how often those results came (inf when they came at once, or one came)


def pace(session: Session, experiment_id: int) -> Pace | None:
    """The pace of the latest ``PACE_RUNS`` search runs that succeeded; None before the first. Imported
    runs, finished on arrival, say nothing of it."""
    rows = session.execute(
        select(Run.started_at, Run.finished_at)
        .where(
            Run.experiment_id == experiment_id,
            Run.status == RunStatus.SUCCEEDED,
            Run.origin != RunOrigin.IMPORT,
            search_run(),
        )
        .order_by(Run.id.desc())
        .limit(PACE_RUNS)
    ).all()
    done = [(start, end) for start, end in rows if start is not None and end is not None]
    if not done:
        return None
    ends = [end for _, end in done]
    span = (max(ends) - min(ends)).total_seconds()
    spans = [(end - start).total_seconds() for start, end in done]
    return Pace(float(np.median(spans)), (len(done) - 1) / span if span > 0 else math.inf)


def run_counts(session: Session, experiment_id: int) -> dict[str, int]:
    """The search's runs per status (a scale prediction's ladder is not the planner's business)."""
    return dict(
        session.execute(  # type: ignore[arg-type]
            select(Run.status, func.count())
            .where(Run.experiment_id == experiment_id, search_run())
            .group_by(Run.status)
        ).all()
    )


def too_many_failures(experiment: Experiment, counts: dict[str, int]) -> bool:
    return counts.get(RunStatus.FAILED, 0) > MAX_FAILURE_RATIO * experiment.budget + 3


@dataclass(frozen=True)
class Queued:
    """What ``save_proposals`` queued: how many runs, and their ids where workers must be sent them."""

    count: int
    worker_runs: list[int]


def save_proposals(
    session: Session,
    experiment: Experiment,
    candidates: list[Candidate],
    *,
    remaining: float,
    planned_on: int,
    n_created: int,
) -> Queued:
    """Queue the candidates that fit in the remaining budget, tagged with the history they came from.

    One Core INSERT: building ORM objects and flushing them cost the planner about twice the CPU per
    run, which at a deep look-ahead competes with the requests. Only a worker experiment's runs are
    dispatched by id, so only there does the INSERT return the ids. With RETURNING, SQLAlchemy builds one
    statement with a placeholder per value, which psycopg parses anew on every pass; without, the rows
    go as one pipelined executemany, several times faster for a pass that queues hundreds of runs."""
    worker = experiment.executor == Executor.WORKER
    origin = RunOrigin.WORKER if worker else RunOrigin.EXTERNAL
    rows: list[dict[str, Any]] = []
    for cand in candidates:
        units = experiment.run_units(cand.fidelity)
        if units > remaining + 1e-9:
            continue
        remaining -= units
        rows.append(
            {
                "experiment_id": experiment.id,
                "weights": [float(w) for w in cand.weights],
                "fidelity": cand.fidelity,
                "seed": experiment.seed + n_created + len(rows),
                "origin": origin,
                "planned_on": planned_on,
            }
        )
    if not rows:
        return Queued(0, [])
    table = cast(Table, Run.__table__)
    if not worker:
        session.execute(insert(table), rows)
        return Queued(len(rows), [])
    ids = list(session.scalars(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows))
    return Queued(len(ids), ids)


def last_recommended_on(session: Session, experiment_id: int) -> int | None:
    """How many runs the newest recommendation was fitted on (None before the first)."""
    return session.scalar(
        select(Recommendation.n_runs)
        .where(Recommendation.experiment_id == experiment_id)
        .order_by(Recommendation.id.desc())
        .limit(1)
    )


def refit_due(experiment: Experiment, n_runs: int, last: int | None, growth: float) -> bool:
    """Refit after ``parallelism`` new results, or a ``growth`` share of the history, whichever is more:
    the dashboard shows progress early, and a 10,000-run history is not refitted for every result."""
    if n_runs == 0:
        return False
    if last is None:
        return True
    return n_runs - last >= max(experiment.parallelism, math.ceil(growth * last), 1)


def save_recommendation(
    session: Session,
    experiment: Experiment,
    rec: StrategyRecommendation,
    *,
    n_runs: int,
    final: bool,
    fit: dict[str, Any] | None = None,
    warnings: Sequence[TrustWarning] = (),
) -> Recommendation:
    row = Recommendation(
        experiment_id=experiment.id,
        strategy=experiment.strategy,
        weights=[float(w) for w in rec.weights],
        predicted_loss=_finite(rec.predicted_loss),
        std=_finite(rec.std),
        diagnostics={k: _jsonable(v) for k, v in dict(rec.diagnostics).items()},
        alternatives=[
            {"weights": list(map(float, w)), "predicted_loss": _finite(p)} for w, p in rec.alternatives
        ],
        warnings=[{"code": w.code, "message": w.message} for w in warnings],
        n_runs=n_runs,
        final=final,
        fit=fit or {},
    )
    session.add(row)
    session.flush()
    return row


def attach_fit_plot(session: Session, recommendation_id: int, fit: dict[str, Any]) -> None:
    """Store the dashboard's fit plot on a recommendation saved before it was drawn."""
    session.execute(update(Recommendation).where(Recommendation.id == recommendation_id).values(fit=fit))


def finish(
    session: Session, experiment: Experiment, status: ExperimentStatus, error: str | None = None
) -> None:
    experiment.status = status
    experiment.error = error
    experiment.finished_at = utcnow()
    session.flush()


def fail_experiment(session: Session, experiment_id: int, error: str) -> None:
    """A planner error ends the experiment with its message; stored runs are left as they are."""
    experiment = lock_running(session, experiment_id)
    if experiment is not None:
        finish(session, experiment, ExperimentStatus.FAILED, error[:10_000])


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)
