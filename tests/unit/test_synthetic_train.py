"""The benchmarks' stand-in for training (``MIXLAB_SYNTHETIC_TRAIN_S``): deterministic, and it reports
progress like ``train_proxy``, so a cancelled run stops mid-sleep."""

from __future__ import annotations

import pytest

from proxy_models.train import RunConfig
from workers.execution import RunAborted, synthetic_train


def test_losses_follow_the_mixing_law_and_progress_is_reported() -> None:
    config = RunConfig(preset="xs", weights={"a": 0.8, "b": 0.2}, tokens=1000, seed=7)
    ticks: list[int] = []
    result = synthetic_train(config, 0.3, 42.0, lambda p: ticks.append(p.step))
    again = synthetic_train(config, 0.0, 42.0, lambda p: None)
    assert result.losses == again.losses  # seeded by the run's seed
    assert result.losses["a"] == pytest.approx(1.8, abs=0.05)
    assert result.losses["b"] == pytest.approx(2.7, abs=0.05)
    assert ticks == [1, 2, 3] and result.flops == 42.0 and result.wall_s >= 0.3


def test_an_aborted_run_stops_at_the_next_progress_report() -> None:
    config = RunConfig(preset="xs", weights={"a": 0.5, "b": 0.5})

    def abort(p: object) -> None:
        raise RunAborted("cancelled")

    with pytest.raises(RunAborted):
        synthetic_train(config, 10.0, 1.0, abort)
