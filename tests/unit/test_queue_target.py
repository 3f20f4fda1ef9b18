"""The planner's look-ahead for external experiments: three times what clients leased over the last planning
period, at least doubled when they drained it, shrinking by at most a quarter a pass, within its bounds,
and 0 for worker experiments."""

from __future__ import annotations

from app.core.config import Settings
from workers.planner import next_queue_target

SETTINGS = Settings(planner_lookahead=2, planner_max_lookahead=64)


def test_the_look_ahead_covers_three_periods_of_asks() -> None:
    assert next_queue_target(8, 5, 10, "external", SETTINGS) == 30
    assert next_queue_target(8, 7, 0, "external", SETTINGS) == 6  # nobody asked: shrink by a quarter
    assert next_queue_target(2, 2, 0, "external", SETTINGS) == 2  # never below the floor
    assert next_queue_target(8, 0, 30, "external", SETTINGS) == 64  # capped


def test_a_drained_look_ahead_at_least_doubles() -> None:
    assert next_queue_target(8, 0, 2, "external", SETTINGS) == 16  # the asks that waited were not counted
    assert next_queue_target(8, 2, 2, "external", SETTINGS) == 16  # nearly drained counts as drained
    assert next_queue_target(8, 3, 2, "external", SETTINGS) == 6


def test_worker_experiments_keep_no_look_ahead() -> None:
    assert next_queue_target(8, 0, 10, "worker", SETTINGS) == 0
