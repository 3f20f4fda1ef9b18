"""ask and tell in one statement each: the two requests an external training pipeline makes most.

The general path (``runs.ask`` / ``runs.complete`` on an experiment loaded through the ORM) takes several
round trips and ORM loads per request, and at 10,000 runs with 16 clients that CPU is what bounds the
server (``bench/api_load.py`` prints the CPU per ask+tell pair by role). Here the key check, the
experiment's conditions and the lease (or the result) are one UPDATE … RETURNING, from statements built
once and run on an autocommit connection: no BEGIN and COMMIT round trips around the one statement,
and none of the ORM's execution layer, which these Core statements do not need. What a request needs
of the experiment and that never changes once it runs (domain names, target weights, fidelity costs)
is remembered per process. Anything else — an experiment's first request in this process, nothing
ready to lease, a bad key, a lost lease, a finished experiment — takes the general path, in a
transaction, which answers exactly as before.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import BindParameter, Table, Update, and_, bindparam, func, select, update
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import autocommit_connection, session_scope
from app.core.security import hash_key
from app.errors import InvalidInput
from app.models import ApiKey, Experiment, Run, utcnow, valid_id
from app.schemas import AskOut, ResultIn, RunOut
from app.services import runs
from app.services.dispatch import dispatcher
from app.services.experiments import experiment_for_key
from app.services.planning import request_plan_after
from app.status import Executor, ExperimentStatus, RunOrigin

_NOW: BindParameter[Any] = bindparam("now")
_EXPERIMENT: BindParameter[Any] = bindparam("eid")
_KEY: BindParameter[Any] = bindparam("key_hash")
_CREATED: BindParameter[Any] = bindparam("created")
_OWNED = and_(  # the experiment, as remembered, belongs to the key's project
    Experiment.id == _EXPERIMENT,
    Experiment.created_at == _CREATED,  # not another one that reused a deleted one's id (SQLite)
    ApiKey.project_id == Experiment.project_id,
    ApiKey.key_hash == _KEY,
)
_RUNS = cast(Table, Run.__table__)  # Core statements: rows come back as tuples, no ORM objects built
# What a response shows of a run, in RunOut's order (eta_s is None: a just-leased or told run has none).
_RETURNED = [_RUNS.c[name] for name in RunOut.model_fields if name in _RUNS.c]

_ASK = (
    update(_RUNS)
    .where(
        *runs.lease_conditions(
            _EXPERIMENT,
            _NOW,
            select(Experiment.parallelism)  # NULL unless the key's, running and external
            .where(
                _OWNED,
                Experiment.status == ExperimentStatus.RUNNING,
                Experiment.executor == Executor.EXTERNAL,
            )
            .scalar_subquery(),
        )
    )
    .values(**runs.leased(bindparam("token"), _NOW, bindparam("until")))
    .returning(*_RETURNED)
)


def _tell_statement(experiment: Experiment) -> Update:
    """running → succeeded for the lease's token; cost defaults to the run's fidelity's."""
    return (
        update(_RUNS)
        .where(
            *runs.result_conditions(bindparam("run_id"), _EXPERIMENT, bindparam("token"), RunOrigin.EXTERNAL),
            select(ApiKey.id).where(_OWNED).exists(),
        )
        .values(
            **runs.succeeded(
                losses=bindparam("losses"),
                target_loss=bindparam("target_loss"),
                cost=func.coalesce(bindparam("cost"), runs.fidelity_cost(experiment)),
                wall_s=bindparam("wall_s"),
                extra={},
                now=_NOW,
            )
        )
        .returning(*_RETURNED)
    )


@dataclass(frozen=True)
class Facts:
    """What ask and tell need of a running experiment; none of it changes once the experiment runs."""

    created_at: datetime
    names: tuple[str, ...]
    target: dict[str, float]
    tell: Update


