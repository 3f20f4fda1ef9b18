"""The planner's look-ahead for external experiments: grows while clients drain the ready runs,
shrinks slowly while runs are left over, stays within its bounds, and is 0 for worker experiments."""

from __future__ import annotations

from app.core.config import Settings
from workers.planner import next_queue_target

SETTINGS = Settings(planner_lookahead=2, planner_max_lookahead=64)


def test_the_look_ahead_doubles_when_drained_and_shrinks_when_left_over() -> None:
    assert next_queue_target(8, 0, "external", SETTINGS) == 16
    assert next_queue_target(8, 2, "external", SETTINGS) == 16  # nearly drained counts as drained
    assert next_queue_target(8, 3, "external", SETTINGS) == 8
    assert next_queue_target(8, 5, "external", SETTINGS) == 6  # more than half left: shrink by a quarter
    assert next_queue_target(48, 0, "external", SETTINGS) == 64  # capped
    assert next_queue_target(2, 2, "external", SETTINGS) == 2  # never below the floor
    assert next_queue_target(8, 0, "worker", SETTINGS) == 0
