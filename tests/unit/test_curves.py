"""Stored learning curves stay bounded and keep their shape; the ETA follows the rate so far."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.models import Run, utcnow
from app.schemas import CurvePoint
from app.services.curves import MAX_CURVE_POINTS, eta_s, extend_curve


def _points(steps: range) -> list[CurvePoint]:
    return [CurvePoint(step=s, train_loss=10.0 / (1 + s)) for s in steps]


@pytest.mark.parametrize("per_beat", [1, 50])
def test_a_long_curve_is_thinned_to_the_bound_keeping_both_ends(per_beat: int) -> None:
    curve: list = []
    for start in range(0, 5000, per_beat):
        curve = extend_curve(curve, _points(range(start, start + per_beat)))
        assert len(curve) <= MAX_CURVE_POINTS
    steps = [p["step"] for p in curve]
    assert steps[0] == 0 and steps[-1] == 4999 and steps == sorted(steps)
    assert len(curve) > MAX_CURVE_POINTS // 2  # thinning halves, never empties
    gaps = {b - a for a, b in zip(steps[:-2], steps[1:-1], strict=True)}
    assert max(gaps) <= 4 * min(gaps)  # spread over the whole run, not only its start or end


def test_points_at_or_before_the_last_step_are_ignored() -> None:
    curve = extend_curve([], _points(range(0, 3)))
    assert extend_curve(curve, _points(range(0, 3))) == curve
    assert [p["step"] for p in extend_curve(curve, _points(range(1, 5)))] == [0, 1, 2, 3, 4]


def test_eta_is_the_remaining_steps_at_the_rate_so_far() -> None:
    now = utcnow()
    run = Run(status="running", started_at=now - timedelta(seconds=100), heartbeat_at=now)
    run.progress = {"step": 25, "total_steps": 100}
    assert eta_s(run, now) == pytest.approx(300.0)
    assert eta_s(run, now + timedelta(seconds=30)) == pytest.approx(270.0)  # time since the last beat
    for progress in ({}, {"step": 0, "total_steps": 100}, {"step": 5}, {"step": "5", "total_steps": 9}):
        run.progress = progress
        assert eta_s(run, now) is None
    run.progress, run.status = {"step": 25, "total_steps": 100}, "succeeded"
    assert eta_s(run, now) is None
