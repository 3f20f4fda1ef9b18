"""The planner: fit the strategy off the request path and write down what it decided.

One pass: claim the job's lease → read the history (one short transaction) → fit (no transaction; the
lease is renewed in the background) → write (one short transaction under the experiment's row lock)
→ release. Requests that arrived meanwhile make the loop run one more pass over the newer history.

Two jobs per experiment, so a slow refit never holds up proposals:
- ``propose`` keeps ``parallelism`` runs plus a look-ahead proposed, and finishes the experiment (final
  recommendation) once the budget is spent and nothing is live;
- ``refit`` writes interim recommendations and the dashboard's fit plot as the history grows.

Stored results are never touched here: a strategy error fails the experiment with its message (an
interim refit error is only recorded), and a database outage leaves the lease to expire for the reaper.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.core.config import Settings, get_settings
from app.core.db import session_scope
from app.models import Experiment, utcnow
from app.services import fit_plot, planning
from app.services.dispatch import dispatcher
from app.services.experiments import run_stats
from app.status import Executor, ExperimentStatus, PlanJob, RunStatus
from strategies import Candidate, Strategy, get_strategy, trust
from strategies import Recommendation as StrategyRecommendation
from strategies.trust import TrustWarning

log = logging.getLogger(__name__)
_history = planning.HistoryCache()  # per process: a pass reads only the runs that succeeded since the last


@dataclass(frozen=True)
class PassResult:
    queue_target: int | None = None
    error: str | None = None


def plan(experiment_id: int, job: PlanJob) -> int:
    """Run passes of ``job`` until no request is left or another planner holds the lease; returns how
    many passes ran."""
    settings = get_settings()
    passes = 0
    while True:
        with session_scope() as session:
            claim = planning.claim_job(session, experiment_id, job, settings.planner_lease_s)
        if claim is None:
            break
        passes += 1
        with _keep_lease(claim, settings.planner_lease_s):
            claim = _paced(claim, _min_interval(claim, settings))
            started = time.monotonic()
            try:
                result = _PASSES[job](claim, settings)
            except DBAPIError:
                raise  # transient: the lease expires and the reaper hands the job out again
            except Exception as e:
                log.exception("planner %s of experiment %s failed", job, experiment_id)
                result = _failed(claim, e)
        with session_scope() as session:
            planning.release_job(
                session,
                claim,
                duration_s=time.monotonic() - started,
                error=result.error,
                queue_target=result.queue_target,
            )
    return passes


def _min_interval(claim: planning.Claim, settings: Settings) -> float:
    """Seconds from one pass's end to the next's start. A refit also waits in proportion to how long it
    last took: interim recommendations are progress reports, and at a 10,000-run history each one fits
    for seconds on every core, which a stream of results would otherwise repeat back to back. At most
    ``refit_duty`` of a planner's time goes to them, whatever the growth of the history."""
    if claim.job == PlanJob.REFIT:
        pause = claim.last_duration_s * (1 / settings.refit_duty - 1)
        return max(settings.planner_min_interval_s, pause)
    return settings.planner_min_interval_s


def _paced(claim: planning.Claim, min_interval_s: float) -> planning.Claim:
    """Start the pass no sooner than ``min_interval_s`` after the previous one ended, holding the lease
    meanwhile, and cover every request made by then: a stream of tells costs a few passes a second,
    not one pass (and several full-history queries) per tell. Proposals do not wait when none is left
    to hand out: then clients (or workers) are waiting for this very pass."""
    if claim.last_pass_at is None:
        return claim
    wait = min_interval_s - (utcnow() - claim.last_pass_at).total_seconds()
    if wait <= 0:
        return claim
    if claim.job == PlanJob.PROPOSE:
        with session_scope() as session:
            if not planning.has_queued(session, claim.experiment_id):
                return claim
    time.sleep(wait)
    with session_scope() as session:
        return planning.covering_newest(session, claim)


def _failed(claim: planning.Claim, e: Exception) -> PassResult:
    message = f"{type(e).__name__}: {e}"
    if claim.job == PlanJob.PROPOSE:
        with session_scope() as session:
            planning.fail_experiment(session, claim.experiment_id, f"the strategy could not plan: {message}")
    return PassResult(error=message)