class _Remembered:
    """Facts per (database, experiment id), the most recently used ``size`` of them."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._facts: OrderedDict[tuple[str, int], Facts] = OrderedDict()

    def get(self, experiment_id: int) -> Facts | None:
        with self._lock:
            return self._facts.get((get_settings().database_url, experiment_id))

    def learn(self, experiment: Experiment) -> None:
        if experiment.status in (ExperimentStatus.DRAFT, ExperimentStatus.PREPARING):
            return  # a clustering experiment's domains are not known yet
        key = (get_settings().database_url, experiment.id)
        with self._lock:
            known = self._facts.get(key)
        if known is None or known.created_at != experiment.created_at:  # else nothing new to learn
            known = Facts(
                experiment.created_at,
                tuple(experiment.domain_names),
                dict(experiment.target),
                _tell_statement(experiment),
            )
        with self._lock:
            self._facts[key] = known
            self._facts.move_to_end(key)
            while len(self._facts) > self.size:
                self._facts.popitem(last=False)


_remembered = _Remembered()


def _run_out(names: tuple[str, ...], row: Any) -> RunOut:
    values = row._asdict()
    return RunOut(**{**values, "weights": dict(zip(names, values["weights"], strict=True))})


def ask(*, key: str, experiment_id: int, wait_s: float) -> AskOut:
    """Lease the oldest proposed run (see ``runs.ask`` for what happens when none is ready)."""
    facts = _remembered.get(experiment_id)
    if facts is not None:
        now, token = utcnow(), uuid.uuid4().hex
        until = now + timedelta(seconds=get_settings().lease_s)
        params = _params(key, experiment_id, facts, now) | {"token": token, "until": until}
        with autocommit_connection() as conn:
            row = conn.execute(_ASK, params).first()
        if row is not None:
            return AskOut(run=_run_out(facts.names, row), lease_token=token, lease_expires_at=until)
    with session_scope() as session:
        experiment = _general(session, key, experiment_id)
        run = runs.ask(session=session, experiment=experiment, wait_s=wait_s)
        assert run.lease_expires_at is not None and run.claim_token is not None
        out = runs.run_out(experiment, run)
        return AskOut(run=out, lease_token=run.claim_token, lease_expires_at=run.lease_expires_at)


def tell(*, key: str, experiment_id: int, run_id: int, result: ResultIn) -> RunOut:
    """Store a leased run's losses (committed before any planning), then request a planning pass."""
    out, nudge = _tell(key, experiment_id, run_id, result)
    if nudge:
        dispatcher().plan(experiment_id)
    return out


def _tell(key: str, experiment_id: int, run_id: int, result: ResultIn) -> tuple[RunOut, bool]:
    facts = _remembered.get(experiment_id)
    target_loss = _target_loss(facts, result) if valid_id(run_id) else None
    if facts is not None and target_loss is not None:
        params = _params(key, experiment_id, facts, utcnow()) | {
            "run_id": run_id,
            "token": result.lease_token,
            "losses": result.losses,
            "target_loss": target_loss,
            "cost": result.cost,
            "wall_s": result.wall_s,
        }
        with autocommit_connection() as conn:
            row = conn.execute(facts.tell, params).first()  # committed: stored before any planning
            if row is not None:
                return _run_out(facts.names, row), request_plan_after(conn, experiment_id)
    with session_scope() as session:
        experiment = _general(session, key, experiment_id)
        saved = runs.complete(
            session=session,
            experiment=experiment,
            run_id=run_id,
            token=result.lease_token,
            losses=result.losses,
            cost=result.cost,
            wall_s=result.wall_s,
            origin=RunOrigin.EXTERNAL,
        )
        if saved is None:
            runs.refuse_result(session, experiment, run_id, result.lease_token)
        return runs.run_out(experiment, saved.run), saved.nudge


def _target_loss(facts: Facts | None, result: ResultIn) -> float | None:
    """None for results the general path must judge: it checks the key before it names the domains."""
    if facts is None:
        return None
    try:
        return runs.result_target_loss(facts.names, facts.target, result.losses)
    except InvalidInput:
        return None


def _params(key: str, experiment_id: int, facts: Facts, now: datetime) -> dict[str, Any]:
    return {"eid": experiment_id, "key_hash": hash_key(key), "created": facts.created_at, "now": now}


def _general(session: Session, key: str, experiment_id: int) -> Experiment:
    """The experiment through the ORM (401/404 as every route answers them), remembered for next time."""
    experiment = experiment_for_key(session=session, key=key, experiment_id=experiment_id)
    _remembered.learn(experiment)
    return experiment
