"""Reading recommendations back (they are written by the planner)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Experiment, Recommendation
from app.schemas import PredictedLoss, RecommendationOut


def latest_recommendation(*, session: Session, experiment: Experiment) -> Recommendation | None:
    return session.scalar(
        select(Recommendation)
        .where(Recommendation.experiment_id == experiment.id)
        .order_by(Recommendation.id.desc())
        .limit(1)
    )


def list_recommendations(
    *, session: Session, experiment: Experiment, limit: int, after: int | None
) -> list[Recommendation]:
    q = select(Recommendation).where(Recommendation.experiment_id == experiment.id)
    if after is not None:
        q = q.where(Recommendation.id > after)
    return list(session.scalars(q.order_by(Recommendation.id).limit(limit)))


def recommendation_out(
    experiment: Experiment, rec: Recommendation, predicted: PredictedLoss | None = None
) -> RecommendationOut:
    names = experiment.domain_names
    return RecommendationOut(
        id=rec.id,
        experiment_id=rec.experiment_id,
        strategy=rec.strategy,
        weights=dict(zip(names, rec.weights, strict=True)),
        predicted_loss=rec.predicted_loss,
        std=rec.std,
        diagnostics=rec.diagnostics,
        alternatives=[
            {"weights": dict(zip(names, a["weights"], strict=True)), "predicted_loss": a["predicted_loss"]}
            for a in rec.alternatives
        ],
        warnings=rec.warnings,
        predicted_target_loss=predicted,
        n_runs=rec.n_runs,
        final=rec.final,
        created_at=rec.created_at,
    )
