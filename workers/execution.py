"""Task bodies: the Celery tasks in ``workers/tasks.py`` and the embedded worker both call these.

Each one loads what it needs, calls ``proxy_models`` (the slow part, outside any transaction), and saves
the result with a fenced UPDATE that also requests planning, in one transaction: a result is committed
before any strategy sees it, so no planner error can lose it. Exceptions never leave a run ``running``:
they turn into a retry with backoff, or a failure with the error message stored on the run.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import or_, update

from app.core.config import get_settings
from app.core.db import session_scope
from app.models import Experiment, Run, utcnow
from app.schemas import MAX_LOSS, CurvePoint
from app.services import experiments as experiment_service
from app.services import planning
from app.services import runs as run_service
from app.services.dispatch import dispatcher
from app.services.scale_prediction import ladder_info
from app.services.storage import checkpoint_path, prepared_dir
from app.status import ExperimentStatus, RunStatus
from workers import scale_job

if TYPE_CHECKING:
    from proxy_models.train import RunConfig, TrainResult

log = logging.getLogger(__name__)
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"


class RunAborted(Exception):
    """The run was cancelled or reclaimed while training: stop without saving."""


@dataclass(frozen=True)
class Outcome:
    status: str  # succeeded | queued (retry after retry_in_s) | failed | skipped
    retry_in_s: float | None = None


def execute_run(run_id: int, worker: str = WORKER_NAME) -> Outcome:
    """Claim run ``run_id``, train it, save per-domain losses, and request planning."""
    from proxy_models.data import PreparedData
    from proxy_models.train import RunConfig, train_proxy

    with session_scope() as session:
        token = run_service.claim(session=session, run_id=run_id, worker=worker)
        if token is None:
            return Outcome("skipped")
        run = session.get(Run, run_id)
        assert run is not None
        experiment = session.get(Experiment, run.experiment_id)
        assert experiment is not None
        ladder_id = run.ladder_id
        created_with = dict(run.extra)  # e.g. a ladder run's mixture label: kept beside the training facts
        fidelity = experiment.fidelity(run.fidelity) if ladder_id is None else ladder_info(run.fidelity)
        assert fidelity is not None and fidelity.preset is not None
        cost = fidelity.cost
        config = RunConfig(
            preset=fidelity.preset,
            weights=dict(zip(experiment.domain_names, run.weights, strict=True)),
            tokens=fidelity.tokens,
            seed=run.seed,
            max_epochs=experiment.max_epochs,
            device=get_settings().device,
        )
        experiment_id = experiment.id

    last_beat = [0.0]
    unsent: list[CurvePoint] = []  # curve points since the last heartbeat

    def on_progress(p: Any) -> None:
        if math.isfinite(p.loss) and p.loss > 0:  # a diverged step leaves a gap, not a failed run
            unsent.append(CurvePoint(step=p.step, tokens=p.tokens, train_loss=min(float(p.loss), MAX_LOSS)))
        if time.monotonic() - last_beat[0] < 1.0 and p.step < p.total_steps:
            return
        last_beat[0] = time.monotonic()
        progress = {"step": p.step, "total_steps": p.total_steps, "tokens": p.tokens, "loss": float(p.loss)}
        with session_scope() as s:
            if not run_service.heartbeat(
                session=s, run_id=run_id, token=token, progress=progress, points=unsent
            ):
                raise RunAborted(f"run {run_id} was cancelled or reclaimed")
        unsent.clear()

    try:
        if (synthetic_s := get_settings().synthetic_train_s) is not None:
            result = synthetic_train(config, synthetic_s, cost, on_progress)
        else:
            data = PreparedData.load(prepared_dir(experiment_id))
            ckpt = checkpoint_path(run_id)
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            result = train_proxy(
                data, config, on_progress=on_progress, checkpoint=ckpt, threads=get_settings().train_threads
            )
    except RunAborted as e:
        log.info("%s", e)
        return Outcome("skipped")
    except Exception as e:
        retryable = not isinstance(e, ValueError)  # bad mixtures (epoch caps) will not fix themselves
        log.exception("run %s failed", run_id)
        with session_scope() as session:
            status = run_service.fail(
                session=session,
                run_id=run_id,
                token=token,
                error=f"{type(e).__name__}: {e}",
                retryable=retryable,
            )
            run = session.get(Run, run_id)
            delay = (run.not_before - utcnow()).total_seconds() if run and run.not_before else None
        if status == RunStatus.FAILED:
            dispatcher().plan(experiment_id)
            if ladder_id is not None:
                scale_job.refresh(ladder_id)
        return Outcome(status or "skipped", delay)

    with session_scope() as session:
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None
        saved = run_service.complete(
            session=session,
            experiment=experiment,
            run_id=run_id,
            token=token,
            losses=result.losses,
            cost=result.flops,
            wall_s=result.wall_s,
            extra={
                **created_with,
                "train_s": result.train_s,
                "tokens": result.tokens,
                "epochs": result.epochs,
                "trajectory": [[step, weights] for step, weights in result.trajectory],
                "precision": result.precision,
                "device": result.device,
            },
        )
    checkpoint_path(run_id).unlink(missing_ok=True)
    if saved is not None and saved.nudge:
        dispatcher().plan(experiment_id)
    if saved is not None and ladder_id is not None:
        scale_job.refresh(ladder_id)
    return Outcome("succeeded" if saved is not None else "skipped")


def synthetic_train(config: RunConfig, seconds: float, cost: float, on_progress: Any) -> TrainResult:
    """Benchmarks only (``synthetic_train_s``): stand in for ``train_proxy``: no data, no model.

    Sleeps ``seconds`` in 0.1 s steps, reporting progress as training does (so the run heartbeats and can
    be aborted), then returns losses from a fixed mixing law, ``3 - 1.5 * w`` per domain plus noise of
    0.01 seeded by the run's seed, and the fidelity's cost as its FLOPs.
    """
    from proxy_models.train import Progress, TrainResult

    rng = np.random.default_rng(config.seed)
    losses = {d: 3.0 - 1.5 * w + 0.01 * float(rng.standard_normal()) for d, w in config.weights.items()}
    steps = max(1, math.ceil(seconds / 0.1))
    start = time.monotonic()
    for step in range(1, steps + 1):
        time.sleep(max(0.0, start + seconds * step / steps - time.monotonic()))
        on_progress(Progress(step, steps, step, sum(losses.values()) / len(losses), time.monotonic() - start))
    elapsed = time.monotonic() - start
    return TrainResult(
        losses=losses,
        tokens=config.tokens or 0,
        flops=cost,
        wall_s=elapsed,
        train_s=elapsed,
        trajectory=[(0, dict(config.weights))],
        epochs=dict.fromkeys(config.weights, 0.0),
        steps=steps,
        precision="synthetic",
        device="none",
    )


def prepare_experiment(experiment_id: int) -> Outcome:
    """Cluster (if asked), train the tokenizer and write token files; then start proposing runs."""
    from proxy_models.data import prepare

    settings = get_settings()
    with session_scope() as session:
        stale = utcnow() - timedelta(seconds=settings.stale_after_s)
        res = session.execute(
            update(Experiment)
            .where(
                Experiment.id == experiment_id,
                Experiment.status == ExperimentStatus.PREPARING,
                or_(Experiment.heartbeat_at.is_(None), Experiment.heartbeat_at < stale),
            )
            .values(heartbeat_at=utcnow())
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            return Outcome("skipped")
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None
        needs_clustering = experiment.cluster is not None and not experiment.domains
    try:
        if needs_clustering:
            from workers.clustering_job import split_into_domains

            split_into_domains(experiment_id)
        with session_scope() as session:
            experiment = session.get(Experiment, experiment_id)
            assert experiment is not None
            files = {d.name: Path(d.path) for d in experiment.domains if d.path}
        data = prepare(files, prepared_dir(experiment_id), seed=0)
    except Exception as e:
        log.exception("preparing experiment %s failed", experiment_id)
        with session_scope() as session:
            exp = session.get(Experiment, experiment_id)
            assert exp is not None
            planning.finish(session, exp, ExperimentStatus.FAILED, f"preparation failed: {e}")
        return Outcome("failed")
    with session_scope() as session:
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None
        if experiment.status != ExperimentStatus.PREPARING:
            return Outcome("skipped")
        for d in experiment.domains:
            d.tokens = data.train_tokens[d.name]
            d.val_tokens = data.val_tokens[d.name]
        experiment.status = ExperimentStatus.RUNNING
        planning.request_plan(session, experiment_id)
    dispatcher().plan(experiment_id)
    return Outcome("succeeded")


def reap() -> None:
    """Periodic: re-send lost or stuck runs, restart stalled preparations, hand out planner jobs whose
    lease ran out (or whose nudge was lost with a broker restart)."""
    with session_scope() as session:
        runs = run_service.reap(session=session)
        preparing = experiment_service.stalled_preparations(session=session)
        jobs = planning.due_jobs(session)
    dispatcher().runs(runs)
    for experiment_id in preparing:
        dispatcher().prepare(experiment_id)
    for experiment_id in sorted({exp_id for exp_id, _ in jobs}):
        dispatcher().plan(experiment_id)
    for prediction_id in scale_job.unfinished():
        scale_job.refresh(prediction_id)
