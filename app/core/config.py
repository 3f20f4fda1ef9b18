"""All settings in one place, read from the environment (prefix ``MIXLAB_``) or a ``.env`` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from platformdirs import user_data_dir
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

_DATA = Path(user_data_dir("mixlab", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MIXLAB_", env_file=".env", extra="ignore")

    # Where state lives. SQLite under the user's data dir is the embedded default;
    # use postgresql+psycopg://user@host:5432/db for the service.
    database_url: str = f"sqlite:///{_DATA / 'mixlab.sqlite'}"
    db_pool_size: int = Field(
        default=20,
        ge=1,
        description="PostgreSQL connections each process keeps open: at least its concurrent requests, "
        "or every burst opens (and Postgres forks) new ones",
    )
    broker_url: str = "redis://127.0.0.1:6379/0"
    storage_dir: Path = _DATA / "storage"

    # How queued runs get executed: an in-process thread, or Celery workers on the broker.
    executor: Literal["embedded", "celery"] = "embedded"

    # Limits: bigger inputs get 413 (or 422 for a line or document), never a stuck or swollen server.
    max_upload_bytes: int = 512 * 1024 * 1024
    max_corpus_bytes: int = Field(
        default=2 * 1024**3, description="a corpus after decompression (gzip bombs stop here, streamed)"
    )
    max_line_bytes: int = Field(default=8 * 1024**2, description="one line of an uploaded corpus")
    max_document_bytes: int = Field(default=32 * 1024**2, description="one document of an uploaded corpus")
    max_json_bytes: int = Field(
        default=64 * 1024**2, description="a JSON request body (100,000 imported runs fit)"
    )
    max_domains: int = 64
    max_page_size: int = 500
    max_run_attempts: int = 3
    rate_limit: str | None = Field(
        default="1200/minute", description="API requests per key (moving window); empty: no limit"
    )
    rate_limit_storage: str = Field(
        default="memory://", description="memory:// counts per server process; redis://… across processes"
    )

    # Planning (off the request path). A planner holds an experiment's job under a lease it renews while
    # fitting; external experiments keep ``parallelism`` plus an adaptive look-ahead of runs proposed.
    planner_lease_s: float = 120.0
    planner_lookahead: int = 2
    planner_max_lookahead: int = 1024
    planner_min_interval_s: float = Field(
        default=0.2,
        ge=0,
        description="a job's passes start at least this far apart: under a stream of tells a planner "
        "plans once per interval over all of them (the look-ahead covers the wait), not once per tell",
    )
    background_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="refit and training threads run this much nicer than serving (0: same priority; "
        "proposing, which asks wait for, never runs nicer); "
        "a `mixlab worker` that leads its own session (a service, a container) also lowers that "
        "session's scheduling group, where the kernel groups by session (Linux autogroup)",
    )
    refit_growth: float = Field(
        default=0.1, description="refit once the history grew by this share (or by parallelism runs)"
    )
    refit_duty: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="interim refits (progress reports) take at most this share of a planner's time: "
        "after one that took t seconds the next waits t·(1/share − 1). The final recommendation "
        "is always fitted on the whole history",
    )
    embedded_trainer: bool = Field(
        default=True, description="embedded mode: also train worker runs in-process (planning always runs)"
    )

    # Liveness: a worker run with no heartbeat for this long is re-queued; an external lease lasts this long.
    stale_after_s: float = 120.0
    prepare_timeout_s: float = Field(
        default=6 * 3600.0,
        description="an experiment still preparing after this long is failed with a reason",
    )
    lease_s: float = 600.0
    reap_every_s: float = 30.0
    retry_backoff_s: float = 5.0

    # Proxy training.
    device: str = "auto"
    train_threads: int | None = Field(default=None, description="torch threads per run; None = all cores")
    synthetic_train_s: float | None = Field(
        default=None,
        ge=0,
        description="benchmarks only: workers sleep this long (heartbeating) and report losses from a fixed "
        "synthetic mixing law instead of training a proxy model; claim, result, planning and dispatch "
        "stay the real ones (bench/scale_out.py)",
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