@contextmanager
def _keep_lease(claim: planning.Claim, lease_s: float) -> Iterator[None]:
    """Renew the lease every third of its length while a long fit runs."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_s / 3):
            try:
                with session_scope() as session:
                    if not planning.renew_lease(session, claim, lease_s):
                        return
            except DBAPIError:
                log.warning("could not renew the planner lease of experiment %s", claim.experiment_id)

    thread = threading.Thread(target=renew, name="mixlab-planner-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _strategy(experiment: Experiment) -> Strategy:
    return get_strategy(experiment.strategy, **experiment.strategy_params)


def next_queue_target(previous: int, ready: int, per_cycle: float, executor: str, settings: Settings) -> int:
    """How many proposed runs to keep ready beyond ``parallelism`` (external experiments only).

    ``per_cycle`` is how many runs clients will lease while the planner makes one more pass (see
    ``_asks_per_cycle``); three times that is kept ready, so what is left when a pass starts lasts
    through it even when it takes longer than the last one (a bigger batch to propose). Fast clients get
    a deep queue, clients that train for minutes the floor of 2: proposals planned ahead are planned on
    an older history. Drained (a quarter or less left), at least double. Shrinks by at most a quarter a
    pass.
    """
    if executor != Executor.EXTERNAL:
        return 0
    low, high = settings.planner_lookahead, settings.planner_max_lookahead
    wanted = max(math.ceil(3 * per_cycle), previous * 3 // 4)
    if ready <= previous // 4:
        wanted = max(wanted, 2 * previous)
    return min(high, max(low, wanted))


def _asks_per_cycle(
    clients: int, pace: planning.Pace | None, claim: planning.Claim, settings: Settings
) -> float:
    """Runs clients will lease during one planning cycle (a pass as long as the last one, and the
    pacing). By Little's law ``clients`` (at most ``parallelism`` hold a lease at once) that each take
    ``run_s`` from lease to result lease at most clients / run_s runs a second; clients that pause
    between runs (a pipeline that evaluates each checkpoint, a load paced at 200 pairs/s) lease fewer,
    and the latest results' own rate says how many. The lesser of the two: a look-ahead sized by the
    bound alone grew to 1,000 runs for clients taking 200 a second, and each pass re-read all of them."""
    if pace is None:
        return 0.0  # no result yet: the floor, and the drained rule if clients are fast
    rate = min(clients / max(pace.run_s, 1e-3), pace.results_per_s)
    return rate * (claim.last_duration_s + settings.planner_min_interval_s)


def _propose(claim: planning.Claim, settings: Settings) -> PassResult:
    with session_scope() as session:
        experiment = session.get(Experiment, claim.experiment_id)
        if experiment is None or experiment.status != ExperimentStatus.RUNNING:
            return PassResult()
        stats = run_stats(session=session, experiments=[experiment])[experiment.id]
        counts = stats.search_counts
        if planning.too_many_failures(experiment, counts):
            failed = counts[RunStatus.FAILED]
            planning.fail_experiment(session, experiment.id, f"{failed} runs failed; see their errors")
            return PassResult()
        per_cycle = 0.0
        if experiment.executor == Executor.EXTERNAL:
            pace = planning.pace(session, experiment.id)
            per_cycle = _asks_per_cycle(experiment.parallelism, pace, claim, settings)
        target = next_queue_target(
            claim.queue_target, counts.get(RunStatus.QUEUED, 0), per_cycle, experiment.executor, settings
        )
        ready, parallelism = counts.get(RunStatus.QUEUED, 0), experiment.parallelism
        live = ready + counts.get(RunStatus.RUNNING, 0)
        slots = parallelism + target - live
        remaining = experiment.budget - stats.spent
        propose = slots > 0 and remaining > 1e-9
        # Read even with nothing to propose: the read is incremental, and a pass after a 10,000-run
        # import that skipped it left the first pass clients wait for to read it all (~0.5 s).
        hist = _history.read(session, experiment) if remaining > 1e-9 else []
        if propose:
            space = planning.build_space(experiment)
            in_flight = planning.pending(session, experiment)
            strategy = _strategy(experiment)
            seed = experiment.seed * 1_000_003 + sum(counts.values())
    candidates = []
    if propose:
        candidates = strategy.propose(space, hist, slots, seed=seed, pending=in_flight)
    # Clients that drained the queue wait for this pass: the first ``parallelism`` runs of a big batch
    # go out in a short transaction of their own, the rest (a deep look-ahead) follow in a second.
    chunks = [candidates]
    if ready == 0 and len(candidates) > 2 * parallelism:
        chunks = [candidates[:parallelism], candidates[parallelism:]]
    written = [_write(claim, chunk, len(hist), counts, live) for chunk in chunks]
    dispatcher().runs([run_id for w in written if w is not None for run_id in w.worker_runs])
    if any(w is None for w in written):
        return PassResult()  # finished, or another planner took over while this one was fitting
    if written[-1] is not None and written[-1].finished:
        _finish(claim)
    return PassResult(queue_target=target)


@dataclass(frozen=True)
class Written:
    """What one write of proposals did."""

    worker_runs: list[int]  # to dispatch
    finished: bool  # nothing proposed, nothing live, no new result: the budget is spent


def _write(
    claim: planning.Claim, candidates: list[Candidate], planned_on: int, counts: dict[str, int], live: int
) -> Written | None:
    """Queue candidates under the experiment's row lock (None if it finished or the lease was lost)."""
    with session_scope() as session:
        experiment = planning.lock_running(session, claim.experiment_id)
        if experiment is None or not planning.holds_lease(session, claim):
            return None
        stats = run_stats(session=session, experiments=[experiment])[experiment.id]
        now = stats.search_counts
        queued = planning.save_proposals(
            session,
            experiment,
            candidates,
            remaining=experiment.budget - stats.spent,
            planned_on=planned_on,
            n_created=sum(now.values()),
        )
        live_now = now.get(RunStatus.QUEUED, 0) + now.get(RunStatus.RUNNING, 0)
        same_history = now.get(RunStatus.SUCCEEDED, 0) == counts.get(RunStatus.SUCCEEDED, 0)
        finished = not queued.count and live == 0 and live_now == 0 and same_history
        return Written(queued.worker_runs, finished)


