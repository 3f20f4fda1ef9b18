"""Pure mixture-search strategies: functions of (space, history, seed), no DB, queue or I/O.

Import what you need from :mod:`strategies.base`; look strategies up by name with :func:`get_strategy`.
"""

from strategies.base import (
    Candidate,
    Fidelity,
    Observation,
    Recommendation,
    SearchSpace,
    Strategy,
    StrategyError,
)
from strategies.registry import available_strategies, get_strategy, register

__all__ = [
    "Candidate",
    "Fidelity",
    "Observation",
    "Recommendation",
    "SearchSpace",
    "Strategy",
    "StrategyError",
    "available_strategies",
    "get_strategy",
    "register",
]
