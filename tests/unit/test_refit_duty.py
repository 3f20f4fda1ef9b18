"""Interim refits take at most ``refit_duty`` of a planner's time; proposals only wait the minimum."""

from __future__ import annotations

import pytest

from app.core.config import Settings
from app.services.planning import Claim
from app.status import PlanJob
from workers.planner import _min_interval


def _claim(job: PlanJob, took_s: float) -> Claim:
    return Claim(1, job, "t", 1, 2, last_duration_s=took_s)


def test_a_long_refit_waits_until_it_is_its_share_of_the_time() -> None:
    settings = Settings(refit_duty=0.2, planner_min_interval_s=0.2)
    wait = _min_interval(_claim(PlanJob.REFIT, 3.0), settings)
    assert wait == pytest.approx(12.0)
    assert 3.0 / (3.0 + wait) == pytest.approx(0.2)


def test_quick_refits_and_proposals_wait_the_minimum() -> None:
    settings = Settings(refit_duty=0.2, planner_min_interval_s=0.2)
    assert _min_interval(_claim(PlanJob.REFIT, 0.01), settings) == pytest.approx(0.2)
    assert _min_interval(_claim(PlanJob.PROPOSE, 3.0), settings) == pytest.approx(0.2)


def test_a_duty_of_one_lets_refits_run_back_to_back() -> None:
    settings = Settings(refit_duty=1.0, planner_min_interval_s=0.2)
    assert _min_interval(_claim(PlanJob.REFIT, 3.0), settings) == pytest.approx(0.2)
