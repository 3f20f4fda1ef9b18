"""The planner's look-ahead for external experiments: three planning cycles of asks, at least doubled
when clients drained it, shrinking by at most a quarter a pass, within its bounds, and 0 for worker
experiments; asks per cycle by Little's law."""

from __future__ import annotations

import pytest

from app.core.config import Settings
from app.services.planning import Claim, Pace
from app.status import PlanJob
from workers.planner import _asks_per_cycle, next_queue_target

SETTINGS = Settings(planner_lookahead=2, planner_max_lookahead=64, planner_min_interval_s=0.2)


def test_the_look_ahead_covers_three_cycles_of_asks() -> None:
    assert next_queue_target(8, 5, 10, "external", SETTINGS) == 30
    assert next_queue_target(8, 5, 0.4, "external", SETTINGS) == 6  # slow clients: shrink by a quarter
    assert next_queue_target(2, 2, 0.01, "external", SETTINGS) == 2  # never below the floor
    assert next_queue_target(8, 0, 30, "external", SETTINGS) == 64  # capped


def test_a_drained_look_ahead_at_least_doubles() -> None:
    assert next_queue_target(8, 0, 2, "external", SETTINGS) == 16
    assert next_queue_target(8, 2, 2, "external", SETTINGS) == 16  # nearly drained counts as drained
    assert next_queue_target(8, 3, 2, "external", SETTINGS) == 6


def test_worker_experiments_keep_no_look_ahead() -> None:
    assert next_queue_target(8, 0, 10, "worker", SETTINGS) == 0


def test_asks_per_cycle_is_clients_over_their_run_time_times_the_cycle() -> None:
    claim = Claim(1, PlanJob.PROPOSE, "t", 1, 2, last_duration_s=0.3)
    busy = Pace(run_s=0.05, results_per_s=320.0)  # clients back to back: the results come as fast
    assert _asks_per_cycle(16, busy, claim, SETTINGS) == pytest.approx(16 * 0.5 / 0.05)
    training = Pace(run_s=600.0, results_per_s=1.0)  # a burst of results long ago says little
    assert _asks_per_cycle(16, training, claim, SETTINGS) == pytest.approx(16 * 0.5 / 600)
    assert _asks_per_cycle(16, None, claim, SETTINGS) == 0.0  # no result yet


def test_clients_that_pause_between_runs_are_counted_by_their_results() -> None:
    claim = Claim(1, PlanJob.PROPOSE, "t", 1, 2, last_duration_s=0.3)
    paced = Pace(run_s=0.015, results_per_s=200.0)  # 16 clients at 200 pairs/s hold ~3 leases at once
    assert _asks_per_cycle(16, paced, claim, SETTINGS) == pytest.approx(200 * 0.5)