@dataclass(frozen=True)
class Fitted:
    """A recommendation as the planner stores it: with its warnings, the runs it saw, and the regressor
    the dashboard's fit plot should cross-validate."""

    rec: StrategyRecommendation
    warnings: list[TrustWarning]
    n_runs: int
    model: str | None


def _recommendation(experiment_id: int) -> Fitted:
    """Fit the strategy's recommendation on the newest history and check it (no transaction open while
    fitting)."""
    with session_scope() as session:
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None
        space = planning.build_space(experiment)
        hist = _history.read(session, experiment)
        strategy = _strategy(experiment)
        model = experiment.strategy_params.get("model")
    rec = strategy.recommend(space, hist)
    chosen = rec.diagnostics.get("model")  # the regressor "auto" picked, if the strategy says
    model = chosen if isinstance(chosen, str) else model
    return Fitted(rec, trust.check(space, hist, rec), len(hist), model)


def _fit_plot(experiment_id: int, model: str | None) -> dict[str, Any]:
    """The dashboard's fit plot over the latest runs (no transaction open while fitting)."""
    with session_scope() as session:
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None
        rows = fit_plot.target_rows(session, experiment)
        fidelity = experiment.target_fidelity.name
    return fit_plot.fit_quality(rows, fidelity, model).model_dump()


def _finish(claim: planning.Claim) -> None:
    """Budget spent and nothing live: the final recommendation, then done."""
    try:
        fitted = _recommendation(claim.experiment_id)
    except Exception as e:
        log.exception("final recommendation of experiment %s failed", claim.experiment_id)
        with session_scope() as session:
            planning.fail_experiment(
                session, claim.experiment_id, f"final recommendation failed: {type(e).__name__}: {e}"
            )
        return
    fit = _fit_plot(claim.experiment_id, fitted.model)  # before DONE: a finished experiment has its plot
    with session_scope() as session:
        experiment = planning.lock_running(session, claim.experiment_id)
        if experiment is None:
            return
        counts = planning.run_counts(session, experiment.id)
        if counts.get(RunStatus.QUEUED, 0) + counts.get(RunStatus.RUNNING, 0):
            return  # a run was retried meanwhile: not finished after all
        _save(session, experiment, fitted, final=True, fit=fit)
        planning.finish(session, experiment, ExperimentStatus.DONE)


def _refit(claim: planning.Claim, settings: Settings) -> PassResult:
    with session_scope() as session:  # cheap: most passes are not due
        experiment = session.get(Experiment, claim.experiment_id)
        if experiment is None or experiment.status != ExperimentStatus.RUNNING:
            return PassResult()
        last = planning.last_recommended_on(session, experiment.id)
        n_runs = planning.run_counts(session, experiment.id).get(RunStatus.SUCCEEDED, 0)
        if not planning.refit_due(experiment, n_runs, last, settings.refit_growth):
            return PassResult()
    try:
        fitted = _recommendation(claim.experiment_id)
    except Exception as e:  # an interim fit failing must not stop the search
        log.warning("interim refit of experiment %s failed: %s", claim.experiment_id, e)
        return PassResult(error=f"interim refit failed: {type(e).__name__}: {e}")
    with session_scope() as session:
        experiment = planning.lock_running(session, claim.experiment_id)
        if experiment is None or not planning.holds_lease(session, claim):
            return PassResult()
        rec_id = _save(session, experiment, fitted, final=False)
    # Stored first, plotted after: users polling the recommendation need not wait for the plot.
    fit = _fit_plot(claim.experiment_id, fitted.model)
    with session_scope() as session:
        planning.attach_fit_plot(session, rec_id, fit)
    return PassResult()


def _save(
    session: Session, experiment: Experiment, fitted: Fitted, final: bool, fit: dict[str, Any] | None = None
) -> int:
    return planning.save_recommendation(
        session,
        experiment,
        fitted.rec,
        n_runs=fitted.n_runs,
        final=final,
        fit=fit,
        warnings=fitted.warnings,
    ).id


_PASSES = {PlanJob.PROPOSE: _propose, PlanJob.REFIT: _refit}
