"""Online sessions: an external training loop posts per-domain losses, gets new weights back.

The strategy is a pure state machine over a JSON state stored on the row, so a session survives any
number of server restarts; each update locks its row so two posts can't interleave.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import Conflict, InvalidInput, NotFound
from app.models import Experiment, OnlineSession, utcnow, valid_id
from app.schemas import OnlineSessionCreate, OnlineSessionOut, OnlineUpdateIn, unknown
from app.services.planning import build_space
from app.services.strategies import check_params
from strategies import StrategyError
from strategies.online import Signal, get_online_strategy


def _strategy(name: str, params: dict[str, Any]) -> Any:
    check_params("online", name, params, "params", unknown_code="bad_strategy")
    try:
        return get_online_strategy(name, **params)
    except StrategyError as e:
        raise InvalidInput(str(e), code="bad_strategy") from e


def create_session(*, session: Session, experiment: Experiment, spec: OnlineSessionCreate) -> OnlineSession:
    strategy = _strategy(spec.strategy, spec.params)
    missing = [d.name for d in experiment.domains if not d.tokens]
    if missing:  # a state the experiment has not reached yet, not a bad request
        raise Conflict(
            f"token counts are not known yet for {missing}: start the experiment (its data is measured "
            "while it prepares) or give `tokens` for every domain",
            code="tokens_unknown",
        )
    try:
        state = strategy.start(build_space(experiment), seed=spec.seed)
    except StrategyError as e:
        raise InvalidInput(str(e), code="strategy_error") from e
    weights = [float(w) for w in strategy.weights(state)]
    row = OnlineSession(
        experiment_id=experiment.id,
        strategy=spec.strategy,
        params=spec.params,
        state=state,
        trajectory=[{"step": 0, "weights": weights, "losses": None}],
    )
    session.add(row)
    session.flush()
    return row


def get_session(
    *, session: Session, experiment: Experiment, session_id: int, lock: bool = False
) -> OnlineSession:
    q = select(OnlineSession).where(
        OnlineSession.id == session_id, OnlineSession.experiment_id == experiment.id
    )
    row = session.scalar(q.with_for_update() if lock else q) if valid_id(session_id) else None
    if row is None:
        raise NotFound(
            f"online session {session_id} not found in experiment {experiment.id}", code="session_not_found"
        )
    return row


def list_sessions(*, session: Session, experiment: Experiment) -> list[OnlineSession]:
    q = select(OnlineSession).where(OnlineSession.experiment_id == experiment.id).order_by(OnlineSession.id)
    return list(session.scalars(q))


def update_session(
    *, session: Session, experiment: Experiment, row: OnlineSession, body: OnlineUpdateIn
) -> OnlineSession:
    names = experiment.domain_names
    for what, values in (
        ("losses", body.losses),
        ("alignment", body.alignment),
        ("reference_losses", body.reference_losses),
    ):
        if values and (bad := unknown(values, names)):
            raise InvalidInput(f"{what} name unknown domains {bad}; known: {names}", code="unknown_domain")
    signal = Signal(body.step, body.losses, body.alignment, body.reference_losses)
    try:
        state, weights = _strategy(row.strategy, row.params).update(row.state, signal)
    except StrategyError as e:
        raise InvalidInput(str(e), code="bad_signal") from e
    row.state = state
    row.step = body.step
    row.trajectory = [
        *row.trajectory,
        {"step": body.step, "weights": [float(w) for w in weights], "losses": dict(body.losses)},
    ]
    row.updated_at = utcnow()
    session.flush()
    return row


def session_out(experiment: Experiment, row: OnlineSession) -> OnlineSessionOut:
    names = experiment.domain_names
    return OnlineSessionOut(
        id=row.id,
        experiment_id=row.experiment_id,
        strategy=row.strategy,
        params=row.params,
        step=row.step,
        weights=dict(zip(names, row.trajectory[-1]["weights"], strict=True)),
        trajectory=row.trajectory,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
