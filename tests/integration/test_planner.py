"""The planner off the request path: coalesced passes, leases that survive a dead planner, results that
survive a failing strategy, and asks that never hand out the same run twice. Real databases, no app
threads: each test drives ``workers.planner.plan`` itself, so it sees every pass."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.integration.helpers import error_code, external_spec, fake_losses


def _experiment(**over: Any) -> int:
    return _keyed_experiment(**over)[1]


def _keyed_experiment(**over: Any) -> tuple[str, int]:
    """A running external experiment: (its project's API key, its id)."""
    from app.core.db import session_scope
    from app.schemas import ExperimentCreate
    from app.services.experiments import create_experiment, start_experiment
    from app.services.projects import create_project

    with session_scope() as session:
        project, key = create_project(session=session, name=f"planner-{uuid.uuid4().hex[:12]}")
        spec = ExperimentCreate.model_validate(external_spec(**over))
        experiment = create_experiment(session=session, project_id=project.id, spec=spec)
        start_experiment(session=session, experiment=experiment)
        return key, experiment.id


def _job(experiment_id: int, job: str = "propose") -> Any:
    from app.core.db import session_scope
    from app.models import PlannerJob

    with session_scope() as session:
        return session.get(PlannerJob, (experiment_id, job))


def _ask(experiment_id: int) -> Any:
    from app.core.db import session_scope
    from app.models import Experiment
    from app.services.runs import ask

    with session_scope() as session:
        experiment = session.get(Experiment, experiment_id)
        run = ask(session=session, experiment=experiment)
        return run.id, dict(zip(experiment.domain_names, run.weights, strict=True))


def _tell(experiment_id: int, run_id: int, weights: dict[str, float]) -> None:
    from app.core.db import session_scope
    from app.models import Experiment
    from app.services.runs import complete

    with session_scope() as session:
        experiment = session.get(Experiment, experiment_id)
        assert complete(
            session=session,
            experiment=experiment,
            run_id=run_id,
            token=None,
            losses=fake_losses(weights),
            cost=None,
            wall_s=None,
        )


def test_many_tells_coalesce_into_one_pass(settings_env) -> None:  # type: ignore[no-untyped-def]
    from app.status import PlanJob
    from workers.planner import plan

    exp_id = _experiment(budget=8, parallelism=2)
    assert plan(exp_id, PlanJob.PROPOSE) == 1
    (a, wa), (b, wb) = _ask(exp_id), _ask(exp_id)
    before = _job(exp_id)
    _tell(exp_id, a, wa)
    _tell(exp_id, b, wb)
    assert _job(exp_id).requested == before.requested + 2
    assert plan(exp_id, PlanJob.PROPOSE) == 1  # two tells, one pass over the newer history
    job = _job(exp_id)
    assert job.done == job.requested and job.passes == before.passes + 1 and job.lease_token is None
    assert plan(exp_id, PlanJob.PROPOSE) == 0  # nothing new: no pass at all


def test_a_paced_pass_waits_holding_its_lease_and_covers_the_tells_made_meanwhile(  # type: ignore[no-untyped-def]
    settings_env, monkeypatch
) -> None:
    from app.core.config import get_settings
    from app.core.db import session_scope
    from app.models import Experiment
    from app.services.runs import complete
    from app.status import PlanJob
    from tests.integration.helpers import wait_for
    from workers.planner import plan

    monkeypatch.setenv("MIXLAB_PLANNER_MIN_INTERVAL_S", "3")
    get_settings.cache_clear()
    exp_id = _experiment(budget=8, parallelism=2)
    assert plan(exp_id, PlanJob.PROPOSE) == 1  # the first pass never waits
    (a, wa), (b, wb) = _ask(exp_id), _ask(exp_id)
    _tell(exp_id, a, wa)
    passes: list[int] = []
    planner = threading.Thread(target=lambda: passes.append(plan(exp_id, PlanJob.PROPOSE)))
    planner.start()
    wait_for(lambda: _job(exp_id).lease_token is not None, "the planner's claim")  # now waiting out 3 s
    with session_scope() as session:  # a tell during the wait: the waiting pass must cover it
        saved = complete(
            session=session,
            experiment=session.get(Experiment, exp_id),
            run_id=b,
            token=None,
            losses=fake_losses(wb),
            cost=None,
            wall_s=None,
        )
        assert saved is not None
    assert _job(exp_id).requested > _job(exp_id).done
    planner.join(60)
    job = _job(exp_id)
    assert passes == [1] and job.done == job.requested and job.lease_token is None


def test_proposals_skip_the_pacing_when_nothing_is_left_to_hand_out(  # type: ignore[no-untyped-def]
    settings_env, monkeypatch
) -> None:
    """Pacing spares the database under a stream of tells, but once every proposed run is leased the
    clients are waiting for the next pass: it starts at once. With a run still queued it waits."""
    from app.core.config import get_settings
    from app.status import PlanJob
    from workers import planner

    monkeypatch.setenv("MIXLAB_PLANNER_MIN_INTERVAL_S", "30")
    monkeypatch.setenv("MIXLAB_PLANNER_LOOKAHEAD", "0")  # exactly ``parallelism`` runs proposed
    get_settings.cache_clear()
    slept: list[float] = []
    monkeypatch.setattr(planner.time, "sleep", slept.append)
    exp_id = _experiment(budget=8, parallelism=2)
    assert planner.plan(exp_id, PlanJob.PROPOSE) == 1
    (a, wa), (b, wb) = _ask(exp_id), _ask(exp_id)  # both leased: nothing queued
    _tell(exp_id, a, wa)
    assert planner.plan(exp_id, PlanJob.PROPOSE) == 1 and slept == []  # proposes a run at once
    _tell(exp_id, b, wb)  # the run just proposed is still queued: this pass waits its turn
    assert planner.plan(exp_id, PlanJob.PROPOSE) == 1 and len(slept) == 1 and 0 < slept[0] <= 30


def test_proposals_are_tagged_with_their_history_and_refits_store_the_fit_plot(settings_env) -> None:  # type: ignore[no-untyped-def]
    from app.core.db import session_scope
    from app.models import Recommendation, Run
    from app.status import PlanJob
    from workers.planner import plan

    exp_id = _experiment(budget=6, parallelism=2)
    plan(exp_id, PlanJob.PROPOSE)
    for _ in range(2):
        _tell(exp_id, *_ask(exp_id))
    plan(exp_id, PlanJob.PROPOSE)
    plan(exp_id, PlanJob.REFIT)
    with session_scope() as session:
        planned_on = [
            r.planned_on
            for r in session.scalars(select(Run).where(Run.experiment_id == exp_id).order_by(Run.id))
        ]
        rec = session.scalar(select(Recommendation).where(Recommendation.experiment_id == exp_id))
        fit = rec.fit if rec is not None else None  # deferred: loaded on access
    assert planned_on == [0, 0, 0, 0, 2, 2]  # 2 + a look-ahead of 2 first; 2 more once 2 results are in
    assert rec is not None and rec.n_runs == 2 and not rec.final
    assert fit is not None and fit["fidelity"] == "big" and "needs 5" in fit["note"]


def test_the_look_ahead_follows_the_clients_pace(settings_env) -> None:  # type: ignore[no-untyped-def]
    """Clients that take 0.1 s a run get runs planned well ahead, clients that take 10 minutes the floor
    of 2 (a deep queue would be planned on an old history); imported runs, finished on arrival, are
    not taken for a pace."""
    from datetime import timedelta

    from app.core.db import session_scope
    from app.models import Experiment, Run, utcnow
    from app.schemas import ImportedRun
    from app.services.runs import import_runs
    from app.status import PlanJob, RunStatus
    from workers.planner import plan

    def run_clients_taking(seconds: float) -> int:
        exp_id = _experiment(budget=40, parallelism=2)
        weights = {"web": 0.5, "code": 0.3, "law": 0.2}
        with session_scope() as session:
            imported = [ImportedRun(weights=weights, losses=fake_losses(weights))] * 5
            import_runs(session=session, experiment=session.get(Experiment, exp_id), runs=imported)
        plan(exp_id, PlanJob.PROPOSE)  # 2 + a look-ahead of 2
        for _ in range(2):
            _tell(exp_id, *_ask(exp_id))
        _ask(exp_id)  # one client is training now, one run is still ready
        with session_scope() as session:
            told = select(Run).where(
                Run.experiment_id == exp_id, Run.status == RunStatus.SUCCEEDED, Run.origin != "import"
            )
            for i, run in enumerate(session.scalars(told.order_by(Run.id.desc()))):
                # both clients busy: a result every seconds / 2, each run leased seconds before it
                run.finished_at = utcnow() - timedelta(seconds=i * seconds / 2)
                run.started_at = run.finished_at - timedelta(seconds=seconds)
        plan(exp_id, PlanJob.PROPOSE)
        return int(_job(exp_id).queue_target)

    assert run_clients_taking(0.1) >= 12  # 3 x parallelism 2 x (a pass + 0.2 s of pacing) / 0.1 s
    assert run_clients_taking(600.0) == 2


def test_clients_waiting_on_a_drained_queue_get_the_first_runs_of_a_big_batch_at_once(  # type: ignore[no-untyped-def]
    settings_env, monkeypatch
) -> None:
    from app.status import PlanJob
    from workers import planner

    exp_id = _experiment(budget=40, parallelism=2)
    planner.plan(exp_id, PlanJob.PROPOSE)  # 2 + a look-ahead of 2
    for _ in range(2):
        _tell(exp_id, *_ask(exp_id))
    _ask(exp_id), _ask(exp_id)  # nothing left ready
    monkeypatch.setattr(planner, "next_queue_target", lambda *args: 10)
    chunks = []
    write = planner._write

    def watched(claim, candidates, *rest):  # type: ignore[no-untyped-def]
        chunks.append(len(candidates))
        return write(claim, candidates, *rest)

    monkeypatch.setattr(planner, "_write", watched)
    planner.plan(exp_id, PlanJob.PROPOSE)
    assert chunks == [2, 8]  # parallelism first, in its own transaction; then the look-ahead


def test_a_tell_adds_no_request_while_one_waits_for_a_planner(settings_env) -> None:  # type: ignore[no-untyped-def]
    """Tells in a stream only read the job rows while a request waits unclaimed (no queueing on their
    lock), and the pass that claims it sees every result told before; once claimed, a tell asks again."""
    from app.core.db import session_scope
    from app.models import Run
    from app.schemas import ResultIn
    from app.services import ask_tell
    from app.status import PlanJob
    from workers.planner import plan

    key, exp_id = _keyed_experiment(budget=12, parallelism=3)
    plan(exp_id, PlanJob.PROPOSE)
    leased = [ask_tell.ask(key=key, experiment_id=exp_id, wait_s=0) for _ in range(3)]

    def tell(i: int) -> None:
        run, token = leased[i].run, leased[i].lease_token
        result = ResultIn(lease_token=token, losses=fake_losses(run.weights))
        ask_tell.tell(key=key, experiment_id=exp_id, run_id=run.id, result=result)

    def requested() -> list[int]:
        return [_job(exp_id, job).requested for job in PlanJob]

    before = requested()
    tell(0)
    assert requested() == [r + 1 for r in before]
    tell(1)
    assert requested() == [r + 1 for r in before]  # a request already waits: nothing written
    plan(exp_id, PlanJob.PROPOSE)
    with session_scope() as session:
        planned_on = session.scalars(select(Run.planned_on).where(Run.experiment_id == exp_id)).all()
    assert max(planned_on) == 2  # the pass saw both results
    tell(2)
    assert requested()[0] == before[0] + 2  # that request was claimed: this tell makes a new one


def test_a_refit_stores_the_recommendation_before_its_fit_plot(settings_env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Users polling the recommendation do not wait for the dashboard's plot; the dashboard shows the
    plot as "being drawn" meanwhile, and does not keep that answer once the plot is attached."""
    from app.core.db import session_scope
    from app.models import Experiment
    from app.services.dashboard import FIT_DRAWING, dashboard
    from app.status import PlanJob
    from workers import planner

    def fit_note(experiment_id: int) -> tuple[bool, str | None]:
        with session_scope() as session:
            d = dashboard(session=session, experiment=session.get(Experiment, experiment_id))
            return d.mixture is not None, d.fit.note

    exp_id = _experiment(budget=6, parallelism=2)
    planner.plan(exp_id, PlanJob.PROPOSE)
    for _ in range(2):
        _tell(exp_id, *_ask(exp_id))
    seen = []
    draw = planner._fit_plot

    def watched(experiment_id: int, model: str | None) -> dict[str, Any]:
        seen.append(fit_note(experiment_id))
        return draw(experiment_id, model)

    monkeypatch.setattr(planner, "_fit_plot", watched)
    planner.plan(exp_id, PlanJob.REFIT)
    assert seen == [(True, FIT_DRAWING)]  # the recommendation was already there, its plot not yet
    recommended, note = fit_note(exp_id)
    assert recommended and note is not None and "needs 5" in note  # the attached plot, not the cached note


def test_a_failing_strategy_fails_the_experiment_and_keeps_every_result(settings_env) -> None:  # type: ignore[no-untyped-def]
    from app.core.db import session_scope
    from app.models import Experiment, Run
    from app.status import PlanJob
    from strategies import Candidate, StrategyError, register
    from strategies.baselines import RandomSearch
    from workers.planner import plan

    class Brittle(RandomSearch):
        def propose(self, space, history, n, seed, pending=()) -> list[Candidate]:  # type: ignore[no-untyped-def]
            if history:
                raise StrategyError("the surrogate diverged")
            return super().propose(space, history, n, seed, pending)

    name = f"brittle-{uuid.uuid4().hex[:12]}"  # the registry refuses a name twice
    register(name)(Brittle)
    exp_id = _experiment(strategy=name, budget=6, parallelism=2)
    plan(exp_id, PlanJob.PROPOSE)
    run_id, weights = _ask(exp_id)
    _tell(exp_id, run_id, weights)  # committed before the planner sees it
    plan(exp_id, PlanJob.PROPOSE)
    with session_scope() as session:
        experiment = session.get(Experiment, exp_id)
        run = session.get(Run, run_id)
        assert experiment.status == "failed" and "the surrogate diverged" in experiment.error
        assert run.status == "succeeded" and run.losses == fake_losses(weights)
    assert _job(exp_id).last_error.endswith("the surrogate diverged")


def test_a_dead_planners_lease_runs_out_and_its_late_write_is_refused(settings_env) -> None:  # type: ignore[no-untyped-def]
    from app.core.db import session_scope
    from app.models import PlannerJob, Run, utcnow
    from app.services import planning
    from app.status import PlanJob
    from workers.planner import plan

    exp_id = _experiment(budget=6, parallelism=2)
    with session_scope() as session:  # a planner claims the job, then its process is killed
        dead = planning.claim_job(session, exp_id, PlanJob.PROPOSE, lease_s=600)
    assert dead is not None and plan(exp_id, PlanJob.PROPOSE) == 0  # the lease still holds
    with session_scope() as session:
        assert [j for j in planning.due_jobs(session) if j[0] == exp_id] == [(exp_id, PlanJob.REFIT)]
        session.get(PlannerJob, (exp_id, "propose")).lease_until = utcnow() - timedelta(seconds=1)
    with session_scope() as session:  # the reaper finds it again
        assert (exp_id, PlanJob.PROPOSE) in planning.due_jobs(session)
    assert plan(exp_id, PlanJob.PROPOSE) == 1
    with session_scope() as session:
        assert len(list(session.scalars(select(Run).where(Run.experiment_id == exp_id)))) == 4
        assert not planning.holds_lease(session, dead)
        assert not planning.release_job(session, dead, duration_s=1.0)  # the zombie cannot mark it done


def test_budget_spent_finishes_with_a_final_recommendation(settings_env) -> None:  # type: ignore[no-untyped-def]
    from app.core.db import session_scope
    from app.errors import Conflict
    from app.models import Experiment, Recommendation
    from app.status import PlanJob
    from workers.planner import plan

    exp_id = _experiment(budget=3, parallelism=2)
    for _ in range(3):
        plan(exp_id, PlanJob.PROPOSE)
        _tell(exp_id, *_ask(exp_id))
    plan(exp_id, PlanJob.PROPOSE)
    with session_scope() as session:
        assert session.get(Experiment, exp_id).status == "done"
        rec = session.scalars(select(Recommendation).where(Recommendation.experiment_id == exp_id)).all()[-1]
        assert rec.final and rec.n_runs == 3
    with pytest.raises(Conflict, match="budget is spent"):
        _ask(exp_id)


@pytest.mark.postgres
def test_concurrent_asks_never_lease_the_same_run(settings_env) -> None:  # type: ignore[no-untyped-def]
    from app.errors import NotReady
    from app.status import PlanJob
    from workers.planner import plan

    exp_id = _experiment(budget=40, parallelism=16)
    plan(exp_id, PlanJob.PROPOSE)  # 16 + look-ahead proposed, 16 may be leased at once
    leased: list[int] = []
    refused: list[str] = []
    barrier = threading.Barrier(24)

    def client() -> None:
        barrier.wait()
        try:
            leased.append(_ask(exp_id)[0])
        except NotReady as e:
            refused.append(e.code)

    threads = [threading.Thread(target=client) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(leased) == len(set(leased)) >= 16  # never the same run twice
    assert set(refused) <= {"no_run_ready"} and len(leased) + len(refused) == 24


def test_ask_with_no_planner_running_says_not_ready(settings_env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Service mode with no worker up: the API answers at once and never fits in the request."""
    from fastapi.testclient import TestClient

    from app.core.config import get_settings
    from app.main import create_app
    from app.status import PlanJob
    from tests.conftest import _new_key
    from workers.planner import plan

    monkeypatch.setenv("MIXLAB_EXECUTOR", "celery")  # messages go to Redis; nobody consumes them here
    get_settings.cache_clear()
    auth = {"Authorization": f"Bearer {_new_key()}"}
    with TestClient(create_app(), raise_server_exceptions=False) as api:
        exp = api.post("/api/v1/experiments", json=external_spec(), headers=auth).json()
        base = f"/api/v1/experiments/{exp['id']}"
        assert api.post(f"{base}/start", headers=auth).status_code == 200
        resp = api.post(f"{base}/ask", params={"wait": 0.2}, headers=auth)
        assert resp.status_code == 409 and error_code(resp) == "no_run_ready"
        assert resp.headers["Retry-After"] == "1"
        assert api.get(f"{base}/recommendation", headers=auth).status_code == 404
        plan(exp["id"], PlanJob.PROPOSE)  # what a worker would do
        assert api.post(f"{base}/ask", headers=auth).status_code == 200
