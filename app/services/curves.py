"""Learning curves and ETAs of running runs, from what heartbeats report.

A curve is stored on its run as a list of points, bounded at ``MAX_CURVE_POINTS`` spread evenly over
the steps: past the bound the curve is thinned to points at least twice the average step gap apart,
and from then on a new point replaces the newest one until it is a grid gap past the one before. So a
run of any length keeps its curve's shape (and its latest point) at a fixed size.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.errors import InvalidInput
from app.models import Run
from app.schemas import CurvePoint, unknown
from app.status import RunStatus

MAX_CURVE_POINTS = 512


def check_domains(points: Sequence[CurvePoint], domains: list[str]) -> None:
    """422 when a point's per-domain eval names a domain the experiment does not have."""
    for p in points:
        if p.eval_losses and (bad := unknown(p.eval_losses, domains)):
            raise InvalidInput(f"curve point at step {p.step}: unknown domains {bad}", code="unknown_domain")


def extend_curve(stored: list[dict[str, Any]], points: Sequence[CurvePoint]) -> list[dict[str, Any]]:
    """``stored`` plus the points after its last step (a retried heartbeat adds nothing twice)."""
    curve = list(stored)
    for p in sorted(points, key=lambda p: p.step):
        if curve and p.step <= curve[-1]["step"]:
            continue
        point = p.model_dump(exclude_none=True)
        grid = (curve[-1]["step"] - curve[0]["step"]) / MAX_CURVE_POINTS if curve else 0
        if len(curve) >= 2 and curve[-1]["step"] - curve[-2]["step"] < grid:
            curve[-1] = point  # the newest point was only standing in until the next grid step
        else:
            curve.append(point)
        if len(curve) > MAX_CURVE_POINTS:
            curve = _thin(curve, 2 * (curve[-1]["step"] - curve[0]["step"]) / MAX_CURVE_POINTS)
    return curve


def _thin(curve: list[dict[str, Any]], gap: float) -> list[dict[str, Any]]:
    """The first point, every point at least ``gap`` steps after the one kept before it, and the last."""
    kept = [curve[0]]
    for point in curve[1:-1]:
        if point["step"] - kept[-1]["step"] >= gap:
            kept.append(point)
    return [*kept, curve[-1]]


def with_last_step(progress: dict[str, Any], points: Sequence[CurvePoint]) -> dict[str, Any]:
    """A heartbeat that reports points but no ``step`` still moves the run's ETA."""
    if points and "step" not in progress:
        return {**progress, "step": max(p.step for p in points)}
    return progress


def _steps(run: Run) -> tuple[int, int] | None:
    """(step, total_steps) a running run last reported, when both are integers."""
    p = run.progress or {}
    step, total = p.get("step"), p.get("total_steps")
    if run.status != RunStatus.RUNNING or not isinstance(step, int) or not isinstance(total, int):
        return None
    return step, total


def done_fraction(run: Run) -> float | None:
    """How much of a running run's steps are done, or None when it reports no steps."""
    steps = _steps(run)
    if steps is None or steps[1] <= 0:
        return None
    return min(1.0, steps[0] / steps[1])


def eta_s(run: Run, now: datetime) -> float | None:
    """Seconds left for a running run at the rate it has trained so far, or None when unknown."""
    steps = _steps(run)
    if steps is None or run.started_at is None or run.heartbeat_at is None or not 0 < steps[0] <= steps[1]:
        return None
    step, total = steps
    per_step = (run.heartbeat_at - run.started_at).total_seconds() / step
    return max(0.0, (total - step) * per_step - (now - run.heartbeat_at).total_seconds())
