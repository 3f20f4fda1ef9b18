"""ORM tables. Every row belongs to exactly one project, directly or through its experiment."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from app.status import Executor, ExperimentStatus, RunOrigin, RunStatus, ScaleStatus

MAX_ID = 2**31 - 1  # ids are 32-bit columns: a larger id names no row (404) and never reaches SQL


def valid_id(row_id: int) -> bool:
    return 1 <= row_id <= MAX_ID


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive values otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


@dataclass(frozen=True)
class FidelityInfo:
    """One proxy setting of an experiment: a preset (worker runs) or a name (external runs), the tokens a
    run trains on, and its cost in FLOPs (or the user's own unit) that budgets are counted in."""

    name: str
    tokens: int
    cost: float
    preset: str | None = None


class FidelityList(TypeDecorator[list[FidelityInfo]]):
    """An experiment's fidelities, cheapest first, stored as a JSON list and read back typed."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: list[FidelityInfo] | None, dialect: Dialect) -> Any:
        return None if value is None else [asdict(f) for f in value]

    def process_result_value(self, value: Any, dialect: Dialect) -> list[FidelityInfo] | None:
        return None if value is None else [FidelityInfo(**f) for f in value]


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime()}


class Project(Base):
    __tablename__ = "project"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    keys: Mapped[list[ApiKey]] = relationship(back_populates="project", cascade="all, delete-orphan")


class ApiKey(Base):
    """Only the SHA-256 of a key is stored; keys are 256-bit random, so a fast hash is safe."""

    __tablename__ = "api_key"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    project: Mapped[Project] = relationship(back_populates="keys")


class Experiment(Base):
    __tablename__ = "experiment"
    __table_args__ = (Index("ix_experiment_project_id_id", "project_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=ExperimentStatus.DRAFT)
    executor: Mapped[str] = mapped_column(String(16), default=Executor.WORKER)
    strategy: Mapped[str] = mapped_column(String(64))
    strategy_params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    target: Mapped[dict[str, Any]] = mapped_column()  # eval domain → weight
    fidelities: Mapped[list[FidelityInfo]] = mapped_column(FidelityList())  # cheapest first
    max_epochs: Mapped[float] = mapped_column(Float, default=4.0)
    target_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    target_params: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # non-embedding
    budget: Mapped[float] = mapped_column(Float)  # in target-fidelity-equivalent runs
    parallelism: Mapped[int] = mapped_column(Integer, default=4)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    cluster: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # clustering settings, if any
    tags: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    archived_at: Mapped[datetime | None] = mapped_column(nullable=True)  # hidden from lists, still readable
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    domains: Mapped[list[Domain]] = relationship(
        back_populates="experiment", order_by="Domain.position", cascade="all, delete-orphan"
    )

    @property
    def domain_names(self) -> list[str]:
        return [d.name for d in sorted(self.domains, key=lambda d: d.position)]

    @property
    def target_fidelity(self) -> FidelityInfo:
        return self.fidelities[-1]

    def fidelity(self, name: str) -> FidelityInfo | None:
        return next((f for f in self.fidelities if f.name == name), None)

    def run_units(self, fidelity: str) -> float:
        """A run's share of the budget: its cost relative to one target-fidelity run."""
        f = self.fidelity(fidelity)
        return 0.0 if f is None else f.cost / self.target_fidelity.cost


class Domain(Base):
    """A training domain: its corpus (once uploaded) and token counts (once prepared)."""

    __tablename__ = "domain"
    __table_args__ = (UniqueConstraint("experiment_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiment.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer)
    lower: Mapped[float] = mapped_column(Float, default=0.0)
    upper: Mapped[float] = mapped_column(Float, default=1.0)
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    documents: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # training tokens available
    val_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. cluster label, top terms, samples
    experiment: Mapped[Experiment] = relationship(back_populates="domains")


class Run(Base):
    """One proxy training run. Each claim gets a fresh ``claim_token``; writes must present it, so a
    worker whose run was reclaimed cannot overwrite the new attempt."""

    __tablename__ = "run"
    __table_args__ = (
        Index("ix_run_experiment_id_id", "experiment_id", "id"),
        # (status, id): ask's "oldest queued run" and run counts are index range scans at any history size
        Index("ix_run_experiment_id_status_id", "experiment_id", "status", "id"),
        Index("ix_run_status_heartbeat", "status", "heartbeat_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiment.id", ondelete="CASCADE"))
    weights: Mapped[list[Any]] = mapped_column()  # aligned with the experiment's domain order
    fidelity: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer, default=0)
    origin: Mapped[str] = mapped_column(String(16), default=RunOrigin.WORKER)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.QUEUED)
    planned_on: Mapped[int | None] = mapped_column(Integer, nullable=True)  # history size it was planned on
    # A rung of a scale prediction's ladder, not a search run: strategies and search figures skip it.
    ladder_id: Mapped[int | None] = mapped_column(
        ForeignKey("scale_prediction.id", ondelete="CASCADE"), nullable=True, index=True
    )
    counts_budget: Mapped[bool] = mapped_column(
        default=False, server_default=false()
    )  # imported, but paid for
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    claim_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    not_before: Mapped[datetime | None] = mapped_column(nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Learning curve from heartbeats (app/services/curves.py bounds it): deferred, so listing runs and
    # planning never load it.
    curve: Mapped[list[Any]] = mapped_column(default=list, server_default="[]", deferred=True)
    losses: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    target_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    cost: Mapped[float | None] = mapped_column(Float, nullable=True)  # FLOPs
    wall_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)  # trajectory, epochs, train_s
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


def search_run() -> ColumnElement[bool]:
    """Runs of the mixture search (every run but a scale prediction's ladder)."""
    return Run.ladder_id.is_(None)


class ScalePrediction(Base):
    """Loss at the user's target scale for a recommendation and baselines: a ladder of runs (presets ×
    token budgets per mixture), then a scaling law fitted on them (``workers/scale_job.py``)."""

    __tablename__ = "scale_prediction"
    __table_args__ = (Index("ix_scale_prediction_experiment_id_id", "experiment_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiment.id", ondelete="CASCADE"))
    recommendation_id: Mapped[int] = mapped_column(ForeignKey("recommendation.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=ScaleStatus.RUNNING)
    mixtures: Mapped[dict[str, Any]] = mapped_column()  # label → weights in domain order
    rungs: Mapped[list[Any]] = mapped_column()  # [{preset, tokens, params, cost}]
    seeds: Mapped[int] = mapped_column(Integer, default=1)
    target_params: Mapped[int] = mapped_column(BigInteger)
    target_tokens: Mapped[int] = mapped_column(BigInteger)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)  # fit, predictions, points; see scale_job
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Recommendation(Base):
    """A new row every time the strategy refits: the history is the audit trail."""

    __tablename__ = "recommendation"
    __table_args__ = (Index("ix_recommendation_experiment_id_id", "experiment_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiment.id", ondelete="CASCADE"))
    strategy: Mapped[str] = mapped_column(String(64))
    weights: Mapped[list[Any]] = mapped_column()
    predicted_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    std: Mapped[float | None] = mapped_column(Float, nullable=True)
    diagnostics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    alternatives: Mapped[list[Any]] = mapped_column(default=list)
    warnings: Mapped[list[Any]] = mapped_column(
        default=list, server_default="[]"
    )  # [{code, message}]: strategies/trust.py
    n_runs: Mapped[int] = mapped_column(Integer)
    final: Mapped[bool] = mapped_column(default=False)
    # The dashboard's out-of-fold fit plot (up to MAX_RUNS points): deferred, so reading a
    # recommendation does not load it.
    fit: Mapped[dict[str, Any]] = mapped_column(default=dict, deferred=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OnlineSession(Base):
    """An online re-weighting session driven by an external training loop; state survives restarts."""

    __tablename__ = "online_session"
    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiment.id", ondelete="CASCADE"), index=True)
    strategy: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    trajectory: Mapped[list[Any]] = mapped_column(default=list)  # [{step, weights, losses}]
    step: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PlannerJob(Base):
    """Coalesced planning of one experiment. A request bumps ``requested``; a planner takes the lease,
    plans on the newest history, and sets ``done`` to the ``requested`` it saw. Many requests while it
    works make one more pass, never one pass each."""

    __tablename__ = "planner_job"
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiment.id", ondelete="CASCADE"), primary_key=True
    )
    job: Mapped[str] = mapped_column(String(16), primary_key=True)  # a PlanJob
    requested: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    # The newest request a claim covers (``done`` once its pass ends): above it, a request waits for a
    # planner, and a tell need not add one (``planning.request_plan_after``).
    claimed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True)
    queue_target: Mapped[int] = mapped_column(Integer, default=0)  # proposals kept ready (look-ahead)
    passes: Mapped[int] = mapped_column(Integer, default=0)
    last_duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
